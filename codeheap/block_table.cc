#include "codeheap/block_table.h"

#include <cassert>
#include <iterator>

namespace codeheap {

Block* BlockTable::at(uintptr_t begin) {
  auto it = blocks_.find(begin);
  return it == blocks_.end() ? nullptr : &it->second;
}

const Block* BlockTable::at(uintptr_t begin) const {
  auto it = blocks_.find(begin);
  return it == blocks_.end() ? nullptr : &it->second;
}

const BlockTable::Entry* BlockTable::containing(uintptr_t address) const {
  auto it = blocks_.upper_bound(address);
  if (it == blocks_.begin()) return nullptr;
  --it;
  return address - it->first < it->second.footprint ? &*it : nullptr;
}

void BlockTable::insert(uintptr_t begin, const Block& block) {
  [[maybe_unused]] const bool inserted = blocks_.emplace(begin, block).second;
  assert(inserted);
}

void BlockTable::erase(uintptr_t begin) {
  [[maybe_unused]] const size_t erased = blocks_.erase(begin);
  assert(erased == 1);
}

BlockInfo to_block_info(uintptr_t begin, const Block& block) {
  return BlockInfo{begin, block.size, block.arena, block.state, block.owner};
}

}  // namespace codeheap
