#include "codeheap/quarantine.h"

#include <cstring>

namespace codeheap {

void fill_with_traps(uint8_t* writable, size_t bytes) { std::memset(writable, kTrapByte, bytes); }

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
