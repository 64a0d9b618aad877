// Heap: ties the region, the per-arena allocators, the block table, the quarantine and the owner
// table together under one mutex. The pieces are single-threaded; every entry point here takes
// the lock, does bookkeeping only (no system call except in reclaim's trim), and logs after
// unlocking, because a log line is a write(2) and other threads may be waiting.
#include "codeheap/heap.h"

#include <algorithm>
#include <bit>
#include <cassert>
#include <chrono>
#include <mutex>
#include <utility>

#include <spdlog/fmt/fmt.h>

#include "codeheap/block_table.h"
#include "codeheap/commit_map.h"
#include "codeheap/fault_map.h"
#include "codeheap/free_list.h"
#include "codeheap/log.h"
#include "codeheap/node_pool.h"
#include "codeheap/owners.h"
#include "codeheap/quarantine.h"
#include "codeheap/region.h"
#include "codeheap/stats_dump.h"

namespace codeheap {

namespace {

constexpr size_t kGranule = FreeList::kGranule;

size_t round_up(size_t value, size_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

uint64_t elapsed_ns(std::chrono::steady_clock::time_point since) {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now() - since)
                                   .count());
}

}  // namespace

const char* to_string(Arena arena) {
  switch (arena) {
    case Arena::kCode:
      return "code";
    case Arena::kReadOnly:
      return "read_only";
    case Arena::kData:
      return "data";
  }
  return "unknown";
}

// One arena's allocator and accounting. Bytes are footprints (granule-rounded sizes).
struct ArenaState {
  ArenaState(Arena id, uintptr_t begin, uintptr_t end, size_t page_size,
             std::pmr::memory_resource* metadata)
      : id(id), begin(begin), end(end), free(begin, end - begin, metadata),
        commit((end - begin) / page_size) {}

  Arena id;
  uintptr_t begin;
  uintptr_t end;
  FreeList free;
  CommitMap commit;
  size_t used_bytes = 0;
  size_t quarantined_bytes = 0;
  size_t live_blocks = 0;
  size_t quarantined_blocks = 0;
};

struct Heap::Impl {
  Impl(HeapOptions heap_options, std::unique_ptr<Region> heap_region)
      : options(std::move(heap_options)), region(std::move(heap_region)),
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
  // checked. The block goes to `out`, written in place (a copy of a returned Allocation stalls
  // on loads the store buffer cannot forward); `entry`, if given, receives its table entry.
  Result<void> allocate_locked(Arena id, size_t size, size_t alignment, OwnerId owner,
                               OwnerRecord* record, Allocation& out,
                               BlockTable::Entry** entry = nullptr);
  Result<Block*> releasable_locked(const char* operation, uintptr_t address);
  void quarantine_locked(uintptr_t begin, Block& block, bool trap_now);
  // Takes a block off the books (traps, accounting, commit map, owner, block table, fault map:
  // its record stays as a former block unless `forget`) but leaves its footprint to the caller
  // to hand to the free list; free_locked does both, for a block that never ran.
  void unbook_locked(BlockTable::Handle entry, bool forget = false);
  void free_locked(uintptr_t begin, const Block& block);

  // release, retire and abandon: check the address, then move the block on (or count the
  // error), and log outside the lock.
  enum class Exit { kRelease, kRetire, kAbandon };
  Result<void> end_block(Exit exit, uintptr_t address);
  Result<void> end_group(Exit exit, OwnerId owner, std::span<const uintptr_t> addresses,
                         std::function<void()> on_gone);
  Result<void> end_owned_group(Exit exit, OwnerId owner, std::function<void()> on_gone);
  std::optional<std::string> trim_locked();
  std::optional<std::string> abandon_locked(uintptr_t begin, const Block& block);
  HeapStats stats_locked() const;

  HeapOptions options;  // as in effect: arena sizes rounded up to the page size
  const std::unique_ptr<Region> region;
  const int page_shift = std::countr_zero(region->page_size());  // the page size is 2^page_shift
  const std::shared_ptr<spdlog::logger> log = logger();

  mutable std::mutex mutex;  // guards everything below
  NodePool metadata;  // the nodes of every tree and table below
  std::vector<ArenaState> arenas;  // indexed by Arena
  BlockTable blocks;
  Quarantine quarantine;
  OwnerTable owners;
  FaultMap faults;  // written under the lock, read without it (describe)
  Counters counters;
  uint64_t next_generation = 1;
};

Result<void> Heap::Impl::allocate_locked(Arena id, size_t size, size_t alignment,
                                         OwnerId owner, OwnerRecord* record, Allocation& out,
                                         BlockTable::Entry** entry) {
  if (region->inherited()) [[unlikely]] {
    return make_error(ErrorCode::kForkedChild,
                      fmt::format("heap '{}' belongs to the parent of this forked process: none "
                                  "of its memory is mapped here; create a new heap",
                                  options.name));
  }
  if (static_cast<size_t>(id) >= arenas.size()) {
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("allocate: unknown arena {}", static_cast<int>(id)));
  }
  ArenaState& a = arena(id);
  if (size == 0) {
    return make_error(ErrorCode::kInvalidArgument, "allocate: size must be at least 1 byte");
  }
  if (size > a.end - a.begin) {
    // Named like the out-of-memory message: requested, free and largest free bytes.
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("heap '{}': requested {} bytes, more than the whole {} arena "
                                  "({} bytes; free {} bytes, largest free block {} bytes)",
                                  options.name, size, to_string(id), a.end - a.begin,
                                  a.free.free_bytes(), a.free.largest_span()));
  }
  // A power of two; not std::has_single_bit, which without -mpopcnt is a libgcc call.
  const bool power_of_two = alignment != 0 && (alignment & (alignment - 1)) == 0;
  if (!power_of_two || alignment > region->page_size()) {
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("allocate: alignment {} is not a power of two from 1 to the "
                                  "page size ({})",
                                  alignment, region->page_size()));
  }

  const size_t footprint = round_up(size, kGranule);
  const std::optional<uintptr_t> begin = a.free.allocate(footprint, alignment);
  if (!begin) {
    const size_t free = a.free.free_bytes();
    const size_t largest = a.free.largest_span();
    return make_error(
        ErrorCode::kOutOfMemory,
        fmt::format("heap '{}': out of memory in the {} arena: requested {} bytes (alignment {}), "
                    "free {} bytes ({}), largest free block {} bytes ({})",
                    options.name, to_string(id), size, alignment, free, human_bytes(free), largest,
                    human_bytes(largest)));
  }

  const uint64_t generation = next_generation++;
  BlockTable::Entry* const inserted = blocks.insert(*begin);
  Block& block = inserted->second;
  block.size = size;
  block.footprint = footprint;
  block.generation = generation;
  block.owner = owner;
  block.owner_record = record;
  block.arena = id;
  // Code blocks only: what a crash report names is the code a pc is in (fault_map.h).
  block.fault_record =
      id == Arena::kCode
          ? faults.add_block(*begin, footprint, owner,
                             record != nullptr ? std::string_view(record->stats.name) : "")
          : nullptr;
  if (entry != nullptr) *entry = inserted;
  const auto [first, last] = pages(a, *begin, footprint);
  a.commit.acquire(first, last, generation);
  a.used_bytes += footprint;
  ++a.live_blocks;
  OwnerTable::on_allocate(record, footprint);
  ++counters.allocations;
  out.address = *begin;
  out.writable = region->writable(*begin);
  out.size = size;
  out.arena = id;
  return {};
}

Result<Block*> Heap::Impl::releasable_locked(const char* operation, uintptr_t address) {
  if (Block* block = blocks.at(address)) {
    if (block->state == BlockState::kLive) return block;
    return make_error(ErrorCode::kDoubleRelease,
                      fmt::format("{}({:#x}): the block ({} bytes, owner {}) was already "
                                  "released or retired and is in quarantine",
                                  operation, address, block->size, block->owner));
  }
  if (!region->contains(address)) {
    return make_error(ErrorCode::kForeignAddress,
                      fmt::format("{}({:#x}): not an address of heap '{}' [{:#x}, {:#x})",
                                  operation, address, options.name, region->begin(),
                                  region->end()));
  }
  if (const BlockTable::Entry* entry = blocks.containing(address)) {
    const auto& [begin, block] = *entry;
    return make_error(ErrorCode::kForeignAddress,
                      fmt::format("{}({:#x}): interior address of the {} block [{:#x}, {:#x}) "
                                  "(owner {}); pass the address allocate returned",
                                  operation, address,
                                  block.state == BlockState::kLive ? "live" : "quarantined", begin,
                                  begin + block.size, block.owner));
  }
  return make_error(ErrorCode::kForeignAddress,
                    fmt::format("{}({:#x}): no block here; it is free memory of the {} arena",
                                operation, address,
                                address < region->arena_begin(Arena::kReadOnly) ? "code"
                                : address < region->arena_begin(Arena::kData)   ? "read_only"
                                                                                : "data"));
}

void Heap::Impl::quarantine_locked(uintptr_t begin, Block& block, bool trap_now) {
  if (block.owner_record != nullptr) block.owner_record->forget(&block);
  if (trap_now) {
    fill_with_traps(region->writable(begin), block.footprint);
    block.trapped = true;
  }
  block.state = BlockState::kQuarantined;
  FaultMap::set_state(block.fault_record,
                      trap_now ? FaultMap::Kind::kReleased : FaultMap::Kind::kQuarantined);
  quarantine.add(begin, block);
  ArenaState& a = arena(block.arena);
  a.used_bytes -= block.footprint;
  --a.live_blocks;
  a.quarantined_bytes += block.footprint;
  ++a.quarantined_blocks;
  OwnerTable::on_quarantine(block.owner_record, block.footprint);
}

void Heap::Impl::unbook_locked(BlockTable::Handle entry, bool forget) {
  const auto& [begin, block] = *entry;
  // Free code that was used holds traps: a jump through a stale pointer into a reused or free
  // range must not find old code still in place. (Constants and data are never executed.)
  if (block.arena == Arena::kCode && !block.trapped) {
    fill_with_traps(region->writable(begin), block.footprint);
  }
  ArenaState& a = arena(block.arena);
  if (block.state == BlockState::kLive) {
    if (block.owner_record != nullptr) block.owner_record->forget(&block);
    a.used_bytes -= block.footprint;
    --a.live_blocks;
  } else {
    a.quarantined_bytes -= block.footprint;
    --a.quarantined_blocks;
    quarantine.remove(block);
  }
  const auto [first, last] = pages(a, begin, block.footprint);
  a.commit.release(first, last);
  owners.on_free(block.owner_record, block.footprint, block.state);
  faults.remove_block(block.fault_record, forget);
  blocks.erase(entry);  // last: `block` refers into the table
}

void Heap::Impl::free_locked(uintptr_t begin, const Block& block) {
  ArenaState& a = arena(block.arena);
  const size_t footprint = block.footprint;
  unbook_locked(blocks.find(begin), /*forget=*/true);
  a.free.free(begin, footprint);
}

// Frees a block that was never used and returns the pages its allocation committed, so that
// a failed or abandoned link leaves the heap, committed bytes included, exactly as it was.
// Under the lock for the same reason as trim_locked; only failure paths get here.
std::optional<std::string> Heap::Impl::abandon_locked(uintptr_t begin, const Block& block) {
  ArenaState& a = arena(block.arena);
  const auto [first, last] = pages(a, begin, block.footprint);
  const uint64_t generation = block.generation;
  free_locked(begin, block);
  std::optional<std::string> failure;
  const size_t page = region->page_size();
  a.commit.for_each_idle_committed_by(first, last, generation, [&](size_t low, size_t count) {
    if (failure) return;
    if (auto done = region->decommit(a.id, a.begin + low * page, count * page); !done) {
      failure =
          fmt::format("heap '{}': cannot return abandoned pages of the {} arena to the OS: {}",
                      options.name, to_string(a.id), done.error().message);
      return;
    }
    a.commit.decommitted(low, count);
    counters.decommitted_bytes += count * page;
  });
  return failure;
}

// Returns whole free pages to the OS until at most retain_free_bytes of them stay committed.
// Runs under the lock: returning pages outside it would let a concurrent allocate hand them out
// (and have its code zeroed by the hole punch) or make them briefly unallocatable (a spurious
// out-of-memory); reclaim is rare, and only pages beyond the budget pay a system call.
// Returns a warning to log if the OS refused.
std::optional<std::string> Heap::Impl::trim_locked() {
  const size_t page = region->page_size();
  size_t idle_bytes = 0;
  for (const ArenaState& a : arenas) idle_bytes += a.commit.idle_pages() * page;
  if (idle_bytes <= options.retain_free_bytes) return std::nullopt;
  size_t excess = (idle_bytes - options.retain_free_bytes + page - 1) / page;  // in pages

  // From the top of the region down (data, read_only, code; high spans first), so the low,
  // most recently reused part of each arena stays warm.
  std::optional<std::string> failure;
  for (auto a = arenas.rbegin(); a != arenas.rend() && excess > 0 && !failure; ++a) {
    a->free.for_each_descending([&](uintptr_t begin, size_t size) {
      // Only the whole pages inside a free span; a partial page shares memory with a block.
      const size_t first = (begin - a->begin + page - 1) / page;
      size_t end = (begin + size - a->begin) / page;
      while (excess > 0 && end > first) {
        const size_t top = a->commit.last_committed_below(first, end);
        if (top == CommitMap::kNone) break;
        size_t low = top;
        while (low > first && top - low + 1 < excess && a->commit.committed(low - 1)) --low;
        const size_t count = top - low + 1;
        if (auto done = region->decommit(a->id, a->begin + low * page, count * page); !done) {
          failure = fmt::format("heap '{}': cannot return free pages of the {} arena to the OS: {}",
                                options.name, to_string(a->id), done.error().message);
          return false;
        }
        a->commit.decommitted(low, count);
        counters.decommitted_bytes += count * page;
        excess -= count;
        end = low;
      }
      return excess > 0;
    });
  }
  return failure;
}

HeapStats Heap::Impl::stats_locked() const {
  HeapStats s;
  s.name = options.name;
  for (const ArenaState& a : arenas) {
    ArenaStats as;
    as.name = to_string(a.id);
    as.begin = a.begin;
    as.end = a.end;
    as.reserved_bytes = a.end - a.begin;
    as.committed_bytes = a.commit.committed_pages() * region->page_size();
    as.used_bytes = a.used_bytes;
    as.quarantined_bytes = a.quarantined_bytes;
    as.free_bytes = a.free.free_bytes();
    assert(as.used_bytes + as.quarantined_bytes + as.free_bytes == as.reserved_bytes);
    as.largest_free_block = a.free.largest_span();
    as.fragmentation =
        as.free_bytes == 0
            ? 0.0
            : 1.0 - static_cast<double>(as.largest_free_block) / static_cast<double>(as.free_bytes);
    as.live_blocks = a.live_blocks;
    as.quarantined_blocks = a.quarantined_blocks;
    as.free_blocks = a.free.span_count();
    // Enough buckets for a span as large as the arena.
    as.free_histogram.assign(std::bit_width(as.reserved_bytes), 0);
    a.free.for_each([&](uintptr_t, size_t size) { ++as.free_histogram[std::bit_width(size) - 1]; });

    s.reserved_bytes += as.reserved_bytes;
    s.committed_bytes += as.committed_bytes;
    s.used_bytes += as.used_bytes;
    s.quarantined_bytes += as.quarantined_bytes;
    s.free_bytes += as.free_bytes;
    s.largest_free_block = std::max(s.largest_free_block, as.largest_free_block);
    s.arenas.push_back(std::move(as));
  }

  s.owners = owners.snapshot();  // sorted by id
  blocks.for_each([&](uintptr_t begin, const Block& block) {
    if (block.owner == kNoOwner) return;
    auto it = std::lower_bound(s.owners.begin(), s.owners.end(), block.owner,
                               [](const OwnerStats& o, OwnerId id) { return o.id < id; });
    assert(it != s.owners.end() && it->id == block.owner);
    it->low = it->low == 0 ? begin : std::min(it->low, begin);
    it->high = std::max(it->high, begin + block.size);
  });
  s.counters = counters;
  return s;
}

Heap::Heap(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Heap::~Heap() {
  if (!impl_) return;
  stats_dump::on_destroy(*this);
  std::vector<std::function<void()>> pending;
  {
    std::lock_guard lock(impl_->mutex);
    pending = impl_->owners.take_all_pending();
  }
  for (auto& callback : pending) callback();
  impl_->log->debug("heap '{}' destroyed", impl_->options.name);
}

Result<std::unique_ptr<Heap>> Heap::create(HeapOptions options) {
  Result<std::unique_ptr<Region>> region = Region::create(options);
  if (!region) return tl::make_unexpected(std::move(region.error()));
  std::unique_ptr<Heap> heap(new Heap(std::make_unique<Impl>(std::move(options),
                                                             std::move(*region))));
  const Impl& h = *heap->impl_;
  h.log->info("heap '{}': region [{:#x}, {:#x}), code {}, read_only {}, data {}", h.options.name,
              h.region->begin(), h.region->end(), human_bytes(h.options.code_bytes),
              human_bytes(h.options.read_only_bytes), human_bytes(h.options.data_bytes));
  stats_dump::on_create(*heap);
  return heap;
}

Result<Allocation> Heap::allocate(Arena arena, size_t size, size_t alignment, OwnerId owner) {
  Impl& h = *impl_;
  Result<Allocation> result;
  {
    std::lock_guard lock(h.mutex);
    bool accepted = false;
    OwnerRecord* const record = h.owners.accepting(owner, accepted);
    if (accepted) {
      Allocation block;
      if (Result<void> done = h.allocate_locked(arena, size, alignment, owner, record, block)) {
        result = block;
      } else {
        result = tl::make_unexpected(std::move(done.error()));
      }
    } else {
      result = make_error(ErrorCode::kInvalidArgument,
                          fmt::format("allocate: owner {} is unknown or retired", owner));
    }
    if (!result) ++h.counters.allocation_failures;
  }
  if (result) {
    if (h.log->should_log(spdlog::level::trace)) {
      h.log->trace("allocate({}, {}, {}, owner {}) -> {:#x}", to_string(arena), size, alignment,
                   owner, result->address);
    }
  } else {
    h.log->debug("{}", result.error().message);
  }
  return result;
}

Result<OwnerId> Heap::allocate_group(std::string name, std::span<const BlockRequest> requests,
                                     std::span<Allocation> blocks) {
  Impl& h = *impl_;
  if (blocks.size() != requests.size()) {
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("allocate_group: {} requests but room for {} blocks",
                                  requests.size(), blocks.size()));
  }
  Result<OwnerId> result;
  std::optional<std::string> undo_failure;
  {
    std::lock_guard lock(h.mutex);
    const Counters before = h.counters;
    OwnerRecord& record = h.owners.add(std::move(name));
    const OwnerId owner = record.stats.id;
    result = owner;
    const bool tracked = requests.size() <= OwnerRecord::kGroupCapacity;
    record.group_overflow = !tracked;
    // Each block's search starts with a likely cache miss (the code copied in since the last
    // allocation evicted the free lists); asking for them all first lets the misses overlap.
    for (const BlockRequest& r : requests) {
      if (static_cast<size_t>(r.arena) < h.arenas.size()) h.arena(r.arena).free.prefetch();
    }
    h.faults.prefetch_next();
    for (size_t i = 0; i < requests.size(); ++i) {
      const BlockRequest& r = requests[i];
      BlockTable::Entry* entry = nullptr;
      Result<void> block =
          h.allocate_locked(r.arena, r.size, r.alignment, owner, &record, blocks[i], &entry);
      if (block) {
        if (tracked) record.group[record.group_size++] = entry;
        continue;
      }
      // Undo the blocks so far, the pages they committed and the owner; then the counters, so
      // the group leaves no trace but the failure.
      for (size_t j = 0; j < i; ++j) {
        const uintptr_t address = blocks[j].address;
        if (auto failure = h.abandon_locked(address, *h.blocks.at(address))) undo_failure = failure;
      }
      h.owners.remove(owner);
      h.counters = before;
      ++h.counters.allocation_failures;
      result = make_error(block.error().code,
                          fmt::format("allocate_group: request {} of {}: {}", i + 1,
                                      requests.size(), block.error().message));
      break;
    }
  }
  if (undo_failure) h.log->warn("{}", *undo_failure);
  if (!result) h.log->debug("{}", result.error().message);
  return result;
}

Result<void> Heap::Impl::end_group(Exit exit, OwnerId owner, std::span<const uintptr_t> addresses,
                                   std::function<void()> on_gone) {
  const char* operation = exit == Exit::kRelease ? "release_group" : "retire_group";
  Result<void> result;
  std::vector<std::string> refused;
  std::vector<std::function<void()>> ready;
  {
    std::lock_guard lock(mutex);
    for (const uintptr_t address : addresses) {
      Result<Block*> block = releasable_locked(operation, address);
      if (block && (*block)->owner != owner) {
        block = make_error(ErrorCode::kInvalidArgument,
                           fmt::format("{}({}): the block at {:#x} belongs to owner {}", operation,
                                       owner, address, (*block)->owner));
      }
      if (!block) {
        ++counters.release_errors;
        refused.push_back(block.error().message);
        if (result) result = tl::make_unexpected(std::move(block.error()));
        continue;
      }
      quarantine_locked(address, **block, /*trap_now=*/exit == Exit::kRelease);
      ++(exit == Exit::kRelease ? counters.releases : counters.retires);
    }
    if (!owners.retire(owner, std::move(on_gone)) && result) {
      result = make_error(ErrorCode::kInvalidArgument,
                          fmt::format("{}({}): no such owner", operation, owner));
      refused.push_back(result.error().message);
    }
    ready = owners.take_ready();
  }
  for (auto& callback : ready) callback();
  for (const std::string& message : refused) log->warn("heap '{}': {}", options.name, message);
  return result;
}

Result<void> Heap::retire_group(OwnerId owner, std::span<const uintptr_t> addresses,
                                std::function<void()> on_gone) {
  return impl_->end_group(Impl::Exit::kRetire, owner, addresses, std::move(on_gone));
}

Result<void> Heap::release_group(OwnerId owner, std::span<const uintptr_t> addresses,
                                 std::function<void()> on_gone) {
  return impl_->end_group(Impl::Exit::kRelease, owner, addresses, std::move(on_gone));
}

Result<void> Heap::Impl::end_owned_group(Exit exit, OwnerId owner,
                                         std::function<void()> on_gone) {
  const char* operation = exit == Exit::kRelease ? "release_group" : "retire_group";
  Result<void> result;
  std::vector<std::function<void()>> ready;
  {
    std::lock_guard lock(mutex);
    bool accepted = false;
    OwnerRecord* const record = owners.accepting(owner, accepted);
    if (!accepted || record == nullptr) {
      result = make_error(ErrorCode::kInvalidArgument,
                          fmt::format("{}({}): no such owner, or retired already", operation,
                                      owner));
    } else if (record->group_overflow) {
      result = make_error(ErrorCode::kInvalidArgument,
                          fmt::format("{}({}): the group has more than {} blocks; pass their "
                                      "addresses",
                                      operation, owner, OwnerRecord::kGroupCapacity));
    } else {
      // The record holds the entries: no lookups. They have usually left the cache since
      // the link, so ask for all of them before the first is needed. (The group is emptied
      // first, so quarantine_locked has nothing to drop from it.)
      const size_t count = std::exchange(record->group_size, 0);
      const auto& group = record->group;
      for (size_t i = 0; i < count; ++i) __builtin_prefetch(group[i]);
      for (size_t i = 0; i < count; ++i) {
        if (i + 1 < count) FaultMap::prefetch(group[i + 1]->second.fault_record);
        quarantine_locked(group[i]->first, group[i]->second, /*trap_now=*/exit == Exit::kRelease);
      }
      (exit == Exit::kRelease ? counters.releases : counters.retires) += count;
      owners.retire(*record, std::move(on_gone));
      ready = owners.take_ready();
    }
    if (!result) ++counters.release_errors;
  }
  for (auto& callback : ready) callback();
  if (!result) log->warn("heap '{}': {}", options.name, result.error().message);
  return result;
}

Result<void> Heap::retire_group(OwnerId owner, std::function<void()> on_gone) {
  return impl_->end_owned_group(Impl::Exit::kRetire, owner, std::move(on_gone));
}

Result<void> Heap::release_group(OwnerId owner, std::function<void()> on_gone) {
  return impl_->end_owned_group(Impl::Exit::kRelease, owner, std::move(on_gone));
}

Result<void> Heap::Impl::end_block(Exit exit, uintptr_t address) {
  const char* operation = exit == Exit::kRelease ? "release"
                          : exit == Exit::kRetire ? "retire"
                                                  : "abandon";
  Result<void> result;
  std::optional<std::string> undo_failure;
  std::vector<std::function<void()>> ready;
  {
    std::lock_guard lock(mutex);
    Result<Block*> block = releasable_locked(operation, address);
    if (!block) {
      ++counters.release_errors;
      result = tl::make_unexpected(std::move(block.error()));
    } else if (exit == Exit::kAbandon) {
      undo_failure = abandon_locked(address, **block);
      ++counters.abandons;
    } else {
      quarantine_locked(address, **block, /*trap_now=*/exit == Exit::kRelease);
      ++(exit == Exit::kRelease ? counters.releases : counters.retires);
    }
    ready = owners.take_ready();
  }
  for (auto& callback : ready) callback();
  if (undo_failure) log->warn("{}", *undo_failure);
  if (!result) {
    log->warn("heap '{}': {}", options.name, result.error().message);
  } else if (log->should_log(spdlog::level::trace)) {
    log->trace("{}({:#x})", operation, address);
  }
  return result;
}

Result<void> Heap::release(uintptr_t address) {
  return impl_->end_block(Impl::Exit::kRelease, address);
}

Result<void> Heap::retire(uintptr_t address) {
  return impl_->end_block(Impl::Exit::kRetire, address);
}

Result<void> Heap::abandon(uintptr_t address) {
  return impl_->end_block(Impl::Exit::kAbandon, address);
}

ReclaimReport Heap::reclaim(
    const std::function<bool(uintptr_t begin, uintptr_t end)>& is_referenced) {
  Impl& h = *impl_;
  const auto start = std::chrono::steady_clock::now();
  std::vector<QuarantineEntry> candidates;
  {
    std::lock_guard lock(h.mutex);
    candidates = h.quarantine.snapshot();
  }
  // In address order, as promised to the predicate (a scanner can merge with sorted stack hits).
  // Usually already so (see quarantine.h): then checking is all it costs.
  auto by_address = [](const QuarantineEntry& a, const QuarantineEntry& b) {
    return a.begin < b.begin;
  };
  if (!std::is_sorted(candidates.begin(), candidates.end(), by_address)) {
    std::sort(candidates.begin(), candidates.end(), by_address);
  }

  // Unlocked: the predicate may stop threads and scan stacks, and those threads may be inside
  // allocate or release right now.
  std::vector<uint8_t> referenced(candidates.size());
  for (size_t i = 0; i < candidates.size(); ++i) {
    referenced[i] = is_referenced(candidates[i].begin, candidates[i].end) ? 1 : 0;
  }

  ReclaimReport report;
  report.examined_blocks = candidates.size();
  for (uint8_t r : referenced) report.still_referenced_blocks += r;

  // An owner with an on_gone callback (a module whose unwind tables are registered) is
  // reclaimed all together, and its callback runs while its blocks are still quarantined and
  // intact: deregistration may read the tables, and they must not be reused while registered.
  // So other blocks are freed at once (locked), those owners' callbacks run (unlocked), then
  // their blocks are freed (locked again; only if there are any).
  std::vector<size_t> chosen;
  std::vector<std::function<void()>> before_free;
  std::optional<std::string> trim_failure;
  std::vector<std::function<void()>> ready;
  // Meanwhile a concurrent pass may have freed a candidate, and its range may even hold a newer
  // released block (a different generation) that this predicate never saw.
  // Given what the block table holds at the candidate's address, returns the candidate's
  // entry, or null if it is no longer this candidate.
  auto still_candidate = [&h](const QuarantineEntry& candidate,
                              BlockTable::Handle entry) -> BlockTable::Handle {
    if (entry == nullptr || entry->second.state != BlockState::kQuarantined ||
        entry->second.generation != candidate.generation) {
      return nullptr;
    }
    return entry;
  };
  // Footprints freed one after another that touch go to the free list as one range: blocks
  // allocated together (a closure's code, modules linked in a row) tend to die together, and
  // one merge is cheaper than one per block. Blocks are freed from the highest address down:
  // best fit carves the next blocks from the bottom of the range freed here, so the code
  // trap-filled last, still in the cache, is what the next links are copied into.
  struct Run {
    ArenaState* arena = nullptr;
    uintptr_t begin = 0;
    uintptr_t end = 0;
  } run;
  auto flush_run = [&run] {
    if (run.arena != nullptr) run.arena->free.free(run.begin, run.end - run.begin);
    run.arena = nullptr;
  };
  auto free_block = [&](const QuarantineEntry& candidate, BlockTable::Handle entry) {
    ArenaState& a = h.arena(entry->second.arena);
    const size_t footprint = entry->second.footprint;
    ++report.reclaimed_blocks;
    report.reclaimed_bytes += footprint;
    h.unbook_locked(entry);
    if (run.arena == &a && run.begin == candidate.begin + footprint) {
      run.begin = candidate.begin;
    } else {
      flush_run();
      run = {&a, candidate.begin, candidate.begin + footprint};
    }
  };
  auto finish_locked = [&] {
    flush_run();
    h.blocks.compact();
    trim_failure = h.trim_locked();
    ready = h.owners.take_ready();
    report.duration_ns = elapsed_ns(start);
    ++h.counters.reclaim_passes;
    h.counters.blocks_reclaimed += report.reclaimed_blocks;
    h.counters.bytes_reclaimed += report.reclaimed_bytes;
    h.counters.reclaim_ns_total += report.duration_ns;
    h.counters.reclaim_ns_last = report.duration_ns;
  };
  {
    std::lock_guard lock(h.mutex);
    std::vector<std::pair<OwnerRecord*, size_t>> grouped;  // (owner, candidate)
    std::vector<OwnerRecord*> held;                        // owners with a referenced block
    // The candidates' index slots, entries and owner records are scattered over memory that
    // has usually left the cache since the last pass (code was copied in meanwhile), and each
    // one's address comes from the one before. Asking for them a few candidates ahead lets
    // those misses overlap instead of following one another.
    constexpr size_t kAhead = 8;
    std::vector<BlockTable::Handle> found(candidates.size());
    for (size_t i = 0; i < candidates.size(); ++i) {
      if (i + kAhead < candidates.size()) h.blocks.prefetch(candidates[i + kAhead].begin);
      found[i] = h.blocks.find(candidates[i].begin);
      if (found[i] != nullptr) __builtin_prefetch(found[i]);
    }
    for (size_t i = candidates.size(); i-- > 0;) {  // downwards: see free_block
      if (i >= kAhead && found[i - kAhead] != nullptr) {
        __builtin_prefetch(found[i - kAhead]->second.owner_record);
        FaultMap::prefetch(found[i - kAhead]->second.fault_record);
      }
      const BlockTable::Handle entry = still_candidate(candidates[i], found[i]);
      if (entry == nullptr) continue;
      const Block* block = &entry->second;
      if (!OwnerTable::has_on_gone(block->owner_record)) {
        if (!referenced[i]) free_block(candidates[i], entry);
      } else if (referenced[i]) {
        held.push_back(block->owner_record);
      } else {
        grouped.emplace_back(block->owner_record, i);
      }
    }
    std::sort(grouped.begin(), grouped.end());
    std::sort(held.begin(), held.end());
    for (auto first = grouped.begin(); first != grouped.end();) {
      OwnerRecord* const owner = first->first;
      const auto last =
          std::find_if(first, grouped.end(), [owner](const auto& g) { return g.first != owner; });
      if (!std::binary_search(held.begin(), held.end(), owner)) {
        // Empty if some block of the owner is still live, or outside this pass.
        if (std::function<void()> callback = OwnerTable::take_on_gone_if_emptied_by(
                *owner, static_cast<size_t>(last - first))) {
          before_free.push_back(std::move(callback));
          for (auto g = first; g != last; ++g) chosen.push_back(g->second);
        }
      }
      first = last;
    }
    if (before_free.empty()) finish_locked();
  }
  if (!before_free.empty()) {
    for (auto& callback : before_free) callback();
    std::lock_guard lock(h.mutex);
    std::sort(chosen.begin(), chosen.end(), std::greater<>());  // downwards: see free_block
    for (size_t i : chosen) {
      if (const BlockTable::Handle entry =
              still_candidate(candidates[i], h.blocks.find(candidates[i].begin))) {
        free_block(candidates[i], entry);
      }
    }
    finish_locked();
  }
  for (auto& callback : ready) callback();
  if (trim_failure) h.log->warn("{}", *trim_failure);
  h.log->debug("heap '{}': reclaim examined {} blocks, reclaimed {} ({} bytes), {} still "
               "referenced, {} ns",
               h.options.name, report.examined_blocks, report.reclaimed_blocks,
               report.reclaimed_bytes, report.still_referenced_blocks, report.duration_ns);
  return report;
}

std::vector<BlockInfo> Heap::quarantined() const {
  const Impl& h = *impl_;
  std::lock_guard lock(h.mutex);
  std::vector<BlockInfo> result;
  result.reserve(h.quarantine.size());
  for (const QuarantineEntry& entry : h.quarantine.snapshot()) {
    result.push_back(to_block_info(entry.begin, *h.blocks.at(entry.begin)));
  }
  std::sort(result.begin(), result.end(),
            [](const BlockInfo& a, const BlockInfo& b) { return a.address < b.address; });
  return result;
}

std::optional<BlockInfo> Heap::find(uintptr_t address) const {
  const Impl& h = *impl_;
  std::lock_guard lock(h.mutex);
  const BlockTable::Entry* entry = h.blocks.containing(address);
  if (entry == nullptr) return std::nullopt;
  return to_block_info(entry->first, entry->second);
}

bool Heap::contains(uintptr_t address) const { return impl_->region->contains(address); }

bool Heap::describe(uintptr_t address, AddressInfo& info) const {
  const Impl& h = *impl_;
  info = AddressInfo{};
  // A forked child has none of an inherited heap's memory: a new heap may sit in its range.
  if (!h.region->contains(address) || h.region->inherited()) return false;
  info.arena = address < h.region->arena_begin(Arena::kReadOnly) ? Arena::kCode
               : address < h.region->arena_begin(Arena::kData)   ? Arena::kReadOnly
                                                                  : Arena::kData;
  if (info.arena != Arena::kCode) {
    info.state = AddressInfo::State::kUntracked;
    return true;
  }
  info.state = AddressInfo::State::kFree;
  h.faults.describe(address, info);
  return true;
}

Result<void> Heap::add_symbols(std::span<const SymbolRange> symbols) {
  Impl& h = *impl_;
  Result<void> result;
  {
    std::lock_guard lock(h.mutex);
    for (const SymbolRange& symbol : symbols) {
      const BlockTable::Entry* entry = h.blocks.containing(symbol.address);
      if (entry != nullptr && entry->second.state == BlockState::kLive &&
          symbol.address + symbol.size <= entry->first + entry->second.footprint) {
        h.faults.add_function(entry->second.fault_record, symbol.address, symbol.size,
                              symbol.name);
      } else if (result) {
        result = make_error(ErrorCode::kInvalidArgument,
                            fmt::format("add_symbols: '{}' [{:#x}, +{}) is not inside a live "
                                        "block of heap '{}'",
                                        symbol.name, symbol.address, symbol.size,
                                        h.options.name));
      }
    }
  }
  if (!result) h.log->debug("{}", result.error().message);
  return result;
}

uint8_t* Heap::writable_alias(uintptr_t address) const {
  return impl_->region->writable(address);
}

OwnerId Heap::register_owner(std::string name) {
  Impl& h = *impl_;
  std::lock_guard lock(h.mutex);
  return h.owners.add(std::move(name)).stats.id;
}

void Heap::retire_owner(OwnerId owner, std::function<void()> on_gone) {
  Impl& h = *impl_;
  bool known = false;
  std::vector<std::function<void()>> ready;
  {
    std::lock_guard lock(h.mutex);
    known = h.owners.retire(owner, std::move(on_gone));
    ready = h.owners.take_ready();
  }
  for (auto& callback : ready) callback();
  if (!known) h.log->warn("heap '{}': retire_owner({}): no such owner", h.options.name, owner);
}

HeapStats Heap::stats() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->stats_locked();
}

std::string Heap::dump_text() const { return format_text(stats()); }

std::string Heap::dump_json() const { return format_json(stats()); }

HeapMap Heap::map() const {
  const Impl& h = *impl_;
  HeapMap map;
  map.arenas.resize(h.arenas.size());
  std::lock_guard lock(h.mutex);
  map.stats = h.stats_locked();
  h.blocks.for_each([&](uintptr_t begin, const Block& block) {
    map.arenas[static_cast<size_t>(block.arena)].blocks.push_back(
        {begin, block.footprint, block.owner, block.state == BlockState::kQuarantined});
  });
  const size_t page = h.region->page_size();
  for (size_t i = 0; i < h.arenas.size(); ++i) {
    const ArenaState& a = h.arenas[i];
    std::vector<HeapMap::Range>& runs = map.arenas[i].committed;
    for (size_t p = 0, pages = (a.end - a.begin) / page; p < pages; ++p) {
      if (!a.commit.committed(p)) continue;
      const uintptr_t begin = a.begin + p * page;
      if (!runs.empty() && runs.back().end == begin) {
        runs.back().end += page;
      } else {
        runs.push_back({begin, begin + page});
      }
    }
  }
  return map;
}

std::string Heap::dump_svg() const { return format_svg(map()); }

const HeapOptions& Heap::options() const { return impl_->options; }

}  // namespace codeheap
