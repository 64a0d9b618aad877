// EntryCell: the stable address of a redefinable function.
//
// A cell is two small heap blocks:
//
//   stub  Arena::kCode   FF 25 rel32     jmp *slot(%rip)     (then int3 padding)
//   slot  Arena::kData   8 bytes         address of the current body
//
// Callers call the stub, never a body, so redefining the function is a single atomic store
// into the slot: a call that already loaded the old address finishes in the old body, every
// later call runs the new one. The stub itself is written once and never patched, so no
// instruction bytes change under a running thread and no code page is ever written after
// publication. The rel32 reaches the slot because the heap's arenas share one low reservation.
//
// Engine::define_function is the usual way to get one; the class is public for runtimes that
// manage bodies themselves.
//
// Thread safety: address() and target() may be called from any thread concurrently with
// set_target(); concurrent set_target() calls race benignly (the last store wins).
#pragma once

#include <cstdint>
#include <memory>

#include "codeheap/heap.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/ExecutionEngine/Orc/Shared/ExecutorAddress.h"
#include "llvm/Support/Error.h"

namespace codeheap::jit {

class EntryCell {
 public:
  // Allocates the stub and the slot (heap owner "entry cell <name>") and points the slot at
  // `target`. The stub is executable as soon as this returns. Fails, leaving the heap
  // unchanged, if the heap has no room, or on hosts other than x86-64 (the only stub encoding
  // implemented).
  static llvm::Expected<std::unique_ptr<EntryCell>> create(Heap& heap, llvm::StringRef name,
                                                           llvm::orc::ExecutorAddr target);

  // Retires both blocks to the heap's quarantine (their bytes stay intact until a reclaim pass
  // proves no thread is in the stub). Callers must no longer call the stub.
  ~EntryCell();

  EntryCell(const EntryCell&) = delete;
  EntryCell& operator=(const EntryCell&) = delete;

  // The stub: what callers call. Constant for the cell's lifetime.
  llvm::orc::ExecutorAddr address() const { return llvm::orc::ExecutorAddr(stub_.address); }
  // Where the slot's 8 bytes live (low; in Arena::kData).
  llvm::orc::ExecutorAddr slot_address() const { return llvm::orc::ExecutorAddr(slot_.address); }

  // The current body (acquire load).
  llvm::orc::ExecutorAddr target() const;
  // Redirects every later call to `target` (one release store, so a thread that calls through
  // the stub after seeing it also sees the body's bytes).
  void set_target(llvm::orc::ExecutorAddr target);

 private:
  EntryCell(Heap& heap, OwnerId owner, Allocation stub, Allocation slot);

  Heap& heap_;
  OwnerId owner_;
  Allocation stub_;
  Allocation slot_;
};

}  // namespace codeheap::jit
