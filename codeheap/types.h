// The heap's vocabulary: arenas, owners, blocks, what a crash handler or a scanner is told.
// Apart from heap.h so that the heap's own parts (block table, owner table, fault map, region)
// and its callers' interfaces can name them without the Heap class.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace codeheap {

enum class Arena : uint8_t { kCode = 0, kReadOnly = 1, kData = 2 };
inline constexpr int kArenaCount = 3;
const char* to_string(Arena arena);

// Identifies who owns a block (an LLVM module, an entry-cell page, ...). Shown in the dump.
using OwnerId = uint64_t;
inline constexpr OwnerId kNoOwner = 0;

// How a live block leaves the live state (Heap::release, retire, abandon; Heap::end_group).
enum class Exit : uint8_t { kRelease, kRetire, kAbandon };
const char* to_string(Exit exit);

// Validated by Heap::create (kInvalidArgument when out of range).
struct HeapOptions {
  // Arena sizes; each is rounded up to the page size. The whole reservation must fit in the
  // low window: a random base goes anywhere in [256 MiB, 2 GiB), so up to 1.75 GiB in total;
  // the MAP_32BIT fallback only searches 0x40000000-0x80000000 (1 GiB).
  size_t code_bytes = size_t{256} << 20;
  size_t read_only_bytes = size_t{64} << 20;
  size_t data_bytes = size_t{192} << 20;
  // 0: a page-aligned base drawn from the OS's random source over the low window (at least 16
  // bits of entropy; codeheap/region.h), or the kernel's choice (MAP_32BIT) when no random
  // candidate is free. Otherwise the reservation is placed at exactly this address with
  // MAP_FIXED_NOREPLACE and must end below 2^31 (for users who need a fixed address).
  uintptr_t placement_hint = 0;
  // Free pages kept committed after reclaim before whole free pages are returned to the OS.
  // 0 returns every whole free page at each reclaim.
  size_t retain_free_bytes = size_t{4} << 20;
  // Name used in logs and in the dump.
  std::string name = "codeheap";
};

struct Allocation {
  uintptr_t address = 0;        // where the bytes live for the CPU (low; the execution address)
  uint8_t* writable = nullptr;  // where to write them (the alias for kCode/kReadOnly)
  size_t size = 0;              // as requested
  Arena arena = Arena::kCode;
};

// One block of Heap::allocate_group.
struct BlockRequest {
  Arena arena = Arena::kCode;
  size_t size = 0;
  size_t alignment = 16;
};

enum class BlockState : uint8_t { kLive, kQuarantined };

struct BlockInfo {
  uintptr_t address = 0;
  size_t size = 0;
  Arena arena = Arena::kCode;
  BlockState state = BlockState::kLive;
  OwnerId owner = kNoOwner;
};

// A named range inside a live block (a JIT function), for Heap::add_symbols.
struct SymbolRange {
  uintptr_t address = 0;
  size_t size = 0;
  std::string_view name;
};

// Room for a name in AddressInfo, its terminating NUL included; longer names are truncated.
inline constexpr size_t kAddressInfoNameBytes = 80;

// What Heap::describe knows about an address: what a crash handler reports.
struct AddressInfo {
  enum class State : uint8_t {
    kOutside,    // not in the heap's reservation
    kUntracked,  // read-only data or data: describe tracks code blocks only
    kFree,       // free code memory; `former` says whether the block below is the one last here
    kLive,
    kQuarantined,  // retired: the bytes are intact until reclaimed
    kReleased,     // quarantined and already trap-filled
  };
  State state = State::kOutside;
  Arena arena = Arena::kCode;
  // False if writers kept changing the address's page during the lookup: no block details.
  bool consistent = true;
  bool former = false;
  uintptr_t block = 0;    // the block containing the address (0: none known)
  size_t block_size = 0;  // its footprint
  OwnerId owner = kNoOwner;
  char owner_name[kAddressInfoNameBytes] = {};  // NUL-terminated; empty without an owner
  uintptr_t function = 0;  // the named range containing the address, else the nearest below it
  size_t function_size = 0;
  char function_name[kAddressInfoNameBytes] = {};
};

// A quarantined block's footprint as a reclaim pass hands it to a scanner. A word equal to
// `end` counts as inside: a call that is the code's last instruction (a `noreturn` call, which
// LLVM emits with no trap after it on ELF) pushes exactly that return address. Where one range
// ends at the next one's begin, such a word is inside both.
struct AddressRange {
  uintptr_t begin = 0;
  uintptr_t end = 0;  // one past the last byte; a word equal to it is a reference
};

// What a scanner looked at in one scan.
struct ScanReport {
  size_t threads_scanned = 0;
  size_t threads_timed_out = 0;  // counted as referencing every range
  size_t stack_words_scanned = 0;
  uint64_t duration_ns = 0;
};

}  // namespace codeheap
