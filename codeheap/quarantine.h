// Quarantine: released or retired blocks that some thread may still be executing or about to
// return into. They stay out of the free list until a reclaim pass is told that no stack
// references them.
//
// A released block is filled with trap bytes at once, so a stale call or return into it stops
// the thread with SIGTRAP right there instead of running whatever is allocated there next. A
// retired block keeps its code until reclaim, so activations still inside can finish; it is
// trap-filled when it goes back to the free list. Either way free memory that was once used
// holds traps.
//
// An unordered list per arena: every block leaves it exactly once, so adding and removing are
// O(1) (each block remembers its slot). Blocks are mostly retired in the order they were
// allocated, and allocated upwards through their arena, so each list tends to be in address
// order already; and the arenas lie in address order. So a reclaim pass that wants its work
// list sorted by address mostly finds it sorted, where one list for all arenas would interleave
// them and need a sort every pass.
//
// Not thread-safe: the Heap's mutex guards it.
#pragma once

#include <array>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "codeheap/block_table.h"

namespace codeheap {

// x86-64 `int3`: one byte, so every byte offset of a trapped block is an instruction boundary
// and a jump or return anywhere into it traps.
inline constexpr uint8_t kTrapByte = 0xCC;

// Fills `bytes` bytes at `writable` (the writable alias of a block) with kTrapByte.
void fill_with_traps(uint8_t* writable, size_t bytes);

struct QuarantineEntry {
  uintptr_t begin = 0;
  uintptr_t end = 0;  // begin + footprint
  uint64_t generation = 0;
};

class Quarantine {
 public:
  // `block` (a node of the BlockTable, stable until erased) starts at `begin`.
  void add(uintptr_t begin, Block& block);
  // `block` must be in the list.
  void remove(const Block& block);
  size_t size() const;
  // Everything in quarantine, arena by arena in address order, each arena in retire order
  // (see above): the work list of a reclaim pass, taken under the lock and examined without it.
  std::vector<QuarantineEntry> snapshot() const;

 private:
  struct Slot {
    QuarantineEntry entry;
    Block* block;
  };
  std::array<std::vector<Slot>, kArenaCount> entries_;  // by arena
};

// Inline: once per block retired or released, and once per block reclaimed.
inline void Quarantine::add(uintptr_t begin, Block& block) {
  std::vector<Slot>& list = entries_[static_cast<size_t>(block.arena)];
  block.slot = static_cast<uint32_t>(list.size());
  list.push_back({{begin, begin + block.footprint, block.generation}, &block});
}

inline void Quarantine::remove(const Block& block) {
  std::vector<Slot>& list = entries_[static_cast<size_t>(block.arena)];
  const size_t slot = block.slot;
  assert(slot < list.size() && list[slot].block == &block);
  if (slot + 1 != list.size()) {
    list[slot] = list.back();
    list[slot].block->slot = static_cast<uint32_t>(slot);
  }
  list.pop_back();
}

}  // namespace codeheap
