// OwnerTable: who the blocks belong to (an LLVM module, an entry-cell page, ...).
//
// A retired owner keeps its record until its last block has left the heap, so the dump can
// still say whose code sits in quarantine. Each block points at its owner's record (records
// never move), so the per-block accounting costs no lookup; only registering, retiring and
// checking an OwnerId that a caller passes in go through the id index.
//
// Not thread-safe: the Heap's mutex guards it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "codeheap/address_index.h"
#include "codeheap/block_table.h"
#include "codeheap/heap.h"
#include "codeheap/node_pool.h"
#include "codeheap/stats.h"

namespace codeheap {

// What the dump shows of an owner (low and high stay 0: only the block table knows them), what
// it waits for, and the blocks allocate_group gave it that are still live (so that the group
// can be retired without its addresses, and without looking each one up).
struct OwnerRecord {
  static constexpr size_t kGroupCapacity = kMaxGroupByOwner;

  OwnerStats stats;
  std::function<void()> on_gone;
  std::array<BlockTable::Entry*, kGroupCapacity> group{};
  uint8_t group_size = 0;
  bool group_overflow = false;  // allocate_group had more requests than kGroupCapacity

  // Drops `block` from the group, if it is there (a block leaving the live state).
  void forget(const Block* block);
};

class OwnerTable {
 public:
  // Records come from `metadata`, the heap's node pool.
  explicit OwnerTable(NodePool* metadata) : metadata_(metadata) {}
  ~OwnerTable();
  OwnerTable(const OwnerTable&) = delete;
  OwnerTable& operator=(const OwnerTable&) = delete;

  OwnerRecord& add(std::string name);
  // Forgets an owner that has no block (a failed group allocation): as if never registered.
  void remove(OwnerId owner);
  // Marks the owner retired; false if it is unknown. Idempotent. `on_gone` (if any) becomes
  // ready once the owner has no live or quarantined block left (maybe at once); retired again
  // with another, both run, in order.
  bool retire(OwnerId owner, std::function<void()> on_gone = {});
  // The same for a record in hand (registered, not yet retired).
  void retire(OwnerRecord& record, std::function<void()> on_gone);
  // For allocate: the record of a registered, unretired owner; nullptr for kNoOwner. Sets
  // `accepted` to false (and returns nullptr) for an unknown or retired owner.
  OwnerRecord* accepting(OwnerId owner, bool& accepted);

  // For reclaim: if `owner` is retired, has an on_gone callback, no live block and exactly
  // `quarantined` quarantined blocks (so freeing those empties it), takes the callback out to
  // run before the blocks are freed. Returns an empty function otherwise.
  static std::function<void()> take_on_gone_if_emptied_by(OwnerRecord& owner, size_t quarantined);
  // True if the owner waits for an on_gone callback: its blocks are reclaimed all together.
  static bool has_on_gone(const OwnerRecord* owner) { return owner && owner->on_gone; }
  // The on_gone callbacks that became ready; the Heap runs them outside its lock.
  std::vector<std::function<void()>> take_ready();
  // Every callback still waiting, for a heap that is going away.
  std::vector<std::function<void()>> take_all_pending();

  // Block accounting, in footprint bytes; a null record (kNoOwner) is ignored. on_free may
  // erase the record.
  static void on_allocate(OwnerRecord* owner, size_t bytes);
  static void on_quarantine(OwnerRecord* owner, size_t bytes);
  void on_free(OwnerRecord* owner, size_t bytes, BlockState from);

  // One entry per record, by id; low/high are left 0 (only the block table knows them).
  std::vector<OwnerStats> snapshot() const;

 private:
  // A retired owner with no block left is gone: its on_gone becomes ready, its record goes.
  void erase_if_gone(OwnerRecord& r) {
    const OwnerStats& s = r.stats;
    if (s.retired && s.live_blocks == 0 && s.quarantined_blocks == 0) erase_gone(r);
  }
  void erase_gone(OwnerRecord& r);
  void erase(OwnerRecord& r);

  NodePool* metadata_;
  AddressIndex<OwnerRecord, /*kKeyShift=*/0> records_;  // by id
  std::vector<std::function<void()>> ready_;
  OwnerId next_id_ = kNoOwner + 1;
};

// Inline: the heap calls these for every block it hands out, retires and frees.
inline void OwnerRecord::forget(const Block* block) {
  for (size_t i = 0; i < group_size; ++i) {
    if (&group[i]->second == block) {
      group[i] = group[--group_size];
      return;
    }
  }
}

inline void OwnerTable::on_allocate(OwnerRecord* owner, size_t bytes) {
  if (owner == nullptr) return;
  ++owner->stats.live_blocks;
  owner->stats.live_bytes += bytes;
}

inline void OwnerTable::on_quarantine(OwnerRecord* owner, size_t bytes) {
  if (owner == nullptr) return;
  OwnerStats& s = owner->stats;
  --s.live_blocks;
  s.live_bytes -= bytes;
  ++s.quarantined_blocks;
  s.quarantined_bytes += bytes;
}

inline void OwnerTable::on_free(OwnerRecord* owner, size_t bytes, BlockState from) {
  if (owner == nullptr) return;
  OwnerStats& s = owner->stats;
  if (from == BlockState::kLive) {
    --s.live_blocks;
    s.live_bytes -= bytes;
  } else {
    --s.quarantined_blocks;
    s.quarantined_bytes -= bytes;
  }
  erase_if_gone(*owner);
}

}  // namespace codeheap
