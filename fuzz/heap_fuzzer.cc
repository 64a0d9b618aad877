// Sequences of codeheap::Heap operations against a reference model. After every step: blocks
// lie in their arena, aligned, never overlapping; live and retired blocks keep their bytes and
// released ones hold traps; the statistics and owners are what the model says; every on_gone
// callback runs once, when its owner's last block goes; and a failed call leaves the
// statistics exactly as they were but for its error counter.
#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <vector>

#include "codeheap/heap.h"
#include "fuzz/check.h"
#include "fuzz/input.h"

namespace {

using codeheap::Arena;
using codeheap::ErrorCode;
using codeheap::Exit;
using codeheap::HeapStats;
using codeheap::OwnerId;

constexpr uint8_t kTrap = 0xCC;
constexpr size_t kPage = 4096;
constexpr int kArenas = codeheap::kArenaCount;

size_t footprint(size_t size) { return (size + 15) & ~size_t{15}; }

struct Block {
  size_t size = 0;
  Arena arena = Arena::kCode;
  OwnerId owner = codeheap::kNoOwner;
  bool live = true;
  bool released = false;  // quarantined and trap-filled
  uint8_t fill = 0;
};

struct Owner {
  bool retired = false;
  std::vector<uintptr_t> group;                           // its live blocks
  std::shared_ptr<int> given = std::make_shared<int>(0);  // on_gone callbacks handed over
  std::shared_ptr<int> ran = std::make_shared<int>(0);    // ... and run
};

class Session {
 public:
  Session(codeheap::Heap& heap, fuzz::Input& in) : heap_(heap), in_(in) {
    const HeapStats stats = heap.stats();
    for (int a = 0; a < kArenas; ++a) arenas_[a] = stats.arenas[a];
  }

  void step() {
    switch (in_.below(14)) {
      case 0:
      case 1:
      case 2:
        allocate();
        break;
      case 3:
        allocate_group();
        break;
      case 4:
        end_block(in_.below(3));
        break;
      case 5:
      case 6:
        end_group();
        break;
      case 7:
        reclaim();
        break;
      case 8:
        write();
        break;
      case 9:
        owners_[heap_.register_owner("owner")] = Owner{};
        break;
      case 10:
        retire_owner();
        break;
      case 11:
        query(pick_address());
        break;
      case 12:
        dumps();
        break;
      default:
        end_block(in_.below(2));
        break;
    }
    check(++steps_ % 8 == 0);
  }

  // Contents every few steps (their check costs the most), statistics after every one.
  void check(bool contents) {
    if (contents) check_contents();
    check_stats();
  }

 private:
  // --- Choices ---

  Arena arena_choice() {
    const size_t a = in_.below(16);
    return static_cast<Arena>(a < 15 ? a % kArenas : 3 + in_.below(253));  // rarely invalid
  }

  size_t size_choice(Arena arena) {
    const size_t limit = valid(arena) ? arenas_[int(arena)].reserved_bytes : size_t{1} << 20;
    switch (in_.below(12)) {
      case 0:
        return 0;
      case 1:
        return limit;
      case 2:
        return limit + 1 + in_.below(64);
      case 3:
        return std::numeric_limits<size_t>::max() - in_.below(32);
      case 4:
      case 5:
        return 1 + in_.below(4096);
      case 6:
        return 1 + in_.below(limit);
      default:
        return 1 + in_.below(256);
    }
  }

  size_t alignment_choice() {
    switch (in_.below(10)) {
      case 0:
        return in_.below(3) * 12;  // 0, 12, 24: not powers of two
      case 1:
        return size_t{1} << (13 + in_.below(3));  // beyond the page size
      default:
        return size_t{1} << in_.below(13);
    }
  }

  OwnerId owner_choice() {
    if (in_.below(3) == 0 || owners_.empty()) {
      return in_.below(4) == 0 ? next_unknown_owner() : codeheap::kNoOwner;
    }
    auto it = owners_.begin();
    std::advance(it, in_.below(owners_.size()));
    return it->first;
  }

  OwnerId next_unknown_owner() { return 1'000'000 + in_.below(1000); }

  // A block's address, an interior one, a freed one, or somewhere else entirely.
  uintptr_t pick_address() {
    switch (in_.below(8)) {
      case 0: {
        if (freed_.empty()) break;
        return freed_[in_.below(freed_.size())];
      }
      case 1:
        return in_.word(8);
      case 2: {
        const codeheap::ArenaStats& a = arenas_[in_.below(kArenas)];
        return a.begin + in_.below(a.end - a.begin + 1);
      }
      default:
        break;
    }
    if (blocks_.empty()) return arenas_[0].begin + in_.below(64);
    auto it = blocks_.begin();
    std::advance(it, in_.below(blocks_.size()));
    return it->first + (in_.below(8) == 0 ? 1 + in_.below(it->second.size + 16) : 0);
  }

  static bool valid(Arena arena) { return static_cast<int>(arena) < kArenas; }

  // --- Operations ---

  void allocate() {
    const Arena arena = arena_choice();
    const size_t size = size_choice(arena), alignment = alignment_choice();
    const OwnerId owner = owner_choice();
    const HeapStats before = heap_.stats();
    auto result = heap_.allocate(arena, size, alignment, owner);
    const bool invalid = invalid_request(arena, size, alignment) || !accepting(owner);
    if (!result) {
      FUZZ_CHECK(!invalid || result.error().code == ErrorCode::kInvalidArgument, "{}",
                 result.error().message);
      if (!invalid) expect_out_of_memory(before, arena, size, alignment, result.error());
      ++counters_.allocation_failures;
      expect_unchanged(before);
      return;
    }
    FUZZ_CHECK(!invalid, "allocate({}, {}, {}, owner {}) succeeded", int(arena), size, alignment,
               owner);
    add_block(*result, size, alignment, owner);
    ++counters_.allocations;
  }

  void allocate_group() {
    const size_t count = in_.below(10);
    std::vector<codeheap::BlockRequest> requests(count);
    bool invalid = false;
    for (auto& r : requests) {
      r.arena = arena_choice();
      r.size = in_.below(4) == 0 ? size_choice(r.arena) : 1 + in_.below(512);
      r.alignment = in_.below(4) == 0 ? alignment_choice() : 16;
      invalid = invalid || invalid_request(r.arena, r.size, r.alignment);
    }
    const bool mismatched = in_.below(16) == 0;
    std::vector<codeheap::Allocation> blocks(count + (mismatched ? 1 : 0));
    // For a new owner, or for one registered before (allocate_group(owner, ...)).
    const bool joining = in_.below(3) == 0;
    const OwnerId joined = joining ? owner_choice() : codeheap::kNoOwner;
    const bool refused_owner = joining && (joined == codeheap::kNoOwner || !accepting(joined));
    const HeapStats before = heap_.stats();
    codeheap::Result<OwnerId> owner = joined;
    if (!joining) {
      owner = heap_.allocate_group("group", requests, blocks);
    } else if (auto done = heap_.allocate_group(joined, requests, blocks); !done) {
      owner = tl::make_unexpected(std::move(done.error()));
    }
    if (!owner) {
      // The first request that fails decides the code: a bad one, or one that does not fit.
      const ErrorCode code = owner.error().code;
      FUZZ_CHECK(code == ErrorCode::kInvalidArgument ||
                     (!mismatched && !refused_owner && code == ErrorCode::kOutOfMemory),
                 "{}", owner.error().message);
      FUZZ_CHECK(invalid || mismatched || refused_owner || code == ErrorCode::kOutOfMemory, "{}",
                 owner.error().message);
      if (!mismatched) ++counters_.allocation_failures;
      expect_unchanged(before);
      return;
    }
    FUZZ_CHECK(!invalid && !mismatched && !refused_owner,
               "allocate_group succeeded with a bad request or owner");
    if (!joining) {
      FUZZ_CHECK(!owners_.contains(*owner), "owner {} given twice", *owner);
      owners_[*owner];
    }
    for (size_t i = 0; i < count; ++i) {
      add_block(blocks[i], requests[i].size, requests[i].alignment, *owner);
    }
    counters_.allocations += count;
  }

  // 0 release, 1 retire, 2 abandon.
  void end_block(size_t how) {
    const uintptr_t address = pick_address();
    const HeapStats before = heap_.stats();
    auto result = how == 0   ? heap_.release(address)
                  : how == 1 ? heap_.retire(address)
                             : heap_.abandon(address);
    const auto it = blocks_.find(address);
    if (it == blocks_.end() || !it->second.live) {
      FUZZ_CHECK(!result, "ending {:#x} ({}) succeeded", address,
                 it == blocks_.end() ? "no block" : "quarantined");
      FUZZ_CHECK(result.error().code ==
                     (it == blocks_.end() ? ErrorCode::kForeignAddress : ErrorCode::kDoubleRelease),
                 "{}", result.error().message);
      ++counters_.release_errors;
      expect_unchanged(before);
      return;
    }
    FUZZ_CHECK(result, "ending live block {:#x}: {}", address, result.error().message);
    ended(address, how);
  }

  // The model's side of a live block that left by `how` (0 release, 1 retire, 2 abandon).
  void ended(uintptr_t address, size_t how) {
    if (how == 2) {
      ++counters_.abandons;
      free_block(address);
    } else {
      ++(how == 0 ? counters_.releases : counters_.retires);
      quarantine(address, how == 0);
    }
  }

  // Every live block of the owner leaves by one exit: 0 release, 1 retire, 2 abandon.
  void end_group() {
    const OwnerId owner = owner_choice();
    const size_t how = in_.below(3);
    const Exit exit = how == 0 ? Exit::kRelease : how == 1 ? Exit::kRetire : Exit::kAbandon;
    std::function<void()> on_gone = callback(owner);
    const bool gave = bool(on_gone);
    const HeapStats before = heap_.stats();
    auto result = heap_.end_group(owner, exit, std::move(on_gone));
    const auto it = owners_.find(owner);
    if (it == owners_.end() || it->second.retired) {
      FUZZ_CHECK(!result && result.error().code == ErrorCode::kInvalidArgument,
                 "end_group({}, {}): {}", owner, how,
                 result ? "succeeded" : result.error().message);
      ++counters_.release_errors;
      if (gave && it != owners_.end()) --*it->second.given;  // dropped, as documented
      expect_unchanged(before);
      return;
    }
    FUZZ_CHECK(result, "{}", result.error().message);
    for (uintptr_t address : std::vector<uintptr_t>(it->second.group)) ended(address, how);
    retire(owner);
  }

  void retire_owner() {
    const OwnerId owner = owner_choice();
    std::function<void()> on_gone = callback(owner);
    const HeapStats before = heap_.stats();
    heap_.retire_owner(owner, std::move(on_gone));
    if (!owners_.contains(owner)) {
      expect_unchanged(before);
      return;
    }
    retire(owner);
  }

  void reclaim() {
    std::vector<uintptr_t> quarantined;
    for (const auto& [address, block] : blocks_) {
      if (!block.live) quarantined.push_back(address);
    }
    std::vector<std::pair<uintptr_t, bool>> asked;
    auto report = heap_.reclaim([&](uintptr_t begin, uintptr_t end) {
      const auto it = blocks_.find(begin);
      FUZZ_CHECK(it != blocks_.end() && !it->second.live, "reclaim asked about {:#x}", begin);
      FUZZ_CHECK(end == begin + footprint(it->second.size), "reclaim range end {:#x}", end);
      FUZZ_CHECK(asked.empty() || asked.back().first < begin, "not in address order");
      asked.emplace_back(begin, in_.below(4) == 0);
      return asked.back().second;
    });
    FUZZ_CHECK(asked.size() == quarantined.size(), "asked about {} of {} quarantined blocks",
               asked.size(), quarantined.size());
    // Blocks of an owner with a pending on_gone go together, once none is referenced or live.
    std::map<OwnerId, bool> held;
    for (const auto& [address, referenced] : asked) {
      const Block& block = blocks_.at(address);
      if (!pending_on_gone(block.owner)) continue;
      held[block.owner] = held[block.owner] || referenced || live_blocks_of(block.owner) > 0;
    }
    size_t freed = 0, freed_bytes = 0, referenced_count = 0;
    for (const auto& [address, referenced] : asked) {
      referenced_count += referenced;
      const Block& block = blocks_.at(address);
      const bool grouped = pending_on_gone(block.owner);
      if (grouped ? held.at(block.owner) : referenced) continue;
      ++freed;
      freed_bytes += footprint(block.size);
      free_block(address);
    }
    FUZZ_CHECK(report.examined_blocks == asked.size() &&
                   report.still_referenced_blocks == referenced_count &&
                   report.reclaimed_blocks == freed && report.reclaimed_bytes == freed_bytes,
               "reclaim report {}/{}/{}/{} bytes, model {}/{}/{}/{} bytes", report.examined_blocks,
               report.still_referenced_blocks, report.reclaimed_blocks, report.reclaimed_bytes,
               asked.size(), referenced_count, freed, freed_bytes);
    ++counters_.reclaim_passes.count;
    counters_.reclaimed.count += freed;
    counters_.reclaimed.total += freed_bytes;
  }

  void write() {
    if (blocks_.empty()) return;
    auto it = blocks_.begin();
    std::advance(it, in_.below(blocks_.size()));
    Block& block = it->second;
    if (!block.live) return;
    block.fill = in_.byte();
    std::memset(heap_.writable_alias(it->first), block.fill, block.size);
  }

  void query(uintptr_t address) {
    const auto found = heap_.find(address);
    auto it = blocks_.upper_bound(address);
    const Block* block = nullptr;
    if (it != blocks_.begin()) {
      --it;
      if (address < it->first + footprint(it->second.size)) block = &it->second;
    }
    FUZZ_CHECK(found.has_value() == (block != nullptr), "find({:#x})", address);
    if (block != nullptr) {
      FUZZ_CHECK(found->address == it->first && found->arena == block->arena &&
                     found->owner == block->owner &&
                     (found->state == codeheap::BlockState::kLive) == block->live,
                 "find({:#x}) gave block {:#x}, model {:#x}", address, found->address, it->first);
    }
    const bool inside = address >= arenas_[0].begin && address < arenas_[kArenas - 1].end;
    FUZZ_CHECK(heap_.contains(address) == inside, "contains({:#x})", address);
    codeheap::AddressInfo info;
    FUZZ_CHECK(heap_.describe(address, info) == inside, "describe({:#x})", address);
    if (block != nullptr && block->arena == Arena::kCode) {
      using State = codeheap::AddressInfo::State;
      const State expected = block->live       ? State::kLive
                             : block->released ? State::kReleased
                                               : State::kQuarantined;
      FUZZ_CHECK(!info.consistent || (info.state == expected && info.block == it->first),
                 "describe({:#x}): state {}, block {:#x}", address, int(info.state), info.block);
    }
  }

  void dumps() {
    const HeapStats stats = heap_.stats();
    FUZZ_CHECK(
        !heap_.dump_text().empty() && !heap_.dump_json().empty() && !heap_.dump_svg().empty(),
        "an empty dump");
    std::vector<codeheap::BlockInfo> quarantined = heap_.quarantined();
    size_t i = 0;
    for (const auto& [address, block] : blocks_) {
      if (block.live) continue;
      FUZZ_CHECK(i < quarantined.size() && quarantined[i].address == address &&
                     quarantined[i].owner == block.owner,
                 "quarantined()[{}] is not {:#x}", i, address);
      ++i;
    }
    FUZZ_CHECK(i == quarantined.size(), "quarantined() lists {} blocks, model {}",
               quarantined.size(), i);
    FUZZ_CHECK(heap_.stats() == stats, "a dump changed the statistics");
  }

  // --- Model ---

  bool invalid_request(Arena arena, size_t size, size_t alignment) const {
    return !valid(arena) || size == 0 || size > arenas_[int(arena)].reserved_bytes ||
           !std::has_single_bit(alignment) || alignment > kPage;
  }

  bool accepting(OwnerId owner) const {
    if (owner == codeheap::kNoOwner) return true;
    const auto it = owners_.find(owner);
    return it != owners_.end() && !it->second.retired;
  }

  // Out of memory only if no free range could hold the block at any alignment offset.
  void expect_out_of_memory(const HeapStats& before, Arena arena, size_t size, size_t alignment,
                            const codeheap::Error& error) const {
    FUZZ_CHECK(error.code == ErrorCode::kOutOfMemory, "{}", error.message);
    const size_t need = footprint(size) + (alignment > 16 ? alignment - 16 : 0);
    FUZZ_CHECK(before.arenas[int(arena)].largest_free_block < need,
               "out of memory for {} bytes (alignment {}) with a free block of {}: {}", size,
               alignment, before.arenas[int(arena)].largest_free_block, error.message);
  }

  void add_block(const codeheap::Allocation& a, size_t size, size_t alignment, OwnerId owner) {
    const codeheap::ArenaStats& arena = arenas_[int(a.arena)];
    FUZZ_CHECK(a.size == size && a.address >= arena.begin && a.address + size <= arena.end,
               "block {:#x}+{} outside arena [{:#x}, {:#x})", a.address, size, arena.begin,
               arena.end);
    FUZZ_CHECK(a.address % std::max<size_t>(alignment, 16) == 0, "block {:#x} not {}-aligned",
               a.address, alignment);
    FUZZ_CHECK(a.writable != nullptr && a.writable == heap_.writable_alias(a.address),
               "block {:#x}: bad alias", a.address);
    const auto next = blocks_.lower_bound(a.address);
    FUZZ_CHECK(next == blocks_.end() || a.address + footprint(size) <= next->first,
               "block {:#x}+{} overlaps {:#x}", a.address, size, next->first);
    if (next != blocks_.begin()) {
      const auto previous = std::prev(next);
      FUZZ_CHECK(previous->first + footprint(previous->second.size) <= a.address,
                 "block {:#x} overlaps {:#x}+{}", a.address, previous->first,
                 previous->second.size);
    }
    Block block{size, a.arena, owner, true, false, in_.byte()};
    std::memset(a.writable, block.fill, size);
    blocks_.emplace(a.address, block);
    if (const auto it = owners_.find(owner); it != owners_.end()) {
      it->second.group.push_back(a.address);
    }
  }

  void quarantine(uintptr_t address, bool release) {
    Block& block = blocks_.at(address);
    block.live = false;
    block.released = release;
    forget_group_block(block.owner, address);
  }

  void free_block(uintptr_t address) {
    const OwnerId owner = blocks_.at(address).owner;
    forget_group_block(owner, address);
    blocks_.erase(address);
    freed_.push_back(address);
    settle(owner);
  }

  void forget_group_block(OwnerId owner, uintptr_t address) {
    if (const auto it = owners_.find(owner); it != owners_.end()) {
      std::erase(it->second.group, address);
    }
  }

  void retire(OwnerId owner) {
    Owner& record = owners_.at(owner);
    record.retired = true;
    settle(owner);
  }

  // A retired owner without blocks is gone: every on_gone given has run, once.
  void settle(OwnerId owner) {
    const auto it = owners_.find(owner);
    if (it == owners_.end() || !it->second.retired || blocks_of(owner) > 0) return;
    FUZZ_CHECK(*it->second.ran == *it->second.given, "owner {}: {} of {} on_gone callbacks ran",
               owner, *it->second.ran, *it->second.given);
    owners_.erase(it);
  }

  // Counted as given now; the callback counts itself when it runs.
  std::function<void()> callback(OwnerId owner) {
    if (!in_.coin()) return {};
    const auto it = owners_.find(owner);
    if (it == owners_.end()) return [] {};
    ++*it->second.given;
    return [ran = it->second.ran] { ++*ran; };
  }

  bool pending_on_gone(OwnerId owner) const {
    const auto it = owners_.find(owner);
    return it != owners_.end() && *it->second.given > *it->second.ran;
  }

  size_t blocks_of(OwnerId owner) const {
    return std::count_if(blocks_.begin(), blocks_.end(),
                         [owner](const auto& b) { return b.second.owner == owner; });
  }

  size_t live_blocks_of(OwnerId owner) const {
    return std::count_if(blocks_.begin(), blocks_.end(), [owner](const auto& b) {
      return b.second.owner == owner && b.second.live;
    });
  }

  // --- Checks ---

  void expect_unchanged(const HeapStats& before) {
    HeapStats expected = before;
    expected.counters.allocation_failures = counters_.allocation_failures;
    expected.counters.release_errors = counters_.release_errors;
    const HeapStats after = heap_.stats();
    FUZZ_CHECK(after == expected, "a failed call changed the heap:\n{}\nbefore:\n{}",
               codeheap::format_text(after), codeheap::format_text(before));
  }

  void check_contents() const {
    for (const auto& [address, block] : blocks_) {
      const uint8_t* alias = heap_.writable_alias(address);
      const uint8_t expected = block.released ? kTrap : block.fill;
      const size_t bytes = block.released ? footprint(block.size) : block.size;
      const auto wrong =
          std::find_if(alias, alias + bytes, [=](uint8_t b) { return b != expected; });
      FUZZ_CHECK(wrong == alias + bytes, "block {:#x} byte {} is {:#x}, not {:#x}", address,
                 wrong - alias, *wrong, expected);
      if (block.arena != Arena::kData) {
        FUZZ_CHECK(std::memcmp(alias, reinterpret_cast<const void*>(address), bytes) == 0,
                   "block {:#x}: the alias and the view differ", address);
      }
    }
  }

  void check_stats() const {
    const HeapStats stats = heap_.stats();
    codeheap::Counters counters = counters_;
    counters.reclaim_passes.total = stats.counters.reclaim_passes.total;
    counters.reclaim_ns_last = stats.counters.reclaim_ns_last;
    counters.decommitted_bytes = stats.counters.decommitted_bytes;
    FUZZ_CHECK(stats.counters == counters, "counters differ from the model:\n{}",
               codeheap::format_text(stats));
    size_t used[kArenas] = {}, quarantined[kArenas] = {}, live[kArenas] = {}, held[kArenas] = {};
    for (const auto& [address, block] : blocks_) {
      const int a = int(block.arena);
      (block.live ? used : quarantined)[a] += footprint(block.size);
      ++(block.live ? live : held)[a];
    }
    size_t total_used = 0;
    for (int a = 0; a < kArenas; ++a) {
      const codeheap::ArenaStats& s = stats.arenas[a];
      FUZZ_CHECK(s.used_bytes == used[a] && s.quarantined_bytes == quarantined[a] &&
                     s.live_blocks == live[a] && s.quarantined_blocks == held[a] &&
                     s.free_bytes == s.reserved_bytes - used[a] - quarantined[a] &&
                     s.largest_free_block <= s.free_bytes && s.committed_bytes <= s.reserved_bytes,
                 "arena {} differs from the model ({} used, {} quarantined):\n{}", a, used[a],
                 quarantined[a], codeheap::format_text(stats));
      total_used += used[a];
    }
    FUZZ_CHECK(stats.used_bytes == total_used, "total used {}", stats.used_bytes);
    FUZZ_CHECK(stats.owners.size() == owners_.size(), "{} owners, model {}", stats.owners.size(),
               owners_.size());
    size_t i = 0;
    for (const auto& [id, owner] : owners_) {
      const codeheap::OwnerStats& s = stats.owners[i++];
      FUZZ_CHECK(s.id == id && s.retired == owner.retired && s.live_blocks == live_blocks_of(id) &&
                     s.live_blocks + s.quarantined_blocks == blocks_of(id),
                 "owner {} differs from the model:\n{}", id, codeheap::format_text(stats));
      FUZZ_CHECK(*owner.ran == 0, "owner {}: on_gone ran while it still has blocks", id);
    }
  }

  codeheap::Heap& heap_;
  fuzz::Input& in_;
  codeheap::ArenaStats arenas_[kArenas];
  std::map<uintptr_t, Block> blocks_;  // live and quarantined, by address
  std::map<OwnerId, Owner> owners_;    // known to the heap
  std::vector<uintptr_t> freed_;
  codeheap::Counters counters_;
  size_t steps_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool quiet = (fuzz::quiet_logs({""}), true);
  (void)quiet;
  fuzz::Input in(data, size);
  codeheap::HeapOptions options;
  options.code_bytes = (size_t{16} << 10) << (2 * in.below(4));  // 16 KiB .. 1 MiB
  options.read_only_bytes = kPage << in.below(4);
  options.data_bytes = kPage << in.below(6);
  options.retain_free_bytes = in.coin() ? 0 : kPage << in.below(8);
  auto heap = codeheap::Heap::create(options);
  FUZZ_CHECK(heap, "Heap::create: {}", heap ? "" : heap.error().message);
  Session session(**heap, in);
  for (int steps = 0; steps < 400 && !in.empty(); ++steps) session.step();
  session.check(/*contents=*/true);
  return 0;
}
