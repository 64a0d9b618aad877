#include "codeheap/block_table.h"

#include <cassert>
#include <new>

namespace codeheap {

namespace {

constexpr size_t kNone = ~size_t{0};

// Zeroed words; calloc leaves large ones as untouched zero pages.
template <typename Bits>
Bits zeroed_words(size_t count) {
  auto* words = static_cast<uint64_t*>(std::calloc(count, sizeof(uint64_t)));
  if (words == nullptr) throw std::bad_alloc();
  return Bits(words);
}

// The highest set bit of `word` at or below `bit`, or kNone.
size_t highest_at_or_below(uint64_t word, size_t bit) {
  if (bit < 63) word &= (uint64_t{2} << bit) - 1;
  return word == 0 ? kNone : 63 - static_cast<size_t>(std::countl_zero(word));
}

}  // namespace

BlockTable::BlockTable(uintptr_t begin, uintptr_t end, NodePool* metadata)
    : begin_(begin),
      end_(end),
      words_(((end - begin) / kGranule + 63) / 64),
      summary_words_((words_ + 63) / 64),
      starts_(zeroed_words<Bits>(words_)),
      summary_(zeroed_words<Bits>(summary_words_)),
      entries_(metadata) {}

BlockTable::~BlockTable() {
  index_.for_each([this](uintptr_t, Entry* entry) { entries_->delete_node(entry); });
}

Block* BlockTable::at(uintptr_t begin) {
  Entry* entry = index_.find(begin);
  return entry == nullptr ? nullptr : &entry->second;
}

const Block* BlockTable::at(uintptr_t begin) const {
  const Entry* entry = index_.find(begin);
  return entry == nullptr ? nullptr : &entry->second;
}

size_t BlockTable::last_start_at_or_below(size_t granule) const {
  size_t w = granule / 64;
  if (const size_t bit = highest_at_or_below(starts_[w], granule % 64); bit != kNone) {
    return w * 64 + bit;
  }
  if (w == 0) return kNone;
  // The nearest non-zero word below w, through the summary.
  const size_t below = w - 1;
  for (size_t s = below / 64 + 1; s-- > 0;) {
    const size_t word = highest_at_or_below(summary_[s], s == below / 64 ? below % 64 : 63);
    if (word == kNone) continue;
    w = s * 64 + word;
    return w * 64 + highest_at_or_below(starts_[w], 63);
  }
  return kNone;
}

const BlockTable::Entry* BlockTable::containing(uintptr_t address) const {
  if (address < begin_ || address >= end_) return nullptr;
  const size_t granule = last_start_at_or_below(granule_of(address));
  if (granule == kNone) return nullptr;
  const Entry* entry = index_.find(address_of(granule));
  assert(entry != nullptr);
  return address - entry->first < entry->second.footprint ? entry : nullptr;
}

BlockInfo to_block_info(uintptr_t begin, const Block& block) {
  return BlockInfo{begin, block.size, block.arena, block.state, block.owner};
}

}  // namespace codeheap
