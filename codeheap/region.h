// Region: the address space of one Heap.
//
//   base (low, from MAP_32BIT or placement_hint)                          base + total <= 2^31
//   | code: r-x view of S [0, C) | read_only: r-- view of S [C, C+R) | data: rw- private anon |
//
//   alias (anywhere the kernel likes): rw- view of S [0, C+R)
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
// S is MAP_SHARED, so a child made by fork() shares the code pages with its parent (as with any
// shared mapping); a forked child should not allocate from or write to the heap.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "codeheap/error.h"
#include "codeheap/heap.h"

namespace codeheap {

// The top of the address range the Small code model can reach with 32-bit absolute addresses.
inline constexpr uintptr_t kLowLimit = uintptr_t{1} << 31;

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
};

}  // namespace codeheap
