// The region: low placement, dual mapping, W^X, page accounting.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <iterator>

#include <algorithm>
#include <array>
#include <cstring>
#include <set>
#include <sstream>
#include <string>
#include <utility>
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
  auto heap = make_heap(HeapOptions{});  // the defaults: 512 MiB in total, a random base
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
  EXPECT_EQ(
      mapping_of(reinterpret_cast<uintptr_t>(heap->writable_alias(stats.arenas[0].begin))).perms,
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
  const sock_fprog program{.len = std::size(filter), .filter = const_cast<sock_filter*>(filter)};
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
      mapping_of(stats.arenas[1].begin).perms != "r--s" || mapping_of(alias).perms != "rw-s") {
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

TEST_F(RegionTest, ARandomBaseLeavesRoomForAGibibyte) {
  HeapOptions options = small_options();
  options.code_bytes = size_t{1} << 30;  // more than MAP_32BIT's 1 GiB window with the others
  auto heap = make_heap(options);
  ASSERT_NE(heap, nullptr);
  EXPECT_LE(heap->stats().arenas.back().end, k2GiB);
}

TEST_F(RegionTest, MoreThanTheLowWindowIsAClearPlacementError) {
  HeapOptions options = small_options();
  options.code_bytes = size_t{1900} << 20;  // valid (below 2 GiB), but above the random window
  auto heap = Heap::create(options);
  ASSERT_FALSE(heap);
  EXPECT_EQ(heap.error().code, ErrorCode::kPlacementFailed);
  EXPECT_THAT(heap.error().message, HasSubstr("MAP_32BIT"));
}

// Occupies every unmapped page of [begin, end) but [hole, hole + hole_bytes), PROT_NONE, for
// its lifetime.
class Occupied {
 public:
  Occupied(uintptr_t begin, uintptr_t end, uintptr_t hole = 0, size_t hole_bytes = 0) {
    auto occupy = [this](uintptr_t from, uintptr_t to) {
      if (from >= to) return;
      void* p = mmap(reinterpret_cast<void*>(from), to - from, PROT_NONE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
      ASSERT_EQ(p, reinterpret_cast<void*>(from)) << std::strerror(errno);
      ranges_.emplace_back(from, to);
    };
    uintptr_t at = begin;
    for (const Mapping& m : mappings()) {  // in address order
      if (m.end <= at || m.begin >= end) continue;
      occupy_except_hole(occupy, at, std::min(m.begin, end), hole, hole_bytes);
      at = std::max(at, m.end);
    }
    occupy_except_hole(occupy, at, end, hole, hole_bytes);
  }
  ~Occupied() {
    for (auto [from, to] : ranges_) munmap(reinterpret_cast<void*>(from), to - from);
  }
  Occupied(const Occupied&) = delete;
  Occupied& operator=(const Occupied&) = delete;

 private:
  template <typename F>
  static void occupy_except_hole(F& occupy, uintptr_t from, uintptr_t to, uintptr_t hole,
                                 size_t hole_bytes) {
    if (hole_bytes == 0 || hole + hole_bytes <= from || hole >= to) return occupy(from, to);
    occupy(from, hole);
    occupy(hole + hole_bytes, to);
  }

  std::vector<std::pair<uintptr_t, uintptr_t>> ranges_;
};

constexpr uintptr_t kOneMiB = uintptr_t{1} << 20;

TEST_F(RegionTest, OccupiedCandidatesAreSkipped) {
  // Everything below 1.75 GiB is taken: about six random candidates in seven are occupied.
  constexpr uintptr_t kFree = 0x70000000;
  Occupied occupied(kOneMiB, kFree);
  for (int i = 0; i < 8; ++i) {
    auto heap = make_heap();
    ASSERT_NE(heap, nullptr);
    const HeapStats stats = heap->stats();
    EXPECT_GE(stats.arenas.front().begin, kFree) << i;
    EXPECT_LE(stats.arenas.back().end, k2GiB) << i;
  }
}

TEST_F(RegionTest, TheKernelChoosesWhenNoRandomCandidateIsFree) {
  // One hole of exactly the heap's size, inside MAP_32BIT's window: random candidates (one in
  // some 400,000 hits it) give way to MAP_32BIT, which finds it.
  const HeapOptions options = small_options();
  const size_t total = options.code_bytes + options.read_only_bytes + options.data_bytes;
  constexpr uintptr_t kHole = 0x5a000000;
  Occupied occupied(kOneMiB, k2GiB, kHole, total);
  auto heap = make_heap(options);
  ASSERT_NE(heap, nullptr);
  EXPECT_EQ(heap->stats().arenas.front().begin, kHole);
}

// The bases of heaps made with `options` in `children` child processes, one each (the children
// report through a pipe, a few at a time so that it never fills).
std::vector<uint64_t> bases_in_children(int children, const HeapOptions& options) {
  constexpr int kBatch = 64;  // 512 bytes in flight at most
  std::vector<uint64_t> bases;
  int fds[2];
  if (pipe(fds) != 0) {
    ADD_FAILURE() << "pipe: " << std::strerror(errno);
    return bases;
  }
  for (int first = 0; first < children; first += kBatch) {
    std::vector<pid_t> batch;
    for (int i = first; i < std::min(children, first + kBatch); ++i) {
      const pid_t pid = fork();
      if (pid < 0) {
        ADD_FAILURE() << "fork: " << std::strerror(errno);
        break;
      }
      if (pid == 0) {
        auto heap = Heap::create(options);
        if (!heap) std::_Exit(2);
        const uint64_t base = (*heap)->stats().arenas.front().begin;
        std::_Exit(write(fds[1], &base, sizeof base) == sizeof base ? 0 : 3);
      }
      batch.push_back(pid);
    }
    for (pid_t pid : batch) {
      int status = 0;
      EXPECT_EQ(waitpid(pid, &status, 0), pid);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
      uint64_t base = 0;
      if (WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
          read(fds[0], &base, sizeof base) == sizeof base) {
        bases.push_back(base);
      }
    }
  }
  close(fds[0]);
  close(fds[1]);
  return bases;
}

TEST_F(RegionTest, BasesAreRandomAcrossProcesses) {
  const std::vector<uint64_t> bases = bases_in_children(32, small_options("child"));
  ASSERT_EQ(bases.size(), 32u);
  for (uint64_t base : bases) EXPECT_LT(base, k2GiB);
  const std::set<uint64_t> distinct(bases.begin(), bases.end());
  EXPECT_GE(distinct.size(), 28u) << ::testing::PrintToString(bases);
}

// The measurement in docs/reliability.md (run with --gtest_also_run_disabled_tests): default
// heaps in many processes, the collision entropy estimated from the pairs of equal bases.
TEST_F(RegionTest, DISABLED_MeasureBaseEntropy) {
  constexpr int kChildren = 8192;
  std::vector<uint64_t> bases = bases_in_children(kChildren, HeapOptions{});
  ASSERT_EQ(bases.size(), size_t{kChildren});
  std::sort(bases.begin(), bases.end());
  double equal_pairs = 0;
  for (size_t i = 0, run = 1; i < bases.size(); ++i, ++run) {
    if (i + 1 == bases.size() || bases[i + 1] != bases[i]) {
      equal_pairs += run * (run - 1) / 2.0;
      run = 0;
    }
  }
  const double pairs = kChildren * (kChildren - 1) / 2.0;
  const std::set<uint64_t> distinct(bases.begin(), bases.end());
  std::printf(
      "%d heaps: %zu distinct bases in [%#lx, %#lx], %.0f equal pairs: collision "
      "entropy ~%.1f bits\n",
      kChildren, distinct.size(), static_cast<unsigned long>(bases.front()),
      static_cast<unsigned long>(bases.back()), equal_pairs,
      equal_pairs > 0 ? std::log2(pairs / equal_pairs) : std::log2(pairs));
}

// x86-64: mov eax, 7; ret
constexpr std::array<uint8_t, 6> kReturn7 = {0xB8, 0x07, 0x00, 0x00, 0x00, 0xC3};

// In a child forked after `inherited` was made and `code` written into it: the region reads as
// zeros there (a read-only placeholder, not the parent's pages), the old heap refuses to
// allocate, and a new heap goes elsewhere and runs code; destroying the old heap leaves the
// placeholder. Exits 0 if so, with the number of the failed step if not.
[[noreturn]] void use_a_new_heap_after_fork(std::unique_ptr<Heap> inherited, uintptr_t code) {
  const uintptr_t alias = reinterpret_cast<uintptr_t>(inherited->writable_alias(code));
  if (mapping_of(code).perms != "r--p" || !all_bytes(code, kReturn42.size(), 0)) std::_Exit(2);
  if (mapping_of(alias).perms != "---p") std::_Exit(3);
  auto refused = inherited->allocate(Arena::kCode, 16, 16);
  if (refused || refused.error().code != ErrorCode::kForkedChild ||
      refused.error().message.find("fork") == std::string::npos) {
    std::_Exit(4);
  }
  auto heap = Heap::create(small_options("child"));
  if (!heap) std::_Exit(5);
  auto block = (*heap)->allocate(Arena::kCode, kReturn7.size(), 16);
  if (!block) std::_Exit(6);
  write_code(*block, kReturn7.data(), kReturn7.size());
  if (call(block->address) != 7) std::_Exit(7);
  inherited.reset();
  if (call(block->address) != 7 || mapping_of(code).perms != "r--p") std::_Exit(8);
  std::_Exit(0);
}

TEST_F(RegionTest, AForkedChildInheritsNothingAndCannotTouchTheParentsCode) {
  auto heap = make_heap(small_options("parent"));
  ASSERT_NE(heap, nullptr);
  auto code = heap->allocate(Arena::kCode, kReturn42.size(), 16);
  ASSERT_TRUE(code);
  write_return42(*code);
  ASSERT_EQ(call(code->address), 42);

  const pid_t child = fork();
  ASSERT_GE(child, 0) << std::strerror(errno);
  if (child == 0) use_a_new_heap_after_fork(std::move(heap), code->address);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  // Inherited code is not there to call: the child dies, alone.
  EXPECT_EXIT(call(code->address), ::testing::KilledBySignal(SIGSEGV), "");
  EXPECT_EQ(call(code->address), 42);
  auto more = heap->allocate(Arena::kCode, kReturn42.size(), 16);
  ASSERT_TRUE(more) << more.error().message;
  write_return42(*more);
  EXPECT_EQ(call(more->address), 42);
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
      ASSERT_TRUE(i % 3 == 0   ? heap->abandon(blocks[i])
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
