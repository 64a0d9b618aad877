#include "codeheap/region.h"

#include <pthread.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <spdlog/fmt/fmt.h>

#include "codeheap/log.h"
#include "codeheap/stats.h"

// Linux 6.3+: with the sysctl vm.memfd_noexec=1 a memfd created without MFD_EXEC is sealed
// non-executable, and the code view could not be executed. Older kernels do not know the flag
// (EINVAL), so the memfd fallback retries without it.
#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif

namespace codeheap {

namespace {

size_t round_up(size_t value, size_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

Error system_error(const std::string& what) {
  return Error{ErrorCode::kSystemError, fmt::format("{}: {}", what, std::strerror(errno))};
}

// The PROT_NONE reservation that the views are then mapped over.
constexpr int kReserveFlags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;

// Random placement (region.h): the lowest base it draws, and how many occupied candidates it
// skips before it leaves the choice to the kernel.
constexpr uintptr_t kRandomFloor = uintptr_t{256} << 20;
constexpr int kRandomTries = 64;

// The regions of this process, for the fork handlers. Held across fork() and across
// Region::create, so that a child never inherits a region half made.
std::mutex g_regions_mutex;
std::vector<const Region*> g_regions;

// Reserves `total` bytes at a page-aligned base drawn with getrandom() from
// [kRandomFloor, kLowLimit - total], with MAP_FIXED_NOREPLACE, skipping candidates that overlap
// a mapping. nullopt when the window is too small, no random bytes came or no candidate was
// free; the caller then lets the kernel choose.
std::optional<uintptr_t> reserve_at_random(size_t total, size_t page, const std::string& name) {
  const uintptr_t lowest = round_up(kRandomFloor, page);
  if (total > kLowLimit - lowest) {
    logger()->debug("region '{}': {} bytes leave no room for a random base in [{:#x}, {:#x})", name,
                    total, lowest, kLowLimit);
    return std::nullopt;
  }
  const uint64_t positions = (kLowLimit - total - lowest) / page + 1;
  for (int attempt = 1; attempt <= kRandomTries; ++attempt) {
    uint64_t random = 0;
    if (getrandom(&random, sizeof random, GRND_NONBLOCK) != sizeof random) {
      logger()->debug("region '{}': getrandom: {}", name, std::strerror(errno));
      return std::nullopt;
    }
    // The modulo's bias is below 2^-40: positions is at most 2^19.
    const uintptr_t candidate = lowest + (random % positions) * page;
    void* base = mmap(reinterpret_cast<void*>(candidate), total, PROT_NONE,
                      kReserveFlags | MAP_FIXED_NOREPLACE, -1, 0);
    if (base == reinterpret_cast<void*>(candidate)) {
      logger()->debug(
          "region '{}': random base {:#x}, one of {} page positions ({:.1f} bits), "
          "after {} occupied candidates",
          name, candidate, positions, std::log2(double(positions)), attempt - 1);
      return candidate;
    }
    if (base != MAP_FAILED) {
      munmap(base, total);  // a kernel older than 4.17 takes MAP_FIXED_NOREPLACE for a hint
    } else if (errno != EEXIST) {
      logger()->debug("region '{}': mmap at random base {:#x}: {}", name, candidate,
                      std::strerror(errno));
      return std::nullopt;
    }
  }
  logger()->debug("region '{}': {} random candidates were all occupied", name, kRandomTries);
  return std::nullopt;
}

// Maps over part of the reservation; MAP_FIXED is safe because we own the whole range.
bool map_over(uintptr_t at, size_t bytes, int prot, int flags, int fd, off_t offset) {
  void* p = mmap(reinterpret_cast<void*>(at), bytes, prot, flags | MAP_FIXED, fd, offset);
  return p != MAP_FAILED;
}

// Shared anonymous memory mapped at `at` (PROT_NONE), and its alias. Anonymous so that perf
// names JIT functions in it (region.h); shared so that the alias, made by mremap with old size 0
// (which Linux defines for shared mappings), maps the same pages. Sets `refused` when that
// mremap fails with EINVAL: valgrind does not emulate it.
Result<uint8_t*> map_anonymous_shared(uintptr_t at, size_t bytes, bool& refused) {
  if (!map_over(at, bytes, PROT_NONE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)) {
    return tl::make_unexpected(system_error("mmap(shared code and read-only memory)"));
  }
  void* alias = mremap(reinterpret_cast<void*>(at), 0, bytes, MREMAP_MAYMOVE);
  if (alias == MAP_FAILED) {
    refused = errno == EINVAL;
    return tl::make_unexpected(system_error("mremap(writable alias)"));
  }
  return static_cast<uint8_t*>(alias);
}

// The same over a memfd (the same shmem pages, with a file that perf takes for a real one).
Result<uint8_t*> map_memfd_shared(uintptr_t at, size_t bytes, const std::string& name) {
  const std::string memfd_name = ("codeheap:" + name).substr(0, 240);
  int fd = memfd_create(memfd_name.c_str(), MFD_CLOEXEC | MFD_EXEC);
  if (fd < 0 && errno == EINVAL) fd = memfd_create(memfd_name.c_str(), MFD_CLOEXEC);
  if (fd < 0) return tl::make_unexpected(system_error("memfd_create"));
  auto fail = [fd](const char* what) {
    Error error = system_error(what);  // before close() changes errno
    close(fd);
    return tl::make_unexpected(std::move(error));
  };
  if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) return fail("ftruncate(memfd)");
  if (!map_over(at, bytes, PROT_NONE, MAP_SHARED | MAP_NORESERVE, fd, 0)) {
    return fail("mmap(memfd code and read-only memory)");
  }
  void* alias = mmap(nullptr, bytes, PROT_NONE, MAP_SHARED | MAP_NORESERVE, fd, 0);
  if (alias == MAP_FAILED) return fail("mmap(memfd writable alias)");
  close(fd);  // the mappings keep the memory
  return static_cast<uint8_t*>(alias);
}

}  // namespace

Result<std::unique_ptr<Region>> Region::create(const HeapOptions& options) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const std::array<size_t, kArenaCount> requested = {options.code_bytes, options.read_only_bytes,
                                                     options.data_bytes};
  std::array<size_t, kArenaCount> sizes{};
  size_t total = 0;
  for (int i = 0; i < kArenaCount; ++i) {
    const char* arena = to_string(static_cast<Arena>(i));
    if (requested[i] == 0 || requested[i] > kLowLimit) {
      return make_error(ErrorCode::kInvalidArgument,
                        fmt::format("HeapOptions: the {} arena must hold 1 byte to 2 GiB, not {}",
                                    arena, requested[i]));
    }
    sizes[i] = round_up(requested[i], page);
    total += sizes[i];
  }
  if (total > kLowLimit) {
    return make_error(ErrorCode::kInvalidArgument,
                      fmt::format("HeapOptions: {} bytes ({}) in total do not fit below 2 GiB",
                                  total, human_bytes(total)));
  }
  const uintptr_t hint = options.placement_hint;
  if (hint != 0 && (hint % page != 0 || hint >= kLowLimit || total > kLowLimit - hint)) {
    return make_error(
        ErrorCode::kInvalidArgument,
        fmt::format("HeapOptions: placement_hint {:#x} must be page-aligned and the region "
                    "[{:#x}, {:#x}) must end at or below 2 GiB ({:#x})",
                    hint, hint, hint + total, kLowLimit));
  }

  // Once per process. Should it fail (ENOMEM), MADV_DONTFORK alone still keeps a child off the
  // parent's pages.
  [[maybe_unused]] static const int fork_handlers =
      pthread_atfork(&lock_for_fork, &unlock_after_fork, &cover_in_forked_child);
  std::unique_ptr<Region> region(new Region);     // its destructor undoes a partial setup
  std::lock_guard regions_lock(g_regions_mutex);  // released before a failed region is undone
  region->page_size_ = page;
  region->forks_as_child_ = g_forks_as_child.load(std::memory_order_relaxed);

  // 1. The reservation: PROT_NONE, costs nothing, claims the whole low window at once.
  void* base = MAP_FAILED;
  if (hint == 0) {
    if (std::optional<uintptr_t> random = reserve_at_random(total, page, options.name)) {
      base = reinterpret_cast<void*>(*random);
    } else {
#ifdef MAP_32BIT
      base = mmap(nullptr, total, PROT_NONE, kReserveFlags | MAP_32BIT, -1, 0);
      if (base == MAP_FAILED) {
        return make_error(
            ErrorCode::kPlacementFailed,
            fmt::format("cannot reserve {} ({} bytes) below 2 GiB: no free random base in "
                        "[{:#x}, {:#x}) and MAP_32BIT failed: {}. Linux only searches "
                        "0x40000000-0x80000000 (1 GiB) for MAP_32BIT; use smaller arenas or a "
                        "placement_hint naming a free low range",
                        human_bytes(total), total, kRandomFloor, kLowLimit, std::strerror(errno)));
      }
      logger()->debug("region '{}': base {:#x} chosen by the kernel (MAP_32BIT)", options.name,
                      reinterpret_cast<uintptr_t>(base));
#else
      return make_error(ErrorCode::kPlacementFailed,
                        fmt::format("no free random base for {} bytes in [{:#x}, {:#x}): pass "
                                    "HeapOptions::placement_hint",
                                    total, kRandomFloor, kLowLimit));
#endif
    }
  } else {
    base = mmap(reinterpret_cast<void*>(hint), total, PROT_NONE,
                kReserveFlags | MAP_FIXED_NOREPLACE, -1, 0);
    if (base == MAP_FAILED) {
      return make_error(ErrorCode::kPlacementFailed,
                        fmt::format("cannot reserve [{:#x}, {:#x}) at placement_hint: {}", hint,
                                    hint + total, std::strerror(errno)));
    }
  }
  region->reserved_ = true;
  region->bounds_[0] = reinterpret_cast<uintptr_t>(base);
  for (int i = 0; i < kArenaCount; ++i) region->bounds_[i + 1] = region->bounds_[i] + sizes[i];
  // Everything else rests on this; check it rather than trust a flag (a kernel older than 4.17
  // treats MAP_FIXED_NOREPLACE as a mere hint).
  if ((hint != 0 && region->begin() != hint) || region->end() > kLowLimit) {
    return make_error(ErrorCode::kPlacementFailed,
                      fmt::format("the kernel placed the region at [{:#x}, {:#x}), not in the "
                                  "requested low range",
                                  region->begin(), region->end()));
  }

  // 2-3. Code and read-only data: one shared memory object over the reservation, with no access
  // yet, and the writable alias, a second mapping of its pages.
  const uintptr_t code = region->arena_begin(Arena::kCode);
  const uintptr_t read_only = region->arena_begin(Arena::kReadOnly);
  const uintptr_t data = region->arena_begin(Arena::kData);
  const size_t shared_bytes = sizes[0] + sizes[1];
  bool refused = false;
  Result<uint8_t*> alias = map_anonymous_shared(code, shared_bytes, refused);
  if (refused) {
    logger()->info(
        "region '{}': {}; code and read-only data go to a memfd instead (perf will "
        "not name JIT functions)",
        options.name, alias.error().message);
    alias = map_memfd_shared(code, shared_bytes, options.name);
  }
  if (!alias) return tl::make_unexpected(alias.error());
  region->alias_ = *alias;
  region->alias_bytes_ = shared_bytes;

  // 4. Each view gets its final permissions, once, before anything is written: no page is ever
  // writable and executable, and none changes afterwards.
  if (mprotect(reinterpret_cast<void*>(code), sizes[0], PROT_READ | PROT_EXEC) != 0) {
    return tl::make_unexpected(system_error("mprotect(code view)"));
  }
  if (mprotect(reinterpret_cast<void*>(read_only), sizes[1], PROT_READ) != 0) {
    return tl::make_unexpected(system_error("mprotect(read-only view)"));
  }
  if (mprotect(*alias, shared_bytes, PROT_READ | PROT_WRITE) != 0) {
    return tl::make_unexpected(system_error("mprotect(writable alias)"));
  }
  if (!map_over(data, sizes[2], PROT_READ | PROT_WRITE, kReserveFlags, -1, 0)) {
    return tl::make_unexpected(system_error("mmap(data arena)"));
  }

  // 5. A forked child inherits none of it (region.h), now that every mapping is in place (a
  // mapping made over a range does not keep the range's advice).
  if (madvise(reinterpret_cast<void*>(region->begin()), total, MADV_DONTFORK) != 0) {
    return tl::make_unexpected(system_error("madvise(region, MADV_DONTFORK)"));
  }
  if (madvise(*alias, shared_bytes, MADV_DONTFORK) != 0) {
    return tl::make_unexpected(system_error("madvise(writable alias, MADV_DONTFORK)"));
  }

  logger()->debug(
      "region '{}': [{:#x}, {:#x}) code [{:#x}, {:#x}) read_only [{:#x}, {:#x}) "
      "data [{:#x}, {:#x}), alias {}",
      options.name, region->begin(), region->end(), code, read_only, read_only, data, data,
      region->end(), fmt::ptr(*alias));
  g_regions.push_back(region.get());
  return region;
}

Region::~Region() {
  {
    std::lock_guard lock(g_regions_mutex);
    std::erase(g_regions, this);
  }
  // In a forked child the ranges hold the placeholders, which stay: an unwinder may still read
  // eh_frames it was given there (region.h).
  if (inherited()) return;
  if (alias_ != nullptr) munmap(alias_, alias_bytes_);
  if (reserved_) munmap(reinterpret_cast<void*>(begin()), end() - begin());
}

void Region::lock_for_fork() { g_regions_mutex.lock(); }

void Region::unlock_after_fork() { g_regions_mutex.unlock(); }

// Runs in the child before fork() returns there; mmap is async-signal-safe. NOREPLACE: the
// ranges are holes now (MADV_DONTFORK), or hold an earlier fork's placeholders already.
void Region::cover_in_forked_child() {
  g_forks_as_child.fetch_add(1, std::memory_order_relaxed);
  constexpr int kFlags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE;
  for (const Region* region : g_regions) {
    mmap(reinterpret_cast<void*>(region->begin()), region->end() - region->begin(), PROT_READ,
         kFlags, -1, 0);
    mmap(region->alias_, region->alias_bytes_, PROT_NONE, kFlags, -1, 0);
  }
  g_regions_mutex.unlock();
}

Result<void> Region::decommit(Arena arena, uintptr_t begin_address, size_t bytes) {
  if (arena == Arena::kData) {
    // Private anonymous memory: the pages are dropped and read back as zeros.
    if (madvise(reinterpret_cast<void*>(begin_address), bytes, MADV_DONTNEED) != 0) {
      return tl::make_unexpected(system_error("madvise(MADV_DONTNEED)"));
    }
    return {};
  }
  // Shared memory: MADV_DONTNEED would only drop this process's page-table entries, the pages
  // would stay in the shared object. MADV_REMOVE punches them out of it, for both views at once
  // (through the alias: the kernel wants a writable shared mapping).
  if (madvise(alias_ + (begin_address - begin()), bytes, MADV_REMOVE) != 0) {
    return tl::make_unexpected(system_error("madvise(MADV_REMOVE)"));
  }
  return {};
}

}  // namespace codeheap
