#include "codeheap/quarantine.h"

#include <cassert>
#include <cstring>

namespace codeheap {

void fill_with_traps(uint8_t* writable, size_t bytes) { std::memset(writable, kTrapByte, bytes); }

void Quarantine::add(uintptr_t begin, Block& block) {
  block.quarantine_slot = static_cast<uint32_t>(entries_.size());
  entries_.push_back({{begin, begin + block.footprint, block.generation}, &block});
}

void Quarantine::remove(const Block& block) {
  const size_t slot = block.quarantine_slot;
  assert(slot < entries_.size() && entries_[slot].block == &block);
  if (slot + 1 != entries_.size()) {
    entries_[slot] = entries_.back();
    entries_[slot].block->quarantine_slot = static_cast<uint32_t>(slot);
  }
  entries_.pop_back();
}

std::vector<QuarantineEntry> Quarantine::snapshot() const {
  std::vector<QuarantineEntry> entries;
  entries.reserve(entries_.size());
  for (const Slot& slot : entries_) entries.push_back(slot.entry);
  return entries;
}

}  // namespace codeheap
