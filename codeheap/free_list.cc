#include "codeheap/free_list.h"

#include <algorithm>
#include <bit>
#include <cassert>
#include <iterator>

namespace codeheap {

namespace {

// Aligned requests first probe this many spans that are big enough only if suitably placed,
// before they settle for the smallest span that fits whatever its placement. Keeps the best fit
// for the common case (a page-aligned request meeting a page-aligned hole) at bounded cost.
constexpr int kAlignedProbes = 4;

uintptr_t align_up(uintptr_t value, size_t alignment) {
  return (value + alignment - 1) & ~(uintptr_t{alignment} - 1);
}

}  // namespace

FreeList::FreeList(uintptr_t begin, size_t size, std::pmr::memory_resource* metadata)
    : by_address_(metadata) {
  assert(begin % kGranule == 0 && size % kGranule == 0 && size <= kMaxSpan);
  classes_.reserve(kClassCount);
  for (size_t i = 0; i < kClassCount; ++i) classes_.emplace_back(metadata);
  if (size > 0) insert_span(begin, size);
  free_bytes_ = size;
}

inline size_t FreeList::class_of(size_t size) {
  if (size < kLinearLimit) return size / kGranule;
  const int msb = std::bit_width(size) - 1;  // >= 8
  if (msb >= 32) return kNoClass;
  const size_t sub = (size >> (msb - kSubClassBits)) - (size_t{1} << kSubClassBits);
  return (static_cast<size_t>(msb - 7) << kSubClassBits) + sub;
}

inline size_t FreeList::next_nonempty_class(size_t from) const {
  if (from >= kClassCount) return kNoClass;
  size_t word = from / 64;
  const uint64_t bits = nonempty_[word] & (~uint64_t{0} << (from % 64));
  if (bits != 0) return word * 64 + static_cast<size_t>(std::countr_zero(bits));
  // The next non-empty word, from the summary: no loop over the words in between.
  const uint64_t words = nonempty_words_ & (~uint64_t{1} << word);
  if (words == 0) return kNoClass;
  word = static_cast<size_t>(std::countr_zero(words));
  return word * 64 + static_cast<size_t>(std::countr_zero(nonempty_[word]));
}

void FreeList::mark_nonempty(size_t cls) {
  nonempty_[cls / 64] |= uint64_t{1} << (cls % 64);
  nonempty_words_ |= uint64_t{1} << (cls / 64);
}

void FreeList::mark_empty(size_t cls) {
  nonempty_[cls / 64] &= ~(uint64_t{1} << (cls % 64));
  if (nonempty_[cls / 64] == 0) nonempty_words_ &= ~(uint64_t{1} << (cls / 64));
}

inline FreeList::Cursor FreeList::first_at_least(size_t size) const {
  size_t cls = class_of(size);
  if (cls == kNoClass) return {};
  // Within the class of `size` some spans may be smaller than `size`; above it none are. (The
  // bitmap says whether the class is empty without touching the class's set:
  // docs/performance-notes.md, "FreeList: the class bitmap first".)
  if (nonempty_[cls / 64] & (uint64_t{1} << (cls % 64))) {
    auto it = classes_[cls].lower_bound(SizedSpan{.begin = 0, .size = size, .by_address = nullptr});
    if (it != classes_[cls].end()) return {cls, it};
  }
  cls = next_nonempty_class(cls + 1);
  if (cls == kNoClass) return {};
  return {cls, classes_[cls].begin()};
}

FreeList::Cursor FreeList::next(Cursor cursor) const {
  if (++cursor.it != classes_[cursor.cls].end()) return cursor;
  const size_t cls = next_nonempty_class(cursor.cls + 1);
  if (cls == kNoClass) return {};
  return {cls, classes_[cls].begin()};
}

bool FreeList::fits(uintptr_t begin, size_t span, size_t size, size_t alignment) {
  return align_up(begin, alignment) - begin + size <= span;
}

std::optional<uintptr_t> FreeList::allocate(size_t size, size_t alignment) {
  assert(size > 0 && size % kGranule == 0 && std::has_single_bit(alignment));
  if (size > kMaxSpan) return std::nullopt;
  alignment = std::max(alignment, kGranule);
  // Spans start on a granule, so at most alignment - kGranule bytes are lost to padding: a span
  // at least this big fits wherever it lies.
  const size_t always_fits = size + (alignment - kGranule);

  // Best fit would pick the remembered span if no class from the request's own up to the span's
  // holds a span (the span is the smallest of its class); if carving the block off its bottom
  // also leaves it in its class, that is a few stores on two nodes whose addresses are at hand.
  if (hint_ != nullptr && (hint_->begin & (alignment - 1)) == 0 &&
      next_nonempty_class(class_of(size)) == hint_class_ &&
      class_of(hint_->size - size) == hint_class_) {
    const uintptr_t begin = hint_->begin;
    hint_->begin = begin + size;
    hint_->size -= size;
    hint_span_->begin = begin + size;
    hint_span_->size -= size;
    free_bytes_ -= size;
    return begin;
  }

  Cursor cursor = first_at_least(size);
  for (int probe = 0; cursor && probe < kAlignedProbes; ++probe, cursor = next(cursor)) {
    if (cursor.size() >= always_fits || fits(cursor.begin(), cursor.size(), size, alignment)) {
      return take(cursor, size, alignment);
    }
  }
  if (Cursor sure = first_at_least(always_fits)) return take(sure, size, alignment);
  // Near exhaustion: the only candidates are spans in [size, always_fits) that were not probed.
  // Check every one, so that the request fails only when nothing can hold it.
  for (; cursor; cursor = next(cursor)) {
    if (fits(cursor.begin(), cursor.size(), size, alignment)) return take(cursor, size, alignment);
  }
  return std::nullopt;
}

inline uintptr_t FreeList::take(Cursor cursor, size_t size, size_t alignment) {
  const uintptr_t span_begin = cursor.begin();
  const uintptr_t span_end = span_begin + cursor.size();
  const uintptr_t begin = align_up(span_begin, alignment);
  // The padding and the tail border allocated memory (or the other piece), never a free span,
  // so they stay without merging; the first piece left reuses the span's nodes.
  const bool padding = begin > span_begin;
  const bool tail = begin + size < span_end;
  const Span& at = *cursor.it->by_address;
  if (padding) {
    replace_span(at, cursor, span_begin, begin - span_begin);
    if (tail) insert_span(begin + size, span_end - begin - size);
  } else if (tail) {
    replace_span(at, cursor, begin + size, span_end - begin - size);
  } else {
    erase_span(span_begin, cursor.size());
  }
  free_bytes_ -= size;
  return begin;
}

void FreeList::free(uintptr_t begin, size_t size) {
  assert(begin % kGranule == 0 && size > 0 && size % kGranule == 0);
  free_bytes_ += size;
  const auto after = by_address_.lower_bound(begin);
  assert(after == by_address_.end() || after->begin >= begin + size);
  const bool merge_after = after != by_address_.end() && after->begin == begin + size;
  const auto before = after == by_address_.begin() ? by_address_.end() : std::prev(after);
  assert(before == by_address_.end() || before->begin + before->size <= begin);
  const bool merge_before = before != by_address_.end() && before->begin + before->size == begin;
  if (merge_before && merge_after) {
    const size_t merged = before->size + size + after->size;
    erase_span(after->begin, after->size);
    replace_span(*before, before->begin, merged);
  } else if (merge_before) {
    replace_span(*before, before->begin, before->size + size);
  } else if (merge_after) {
    replace_span(*after, begin, size + after->size);
  } else {
    insert_span(begin, size);
  }
}

size_t FreeList::largest_span() const {
  if (nonempty_words_ == 0) return 0;
  const size_t word = 63 - static_cast<size_t>(std::countl_zero(nonempty_words_));
  const size_t cls = word * 64 + 63 - static_cast<size_t>(std::countl_zero(nonempty_[word]));
  return classes_[cls].rbegin()->size;
}

void FreeList::insert_span(uintptr_t begin, size_t size) {
  hint_ = nullptr;
  const size_t cls = class_of(size);
  assert(cls != kNoClass);
  const Span& node = *by_address_.insert(Span{begin, size}).first;
  classes_[cls].insert(SizedSpan{begin, size, &node});
  mark_nonempty(cls);
}

void FreeList::replace_span(const Span& at, uintptr_t begin, size_t size) {
  const size_t cls = class_of(at.size);
  replace_span(at, Cursor{cls, classes_[cls].find(SizedSpan{at.begin, at.size, nullptr})}, begin,
               size);
}

inline void FreeList::replace_span(const Span& at, Cursor in_class, uintptr_t begin, size_t size) {
  assert(in_class.begin() == at.begin && in_class.size() == at.size &&
         in_class.it->by_address == &at);
  const SizedSpan updated{begin, size, &at};
  at.begin = begin;  // between the same neighbours: address order holds
  at.size = size;
  const size_t old_cls = in_class.cls;
  const size_t cls = class_of(size);
  assert(cls != kNoClass);
  SizeClass& from = classes_[old_cls];
  const auto it = in_class.it;
  const BySize less;
  // The span keeps its node if it keeps its place in its class; a class of one span (as when
  // blocks are carved off one large span) needs no comparison.
  hint_ = nullptr;
  if (cls == old_cls &&
      (from.size() == 1 || ((it == from.begin() || less(*std::prev(it), updated)) &&
                            (std::next(it) == from.end() || less(updated, *std::next(it)))))) {
    it->begin = begin;
    it->size = size;
    if (it == from.begin()) remember(*it, cls);
    return;
  }
  auto node = from.extract(it);
  if (from.empty()) mark_empty(old_cls);
  node.value() = updated;
  classes_[cls].insert(std::move(node));
  mark_nonempty(cls);
}

void FreeList::erase_span(uintptr_t begin, size_t size) {
  hint_ = nullptr;
  const size_t cls = class_of(size);
  by_address_.erase(by_address_.find(begin));
  classes_[cls].erase(SizedSpan{begin, size, nullptr});
  if (classes_[cls].empty()) mark_empty(cls);
}

}  // namespace codeheap
