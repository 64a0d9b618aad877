// Engine: an ORC LLJIT whose code and data live in a codeheap::Heap.
//
// What it sets up:
//   - JITLink through HeapJITLinkMemoryManager: every section of every module in the heap's low
//     region, so the Small code model (the default here) links: pc-relative calls and jump
//     tables reach across the heap, and calls to host functions go through JITLink's GOT and
//     stubs, which are allocated with the module and so are low as well.
//   - eh_frame registration (EHFrameRegistrationPlugin), so C++ exceptions thrown by host
//     functions unwind through JIT frames, including retired code that is still running:
//     frames are deregistered when the heap reclaims a removed module's blocks.
//   - perf map / GDB JIT plugins from jit/visibility.h, when `EngineOptions::visibility` asks.
//   - symbol resolution: modules and host symbols in one JITDylib ("main"), then the process's
//     exported symbols (DynamicLibrarySearchGenerator) unless disabled.
//   - no static initializer support (LLJIT's "inactive" platform): modules whose
//     llvm.global_ctors / llvm.global_dtors are non-empty are refused rather than silently not
//     run. A dynamic-language runtime initializes its modules by calling them.
//
// Modules are linked eagerly: addModule compiles and links every definition before returning,
// so every error (bad IR, an undefined symbol, a full heap) surfaces there, attributed to the
// module, and the heap holds the module's code from then on. A module can refer to symbols of
// modules added before it, to host symbols, and to process symbols.
//
// Removal: removeModule removes the module's ORC ResourceTracker: its symbols disappear, its
// blocks go to the heap's quarantine (see RetireMode), from which the caller's reclaim pass
// (Heap::reclaim) frees them once no thread references them; then its eh_frames are
// deregistered.
// The engine does not know who still calls the removed code; the runtime's GC does.
//
// Redefinable functions: defineFunction(name, module) gives `name` an EntryCell (entry_cell.h)
// and links the module's definition of `name` under a private name; the JITDylib symbol `name`
// is the cell's stub. Redefining `name` links the new body, stores its address into the cell
// with one release store and removes the previous body's module (to quarantine; activations of
// it that are running finish in intact code). Callers compiled before the redefinition call the
// stub, so they reach the new body.
//
// Errors: every fallible member returns llvm::Error / Expected with a message naming the module
// or symbol. A failed addModule or defineFunction leaves the heap statistics (counters aside)
// as they were. Heap failures arrive as jit::HeapError (jit/error.h), so a caller can collect
// garbage, reclaim and retry on ErrorCode::kOutOfMemory (isOutOfMemory). linkModule can keep a
// module's object code for that retry (CompiledModule), so the module is not compiled twice.
//
// Function names: every function a link defines is named in the heap (Heap::add_symbols), so
// Heap::describe (a crash report) can say which JIT function an address is in.
//
// Threading: all members may be called from any thread concurrently. Compilation happens on the
// calling thread. defineFunction calls are serialized with each other (not with addModule or
// lookup). The Heap must outlive the Engine; destroying the Engine removes every module (to
// quarantine) and retires the entry cells, so no JIT code may run during or after destruction.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "codeheap/heap.h"
#include "jit/jitlink_memory_manager.h"
#include "jit/visibility.h"
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

struct EngineOptions {
  // Small is what the low heap exists for; Large works too, at the price of movabs + indirect
  // calls everywhere.
  llvm::CodeModel::Model code_model = llvm::CodeModel::Small;
  // PIC (the default, as LLJIT's own JITLink setup): references to symbols outside the module
  // go through JITLink's GOT, so JIT code can take the address of host data and functions
  // anywhere in the address space. Static: 32-bit absolute references (e.g. jump tables as
  // tables of absolute addresses) to anything in the heap; host symbols can then only be
  // called (through stubs), not referenced as data.
  llvm::Reloc::Model relocation_model = llvm::Reloc::PIC_;
  llvm::CodeGenOptLevel opt_level = llvm::CodeGenOptLevel::Default;
  // What removal does to a module's blocks; kKeepRunning unless no thread can be inside.
  RetireMode retire_mode = RetireMode::kKeepRunning;
  // Resolve names that no module or host symbol defines against the process (dlsym).
  bool link_process_symbols = true;
  VisibilityOptions visibility = VisibilityOptions::fromEnvironment();
  // Added to the ObjectLinkingLayer after the engine's own plugins, e.g. to inspect each
  // LinkGraph after its addresses are assigned.
  std::vector<std::shared_ptr<llvm::orc::ObjectLinkingLayer::Plugin>> plugins;
};

// The target configuration the engine compiles for: the host, with `options`' code model,
// relocation model and optimization level. Initializes the native target on first use.
llvm::Expected<llvm::orc::JITTargetMachineBuilder> targetMachineBuilder(
    const EngineOptions& options);

// Names one module added with Engine::addModule. Ids are never reused within an engine.
struct ModuleHandle {
  uint64_t id = 0;
  friend bool operator==(ModuleHandle, ModuleHandle) = default;
};

// The object code of a module that Engine::linkModule compiled but could not link for lack of
// heap space, with what its link needs: linkModule(CompiledModule) links it as the failed call
// would have, without compiling. Empty unless such a failure filled it. Must not outlive the
// Engine that made it.
class CompiledModule {
 public:
  CompiledModule();
  ~CompiledModule();
  CompiledModule(CompiledModule&&) noexcept;
  CompiledModule& operator=(CompiledModule&&) noexcept;

  explicit operator bool() const { return state_ != nullptr; }
  // The module's name as given to linkModule, and the bytes of object code kept.
  llvm::StringRef name() const;
  size_t objectBytes() const;

 private:
  friend class Engine;
  struct State;
  std::unique_ptr<State> state_;
};

// What Engine::linkModule reports of one module's link.
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
  llvm::Expected<ModuleHandle> addModule(llvm::orc::ThreadSafeModule module, llvm::StringRef name);
  // Same, from textual LLVM IR (parsed into a context of its own).
  llvm::Expected<ModuleHandle> addModule(llvm::StringRef ir_text, llvm::StringRef name);
  // addModule, also returning the module's definitions and heap bytes as its link produced
  // them: the addresses are those of the one session lookup that links the module, the bytes
  // are summed by a link pass keyed by the module's resource tracker (so it finds them whichever
  // thread materializes the module). No lookup per definition afterwards.
  // With `keep_if_out_of_memory`: when the link fails because the heap is full (isOutOfMemory),
  // *keep_if_out_of_memory receives the module's object code (it is left empty otherwise), so
  // the caller can make room and link it again without compiling it again. That costs a copy of
  // the object code (a few KiB for a closure) on every link, against one compilation saved when
  // the heap is full: the module itself is consumed by compilation and cannot be kept cheaply.
  llvm::Expected<LinkedModule> linkModule(llvm::orc::ThreadSafeModule module,
                                          llvm::StringRef name,
                                          CompiledModule* keep_if_out_of_memory = nullptr);
  // Links a module that a failed linkModule kept, as that call would have; fails for an empty
  // CompiledModule. `keep_if_out_of_memory` as above.
  llvm::Expected<LinkedModule> linkModule(CompiledModule compiled,
                                          CompiledModule* keep_if_out_of_memory = nullptr);

  // Removes a module added with addModule; its code goes to the heap's quarantine. Fails for a
  // handle this engine never returned or already removed.
  llvm::Error removeModule(ModuleHandle handle);

  // Modules currently linked, including the bodies behind entry cells.
  size_t liveModules() const;

  // What the engine compiles for. A module without a target triple or data layout gets these;
  // one with others is refused.
  const llvm::Triple& targetTriple() const;
  const llvm::DataLayout& dataLayout() const;

  // The address of `name` (unmangled, as in the IR) among modules, entry cells and host
  // symbols. Process symbols are not searched.
  llvm::Expected<llvm::orc::ExecutorAddr> lookup(llvm::StringRef name);

  // Makes host functions and data visible to JIT code under the given names. Fails, defining
  // none of them, if any name is already defined.
  llvm::Error defineHostSymbols(const llvm::StringMap<llvm::orc::ExecutorAddr>& symbols);

  // Defines the redefinable function `name`, or redefines it, with the definition of `name` in
  // `module`. The module's other definitions become internal to this version (successive
  // versions may define helpers of the same names); calls to `name` inside the module reach this
  // version directly. Returns the entry cell's stub, the same address for every version. Fails
  // if the module does not define `name`, if `name` is already defined by addModule or as a
  // host symbol, or for any reason addModule fails; the current version then stays in place.
  llvm::Expected<llvm::orc::ExecutorAddr> defineFunction(llvm::StringRef name,
                                                         llvm::orc::ThreadSafeModule module);
  llvm::Expected<llvm::orc::ExecutorAddr> defineFunction(llvm::StringRef name,
                                                         llvm::StringRef ir_text);

 private:
  struct Impl;
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace codeheap::jit
