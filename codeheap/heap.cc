// Heap: ties the region, the per-arena allocators, the block table, the quarantine and the owner
// table together under one mutex. The pieces are single-threaded; every entry point here takes
// the lock, does bookkeeping only (no system call except in reclaim's trim), and logs after
// unlocking, because a log line is a write(2) and other threads may be waiting. Reclaim passes,
// automatic ones included, are in reclaim.cc.
#include "codeheap/heap.h"

#include <algorithm>
#include <bit>
#include <cassert>
#include <mutex>
#include <utility>

#include <spdlog/fmt/fmt.h>

#include "codeheap/heap_impl.h"
#include "codeheap/stats_dump.h"

namespace codeheap {

namespace {

constexpr size_t kGranule = FreeList::kGranule;

size_t round_up(size_t value, size_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
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

Result<void> Heap::Impl::allocate_locked(Arena id, size_t size, size_t alignment, OwnerId owner,
                                         OwnerRecord* record, Allocation& out) {
  uintptr_t begin = 0;
  if (Result<void> reserved = reserve_locked(id, size, alignment, begin); !reserved) {
    return reserved;
  }
  book_locked(begin, id, size, owner, record, out);
  return {};
}

Result<void> Heap::Impl::reserve_locked(Arena id, size_t size, size_t alignment, uintptr_t& begin) {
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

  const std::optional<uintptr_t> found = a.free.allocate(round_up(size, kGranule), alignment);
  if (!found) {
    const size_t free = a.free.free_bytes();
    const size_t largest = a.free.largest_span();
    return make_error(
        ErrorCode::kOutOfMemory,
        fmt::format("heap '{}': out of memory in the {} arena: requested {} bytes (alignment {}), "
                    "free {} bytes ({}), largest free block {} bytes ({})",
                    options.name, to_string(id), size, alignment, free, human_bytes(free), largest,
                    human_bytes(largest)));
  }
  begin = *found;
  return {};
}

void Heap::Impl::book_locked(uintptr_t begin, Arena id, size_t size, OwnerId owner,
                             OwnerRecord* record, Allocation& out) {
  ArenaState& a = arena(id);
  const size_t footprint = round_up(size, kGranule);
  const uint64_t generation = next_generation++;
  BlockTable::Entry* const inserted = blocks.insert(begin);
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
          ? faults.add_block(begin, footprint, owner,
                             record != nullptr ? std::string_view(record->stats.name) : "")
          : nullptr;
  const auto [first, last] = pages(a, begin, footprint);
  a.commit.acquire(first, last, generation);
  a.used_bytes.increase(footprint);
  a.live_blocks.increase();
  owners.on_allocate(record, inserted);
  ++counters.allocations;
  out.address = begin;
  out.writable = region->writable(begin);
  out.size = size;
  out.arena = id;
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
    return make_error(
        ErrorCode::kForeignAddress,
        fmt::format("{}({:#x}): not an address of heap '{}' [{:#x}, {:#x})", operation, address,
                    options.name, region->begin(), region->end()));
  }
  if (const BlockTable::Entry* entry = blocks.containing(address)) {
    const auto& [begin, block] = *entry;
    return make_error(
        ErrorCode::kForeignAddress,
        fmt::format("{}({:#x}): interior address of the {} block [{:#x}, {:#x}) "
                    "(owner {}); pass the address allocate returned",
                    operation, address, block.state == BlockState::kLive ? "live" : "quarantined",
                    begin, begin + block.size, block.owner));
  }
  return make_error(
      ErrorCode::kForeignAddress,
      fmt::format("{}({:#x}): no block here; it is free memory of the {} arena", operation, address,
                  address < region->arena_begin(Arena::kReadOnly) ? "code"
                  : address < region->arena_begin(Arena::kData)   ? "read_only"
                                                                  : "data"));
}

void Heap::Impl::quarantine_locked(uintptr_t begin, Block& block, bool trap_now) {
  // Out of the owner's live list before the quarantine takes over the block's slot.
  OwnerTable::on_quarantine(block.owner_record, block);
  if (trap_now) {
    fill_with_traps(region->writable(begin), block.footprint);
    block.trapped = true;
  }
  block.state = BlockState::kQuarantined;
  FaultMap::set_state(block.fault_record,
                      trap_now ? FaultMap::Kind::kReleased : FaultMap::Kind::kQuarantined);
  quarantine.add(begin, block);
  ArenaState& a = arena(block.arena);
  a.used_bytes.decrease(block.footprint);
  a.live_blocks.decrease();
  a.quarantined_bytes.increase(block.footprint);
  a.quarantined_blocks.increase();
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
    a.used_bytes.decrease(block.footprint);
    a.live_blocks.decrease();
  } else {
    a.quarantined_bytes.decrease(block.footprint);
    a.quarantined_blocks.decrease();
    quarantine.remove(block);
  }
  const auto [first, last] = pages(a, begin, block.footprint);
  a.commit.release(first, last);
  owners.on_free(block.owner_record, block);
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
  std::unique_ptr<Heap> heap(
      new Heap(std::make_unique<Impl>(std::move(options), std::move(*region))));
  const Impl& h = *heap->impl_;
  h.log->info("heap '{}': region [{:#x}, {:#x}), code {}, read_only {}, data {}", h.options.name,
              h.region->begin(), h.region->end(), human_bytes(h.options.code_bytes),
              human_bytes(h.options.read_only_bytes), human_bytes(h.options.data_bytes));
  stats_dump::on_create(*heap);
  return heap;
}

// An allocation that finds no room under a ReclaimPolicy that allows it runs a pass and tries
// once more (reclaim.cc); only a failure it reports counts in allocation_failures.
Result<Allocation> Heap::allocate(Arena arena, size_t size, size_t alignment, OwnerId owner) {
  Impl& h = *impl_;
  Result<Allocation> result;
  for (int attempt = 0; attempt < 2; ++attempt) {
    bool retry = false;
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
      retry = !result && attempt == 0 && h.may_retry_locked(result.error());
      if (!result && !retry) ++h.counters.allocation_failures;
    }
    if (!retry) break;
    h.reclaim_automatically(/*wait=*/true);
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
  return impl_->allocate_group(&name, kNoOwner, requests, blocks);
}

Result<void> Heap::allocate_group(OwnerId owner, std::span<const BlockRequest> requests,
                                  std::span<Allocation> blocks) {
  Result<OwnerId> result = impl_->allocate_group(nullptr, owner, requests, blocks);
  if (!result) return tl::make_unexpected(std::move(result.error()));
  return {};
}

Result<OwnerId> Heap::Impl::allocate_group(std::string* name, OwnerId owner,
                                           std::span<const BlockRequest> requests,
                                           std::span<Allocation> blocks) {
  if (blocks.size() != requests.size()) {
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("allocate_group: {} requests but room for {} blocks",
                                  requests.size(), blocks.size()));
  }
  Result<OwnerId> result;
  for (int attempt = 0; attempt < 2; ++attempt) {
    bool retry = false;
    {
      std::lock_guard lock(mutex);
      result = allocate_group_locked(name, owner, requests, blocks);
      retry = !result && attempt == 0 && may_retry_locked(result.error());
      if (!result && !retry) ++counters.allocation_failures;
    }
    if (!retry) break;
    reclaim_automatically(/*wait=*/true);
  }
  if (!result) log->debug("{}", result.error().message);
  return result;
}

// Two phases, so that a failure has nothing to undo but free-list spans: every block is
// reserved first (checks and free-list search, reserve_locked), and only once all are is any of
// them booked (block table, pages, gauges, counters, owner; book_locked, which cannot fail).
Result<OwnerId> Heap::Impl::allocate_group_locked(std::string* name, OwnerId owner,
                                                  std::span<const BlockRequest> requests,
                                                  std::span<Allocation> out) {
  OwnerRecord* record = nullptr;
  if (name == nullptr) {
    bool accepted = false;
    record = owners.accepting(owner, accepted);
    if (record == nullptr) {
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("allocate_group: owner {} is unknown or retired", owner));
    }
  }
  // Prefetches each request's remembered span before the searches, and the first block's fault
  // record before the booking (docs/performance-notes.md, "allocate_group: prefetches before the
  // searches").
  for (const BlockRequest& r : requests) {
    if (static_cast<size_t>(r.arena) < arenas.size()) arena(r.arena).free.prefetch();
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    const BlockRequest& r = requests[i];
    Result<void> reserved = reserve_locked(r.arena, r.size, r.alignment, out[i].address);
    if (reserved) continue;
    for (size_t j = i; j-- > 0;) {
      arena(requests[j].arena).free.free(out[j].address, round_up(requests[j].size, kGranule));
    }
    return make_error(reserved.error().code,
                      fmt::format("allocate_group: request {} of {}: {}", i + 1, requests.size(),
                                  reserved.error().message));
  }
  faults.prefetch_next();
  if (record == nullptr) {
    record = &owners.add(std::move(*name));
    owner = record->stats.id;
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    const BlockRequest& r = requests[i];
    book_locked(out[i].address, r.arena, r.size, owner, record, out[i]);
  }
  return owner;
}

const char* to_string(Exit exit) {
  switch (exit) {
    case Exit::kRelease:
      return "release";
    case Exit::kRetire:
      return "retire";
    case Exit::kAbandon:
      return "abandon";
  }
  return "unknown";
}

Result<void> Heap::end_group(OwnerId owner, Exit exit, std::function<void()> on_gone) {
  Impl& h = *impl_;
  Result<void> result;
  std::optional<std::string> undo_failure;
  std::vector<std::function<void()>> ready;
  bool reclaim_now = false;
  {
    std::lock_guard lock(h.mutex);
    bool accepted = false;
    OwnerRecord* const record = h.owners.accepting(owner, accepted);
    if (!accepted || record == nullptr) {
      ++h.counters.release_errors;
      result = make_error(ErrorCode::kInvalidArgument,
                          fmt::format("end_group({}, {}): no such owner, or retired already", owner,
                                      to_string(exit)));
    } else {
      // The record lists the blocks: no lookups. They are prefetched first, each next block's
      // fault record one block ahead (docs/performance-notes.md, "Retire by owner: the group
      // prefetched").
      const std::span<BlockTable::Entry* const> group = record->live.take_all();
      for (BlockTable::Entry* entry : group) __builtin_prefetch(entry);
      if (exit == Exit::kAbandon) {
        // Newest first, so that each block's pages are returned once no later block holds them
        // (as a failed allocate_group undoes itself).
        for (size_t i = group.size(); i-- > 0;) {
          if (auto failure = h.abandon_locked(group[i]->first, group[i]->second))
            undo_failure = failure;
        }
      } else {
        for (size_t i = 0; i < group.size(); ++i) {
          if (i + 1 < group.size()) FaultMap::prefetch(group[i + 1]->second.fault_record);
          h.quarantine_locked(group[i]->first, group[i]->second,
                              /*trap_now=*/exit == Exit::kRelease);
        }
      }
      (exit == Exit::kRelease  ? h.counters.releases
       : exit == Exit::kRetire ? h.counters.retires
                               : h.counters.abandons) += group.size();
      h.owners.retire(*record, std::move(on_gone));
      ready = h.owners.take_ready();
      reclaim_now = exit != Exit::kAbandon && h.wants_pass_locked();
    }
  }
  for (auto& callback : ready) callback();
  if (undo_failure) h.log->warn("{}", *undo_failure);
  if (!result) {
    h.log->warn("heap '{}': {}", h.options.name, result.error().message);
  } else if (h.log->should_log(spdlog::level::trace)) {
    h.log->trace("end_group({}, {})", owner, to_string(exit));
  }
  if (reclaim_now) h.reclaim_automatically(/*wait=*/false);
  return result;
}

Result<void> Heap::Impl::end_block(Exit exit, uintptr_t address) {
  const char* operation = to_string(exit);
  Result<void> result;
  std::optional<std::string> undo_failure;
  std::vector<std::function<void()>> ready;
  bool reclaim_now = false;
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
      reclaim_now = wants_pass_locked();
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
  if (reclaim_now) reclaim_automatically(/*wait=*/false);
  return result;
}

Result<void> Heap::release(uintptr_t address) { return impl_->end_block(Exit::kRelease, address); }

Result<void> Heap::retire(uintptr_t address) { return impl_->end_block(Exit::kRetire, address); }

Result<void> Heap::abandon(uintptr_t address) { return impl_->end_block(Exit::kAbandon, address); }

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
        h.faults.add_function(entry->second.fault_record, symbol.address, symbol.size, symbol.name);
      } else if (result) {
        result = make_error(ErrorCode::kInvalidArgument,
                            fmt::format("add_symbols: '{}' [{:#x}, +{}) is not inside a live "
                                        "block of heap '{}'",
                                        symbol.name, symbol.address, symbol.size, h.options.name));
      }
    }
  }
  if (!result) h.log->debug("{}", result.error().message);
  return result;
}

uint8_t* Heap::writable_alias(uintptr_t address) const { return impl_->region->writable(address); }

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

const HeapOptions& Heap::options() const { return impl_->options; }

}  // namespace codeheap
