// BlockTable: every live and quarantined block of a heap, by start address.
//
// Two structures over the region's 16-byte granules:
//   - an index from start address to the block's entry (AddressIndex, open addressing): what
//     allocate, release, retire and reclaim look up, in O(1);
//   - a bitmap with one bit per granule, set where a block starts, and a summary bit per bitmap
//     word: answers "which block contains this program counter" (a stack scanner, a profiler
//     or a crash handler has an address somewhere inside a function, not its start) by finding
//     the nearest start at or below the address, a word at a time, and lists blocks in address
//     order for the dump.
// The bitmap costs 1/128 of the region in address space; its pages are touched only where
// blocks have been (calloc hands out untouched zero pages for large sizes).
//
// Not thread-safe: the Heap's mutex guards it.
#pragma once

#include <bit>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <tuple>
#include <utility>

#include "codeheap/address_index.h"
#include "codeheap/types.h"
#include "codeheap/node_pool.h"

namespace codeheap {

struct FaultRecord;
struct OwnerRecord;

struct Block {
  size_t size = 0;       // as requested
  size_t footprint = 0;  // size rounded up to the granule: what the block takes from the arena
  // Distinguishes successive blocks at one address, so a reclaim pass that worked from a
  // snapshot never frees a block that was released after its snapshot was taken.
  uint64_t generation = 0;
  OwnerId owner = kNoOwner;
  OwnerRecord* owner_record = nullptr;  // the OwnerTable's record of `owner`; null for kNoOwner
  Arena arena = Arena::kCode;
  BlockState state = BlockState::kLive;
  // The bytes are trap bytes already (release fills at once; retire leaves them for reclaim).
  bool trapped = false;
  // Where the block sits in its owner's list of live blocks (LiveBlocks) while live, and in
  // the Quarantine's list while quarantined: never both at once.
  uint32_t slot = 0;
  // Its record in the heap's FaultMap (code blocks; null otherwise).
  FaultRecord* fault_record = nullptr;
};

class BlockTable {
 public:
  using Entry = std::pair<const uintptr_t, Block>;

  // Blocks start in [begin, end), granule-aligned. Entries come from `metadata`, the heap's
  // node pool.
  BlockTable(uintptr_t begin, uintptr_t end, NodePool* metadata);
  ~BlockTable();
  BlockTable(const BlockTable&) = delete;
  BlockTable& operator=(const BlockTable&) = delete;

  // The block that starts at `begin`, or nullptr. Its address is stable until it is erased.
  Block* at(uintptr_t begin);
  const Block* at(uintptr_t begin) const;
  // The block whose footprint [begin, begin + footprint) contains `address`, or nullptr.
  const Entry* containing(uintptr_t address) const;

  // A new entry for a block at `begin`, default-initialized for the caller to fill in place
  // (docs/performance-notes.md, "Block entries filled in place").
  Entry* insert(uintptr_t begin);

  // The entry of the block that starts at `begin` (null if none), for callers that need its
  // start address too or will erase it. Valid until it is erased.
  using Handle = Entry*;
  Handle find(uintptr_t begin) { return index_.find(begin); }
  // Starts loading what find(begin) reads first, for a caller that will look it up soon.
  void prefetch(uintptr_t begin) const { index_.prefetch(begin); }
  void erase(Handle entry);

  // Once per reclaim pass: lets the index shrink after a burst of blocks has gone.
  void compact() { index_.shrink_to_recent_peak(); }

  // Visits f(begin, block) in address order.
  template <typename F>
  void for_each(F&& f) const {
    for (size_t s = 0; s < summary_words_; ++s) {
      for (uint64_t words = summary_[s]; words != 0; words &= words - 1) {
        const size_t w = s * 64 + static_cast<size_t>(std::countr_zero(words));
        for (uint64_t bits = starts_[w]; bits != 0; bits &= bits - 1) {
          const uintptr_t begin = address_of(w * 64 + static_cast<size_t>(std::countr_zero(bits)));
          f(begin, index_.find(begin)->second);
        }
      }
    }
  }

 private:
  static constexpr size_t kGranule = 16;
  struct FreeDeleter {
    void operator()(uint64_t* p) const { std::free(p); }
  };
  using Bits = std::unique_ptr<uint64_t[], FreeDeleter>;

  size_t granule_of(uintptr_t address) const { return (address - begin_) / kGranule; }
  uintptr_t address_of(size_t granule) const { return begin_ + granule * kGranule; }
  // The highest granule <= `granule` where a block starts, or npos.
  size_t last_start_at_or_below(size_t granule) const;

  uintptr_t begin_;
  uintptr_t end_;
  size_t words_;          // of starts_
  size_t summary_words_;  // of summary_
  Bits starts_;           // bit per granule: a block starts there
  Bits summary_;          // bit per starts_ word: it is not zero
  NodePool* entries_;     // the heap's node pool
  AddressIndex<Entry> index_;
};

BlockInfo to_block_info(uintptr_t begin, const Block& block);

// Inline: once per block allocated and once per block freed.
inline BlockTable::Entry* BlockTable::insert(uintptr_t begin) {
  assert(begin >= begin_ && begin < end_ && (begin - begin_) % kGranule == 0);
  Entry* const entry = entries_->new_node<Entry>(std::piecewise_construct,
                                                 std::forward_as_tuple(begin), std::tuple<>());
  index_.insert(begin, entry);
  const size_t g = granule_of(begin);
  starts_[g / 64] |= uint64_t{1} << (g % 64);
  summary_[g / 64 / 64] |= uint64_t{1} << (g / 64 % 64);
  return entry;
}

inline void BlockTable::erase(Handle entry) {
  const size_t g = granule_of(entry->first);
  [[maybe_unused]] const bool erased = index_.erase(entry->first);
  assert(erased);
  entries_->delete_node(entry);
  uint64_t& word = starts_[g / 64];
  word &= ~(uint64_t{1} << (g % 64));
  if (word == 0) summary_[g / 64 / 64] &= ~(uint64_t{1} << (g / 64 % 64));
}

}  // namespace codeheap
