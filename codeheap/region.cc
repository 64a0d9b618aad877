#include "codeheap/region.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include <spdlog/fmt/fmt.h>

#include "codeheap/log.h"
#include "codeheap/stats.h"

// Linux 6.3+: with the sysctl vm.memfd_noexec=1 a memfd created without MFD_EXEC is sealed
// non-executable, and mapping the code view PROT_EXEC would fail. Older kernels (and glibc
// headers) do not know the flag; create() retries without it when the kernel says EINVAL.
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

// Maps over part of the reservation; MAP_FIXED is safe because we own the whole range.
bool map_over(uintptr_t at, size_t bytes, int prot, int flags, int fd, off_t offset) {
  void* p = mmap(reinterpret_cast<void*>(at), bytes, prot, flags | MAP_FIXED, fd, offset);
  return p != MAP_FAILED;
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

  std::unique_ptr<Region> region(new Region);  // its destructor undoes a partial setup
  region->page_size_ = page;

  // 1. The reservation: PROT_NONE, costs nothing, claims the whole low window at once.
  void* base = MAP_FAILED;
  const int reserve_flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
  if (hint == 0) {
#ifdef MAP_32BIT
    base = mmap(nullptr, total, PROT_NONE, reserve_flags | MAP_32BIT, -1, 0);
    if (base == MAP_FAILED) {
      return make_error(
          ErrorCode::kPlacementFailed,
          fmt::format("cannot reserve {} ({} bytes) below 2 GiB with MAP_32BIT: {}. Linux only "
                      "searches 0x40000000-0x80000000 (1 GiB) for MAP_32BIT; use smaller arenas "
                      "or a placement_hint naming a free low range",
                      human_bytes(total), total, std::strerror(errno)));
    }
#else
    return make_error(ErrorCode::kPlacementFailed,
                      "MAP_32BIT is x86-64 only: pass HeapOptions::placement_hint");
#endif
  } else {
    base = mmap(reinterpret_cast<void*>(hint), total, PROT_NONE,
                reserve_flags | MAP_FIXED_NOREPLACE, -1, 0);
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

  // 2. The memfd behind code and read-only data.
  const std::string memfd_name = ("codeheap:" + options.name).substr(0, 240);
  region->memfd_ = memfd_create(memfd_name.c_str(), MFD_CLOEXEC | MFD_EXEC);
  if (region->memfd_ < 0 && errno == EINVAL) {
    region->memfd_ = memfd_create(memfd_name.c_str(), MFD_CLOEXEC);
  }
  if (region->memfd_ < 0) return tl::make_unexpected(system_error("memfd_create"));
  const size_t shared_bytes = sizes[0] + sizes[1];
  if (ftruncate(region->memfd_, static_cast<off_t>(shared_bytes)) != 0) {
    return tl::make_unexpected(system_error("ftruncate(memfd)"));
  }

  // 3. The low views over the reservation, each with its final permissions.
  const uintptr_t code = region->arena_begin(Arena::kCode);
  const uintptr_t read_only = region->arena_begin(Arena::kReadOnly);
  const uintptr_t data = region->arena_begin(Arena::kData);
  if (!map_over(code, sizes[0], PROT_READ | PROT_EXEC, MAP_SHARED, region->memfd_, 0)) {
    return tl::make_unexpected(system_error("mmap(code view)"));
  }
  if (!map_over(read_only, sizes[1], PROT_READ, MAP_SHARED, region->memfd_,
                static_cast<off_t>(sizes[0]))) {
    return tl::make_unexpected(system_error("mmap(read-only view)"));
  }
  if (!map_over(data, sizes[2], PROT_READ | PROT_WRITE, reserve_flags, -1, 0)) {
    return tl::make_unexpected(system_error("mmap(data arena)"));
  }

  // 4. The writable alias. It need not be low: only the CPU's view must be reachable.
  void* alias = mmap(nullptr, shared_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, region->memfd_, 0);
  if (alias == MAP_FAILED) return tl::make_unexpected(system_error("mmap(writable alias)"));
  region->alias_ = static_cast<uint8_t*>(alias);
  region->alias_bytes_ = shared_bytes;

  logger()->debug("region '{}': [{:#x}, {:#x}) code [{:#x}, {:#x}) read_only [{:#x}, {:#x}) "
                  "data [{:#x}, {:#x}), alias {}",
                  options.name, region->begin(), region->end(), code, read_only, read_only, data,
                  data, region->end(), fmt::ptr(alias));
  return region;
}

Region::~Region() {
  if (alias_ != nullptr) munmap(alias_, alias_bytes_);
  if (reserved_) munmap(reinterpret_cast<void*>(begin()), end() - begin());
  if (memfd_ >= 0) close(memfd_);
}

uint8_t* Region::writable(uintptr_t address) const {
  if (!contains(address)) return nullptr;
  if (address >= arena_begin(Arena::kData)) return reinterpret_cast<uint8_t*>(address);
  return alias_ + (address - begin());
}

Result<void> Region::decommit(Arena arena, uintptr_t begin_address, size_t bytes) {
  if (arena == Arena::kData) {
    // Private anonymous memory: the pages are dropped and read back as zeros.
    if (madvise(reinterpret_cast<void*>(begin_address), bytes, MADV_DONTNEED) != 0) {
      return tl::make_unexpected(system_error("madvise(MADV_DONTNEED)"));
    }
    return {};
  }
  // Shared memfd memory: MADV_DONTNEED would only drop this process's page-table entries, the
  // pages would stay in the file. Punching a hole frees them for both views at once.
  const off_t offset = static_cast<off_t>(begin_address - begin());
  if (fallocate(memfd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset,
                static_cast<off_t>(bytes)) != 0) {
    return tl::make_unexpected(system_error("fallocate(PUNCH_HOLE)"));
  }
  return {};
}

}  // namespace codeheap
