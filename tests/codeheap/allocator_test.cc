// Allocation, coalescing, exhaustion, misuse, the block table and owners, through Heap.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "codeheap/heap.h"
#include "tests/codeheap/test_util.h"

namespace codeheap::test {
namespace {

using ::testing::HasSubstr;

const auto kNothingReferenced = [](uintptr_t, uintptr_t) { return false; };

class AllocatorTest : public HeapTest {
 protected:
  void SetUp() override {
    heap_ = make_heap(small_options("allocator"));
    ASSERT_NE(heap_, nullptr);
  }
  Allocation must_allocate(Arena arena, size_t size, size_t alignment = 16,
                           OwnerId owner = kNoOwner) {
    auto a = heap_->allocate(arena, size, alignment, owner);
    EXPECT_TRUE(a) << a.error().message;
    return a ? *a : Allocation{};
  }
  std::unique_ptr<Heap> heap_;
};

TEST_F(AllocatorTest, InvalidArgumentsAreRejectedAndChangeNothing) {
  const HeapStats before = heap_->stats();
  const OwnerId retired = heap_->register_owner("retired");
  heap_->retire_owner(retired);
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  struct Case {
    Arena arena;
    size_t size;
    size_t alignment;
    OwnerId owner;
    const char* message;
  };
  const std::vector<Case> cases = {
      {Arena::kCode, 0, 16, kNoOwner, "at least 1 byte"},
      {Arena::kCode, heap_->options().code_bytes + 1, 16, kNoOwner, "whole code arena"},
      {Arena::kData, size_t{1} << 40, 16, kNoOwner, "whole data arena"},
      {Arena::kCode, SIZE_MAX, 16, kNoOwner, "whole code arena"},
      {Arena::kCode, 64, 0, kNoOwner, "alignment 0"},
      {Arena::kCode, 64, 3, kNoOwner, "alignment 3"},
      {Arena::kCode, 64, 48, kNoOwner, "power of two"},
      {Arena::kCode, 64, page * 2, kNoOwner, "page size"},
      {static_cast<Arena>(7), 64, 16, kNoOwner, "unknown arena"},
      {Arena::kCode, 64, 16, 999, "owner 999"},
      {Arena::kCode, 64, 16, retired, "unknown or retired"},
  };
  for (const Case& c : cases) {
    auto a = heap_->allocate(c.arena, c.size, c.alignment, c.owner);
    ASSERT_FALSE(a) << c.message;
    EXPECT_EQ(a.error().code, ErrorCode::kInvalidArgument) << a.error().message;
    EXPECT_THAT(a.error().message, HasSubstr(c.message));
  }
  const HeapStats after = heap_->stats();
  EXPECT_EQ(without_counters(after).arenas, before.arenas);
  EXPECT_EQ(after.counters.allocation_failures, cases.size());
  EXPECT_EQ(after.counters.allocations, 0u);
}

TEST_F(AllocatorTest, EveryAlignmentUpToThePageIsHonoured) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  for (Arena arena : {Arena::kCode, Arena::kReadOnly, Arena::kData}) {
    for (size_t alignment = 1; alignment <= page; alignment *= 2) {
      for (size_t size : {1, 15, 16, 17, 100, 4097}) {
        const Allocation a = must_allocate(arena, size, alignment);
        EXPECT_EQ(a.address % alignment, 0u) << alignment;
        EXPECT_EQ(a.address % 16, 0u);  // the granule is the minimum
        EXPECT_EQ(a.size, size);
        EXPECT_EQ(a.arena, arena);
      }
    }
  }
}

TEST_F(AllocatorTest, ReleasedNeighboursCoalesceIntoOneBlock) {
  const Allocation a = must_allocate(Arena::kCode, 100);
  const Allocation b = must_allocate(Arena::kCode, 100);
  const Allocation fence = must_allocate(Arena::kCode, 16);
  ASSERT_EQ(b.address, a.address + footprint(100));
  ASSERT_EQ(fence.address, b.address + footprint(100));
  ASSERT_TRUE(heap_->release(b.address));
  ASSERT_TRUE(heap_->release(a.address));
  EXPECT_EQ(heap_->stats().arenas[0].free_blocks, 1u);  // only the tail: both are quarantined
  heap_->reclaim(kNothingReferenced);
  EXPECT_EQ(heap_->stats().arenas[0].free_blocks, 2u);  // a+b merged, and the tail

  const Allocation both = must_allocate(Arena::kCode, 2 * footprint(100));
  EXPECT_EQ(both.address, a.address);
  EXPECT_EQ(heap_->stats().arenas[0].free_blocks, 1u);
}

TEST_F(AllocatorTest, AFreedBlockMergesWithBothNeighbours) {
  std::vector<Allocation> blocks;
  for (int i = 0; i < 4; ++i) blocks.push_back(must_allocate(Arena::kData, 256));
  ASSERT_TRUE(heap_->abandon(blocks[0].address));
  ASSERT_TRUE(heap_->abandon(blocks[2].address));
  EXPECT_EQ(heap_->stats().arenas[2].free_blocks, 3u);
  ASSERT_TRUE(heap_->abandon(blocks[1].address));  // joins [0] and [2]
  EXPECT_EQ(heap_->stats().arenas[2].free_blocks, 2u);
  EXPECT_EQ(must_allocate(Arena::kData, 3 * 256).address, blocks[0].address);
  ASSERT_TRUE(heap_->abandon(blocks[3].address));
}

TEST_F(AllocatorTest, BestFitFillsTheHoleThatMatches) {
  const Allocation small = must_allocate(Arena::kCode, 1024);
  must_allocate(Arena::kCode, 16);
  const Allocation large = must_allocate(Arena::kCode, 4096);
  must_allocate(Arena::kCode, 16);
  ASSERT_TRUE(heap_->abandon(large.address));
  ASSERT_TRUE(heap_->abandon(small.address));
  EXPECT_EQ(must_allocate(Arena::kCode, 4000).address, large.address);
  EXPECT_EQ(must_allocate(Arena::kCode, 1000).address, small.address);
}

TEST_F(AllocatorTest, ExhaustionNamesTheNumbersAndChangesNothing) {
  HeapOptions options = small_options("tiny");
  options.code_bytes = 64 << 10;
  auto heap = make_heap(options);
  ASSERT_NE(heap, nullptr);
  ASSERT_TRUE(heap->allocate(Arena::kCode, 16 << 10, 16));
  auto second = heap->allocate(Arena::kCode, 16 << 10, 16);
  ASSERT_TRUE(second);
  ASSERT_TRUE(heap->allocate(Arena::kCode, 16 << 10, 16));
  ASSERT_TRUE(heap->abandon(second->address));  // free: 32 KiB, largest 16 KiB

  const HeapStats before = heap->stats();
  auto failed = heap->allocate(Arena::kCode, 20000, 16);
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().code, ErrorCode::kOutOfMemory);
  EXPECT_THAT(failed.error().message, HasSubstr("requested 20000 bytes"));
  EXPECT_THAT(failed.error().message, HasSubstr("free 32768 bytes"));
  EXPECT_THAT(failed.error().message, HasSubstr("largest free block 16384 bytes"));
  EXPECT_THAT(failed.error().message, HasSubstr("code arena"));

  expect_only_a_failure_counted(before, heap->stats());

  // What is free is still allocatable, down to the last byte.
  EXPECT_TRUE(heap->allocate(Arena::kCode, 16 << 10, 16));
  EXPECT_TRUE(heap->allocate(Arena::kCode, 16 << 10, 16));
  auto none = heap->allocate(Arena::kCode, 1, 1);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, ErrorCode::kOutOfMemory);
}

TEST_F(AllocatorTest, AnAlignedRequestThatFitsExactlySucceeds) {
  HeapOptions options = small_options("exact");
  options.code_bytes = 64 << 10;
  auto heap = make_heap(options);
  ASSERT_NE(heap, nullptr);
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  // The whole arena, page-aligned: no slack for a worst-case padding, but none is needed.
  auto all = heap->allocate(Arena::kCode, 64 << 10, page);
  ASSERT_TRUE(all) << all.error().message;
  ASSERT_TRUE(heap->abandon(all->address));
  // Page-sized holes that cannot hold an aligned page come first in size order; the one span
  // that can ([begin, begin + page + 16), page-aligned) is found after them.
  const uintptr_t pad = heap->allocate(Arena::kCode, 16, 16)->address;
  std::vector<uintptr_t> blocks;
  for (int i = 0; i < 15; ++i) blocks.push_back(heap->allocate(Arena::kCode, page, 16)->address);
  ASSERT_TRUE(heap->abandon(pad));
  ASSERT_TRUE(heap->abandon(blocks[0]));
  for (int i = 2; i <= 12; i += 2) ASSERT_TRUE(heap->abandon(blocks[i]));
  auto aligned = heap->allocate(Arena::kCode, page, page);
  ASSERT_TRUE(aligned) << aligned.error().message;
  EXPECT_EQ(aligned->address, pad);
  EXPECT_EQ(aligned->address % page, 0u);
  auto none = heap->allocate(Arena::kCode, page, page);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, ErrorCode::kOutOfMemory);
}

TEST_F(AllocatorTest, DoubleReleaseIsDetectedReportedAndHarmless) {
  const Allocation a = must_allocate(Arena::kCode, 64);
  const Allocation b = must_allocate(Arena::kCode, 64);
  ASSERT_TRUE(heap_->release(a.address));
  const HeapStats before = heap_->stats();
  LogCapture log;
  for (auto op : {&Heap::release, &Heap::retire, &Heap::abandon}) {
    auto again = (heap_.get()->*op)(a.address);
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().code, ErrorCode::kDoubleRelease);
    EXPECT_THAT(again.error().message, HasSubstr("quarantine"));
  }
  EXPECT_TRUE(log.contains("[warning]")) << ::testing::PrintToString(log.lines());
  EXPECT_TRUE(log.contains("already released"));
  const HeapStats after = heap_->stats();
  EXPECT_EQ(without_counters(after), without_counters(before));
  EXPECT_EQ(after.counters.release_errors, 3u);
  // The free list is intact: the neighbour and the quarantined block go back normally.
  ASSERT_TRUE(heap_->release(b.address));
  EXPECT_EQ(heap_->reclaim(kNothingReferenced).reclaimed_blocks, 2u);
  const HeapStats clean = heap_->stats();
  EXPECT_EQ(clean.arenas[0].free_blocks, 1u);
  EXPECT_EQ(clean.arenas[0].free_bytes, clean.arenas[0].reserved_bytes);
}

TEST_F(AllocatorTest, ForeignAndInteriorAddressesAreDetected) {
  const Allocation a = must_allocate(Arena::kCode, 64);
  const Allocation q = must_allocate(Arena::kData, 64);
  ASSERT_TRUE(heap_->release(q.address));
  const HeapStats before = heap_->stats();
  LogCapture log;
  const uintptr_t free_memory = before.arenas[1].begin + 4096;
  const int probe = 0;
  for (uintptr_t address :
       {uintptr_t{0}, uintptr_t{0x1234}, reinterpret_cast<uintptr_t>(&probe), a.address + 16,
        a.address + 1, q.address + 32, free_memory, before.arenas[2].end}) {
    for (auto op : {&Heap::release, &Heap::retire, &Heap::abandon}) {
      auto r = (heap_.get()->*op)(address);
      ASSERT_FALSE(r) << std::hex << address;
      EXPECT_EQ(r.error().code, ErrorCode::kForeignAddress) << r.error().message;
    }
  }
  EXPECT_TRUE(log.contains("interior address of the live block"));
  EXPECT_TRUE(log.contains("interior address of the quarantined block"));
  EXPECT_TRUE(log.contains("not an address of heap 'allocator'"));
  EXPECT_TRUE(log.contains("free memory of the read_only arena"));
  const HeapStats after = heap_->stats();
  EXPECT_EQ(without_counters(after), without_counters(before));
  EXPECT_EQ(after.counters.release_errors, 24u);
  // Still a working heap: the whole free space can be taken in one piece.
  auto rest = heap_->allocate(Arena::kCode, after.arenas[0].largest_free_block, 16);
  ASSERT_TRUE(rest) << rest.error().message;
  EXPECT_EQ(rest->address, a.address + footprint(64));
  EXPECT_TRUE(heap_->release(a.address));
}

TEST_F(AllocatorTest, FindMapsInteriorAddressesToTheirBlock) {
  const OwnerId owner = heap_->register_owner("finder");
  const Allocation before = must_allocate(Arena::kCode, 40);
  const Allocation a = must_allocate(Arena::kCode, 1000, 64, owner);
  for (size_t offset = 0; offset < footprint(1000); offset += 7) {
    auto info = heap_->find(a.address + offset);
    ASSERT_TRUE(info) << offset;
    EXPECT_EQ(info->address, a.address);
    EXPECT_EQ(info->size, 1000u);
    EXPECT_EQ(info->arena, Arena::kCode);
    EXPECT_EQ(info->state, BlockState::kLive);
    EXPECT_EQ(info->owner, owner);
  }
  EXPECT_FALSE(heap_->find(a.address + footprint(1000)));  // free tail
  EXPECT_FALSE(heap_->find(a.address - 1));                // alignment padding
  EXPECT_EQ(heap_->find(before.address + 39)->address, before.address);
  EXPECT_FALSE(heap_->find(0x1000));

  ASSERT_TRUE(heap_->release(a.address));
  auto quarantined = heap_->find(a.address + 500);
  ASSERT_TRUE(quarantined);
  EXPECT_EQ(quarantined->state, BlockState::kQuarantined);
  heap_->reclaim(kNothingReferenced);
  EXPECT_FALSE(heap_->find(a.address + 500));
}

TEST_F(AllocatorTest, FindReachesBackOverLargeBlocksAndEmptyStretches) {
  // find() looks for the nearest block start at or below an address, a bitmap word (1 KiB of
  // arena) at a time and then through a summary (64 KiB per word): addresses deep inside large
  // blocks, and far above the last block, cross many words of both.
  HeapOptions options = small_options("far");
  options.code_bytes = size_t{32} << 20;
  auto heap = make_heap(options);
  ASSERT_NE(heap, nullptr);
  auto small = heap->allocate(Arena::kCode, 48, 16);
  auto large = heap->allocate(Arena::kCode, size_t{5} << 20, 4096);
  auto after = heap->allocate(Arena::kCode, 100, 16);
  ASSERT_TRUE(small && large && after);
  for (size_t offset :
       {size_t{0}, size_t{1023}, size_t{65536}, size_t{70000}, (size_t{5} << 20) - 1}) {
    auto info = heap->find(large->address + offset);
    ASSERT_TRUE(info) << offset;
    EXPECT_EQ(info->address, large->address) << offset;
  }
  EXPECT_EQ(heap->find(after->address + 99)->address, after->address);
  EXPECT_EQ(heap->find(small->address)->address, small->address);
  // Free space far above every block, and the padding below the page-aligned large block.
  EXPECT_FALSE(heap->find(after->address + (size_t{20} << 20)));
  EXPECT_FALSE(heap->find(heap->stats().arenas[0].end - 1));
  ASSERT_GT(large->address, small->address + footprint(48));  // page-aligned: padding between
  EXPECT_FALSE(heap->find(large->address - 1));
  // Once the large block is gone, its interior belongs to nobody, however far the next start.
  ASSERT_TRUE(heap->release(large->address));
  heap->reclaim(kNothingReferenced);
  EXPECT_FALSE(heap->find(large->address + (size_t{3} << 20)));
  EXPECT_EQ(heap->find(small->address + 47)->address, small->address);
}

TEST_F(AllocatorTest, AbandonedMemoryHoldsTrapsAndIsReusedAtOnce) {
  const Allocation a = must_allocate(Arena::kCode, kReturn42.size());
  const Allocation neighbour = must_allocate(Arena::kCode, 64);  // keeps the page in use
  write_return42(a);
  ASSERT_TRUE(heap_->abandon(a.address));
  EXPECT_TRUE(all_bytes(a.address, footprint(kReturn42.size()), 0xCC));
  EXPECT_EQ(must_allocate(Arena::kCode, 8).address, a.address);
  EXPECT_EQ(heap_->stats().counters.abandons, 1u);
  EXPECT_NE(neighbour.address, a.address);
}

TEST_F(AllocatorTest, AbandonReturnsExactlyThePagesItsAllocationCommitted) {
  // A warm, retained free page below, then a fresh multi-page allocation: abandoning it must
  // restore committed bytes exactly, neither keeping its fresh pages nor dropping the warm one.
  const Allocation warm = must_allocate(Arena::kCode, 64);
  ASSERT_TRUE(heap_->release(warm.address));
  heap_->reclaim(kNothingReferenced);
  const HeapStats before = heap_->stats();
  ASSERT_GT(before.arenas[0].committed_bytes, 0u) << "the warm page should be retained";
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const Allocation big = must_allocate(Arena::kCode, 5 * page);
  std::memset(big.writable, 0x90, big.size);
  EXPECT_GT(heap_->stats().committed_bytes, before.committed_bytes);
  ASSERT_TRUE(heap_->abandon(big.address));
  EXPECT_EQ(without_counters(heap_->stats()), without_counters(before));
}

TEST_F(AllocatorTest, OwnersAccountForTheirBlocks) {
  const OwnerId fib = heap_->register_owner("lisp:fib");
  const OwnerId cells = heap_->register_owner("entry cells");
  EXPECT_NE(fib, kNoOwner);
  EXPECT_NE(fib, cells);
  const Allocation code = must_allocate(Arena::kCode, 100, 16, fib);
  const Allocation rodata = must_allocate(Arena::kReadOnly, 30, 16, fib);
  must_allocate(Arena::kCode, 10);  // no owner

  HeapStats stats = heap_->stats();
  ASSERT_EQ(stats.owners.size(), 2u);
  const OwnerStats& f = stats.owners[0];
  EXPECT_EQ(f.id, fib);
  EXPECT_EQ(f.name, "lisp:fib");
  EXPECT_FALSE(f.retired);
  EXPECT_EQ(f.live_blocks, 2u);
  EXPECT_EQ(f.live_bytes, footprint(100) + footprint(30));
  EXPECT_EQ(f.low, code.address);
  EXPECT_EQ(f.high, rodata.address + 30);
  EXPECT_EQ(stats.owners[1].live_blocks, 0u);
  EXPECT_EQ(stats.owners[1].low, 0u);

  heap_->retire_owner(fib);
  heap_->retire_owner(cells);  // nothing left: gone at once
  ASSERT_TRUE(heap_->release(code.address));
  stats = heap_->stats();
  ASSERT_EQ(stats.owners.size(), 1u);
  EXPECT_TRUE(stats.owners[0].retired);
  EXPECT_EQ(stats.owners[0].live_blocks, 1u);
  EXPECT_EQ(stats.owners[0].quarantined_blocks, 1u);
  EXPECT_EQ(stats.owners[0].quarantined_bytes, footprint(100));
  EXPECT_THAT(heap_->dump_text(), HasSubstr("lisp:fib"));

  ASSERT_TRUE(heap_->abandon(rodata.address));
  heap_->reclaim(kNothingReferenced);
  EXPECT_TRUE(heap_->stats().owners.empty());  // its last block has left quarantine

  LogCapture log;
  heap_->retire_owner(fib);
  EXPECT_TRUE(log.contains("no such owner"));
}

}  // namespace
}  // namespace codeheap::test
