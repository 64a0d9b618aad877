// Reclaim with a ReferenceScanner (one call per pass, sorted footprints, inside run_pass), and
// automatic reclamation under a ReclaimPolicy: when the quarantine grows past its threshold and
// when an allocation finds no room.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <set>
#include <vector>

#include "codeheap/heap.h"
#include "tests/codeheap/test_util.h"

namespace codeheap::test {
namespace {

// Records what each pass handed over, and marks the ranges whose begin is in `keep`.
class RecordingScanner final : public ReferenceScanner {
 public:
  ScanReport scan(std::span<const AddressRange> ranges, std::span<uint8_t> referenced) override {
    EXPECT_TRUE(in_pass_) << "scan outside run_pass";
    ++scans;
    last.assign(ranges.begin(), ranges.end());
    EXPECT_EQ(referenced.size(), ranges.size());
    for (size_t i = 0; i < ranges.size(); ++i) {
      EXPECT_EQ(referenced[i], 0) << "comes zeroed";
      referenced[i] = keep_all || keep.count(ranges[i].begin) ? 1 : 0;
    }
    ScanReport report;
    report.threads_scanned = 3;
    report.stack_words_scanned = 100;
    return report;
  }
  void run_pass(const std::function<void()>& pass) override {
    ++passes;
    in_pass_ = true;
    pass();
    in_pass_ = false;
  }

  int passes = 0;
  int scans = 0;
  std::vector<AddressRange> last;
  std::set<uintptr_t> keep;
  bool keep_all = false;

 private:
  bool in_pass_ = false;
};

class ReclaimTest : public HeapTest {
 protected:
  void SetUp() override {
    HeapOptions options = small_options("reclaim");
    options.code_bytes = 64 << 10;
    heap_ = make_heap(options);
    ASSERT_NE(heap_, nullptr);
  }
  size_t quarantined() const { return heap_->stats().quarantined_bytes; }

  std::unique_ptr<Heap> heap_;
  RecordingScanner scanner_;
};

TEST_F(ReclaimTest, TheScannerGetsEverySortedFootprintOnceAndKeepsWhatItMarks) {
  std::vector<Allocation> blocks;
  for (size_t size : {1, 17, 100, 4096}) blocks.push_back(*heap_->allocate(Arena::kCode, size, 16));
  blocks.push_back(*heap_->allocate(Arena::kReadOnly, 40, 16));
  for (auto it = blocks.rbegin(); it != blocks.rend(); ++it)
    ASSERT_TRUE(heap_->retire(it->address));
  scanner_.keep = {blocks[1].address};
  const uint64_t passes_before = heap_->counters().reclaim_passes.count;

  const ReclaimReport report = heap_->reclaim(scanner_);
  EXPECT_EQ(scanner_.passes, 1);
  EXPECT_EQ(scanner_.scans, 1);
  ASSERT_EQ(scanner_.last.size(), blocks.size());
  for (size_t i = 0; i < blocks.size(); ++i) {
    EXPECT_EQ(scanner_.last[i].begin, blocks[i].address);
    EXPECT_EQ(scanner_.last[i].end, blocks[i].address + footprint(blocks[i].size));
  }
  EXPECT_EQ(report.examined_blocks, blocks.size());
  EXPECT_EQ(report.reclaimed_blocks, blocks.size() - 1);
  EXPECT_EQ(report.still_referenced_blocks, 1u);
  EXPECT_EQ(report.scan.threads_scanned, 3u);
  EXPECT_EQ(report.scan.stack_words_scanned, 100u);
  EXPECT_EQ(heap_->counters().reclaim_passes.count, passes_before + 1);
  EXPECT_EQ(heap_->counters().automatic_reclaim_passes, 0u);
  ASSERT_TRUE(heap_->find(blocks[1].address).has_value());
  EXPECT_EQ(heap_->find(blocks[1].address)->state, BlockState::kQuarantined);
  EXPECT_FALSE(heap_->find(blocks[0].address).has_value());
  // Retired code is trap-filled once it is free.
  EXPECT_TRUE(all_bytes(blocks[0].address, footprint(blocks[0].size), 0xCC));

  // An empty quarantine is not scanned, but the pass counts (it trims).
  scanner_.keep.clear();
  heap_->reclaim(scanner_);
  EXPECT_EQ(scanner_.scans, 2);
  heap_->reclaim(scanner_);
  EXPECT_EQ(scanner_.passes, 3);
  EXPECT_EQ(scanner_.scans, 2);
  EXPECT_EQ(heap_->counters().reclaim_passes.count, passes_before + 3);
}

// While an on_gone callback runs (heap unlocked), the bytes the pass already freed are on the
// free list: the arena adds up (the stats check it) and an allocation can use them.
TEST_F(ReclaimTest, BytesFreedBeforeTheCallbacksAreFreeWhileTheyRun) {
  const BlockRequest request{Arena::kCode, 64, 16};
  Allocation plain, with_callback;
  auto first = heap_->allocate_group("plain", {&request, 1}, {&plain, 1});
  auto second = heap_->allocate_group("with-callback", {&request, 1}, {&with_callback, 1});
  ASSERT_TRUE(first && second);
  const size_t free_before = heap_->stats().arenas[static_cast<int>(Arena::kCode)].free_bytes;
  ASSERT_TRUE(heap_->end_group(*first, Exit::kRetire));
  size_t free_inside = 0;
  bool ran = false;
  ASSERT_TRUE(heap_->end_group(*second, Exit::kRetire, [&] {
    ran = true;
    free_inside = heap_->stats().arenas[static_cast<int>(Arena::kCode)].free_bytes;
  }));
  heap_->reclaim([](uintptr_t, uintptr_t) { return false; });
  ASSERT_TRUE(ran);
  EXPECT_EQ(free_inside, free_before + footprint(plain.size));
  EXPECT_EQ(heap_->stats().arenas[static_cast<int>(Arena::kCode)].free_bytes,
            free_before + 2 * footprint(plain.size));
}

TEST_F(ReclaimTest, NoPolicyNoAutomaticPass) {
  for (int i = 0; i < 64; ++i) {
    auto block = heap_->allocate(Arena::kCode, 1024, 16);
    ASSERT_TRUE(block);
    ASSERT_TRUE(heap_->retire(block->address));
  }
  auto full = heap_->allocate(Arena::kCode, 1024, 16);
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code, ErrorCode::kOutOfMemory);
  EXPECT_EQ(heap_->counters().reclaim_passes.count, 0u);
  EXPECT_EQ(heap_->counters().allocation_failures, 1u);
}

TEST_F(ReclaimTest, APolicyReclaimsEachTimeTheQuarantineGrowsByItsThreshold) {
  heap_->set_reclaim_policy({.scanner = &scanner_, .quarantined_bytes = 4096});
  std::vector<uintptr_t> first;
  for (int i = 0; i < 3; ++i) {
    auto block = heap_->allocate(Arena::kCode, 1024, 16);
    ASSERT_TRUE(block);
    first.push_back(block->address);
    ASSERT_TRUE(heap_->retire(block->address));
  }
  EXPECT_EQ(scanner_.passes, 0);
  EXPECT_EQ(quarantined(), 3072u);
  auto fourth = heap_->allocate(Arena::kCode, 1024, 16);
  ASSERT_TRUE(heap_->release(fourth->address));  // 4 KiB: a pass, on this thread
  EXPECT_EQ(scanner_.passes, 1);
  EXPECT_EQ(quarantined(), 0u);
  EXPECT_EQ(heap_->counters().automatic_reclaim_passes, 1u);
  EXPECT_EQ(heap_->counters().reclaim_passes.count, 1u);
  // The freed blocks are reused.
  auto again = heap_->allocate(Arena::kCode, 1024, 16);
  ASSERT_TRUE(again);
  EXPECT_NE(std::find(first.begin(), first.end(), again->address), first.end());
  ASSERT_TRUE(heap_->retire(again->address));

  // Blocks a pass keeps do not make every later retire scan again: the next pass waits until
  // the quarantine has grown by the threshold past what the last pass left.
  scanner_.keep_all = true;
  for (int i = 0; i < 3; ++i) {
    auto block = heap_->allocate(Arena::kCode, 1024, 16);
    ASSERT_TRUE(heap_->retire(block->address));
  }
  EXPECT_EQ(scanner_.passes, 2);  // at 4 KiB, all kept
  EXPECT_EQ(quarantined(), 4096u);
  for (int i = 0; i < 3; ++i) {
    auto block = heap_->allocate(Arena::kCode, 1024, 16);
    ASSERT_TRUE(heap_->retire(block->address));
  }
  EXPECT_EQ(scanner_.passes, 2);
  auto eighth = heap_->allocate(Arena::kCode, 1024, 16);
  ASSERT_TRUE(heap_->retire(eighth->address));
  EXPECT_EQ(scanner_.passes, 3);

  // Turned off: no more passes.
  heap_->set_reclaim_policy({});
  for (int i = 0; i < 8; ++i) {
    auto block = heap_->allocate(Arena::kCode, 1024, 16);
    ASSERT_TRUE(heap_->retire(block->address));
  }
  EXPECT_EQ(scanner_.passes, 3);
}

TEST_F(ReclaimTest, AnAllocationThatFindsNoRoomReclaimsAndRetriesOnce) {
  // Threshold 0: passes only when an allocation fails.
  heap_->set_reclaim_policy({.scanner = &scanner_, .quarantined_bytes = 0});
  std::vector<uintptr_t> retired;
  for (int i = 0; i < 64; ++i) {
    auto block = heap_->allocate(Arena::kCode, 1024, 16);
    ASSERT_TRUE(block);
    retired.push_back(block->address);
    ASSERT_TRUE(heap_->retire(block->address));
  }
  EXPECT_EQ(scanner_.passes, 0);
  auto block = heap_->allocate(Arena::kCode, 1024, 16);
  ASSERT_TRUE(block) << block.error().message;
  EXPECT_EQ(scanner_.passes, 1);
  EXPECT_EQ(heap_->counters().allocation_failures, 0u);
  EXPECT_EQ(heap_->counters().automatic_reclaim_passes, 1u);

  // A group too: its owner and blocks come out as if the first attempt never happened.
  for (int i = 0; i < 63; ++i) {
    auto more = heap_->allocate(Arena::kCode, 1024, 16);
    ASSERT_TRUE(more);
    ASSERT_TRUE(heap_->retire(more->address));
  }
  const BlockRequest requests[] = {{Arena::kCode, 1024, 16}, {Arena::kData, 64, 16}};
  Allocation out[2];
  auto group = heap_->allocate_group("module", requests, out);
  ASSERT_TRUE(group) << group.error().message;
  EXPECT_EQ(scanner_.passes, 2);
  const HeapStats after_group = heap_->stats();
  ASSERT_EQ(after_group.owners.size(), 1u);
  EXPECT_EQ(after_group.owners[0].name, "module");
  EXPECT_EQ(after_group.owners[0].live_blocks, 2u);

  // Nothing to reclaim (every block kept): one pass, then the error, with the heap as it was
  // but for the failure and the pass.
  ASSERT_TRUE(heap_->end_group(*group, Exit::kRetire));
  for (int i = 0; i < 62; ++i) {
    auto more = heap_->allocate(Arena::kCode, 1024, 16);
    ASSERT_TRUE(more);
    ASSERT_TRUE(heap_->retire(more->address));
  }
  scanner_.keep_all = true;
  HeapStats before = heap_->stats();
  auto refused = heap_->allocate_group("too-much", requests, out);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::kOutOfMemory);
  EXPECT_EQ(scanner_.passes, 3);
  HeapStats now = heap_->stats();
  EXPECT_EQ(now.counters.allocation_failures, before.counters.allocation_failures + 1);
  EXPECT_EQ(now.counters.reclaim_passes.count, before.counters.reclaim_passes.count + 1);
  now.counters = before.counters = {};
  EXPECT_EQ(now, before);
  auto single = heap_->allocate(Arena::kCode, 1024, 16);
  ASSERT_FALSE(single);
  EXPECT_EQ(scanner_.passes, 4);
  EXPECT_EQ(heap_->counters().allocation_failures, 2u);
  // A request larger than the arena is no reason to reclaim.
  auto huge = heap_->allocate(Arena::kCode, 1 << 20, 16);
  ASSERT_FALSE(huge);
  EXPECT_EQ(scanner_.passes, 4);
}

}  // namespace
}  // namespace codeheap::test
