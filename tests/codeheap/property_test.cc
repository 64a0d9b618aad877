// A randomized property test of the whole heap against a shadow model.
//
// 200,000 operations (allocate, release, retire, abandon, reclaim) with log-uniform sizes from
// 1 B to 256 KiB and alignments from 1 to 4096, checked for: no overlap, alignment, intact
// contents of live and retired blocks, trap bytes in released ones, stats that add up and match
// the model, find() agreeing with the model, and committed memory within retain_free_bytes
// after every reclaim. Fixed seed: a failure reproduces.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "codeheap/heap.h"
#include "tests/codeheap/test_util.h"

namespace codeheap::test {
namespace {

constexpr int kOperations = 200'000;
constexpr int kBatch = 2'000;
constexpr size_t kMaxSize = 256 << 10;

struct Shadow {
  uintptr_t address = 0;
  size_t size = 0;
  Arena arena = Arena::kCode;
  uint8_t* writable = nullptr;
  uint8_t pattern = 0;
  BlockState state = BlockState::kLive;
  bool trapped = false;  // released (not retired): reads as 0xCC
};

class HeapModel {
 public:
  explicit HeapModel(Heap& heap) : heap_(heap), rng_(20240611) {
    page_ = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  }

  void step() {
    const int roll = static_cast<int>(rng_() % 100);
    if (roll < 50) {
      allocate();
    } else if (roll < 70) {
      end_block(Exit::kRelease);
    } else if (roll < 80) {
      end_block(Exit::kRetire);
    } else if (roll < 97) {
      end_block(Exit::kAbandon);
    } else {
      reclaim();
    }
  }

  void check_batch() {
    const HeapStats stats = heap_.stats();
    ASSERT_EQ(stats.arenas.size(), 3u);
    for (int i = 0; i < kArenaCount; ++i) {
      const ArenaStats& a = stats.arenas[i];
      size_t used = 0, quarantined = 0, live = 0, parked = 0;
      for (const auto& [address, s] : blocks_) {
        if (s.arena != static_cast<Arena>(i)) continue;
        if (s.state == BlockState::kLive) {
          used += footprint(s.size);
          ++live;
        } else {
          quarantined += footprint(s.size);
          ++parked;
        }
      }
      ASSERT_EQ(a.used_bytes + a.quarantined_bytes + a.free_bytes, a.reserved_bytes) << a.name;
      ASSERT_EQ(a.used_bytes, used) << a.name;
      ASSERT_EQ(a.quarantined_bytes, quarantined) << a.name;
      ASSERT_EQ(a.live_blocks, live) << a.name;
      ASSERT_EQ(a.quarantined_blocks, parked) << a.name;
      ASSERT_LE(a.largest_free_block, a.free_bytes) << a.name;
      size_t histogram = 0;
      for (size_t n : a.free_histogram) histogram += n;
      ASSERT_EQ(histogram, a.free_blocks) << a.name;
      ASSERT_GE(a.committed_bytes, touched_bytes(static_cast<Arena>(i))) << a.name;
    }
    ASSERT_EQ(heap_.quarantined().size(), count(BlockState::kQuarantined));

    // find() agrees with the model, inside blocks and at random addresses.
    std::vector<uintptr_t> addresses;
    for (const auto& [address, s] : blocks_) addresses.push_back(address);
    for (int i = 0; i < 64 && !addresses.empty(); ++i) {
      const Shadow& s = blocks_.at(addresses[rng_() % addresses.size()]);
      auto info = heap_.find(s.address + rng_() % footprint(s.size));
      ASSERT_TRUE(info);
      ASSERT_EQ(info->address, s.address);
      ASSERT_EQ(info->size, s.size);
      ASSERT_EQ(info->arena, s.arena);
      ASSERT_EQ(info->state, s.state);
    }
    for (int i = 0; i < 64; ++i) {
      const ArenaStats& a = stats.arenas[rng_() % kArenaCount];
      const uintptr_t address = a.begin + rng_() % a.reserved_bytes;
      auto info = heap_.find(address);
      const Shadow* s = containing(address);
      ASSERT_EQ(info.has_value(), s != nullptr) << std::hex << address;
      if (s != nullptr) {
        ASSERT_EQ(info->address, s->address);
      }
    }
    // Contents: every block's ends, and a few blocks in full.
    for (const auto& [address, s] : blocks_) ASSERT_TRUE(intact(s, /*full=*/false)) << address;
    for (int i = 0; i < 8 && !addresses.empty(); ++i) {
      ASSERT_TRUE(intact(blocks_.at(addresses[rng_() % addresses.size()]), /*full=*/true));
    }
  }

  void drain() {
    while (!live_.empty()) end_block(Exit::kRelease);
    const ReclaimReport report = heap_.reclaim([](uintptr_t, uintptr_t) { return false; });
    ASSERT_EQ(report.reclaimed_blocks, blocks_.size());
    blocks_.clear();
  }

  size_t operations_failed_for_space() const { return out_of_memory_; }
  size_t reclaims() const { return reclaims_; }
  size_t max_blocks() const { return max_blocks_; }

 private:
  enum class Exit { kRelease, kRetire, kAbandon };

  void allocate() {
    const Arena arena = static_cast<Arena>(rng_() % 4 == 0 ? 1 + rng_() % 2 : 0);
    // Log-uniform in [1, kMaxSize].
    const double log_size = std::uniform_real_distribution<double>(
        0.0, std::log(static_cast<double>(kMaxSize) + 1))(rng_);
    const size_t size = std::clamp<size_t>(static_cast<size_t>(std::exp(log_size)), 1, kMaxSize);
    const size_t alignment = size_t{1} << (rng_() % 13);  // 1 .. 4096
    auto a = heap_.allocate(arena, size, alignment);
    if (!a) {
      ASSERT_EQ(a.error().code, ErrorCode::kOutOfMemory) << a.error().message;
      // Only if no span could have held it whatever its placement.
      const size_t sure_fit = footprint(size) + std::max<size_t>(alignment, 16) - 16;
      ASSERT_LT(heap_.stats().arenas[static_cast<size_t>(arena)].largest_free_block, sure_fit);
      ++out_of_memory_;
      return;
    }
    ASSERT_EQ(a->address % alignment, 0u);
    ASSERT_EQ(a->address % 16, 0u);
    ASSERT_EQ(a->size, size);
    ASSERT_EQ(a->arena, arena);
    ASSERT_EQ(a->writable, heap_.writable_alias(a->address));
    // No overlap with any live or quarantined block.
    auto next = blocks_.lower_bound(a->address);
    if (next != blocks_.end()) {
      ASSERT_GE(next->first, a->address + footprint(size));
    }
    if (next != blocks_.begin()) {
      const Shadow& before = std::prev(next)->second;
      ASSERT_LE(before.address + footprint(before.size), a->address);
    }
    Shadow s;
    s.address = a->address;
    s.size = size;
    s.arena = arena;
    s.writable = a->writable;
    // Never 0 (what a page wrongly returned to the OS reads as) nor the trap byte.
    s.pattern = static_cast<uint8_t>(1 + rng_() % 0xCA);
    std::memset(s.writable, s.pattern, size);
    blocks_.emplace(s.address, s);
    live_.push_back(s.address);
    max_blocks_ = std::max(max_blocks_, blocks_.size());
  }

  void end_block(Exit exit) {
    if (live_.empty()) return;
    const size_t pick = rng_() % live_.size();
    const uintptr_t address = live_[pick];
    live_[pick] = live_.back();
    live_.pop_back();
    Shadow& s = blocks_.at(address);
    ASSERT_TRUE(intact(s, /*full=*/true)) << "live block corrupted at " << std::hex << address;
    switch (exit) {
      case Exit::kRelease:
        ASSERT_TRUE(heap_.release(address));
        s.state = BlockState::kQuarantined;
        s.trapped = true;
        ASSERT_TRUE(intact(s, /*full=*/true)) << "released block not trap-filled";
        break;
      case Exit::kRetire:
        ASSERT_TRUE(heap_.retire(address));
        s.state = BlockState::kQuarantined;
        ASSERT_TRUE(intact(s, /*full=*/true)) << "retired block changed";
        break;
      case Exit::kAbandon:
        ASSERT_TRUE(heap_.abandon(address));
        blocks_.erase(address);
        break;
    }
  }

  void reclaim() {
    ++reclaims_;
    const size_t salt = rng_();
    std::set<uintptr_t> freed;
    size_t referenced = 0;
    const ReclaimReport report = heap_.reclaim([&](uintptr_t begin, uintptr_t end) {
      const Shadow& s = blocks_.at(begin);
      EXPECT_EQ(s.state, BlockState::kQuarantined);
      EXPECT_EQ(end, begin + footprint(s.size));
      if (((begin >> 4) ^ salt) % 3 == 0) {  // "a stack still points into it"
        ++referenced;
        return true;
      }
      freed.insert(begin);
      return false;
    });
    ASSERT_EQ(report.examined_blocks, count(BlockState::kQuarantined));
    ASSERT_EQ(report.reclaimed_blocks, freed.size());
    ASSERT_EQ(report.still_referenced_blocks, referenced);
    size_t bytes = 0;
    for (uintptr_t address : freed) {
      bytes += footprint(blocks_.at(address).size);
      blocks_.erase(address);
    }
    ASSERT_EQ(report.reclaimed_bytes, bytes);

    // Trimmed: no more than retain_free_bytes of whole free pages stay committed.
    const HeapStats stats = heap_.stats();
    size_t touched = 0;
    for (int i = 0; i < kArenaCount; ++i) touched += touched_bytes(static_cast<Arena>(i));
    ASSERT_LE(stats.committed_bytes, touched + heap_.options().retain_free_bytes);
  }

  // Bytes of the pages that live or quarantined blocks of `arena` touch.
  size_t touched_bytes(Arena arena) const {
    size_t pages = 0;
    uintptr_t last_page = ~uintptr_t{0};
    for (const auto& [address, s] : blocks_) {
      if (s.arena != arena) continue;
      uintptr_t first = address / page_;
      const uintptr_t last = (address + footprint(s.size) - 1) / page_;
      if (first == last_page) ++first;
      if (first <= last) pages += last - first + 1;
      last_page = last;
    }
    return pages * page_;
  }

  bool intact(const Shadow& s, bool full) const {
    const uint8_t* p = reinterpret_cast<const uint8_t*>(s.address);  // the CPU's view
    const uint8_t expected = s.trapped ? 0xCC : s.pattern;
    const size_t size = s.trapped ? footprint(s.size) : s.size;
    if (full || size <= 32) return all_bytes(p, size, expected);
    return all_bytes(p, 16, expected) && all_bytes(p + size - 16, 16, expected);
  }

  const Shadow* containing(uintptr_t address) const {
    auto it = blocks_.upper_bound(address);
    if (it == blocks_.begin()) return nullptr;
    --it;
    return address < it->first + footprint(it->second.size) ? &it->second : nullptr;
  }

  size_t count(BlockState state) const {
    return static_cast<size_t>(std::count_if(
        blocks_.begin(), blocks_.end(), [&](const auto& e) { return e.second.state == state; }));
  }

  Heap& heap_;
  std::mt19937_64 rng_;
  size_t page_ = 0;
  std::map<uintptr_t, Shadow> blocks_;  // live and quarantined, all arenas (disjoint ranges)
  std::vector<uintptr_t> live_;         // for picking a random live block in O(1)
  size_t out_of_memory_ = 0;
  size_t reclaims_ = 0;
  size_t max_blocks_ = 0;
};

TEST(HeapPropertyTest, RandomOperationsKeepEveryInvariant) {
  HeapOptions options;
  options.code_bytes = 8 << 20;
  options.read_only_bytes = 2 << 20;
  options.data_bytes = 2 << 20;
  options.retain_free_bytes = 512 << 10;
  options.name = "property";
  auto heap = make_heap(options);
  ASSERT_NE(heap, nullptr);
  HeapModel model(*heap);
  for (int done = 0; done < kOperations; done += kBatch) {
    for (int i = 0; i < kBatch; ++i) ASSERT_NO_FATAL_FAILURE(model.step());
    ASSERT_NO_FATAL_FAILURE(model.check_batch()) << "after " << done + kBatch << " operations";
  }
  EXPECT_NO_WX_MAPPINGS();
  ASSERT_NO_FATAL_FAILURE(model.drain());

  // Everything went back and merged: one free span per arena, nothing left committed beyond
  // the retained budget.
  const HeapStats stats = heap->stats();
  for (const ArenaStats& a : stats.arenas) {
    EXPECT_EQ(a.free_blocks, 1u) << a.name;
    EXPECT_EQ(a.free_bytes, a.reserved_bytes) << a.name;
  }
  EXPECT_LE(stats.committed_bytes, options.retain_free_bytes);
  // The run exercised what it claims to: full arenas, many reclaims, a crowded block table.
  EXPECT_GT(model.operations_failed_for_space(), 100u);
  EXPECT_GT(model.reclaims(), 5000u);
  EXPECT_GT(model.max_blocks(), 200u);
  RecordProperty("out_of_memory", static_cast<int>(model.operations_failed_for_space()));
  RecordProperty("max_blocks", static_cast<int>(model.max_blocks()));
}

}  // namespace
}  // namespace codeheap::test
