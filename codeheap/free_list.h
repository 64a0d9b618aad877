// FreeList: the free spans of one arena, for best-fit allocation with coalescing.
//
// The metadata lives outside the arena (in std::map / std::set nodes from `metadata`, the
// heap's node pool), never inside the free memory: a freed code page stays exactly as the heap
// left it (trap bytes, or a hole returned to the OS), and the allocator never has to write
// through the executable memory's alias.
//
// Two indexes over the same spans:
//   - by address, to find both neighbours of a freed span in O(log n) and merge with them.
//     Spans are maximal: no two free spans touch.
//   - by size, segregated into classes as in TLSF: 16-byte steps below 256 bytes, then 16
//     classes per power of two. A bitmap of non-empty classes (and a bit per bitmap word) finds
//     the first class at or above a size in O(1); inside a class spans are ordered by (size,
//     address), so a lookup yields the best fit, lowest address first, in O(log n). Best fit
//     keeps large spans intact for large modules; the address tie-break keeps code dense at the
//     bottom of the arena.
// Blocks carved one after another off one large span (the steady state between reclaims) skip
// the search: the list remembers that span while best fit would pick it anyway (allocate;
// docs/performance-notes.md, "FreeList: the remembered span").
//
// Not thread-safe: the Heap's mutex guards it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory_resource>
#include <optional>
#include <set>
#include <utility>
#include <vector>

namespace codeheap {

class FreeList {
 public:
  // Every span begins and ends on a granule boundary: block sizes are rounded up to it, and it
  // is the smallest alignment a block gets (what LLVM asks for functions and constant pools).
  static constexpr size_t kGranule = 16;
  // Largest span the size classes cover; arenas are at most 2 GiB.
  static constexpr size_t kMaxSpan = (size_t{1} << 32) - 1;

  // One free span [begin, begin + size); both granule-aligned, size <= kMaxSpan.
  FreeList(uintptr_t begin, size_t size,
           std::pmr::memory_resource* metadata = std::pmr::get_default_resource());

  // Takes `size` bytes (a multiple of kGranule) starting at a multiple of `alignment` (a power
  // of two) from the best-fitting span; nullopt if no span can hold them. Fails only when no
  // span fits: an aligned request never fails just because the fast path's guess missed.
  std::optional<uintptr_t> allocate(size_t size, size_t alignment);

  // Returns [begin, begin + size) (granule-aligned, not overlapping any free span) and merges it
  // with its free neighbours.
  void free(uintptr_t begin, size_t size);

  // Starts loading what the next allocate is likely to touch (the span it carved last).
  void prefetch() const {
    __builtin_prefetch(hint_);
    __builtin_prefetch(hint_span_);
  }

  size_t free_bytes() const { return free_bytes_; }
  size_t span_count() const { return by_address_.size(); }
  size_t largest_span() const;

  // Visits spans as f(begin, size), in address order.
  template <typename F>
  void for_each(F&& f) const {
    for (const Span& span : by_address_) f(span.begin, span.size);
  }
  // Visits spans from the highest address down while f(begin, size) returns true.
  template <typename F>
  void for_each_descending(F&& f) const {
    for (auto it = by_address_.rbegin(); it != by_address_.rend(); ++it) {
      if (!f(it->begin, it->size)) return;
    }
  }

 private:
  static constexpr int kSubClassBits = 4;                            // 16 classes per power of two
  static constexpr size_t kLinearLimit = kGranule << kSubClassBits;  // 256: exact 16-byte steps
  static constexpr size_t kClassCount = (32 - 7) << kSubClassBits;   // covers sizes < 2^32
  static constexpr size_t kNoClass = kClassCount;

  // One free span, kept in two sets. Its fields are mutable so that a span can shrink or grow
  // in place when it keeps its position in a set's order (checked where that is done): carving
  // a block off the bottom of a span is then a few stores, not an erase and an insert.
  struct Span {
    mutable uintptr_t begin;
    mutable size_t size;
  };
  // A span as its size class holds it, with its node in the by-address set, so that carving a
  // block off a span found by size needs no second search by address.
  struct SizedSpan {
    mutable uintptr_t begin;
    mutable size_t size;
    const Span* by_address;
  };
  struct ByBegin {
    using is_transparent = void;
    bool operator()(const Span& a, const Span& b) const { return a.begin < b.begin; }
    bool operator()(const Span& a, uintptr_t b) const { return a.begin < b; }
    bool operator()(uintptr_t a, const Span& b) const { return a < b.begin; }
  };
  struct BySize {  // size, then address
    bool operator()(const SizedSpan& a, const SizedSpan& b) const {
      return a.size != b.size ? a.size < b.size : a.begin < b.begin;
    }
  };
  using ByAddress = std::pmr::set<Span, ByBegin>;
  using SizeClass = std::pmr::set<SizedSpan, BySize>;

  // A position in size order: a class and a span in it.
  struct Cursor {
    size_t cls = kNoClass;
    SizeClass::const_iterator it;
    explicit operator bool() const { return cls != kNoClass; }
    size_t size() const { return it->size; }
    uintptr_t begin() const { return it->begin; }
  };

  // The allocation path's helpers are forced inline (docs/performance-notes.md, "Inlined
  // bookkeeping").
  [[gnu::always_inline]] static size_t class_of(size_t size);
  [[gnu::always_inline]] size_t next_nonempty_class(size_t from) const;
  void mark_nonempty(size_t cls);
  void mark_empty(size_t cls);
  [[gnu::always_inline]] Cursor first_at_least(size_t size) const;
  Cursor next(Cursor cursor) const;
  static bool fits(uintptr_t begin, size_t span, size_t size, size_t alignment);

  [[gnu::always_inline]] uintptr_t take(Cursor cursor, size_t size, size_t alignment);
  void insert_span(uintptr_t begin, size_t size);
  // Turns the span `at` (a node of the by-address set) into [begin, begin + size), which must
  // keep its place in address order (lie between the same neighbours), reusing its nodes (no
  // allocation).
  void replace_span(const Span& at, uintptr_t begin, size_t size);
  // The same, for a span whose place in its size class is known.
  [[gnu::always_inline]] void replace_span(const Span& at, Cursor in_class, uintptr_t begin,
                                           size_t size);
  void erase_span(uintptr_t begin, size_t size);
  void remember(const SizedSpan& span, size_t cls) {
    hint_ = &span;
    hint_span_ = span.by_address;
    hint_class_ = cls;
  }

  ByAddress by_address_;
  std::vector<SizeClass> classes_;                            // kClassCount of them
  std::array<uint64_t, (kClassCount + 63) / 64> nonempty_{};  // bit per class
  uint64_t nonempty_words_ = 0;  // bit per word of nonempty_ that is not zero
  // A span that is the smallest of its class (hint_class_), kept from the last carve until any
  // other change to the lists: the steady state of allocation, blocks carved one after another
  // off one large span, then needs no search (allocate).
  const SizedSpan* hint_ = nullptr;
  const Span* hint_span_ = nullptr;  // the same span in the by-address set
  size_t hint_class_ = kNoClass;
  static_assert((kClassCount + 63) / 64 <= 64);
  size_t free_bytes_ = 0;
};

}  // namespace codeheap
