// Runtime: garbage-collected machine code on Boehm GC. The model, and why code is never freed
// under a running thread: docs/embedding.md.
//
// A *code object* (in the Boehm heap) owns one code unit, a module compile() linked or heap
// blocks adopt() took over, and a literal pool: the GC pointers its code embeds, which Boehm
// does not find in the code region. A *closure* holds a code object, an entry point and an
// environment; reaching it keeps the code alive. A code object's identity is its unit's heap
// owner (owner()): never reused, shown by the dump and crash reports, the engine's handle of a
// compiled module, and the suffix of the unit's private symbols (below). Once the
// collector finds a code object unreachable, the next safepoint() or collect() retires its unit
// to the heap's quarantine, and a reclaim pass frees the blocks when a scan of every registered
// thread finds nothing pointing into them.
//
// Callers must register every thread that runs JIT code or touches GC objects
// (register_current_thread, which registers it with Boehm too) and unregister it before it
// exits: an unregistered thread is not scanned, so code could be freed under it. Finalizers
// run only in collect() and safepoint(): call those where you hold no lock that the engine, the
// heap or your finalizers take. Threads may compile() concurrently with each other and with
// adopt(), safepoint(), collect() and reclaim() on other threads.
//
// A full code heap: compile(), define_function() and with_code_space() collect on the calling
// thread (which must be registered and hold no lock that a collection or a finalizer takes) and
// try once more; then they fail with the heap's message (requested, free and largest free
// bytes), the heap as it was but for its error counters. A request larger than a whole arena
// fails at once (kInvalidArgument). docs/embedding.md, "When the code heap is full".
//
// Crashes: unless RuntimeOptions::faults says otherwise, a fatal signal in the heap's code
// prints one line naming the block, its owner and the function, then the process dies of it;
// the creating thread and every thread registered through the runtime get an alternate signal
// stack (gcglue/fault_reporter.h; docs/embedding.md, "Crashes in JIT code").
//
// Names: compile() renames every externally visible definition `<name>` of the module to its
// private name `<name>.co<owner>` (a module that already defines such a name is refused); symbol()
// and Compiled::definitions take and give the names as written in the module. Code reaches other
// code objects by address, redefinable global functions (define_function: entry cells) by plain
// name.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "codeheap/heap.h"
#include "gcglue/fault_reporter.h"
#include "jit/options.h"
#include "scan/thread_registry.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/ADT/Twine.h"
#include "llvm/Support/Error.h"

// Declared only: an embedder that builds modules includes llvm/ExecutionEngine/Orc/
// ThreadSafeModule.h itself, one that uses engine() includes jit/engine.h.
namespace llvm::orc {
class ThreadSafeModule;
}  // namespace llvm::orc
namespace codeheap::jit {
class Engine;
}  // namespace codeheap::jit

namespace codeheap::gc {

struct CodeObject;  // in the Boehm heap; opaque

// Which tier made a code unit: copy-and-patch stencils (no LLVM at run time) or LLVM.
enum class Tier : uint8_t { kBaseline, kOptimized };
inline constexpr size_t kTierCount = 2;
// "baseline", "llvm": the tier's name in the dumps.
const char* to_string(Tier tier);

// In the Boehm heap. Call `entry` with `env` as its first argument.
struct Closure {
  CodeObject* code;
  void* entry;
  void* env;
};

struct RuntimeOptions {
  HeapOptions heap;
  jit::EngineOptions engine;
  scan::ScanOptions scan;
  // The fatal-signal reporter (on by default; gcglue/fault_reporter.h).
  FaultReporterOptions faults;
  // Grow Boehm's heap to at least this many bytes at start (0: Boehm's default, 64 KiB, or
  // GC_INITIAL_HEAP_SIZE). Boehm collects once about a third of its heap has been allocated,
  // so a runtime allocating briskly from a tiny heap collects hundreds of times a second
  // (docs/lisp-benchmarks.md). The heap is process-wide: the largest request wins.
  size_t initial_collector_heap_bytes = 0;
};

struct CollectReport {
  size_t finalized = 0;        // code objects whose finalizers ran
  size_t modules_retired = 0;  // code units (modules, adopted units) retired into quarantine
  ReclaimReport reclaim;       // the reclamation pass that followed
};

// One tier's code objects. A code object counts as finalized once a safepoint has retired its
// unit after its finalizer ran.
struct TierCounters {
  uint64_t code_objects_created = 0;
  uint64_t code_objects_finalized = 0;
  uint64_t code_bytes_live = 0;   // the heap bytes of the live code objects' units
  uint64_t compile_ns_total = 0;  // compile(): measured (steady clock); adopt(): as given

  uint64_t live() const { return code_objects_created - code_objects_finalized; }
  bool operator==(const TierCounters&) const = default;
};

struct GcCounters {
  uint64_t code_objects_created = 0;    // all tiers
  uint64_t code_objects_finalized = 0;  // all tiers; only this runtime's code objects
  uint64_t closures_created = 0;
  uint64_t modules_retired = 0;  // code units retired into quarantine, adopted ones too
  uint64_t collections = 0;
  uint64_t reclaim_passes = 0;          // the heap's count (Heap::counters), passes of any caller
  uint64_t blocks_kept_referenced = 0;  // quarantined blocks a scan found referenced
  uint64_t threads_timed_out = 0;
  uint64_t retire_failures = 0;        // units the engine or heap refused to retire (logged)
  uint64_t full_heap_collections = 0;  // collections made because the code heap was full
  uint64_t scan_ns_total = 0;
  uint64_t scan_ns_last = 0;
  std::array<TierCounters, kTierCount> tiers{};  // indexed by Tier
  uint64_t tier_ups = 0;                         // note_tier_up(true): optimized code installed
  uint64_t tier_ups_discarded = 0;  // note_tier_up(false): compiled, then not installed

  const TierCounters& tier(Tier t) const { return tiers[static_cast<size_t>(t)]; }
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

  struct Compiled {
    CodeObject* code = nullptr;
    // Every externally visible function/data definition of the module, by its name as written
    // in the module given to compile (before the private renaming), to its address. Taken from
    // the link itself (jit::Engine::link_module), not looked up afterwards.
    llvm::StringMap<void*> definitions;
  };
  // Compiles and links `module` (its identifier becomes `name`, for errors, logs and the heap
  // dump) into a new code object that keeps `literals` alive, counted in `tier`. The module is
  // renamed as described above; a module without a target triple or data layout gets the
  // engine's (target_triple(), data_layout()). May run on any registered thread. A full heap
  // is collected and the link retried (see above) with the object code the first attempt kept
  // (jit::CompiledModule): the module is compiled once.
  // Compiles `module` through the engine's compiler without linking it (jit::Engine::warm_up):
  // for a runtime's start-up, so that its first real compile does not pay LLVM's one-time
  // costs. Nothing reaches the heap or the counters.
  llvm::Error warm_up(llvm::orc::ThreadSafeModule module);

  llvm::Expected<Compiled> compile(llvm::orc::ThreadSafeModule module, llvm::StringRef name,
                                   llvm::ArrayRef<void*> literals = {},
                                   Tier tier = Tier::kOptimized);
  // The same from textual IR: parses it, then compiles as above (the time counts parsing).
  llvm::Expected<CodeObject*> compile(llvm::StringRef ir, llvm::StringRef name,
                                      llvm::ArrayRef<void*> literals = {},
                                      Tier tier = Tier::kOptimized);
  // Wraps blocks the caller allocated in the heap under `owner` (e.g. a stencil-emitted unit,
  // made with Heap::allocate_group) in a new code object that keeps `literals` alive. When the
  // collector finds the code object unreachable, the owner's blocks are retired
  // (Heap::end_group(owner, Exit::kRetire, on_gone)) at a safepoint, like a module's, and reclaimed
  // once no registered thread references them; `on_gone` (e.g. unwind-info deregistration) runs
  // then, once. `code_bytes` (the unit's heap bytes) and `compile_ns` (the time the caller spent
  // making it) go to the tier's counters. From then on the runtime retires the owner: the
  // caller must not. An owner that already belongs to a code object is refused. On error the
  // caller still owns the blocks, and `on_gone` is dropped unrun. symbol() and make_closure()
  // know no names in such a unit: the caller knows its entry points.
  llvm::Expected<CodeObject*> adopt(OwnerId owner, size_t code_bytes, std::function<void()> on_gone,
                                    llvm::StringRef name, llvm::ArrayRef<void*> literals = {},
                                    Tier tier = Tier::kBaseline, uint64_t compile_ns = 0);
  // The address of `name`, as written in the module given to compile(), inside `code`.
  llvm::Expected<void*> symbol(CodeObject* code, llvm::StringRef name);
  // A closure over `entry` (a function of `code`) and `env` (any pointer, usually GC memory).
  llvm::Expected<Closure*> make_closure(CodeObject* code, llvm::StringRef entry, void* env);
  // The heap owner of `code`'s unit (see above); kNoOwner for anything but a live code object of
  // this runtime.
  OwnerId owner(const CodeObject* code) const;
  // The literal pool of `code` (as given to compile or adopt).
  llvm::ArrayRef<void*> literals(const CodeObject* code) const;

  // Defines or redefines the global function `name` (an entry cell; see jit/engine.h). The old
  // body is retired like a collected code object. Returns the stable stub address.
  llvm::Expected<void*> define_function(llvm::StringRef name, llvm::StringRef ir);

  // Runs `attempt`, which allocates in the code heap itself (say, an emitter writing a stencil
  // unit with jit::CodeUnitBuilder before adopt()); if it fails because the heap is full
  // (jit::is_out_of_memory), collects and runs it once more, as compile() does (see above). `what`
  // names the request in the log and in the error of a second failure. The attempt must leave
  // the heap as it was when it fails.
  llvm::Error with_code_space(const llvm::Twine& what, llvm::function_ref<llvm::Error()> attempt);
  // Makes host functions or data visible to compiled code under `name`.
  llvm::Error define_host_symbol(llvm::StringRef name, void* address);

  llvm::Error register_current_thread();
  llvm::Error unregister_current_thread();

  // Counts one tier-up: `installed` when the optimized code replaced the baseline code, false
  // when it was compiled but then discarded (e.g. the function was redefined meanwhile).
  void note_tier_up(bool installed);

  // What the engine compiles for, for a runtime that builds its own llvm::Module.
  const std::string& target_triple() const;
  const std::string& data_layout() const;

  // Full collection: GC_gcollect, then safepoint(), then reclaim().
  CollectReport collect();
  // Runs pending finalizers and retires the units they queued (returns how many). Cheap when
  // none are pending.
  size_t safepoint();
  // Scans the registered threads and frees the quarantined blocks nothing references.
  ReclaimReport reclaim();

  size_t live_code_objects() const;
  GcCounters counters() const;
  // The heap dump with a "gc" section (code objects, finalization, scans, one line or object
  // per tier: gc.tiers.baseline and gc.tiers.llvm in JSON, and the tier-up counts).
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
