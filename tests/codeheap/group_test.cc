// Heap::allocate_group and Heap::end_group: one module's blocks in one call each, ended by owner
// alone whatever their number and however they were allocated.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <vector>

#include "codeheap/heap.h"
#include "tests/codeheap/test_util.h"

namespace codeheap::test {
namespace {

using ::testing::HasSubstr;

const auto kNothingReferenced = [](uintptr_t, uintptr_t) { return false; };

// A module's shape: code, constants and data.
constexpr std::array<BlockRequest, 3> kModule = {{
    {.arena = Arena::kCode, .size = 300, .alignment = 64},
    {.arena = Arena::kReadOnly, .size = 40, .alignment = 16},
    {.arena = Arena::kData, .size = 24, .alignment = 8},
}};

class GroupTest : public HeapTest {
 protected:
  void SetUp() override {
    heap_ = make_heap(small_options("group"));
    ASSERT_NE(heap_, nullptr);
  }

  // Allocates kModule as `name` and writes a pattern through every block's writable alias.
  OwnerId must_allocate_module(const char* name, std::array<Allocation, 3>& blocks) {
    auto owner = heap_->allocate_group(name, kModule, blocks);
    EXPECT_TRUE(owner) << owner.error().message;
    if (!owner) return kNoOwner;
    for (const Allocation& block : blocks) std::memset(block.writable, 0x5A, block.size);
    return *owner;
  }

  // A released group: every byte traps at once, and one pass frees it and its owner.
  void expect_released_at_once(const std::array<Allocation, 3>& blocks) {
    for (const Allocation& block : blocks) {
      EXPECT_TRUE(all_bytes(block.address, footprint(block.size), 0xCC));
    }
    EXPECT_EQ(heap_->stats().counters.releases, 3u);
    EXPECT_EQ(heap_->reclaim(kNothingReferenced).reclaimed_blocks, 3u);
    EXPECT_TRUE(heap_->stats().owners.empty());
  }

  std::unique_ptr<Heap> heap_;
};

TEST_F(GroupTest, AllocatesEveryRequestForANewNamedOwner) {
  std::array<Allocation, 3> blocks;
  const OwnerId owner = must_allocate_module("lisp:module", blocks);
  ASSERT_NE(owner, kNoOwner);
  for (size_t i = 0; i < kModule.size(); ++i) {
    EXPECT_EQ(blocks[i].arena, kModule[i].arena);
    EXPECT_EQ(blocks[i].size, kModule[i].size);
    EXPECT_EQ(blocks[i].address % kModule[i].alignment, 0u);
    const auto info = heap_->find(blocks[i].address + blocks[i].size - 1);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->address, blocks[i].address);
    EXPECT_EQ(info->owner, owner);
    EXPECT_EQ(info->state, BlockState::kLive);
  }
  const HeapStats stats = heap_->stats();
  ASSERT_EQ(stats.owners.size(), 1u);
  EXPECT_EQ(stats.owners[0].name, "lisp:module");
  EXPECT_EQ(stats.owners[0].live_blocks, 3u);
  EXPECT_EQ(stats.counters.allocations, 3u);
}

TEST_F(GroupTest, AFailedGroupLeavesNoTraceButTheFailure) {
  std::array<Allocation, 3> first;
  must_allocate_module("resident", first);  // so the failed group has neighbours
  const HeapStats before = heap_->stats();

  // The third request cannot fit: the first two must be undone, pages and owner included.
  std::array<BlockRequest, 3> too_big = kModule;
  too_big[2].size = heap_->options().data_bytes;  // the whole arena; part of it is in use
  std::array<Allocation, 3> blocks;
  auto failed = heap_->allocate_group("doomed", too_big, blocks);
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().code, ErrorCode::kOutOfMemory);
  EXPECT_THAT(failed.error().message, HasSubstr("request 3 of 3"));
  EXPECT_THAT(failed.error().message, HasSubstr("data arena"));

  expect_only_a_failure_counted(before, heap_->stats());
  EXPECT_THAT(heap_->dump_text(), ::testing::Not(HasSubstr("doomed")));

  // A bad request is refused the same way.
  std::array<BlockRequest, 2> misaligned = {kModule[0], kModule[1]};
  misaligned[1].alignment = 24;
  std::array<Allocation, 2> two;
  auto refused = heap_->allocate_group("misaligned", misaligned, two);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kInvalidArgument);
  EXPECT_THAT(refused.error().message, HasSubstr("request 2 of 2"));
  EXPECT_EQ(without_counters(heap_->stats()), without_counters(before));
}

TEST_F(GroupTest, TheOutputMustHoldOneBlockPerRequest) {
  std::array<Allocation, 2> blocks;
  auto refused = heap_->allocate_group("short", kModule, blocks);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kInvalidArgument);
  EXPECT_TRUE(heap_->stats().owners.empty());
}

// An owner chosen before its blocks (a module's, before its link) takes a group as a new one.
TEST_F(GroupTest, AGroupJoinsAnOwnerRegisteredBefore) {
  const OwnerId owner = heap_->register_owner("chosen first");
  std::array<Allocation, 3> blocks;
  ASSERT_TRUE(heap_->allocate_group(owner, kModule, blocks));
  for (const Allocation& block : blocks) EXPECT_EQ(heap_->find(block.address)->owner, owner);
  HeapStats stats = heap_->stats();
  ASSERT_EQ(stats.owners.size(), 1u);
  EXPECT_EQ(stats.owners[0].live_blocks, 3u);

  // A failure leaves the owner, and the blocks it has, as they were.
  std::array<BlockRequest, 2> too_big = {kModule[0], kModule[2]};
  too_big[1].size = heap_->options().data_bytes;
  std::array<Allocation, 2> more;
  const HeapStats before = heap_->stats();
  auto failed = heap_->allocate_group(owner, too_big, more);
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().code, ErrorCode::kOutOfMemory);
  expect_only_a_failure_counted(before, heap_->stats());

  ASSERT_TRUE(heap_->end_group(owner, Exit::kRetire));
  EXPECT_EQ(heap_->stats().counters.retires, 3u);
  // Retired: no more blocks for it, nor for an owner never registered.
  for (OwnerId bad : {owner, OwnerId{12345}}) {
    auto refused = heap_->allocate_group(bad, kModule, blocks);
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().code, ErrorCode::kInvalidArgument);
    EXPECT_THAT(refused.error().message, HasSubstr("unknown or retired"));
  }
}

TEST_F(GroupTest, RetiringAGroupKeepsTheBytesUntilReclaimThenRunsOnGone) {
  std::array<Allocation, 3> blocks;
  const OwnerId owner = must_allocate_module("retired", blocks);
  std::array<Allocation, 3> other;
  must_allocate_module("other", other);
  int gone = 0;
  ASSERT_TRUE(heap_->end_group(owner, Exit::kRetire, [&] {
    // Before the blocks are freed: the code is still intact.
    EXPECT_EQ(*reinterpret_cast<const uint8_t*>(blocks[0].address), 0x5A);
    ++gone;
  }));
  for (const Allocation& block : blocks) {
    const auto info = heap_->find(block.address);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->state, BlockState::kQuarantined);
    EXPECT_EQ(*reinterpret_cast<const uint8_t*>(block.address), 0x5A);  // intact
  }
  for (const Allocation& block : other) {
    EXPECT_EQ(heap_->find(block.address)->state, BlockState::kLive);
  }
  HeapStats stats = heap_->stats();
  ASSERT_EQ(stats.owners.size(), 2u);
  EXPECT_TRUE(stats.owners[0].retired);
  EXPECT_FALSE(stats.owners[1].retired);
  EXPECT_EQ(stats.counters.retires, 3u);

  // Still referenced: nothing happens.
  heap_->reclaim([&](uintptr_t begin, uintptr_t) { return begin == blocks[1].address; });
  EXPECT_EQ(gone, 0);
  EXPECT_TRUE(heap_->find(blocks[0].address));

  const ReclaimReport report = heap_->reclaim(kNothingReferenced);
  EXPECT_EQ(report.reclaimed_blocks, 3u);
  EXPECT_EQ(gone, 1);
  EXPECT_EQ(heap_->stats().owners.size(), 1u);
  EXPECT_EQ(*reinterpret_cast<const uint8_t*>(blocks[0].address), 0xCC);  // free code traps
}

TEST_F(GroupTest, ReleasingAGroupTrapsAtOnce) {
  std::array<Allocation, 3> blocks;
  const OwnerId owner = must_allocate_module("released", blocks);
  ASSERT_TRUE(heap_->end_group(owner, Exit::kRelease));
  expect_released_at_once(blocks);
}

// A link that failed: its blocks go back at once, pages included, and the owner with them.
TEST_F(GroupTest, AbandoningAGroupLeavesTheHeapAsBeforeIt) {
  std::array<Allocation, 3> first;
  must_allocate_module("resident", first);
  const HeapStats before = heap_->stats();
  std::array<Allocation, 3> blocks;
  const OwnerId owner = must_allocate_module("never ran", blocks);
  int gone = 0;
  ASSERT_TRUE(heap_->end_group(owner, Exit::kAbandon, [&] { ++gone; }));
  EXPECT_EQ(gone, 1);  // no block left to wait for
  for (const Allocation& block : blocks) EXPECT_FALSE(heap_->find(block.address));
  HeapStats after = heap_->stats();
  EXPECT_EQ(after.counters.abandons, 3u);
  EXPECT_EQ(without_counters(after), without_counters(before));
}

// An owner's blocks allocated one by one (RuntimeDyld places sections so) end the same way.
TEST_F(GroupTest, BlocksAllocatedOneByOneEndWithTheirOwner) {
  const OwnerId owner = heap_->register_owner("one by one");
  std::vector<uintptr_t> mine;
  for (const BlockRequest& r : kModule) {
    auto block = heap_->allocate(r.arena, r.size, r.alignment, owner);
    ASSERT_TRUE(block) << block.error().message;
    mine.push_back(block->address);
  }
  auto unowned = heap_->allocate(Arena::kCode, 64, 16);
  ASSERT_TRUE(unowned);
  ASSERT_TRUE(heap_->end_group(owner, Exit::kRetire));
  for (uintptr_t address : mine) {
    EXPECT_EQ(heap_->find(address)->state, BlockState::kQuarantined);
  }
  EXPECT_EQ(heap_->find(unowned->address)->state, BlockState::kLive);
  EXPECT_EQ(heap_->stats().counters.retires, 3u);
  EXPECT_EQ(heap_->reclaim(kNothingReferenced).reclaimed_blocks, 3u);
  EXPECT_TRUE(heap_->stats().owners.empty());
}

TEST_F(GroupTest, AnOwnerWithoutBlocksJustRetires) {
  const OwnerId owner = heap_->register_owner("empty");
  int gone = 0;
  ASSERT_TRUE(heap_->end_group(owner, Exit::kRetire, [&] { ++gone; }));
  EXPECT_EQ(gone, 1);
  EXPECT_TRUE(heap_->stats().owners.empty());
  EXPECT_EQ(heap_->stats().counters.retires, 0u);
}

// Blocks that left the group on their own (abandoned, retired, released) are not retired again,
// and the reclaimed ones are not touched: the group forgets a block when it stops being live.
TEST_F(GroupTest, EndingAGroupSkipsBlocksThatLeftOnTheirOwn) {
  std::array<Allocation, 3> blocks;
  const OwnerId owner = must_allocate_module("partly gone", blocks);
  ASSERT_TRUE(heap_->abandon(blocks[1].address));
  ASSERT_TRUE(heap_->release(blocks[2].address));
  ASSERT_EQ(heap_->reclaim(kNothingReferenced).reclaimed_blocks, 1u);  // blocks[2]
  // Something else now lives where the released block was.
  auto reuse = heap_->allocate(Arena::kData, kModule[2].size, kModule[2].alignment);
  ASSERT_TRUE(reuse);

  const HeapStats before = heap_->stats();
  ASSERT_TRUE(heap_->end_group(owner, Exit::kRetire));
  EXPECT_EQ(heap_->find(blocks[0].address)->state, BlockState::kQuarantined);
  EXPECT_EQ(heap_->find(reuse->address)->state, BlockState::kLive);
  EXPECT_EQ(heap_->find(reuse->address)->owner, kNoOwner);
  const HeapStats after = heap_->stats();
  EXPECT_EQ(after.counters.retires, before.counters.retires + 1);
  EXPECT_EQ(after.counters.release_errors, 0u);
}

TEST_F(GroupTest, EndingAGroupRefusesAnUnknownOrRetiredOwner) {
  std::array<Allocation, 3> blocks;
  const OwnerId owner = must_allocate_module("twice", blocks);
  ASSERT_TRUE(heap_->end_group(owner, Exit::kRetire));
  const HeapStats before = heap_->stats();
  LogCapture log;
  for (OwnerId bad : {owner, OwnerId{12345}, kNoOwner}) {
    for (Exit exit : {Exit::kRetire, Exit::kRelease, Exit::kAbandon}) {
      bool ran = false;
      auto result = heap_->end_group(bad, exit, [&] { ran = true; });
      ASSERT_FALSE(result);
      EXPECT_EQ(result.error().code, ErrorCode::kInvalidArgument);
      EXPECT_THAT(result.error().message, HasSubstr("no such owner, or retired already"));
      EXPECT_FALSE(ran);  // dropped
    }
  }
  EXPECT_TRUE(log.contains("no such owner"));
  HeapStats after = heap_->stats();
  EXPECT_EQ(after.counters.release_errors, before.counters.release_errors + 9);
  after.counters.release_errors = before.counters.release_errors;
  EXPECT_EQ(after, before);
}

// Groups have no size limit: a hundred blocks, some released on their own in between (each
// leaves a hole in the list that the last one fills), more added one by one, all end by owner.
TEST_F(GroupTest, AGroupOfAnySizeEndsByOwner) {
  std::vector<BlockRequest> requests(
      100, BlockRequest{.arena = Arena::kData, .size = 32, .alignment = 16});
  std::vector<Allocation> blocks(requests.size());
  auto owner = heap_->allocate_group("large", requests, blocks);
  ASSERT_TRUE(owner) << owner.error().message;
  size_t ended = 0;
  for (size_t i = 0; i < blocks.size(); i += 7, ++ended) {
    ASSERT_TRUE(heap_->release(blocks[i].address));
  }
  std::vector<uintptr_t> later;
  for (int i = 0; i < 20; ++i) {
    auto block = heap_->allocate(Arena::kCode, 48, 16, *owner);
    ASSERT_TRUE(block);
    later.push_back(block->address);
  }
  const size_t live = blocks.size() - ended + later.size();
  ASSERT_EQ(heap_->stats().owners[0].live_blocks, live);
  ASSERT_TRUE(heap_->end_group(*owner, Exit::kRetire));
  const HeapStats stats = heap_->stats();
  EXPECT_EQ(stats.counters.retires, live);
  EXPECT_EQ(stats.owners[0].live_blocks, 0u);
  EXPECT_EQ(stats.owners[0].quarantined_blocks, blocks.size() + later.size());
  for (const Allocation& block : blocks) {
    EXPECT_EQ(heap_->find(block.address)->state, BlockState::kQuarantined);
  }
  for (uintptr_t address : later) {
    EXPECT_EQ(heap_->find(address)->state, BlockState::kQuarantined);
  }
  EXPECT_EQ(heap_->reclaim(kNothingReferenced).reclaimed_blocks, blocks.size() + later.size());
  EXPECT_TRUE(heap_->stats().owners.empty());
}

// A failed group leaves nothing behind, not even blocks the owner's record could point at.
TEST_F(GroupTest, AFailedGroupCannotBeEnded) {
  std::array<BlockRequest, 2> requests = {{
      {.arena = Arena::kCode, .size = 64, .alignment = 16},
      {.arena = Arena::kData, .size = size_t{1} << 40, .alignment = 16},
  }};
  std::array<Allocation, 2> blocks;
  auto failed = heap_->allocate_group("fails", requests, blocks);
  ASSERT_FALSE(failed);
  // Owner ids are handed out in order: the failed group's would have been the first.
  auto result = heap_->end_group(OwnerId{1}, Exit::kRetire);
  ASSERT_FALSE(result);
  EXPECT_THAT(result.error().message, HasSubstr("no such owner"));
}

}  // namespace
}  // namespace codeheap::test
