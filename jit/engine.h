// Engine: an ORC LLJIT whose code and data live in a codeheap::Heap. What it sets up (JITLink on
// HeapJITLinkMemoryManager, the Small code model, eh_frame registration that lasts until the
// heap reclaims the code, symbol resolution, perf map / GDB plugins) and why: docs/jit.md, "The
// engine".
//
// Modules are linked eagerly: add_module compiles and links every definition before returning,
// so every error (bad IR, an undefined symbol, static initializers, which are refused, a full
// heap) surfaces there, attributed to the module. A module may refer to symbols of modules added
// before it, to host symbols and (unless disabled) to process symbols. remove_module sends the
// module's blocks to the heap's quarantine (RetireMode); a reclaim pass frees them once nothing
// references them. The engine does not know who still runs removed code; the caller does.
// define_function gives a name a stable entry-cell stub: redefining it switches every caller to
// the new body and retires the old one (docs/jit.md, "Entry cells and hot-swap").
//
// Errors: llvm::Error / Expected, naming the module or symbol. A failed add_module or
// define_function leaves the heap statistics (counters aside) as they were. Heap failures arrive
// as jit::HeapError (is_out_of_memory: collect, reclaim, retry; link_module can keep the object
// code for that retry, CompiledModule).
//
// Threading: all members may be called from any thread concurrently; compilation happens on the
// calling thread; define_function calls are serialized with each other (not with add_module or
// lookup). The Heap must outlive the Engine; destroying the Engine removes every module (to
// quarantine) and retires the entry cells, so no JIT code may run during or after destruction.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "codeheap/heap.h"
#include "jit/jitlink_memory_manager.h"
#include "jit/options.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h"
#include "llvm/ExecutionEngine/Orc/ObjectLinkingLayer.h"
#include "llvm/ExecutionEngine/Orc/Shared/ExecutorAddress.h"
#include "llvm/ExecutionEngine/Orc/ThreadSafeModule.h"
#include "llvm/IR/DataLayout.h"
#include "llvm/Support/CodeGen.h"
#include "llvm/Support/Error.h"
#include "llvm/TargetParser/Triple.h"

namespace codeheap::jit {

// The target configuration the engine compiles for: the host, with `options`' code model,
// relocation model and optimization level. Initializes the native target on first use.
llvm::Expected<llvm::orc::JITTargetMachineBuilder> target_machine_builder(
    const EngineOptions& options);

// Names one module added with Engine::add_module: the heap owner of its blocks, the module's one
// identity from the heap up (the dump, crash reports and a runtime's code object all use it).
// Owner ids are never reused within a heap.
struct ModuleHandle {
  OwnerId owner = kNoOwner;
  friend bool operator==(ModuleHandle, ModuleHandle) = default;
};

// The object code of a module that Engine::link_module compiled but could not link for lack of
// heap space, with what its link needs: link_module(CompiledModule) links it as the failed call
// would have, without compiling. Empty unless such a failure filled it. Must not outlive the
// Engine that made it.
class CompiledModule {
 public:
  CompiledModule();
  ~CompiledModule();
  CompiledModule(CompiledModule&&) noexcept;
  CompiledModule& operator=(CompiledModule&&) noexcept;

  explicit operator bool() const { return state_ != nullptr; }
  // The module's name as given to link_module, and the bytes of object code kept.
  llvm::StringRef name() const;
  size_t object_bytes() const;

 private:
  friend class Engine;
  struct State;
  std::unique_ptr<State> state_;
};

// What Engine::link_module reports of one module's link.
struct LinkedModule {
  ModuleHandle handle;
  // Every definition the module exports (not local, not a declaration), by its name in the IR
  // (unmangled), at the address the link gave it.
  llvm::StringMap<llvm::orc::ExecutorAddr> definitions;
  // The bytes of the heap blocks the module keeps (code with its stubs, read-only data with its
  // GOT, data), each block's footprint as Heap::stats counts it. Blocks that only live through
  // finalization are given back at once and not counted.
  uint64_t heap_bytes = 0;
};

class Engine {
 public:
  static llvm::Expected<std::unique_ptr<Engine>> create(Heap& heap, EngineOptions options = {});
  ~Engine();

  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Verifies, compiles and links `module` (its identifier becomes `name`, which appears in heap
  // owner names, logs and errors). Fails on invalid IR, a symbol the module defines that is
  // already defined, a reference no definition satisfies, static initializers, or a full heap.
  llvm::Expected<ModuleHandle> add_module(llvm::orc::ThreadSafeModule module, llvm::StringRef name);
  // Same, from textual LLVM IR (parsed into a context of its own).
  llvm::Expected<ModuleHandle> add_module(llvm::StringRef ir_text, llvm::StringRef name);
  // add_module, also returning the module's definitions and heap bytes as its link produced
  // them (no lookup per definition afterwards). With `keep_if_out_of_memory`: when the link
  // fails because the heap is full (is_out_of_memory), *keep_if_out_of_memory receives the module's
  // object code (it is left empty otherwise), so the caller can make room and link it again
  // without compiling it again, for a copy of the object code on every link (docs/jit.md,
  // "Errors").
  // `owner`: a heap owner the caller registered for this module (Heap::register_owner), so that
  // it knows the module's id before the link (a runtime names the module's symbols after it);
  // the module's blocks join it and remove_module retires it. A failed link leaves it registered,
  // without blocks, to the caller (and to a CompiledModule kept for the second link).
  // kNoOwner: the engine registers one named `name`.
  llvm::Expected<LinkedModule> link_module(llvm::orc::ThreadSafeModule module, llvm::StringRef name,
                                           CompiledModule* keep_if_out_of_memory = nullptr,
                                           OwnerId owner = kNoOwner);
  // Links a module that a failed link_module kept, as that call would have; fails for an empty
  // CompiledModule. `keep_if_out_of_memory` as above.
  llvm::Expected<LinkedModule> link_module(CompiledModule compiled,
                                           CompiledModule* keep_if_out_of_memory = nullptr);

  // Compiles `module` with the engine's own compiler and drops the object: nothing is linked,
  // nothing reaches the heap. For a runtime's start-up: LLVM's one-time costs are paid there,
  // and the target machine it used waits in the engine's pool for the first real compile.
  llvm::Error warm_up(llvm::orc::ThreadSafeModule module);

  // Removes a module added with add_module; its code goes to the heap's quarantine. Fails for a
  // handle this engine never returned or already removed.
  llvm::Error remove_module(ModuleHandle handle);

  // Modules currently linked, including the bodies behind entry cells.
  size_t live_modules() const;

  // What the engine compiles for. A module without a target triple or data layout gets these;
  // one with others is refused.
  const llvm::Triple& target_triple() const;
  const llvm::DataLayout& data_layout() const;

  // The address of `name` (unmangled, as in the IR) among modules, entry cells and host
  // symbols. Process symbols are not searched.
  llvm::Expected<llvm::orc::ExecutorAddr> lookup(llvm::StringRef name);

  // Makes host functions and data visible to JIT code under the given names. Fails, defining
  // none of them, if any name is already defined.
  llvm::Error define_host_symbols(const llvm::StringMap<llvm::orc::ExecutorAddr>& symbols);

  // Defines the redefinable function `name`, or redefines it, with the definition of `name` in
  // `module`. The module's other definitions become internal to this version (successive
  // versions may define helpers of the same names); calls to `name` inside the module reach this
  // version directly. Returns the entry cell's stub, the same address for every version. Fails
  // if the module does not define `name`, if `name` is already defined by add_module or as a
  // host symbol, or for any reason add_module fails; the current version then stays in place.
  llvm::Expected<llvm::orc::ExecutorAddr> define_function(llvm::StringRef name,
                                                          llvm::orc::ThreadSafeModule module);
  llvm::Expected<llvm::orc::ExecutorAddr> define_function(llvm::StringRef name,
                                                          llvm::StringRef ir_text);

 private:
  struct Impl;
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace codeheap::jit
