// lisp::Runtime: the Lisp's side of the code heap. It owns the gc::Runtime (Boehm GC, the
// code heap, the JIT engine), evaluates top-level forms, keeps globals and their entry cells
// consistent, and decides when to collect.
//
// Globals. A global variable is its symbol's value slot. When `define` gives a global a
// procedure, the global also gets an *entry cell* (gc::Runtime::define_function): a stub in the
// code heap that jumps through a slot. Code compiled afterwards calls such a global by calling
// its stub directly, so a later `define` of the same name, which re-points the cell, takes
// effect in callers compiled long before. The body behind a cell is either a jump to the
// procedure the global holds ("direct", set by define) or a generic body that loads the
// global and checks it on every call (after a set!, so that assignments need no compilation).
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
#include <memory>
#include <span>
#include <string>

#include "examples/lisp/value.h"
#include "gcglue/runtime.h"

namespace lisp {

struct RuntimeOptions {
  // Codegen level Less: every top-level form and every eval is a compilation, so compile time
  // matters as much as code speed. Measured here per small module: None 1.4 ms (code about
  // twice as slow), Less 3.9 ms, Default 4.0 ms (code no faster than Less).
  RuntimeOptions() { gc.engine.opt_level = llvm::CodeGenOptLevel::Less; }

  codeheap::gc::RuntimeOptions gc;
  uint64_t compiles_per_collection = 256;
  // Run LLVM's scalar cleanups (SROA, EarlyCSE, InstCombine, SimplifyCFG) before linking.
  bool optimize = true;
};

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

  // Links the IR of a compilation unit into a code object (collecting first when due, and
  // once more if the code heap is full). Throws lisp::Error.
  codeheap::gc::CodeObject* link(const std::string& ir, const std::string& name,
                                 llvm::ArrayRef<void*> literals);
  // The address of function `name` in `code`. Throws lisp::Error.
  void* function_address(codeheap::gc::CodeObject* code, const std::string& name);

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
  // What the engine compiles for, so that generated modules are optimized for the same target.
  const std::string& target_triple() const { return triple_; }
  const std::string& data_layout() const { return data_layout_; }
  codeheap::gc::Runtime& gc() { return *gc_; }

 private:
  Runtime(RuntimeOptions options, std::unique_ptr<codeheap::gc::Runtime> gc);
  Value define_toplevel(Value form);
  void point_entry_cell(Value symbol, Closure* target);
  void register_helpers();

  RuntimeOptions options_;
  std::unique_ptr<codeheap::gc::Runtime> gc_;
  uint64_t compiled_at_last_collection_ = 0;
  uint64_t units_ = 0;  // numbers the compilation units in their names
  pthread_t creator_ = pthread_self();
  std::string triple_;
  std::string data_layout_;
};

}  // namespace lisp
