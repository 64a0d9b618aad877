// lisp::Runtime: the Lisp's side of the code heap. It owns the gc::Runtime (Boehm GC, the
// code heap, the JIT engine), evaluates top-level forms, keeps globals and their entry cells
// consistent, and decides when to collect.
//
// Globals. A global variable is its symbol's value slot. When `define` gives a global a
// procedure, the global also gets an *entry cell*: a stub in the code heap (emitted once from a
// stencil) that loads the global, checks that it holds a procedure and jumps to that
// procedure's current code. Code compiled afterwards calls such a global by calling its stub
// directly, so a later `define` or `set!` of the name, which only stores the new value, and a
// tier-up of the procedure, take effect in callers compiled long before.
//
// Tiers (docs/tiers.md): every form is compiled by the baseline tier first; a lambda called
// `tier_up` times is recompiled by LLVM on a background thread (tiers.h).
//
// Collection. Boehm triggers collections by data allocation only and cannot see how much
// machine code a small code object owns, so the runtime also collects after every
// `compiles_per_collection` compilations. Finalizers are on demand: the runtime runs them at
// safepoint(), which the driver calls after each top-level form, and before each compilation.
//
// Threads: one thread at a time runs Lisp (the stack limit and the symbol table are global);
// it must have called attach_current_thread() (the thread that creates the runtime has).
#pragma once

#include <pthread.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "examples/lisp/value.h"
#include "gcglue/runtime.h"
#include "llvm/ExecutionEngine/Orc/ThreadSafeModule.h"

namespace codeheap::jit {
class HelperTable;
struct EmittedUnit;
}  // namespace codeheap::jit

namespace lisp {

class BaselineTier;
class TierUp;
struct BaselineUnit;
struct Unit;

// RuntimeOptions::tier_up: never leave the baseline tier.
inline constexpr int64_t kTierUpNever = -1;
// Calls of a baseline lambda before its LLVM compilation is requested (docs/tiers.md says how
// to measure the choice, and why 1000 is not yet a measured optimum).
inline constexpr int64_t kDefaultTierUp = 1000;

struct RuntimeOptions {
  // Codegen level Less: every top-level form and every eval is a compilation, so compile time
  // matters as much as code speed. Measured here per small module: None 1.4 ms (code about
  // twice as slow), Less 3.9 ms, Default 4.0 ms (code no faster than Less).
  //
  // A 32 MiB collector heap to start: from Boehm's 64 KiB, queens(8) x 1500 made ~680
  // collections and spent ~40% of its time in them; with 32 MiB, a few dozen.
  RuntimeOptions() {
    gc.engine.opt_level = llvm::CodeGenOptLevel::Less;
    gc.initial_collector_heap_bytes = size_t{32} << 20;
  }

  codeheap::gc::RuntimeOptions gc;
  uint64_t compiles_per_collection = 256;
  // Run LLVM's scalar cleanups (SROA, EarlyCSE, InstCombine, SimplifyCFG) before linking.
  bool optimize = true;
  // Calls before a baseline lambda is compiled by LLVM; 0: every form by LLVM at once;
  // kTierUpNever: baseline only.
  int64_t tier_up = kDefaultTierUp;
  // Tier-up requests that may wait for the compile thread; more stay baseline.
  size_t tier_up_queue = 64;
};

// "never", or a count (0 included). Anything else is nullopt.
std::optional<int64_t> parse_tier_up(std::string_view text);

class Runtime {
 public:
  // Creates the runtime and installs the primitives. Once per process.
  // Throws lisp::Error.
  static std::unique_ptr<Runtime> create(RuntimeOptions options = {});
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // The runtime that primitives and the helpers of compiled code serve.
  static Runtime& current();

  // Evaluates a top-level form. (begin ...) at top level splices, so its defines are
  // top-level definitions too. Throws lisp::Error.
  Value eval(Value form);
  // Calls `procedure` from the host.
  Value apply(Value procedure, std::span<const Value> args);

  // (define symbol value) at top level / (set! symbol value) on a global.
  void define_global(Value symbol, Value value);
  void set_global(Value symbol, Value value);

  // The tiers' way into the code heap. Each collects first when due, and once more if the code
  // heap is full (gc::Runtime does that), and throws lisp::Error when it still fails.
  // `module` makes the module (once: gc::Runtime::compile keeps its object code for a retry).
  codeheap::gc::Runtime::Compiled link(const std::function<llvm::orc::ThreadSafeModule()>& module,
                                       const std::string& name, llvm::ArrayRef<void*> literals);
  BaselineUnit emit_baseline(Unit& unit, const std::vector<Template*>& templates,
                             const std::string& name);
  // Wraps an emitted baseline unit in a code object (retiring the unit if that fails).
  codeheap::gc::CodeObject* adopt_baseline(codeheap::jit::EmittedUnit unit, const std::string& name,
                                           llvm::ArrayRef<void*> literals, uint64_t compile_ns);

  // Makes a primitive's host function callable from both tiers under `name`.
  void define_primitive_symbol(const std::string& name, void* function);

  // Runs pending finalizers and retires the code of collected code objects.
  void safepoint();
  // A full collection: garbage collection, finalizers, reclamation of unreferenced code.
  void collect();

  // Makes the calling thread the one that runs Lisp: registers it with the collector and the
  // code heap's thread registry (the creating thread already is) and points the stack limit
  // that compiled code checks at this thread's stack. Detach before the thread exits.
  void attach_current_thread();
  void detach_current_thread();

  bool optimize() const { return options_.optimize; }
  const RuntimeOptions& options() const { return options_; }
  int64_t tier_up_threshold() const { return options_.tier_up; }
  // Null when nothing tiers up (threshold 0 or never).
  TierUp* tier_up() { return tier_up_.get(); }
  // What the engine compiles for, so that generated modules are optimized for the same target.
  const std::string& target_triple() const { return gc_->target_triple(); }
  const std::string& data_layout() const { return gc_->data_layout(); }
  codeheap::gc::Runtime& gc() { return *gc_; }

 private:
  Runtime(RuntimeOptions options, std::unique_ptr<codeheap::gc::Runtime> gc);
  Value define_toplevel(Value form);
  void make_entry_cell(Value symbol);
  void register_helpers();
  void before_compile();

  RuntimeOptions options_;
  std::unique_ptr<codeheap::gc::Runtime> gc_;
  std::unique_ptr<codeheap::jit::HelperTable> helpers_;
  std::unique_ptr<BaselineTier> baseline_;
  std::unique_ptr<TierUp> tier_up_;
  uint64_t compiled_at_last_collection_ = 0;
  uint64_t units_ = 0;  // numbers the compilation units in their names
  pthread_t creator_ = pthread_self();
};

}  // namespace lisp
