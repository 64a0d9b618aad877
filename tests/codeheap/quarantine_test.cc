// Quarantine and reclaim: trap bytes, no reuse while referenced, the unlocked predicate.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <future>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "codeheap/heap.h"
#include "codeheap/stats_json.h"
#include "tests/codeheap/test_util.h"

namespace codeheap::test {
namespace {

const auto kNothingReferenced = [](uintptr_t, uintptr_t) { return false; };

class QuarantineTest : public HeapTest {
 protected:
  void SetUp() override {
    heap_ = make_heap(small_options("quarantine"));
    ASSERT_NE(heap_, nullptr);
  }
  Allocation code42() {
    auto a = heap_->allocate(Arena::kCode, kReturn42.size(), 16);
    EXPECT_TRUE(a);
    write_return42(*a);
    EXPECT_EQ(call(a->address), 42);
    return *a;
  }
  std::unique_ptr<Heap> heap_;
};

TEST_F(QuarantineTest, ReleasedBlockReadsAsTrapBytesAtOnce) {
  const Allocation a = code42();
  ASSERT_TRUE(heap_->release(a.address));
  EXPECT_TRUE(all_bytes(a.address, footprint(a.size), 0xCC));
  const std::vector<BlockInfo> q = heap_->quarantined();
  ASSERT_EQ(q.size(), 1u);
  EXPECT_EQ(q[0].address, a.address);
  EXPECT_EQ(q[0].size, a.size);
  EXPECT_EQ(q[0].state, BlockState::kQuarantined);
  const HeapStats stats = heap_->stats();
  EXPECT_EQ(stats.arenas[0].quarantined_blocks, 1u);
  EXPECT_EQ(stats.arenas[0].quarantined_bytes, footprint(a.size));
  EXPECT_EQ(stats.arenas[0].used_bytes, 0u);
  EXPECT_EQ(stats.counters.releases, 1u);
  EXPECT_NO_WX_MAPPINGS();
}

TEST_F(QuarantineTest, RetiredBlockKeepsRunningUntilReclaimed) {
  const Allocation a = code42();
  ASSERT_TRUE(heap_->retire(a.address));
  EXPECT_EQ(call(a.address), 42);  // an activation still inside finishes normally
  EXPECT_EQ(heap_->find(a.address)->state, BlockState::kQuarantined);
  EXPECT_EQ(heap_->stats().counters.retires, 1u);
  heap_->reclaim([](uintptr_t, uintptr_t) { return true; });
  EXPECT_EQ(call(a.address), 42);  // still referenced: untouched
  heap_->reclaim(kNothingReferenced);
  EXPECT_TRUE(all_bytes(a.address, footprint(a.size), 0xCC));
}

TEST_F(QuarantineTest, ReferencedBlockIsNeverReused) {
  const Allocation a = code42();
  const uintptr_t a_end = a.address + footprint(a.size);
  ASSERT_TRUE(heap_->release(a.address));
  const ReclaimReport report = heap_->reclaim(
      [&](uintptr_t begin, uintptr_t end) { return begin < a_end && a.address < end; });
  EXPECT_EQ(report.examined_blocks, 1u);
  EXPECT_EQ(report.still_referenced_blocks, 1u);
  EXPECT_EQ(report.reclaimed_blocks, 0u);

  std::vector<uintptr_t> others;
  for (int i = 0; i < 200; ++i) {
    auto b = heap_->allocate(Arena::kCode, a.size, 16);
    ASSERT_TRUE(b);
    EXPECT_TRUE(b->address >= a_end || b->address + footprint(a.size) <= a.address);
    others.push_back(b->address);
  }
  EXPECT_TRUE(all_bytes(a.address, footprint(a.size), 0xCC));
  for (uintptr_t b : others) ASSERT_TRUE(heap_->abandon(b));

  const ReclaimReport freed = heap_->reclaim(kNothingReferenced);
  EXPECT_EQ(freed.reclaimed_blocks, 1u);
  EXPECT_EQ(freed.reclaimed_bytes, footprint(a.size));
  EXPECT_EQ(heap_->allocate(Arena::kCode, a.size, 16)->address, a.address);
}

TEST_F(QuarantineTest, PredicateSeesEveryFootprintInAddressOrder) {
  std::vector<Allocation> blocks;
  for (size_t size : {1, 17, 100, 4096, 5000}) {
    blocks.push_back(*heap_->allocate(Arena::kCode, size, 16));
  }
  blocks.push_back(*heap_->allocate(Arena::kData, 33, 16));
  for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) {
    ASSERT_TRUE(heap_->release(it->address));
  }
  std::vector<std::pair<uintptr_t, uintptr_t>> seen;
  heap_->reclaim([&](uintptr_t begin, uintptr_t end) {
    seen.emplace_back(begin, end);
    return true;
  });
  ASSERT_EQ(seen.size(), blocks.size());
  for (size_t i = 0; i < blocks.size(); ++i) {
    EXPECT_EQ(seen[i].first, blocks[i].address);
    EXPECT_EQ(seen[i].second, blocks[i].address + footprint(blocks[i].size));
  }
}

// Links interleave the arenas (code, constants, data per module) and die in any order; a pass
// that frees only some blocks leaves the rest for the next one, still in address order.
TEST_F(QuarantineTest, AddressOrderHoldsAcrossArenasAndPasses) {
  std::vector<uintptr_t> live;
  for (int module = 0; module < 12; ++module) {
    for (Arena arena : {Arena::kCode, Arena::kReadOnly, Arena::kData}) {
      live.push_back(heap_->allocate(arena, 48 + 16 * module, 16)->address);
    }
  }
  std::vector<uintptr_t> order = live;
  std::shuffle(order.begin(), order.end(), std::mt19937(7));
  for (uintptr_t address : order) ASSERT_TRUE(heap_->retire(address));

  std::vector<uintptr_t> expected = live;
  std::sort(expected.begin(), expected.end());
  for (int pass = 0; !expected.empty(); ++pass) {
    ASSERT_LT(pass, 8);  // 36, 18, 9, 4, 2, 1 blocks
    std::vector<uintptr_t> seen;
    heap_->reclaim([&](uintptr_t begin, uintptr_t) {
      seen.push_back(begin);
      return seen.size() % 2 == 0;  // every other block stays referenced for the next pass
    });
    EXPECT_EQ(seen, expected) << "pass " << pass;
    std::vector<uintptr_t> kept;
    for (size_t i = 1; i < seen.size(); i += 2) kept.push_back(seen[i]);
    expected = kept;
  }
}

// The dying child re-runs the test from its start ("threadsafe" style) rather than being forked
// from this one: a forked child inherits no mapping of the heap (MADV_DONTFORK), so the code it
// calls must be in a heap of its own.
class QuarantineDeathTest : public QuarantineTest {
 protected:
  void SetUp() override {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    QuarantineTest::SetUp();
  }
};

TEST_F(QuarantineDeathTest, CallingReleasedCodeDiesWithSigtrap) {
  const Allocation a = code42();
  ASSERT_TRUE(heap_->release(a.address));
  EXPECT_EXIT(call(a.address), ::testing::KilledBySignal(SIGTRAP), "");
}

TEST_F(QuarantineDeathTest, CallingReclaimedRetiredCodeDiesWithSigtrap) {
  const Allocation a = code42();
  ASSERT_TRUE(heap_->retire(a.address));
  heap_->reclaim(kNothingReferenced);
  EXPECT_EXIT(call(a.address), ::testing::KilledBySignal(SIGTRAP), "");
}

TEST_F(QuarantineTest, PredicateRunsWithoutTheLock) {
  const Allocation a = code42();
  const Allocation b = code42();
  ASSERT_TRUE(heap_->release(a.address));
  const ReclaimReport report = heap_->reclaim([&](uintptr_t, uintptr_t) {
    // Any of these would deadlock if the heap lock were held.
    EXPECT_TRUE(heap_->allocate(Arena::kData, 64, 16));
    EXPECT_TRUE(heap_->release(b.address));
    EXPECT_EQ(heap_->quarantined().size(), 2u);
    EXPECT_EQ(heap_->stats().arenas[0].quarantined_blocks, 2u);
    return false;
  });
  // b was released after the snapshot: not this pass's to free.
  EXPECT_EQ(report.examined_blocks, 1u);
  EXPECT_EQ(report.reclaimed_blocks, 1u);
  EXPECT_EQ(heap_->find(b.address)->state, BlockState::kQuarantined);
  EXPECT_EQ(heap_->reclaim(kNothingReferenced).reclaimed_blocks, 1u);
}

// A pass whose snapshot went stale while its predicate ran must not free a block that another
// pass freed, nor a newer block released at the same address.
TEST_F(QuarantineTest, ConcurrentPassSkipsBlocksThatChangedMeanwhile) {
  const Allocation a = code42();
  ASSERT_TRUE(heap_->release(a.address));
  std::promise<void> entered;
  std::promise<void> go;
  std::shared_future<void> go_signal = go.get_future().share();
  auto slow_pass = std::async(std::launch::async, [&] {
    return heap_->reclaim([&](uintptr_t, uintptr_t) {
      entered.set_value();
      go_signal.wait();
      return false;
    });
  });
  entered.get_future().wait();
  EXPECT_EQ(heap_->reclaim(kNothingReferenced).reclaimed_blocks, 1u);
  const Allocation again = code42();
  ASSERT_EQ(again.address, a.address);  // same range, a newer block
  ASSERT_TRUE(heap_->release(again.address));
  go.set_value();

  const ReclaimReport stale = slow_pass.get();
  EXPECT_EQ(stale.examined_blocks, 1u);
  EXPECT_EQ(stale.reclaimed_blocks, 0u);
  EXPECT_EQ(heap_->find(a.address)->state, BlockState::kQuarantined);
  EXPECT_EQ(heap_->stats().arenas[0].quarantined_blocks, 1u);
}

TEST_F(QuarantineTest, ReclaimIsTimedAndCounted) {
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(heap_->release(code42().address));
  const ReclaimReport first = heap_->reclaim(kNothingReferenced);
  const ReclaimReport second = heap_->reclaim(kNothingReferenced);
  EXPECT_GT(first.duration_ns, 0u);
  const Counters c = heap_->stats().counters;
  EXPECT_EQ(c.reclaim_passes.count, 2u);
  EXPECT_EQ(c.reclaimed.count, 3u);
  EXPECT_EQ(c.reclaimed.total, 3 * footprint(kReturn42.size()));
  EXPECT_EQ(c.reclaim_ns_last, second.duration_ns);
  EXPECT_EQ(c.reclaim_passes.total, first.duration_ns + second.duration_ns);
  // In JSON each tally is its two flat keys, as before it had its shape, and reads back.
  const nlohmann::json j = c;
  EXPECT_EQ(j["reclaim_passes"], c.reclaim_passes.count);
  EXPECT_EQ(j["reclaim_ns_total"], c.reclaim_passes.total);
  EXPECT_EQ(j["blocks_reclaimed"], c.reclaimed.count);
  EXPECT_EQ(j["bytes_reclaimed"], c.reclaimed.total);
  EXPECT_EQ(j.get<Counters>(), c);
}

// Several threads allocate, write, run, verify and release while another reclaims; at the end
// every byte is back in one free span per arena.
TEST_F(QuarantineTest, ConcurrentChurnKeepsTheHeapConsistent) {
  constexpr int kThreads = 4;
  constexpr int kRounds = 3000;
  std::atomic<bool> done{false};
  std::atomic<int> failures{0};
  std::thread reclaimer([&] {
    while (!done.load()) {
      heap_->reclaim(kNothingReferenced);
      std::this_thread::yield();
    }
  });
  std::vector<std::thread> workers;
  for (int t = 0; t < kThreads; ++t) {
    workers.emplace_back([&, t] {
      std::mt19937 rng(t);
      std::vector<Allocation> mine;
      for (int i = 0; i < kRounds; ++i) {
        if (mine.size() < 16 && rng() % 3 != 0) {
          const Arena arena = static_cast<Arena>(rng() % kArenaCount);
          auto a = heap_->allocate(arena, 8 + rng() % 2000, size_t{1} << (rng() % 8));
          if (!a) continue;  // a full arena is fine; the others keep going
          std::memset(a->writable, t + 1, a->size);
          if (arena == Arena::kCode) write_return42(*a);
          mine.push_back(*a);
        } else if (!mine.empty()) {
          const Allocation a = mine.back();
          mine.pop_back();
          const uint8_t* p = reinterpret_cast<const uint8_t*>(a.address);
          if (a.arena == Arena::kCode) {
            if (call(a.address) != 42 || !all_bytes(p + 6, a.size - 6, t + 1)) ++failures;
          } else if (!all_bytes(p, a.size, t + 1)) {
            ++failures;
          }
          if (!(rng() % 2 ? heap_->release(a.address) : heap_->abandon(a.address))) ++failures;
        }
      }
      for (const Allocation& a : mine) {
        if (!heap_->retire(a.address)) ++failures;
      }
    });
  }
  for (std::thread& w : workers) w.join();
  done = true;
  reclaimer.join();
  heap_->reclaim(kNothingReferenced);

  EXPECT_EQ(failures.load(), 0);
  const HeapStats stats = heap_->stats();
  for (const ArenaStats& a : stats.arenas) {
    EXPECT_EQ(a.used_bytes, 0u) << a.name;
    EXPECT_EQ(a.quarantined_bytes, 0u) << a.name;
    EXPECT_EQ(a.free_blocks, 1u) << a.name;
    EXPECT_EQ(a.largest_free_block, a.reserved_bytes) << a.name;
  }
  EXPECT_EQ(stats.counters.release_errors, 0u);
  EXPECT_EQ(stats.counters.allocations,
            stats.counters.releases + stats.counters.retires + stats.counters.abandons);
}

// An owner retired with on_gone (a module with registered unwind tables) is reclaimed as a
// unit, and on_gone runs before its blocks are freed, while their bytes are intact.
TEST_F(QuarantineTest, OnGoneRunsBeforeTheOwnersBlocksAreFreedAllTogether) {
  const OwnerId module = heap_->register_owner("module");
  auto code = heap_->allocate(Arena::kCode, 64, 16, module);
  auto tables = heap_->allocate(Arena::kReadOnly, 64, 16, module);
  ASSERT_TRUE(code && tables);
  std::memset(tables->writable, 0x5A, 64);
  ASSERT_TRUE(heap_->retire(code->address));
  ASSERT_TRUE(heap_->retire(tables->address));
  int calls = 0;
  bool intact_when_called = false;
  heap_->retire_owner(module, [&] {
    ++calls;
    intact_when_called = all_bytes(tables->address, 64, 0x5A) &&
                         heap_->find(tables->address)->state == BlockState::kQuarantined;
  });
  EXPECT_EQ(calls, 0);

  // The code is still referenced: the tables stay too, though nothing points into them.
  const ReclaimReport held =
      heap_->reclaim([&](uintptr_t begin, uintptr_t) { return begin == code->address; });
  EXPECT_EQ(held.reclaimed_blocks, 0u);
  EXPECT_EQ(calls, 0);
  EXPECT_TRUE(heap_->find(tables->address).has_value());

  const ReclaimReport freed = heap_->reclaim(kNothingReferenced);
  EXPECT_EQ(freed.reclaimed_blocks, 2u);
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(intact_when_called);
  EXPECT_FALSE(heap_->find(code->address).has_value());
  EXPECT_TRUE(heap_->stats().owners.empty());
}

TEST_F(QuarantineTest, OnGoneRunsAtOnceForAnEmptyOwnerAndWhenTheHeapGoesAway) {
  int empty_calls = 0;
  heap_->retire_owner(heap_->register_owner("empty"), [&] { ++empty_calls; });
  EXPECT_EQ(empty_calls, 1);

  const OwnerId module = heap_->register_owner("pending");
  auto code = heap_->allocate(Arena::kCode, 64, 16, module);
  ASSERT_TRUE(code);
  ASSERT_TRUE(heap_->retire(code->address));
  int pending_calls = 0;
  heap_->retire_owner(module, [&] { ++pending_calls; });
  EXPECT_EQ(pending_calls, 0);
  heap_.reset();
  EXPECT_EQ(pending_calls, 1);
}

}  // namespace
}  // namespace codeheap::test
