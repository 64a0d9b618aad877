// The allocator's data structures on their own: FreeList, CommitMap and NodePool.
#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <memory_resource>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "codeheap/commit_map.h"
#include "codeheap/free_list.h"
#include "codeheap/node_pool.h"

namespace codeheap {
namespace {

constexpr uintptr_t kBase = 0x40000000;

// Frees one of the `live` blocks (begin -> size) at random and clears its granules in `used`, a
// bit per granule from kBase; returns its size.
size_t free_one_at_random(FreeList& list, std::map<uintptr_t, size_t>& live,
                          std::vector<bool>& used, std::mt19937& rng) {
  auto it = live.begin();
  std::advance(it, rng() % live.size());
  const auto [begin, size] = *it;
  for (size_t g = (begin - kBase) / 16; g < (begin - kBase + size) / 16; ++g) used[g] = false;
  list.free(begin, size);
  live.erase(it);
  return size;
}

TEST(FreeListTest, StartsAsOneSpanAndHandsOutFromTheBottom) {
  FreeList list(kBase, 1 << 20);
  EXPECT_EQ(list.free_bytes(), 1u << 20);
  EXPECT_EQ(list.span_count(), 1u);
  EXPECT_EQ(list.largest_span(), 1u << 20);
  EXPECT_EQ(list.allocate(64, 16), kBase);
  EXPECT_EQ(list.allocate(64, 16), kBase + 64);
  EXPECT_EQ(list.free_bytes(), (1u << 20) - 128);
}

TEST(FreeListTest, AlignmentPaddingStaysFree) {
  FreeList list(kBase, 1 << 20);
  ASSERT_EQ(list.allocate(16, 16), kBase);
  EXPECT_EQ(list.allocate(32, 4096), kBase + 4096);
  EXPECT_EQ(list.span_count(), 2u);                // [16, 4096) and the tail
  EXPECT_EQ(list.allocate(4080, 16), kBase + 16);  // the padding, exactly
  EXPECT_EQ(list.span_count(), 1u);
}

TEST(FreeListTest, FreeMergesWithBothNeighbours) {
  FreeList list(kBase, 4096);
  const uintptr_t a = *list.allocate(1024, 16);
  const uintptr_t b = *list.allocate(1024, 16);
  const uintptr_t c = *list.allocate(1024, 16);
  const uintptr_t d = *list.allocate(1024, 16);
  EXPECT_EQ(list.span_count(), 0u);
  EXPECT_FALSE(list.allocate(16, 16));
  list.free(a, 1024);
  list.free(c, 1024);
  EXPECT_EQ(list.span_count(), 2u);
  list.free(b, 1024);
  EXPECT_EQ(list.span_count(), 1u);
  EXPECT_EQ(list.largest_span(), 3072u);
  list.free(d, 1024);
  EXPECT_EQ(list.span_count(), 1u);
  EXPECT_EQ(list.largest_span(), 4096u);
}

TEST(FreeListTest, BestFitAcrossSizeClasses) {
  FreeList list(kBase, 1 << 20);
  std::map<size_t, uintptr_t> holes;
  // Holes of many sizes separated by live fences, smallest last in address order.
  for (size_t size : {65536, 8192, 4096, 1024, 272, 256, 48}) {
    holes[size] = *list.allocate(size, 16);
    ASSERT_TRUE(list.allocate(16, 16));
  }
  for (const auto& [size, at] : holes) list.free(at, size);
  // Each request lands in the smallest hole that holds it, not at the lowest address.
  EXPECT_EQ(list.allocate(48, 16), holes[48]);
  EXPECT_EQ(list.allocate(272, 16), holes[272]);
  EXPECT_EQ(list.allocate(208, 16), holes[256]);
  EXPECT_EQ(list.allocate(1008, 16), holes[1024]);
  EXPECT_EQ(list.allocate(4096, 16), holes[4096]);
  EXPECT_EQ(list.allocate(5008, 16), holes[8192]);
  EXPECT_EQ(list.allocate(9008, 16), holes[65536]);
}

TEST(FreeListTest, EqualSizesGoLowestAddressFirst) {
  FreeList list(kBase, 1 << 20);
  std::vector<uintptr_t> holes;
  for (int i = 0; i < 5; ++i) {
    holes.push_back(*list.allocate(512, 16));
    ASSERT_TRUE(list.allocate(16, 16));
  }
  for (auto it = holes.rbegin(); it != holes.rend(); ++it) list.free(*it, 512);
  for (uintptr_t hole : holes) EXPECT_EQ(list.allocate(512, 16), hole);
}

TEST(FreeListTest, FailsOnlyWhenNoSpanFits) {
  FreeList list(kBase, 64 * 1024);
  // Spans of exactly the request size whose start is misaligned, and one that fits.
  std::vector<uintptr_t> blocks;
  ASSERT_EQ(list.allocate(16, 16), kBase);
  for (int i = 0; i < 15; ++i) blocks.push_back(*list.allocate(4096, 16));
  list.free(kBase, 16);
  list.free(blocks[0], 4096);  // [kBase, kBase + 4112): holds an aligned page
  for (int i = 2; i <= 12; i += 2) list.free(blocks[i], 4096);  // misaligned pages
  EXPECT_EQ(list.allocate(4096, 4096), kBase);
  EXPECT_FALSE(list.allocate(4096, 4096));
  EXPECT_EQ(list.free_bytes(), 16u + 6 * 4096 + 4080);
}

TEST(FreeListTest, RandomizedAgainstAByteMap) {
  constexpr size_t kSize = 1 << 18;
  FreeList list(kBase, kSize);
  std::vector<bool> used(kSize / 16, false);
  size_t used_bytes = 0;
  std::map<uintptr_t, size_t> live;
  std::mt19937 rng(7);
  for (int i = 0; i < 20000; ++i) {
    if (live.empty() || rng() % 2) {
      const size_t size = 16 * (1 + rng() % 256);
      const size_t alignment = size_t{1} << (rng() % 13);
      auto at = list.allocate(size, alignment);
      if (!at) continue;
      ASSERT_EQ(*at % alignment, 0u);
      for (size_t g = (*at - kBase) / 16; g < (*at - kBase + size) / 16; ++g) {
        ASSERT_FALSE(used[g]) << "overlap";
        used[g] = true;
      }
      live.emplace(*at, size);
      used_bytes += size;
    } else {
      used_bytes -= free_one_at_random(list, live, used, rng);
    }
    ASSERT_EQ(list.free_bytes(), kSize - used_bytes);
  }
  for (const auto& [at, size] : live) list.free(at, size);
  EXPECT_EQ(list.span_count(), 1u);
  EXPECT_EQ(list.largest_span(), kSize);
}

// The span allocate carved last is taken again without a search only while best fit would pick
// it: a smaller span that fits, freed meanwhile, wins; so does one in the request's own class.
TEST(FreeListTest, CarvingOnFromTheLastSpanNeverBeatsABetterFit) {
  FreeList list(kBase, 1 << 20);
  const uintptr_t a = *list.allocate(4096, 16);
  const uintptr_t fence = *list.allocate(16, 16);
  EXPECT_EQ(fence, a + 4096);
  EXPECT_EQ(list.allocate(256, 16), fence + 16);        // carved on from the large span
  list.free(a, 4096);                                   // a 4 KiB hole below
  EXPECT_EQ(list.allocate(256, 16), a);                 // best fit: the hole, not the large span
  EXPECT_EQ(list.allocate(256, 16), a + 256);           // and on from the hole
  EXPECT_EQ(list.allocate(3584, 16), a + 512);          // the hole exactly
  EXPECT_EQ(list.allocate(256, 16), fence + 16 + 256);  // back to the large span
  EXPECT_EQ(list.free_bytes(), (1u << 20) - 4096 - 16 - 512);
}

// The same when the smaller span lands in the last span's own size class, where the class
// bitmap cannot tell: sizes in [1 MiB, 1 MiB + 64 KiB) share one class.
TEST(FreeListTest, ASmallerSpanInTheLastSpansClassWins) {
  constexpr size_t kHole = size_t{1} << 20;
  constexpr size_t kLarge = 1099984;  // > kHole, same class
  FreeList list(kBase, kHole + 16 + kLarge);
  ASSERT_EQ(list.allocate(kHole, 16), kBase);
  const uintptr_t fence = *list.allocate(16, 16);
  ASSERT_EQ(fence, kBase + kHole);
  EXPECT_EQ(list.allocate(256, 16), fence + 16);  // carved on from the large span
  list.free(kBase, kHole);
  EXPECT_EQ(list.allocate(256, 16), kBase);  // the hole is the smaller of the two
}

// Against an oracle: for requests needing no more than the granule's alignment, allocate must
// return the best fit (the smallest free span that holds the request, the lowest address among
// equals), however the allocations and frees interleave.
TEST(FreeListTest, GranuleAlignedRequestsGetTheBestFit) {
  constexpr size_t kSize = 1 << 18;
  constexpr size_t kGranules = kSize / 16;
  FreeList list(kBase, kSize);
  std::vector<bool> used(kGranules, false);
  std::map<uintptr_t, size_t> live;
  std::mt19937 rng(11);
  auto best_fit = [&](size_t size) -> std::optional<uintptr_t> {
    std::optional<std::pair<size_t, uintptr_t>> best;  // (span size, begin)
    for (size_t g = 0; g < kGranules;) {
      if (used[g]) {
        ++g;
        continue;
      }
      size_t end = g;
      while (end < kGranules && !used[end]) ++end;
      const std::pair<size_t, uintptr_t> span{(end - g) * 16, kBase + g * 16};
      if (span.first >= size && (!best || span < *best)) best = span;
      g = end;
    }
    if (!best) return std::nullopt;
    return best->second;
  };
  for (int i = 0; i < 6000; ++i) {
    // Runs of allocations (what the remembered span serves) between bursts of frees.
    if (live.empty() || rng() % 3 != 0) {
      const size_t size = 16 * (1 + (rng() % 4 == 0 ? rng() % 512 : rng() % 16));
      const std::optional<uintptr_t> expected = best_fit(size);
      const std::optional<uintptr_t> at = list.allocate(size, 16);
      ASSERT_EQ(at, expected) << "request " << i << " of " << size << " bytes";
      if (!at) continue;
      for (size_t g = (*at - kBase) / 16; g < (*at - kBase + size) / 16; ++g) used[g] = true;
      live.emplace(*at, size);
    } else {
      free_one_at_random(list, live, used, rng);
    }
  }
}

TEST(CommitMapTest, TracksUsersAndIdlePages) {
  CommitMap map(256);
  map.acquire(0, 3, 1);
  map.acquire(3, 5, 2);  // page 3 shared
  EXPECT_EQ(map.committed_pages(), 6u);
  EXPECT_EQ(map.idle_pages(), 0u);
  map.release(0, 3);
  EXPECT_EQ(map.idle_pages(), 3u);  // 0..2; page 3 still used
  map.decommitted(1, 2);
  EXPECT_EQ(map.committed_pages(), 4u);
  EXPECT_EQ(map.idle_pages(), 1u);
  EXPECT_FALSE(map.committed(1));
  EXPECT_TRUE(map.committed(0));
  map.acquire(0, 1, 3);  // page 0 was idle and committed; page 1 comes back
  EXPECT_EQ(map.committed_pages(), 5u);
  EXPECT_EQ(map.idle_pages(), 0u);
}

TEST(CommitMapTest, FindsTheIdlePagesABlockCommitted) {
  CommitMap map(64);
  map.acquire(2, 3, 7);  // an older block
  map.release(2, 3);     // now idle, committed by 7
  map.acquire(3, 9, 8);  // reuses page 3, commits 4..9
  map.acquire(6, 6, 9);  // shares page 6
  map.release(3, 9);
  std::vector<std::pair<size_t, size_t>> runs;
  map.for_each_idle_committed_by(
      3, 9, 8, [&](size_t first, size_t count) { runs.emplace_back(first, count); });
  // Page 3 was committed by block 7; page 6 is still used by block 9.
  EXPECT_EQ(runs, (std::vector<std::pair<size_t, size_t>>{{4, 2}, {7, 3}}));
}

TEST(CommitMapTest, LastCommittedBelowSkipsEmptyWords) {
  CommitMap map(1000);
  EXPECT_EQ(map.last_committed_below(0, 1000), CommitMap::kNone);
  map.acquire(5, 5, 1);
  map.acquire(130, 130, 2);
  map.acquire(700, 700, 3);
  EXPECT_EQ(map.last_committed_below(0, 1000), 700u);
  EXPECT_EQ(map.last_committed_below(0, 700), 130u);
  EXPECT_EQ(map.last_committed_below(131, 700), CommitMap::kNone);
  EXPECT_EQ(map.last_committed_below(0, 130), 5u);
  EXPECT_EQ(map.last_committed_below(6, 130), CommitMap::kNone);
  EXPECT_EQ(map.last_committed_below(5, 6), 5u);
  EXPECT_EQ(map.last_committed_below(0, 64), 5u);
}

TEST(NodePoolTest, ReusesFreedNodesOfTheSameSizeClass) {
  NodePool pool;
  void* a = pool.allocate(48, 8);
  void* b = pool.allocate(40, 8);  // same 48-byte class
  EXPECT_NE(a, b);
  EXPECT_EQ(pool.used_bytes(), 96u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 16, 0u);
  pool.deallocate(a, 48, 8);
  EXPECT_EQ(pool.used_bytes(), 48u);
  EXPECT_EQ(pool.allocate(33, 8), a);   // last freed, first reused
  void* other = pool.allocate(64, 16);  // another class: fresh memory
  EXPECT_NE(other, a);
  EXPECT_NE(other, b);
  const size_t reserved = pool.reserved_bytes();
  EXPECT_GT(reserved, 0u);
  pool.deallocate(other, 64, 16);
  pool.deallocate(b, 40, 8);
  pool.deallocate(a, 33, 8);
  EXPECT_EQ(pool.used_bytes(), 0u);
  EXPECT_EQ(pool.reserved_bytes(), reserved);  // kept for reuse until the pool goes
}

TEST(NodePoolTest, LargeAndOverAlignedRequestsPassThrough) {
  NodePool pool;
  void* table = pool.allocate(4096, 8);
  void* aligned = pool.allocate(32, 64);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(aligned) % 64, 0u);
  EXPECT_EQ(pool.used_bytes(), 0u);
  EXPECT_EQ(pool.reserved_bytes(), 0u);
  pool.deallocate(table, 4096, 8);
  pool.deallocate(aligned, 32, 64);
}

TEST(NodePoolTest, BacksStandardContainersThroughManyChunks) {
  NodePool pool;
  {
    std::pmr::set<uint64_t> set(&pool);
    for (uint64_t i = 0; i < 20000; ++i) set.insert(i * 7919 % 20000);
    EXPECT_EQ(set.size(), 20000u);
    EXPECT_GT(pool.reserved_bytes(), size_t{64} << 10);  // more than one chunk
    uint64_t expected = 0;
    for (uint64_t value : set) EXPECT_EQ(value, expected++);
    for (uint64_t i = 0; i < 20000; i += 2) set.erase(i);
    EXPECT_EQ(set.size(), 10000u);
  }
  EXPECT_EQ(pool.used_bytes(), 0u);
}

}  // namespace
}  // namespace codeheap
