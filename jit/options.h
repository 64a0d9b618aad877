// The jit layer's options, apart from its components so that an embedder configuring a runtime
// (gcglue::RuntimeOptions holds an EngineOptions) does not include ORC: RetireMode for the memory
// managers, VisibilityOptions for the perf map and GDB, EngineOptions for jit::Engine.
#pragma once

#include <functional>

#include "llvm/Support/CodeGen.h"

namespace llvm::orc {
class ObjectLinkingLayer;
}  // namespace llvm::orc

namespace codeheap::jit {

// How `deallocate` hands a module's blocks to the heap's quarantine.
enum class RetireMode {
  // Heap::retire: the bytes stay intact until a reclaim pass proves nothing references them, so
  // activations still running in the code (a hot-swapped function's old version, a closure the
  // GC finalized while a frame of it is on some stack) finish normally. The default.
  kKeepRunning,
  // Heap::release: trap bytes at once, so any later jump into the code traps. Only for callers
  // that know no thread can be inside the code any more; useful to catch stale code pointers.
  kTrapNow,
};

// Debugger and profiler visibility of JIT code (jit/visibility.h).
struct VisibilityOptions {
  bool perf_map = false;  // write /tmp/perf-<pid>.map lines for every JIT function
  bool gdb_jit = false;   // register objects with the GDB JIT interface

  // perf_map is on iff CODEHEAP_PERF_MAP is set to exactly "1"; gdb_jit is on iff
  // CODEHEAP_GDB_JIT is set to exactly "1". Any other value (unset, empty, "0", "yes") leaves
  // the feature off, so a typo never silently turns on file writes in production.
  static VisibilityOptions from_environment();
};

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
  VisibilityOptions visibility = VisibilityOptions::from_environment();
  // Called once with the engine's ObjectLinkingLayer after the engine's own plugins are added,
  // to add more (layer.addPlugin), e.g. to inspect each LinkGraph after its addresses are
  // assigned.
  std::function<void(llvm::orc::ObjectLinkingLayer& layer)> add_plugins;
};

}  // namespace codeheap::jit
