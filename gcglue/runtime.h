// Runtime: garbage-collected machine code on Boehm GC.
//
// A *code object* is a Boehm-heap object that owns one JIT module and a literal pool: the GC
// pointers the module's code embeds (string constants, quoted lists, symbols). Boehm does not
// scan the code region, so the pool is what keeps those objects alive exactly as long as the
// code. A *closure* is a Boehm-heap object holding a code object, an entry point into it and an
// environment pointer; reaching a closure keeps its code alive.
//
// When the collector finds a code object unreachable, its finalizer (registered with
// GC_register_finalizer_no_order, so self- and mutually-recursive closures are still
// collected) queues the module. The queue is drained at a safepoint: the module is removed
// from the engine and its blocks are *retired* to the heap's quarantine with their bytes
// intact, because a thread may still be running them: Boehm sees no reference from a return
// address into the code region. A reclamation pass then stops every registered thread in turn
// (ThreadRegistry), scans its registers and stack, and frees only the quarantined blocks that
// nothing points into. So code is never freed under a running thread.
//
// Finalization is on demand (GC_set_finalize_on_demand): Boehm never runs our finalizers in
// the middle of an allocation, which could be inside the engine's or the heap's locks.
// Finalizers run in collect() and safepoint(), which the embedding runtime calls at points
// where it holds no such lock. The finalizer itself only appends to a queue.
//
// Threads: every thread that runs JIT code or touches GC objects must be registered
// (register_current_thread, which also registers it with Boehm) and unregistered before it
// exits. Unregistered threads are not scanned, so code could be freed under them.
//
// Names: compile() gives every externally visible definition of the module a private suffix,
// so two code objects may define the same names; find them with symbol(). Redefinable global
// functions are entry cells (define_function); compiled code refers to them by plain name.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "codeheap/heap.h"
#include "gcglue/thread_registry.h"
#include "jit/engine.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

namespace codeheap::gc {

struct CodeObject;  // in the Boehm heap; opaque

// In the Boehm heap. Call `entry` with `env` as its first argument.
struct Closure {
  CodeObject* code;
  void* entry;
  void* env;
};

struct RuntimeOptions {
  HeapOptions heap;
  jit::EngineOptions engine;
  ScanOptions scan;
};

struct CollectReport {
  size_t finalized = 0;          // code objects whose finalizers ran
  size_t modules_retired = 0;    // modules removed from the engine into quarantine
  ReclaimReport reclaim;         // the reclamation pass that followed
};

struct GcCounters {
  uint64_t code_objects_created = 0;
  uint64_t code_objects_finalized = 0;
  uint64_t closures_created = 0;
  uint64_t modules_retired = 0;
  uint64_t collections = 0;
  uint64_t reclaim_passes = 0;
  uint64_t blocks_kept_referenced = 0;  // quarantined blocks a scan found referenced
  uint64_t threads_timed_out = 0;
  uint64_t retire_failures = 0;         // modules the engine refused to remove (logged)
  uint64_t scan_ns_total = 0;
  uint64_t scan_ns_last = 0;

  bool operator==(const GcCounters&) const = default;
};

class Runtime {
 public:
  // Initializes Boehm GC (GC_INIT, thread registration allowed, finalization on demand), the
  // heap, the engine and the thread registry, and registers the calling thread.
  static llvm::Expected<std::unique_ptr<Runtime>> create(RuntimeOptions options = {});
  // Cancels the finalizers of code objects still alive (their code is then unusable), removes
  // every module and destroys the engine and the heap. No JIT code may run during or after it.
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Compiles and links `ir` into a new code object that keeps `literals` alive.
  llvm::Expected<CodeObject*> compile(llvm::StringRef ir, llvm::StringRef name,
                                      llvm::ArrayRef<void*> literals = {});
  // The address of `name`, as written in the IR given to compile(), inside `code`.
  llvm::Expected<void*> symbol(CodeObject* code, llvm::StringRef name);
  // A closure over `entry` (a function of `code`) and `env` (any pointer, usually GC memory).
  llvm::Expected<Closure*> make_closure(CodeObject* code, llvm::StringRef entry, void* env);
  // The literal pool of `code` (as given to compile).
  llvm::ArrayRef<void*> literals(const CodeObject* code) const;

  // Defines or redefines the global function `name` (an entry cell; see jit/engine.h). The old
  // body is retired like a collected code object. Returns the stable stub address.
  llvm::Expected<void*> define_function(llvm::StringRef name, llvm::StringRef ir);
  // Makes host functions or data visible to compiled code under `name`.
  llvm::Error define_host_symbol(llvm::StringRef name, void* address);

  llvm::Error register_current_thread();
  llvm::Error unregister_current_thread();

  // Full collection: GC_gcollect, then safepoint(), then reclaim().
  CollectReport collect();
  // Runs pending finalizers and retires the modules they queued. Cheap when none are pending.
  size_t safepoint();
  // Scans the registered threads and frees the quarantined blocks nothing references.
  ReclaimReport reclaim();

  size_t live_code_objects() const;
  GcCounters counters() const;
  // The heap dump with a "gc" section (code objects, finalization, scans).
  std::string dump_text() const;
  std::string dump_json() const;

  Heap& heap();
  jit::Engine& engine();

 private:
  struct Impl;
  explicit Runtime(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace codeheap::gc
