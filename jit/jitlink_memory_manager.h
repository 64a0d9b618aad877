// A JITLink memory manager that places every linked graph in a codeheap::Heap.
//
// Plug it into any ORC setup that uses JITLink:
//
//   auto heap = codeheap::Heap::create();                       // low region, < 2 GiB
//   codeheap::jit::HeapJITLinkMemoryManager mem(**heap);       // must outlive the layer
//   llvm::orc::ObjectLinkingLayer layer(session, mem);
//
// Placement. Each segment of a graph (its sections grouped by protection and lifetime, laid out
// as jitlink::BasicLayout would) becomes one heap block: executable segments in Arena::kCode,
// read-only segments (including JITLink's GOT) in Arena::kReadOnly, writable segments in
// Arena::kData. JITLink writes and
// fixes up the bytes through the heap's writable alias while the addresses it resolves are the
// low execution addresses, so the Small code model, pc-relative calls and 32-bit absolute
// references reach every block of the heap. A segment that is both writable and executable is
// refused: the heap never has such memory (W^X).
//
// Lifetimes follow orc::MemLifetime: Standard segments live until `deallocate`; Finalize
// segments are handed back to the free list as soon as finalization has run; NoAlloc sections
// (debug info that only tools read) are never placed in the heap, their content stays in the
// LinkGraph's own host memory.
//
// Finalization flips no page protection (the heap's views already have the final ones); it
// invalidates the instruction cache for code segments where the ISA needs it, then runs the
// graph's finalize actions (e.g. eh_frame registration) and keeps their dealloc actions.
//
// Every allocation registers a heap owner named after the LinkGraph (or uses the one the caller
// chose, place_under), so dumps show which module a block belongs to; the owner is retired when
// the allocation is deallocated or abandoned.
// A failed or abandoned link returns every byte to the free list at once (Heap::abandon): the
// heap statistics are as they were. `deallocate` moves the blocks to the heap's quarantine; they
// reach the free list only through a reclaim pass, and only then do the dealloc actions run
// (eh_frame deregistration), so a thread still inside retired code can unwind through it.
// Without a runtime that reclaims, let the heap do it: register every thread that runs JIT code
// with a scan::ThreadRegistry (scan/thread_registry.h) and give it to the heap as the scanner of
// a ReclaimPolicy; passes then run inside deallocate (the quarantine grew past the threshold)
// and allocate (no room):
//
//   auto registry = codeheap::scan::ThreadRegistry::create();  // then register the threads
//   heap.set_reclaim_policy({.scanner = registry->get()});      // 1 MiB threshold by default
//
// Thread safety: all members may be called concurrently (JITLink may link on several threads);
// the only shared state is the heap, which is thread-safe.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "codeheap/heap.h"
#include "jit/options.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ExecutionEngine/JITLink/JITLinkMemoryManager.h"

namespace spdlog {
class logger;
}

namespace codeheap::jit {

class HeapJITLinkMemoryManager final : public llvm::jitlink::JITLinkMemoryManager {
 public:
  // `heap` must outlive this manager, and this manager must outlive every allocation it made
  // (in ORC: the ObjectLinkingLayer / ExecutionSession using it).
  explicit HeapJITLinkMemoryManager(Heap& heap, RetireMode retire_mode = RetireMode::kKeepRunning);
  ~HeapJITLinkMemoryManager() override;

  HeapJITLinkMemoryManager(const HeapJITLinkMemoryManager&) = delete;
  HeapJITLinkMemoryManager& operator=(const HeapJITLinkMemoryManager&) = delete;

  void allocate(const llvm::jitlink::JITLinkDylib* dylib, llvm::jitlink::LinkGraph& graph,
                OnAllocatedFunction on_allocated) override;
  using llvm::jitlink::JITLinkMemoryManager::allocate;

  void deallocate(std::vector<FinalizedAlloc> allocs,
                  OnDeallocatedFunction on_deallocated) override;
  using llvm::jitlink::JITLinkMemoryManager::deallocate;

  // Places the blocks of `graph` under `owner` (registered and not retired, e.g. a module's
  // owner chosen before its link) instead of a new owner named after the graph: the caller's
  // id then names the link's blocks from the start. Call it before the link allocates (from a
  // plugin's modifyPassConfig). A failed link gives its blocks back and leaves the owner to the
  // caller; deallocating the finalized allocation retires the owner, as for any link.
  void place_under(const llvm::jitlink::LinkGraph& graph, OwnerId owner);
  // Drops a placement whose link ended before allocating (a plugin's notifyFailed).
  void forget_placement(const llvm::jitlink::LinkGraph& graph);

 private:
  class InFlight;
  struct Finalized;

  // The placement made for `graph`, taken out; kNoOwner if none.
  OwnerId take_placement(const llvm::jitlink::LinkGraph& graph);

  Heap& heap_;
  RetireMode retire_mode_;
  std::shared_ptr<spdlog::logger> log_;
  std::mutex placements_mutex_;
  llvm::DenseMap<const llvm::jitlink::LinkGraph*, OwnerId> placements_;
  std::atomic<size_t> placement_count_{0};  // links without one skip the lock
};

}  // namespace codeheap::jit
