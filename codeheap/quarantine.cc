#include "codeheap/quarantine.h"

#include <cassert>
#include <cstring>

namespace codeheap {

void fill_with_traps(uint8_t* writable, size_t bytes) { std::memset(writable, kTrapByte, bytes); }

void Quarantine::add(uintptr_t begin, Block& block) {
  std::vector<Slot>& list = entries_[static_cast<size_t>(block.arena)];
  block.quarantine_slot = static_cast<uint32_t>(list.size());
  list.push_back({{begin, begin + block.footprint, block.generation}, &block});
}

void Quarantine::remove(const Block& block) {
  std::vector<Slot>& list = entries_[static_cast<size_t>(block.arena)];
  const size_t slot = block.quarantine_slot;
  assert(slot < list.size() && list[slot].block == &block);
  if (slot + 1 != list.size()) {
    list[slot] = list.back();
    list[slot].block->quarantine_slot = static_cast<uint32_t>(slot);
  }
  list.pop_back();
}

size_t Quarantine::size() const {
  size_t total = 0;
  for (const std::vector<Slot>& list : entries_) total += list.size();
  return total;
}

std::vector<QuarantineEntry> Quarantine::snapshot() const {
  std::vector<QuarantineEntry> entries;
  entries.reserve(size());
  for (const std::vector<Slot>& list : entries_) {
    for (const Slot& slot : list) entries.push_back(slot.entry);
  }
  return entries;
}

}  // namespace codeheap
