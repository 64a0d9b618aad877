// RtdyldMemoryManager: RuntimeDyld section memory on a codeheap::Heap, for MCJIT and
// llvm::orc::RTDyldObjectLinkingLayer users.
//
// Placement: code sections go to Arena::kCode, read-only data (including .eh_frame) to
// Arena::kReadOnly, read-write data to Arena::kData. Everything lies in the heap's low
// reservation, so CodeModel::Small, pc-relative calls and 32-bit absolute jump-table entries
// resolve between any two sections.
//
// Two addresses per section: RuntimeDyld copies section contents and applies relocations
// through the pointer an allocate*Section call returns, and by default also treats that
// pointer as the address the code runs at. Code and read-only data must be written through
// the heap's read-write alias but run (and be read) at the low execution address, so the
// manager hands out the alias and, in notifyObjectLoaded(RuntimeDyld&, ...), which RuntimeDyld
// calls after laying out an object and before resolving any relocation, remaps every such
// section to its execution address (RuntimeDyld::mapSectionAddress). From then on symbol
// addresses, relocations, jump tables, eh_frame and the debug object all use the execution
// address. No page permission ever changes (finalizeMemory only flushes the icache).
//
// Ownership: RuntimeDyld users own the manager (MCJIT via EngineBuilder::setMCJITMemoryManager,
// RTDyldObjectLinkingLayer via its GetMemoryManager callback, one manager per object). Each
// object loaded through the manager gets its own heap owner, named after the manager, so the
// heap dump names the code. Destroying the manager retires every block with its owner, one
// heap call per object (Heap::end_group: into quarantine with its bytes intact, so an
// activation still running the code, e.g. of a closure the GC finalized, finishes normally; the
// block is reused only after a reclaim pass, the caller's or the heap's own under a
// ReclaimPolicy, proves no thread references it). Each object's eh_frames stay registered until
// then: deregisterEHFrames, which MCJIT and RTDyldObjectLinkingLayer call just before dropping
// the manager, does nothing, and the heap deregisters the frames when it reclaims the object's
// blocks (an owner's on_gone), so a thread still inside the code can unwind through it.
//
// Errors: when the heap cannot place a section, LLVM 19's RuntimeDyld would abort the process
// if the manager returned nullptr ("Unable to allocate section memory!"). Instead the manager
// serves that object's remaining sections from ordinary non-executable scratch memory, logs
// the heap's message and fails finalizeMemory with it: RTDyldObjectLinkingLayer turns that
// into the llvm::Error of the lookup; MCJIT ignores finalizeMemory's result, so MCJIT users
// check status() after ExecutionEngine::finalizeObject() and must not call into a failed
// object (its frames are not registered either). Blocks of a failed object never ran, so they
// are abandoned (straight to the free list) when the manager goes away.
//
// Thread safety: none; one RuntimeDyld drives a manager at a time, as MCJIT (under its lock)
// and RTDyldObjectLinkingLayer (one manager per object) do.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "codeheap/heap.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ExecutionEngine/RTDyldMemoryManager.h"
#include "llvm/Support/Error.h"

namespace codeheap::jit {

class RtdyldMemoryManager : public llvm::RTDyldMemoryManager {
 public:
  // One loaded section, by its execution address (what the CPU and symbol lookups see).
  struct Section {
    std::string name;
    uintptr_t address = 0;
    size_t size = 0;
    Arena arena = Arena::kCode;
  };

  // `heap` must outlive the manager. `name` names the heap owners ("<name>", then
  // "<name>#2", ... for further objects loaded through the same manager).
  RtdyldMemoryManager(Heap& heap, std::string name);
  ~RtdyldMemoryManager() override;

  // Resolve `symbol` (as the object file spells it) to `address` before looking in the
  // process (RTDyldMemoryManager::getSymbolAddressInProcess). This is how JIT code reaches
  // host functions; calls to them go through RuntimeDyld's stubs, so they work from the low
  // region under CodeModel::Small wherever the host lives.
  void define_symbol(llvm::StringRef symbol, uint64_t address);

  // Success if every section so far was placed in the heap; otherwise the first failure, as a
  // jit::HeapError (jit/error.h) that keeps the heap's ErrorCode and names the section, the
  // arena and the heap's reason (e.g. kOutOfMemory: collect, reclaim and retry).
  llvm::Error status() const;

  // Every section this manager placed in the heap, in allocation order.
  const std::vector<Section>& sections() const { return sections_; }

  // llvm::RuntimeDyld::MemoryManager
  uint8_t* allocateCodeSection(uintptr_t size, unsigned alignment, unsigned section_id,
                               llvm::StringRef section_name) override;
  uint8_t* allocateDataSection(uintptr_t size, unsigned alignment, unsigned section_id,
                               llvm::StringRef section_name, bool is_read_only) override;
  bool needsToReserveAllocationSpace() override { return true; }
  void reserveAllocationSpace(uintptr_t code_size, llvm::Align code_align, uintptr_t read_only_size,
                              llvm::Align read_only_align, uintptr_t read_write_size,
                              llvm::Align read_write_align) override;
  using llvm::RTDyldMemoryManager::notifyObjectLoaded;
  void notifyObjectLoaded(llvm::RuntimeDyld& dyld, const llvm::object::ObjectFile& object) override;
  void registerEHFrames(uint8_t* address, uint64_t load_address, size_t size) override;
  void deregisterEHFrames() override;
  bool finalizeMemory(std::string* error_message = nullptr) override;

  // llvm::RTDyldMemoryManager
  uint64_t getSymbolAddress(const std::string& name) override;

 private:
  // A block reserved for one object and arena, carved into that object's sections.
  struct Reservation {
    uintptr_t address = 0;
    uint8_t* writable = nullptr;
    size_t size = 0;
    size_t used = 0;
  };
  // A section written through an alias, not yet remapped to its execution address.
  struct PendingRemap {
    const uint8_t* writable;
    size_t section;  // index into sections_
  };
  struct Block {
    uintptr_t address;
    OwnerId owner;
    bool failed_object;  // never ran: abandon instead of retire
  };
  // Registered frames, by the owner whose reclaim deregisters them.
  struct EHFrame {
    OwnerId owner;
    uint8_t* address;
    size_t size;
  };

  uint8_t* allocate(Arena arena, uintptr_t size, unsigned alignment, llvm::StringRef name);
  void fail(Arena arena, uintptr_t size, unsigned alignment, llvm::StringRef name,
            codeheap::Error error);
  uint8_t* allocate_scratch(uintptr_t size, unsigned alignment);
  OwnerId current_owner();
  bool in_failed_object(const BlockInfo& block) const;

  Heap& heap_;
  std::string name_;
  llvm::StringMap<uint64_t> symbols_;

  std::vector<Block> blocks_;
  std::vector<Section> sections_;
  std::vector<OwnerId> owners_;
  std::vector<EHFrame> frames_;
  size_t first_unflushed_section_ = 0;

  // The object being loaded: from reserveAllocationSpace (or its first allocation) to
  // notifyObjectLoaded.
  OwnerId current_owner_ = kNoOwner;
  Reservation reservations_[kArenaCount];
  std::vector<PendingRemap> pending_remaps_;
  size_t current_object_first_block_ = 0;
  bool current_object_failed_ = false;

  // After a failed heap allocation the rest of the object goes to scratch_, so RuntimeDyld
  // finishes instead of aborting; the failure is reported by the next finalizeMemory.
  std::optional<codeheap::Error> error_;
  std::string unreported_failure_;
  std::vector<std::unique_ptr<uint8_t[]>> scratch_;
};

}  // namespace codeheap::jit
