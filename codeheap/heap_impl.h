// Heap::Impl: what heap.cc (allocation, release, lookup, stats) and reclaim.cc (reclaim passes,
// automatic reclamation, trim) share. Private to codeheap.
#pragma once

#include <bit>
#include <functional>
#include <memory>
#include <memory_resource>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "codeheap/block_table.h"
#include "codeheap/commit_map.h"
#include "codeheap/fault_map.h"
#include "codeheap/free_list.h"
#include "codeheap/heap.h"
#include "codeheap/log.h"
#include "codeheap/node_pool.h"
#include "codeheap/owners.h"
#include "codeheap/quarantine.h"
#include "codeheap/region.h"

namespace codeheap {

// One arena's allocator and accounting. Bytes are footprints (granule-rounded sizes).
struct ArenaState {
  ArenaState(Arena id, uintptr_t begin, uintptr_t end, size_t page_size,
             std::pmr::memory_resource* metadata)
      : id(id),
        begin(begin),
        end(end),
        free(begin, end - begin, metadata),
        commit((end - begin) / page_size) {}

  Arena id;
  uintptr_t begin;
  uintptr_t end;
  FreeList free;
  CommitMap commit;
  Gauge used_bytes;
  Gauge quarantined_bytes;
  Gauge live_blocks;
  Gauge quarantined_blocks;
};

struct Heap::Impl {
  Impl(HeapOptions heap_options, std::unique_ptr<Region> heap_region)
      : options(std::move(heap_options)),
        region(std::move(heap_region)),
        blocks(region->begin(), region->end(), &metadata),
        owners(&metadata) {
    options.code_bytes = region->arena_bytes(Arena::kCode);
    options.read_only_bytes = region->arena_bytes(Arena::kReadOnly);
    options.data_bytes = region->arena_bytes(Arena::kData);
    arenas.reserve(kArenaCount);
    for (int i = 0; i < kArenaCount; ++i) {
      const auto id = static_cast<Arena>(i);
      arenas.emplace_back(id, region->arena_begin(id), region->arena_end(id), region->page_size(),
                          &metadata);
    }
  }

  ArenaState& arena(Arena id) { return arenas[static_cast<size_t>(id)]; }

  // The pages of `arena` that the footprint [begin, begin + footprint) touches, inclusive.
  // Shifts, not divisions by the run-time page size: this runs twice per block.
  std::pair<size_t, size_t> pages(const ArenaState& a, uintptr_t begin, size_t footprint) const {
    return {(begin - a.begin) >> page_shift, (begin + footprint - 1 - a.begin) >> page_shift};
  }

  // `record` is the OwnerTable's record of `owner` (null for kNoOwner), which the caller has
  // checked. The block goes to `out`, written in place rather than returned
  // (docs/performance-notes.md, "Allocations written into the caller's slot").
  Result<void> allocate_locked(Arena id, size_t size, size_t alignment, OwnerId owner,
                               OwnerRecord* record, Allocation& out);
  // allocate_locked's two steps: the checks and the free-list search, which change nothing but
  // the arena's free list (`begin` receives the block's start); then the bookkeeping of a
  // reserved block, which cannot fail.
  Result<void> reserve_locked(Arena id, size_t size, size_t alignment, uintptr_t& begin);
  void book_locked(uintptr_t begin, Arena id, size_t size, OwnerId owner, OwnerRecord* record,
                   Allocation& out);
  // Both allocate_groups: for a new owner named *name, or (name null) for `owner`. All blocks or
  // none; after a failure the heap is as it was (a new owner is not registered, *name intact).
  Result<OwnerId> allocate_group(std::string* name, OwnerId owner,
                                 std::span<const BlockRequest> requests,
                                 std::span<Allocation> blocks);
  Result<OwnerId> allocate_group_locked(std::string* name, OwnerId owner,
                                        std::span<const BlockRequest> requests,
                                        std::span<Allocation> out);
  Result<Block*> releasable_locked(const char* operation, uintptr_t address);
  void quarantine_locked(uintptr_t begin, Block& block, bool trap_now);
  // Takes a block off the books (traps, accounting, commit map, owner, block table, fault map:
  // its record stays as a former block unless `forget`) but leaves its footprint to the caller
  // to hand to the free list; free_locked does both, for a block that never ran.
  void unbook_locked(BlockTable::Handle entry, bool forget = false);
  void free_locked(uintptr_t begin, const Block& block);

  // release, retire and abandon: check the address, then move the block on (or count the
  // error), and log outside the lock.
  Result<void> end_block(Exit exit, uintptr_t address);
  // Automatic reclamation (reclaim.cc): whether the quarantine has grown enough for a pass,
  // whether a failed allocation may reclaim and retry, and the pass itself.
  bool wants_pass_locked() const;
  bool may_retry_locked(const Error& error) const;
  void reclaim_automatically(bool wait);
  ReclaimReport reclaim(ReferenceScanner& scanner);
  class ReclaimPass;  // one pass's steps
  std::optional<std::string> trim_locked();
  std::optional<std::string> abandon_locked(uintptr_t begin, const Block& block);
  HeapStats stats_locked() const;

  HeapOptions options;  // as in effect: arena sizes rounded up to the page size
  const std::unique_ptr<Region> region;
  const int page_shift = std::countr_zero(region->page_size());  // the page size is 2^page_shift
  const std::shared_ptr<spdlog::logger> log = logger();

  mutable std::mutex mutex;        // guards everything below
  NodePool metadata;               // the nodes of every tree and table below
  std::vector<ArenaState> arenas;  // indexed by Arena
  BlockTable blocks;
  Quarantine quarantine;
  OwnerTable owners;
  FaultMap faults;  // written under the lock, read without it (describe)
  Counters counters;
  uint64_t next_generation = 1;
  ReclaimPolicy policy;
  size_t quarantined_after_pass = 0;  // all arenas' quarantined bytes when the last pass ended

  // Held by an automatic pass and by set_reclaim_policy (taken before `mutex`, never while
  // holding it), so a scanner is not replaced under a pass that uses it, and automatic passes
  // do not pile up.
  std::mutex automatic_mutex;
};

}  // namespace codeheap
