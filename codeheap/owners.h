// OwnerTable: who the blocks belong to (an LLVM module, an entry-cell page, ...).
//
// A retired owner keeps its record until its last block has left the heap, so the dump can
// still say whose code sits in quarantine.
//
// Not thread-safe: the Heap's mutex guards it.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "codeheap/heap.h"
#include "codeheap/stats.h"

namespace codeheap {

class OwnerTable {
 public:
  OwnerId add(std::string name);
  // Marks the owner retired; false if it is unknown. Idempotent.
  bool retire(OwnerId owner);
  // kNoOwner, or registered and not retired.
  bool accepts(OwnerId owner) const;

  // Block accounting, in footprint bytes; kNoOwner is ignored.
  void on_allocate(OwnerId owner, size_t bytes);
  void on_quarantine(OwnerId owner, size_t bytes);
  void on_free(OwnerId owner, size_t bytes, BlockState from);

  // One entry per record, by id; low/high are left 0 (only the block table knows them).
  std::vector<OwnerStats> snapshot() const;

 private:
  struct Record {
    std::string name;
    bool retired = false;
    size_t live_blocks = 0;
    size_t live_bytes = 0;
    size_t quarantined_blocks = 0;
    size_t quarantined_bytes = 0;
  };
  void erase_if_gone(std::map<OwnerId, Record>::iterator it);

  std::map<OwnerId, Record> records_;
  OwnerId next_id_ = kNoOwner + 1;
};

}  // namespace codeheap
