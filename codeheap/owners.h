// OwnerTable: who the blocks belong to (an LLVM module, an entry-cell page, ...).
//
// A retired owner keeps its record until its last block has left the heap, so the dump can
// still say whose code sits in quarantine.
//
// Not thread-safe: the Heap's mutex guards it.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "codeheap/heap.h"
#include "codeheap/stats.h"

namespace codeheap {

class OwnerTable {
 public:
  OwnerId add(std::string name);
  // Marks the owner retired; false if it is unknown. Idempotent. `on_gone` (if any) becomes
  // ready once the owner has no live or quarantined block left (maybe at once).
  bool retire(OwnerId owner, std::function<void()> on_gone = {});
  // For reclaim: if `owner` is retired, has an on_gone callback, no live block and exactly
  // `quarantined` quarantined blocks (so freeing those empties it), takes the callback out to
  // run before the blocks are freed. Returns an empty function otherwise.
  std::function<void()> take_on_gone_if_emptied_by(OwnerId owner, size_t quarantined);
  // True if the owner waits for an on_gone callback: its blocks are reclaimed all together.
  bool has_on_gone(OwnerId owner) const;
  // The on_gone callbacks that became ready; the Heap runs them outside its lock.
  std::vector<std::function<void()>> take_ready();
  // Every callback still waiting, for a heap that is going away.
  std::vector<std::function<void()>> take_all_pending();
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
    std::function<void()> on_gone;
  };
  void erase_if_gone(std::map<OwnerId, Record>::iterator it);

  std::map<OwnerId, Record> records_;
  std::vector<std::function<void()>> ready_;
  OwnerId next_id_ = kNoOwner + 1;
};

}  // namespace codeheap
