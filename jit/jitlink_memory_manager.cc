#include "jit/jitlink_memory_manager.h"

#include <algorithm>
#include <functional>
#include <utility>

#include "codeheap/log.h"
#include "jit/error.h"
#include "jit/segment_layout.h"
#include "llvm/ADT/BitmaskEnum.h"
#include "llvm/ExecutionEngine/JITLink/JITLink.h"
#include "llvm/Support/Memory.h"

namespace codeheap::jit {

using llvm::Error;
using llvm::Expected;
using llvm::jitlink::LinkGraph;
using llvm::orc::AllocGroup;
using llvm::orc::ExecutorAddr;
using llvm::orc::MemLifetime;
using llvm::orc::MemProt;

// MemProt's bitwise operators live in namespace llvm; this pulls them in.
LLVM_ENABLE_BITMASK_ENUMS_IN_NAMESPACE();

namespace {

Expected<Arena> arena_for(MemProt prot, const LinkGraph& graph) {
  const bool exec = (prot & MemProt::Exec) != MemProt::None;
  const bool write = (prot & MemProt::Write) != MemProt::None;
  if (exec && write) {
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   "graph %s has a writable and executable segment; the code "
                                   "heap keeps W^X and has no such memory",
                                   graph.getName().c_str());
  }
  if (exec) return Arena::kCode;
  if (write) return Arena::kData;
  return Arena::kReadOnly;
}

}  // namespace

// What a FinalizedAlloc holds. Usually just the heap owner of the link's blocks, tagged in bit 0
// (Heap::end_group ends them by owner): no object to allocate and free per link. A link with
// dealloc actions gets a Finalized object instead (its address, bit 0 clear).
struct HeapJITLinkMemoryManager::Finalized {
  std::vector<llvm::orc::shared::WrapperFunctionCall> dealloc_actions;
  OwnerId owner;
};

namespace {

ExecutorAddr tag_owner(OwnerId owner) { return ExecutorAddr((owner << 1) | 1); }
bool is_tagged_owner(ExecutorAddr addr) { return (addr.getValue() & 1) != 0; }
OwnerId tagged_owner(ExecutorAddr addr) { return addr.getValue() >> 1; }

}  // namespace

class HeapJITLinkMemoryManager::InFlight final
    : public llvm::jitlink::JITLinkMemoryManager::InFlightAlloc {
 public:
  InFlight(HeapJITLinkMemoryManager& manager, LinkGraph& graph)
      : manager_(manager), graph_(graph) {}

  // JITLink always ends an in-flight allocation with finalize or abandon; if one is dropped
  // anyway (a caller bailing out), its memory must not stay allocated for ever.
  ~InFlight() override {
    if (!done_) {
      if (Error err = give_back())
        manager_.log_->error("dropping in-flight allocation of {}: {}", graph_.getName(),
                             llvm::toString(std::move(err)));
    }
  }

  void abandon(OnAbandonedFunction on_abandoned) override { on_abandoned(give_back()); }

  void finalize(OnFinalizedFunction on_finalized) override {
    // The bytes were written through the heap's writable alias and the execution view already
    // has its final protection, so there is nothing to mprotect. Only ISAs whose instruction
    // cache does not snoop stores need the flush (a no-op on x86-64).
    for (size_t i = 0; i < blocks_.size(); ++i) {
      if ((groups_[i].getMemProt() & MemProt::Exec) != MemProt::None)
        llvm::sys::Memory::InvalidateInstructionCache(
            reinterpret_cast<const void*>(blocks_[i].address), blocks_[i].size);
    }

    std::unique_ptr<Finalized> finalized;
    // Most small modules have no actions (no unwind tables to register); LLVM's runner would
    // still build and return an empty list.
    if (!graph_.allocActions().empty()) {
      // On failure runFinalizeActions has already undone the actions that succeeded.
      auto dealloc_actions = llvm::orc::shared::runFinalizeActions(graph_.allocActions());
      if (!dealloc_actions) {
        on_finalized(llvm::joinErrors(dealloc_actions.takeError(), give_back()));
        return;
      }
      if (!dealloc_actions->empty()) {
        finalized = std::make_unique<Finalized>();
        finalized->dealloc_actions = std::move(*dealloc_actions);
      }
    }
    Error err = Error::success();
    for (size_t i = 0; i < blocks_.size(); ++i) {
      if (groups_[i].getMemLifetime() == MemLifetime::Finalize) {
        // Only finalize actions used these, and they have all returned. (The heap drops an
        // abandoned block from its owner's group.)
        err = llvm::joinErrors(std::move(err),
                               to_llvm_error(manager_.heap_.abandon(blocks_[i].address)));
      }
    }
    blocks_.clear();
    done_ = true;
    if (err) {
      // A finalize segment the heap does not know: the link itself succeeded and its code may
      // already be referenced, so keep it rather than fail after the fact; report the bug.
      manager_.log_->error("finalizing {}: {}", graph_.getName(), llvm::toString(std::move(err)));
    }
    if (!finalized) return on_finalized(FinalizedAlloc(tag_owner(owner_)));
    finalized->owner = owner_;
    on_finalized(FinalizedAlloc(ExecutorAddr::fromPtr(finalized.release())));
  }

 private:
  friend class HeapJITLinkMemoryManager;

  // Every block of the link back to the free list, pages included, and the owner retired
  // (one the caller placed the graph under stays, for the caller).
  Error give_back() {
    done_ = true;
    if (!placed_) {
      blocks_.clear();
      return to_llvm_error(manager_.heap_.end_group(owner_, Exit::kAbandon));
    }
    Error err = Error::success();
    for (size_t i = blocks_.size(); i-- > 0;)  // newest first, as end_group abandons
      err = llvm::joinErrors(std::move(err),
                             to_llvm_error(manager_.heap_.abandon(blocks_[i].address)));
    blocks_.clear();
    return err;
  }

  HeapJITLinkMemoryManager& manager_;
  LinkGraph& graph_;
  // One heap block per segment; the heap writes them in place (allocate_group).
  llvm::SmallVector<AllocGroup, 3> groups_;
  llvm::SmallVector<Allocation, 3> blocks_;
  OwnerId owner_ = kNoOwner;
  bool placed_ = false;  // owner_ is the caller's (place_under)
  bool done_ = false;
};

HeapJITLinkMemoryManager::HeapJITLinkMemoryManager(Heap& heap, RetireMode retire_mode)
    : heap_(heap), retire_mode_(retire_mode), log_(codeheap::logger("jit")) {}

HeapJITLinkMemoryManager::~HeapJITLinkMemoryManager() = default;

void HeapJITLinkMemoryManager::allocate(const llvm::jitlink::JITLinkDylib*, LinkGraph& graph,
                                        OnAllocatedFunction on_allocated) {
  const Segments segments = lay_out(graph);
  auto in_flight = std::make_unique<InFlight>(*this, graph);
  llvm::SmallVector<BlockRequest, 3> requests;
  for (const Segment& s : segments) {
    auto arena = arena_for(s.group.getMemProt(), graph);
    if (!arena) {
      in_flight->done_ = true;  // nothing allocated yet
      return on_allocated(arena.takeError());
    }
    // Filled in place, field by field (docs/performance-notes.md, "BlockRequest filled in
    // place").
    BlockRequest& request = requests.emplace_back();
    request.arena = *arena;
    // A segment can consist of empty blocks only; the heap has no zero-sized blocks.
    request.size = static_cast<size_t>(std::max<uint64_t>(s.bytes, 1));
    request.alignment = static_cast<size_t>(s.alignment);
    in_flight->groups_.push_back(s.group);
  }
  // One heap call for the whole graph: its owner (named after the graph, for dumps, unless the
  // caller placed the graph under one) and every segment's block, or nothing at all.
  in_flight->blocks_.resize(requests.size());
  const OwnerId placed = take_placement(graph);
  Result<OwnerId> owner = placed;
  if (placed == kNoOwner) {
    owner = heap_.allocate_group(graph.getName(), requests, in_flight->blocks_);
  } else if (Result<void> joined = heap_.allocate_group(placed, requests, in_flight->blocks_);
             !joined) {
    owner = tl::make_unexpected(std::move(joined.error()));
  }
  if (!owner) {
    in_flight->blocks_.clear();
    in_flight->done_ = true;
    return on_allocated(llvm::joinErrors(
        llvm::createStringError(llvm::inconvertibleErrorCode(),
                                "cannot place graph %s in heap '%s'", graph.getName().c_str(),
                                heap_.options().name.c_str()),
        to_llvm_error(std::move(owner.error()))));
  }
  in_flight->owner_ = *owner;
  in_flight->placed_ = placed != kNoOwner;
  for (size_t i = 0; i < segments.size(); ++i) {
    const Allocation& block = in_flight->blocks_[i];
    place(segments[i], block);
    if (log_->should_log(spdlog::level::debug)) {
      log_->debug(
          "{}: {} segment ({}) at [{:#x}, {:#x})", graph.getName(), to_string(requests[i].arena),
          segments[i].group.getMemLifetime() == MemLifetime::Finalize ? "finalize" : "standard",
          block.address, block.address + segments[i].bytes);
    }
  }
  on_allocated(std::move(in_flight));
}

void HeapJITLinkMemoryManager::place_under(const LinkGraph& graph, OwnerId owner) {
  std::lock_guard lock(placements_mutex_);
  if (placements_.insert_or_assign(&graph, owner).second) ++placement_count_;
}

void HeapJITLinkMemoryManager::forget_placement(const LinkGraph& graph) { take_placement(graph); }

OwnerId HeapJITLinkMemoryManager::take_placement(const LinkGraph& graph) {
  if (placement_count_.load(std::memory_order_acquire) == 0) return kNoOwner;
  std::lock_guard lock(placements_mutex_);
  auto it = placements_.find(&graph);
  if (it == placements_.end()) return kNoOwner;
  const OwnerId owner = it->second;
  placements_.erase(it);
  --placement_count_;
  return owner;
}

void HeapJITLinkMemoryManager::deallocate(std::vector<FinalizedAlloc> allocs,
                                          OnDeallocatedFunction on_deallocated) {
  Error err = Error::success();
  // The interface runs allocations' dealloc actions from the last allocation to the first.
  const Exit exit = retire_mode_ == RetireMode::kKeepRunning ? Exit::kRetire : Exit::kRelease;
  for (auto it = allocs.rbegin(); it != allocs.rend(); ++it) {
    const ExecutorAddr addr = it->release();
    if (is_tagged_owner(addr)) {
      err = llvm::joinErrors(std::move(err),
                             to_llvm_error(heap_.end_group(tagged_owner(addr), exit)));
      continue;
    }
    std::unique_ptr<Finalized> finalized(addr.toPtr<Finalized*>());
    // The dealloc actions (eh_frame deregistration) wait until the heap has reclaimed the
    // blocks: a thread still running the retired code must be able to unwind through it.
    std::function<void()> on_gone;
    if (!finalized->dealloc_actions.empty()) {
      on_gone = [actions = std::move(finalized->dealloc_actions)] {
        if (Error failed = llvm::orc::shared::runDeallocActions(actions)) {
          codeheap::logger("jit")->error("dealloc actions of retired code: {}",
                                         llvm::toString(std::move(failed)));
        }
      };
    }
    err = llvm::joinErrors(
        std::move(err), to_llvm_error(heap_.end_group(finalized->owner, exit, std::move(on_gone))));
  }
  on_deallocated(std::move(err));
}

}  // namespace codeheap::jit
