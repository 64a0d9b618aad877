// Heap::describe and Heap::add_symbols: the lock-free pc -> block, owner and function lookup
// a crash handler uses (codeheap/fault_map.h).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "codeheap/heap.h"
#include "tests/codeheap/test_util.h"

namespace codeheap::test {
namespace {

using ::testing::StrEq;
using State = AddressInfo::State;

const auto kNothingReferenced = [](uintptr_t, uintptr_t) { return false; };

class DescribeTest : public HeapTest {
 protected:
  AddressInfo describe(uintptr_t address) {
    AddressInfo info;
    EXPECT_TRUE(heap_->describe(address, info)) << std::hex << address;
    EXPECT_TRUE(info.consistent);
    return info;
  }

  // One code block of `size` bytes for a new owner `name`.
  Allocation allocate(const char* name, size_t size) {
    const std::array<BlockRequest, 1> request = {{{.arena = Arena::kCode, .size = size}}};
    std::array<Allocation, 1> block;
    auto owner = heap_->allocate_group(name, request, block);
    EXPECT_TRUE(owner) << owner.error().message;
    return block[0];
  }

  std::unique_ptr<Heap> heap_ = make_heap(small_options("describe"));  // fails the test if null
};

TEST_F(DescribeTest, AddressesOutsideTheHeapFreeMemoryAndDataNameNoBlock) {
  AddressInfo info;
  EXPECT_FALSE(heap_->describe(reinterpret_cast<uintptr_t>(&info), info));
  EXPECT_EQ(info.state, State::kOutside);

  const HeapStats stats = heap_->stats();
  const AddressInfo free = describe(stats.arenas[0].begin + 100);
  EXPECT_EQ(free.state, State::kFree);
  EXPECT_EQ(free.arena, Arena::kCode);
  EXPECT_EQ(free.block, 0u);
  EXPECT_FALSE(free.former);

  // Only code blocks are tracked.
  const std::array<BlockRequest, 1> request = {{{.arena = Arena::kReadOnly, .size = 64}}};
  std::array<Allocation, 1> block;
  ASSERT_TRUE(heap_->allocate_group("constants", request, block));
  const AddressInfo data = describe(block[0].address);
  EXPECT_EQ(data.state, State::kUntracked);
  EXPECT_EQ(data.arena, Arena::kReadOnly);
  EXPECT_EQ(data.block, 0u);
}

TEST_F(DescribeTest, NamesTheLiveBlockItsOwnerAndTheFunctionAtAnAddress) {
  const Allocation block = allocate("lisp:define fact", 200);
  ASSERT_NE(block.address, 0u);
  const std::array<SymbolRange, 2> symbols = {{
      {block.address, 64, "fact"},
      {block.address + 64, 96, "fact.helper"},
  }};
  ASSERT_TRUE(heap_->add_symbols(symbols));

  const AddressInfo info = describe(block.address + 70);
  EXPECT_EQ(info.state, State::kLive);
  EXPECT_EQ(info.arena, Arena::kCode);
  EXPECT_EQ(info.block, block.address);
  EXPECT_EQ(info.block_size, footprint(200));
  EXPECT_NE(info.owner, kNoOwner);
  EXPECT_THAT(info.owner_name, StrEq("lisp:define fact"));
  EXPECT_EQ(info.function, block.address + 64);
  EXPECT_THAT(info.function_name, StrEq("fact.helper"));
  EXPECT_THAT(describe(block.address).function_name, StrEq("fact"));
  // Past the last function's end (padding): the nearest function below still names it.
  EXPECT_THAT(describe(block.address + 190).function_name, StrEq("fact.helper"));
}

TEST_F(DescribeTest, StatesFollowTheBlockAndAReclaimedBlockStaysNamedUntilReused) {
  const Allocation retired = allocate("retired", 48);
  const Allocation released = allocate("released", 48);
  const std::array<SymbolRange, 1> symbol = {{{retired.address, 16, "old_body"}}};
  ASSERT_TRUE(heap_->add_symbols(symbol));
  ASSERT_TRUE(heap_->retire(retired.address));
  ASSERT_TRUE(heap_->release(released.address));
  EXPECT_EQ(describe(retired.address + 4).state, State::kQuarantined);
  EXPECT_EQ(describe(released.address + 4).state, State::kReleased);

  heap_->reclaim(kNothingReferenced);
  const AddressInfo former = describe(retired.address + 4);
  EXPECT_EQ(former.state, State::kFree);
  EXPECT_TRUE(former.former);
  EXPECT_EQ(former.block, retired.address);
  EXPECT_THAT(former.owner_name, StrEq("retired"));
  EXPECT_THAT(former.function_name, StrEq("old_body"));

  // An allocation over the range replaces what describe says about it.
  const Allocation reused = allocate("reused", 96);
  ASSERT_LE(reused.address, retired.address);
  ASSERT_GT(reused.address + 96, retired.address);
  const AddressInfo now = describe(retired.address + 4);
  EXPECT_EQ(now.state, State::kLive);
  EXPECT_THAT(now.owner_name, StrEq("reused"));
  EXPECT_EQ(now.function, 0u);
}

TEST_F(DescribeTest, AnAbandonedBlockLeavesNothingBehind) {
  const Allocation block = allocate("never ran", 32);
  ASSERT_TRUE(heap_->abandon(block.address));
  const AddressInfo info = describe(block.address);
  EXPECT_EQ(info.state, State::kFree);
  EXPECT_EQ(info.block, 0u);
}

TEST_F(DescribeTest, ABlockSpanningPagesIsFoundFromEachOfThem) {
  const size_t page = 4096;
  const Allocation small = allocate("small", 16);  // so the large one starts mid-page
  const Allocation large = allocate("large", 3 * page);
  ASSERT_NE(small.address, 0u);
  for (size_t offset : {size_t{0}, page + 8, 2 * page + 100, 3 * page - 1}) {
    const AddressInfo info = describe(large.address + offset);
    EXPECT_EQ(info.block, large.address) << offset;
    EXPECT_THAT(info.owner_name, StrEq("large"));
  }
  EXPECT_THAT(describe(small.address).owner_name, StrEq("small"));
}

TEST_F(DescribeTest, SymbolsOutsideLiveBlocksAreRefused) {
  const Allocation block = allocate("owner", 32);
  const std::array<SymbolRange, 2> symbols = {{
      {block.address + 16, 64, "too_long"},
      {block.address, 16, "fits"},
  }};
  auto added = heap_->add_symbols(symbols);
  ASSERT_FALSE(added);
  EXPECT_EQ(added.error().code, ErrorCode::kInvalidArgument);
  EXPECT_THAT(describe(block.address).function_name, StrEq("fits"));
}

TEST_F(DescribeTest, LongNamesAreTruncated) {
  const std::string name(200, 'n');
  const Allocation block = allocate(name.c_str(), 16);
  const AddressInfo info = describe(block.address);
  EXPECT_EQ(std::string(info.owner_name), name.substr(0, kAddressInfoNameBytes - 1));
}

// Readers on other threads while one thread allocates, names, releases and reclaims: every
// description a reader gets is one the heap really had at some point (the owner's name says the
// footprint it was allocated with, and the function's name its block), never a torn mix.
TEST_F(DescribeTest, ConcurrentReadersSeeConsistentDescriptions) {
  constexpr int kRounds = 300;
  constexpr int kBlocksPerRound = 40;
  const HeapStats stats = heap_->stats();
  const uintptr_t code_begin = stats.arenas[0].begin;
  std::atomic<uintptr_t> high{code_begin + 1};
  std::atomic<bool> done{false};
  std::atomic<int64_t> described{0}, inconsistent{0}, wrong{0};

  auto reader = [&](unsigned seed) {
    std::mt19937_64 random(seed);
    while (!done.load(std::memory_order_relaxed)) {
      const uintptr_t address =
          code_begin + random() % (high.load(std::memory_order_relaxed) - code_begin);
      AddressInfo info;
      heap_->describe(address, info);
      if (!info.consistent) {
        ++inconsistent;
        continue;
      }
      ++described;
      if (info.block == 0) continue;
      const bool inside = info.block <= address && address < info.block + info.block_size;
      const bool named = std::string(info.owner_name) == "b" + std::to_string(info.block_size);
      const bool function =
          info.function == 0 || std::string(info.function_name) == "f" + std::to_string(info.block);
      if (!inside || !named || !function) ++wrong;
    }
  };
  std::vector<std::thread> readers;
  for (unsigned i = 0; i < 2; ++i) readers.emplace_back(reader, i + 1);

  std::mt19937 random(7);
  for (int round = 0; round < kRounds; ++round) {
    std::vector<uintptr_t> blocks;
    for (int i = 0; i < kBlocksPerRound; ++i) {
      const size_t size = footprint(16 + random() % 9000);
      const std::array<BlockRequest, 1> request = {{{.arena = Arena::kCode, .size = size}}};
      std::array<Allocation, 1> block;
      auto owner = heap_->allocate_group("b" + std::to_string(size), request, block);
      ASSERT_TRUE(owner) << owner.error().message;
      const std::string function = "f" + std::to_string(block[0].address);
      const std::array<SymbolRange, 1> symbol = {{{block[0].address, 16, function}}};
      ASSERT_TRUE(heap_->add_symbols(symbol));
      blocks.push_back(block[0].address);
      uintptr_t end = block[0].address + size;
      for (uintptr_t h = high.load(); h < end && !high.compare_exchange_weak(h, end);) {
      }
    }
    for (uintptr_t address : blocks) {
      ASSERT_TRUE(random() % 2 ? heap_->release(address) : heap_->retire(address));
    }
    heap_->reclaim(kNothingReferenced);
  }
  done = true;
  for (std::thread& t : readers) t.join();
  EXPECT_EQ(wrong, 0);
  EXPECT_GT(described, 0);
  RecordProperty("described", std::to_string(described.load()));
  RecordProperty("inconsistent", std::to_string(inconsistent.load()));
}

}  // namespace
}  // namespace codeheap::test
