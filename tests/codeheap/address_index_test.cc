// AddressIndex: the open-addressed start-address index under the block table.
#include "codeheap/address_index.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <random>
#include <vector>

namespace codeheap {
namespace {

struct Value {
  int id;
};

constexpr uintptr_t kBase = 0x40000000;

TEST(AddressIndex, FindsWhatWasInsertedAndNothingElse) {
  AddressIndex<Value> index;
  Value a{1}, b{2};
  EXPECT_EQ(index.find(kBase), nullptr);
  index.insert(kBase, &a);
  index.insert(kBase + 16, &b);
  EXPECT_EQ(index.find(kBase), &a);
  EXPECT_EQ(index.find(kBase + 16), &b);
  EXPECT_EQ(index.find(kBase + 32), nullptr);
  EXPECT_EQ(index.size(), 2u);
  EXPECT_TRUE(index.erase(kBase));
  EXPECT_EQ(index.find(kBase), nullptr);
  EXPECT_EQ(index.find(kBase + 16), &b);
  EXPECT_EQ(index.size(), 1u);
  EXPECT_FALSE(index.erase(kBase));  // not there any more: nothing changes
  EXPECT_EQ(index.find(kBase + 16), &b);
  EXPECT_EQ(index.size(), 1u);
}

// Owner ids are consecutive integers (kKeyShift 0): every one is found, erasing some leaves the
// others, and the index grows without losing any.
TEST(AddressIndex, ConsecutiveIdsWithoutAShift) {
  AddressIndex<Value, /*kKeyShift=*/0> index;
  std::vector<Value> values(1000);
  for (uintptr_t id = 1; id <= values.size(); ++id) index.insert(id, &values[id - 1]);
  EXPECT_EQ(index.size(), values.size());
  EXPECT_GE(index.capacity(), 2 * values.size());
  for (uintptr_t id = 1; id <= values.size(); id += 3) EXPECT_TRUE(index.erase(id));
  for (uintptr_t id = 1; id <= values.size(); ++id) {
    EXPECT_EQ(index.find(id), (id - 1) % 3 == 0 ? nullptr : &values[id - 1]) << id;
  }
  EXPECT_EQ(index.find(values.size() + 1), nullptr);
}

// Erasing from the middle of probe runs must keep every later key of the run reachable: a full
// random workload over a small key space (long runs, wrap-arounds) checked against std::map.
TEST(AddressIndex, AgreesWithAMapUnderRandomChurn) {
  AddressIndex<Value> index;
  std::map<uintptr_t, Value*> reference;
  std::vector<Value> values(4096);
  std::mt19937_64 random(42);
  for (int op = 0; op < 200000; ++op) {
    // Keys 16 bytes apart and some 64 KiB apart: neighbours and far addresses alike.
    const uintptr_t key = kBase + (random() % 2048) * 16 + (random() % 2) * 0x10000;
    if (auto it = reference.find(key); it != reference.end()) {
      ASSERT_EQ(index.find(key), it->second);
      ASSERT_TRUE(index.erase(key));
      reference.erase(it);
      ASSERT_EQ(index.find(key), nullptr);
    } else {
      Value* value = &values[op % values.size()];
      index.insert(key, value);
      reference.emplace(key, value);
    }
    ASSERT_EQ(index.size(), reference.size());
    if (op % 10000 == 0) {
      for (const auto& [k, v] : reference) ASSERT_EQ(index.find(k), v) << std::hex << k;
    }
  }
  size_t visited = 0;
  index.for_each([&](uintptr_t key, Value* value) {
    ++visited;
    EXPECT_EQ(reference.at(key), value);
  });
  EXPECT_EQ(visited, reference.size());
}

// Emptying does not shrink the array (reclaim empties and refills it every pass); a period
// spent far below its size does.
TEST(AddressIndex, GrowsWhenHalfFullAndShrinksOnlyAfterAQuietPeriod) {
  AddressIndex<Value> index;
  Value value{0};
  const size_t initial = index.capacity();
  const size_t count = initial * 8;
  for (size_t i = 0; i < count; ++i) index.insert(kBase + i * 16, &value);
  const size_t grown = index.capacity();
  EXPECT_GE(grown, count * 2);  // at most half full
  for (size_t i = 0; i < count; ++i) ASSERT_EQ(index.find(kBase + i * 16), &value);
  for (size_t i = 0; i < count; ++i) index.erase(kBase + i * 16);
  EXPECT_EQ(index.size(), 0u);
  EXPECT_EQ(index.capacity(), grown);

  index.shrink_to_recent_peak();  // the period just ended saw `count` entries
  EXPECT_EQ(index.capacity(), grown);
  index.insert(kBase, &value);
  index.shrink_to_recent_peak();  // this one saw one
  EXPECT_EQ(index.capacity(), initial);
  EXPECT_EQ(index.find(kBase), &value);
  EXPECT_EQ(index.find(kBase + 16), nullptr);
}

// The same churn as a reclaim cycle: fill, empty, shrink check, repeat. The array keeps its size.
TEST(AddressIndex, SteadyChurnKeepsItsSize) {
  AddressIndex<Value> index;
  Value value{0};
  size_t capacity = 0;
  for (int pass = 0; pass < 10; ++pass) {
    for (size_t i = 0; i < 192; ++i) index.insert(kBase + (pass % 2) * 0x100000 + i * 256, &value);
    for (size_t i = 0; i < 192; ++i) index.erase(kBase + (pass % 2) * 0x100000 + i * 256);
    index.shrink_to_recent_peak();
    if (pass > 0) {
      EXPECT_EQ(index.capacity(), capacity) << pass;
    }
    capacity = index.capacity();
  }
}

}  // namespace
}  // namespace codeheap
