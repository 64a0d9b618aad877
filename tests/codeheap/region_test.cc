// The region: low placement, dual mapping, W^X, page accounting.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <iterator>

#include <cstring>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "codeheap/heap.h"
#include "tests/codeheap/test_util.h"

namespace codeheap::test {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr uintptr_t k2GiB = uintptr_t{1} << 31;

class RegionTest : public HeapTest {};

TEST_F(RegionTest, DefaultHeapIsLowAndCodeRunsThroughTheExecuteView) {
  auto heap = make_heap(HeapOptions{});  // the defaults: 512 MiB in total, MAP_32BIT
  ASSERT_NE(heap, nullptr);
  EXPECT_NO_WX_MAPPINGS();
  for (Arena arena : {Arena::kCode, Arena::kReadOnly, Arena::kData}) {
    auto a = heap->allocate(arena, 4096, 16);
    ASSERT_TRUE(a) << a.error().message;
    EXPECT_LT(a->address + a->size, k2GiB);
    EXPECT_TRUE(heap->contains(a->address));
    EXPECT_EQ(heap->writable_alias(a->address), a->writable);
  }
  auto code = heap->allocate(Arena::kCode, kReturn42.size(), 16);
  ASSERT_TRUE(code);
  EXPECT_NE(reinterpret_cast<uintptr_t>(code->writable), code->address);
  write_return42(*code);
  EXPECT_EQ(call(code->address), 42);
  EXPECT_NO_WX_MAPPINGS();
  const HeapStats stats = heap->stats();
  EXPECT_EQ(stats.reserved_bytes, size_t{512} << 20);
  EXPECT_LE(stats.arenas.back().end, k2GiB);
}

TEST_F(RegionTest, ArenasAreContiguousWithTheirPermissions) {
  auto heap = make_heap();
  ASSERT_NE(heap, nullptr);
  const HeapStats stats = heap->stats();
  ASSERT_EQ(stats.arenas.size(), 3u);
  EXPECT_EQ(stats.arenas[0].end, stats.arenas[1].begin);
  EXPECT_EQ(stats.arenas[1].end, stats.arenas[2].begin);

  EXPECT_EQ(mapping_of(stats.arenas[0].begin).perms, "r-xs");
  EXPECT_EQ(mapping_of(stats.arenas[1].begin).perms, "r--s");
  EXPECT_EQ(mapping_of(stats.arenas[2].begin).perms, "rw-p");
  // The alias of code and read-only data: writable, shared, never executable.
  EXPECT_EQ(mapping_of(reinterpret_cast<uintptr_t>(heap->writable_alias(stats.arenas[0].begin)))
                .perms,
            "rw-s");

  // Read-only data written through the alias reads back through the low view.
  auto ro = heap->allocate(Arena::kReadOnly, 64, 64);
  ASSERT_TRUE(ro);
  std::memcpy(ro->writable, "constant pool", 14);
  EXPECT_STREQ(reinterpret_cast<const char*>(ro->address), "constant pool");
  // Data is written in place.
  auto data = heap->allocate(Arena::kData, 64, 8);
  ASSERT_TRUE(data);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(data->writable), data->address);
  EXPECT_EQ(heap->writable_alias(0x1000), nullptr);
}

// Perf names JIT functions from /tmp/perf-<pid>.map only in mappings it takes for anonymous
// memory: "//anon", "/dev/zero", ... A shared anonymous object shows as "/dev/zero (deleted)";
// a memfd would show as "/memfd:...", which perf tries to read as a file and names nothing in.
TEST_F(RegionTest, CodeViewsAreOneSharedAnonymousObjectAsPerfSeesThem) {
  auto heap = make_heap();
  ASSERT_NE(heap, nullptr);
  const HeapStats stats = heap->stats();
  const uintptr_t alias = reinterpret_cast<uintptr_t>(heap->writable_alias(stats.arenas[0].begin));
  std::set<std::string> objects;  // "device inode" of each view
  for (uintptr_t at : {stats.arenas[0].begin, stats.arenas[1].begin, alias}) {
    const std::string line = mapping_of(at).line;
    std::istringstream fields(line);
    std::string range, perms, offset, device, inode, path;
    fields >> range >> perms >> offset >> device >> inode >> std::ws;
    std::getline(fields, path);
    EXPECT_THAT(path, StartsWith("/dev/zero")) << line;
    objects.insert(device + " " + inode);
  }
  EXPECT_EQ(objects.size(), 1u);  // the same pages behind the views and the alias
}

// Valgrind refuses the mremap that makes the alias (EINVAL); the region then backs code and
// read-only data with a memfd. Run in a child process: a seccomp filter makes the kernel refuse
// mremap the same way (the filter dies with the child), then a heap must still work, with all
// three views on one memfd. Exits 0 if so, with the number of the failed step if not.
[[noreturn]] void use_heap_with_mremap_refused() {
  const sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mremap, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EINVAL),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  const sock_fprog program{.len = std::size(filter),
                           .filter = const_cast<sock_filter*>(filter)};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
      prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0) {
    std::_Exit(2);
  }
  auto heap = Heap::create(small_options("refused"));
  if (!heap) std::_Exit(3);
  const HeapStats stats = (*heap)->stats();
  auto code = (*heap)->allocate(Arena::kCode, kReturn42.size(), 16);
  if (!code) std::_Exit(4);
  write_return42(*code);
  if (call(code->address) != 42) std::_Exit(5);
  if (!(*heap)->release(code->address) || !all_bytes(code->address, code->size, 0xCC)) {
    std::_Exit(9);
  }
  const uintptr_t alias =
      reinterpret_cast<uintptr_t>((*heap)->writable_alias(stats.arenas[0].begin));
  std::set<std::string> objects;
  for (uintptr_t at : {stats.arenas[0].begin, stats.arenas[1].begin, alias}) {
    std::istringstream fields(mapping_of(at).line);
    std::string range, perms, offset, device, inode, path;
    fields >> range >> perms >> offset >> device >> inode >> path;
    if (!path.starts_with("/memfd:codeheap:refused")) std::_Exit(6);
    objects.insert(device + " " + inode);
  }
  if (objects.size() != 1) std::_Exit(7);
  if (mapping_of(stats.arenas[0].begin).perms != "r-xs" ||
      mapping_of(stats.arenas[1].begin).perms != "r--s" ||
      mapping_of(alias).perms != "rw-s") {
    std::_Exit(8);
  }
  std::_Exit(0);
}

TEST_F(RegionTest, RefusedAliasFallsBackToAMemfdWithTheSameViews) {
  EXPECT_EXIT(use_heap_with_mremap_refused(), ::testing::ExitedWithCode(0), "");
}

TEST_F(RegionTest, PlacementHintIsHonouredExactlyAndNeverFallsBack) {
  HeapOptions options = small_options("hinted");
  options.placement_hint = 0x30000000;
  auto heap = make_heap(options);
  ASSERT_NE(heap, nullptr);
  EXPECT_EQ(heap->stats().arenas[0].begin, 0x30000000u);

  auto again = Heap::create(options);  // the range is taken now
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ErrorCode::kPlacementFailed);
  EXPECT_THAT(again.error().message, HasSubstr("0x30000000"));
}

TEST_F(RegionTest, PlacementHintMustLieBelow2GiB) {
  for (uintptr_t hint : {k2GiB, k2GiB - 4096, uintptr_t{0x7ff00000}, uintptr_t{0x7fff00000000},
                         uintptr_t{0x30000001}}) {
    HeapOptions options = small_options();
    options.placement_hint = hint;
    auto heap = Heap::create(options);
    ASSERT_FALSE(heap) << std::hex << hint;
    EXPECT_EQ(heap.error().code, ErrorCode::kInvalidArgument) << std::hex << hint;
    EXPECT_THAT(heap.error().message, HasSubstr("placement_hint"));
  }
}

TEST_F(RegionTest, Map32BitWindowLimitIsAClearPlacementError) {
  HeapOptions options = small_options();
  options.code_bytes = size_t{1} << 30;  // with the other arenas: more than the 1 GiB window
  auto heap = Heap::create(options);
  ASSERT_FALSE(heap);
  EXPECT_EQ(heap.error().code, ErrorCode::kPlacementFailed);
  EXPECT_THAT(heap.error().message, HasSubstr("MAP_32BIT"));
}

TEST_F(RegionTest, InvalidOptionsAreRejected) {
  auto expect_invalid = [](HeapOptions options) {
    auto heap = Heap::create(options);
    ASSERT_FALSE(heap);
    EXPECT_EQ(heap.error().code, ErrorCode::kInvalidArgument) << heap.error().message;
  };
  HeapOptions options = small_options();
  options.code_bytes = 0;
  expect_invalid(options);
  options = small_options();
  options.data_bytes = (size_t{1} << 31) + 1;
  expect_invalid(options);
  options = small_options();
  options.code_bytes = size_t{1} << 31;
  options.data_bytes = size_t{1} << 31;
  expect_invalid(options);
}

TEST_F(RegionTest, ArenaSizesAreRoundedToPages) {
  HeapOptions options = small_options();
  options.code_bytes = 5000;
  auto heap = make_heap(options);
  ASSERT_NE(heap, nullptr);
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  EXPECT_EQ(heap->options().code_bytes, 2 * page);
  EXPECT_EQ(heap->stats().arenas[0].reserved_bytes, 2 * page);
}

// Steady-state allocate/release/abandon/reclaim changes no mapping: no mmap, mprotect or munmap
// (any of them would split, add or drop lines of /proc/self/maps).
TEST_F(RegionTest, SteadyStateLeavesTheMappingsAlone) {
  HeapOptions options = small_options();
  options.retain_free_bytes = options.code_bytes * 4;  // no trimming in this test
  auto heap = make_heap(options);
  ASSERT_NE(heap, nullptr);
  const HeapStats stats = heap->stats();
  const uintptr_t alias = reinterpret_cast<uintptr_t>(heap->writable_alias(stats.arenas[0].begin));
  auto ours = [&] {
    std::vector<std::string> lines;
    for (const Mapping& m : mappings()) {
      if ((m.begin < stats.arenas[2].end && m.end > stats.arenas[0].begin) ||
          (alias >= m.begin && alias < m.end)) {
        lines.push_back(m.line);
      }
    }
    return lines;
  };
  const std::vector<std::string> before = ours();
  ASSERT_EQ(before.size(), 4u);  // code, read-only, data views and the alias
  for (int round = 0; round < 50; ++round) {
    std::vector<uintptr_t> blocks;
    for (Arena arena : {Arena::kCode, Arena::kReadOnly, Arena::kData}) {
      for (size_t size = 1; size <= 32768; size *= 8) {
        auto a = heap->allocate(arena, size, 64);
        ASSERT_TRUE(a);
        std::memset(a->writable, 0x5A, size);
        blocks.push_back(a->address);
      }
    }
    for (size_t i = 0; i < blocks.size(); ++i) {
      ASSERT_TRUE(i % 3 == 0 ? heap->abandon(blocks[i])
                  : i % 3 == 1 ? heap->release(blocks[i])
                               : heap->retire(blocks[i]));
    }
    heap->reclaim([](uintptr_t, uintptr_t) { return false; });
  }
  EXPECT_EQ(ours(), before);
}

// Page residency as the kernel sees it, through mincore().
size_t resident_pages(const void* address, size_t bytes) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> residency((bytes + page - 1) / page);
  EXPECT_EQ(mincore(const_cast<void*>(address), bytes, residency.data()), 0);
  size_t n = 0;
  for (unsigned char r : residency) n += r & 1;
  return n;
}

TEST_F(RegionTest, CommittedBytesDropAfterReclaimWithNoRetention) {
  HeapOptions options = small_options();
  options.retain_free_bytes = 0;
  auto heap = make_heap(options);
  ASSERT_NE(heap, nullptr);
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  constexpr size_t kBytes = 256 << 10;

  EXPECT_EQ(heap->stats().committed_bytes, 0u);
  auto code = heap->allocate(Arena::kCode, kBytes, page);
  auto data = heap->allocate(Arena::kData, kBytes, page);
  ASSERT_TRUE(code && data);
  std::memset(code->writable, 0x90, kBytes);
  std::memset(data->writable, 0x11, kBytes);
  HeapStats stats = heap->stats();
  EXPECT_EQ(stats.arenas[0].committed_bytes, kBytes);
  EXPECT_EQ(stats.arenas[2].committed_bytes, kBytes);
  EXPECT_EQ(stats.committed_bytes, 2 * kBytes);
  EXPECT_EQ(resident_pages(code->writable, kBytes), kBytes / page);
  EXPECT_EQ(resident_pages(data->writable, kBytes), kBytes / page);

  ASSERT_TRUE(heap->release(code->address));
  ASSERT_TRUE(heap->abandon(data->address));
  // Quarantined memory stays committed; abandon undoes its allocation, pages included.
  EXPECT_EQ(heap->stats().committed_bytes, kBytes);
  EXPECT_EQ(heap->stats().counters.decommitted_bytes, kBytes);

  const ReclaimReport report = heap->reclaim([](uintptr_t, uintptr_t) { return false; });
  EXPECT_EQ(report.reclaimed_blocks, 1u);
  stats = heap->stats();
  EXPECT_EQ(stats.committed_bytes, 0u);
  EXPECT_EQ(stats.counters.decommitted_bytes, 2 * kBytes);
  // Truthful: the kernel agrees that the pages are gone, for both kinds of memory.
  EXPECT_EQ(resident_pages(code->writable, kBytes), 0u);
  EXPECT_EQ(resident_pages(reinterpret_cast<void*>(data->address), kBytes), 0u);

  // Handed out again, they work as before.
  auto again = heap->allocate(Arena::kCode, kReturn42.size(), 16);
  ASSERT_TRUE(again);
  write_return42(*again);
  EXPECT_EQ(call(again->address), 42);
  EXPECT_EQ(heap->stats().committed_bytes, page);
}

TEST_F(RegionTest, RetainFreeBytesKeepsThatMuchCommitted) {
  HeapOptions options = small_options();
  options.retain_free_bytes = 64 << 10;
  auto heap = make_heap(options);
  ASSERT_NE(heap, nullptr);
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  auto live = heap->allocate(Arena::kCode, 100, 16);  // shares the first page
  auto big = heap->allocate(Arena::kCode, 512 << 10, page);
  ASSERT_TRUE(live && big);
  std::memset(big->writable, 0x90, 512 << 10);
  ASSERT_TRUE(heap->release(big->address));
  heap->reclaim([](uintptr_t, uintptr_t) { return false; });
  const HeapStats stats = heap->stats();
  // The first page (under the live block) plus exactly the retained free pages.
  EXPECT_EQ(stats.committed_bytes, page + (64 << 10));
  EXPECT_EQ(stats.counters.decommitted_bytes, (512 << 10) - (64 << 10));
}

}  // namespace
}  // namespace codeheap::test
