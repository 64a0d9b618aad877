// BlockTable: every live and quarantined block of a heap, by start address.
//
// Answers "which block contains this program counter" in O(log n): a stack scanner, a profiler
// or a crash handler has an address somewhere inside a function, not its start.
//
// Not thread-safe: the Heap's mutex guards it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>

#include "codeheap/heap.h"

namespace codeheap {

struct Block {
  size_t size = 0;       // as requested
  size_t footprint = 0;  // size rounded up to the granule: what the block takes from the arena
  // Distinguishes successive blocks at one address, so a reclaim pass that worked from a
  // snapshot never frees a block that was released after its snapshot was taken.
  uint64_t generation = 0;
  OwnerId owner = kNoOwner;
  Arena arena = Arena::kCode;
  BlockState state = BlockState::kLive;
  // The bytes are trap bytes already (release fills at once; retire leaves them for reclaim).
  bool trapped = false;
};

class BlockTable {
 public:
  using Entry = std::map<uintptr_t, Block>::value_type;

  // The block that starts at `begin`, or nullptr.
  Block* at(uintptr_t begin);
  const Block* at(uintptr_t begin) const;
  // The block whose footprint [begin, begin + footprint) contains `address`, or nullptr.
  const Entry* containing(uintptr_t address) const;

  void insert(uintptr_t begin, const Block& block);
  void erase(uintptr_t begin);

  // Visits f(begin, block) in address order.
  template <typename F>
  void for_each(F&& f) const {
    for (const auto& [begin, block] : blocks_) f(begin, block);
  }

 private:
  std::map<uintptr_t, Block> blocks_;
};

BlockInfo to_block_info(uintptr_t begin, const Block& block);

}  // namespace codeheap
