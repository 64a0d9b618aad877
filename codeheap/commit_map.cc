#include "codeheap/commit_map.h"

#include <bit>
#include <cassert>

namespace codeheap {

CommitMap::CommitMap(size_t pages)
    : users_(pages, 0), committed_((pages + 63) / 64, 0), stamps_(pages, 0) {}

void CommitMap::decommitted(size_t first, size_t count) {
  for (size_t page = first; page < first + count; ++page) {
    assert(users_[page] == 0 && committed(page));
    committed_[page / 64] &= ~(uint64_t{1} << (page % 64));
  }
  committed_pages_.decrease(count);
  idle_pages_ -= count;
}

size_t CommitMap::last_committed_below(size_t first, size_t end) const {
  while (end > first) {
    const size_t word = (end - 1) / 64;
    uint64_t bits = committed_[word];
    const size_t top = (end - 1) % 64;  // highest bit of interest in this word
    if (top < 63) bits &= (uint64_t{1} << (top + 1)) - 1;
    if (bits != 0) {
      const size_t page = word * 64 + 63 - static_cast<size_t>(std::countl_zero(bits));
      return page >= first ? page : kNone;
    }
    end = word * 64;
  }
  return kNone;
}

}  // namespace codeheap
