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
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "codeheap/address_index.h"
#include "codeheap/block_table.h"
#include "codeheap/types.h"
#include "codeheap/node_pool.h"
#include "codeheap/stats.h"

namespace codeheap {

// An owner's live blocks, so that Heap::end_group ends them without their addresses and
// without a lookup each. Each block knows its slot (Block::slot): adding and dropping one is
// O(1). Six fit in the record (a JITLink graph has at most six segments: three protections,
// two lifetimes); a larger group spills to a node of the heap's pool, doubled as it grows.
class LiveBlocks {
 public:
  using Entry = BlockTable::Entry;

  LiveBlocks() = default;
  LiveBlocks(const LiveBlocks&) = delete;
  LiveBlocks& operator=(const LiveBlocks&) = delete;

  size_t size() const { return size_; }
  Entry* const* begin() const { return data(); }
  Entry* const* end() const { return data() + size_; }

  void add(Entry* entry, NodePool& pool);
  // Drops the block, if it is in the list (a block leaving the live state).
  void remove(const Block& block);
  // Empties the list for a caller that ends every block in it: the entries stay readable
  // through begin()/end() of the returned span until the next add.
  std::span<Entry* const> take_all() { return {data(), std::exchange(size_, 0)}; }
  // Gives the spilled storage back to the pool (before the record goes).
  void free_storage(NodePool& pool);

 private:
  static constexpr uint32_t kInline = 6;

  Entry** data() { return spill_ != nullptr ? spill_ : inline_.data(); }
  Entry* const* data() const { return spill_ != nullptr ? spill_ : inline_.data(); }
  void grow(NodePool& pool);

  std::array<Entry*, kInline> inline_;
  Entry** spill_ = nullptr;
  uint32_t size_ = 0;
  uint32_t capacity_ = kInline;
};

// What the dump shows of an owner (low and high stay 0: only the block table knows them), what
// it waits for, and its live blocks.
struct OwnerRecord {
  OwnerStats stats;
  std::function<void()> on_gone;
  LiveBlocks live;
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

  // Block accounting (footprint bytes, the list of live blocks); a null record (kNoOwner) is
  // ignored. on_free may erase the record.
  void on_allocate(OwnerRecord* owner, BlockTable::Entry* entry);
  static void on_quarantine(OwnerRecord* owner, const Block& block);
  void on_free(OwnerRecord* owner, const Block& block);

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
inline void LiveBlocks::add(Entry* entry, NodePool& pool) {
  if (size_ == capacity_) [[unlikely]]
    grow(pool);
  entry->second.slot = size_;
  data()[size_++] = entry;
}

inline void LiveBlocks::remove(const Block& block) {
  const uint32_t slot = block.slot;
  Entry** const entries = data();
  if (slot >= size_ || &entries[slot]->second != &block) return;  // taken out by take_all
  Entry* const last = entries[--size_];
  entries[slot] = last;
  last->second.slot = slot;
}

inline void OwnerTable::on_allocate(OwnerRecord* owner, BlockTable::Entry* entry) {
  if (owner == nullptr) return;
  ++owner->stats.live_blocks;
  owner->stats.live_bytes += entry->second.footprint;
  owner->live.add(entry, *metadata_);
}

inline void OwnerTable::on_quarantine(OwnerRecord* owner, const Block& block) {
  if (owner == nullptr) return;
  owner->live.remove(block);
  const size_t bytes = block.footprint;
  OwnerStats& s = owner->stats;
  --s.live_blocks;
  s.live_bytes -= bytes;
  ++s.quarantined_blocks;
  s.quarantined_bytes += bytes;
}

inline void OwnerTable::on_free(OwnerRecord* owner, const Block& block) {
  if (owner == nullptr) return;
  const size_t bytes = block.footprint;
  OwnerStats& s = owner->stats;
  if (block.state == BlockState::kLive) {
    owner->live.remove(block);
    --s.live_blocks;
    s.live_bytes -= bytes;
  } else {
    --s.quarantined_blocks;
    s.quarantined_bytes -= bytes;
  }
  erase_if_gone(*owner);
}

}  // namespace codeheap
