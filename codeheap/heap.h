// codeheap::Heap: a low-address home for JIT code and data (how it works: docs/design.md).
//
// One Heap owns one reservation below 2 GiB, so LLVM's Small code model, pc-relative calls and
// 32-bit absolute references (jump tables) resolve between any two of its blocks. Arenas:
//   kCode      run through a read-execute view, written through Allocation::writable (a
//              read-write alias of the same pages); no page is ever writable and executable.
//   kReadOnly  read through a read-only view, written through Allocation::writable.
//   kData      plain read-write memory, never executable; written in place.
// A block takes its size rounded up to 16 bytes (its footprint) and is aligned to at least 16.
//
// A block's life: allocate -> live -> release|retire -> quarantine -> reclaim -> free.
//   release  fills it with trap bytes (0xCC, int3) at once: a stale jump into it traps.
//   retire   keeps its bytes intact until a reclaim pass's ReferenceScanner (e.g.
//            scan::ThreadRegistry) or predicate finds nothing referencing it: for code a thread
//            may still be running (hot-swap, garbage-collected code).
//   abandon  for a block never executed (a failed link): freed at once, its allocation undone
//            exactly (committed pages and statistics included).
// Passes run when the caller asks (reclaim) or on their own (set_reclaim_policy). Free code
// memory that was used holds trap bytes, never old code.
//
// Thread safety: any member, from any thread. The scanner (or predicate) runs without the heap
// lock and must not call reclaim on the same heap. Under a ReclaimPolicy, release, retire,
// end_group, allocate and allocate_group may run a whole pass (on_gone callbacks included)
// before they return: call them holding no lock that those callbacks or the scanner's threads
// need. `contains` and `describe` take no lock, so a signal handler may call them.
//
// fork(): in a child the inherited Heap is inert (allocate and allocate_group fail with
// kForkedChild, its range faults, destroying it unmaps nothing); a new Heap works there
// (docs/design.md, "fork()").
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "codeheap/error.h"
#include "codeheap/stats.h"
#include "codeheap/stats_svg.h"
#include "codeheap/types.h"

namespace codeheap {

// Proves quarantined code unreferenced for Heap::reclaim.
class ReferenceScanner {
 public:
  virtual ~ReferenceScanner() = default;
  // Sets referenced[i] to 1 for every ranges[i] that something (a thread's program counter,
  // registers or stack) may still point into, the range's end included (AddressRange).
  // `ranges` are sorted by address and do not overlap; `referenced` has one element per range
  // and comes zeroed. Called once per pass, without the heap lock.
  virtual ScanReport scan(std::span<const AddressRange> ranges, std::span<uint8_t> referenced) = 0;
  // Runs one reclaim pass, `pass`, which calls scan() once. A scanner that must see the
  // calling thread's own frames records them here, before the pass's frames (which hold the
  // very addresses looked for) exist. The default just runs it.
  virtual void run_pass(const std::function<void()>& pass) { pass(); }
};

// When a heap reclaims on its own (Heap::set_reclaim_policy). A pass runs on the thread whose
// call triggered it, after the heap lock is released: a release or retire that grows the
// quarantine by `quarantined_bytes` past what the last pass left, or an allocation that finds
// no room (which then tries once more). The scanner must outlive the policy.
struct ReclaimPolicy {
  ReferenceScanner* scanner = nullptr;         // null: no automatic reclamation (the default)
  size_t quarantined_bytes = size_t{1} << 20;  // 0: only when an allocation fails
  bool on_allocation_failure = true;
};

struct ReclaimReport {
  size_t examined_blocks = 0;
  size_t reclaimed_blocks = 0;
  size_t reclaimed_bytes = 0;
  size_t still_referenced_blocks = 0;
  uint64_t duration_ns = 0;
  ScanReport scan;  // what the scanner reported (zero for a predicate)
};

class Heap {
 public:
  // Reserves and maps the region. Errors: kInvalidArgument (options), kPlacementFailed (no
  // room in the low 2 GiB; there is no fallback to high addresses), kSystemError.
  static Result<std::unique_ptr<Heap>> create(HeapOptions options = {});
  // Unmaps everything, live blocks included: no thread may still run code from this heap.
  ~Heap();
  Heap(const Heap&) = delete;
  Heap& operator=(const Heap&) = delete;

  // alignment: a power of two from 1 to the page size. size: 1 byte up to the arena size.
  // owner: kNoOwner or a registered, unretired owner. Errors: kInvalidArgument, kOutOfMemory
  // (the message names the requested, free and largest free bytes). A failure changes nothing
  // but the allocation_failures counter. The contents of a new block are unspecified.
  Result<Allocation> allocate(Arena arena, size_t size, size_t alignment, OwnerId owner = kNoOwner);

  // The blocks of one module in one call (one lock): registers an owner named `name` and
  // allocates one block per request for it, all or nothing. `blocks` receives them in request
  // order and must have one element per request. Errors as allocate, the message saying which
  // request failed; a failure leaves the heap as it was, owner included, but for the
  // allocation_failures counter.
  Result<OwnerId> allocate_group(std::string name, std::span<const BlockRequest> requests,
                                 std::span<Allocation> blocks);
  // The same for an owner registered earlier (register_owner, not retired), which the blocks
  // join: e.g. a module whose owner was chosen before its link. A failure leaves the owner as
  // it was; an unknown or retired owner is kInvalidArgument.
  Result<void> allocate_group(OwnerId owner, std::span<const BlockRequest> requests,
                              std::span<Allocation> blocks);

  // Live block -> quarantine, filled with trap bytes now. Detects double release and foreign
  // addresses, which leave the heap unchanged (but for the release_errors counter) and are
  // logged at warn. `address` must be what allocate returned: an interior address is
  // kForeignAddress. Once a block has been reclaimed its address is just free memory (or a new
  // block), so a release that late cannot be told from a foreign address (or a valid release).
  Result<void> release(uintptr_t address);
  // Live block -> quarantine with its bytes intact; trap-filled when reclaimed. Same checks.
  Result<void> retire(uintptr_t address);
  // Live block -> free list at once (trap-filled). Only for blocks no thread can have executed.
  Result<void> abandon(uintptr_t address);

  // The end of one owner (a module, a code unit) in one call, one lock and no lookup: every
  // live block of `owner`, however it was allocated, leaves by `exit` (blocks already released,
  // retired or abandoned on their own are not touched), then the owner retires with `on_gone`
  // (retire_owner). kAbandon frees at once and returns the pages, as abandon does: only for
  // blocks no thread can have executed (a failed link). An unknown or retired owner is
  // kInvalidArgument (counted in release_errors, the heap unchanged, `on_gone` dropped).
  Result<void> end_group(OwnerId owner, Exit exit, std::function<void()> on_gone = {});

  // One reclaim pass (codeheap/reclaim.cc): snapshots the quarantine, hands the footprints of
  // its blocks, sorted by address, to `scanner` once (without the heap lock: it may stop
  // threads and scan stacks, and those threads may be inside allocate or release right now),
  // moves every block it did not mark back to the free list (code trap-filled, neighbours
  // coalesced), runs the on_gone callbacks of owners thus emptied, and trims committed free
  // pages down to retain_free_bytes (a pass over an empty quarantine only trims). Blocks
  // quarantined meanwhile wait for the next pass; blocks another pass frees meanwhile are
  // skipped. The scanner must not call back into reclaim on the same heap.
  ReclaimReport reclaim(ReferenceScanner& scanner);
  // The same with a predicate per block for simple users: `is_referenced(begin, end)` for each
  // footprint [begin, end), in address order. A predicate that scans stacks must count a word
  // equal to `end` as a reference too (AddressRange).
  ReclaimReport reclaim(const std::function<bool(uintptr_t begin, uintptr_t end)>& is_referenced);
  // Reclaims on its own from now on as `policy` says (ReclaimPolicy); a policy without a
  // scanner turns that off. Waits for an automatic pass under way to finish.
  void set_reclaim_policy(const ReclaimPolicy& policy);
  // The quarantined ranges right now, sorted by address (for a caller that scans stacks).
  std::vector<BlockInfo> quarantined() const;

  // The block (live or quarantined) whose footprint contains `address`, in O(log n).
  std::optional<BlockInfo> find(uintptr_t address) const;
  // True if `address` lies anywhere in this heap's reservation (any arena).
  bool contains(uintptr_t address) const;
  // What a crash handler may say about `address`: the code block containing it (live,
  // quarantined, or the block last there if it is free now), its owner's name and the named
  // function. In the read-only and data arenas it says only the arena (kUntracked).
  // Takes no lock and allocates nothing: async-signal-safe, and it never waits for a thread
  // that holds the heap lock (fault_map.h). Returns false for an address outside the heap (and
  // for every address in a forked child, where none of the heap is mapped).
  bool describe(uintptr_t address, AddressInfo& info) const;
  // Names ranges (JIT functions) inside live blocks for describe(); each range must lie inside
  // one live block, else it is skipped and kInvalidArgument returned once the others are added.
  // A name lives as long as its block's record (fault_map.h).
  Result<void> add_symbols(std::span<const SymbolRange> symbols);
  // Translate an execution address inside kCode/kReadOnly to its writable alias (a kData
  // address is its own alias; nullptr outside the region).
  uint8_t* writable_alias(uintptr_t address) const;

  // Owners name the blocks in the dump. Retiring an owner keeps its record until its last
  // block leaves quarantine, so the dump can say what quarantined memory belonged to.
  // `on_gone`, if given, defers work until no thread can run the owner's code any more, such
  // as deregistering its unwind tables. Such an owner's quarantined blocks are reclaimed
  // together, once a pass finds none of them referenced (and none is live); `on_gone` runs
  // outside the heap lock just before they are freed, while their bytes are still intact. It
  // runs right away if the owner has no block left, and a heap destroyed first runs it in its
  // destructor.
  OwnerId register_owner(std::string name);
  void retire_owner(OwnerId owner, std::function<void()> on_gone = {});

  HeapStats stats() const;
  // The counters of stats() alone, in O(1).
  Counters counters() const;
  std::string dump_text() const;
  std::string dump_json() const;
  // A picture of the heap, SVG (codeheap/stats_svg.h): arenas as strips, blocks by state and
  // owner, committed pages, the headline numbers. map() is what it draws, with stats(), taken
  // in one snapshot (O(blocks + pages) under the lock); rendering happens after unlocking.
  std::string dump_svg() const;
  HeapMap map() const;

  // The options in effect: arena sizes rounded up to the page size.
  const HeapOptions& options() const;

 private:
  struct Impl;
  explicit Heap(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace codeheap
