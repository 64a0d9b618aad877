// Helpers shared by the codeheap tests.
#pragma once

#include <gtest/gtest.h>
#include <spdlog/sinks/ringbuffer_sink.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "codeheap/heap.h"

namespace codeheap::test {

// x86-64: mov eax, 42; ret
inline constexpr std::array<uint8_t, 6> kReturn42 = {0xB8, 0x2A, 0x00, 0x00, 0x00, 0xC3};

// Small arenas keep tests fast, and the low window holds only 1.75 GiB for all live heaps.
HeapOptions small_options(const std::string& name = "test");

// Creates a heap or fails the calling test (ASSERT_NO_FATAL_FAILURE-friendly).
std::unique_ptr<Heap> make_heap(const HeapOptions& options = small_options());

// The lines of /proc/self/maps whose permissions are both writable and executable.
std::vector<std::string> writable_executable_mappings();

// W^X for the whole process, checked after each phase of a test.
#define EXPECT_NO_WX_MAPPINGS()                                         \
  EXPECT_TRUE(::codeheap::test::writable_executable_mappings().empty()) \
      << "writable+executable mappings:\n"                              \
      << ::testing::PrintToString(::codeheap::test::writable_executable_mappings())

// One line of /proc/self/maps.
struct Mapping {
  uintptr_t begin = 0;
  uintptr_t end = 0;
  std::string perms;  // e.g. "r-xs"
  std::string line;
};
std::vector<Mapping> mappings();
// The mapping containing `address`; fails the test if there is none.
Mapping mapping_of(uintptr_t address);

// Calls the function at `address` (int f(void)).
int call(uintptr_t address);

// Writes `code` through `allocation.writable`.
void write_code(const Allocation& allocation, const uint8_t* code, size_t size);
inline void write_return42(const Allocation& allocation) {
  write_code(allocation, kReturn42.data(), kReturn42.size());
}

// True if all `size` bytes at `p` equal `value`.
bool all_bytes(const uint8_t* p, size_t size, uint8_t value);
inline bool all_bytes(uintptr_t address, size_t size, uint8_t value) {
  return all_bytes(reinterpret_cast<const uint8_t*>(address), size, value);
}

inline size_t footprint(size_t size) { return (size + 15) / 16 * 16; }

// Stats with the counters, peaks and totals zeroed (clear_history): "the heap is exactly as it
// was".
HeapStats without_counters(HeapStats stats);

// A failed allocation changed nothing but the allocation_failures counter.
void expect_only_a_failure_counted(const HeapStats& before, const HeapStats& after);

// Collects what the "codeheap" logger writes while alive.
class LogCapture {
 public:
  LogCapture();
  ~LogCapture();
  std::vector<std::string> lines() const;
  bool contains(const std::string& needle) const;

 private:
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_;
};

// Runs the W^X check after every test of a fixture.
class HeapTest : public ::testing::Test {
 protected:
  void TearDown() override { EXPECT_NO_WX_MAPPINGS(); }
};

}  // namespace codeheap::test
