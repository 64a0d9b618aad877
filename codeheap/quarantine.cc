#include "codeheap/quarantine.h"

#include <cassert>
#include <cstring>

namespace codeheap {

void fill_with_traps(uint8_t* writable, size_t bytes) { std::memset(writable, kTrapByte, bytes); }

void Quarantine::add(const QuarantineEntry& entry) {
  [[maybe_unused]] const bool inserted = entries_.emplace(entry.begin, entry).second;
  assert(inserted);
}

void Quarantine::remove(uintptr_t begin) {
  [[maybe_unused]] const size_t erased = entries_.erase(begin);
  assert(erased == 1);
}

std::vector<QuarantineEntry> Quarantine::snapshot() const {
  std::vector<QuarantineEntry> entries;
  entries.reserve(entries_.size());
  for (const auto& [begin, entry] : entries_) entries.push_back(entry);
  return entries;
}

}  // namespace codeheap
