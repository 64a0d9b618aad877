// CommitMap: which pages of one arena cost memory, and which of those no block uses.
//
// A page counts as committed from the moment a block overlapping it is handed out until the heap
// returns it to the OS. That is an upper bound on what the kernel has backed (a block that was
// never written costs nothing yet), but it never claims a page is gone while it may still hold
// memory, and it makes the "idle" set exact: committed pages that no live or quarantined block
// touches, i.e. whole free pages that can be returned without disturbing anyone.
//
// Not thread-safe: the Heap's mutex guards it.
#pragma once

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "codeheap/gauge.h"

namespace codeheap {

class CommitMap {
 public:
  static constexpr size_t kNone = ~size_t{0};

  explicit CommitMap(size_t pages);

  // A block now covers pages [first, last] (inclusive): they are committed and in use. Pages
  // this commits (rather than reuses) remember `stamp`, the block's generation.
  void acquire(size_t first, size_t last, uint64_t stamp);
  // A block covering [first, last] is gone; pages nobody else uses become idle.
  void release(size_t first, size_t last);
  // Idle pages [first, first + count) were returned to the OS.
  void decommitted(size_t first, size_t count);

  // Visits f(first, count) for each run of idle pages in [first, last] that the block with
  // `stamp` committed: what undoing that block's allocation returns to the OS.
  template <typename F>
  void for_each_idle_committed_by(size_t first, size_t last, uint64_t stamp, F&& f) const {
    size_t run = 0;
    for (size_t page = first; page <= last + 1; ++page) {
      if (page <= last && users_[page] == 0 && committed(page) &&
          stamps_[page] == static_cast<uint32_t>(stamp)) {
        ++run;
      } else if (run > 0) {
        f(page - run, run);
        run = 0;
      }
    }
  }

  bool committed(size_t page) const { return (committed_[page / 64] >> (page % 64)) & 1; }
  size_t committed_pages() const { return committed_pages_.current; }
  size_t peak_committed_pages() const { return committed_pages_.peak; }
  size_t idle_pages() const { return idle_pages_; }
  // The highest committed page in [first, end), or kNone. Skips 64 pages at a time, so long
  // never-used stretches (the untouched top of an arena) cost little.
  size_t last_committed_below(size_t first, size_t end) const;

 private:
  // Blocks overlapping each page: at most page_size / 16, so 16 bits suffice up to 1 MiB pages.
  std::vector<uint16_t> users_;
  std::vector<uint64_t> committed_;  // bit per page
  // Low bits of the generation of the block that committed each page. A collision only makes
  // abandon return an idle page that another block committed, which is always safe.
  std::vector<uint32_t> stamps_;
  Gauge committed_pages_;
  size_t idle_pages_ = 0;
};

// Inline: the heap calls these for every block it hands out and takes back.
inline void CommitMap::acquire(size_t first, size_t last, uint64_t stamp) {
  for (size_t page = first; page <= last; ++page) {
    assert(users_[page] < UINT16_MAX);
    if (users_[page]++ > 0) continue;
    if (committed(page)) {
      --idle_pages_;
    } else {
      committed_[page / 64] |= uint64_t{1} << (page % 64);
      stamps_[page] = static_cast<uint32_t>(stamp);
      committed_pages_.increase();
    }
  }
}

inline void CommitMap::release(size_t first, size_t last) {
  for (size_t page = first; page <= last; ++page) {
    assert(users_[page] > 0 && committed(page));
    if (--users_[page] == 0) ++idle_pages_;
  }
}

}  // namespace codeheap
