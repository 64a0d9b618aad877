#include "jit/jitlink_memory_manager.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "codeheap/log.h"
#include "jit/error.h"
#include "llvm/ADT/BitmaskEnum.h"
#include "llvm/ExecutionEngine/JITLink/JITLink.h"
#include "llvm/Support/Memory.h"

namespace codeheap::jit {

using llvm::Error;
using llvm::Expected;
using llvm::jitlink::BasicLayout;
using llvm::jitlink::LinkGraph;
using llvm::orc::AllocGroup;
using llvm::orc::ExecutorAddr;
using llvm::orc::MemLifetime;
using llvm::orc::MemProt;

// MemProt's bitwise operators live in namespace llvm; this pulls them in.
LLVM_ENABLE_BITMASK_ENUMS_IN_NAMESPACE();

namespace {

// One segment of a graph, placed in one heap block.
struct SegmentBlock {
  AllocGroup group;
  Allocation block;
};

Expected<Arena> arenaFor(MemProt prot, const LinkGraph& graph) {
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

// Returns the blocks of a link that never ran to the free list. Heap::abandon fails only for
// an address that is not a live block of the heap, i.e. a bug here or in the heap; that is
// reported, and the remaining blocks are still returned.
Error abandonAll(Heap& heap, std::vector<SegmentBlock>& blocks) {
  Error err = Error::success();
  for (const SegmentBlock& s : blocks)
    err = llvm::joinErrors(std::move(err), toLLVMError(heap.abandon(s.block.address)));
  blocks.clear();
  return err;
}

}  // namespace

// What a FinalizedAlloc's address points to: everything `deallocate` needs.
struct HeapJITLinkMemoryManager::Finalized {
  std::vector<Allocation> blocks;  // Standard-lifetime segments only
  std::vector<llvm::orc::shared::WrapperFunctionCall> dealloc_actions;
  OwnerId owner;
};

class HeapJITLinkMemoryManager::InFlight final
    : public llvm::jitlink::JITLinkMemoryManager::InFlightAlloc {
 public:
  InFlight(HeapJITLinkMemoryManager& manager, LinkGraph& graph, std::vector<SegmentBlock> blocks,
           OwnerId owner)
      : manager_(manager), graph_(graph), blocks_(std::move(blocks)), owner_(owner) {}

  // JITLink always ends an in-flight allocation with finalize or abandon; if one is dropped
  // anyway (a caller bailing out), its memory must not stay allocated for ever.
  ~InFlight() override {
    if (!done_) {
      if (Error err = giveBack())
        manager_.log_->error("dropping in-flight allocation of {}: {}", graph_.getName(),
                             llvm::toString(std::move(err)));
    }
  }

  void abandon(OnAbandonedFunction on_abandoned) override { on_abandoned(giveBack()); }

  void finalize(OnFinalizedFunction on_finalized) override {
    // The bytes were written through the heap's writable alias and the execution view already
    // has its final protection, so there is nothing to mprotect. Only ISAs whose instruction
    // cache does not snoop stores need the flush (a no-op on x86-64).
    for (const SegmentBlock& s : blocks_) {
      if ((s.group.getMemProt() & MemProt::Exec) != MemProt::None)
        llvm::sys::Memory::InvalidateInstructionCache(
            reinterpret_cast<const void*>(s.block.address), s.block.size);
    }

    // On failure runFinalizeActions has already undone the actions that succeeded.
    auto dealloc_actions = llvm::orc::shared::runFinalizeActions(graph_.allocActions());
    if (!dealloc_actions) {
      on_finalized(llvm::joinErrors(dealloc_actions.takeError(), giveBack()));
      return;
    }

    auto finalized = std::make_unique<Finalized>();
    finalized->dealloc_actions = std::move(*dealloc_actions);
    finalized->owner = owner_;
    Error err = Error::success();
    for (const SegmentBlock& s : blocks_) {
      if (s.group.getMemLifetime() == MemLifetime::Finalize) {
        // Only finalize actions used these, and they have all returned.
        err = llvm::joinErrors(std::move(err), toLLVMError(manager_.heap_.abandon(s.block.address)));
      } else {
        finalized->blocks.push_back(s.block);
      }
    }
    blocks_.clear();
    done_ = true;
    if (err) {
      // A finalize segment the heap does not know: the link itself succeeded and its code may
      // already be referenced, so keep it rather than fail after the fact; report the bug.
      manager_.log_->error("finalizing {}: {}", graph_.getName(), llvm::toString(std::move(err)));
    }
    on_finalized(FinalizedAlloc(ExecutorAddr::fromPtr(finalized.release())));
  }

 private:
  Error giveBack() {
    Error err = abandonAll(manager_.heap_, blocks_);
    manager_.heap_.retire_owner(owner_);
    done_ = true;
    return err;
  }

  HeapJITLinkMemoryManager& manager_;
  LinkGraph& graph_;
  std::vector<SegmentBlock> blocks_;
  OwnerId owner_;
  bool done_ = false;
};

HeapJITLinkMemoryManager::HeapJITLinkMemoryManager(Heap& heap, RetireMode retire_mode)
    : heap_(heap), retire_mode_(retire_mode), log_(codeheap::logger("jit")) {}

HeapJITLinkMemoryManager::~HeapJITLinkMemoryManager() = default;

void HeapJITLinkMemoryManager::allocate(const llvm::jitlink::JITLinkDylib*, LinkGraph& graph,
                                        OnAllocatedFunction on_allocated) {
  BasicLayout layout(graph);
  const OwnerId owner = heap_.register_owner(graph.getName());
  std::vector<SegmentBlock> blocks;

  auto fail = [&](Error err) {
    err = llvm::joinErrors(std::move(err), abandonAll(heap_, blocks));
    heap_.retire_owner(owner);
    on_allocated(std::move(err));
  };

  for (auto& [group, segment] : layout.segments()) {
    auto arena = arenaFor(group.getMemProt(), graph);
    if (!arena) return fail(arena.takeError());
    const size_t size = segment.ContentSize + segment.ZeroFillSize;
    // A segment can consist of empty blocks only; the heap has no zero-sized blocks.
    auto block = heap_.allocate(*arena, std::max<size_t>(size, 1), segment.Alignment.value(), owner);
    if (!block) {
      return fail(llvm::joinErrors(
          llvm::createStringError(llvm::inconvertibleErrorCode(),
                                  "cannot place %zu bytes of segment %s for graph %s", size,
                                  to_string(*arena), graph.getName().c_str()),
          toLLVMError(std::move(block.error()))));
    }
    // Reused blocks hold old bytes or trap bytes; zero-fill blocks and the padding between
    // blocks must read as zero.
    std::memset(block->writable, 0, size);
    segment.WorkingMem = reinterpret_cast<char*>(block->writable);
    segment.Addr = ExecutorAddr(block->address);
    blocks.push_back({group, *block});
    log_->debug("{}: {} segment ({}) at [{:#x}, {:#x})", graph.getName(), to_string(*arena),
                group.getMemLifetime() == MemLifetime::Finalize ? "finalize" : "standard",
                block->address, block->address + size);
  }

  // Copies block content into working memory and assigns every block its final address.
  if (Error err = layout.apply()) return fail(std::move(err));

  on_allocated(std::make_unique<InFlight>(*this, graph, std::move(blocks), owner));
}

void HeapJITLinkMemoryManager::deallocate(std::vector<FinalizedAlloc> allocs,
                                          OnDeallocatedFunction on_deallocated) {
  Error err = Error::success();
  // The interface runs allocations' dealloc actions from the last allocation to the first.
  for (auto it = allocs.rbegin(); it != allocs.rend(); ++it) {
    std::unique_ptr<Finalized> finalized(it->release().toPtr<Finalized*>());
    for (const Allocation& block : finalized->blocks) {
      auto result = retire_mode_ == RetireMode::kKeepRunning ? heap_.retire(block.address)
                                                             : heap_.release(block.address);
      err = llvm::joinErrors(std::move(err), toLLVMError(std::move(result)));
    }
    // The dealloc actions (eh_frame deregistration) wait until the heap has reclaimed the
    // blocks: a thread still running the retired code must be able to unwind through it.
    heap_.retire_owner(finalized->owner,
                       [actions = std::move(finalized->dealloc_actions)] {
                         if (Error failed = llvm::orc::shared::runDeallocActions(actions)) {
                           codeheap::logger("jit")->error("dealloc actions of retired code: {}",
                                                          llvm::toString(std::move(failed)));
                         }
                       });
  }
  on_deallocated(std::move(err));
}

}  // namespace codeheap::jit
