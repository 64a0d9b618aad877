// Region: the address space of one Heap.
//
//   base (low: random, placement_hint or MAP_32BIT)                       base + total <= 2^31
//   | code: r-x view of S [0, C) | read_only: r-- view of S [C, C+R) | data: rw- private anon |
//
//   alias (anywhere the kernel likes): rw- view of S [0, C+R)
//
// Placement: without a placement_hint, the base is drawn page-aligned and uniformly from
// [256 MiB, 2 GiB - total] with getrandom(), and reserved there with MAP_FIXED_NOREPLACE; a
// candidate that overlaps a mapping is skipped for another, up to 64 tries. So the code is hard
// to find: about 18 bits for the default 512 MiB (MAP_32BIT alone gives ~4). The floor keeps
// clear of a non-PIE executable (loaded at 4 MiB) and its brk heap. Only when no candidate is
// free (or no random bytes come) does the kernel choose, with MAP_32BIT. The alias is not
// randomized beyond what ASLR gives the kernel's mmap area (docs/reliability.md).
//
// S is one shared anonymous memory object (shmem, as a memfd is, without a file descriptor), so
// that perf resolves samples in JIT code through /tmp/perf-<pid>.map (jit/visibility.h); the
// alias is a second mapping of its pages, made with mremap(old_size = 0). Where that mremap is
// refused (valgrind does not emulate it), S is a memfd instead: the same pages and invariants,
// but perf takes the views for a file and does not name the functions in them.
//
// One PROT_NONE reservation is made first and the views are mapped over it with MAP_FIXED, so the
// three arenas are contiguous and nothing else can land between them. Code and read-only data
// are written through the alias and read or executed through the low views: no page is ever
// writable and executable at once, and no permission is ever changed after creation, so there is
// no mmap/mprotect/munmap in steady state. Nothing costs memory until it is written
// (MAP_NORESERVE; under vm.overcommit_memory=2 the kernel ignores that and charges C+R at
// creation).
//
// fork(): S is MAP_SHARED, so a child would share the code pages, and the alias that writes
// them, with its parent. So the whole reservation and the alias are MADV_DONTFORK: a child
// inherits no mapping of them, and the parent's pages are never reachable from it. A
// pthread_atfork handler then puts placeholders there in the child: private zero pages,
// read-only, over the reservation (libgcc's unwinder keeps the addresses of registered JIT
// eh_frames and reads them on every C++ throw: zeros read as an empty table, a hole as
// SIGSEGV), and PROT_NONE over the alias (so a stale write faults rather than landing in a
// mapping made there since). So in the child, calling inherited code or writing an inherited
// block faults, allocating from an inherited heap is an error (kForkedChild), and a new heap
// goes elsewhere; the placeholders stay for the child's lifetime.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "codeheap/error.h"
#include "codeheap/types.h"

namespace codeheap {

// The top of the address range the Small code model can reach with 32-bit absolute addresses.
inline constexpr uintptr_t kLowLimit = uintptr_t{1} << 31;

// How many times this process has come out of fork() as the child (counted by the
// pthread_atfork handler that the first Region::create installs).
inline std::atomic<uint64_t> g_forks_as_child{0};

class Region {
 public:
  // Validates the sizes and the hint, then reserves and maps. Arena sizes are rounded up to the
  // page size. Fails with kInvalidArgument (bad options), kPlacementFailed (no low range) or
  // kSystemError (mmap/mremap/mprotect failures, with errno text); it never places the region
  // high.
  static Result<std::unique_ptr<Region>> create(const HeapOptions& options);
  ~Region();
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;

  size_t page_size() const { return page_size_; }
  uintptr_t begin() const { return bounds_.front(); }
  uintptr_t end() const { return bounds_.back(); }
  uintptr_t arena_begin(Arena arena) const { return bounds_[static_cast<size_t>(arena)]; }
  uintptr_t arena_end(Arena arena) const { return bounds_[static_cast<size_t>(arena) + 1]; }
  size_t arena_bytes(Arena arena) const { return arena_end(arena) - arena_begin(arena); }
  bool contains(uintptr_t address) const { return address >= begin() && address < end(); }

  // Where to write the byte that executes or is read at `address`: the alias for kCode and
  // kReadOnly, `address` itself for kData, nullptr outside the region.
  uint8_t* writable(uintptr_t address) const {
    if (!contains(address)) return nullptr;
    if (address >= arena_begin(Arena::kData)) return reinterpret_cast<uint8_t*>(address);
    return alias_ + (address - begin());
  }

  // True in a child forked after the region was made: its ranges hold the child's placeholders,
  // none of the memory is this process's.
  bool inherited() const {
    return forks_as_child_ != g_forks_as_child.load(std::memory_order_relaxed);
  }

  // Gives the whole pages [begin, begin + bytes) of `arena` back to the OS: they read as zeros
  // afterwards and cost no memory until written again.
  Result<void> decommit(Arena arena, uintptr_t begin, size_t bytes);

 private:
  Region() = default;

  size_t page_size_ = 0;
  // Arena i spans [bounds_[i], bounds_[i + 1]); code, read_only, data in address order.
  std::array<uintptr_t, kArenaCount + 1> bounds_{};
  // The alias of an address in code/read_only is alias_ + (address - begin()).
  uint8_t* alias_ = nullptr;
  size_t alias_bytes_ = 0;
  bool reserved_ = false;
  uint64_t forks_as_child_ = 0;  // g_forks_as_child when it was made

  // The pthread_atfork handlers (see fork() above).
  static void lock_for_fork();
  static void unlock_after_fork();
  static void cover_in_forked_child();
};

}  // namespace codeheap
