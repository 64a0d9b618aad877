#include "gcglue/runtime.h"

#define GC_THREADS
#define GC_NO_THREAD_REDIRECTS  // threads register explicitly (Runtime::register_current_thread)
#include <gc/gc.h>

#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "codeheap/log.h"
#include "codeheap/stats_json.h"
#include "gcglue/runtime_stats.h"
#include "jit/engine.h"
#include "jit/error.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/IRReader/IRReader.h"
#include "llvm/Support/SourceMgr.h"

namespace codeheap::gc {
namespace {

constexpr uint64_t kCodeObjectMagic = 0xc0de0b1ec7ull;

llvm::Error make_error(const std::string& message) {
  return llvm::make_error<llvm::StringError>(message, llvm::inconvertibleErrorCode());
}

// The renaming policy of runtime.h: a definition `name` of the code object whose unit is heap
// owner `owner` links as this.
std::string private_name(llvm::StringRef name, OwnerId owner) {
  return (name + ".co" + llvm::Twine(owner)).str();
}

// Whether compile() renames `value` (and the engine reports it as a definition).
bool is_exported_definition(const llvm::GlobalValue& value) {
  return !value.isDeclarationForLinker() && !value.hasLocalLinkage() &&
         !value.hasAppendingLinkage();
}

uint64_t elapsed_ns(std::chrono::steady_clock::time_point start) {
  return uint64_t(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start)
          .count());
}

}  // namespace

const char* to_string(Tier tier) {
  switch (tier) {
    case Tier::kBaseline:
      return "baseline";
    case Tier::kOptimized:
      return "llvm";
  }
  return "?";
}

// Lives in the Boehm heap (GC_MALLOC, so `literals` is traced). `runtime` points to malloc
// memory the collector does not trace; it is cleared when the runtime goes away first.
struct CodeObject {
  uint64_t magic;
  const void* runtime;  // the Runtime::Impl that made it
  OwnerId owner;        // its unit's heap owner, its one identity: keys Impl::units, names its
                        // definitions (private_name), is the engine's ModuleHandle
  void** literals;      // GC_MALLOC'd copy of the pool
  size_t literal_count;
};

struct Runtime::Impl {
  // What a code object owns, by its owner. Malloc memory, so `object` is a weak reference the
  // collector does not see; its finalizer clears the object's magic and queues the owner.
  struct Unit {
    CodeObject* object = nullptr;
    Tier tier = Tier::kOptimized;
    uint64_t bytes = 0;
    // A module of the engine, or blocks the caller allocated (adopt), ended with `on_gone`.
    bool adopted = false;
    std::function<void()> on_gone;
  };

  // Reports faults in the heap while alive (FaultReporter::watch); declared after `heap`, so it
  // stops before the heap goes.
  struct Watch {
    const Heap* heap = nullptr;
    ~Watch() {
      if (heap != nullptr) FaultReporter::unwatch(*heap);
    }
  };

  RuntimeOptions options;
  std::unique_ptr<Heap> heap;
  Watch watch;
  std::unique_ptr<jit::Engine> engine;
  std::unique_ptr<scan::ThreadRegistry> registry;
  std::shared_ptr<spdlog::logger> log = codeheap::logger("gc");
  std::string target_triple;
  std::string data_layout;

  // Guards `units` and `counters`; serializes safepoint draining. Never held while allocating GC
  // memory (a collection stops the threads, one of which may wait for it) nor during a stack
  // scan, so a compiling thread never waits for one.
  mutable std::mutex mutex;
  std::unordered_map<OwnerId, Unit> units;  // code objects whose unit is not retired yet
  GcCounters counters;

  // Filled by finalizers (which run inside GC_invoke_finalizers); guarded by its own mutex,
  // never held while allocating.
  std::mutex pending_mutex;
  std::vector<OwnerId> pending;  // of finalized code objects

  static void finalize(void* object, void* client_data) {
    auto* code = static_cast<CodeObject*>(object);
    auto* impl = static_cast<Impl*>(client_data);
    if (code->magic != kCodeObjectMagic || code->runtime != impl) return;
    code->magic = 0;
    std::lock_guard lock(impl->pending_mutex);
    impl->pending.push_back(code->owner);
  }

  TierCounters& tier_counters(Tier tier) { return counters.tiers[static_cast<size_t>(tier)]; }

  // A new code object over `unit` of heap owner `owner` (`object` filled in), with a copy of
  // `literals`. Takes the lock only to record it, after the GC allocations. Fails for an owner
  // that already has a code object.
  llvm::Expected<CodeObject*> make_code_object(Unit unit, OwnerId owner, llvm::StringRef what,
                                               llvm::ArrayRef<void*> literals,
                                               uint64_t compile_ns) {
    void** pool = nullptr;
    if (!literals.empty()) {
      pool = static_cast<void**>(GC_MALLOC(literals.size() * sizeof(void*)));
      if (pool == nullptr) {
        return make_error(what.str() + ": out of GC memory for the literal pool");
      }
      std::memcpy(pool, literals.data(), literals.size() * sizeof(void*));
    }
    auto* code = static_cast<CodeObject*>(GC_MALLOC(sizeof(CodeObject)));
    if (code == nullptr) return make_error(what.str() + ": out of GC memory for the code object");
    *code = CodeObject{kCodeObjectMagic, this, owner, pool, literals.size()};
    unit.object = code;
    {
      std::lock_guard lock(mutex);
      if (units.contains(owner)) {
        return make_error(what.str() + ": heap owner " + std::to_string(owner) +
                          " already belongs to a code object");
      }
      TierCounters& tier = tier_counters(unit.tier);
      ++tier.code_objects_created;
      tier.code_bytes_live += unit.bytes;
      tier.compile_ns_total += compile_ns;
      ++counters.code_objects_created;
      units.emplace(owner, std::move(unit));
    }
    // Outside the lock, which is never held while Boehm runs: the unit is recorded before its
    // finalizer can queue it.
    GC_register_finalizer_no_order(code, &Impl::finalize, this, nullptr, nullptr);
    return code;
  }

  llvm::Expected<Compiled> compile(llvm::orc::ThreadSafeModule module, llvm::StringRef name,
                                   llvm::ArrayRef<void*> literals, Tier tier,
                                   std::chrono::steady_clock::time_point start) {
    // The unit's heap owner first: its id names the definitions before the module is compiled.
    const OwnerId owner = heap->register_owner(name.str());
    auto fail = [&](llvm::Error err) {
      heap->retire_owner(owner);  // without blocks: gone at once
      return err;
    };
    llvm::Error renamed = module.withModuleDo([&](llvm::Module& m) -> llvm::Error {
      for (llvm::GlobalValue& value : m.global_values()) {
        if (!is_exported_definition(value)) continue;
        const std::string renamed = private_name(value.getName(), owner);
        const std::string written = value.getName().str();
        value.setName(renamed);
        if (value.getName() != renamed) {  // LLVM uniqued it: the name is taken
          return make_error("compile '" + name.str() + "': cannot rename '" + written + "' to '" +
                            renamed + "': the module defines that name itself");
        }
      }
      return llvm::Error::success();
    });
    if (renamed) return fail(std::move(renamed));
    jit::CompiledModule kept;  // the object code, if the heap is full
    auto linked = engine->link_module(std::move(module), name, &kept, owner);
    if (!linked) {
      llvm::Error err = linked.takeError();
      const std::string what = "compile '" + name.str() + "'";
      if (!kept || !collect_for_room(err, what)) return fail(std::move(err));
      linked = engine->link_module(std::move(kept));
      if (!linked) return fail(still_full(linked.takeError(), what));
    }

    Compiled compiled;
    const std::string suffix = private_name("", owner);
    for (const auto& entry : linked->definitions) {
      llvm::StringRef written = entry.getKey();
      written.consume_back(suffix);
      compiled.definitions[written] = entry.getValue().toPtr<void*>();
    }
    Unit unit;
    unit.tier = tier;
    unit.bytes = linked->heap_bytes;
    auto code = make_code_object(std::move(unit), owner, "compile '" + name.str() + "'", literals,
                                 elapsed_ns(start));
    if (!code) {
      return llvm::joinErrors(code.takeError(), engine->remove_module(linked->handle));
    }
    compiled.code = *code;
    return compiled;
  }

  size_t safepoint() {
    std::lock_guard lock(mutex);
    // Other finalizers of the process run here too; ours only queue ids, counted when retired.
    if (GC_should_invoke_finalizers()) GC_invoke_finalizers();
    return retire_pending();
  }

  // On the calling thread: the registry reads a registered caller's own stack from where the
  // pass began (ThreadRegistry::run_pass) and interrupts the others, so no helper thread is
  // needed (one was started per pass before, only so that the caller could be interrupted).
  ReclaimReport reclaim() {
    const ReclaimReport report = heap->reclaim(*registry);
    std::lock_guard lock(mutex);
    counters.threads_timed_out += report.scan.threads_timed_out;
    counters.scan_ns_last = report.scan.duration_ns;
    counters.scan_ns_total += report.scan.duration_ns;
    counters.blocks_kept_referenced += report.still_referenced_blocks;
    return report;
  }

  CollectReport collect() {
    GC_gcollect();
    CollectReport report;
    uint64_t before;
    {
      std::lock_guard lock(mutex);
      before = counters.code_objects_finalized;
      ++counters.collections;
    }
    report.modules_retired = safepoint();
    {
      std::lock_guard lock(mutex);
      report.finalized = counters.code_objects_finalized - before;
    }
    report.reclaim = reclaim();
    return report;
  }

  // If `error` says the code heap is full and the calling thread can collect (Boehm knows it),
  // collects, consumes `error` and returns true: try once more. Otherwise returns false, with
  // `error` as it was (and a note if the heap is full but this thread cannot collect).
  bool collect_for_room(llvm::Error& error, const llvm::Twine& what) {
    if (!jit::is_out_of_memory(error)) return false;
    if (!GC_thread_is_registered()) {
      error = llvm::joinErrors(
          make_error(what.str() + ": the code heap is full, and this thread cannot collect "
                                  "garbage to make room (it is not registered)"),
          std::move(error));
      return false;
    }
    log->info("{}: the code heap is full; collecting and retrying", what.str());
    llvm::consumeError(std::move(error));
    {
      std::lock_guard lock(mutex);
      ++counters.full_heap_collections;
    }
    const CollectReport report = collect();
    log->debug("{}: the collection finalized {} code objects and reclaimed {} bytes", what.str(),
               report.finalized, report.reclaim.reclaimed_bytes);
    return true;
  }

  // The error of the attempt after collect_for_room, saying so if the heap is still full.
  static llvm::Error still_full(llvm::Error error, const llvm::Twine& what) {
    if (!jit::is_out_of_memory(error)) return error;
    return llvm::joinErrors(
        make_error(what.str() + ": the code heap is full even after collecting garbage and "
                                "reclaiming"),
        std::move(error));
  }

  // Retires the units of the code objects whose finalizers ran. Called with `mutex` held.
  size_t retire_pending() {
    std::vector<OwnerId> owners;
    {
      std::lock_guard lock(pending_mutex);
      owners.swap(pending);
    }
    size_t retired = 0;
    for (OwnerId owner : owners) {
      auto it = units.find(owner);
      if (it == units.end()) {
        log->error("finalized code object of owner {} has no unit", owner);
        continue;
      }
      Unit unit = std::move(it->second);
      units.erase(it);
      TierCounters& tier = tier_counters(unit.tier);
      ++tier.code_objects_finalized;
      tier.code_bytes_live -= unit.bytes;
      ++counters.code_objects_finalized;
      if (llvm::Error err = retire(owner, unit)) {
        ++counters.retire_failures;
        log->error("retiring the code object of owner {} failed: {}", owner,
                   llvm::toString(std::move(err)));
      } else {
        ++retired;
      }
    }
    counters.modules_retired += retired;
    return retired;
  }

  // Hands the unit's blocks to the heap's quarantine.
  llvm::Error retire(OwnerId owner, Unit& unit) {
    if (!unit.adopted) return engine->remove_module(jit::ModuleHandle{owner});
    Result<void> result = heap->end_group(owner, Exit::kRetire, std::move(unit.on_gone));
    if (!result) {
      return make_error("retiring the blocks of owner " + std::to_string(owner) + ": " +
                        result.error().message);
    }
    return llvm::Error::success();
  }
};

Runtime::Runtime(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

llvm::Expected<std::unique_ptr<Runtime>> Runtime::create(RuntimeOptions options) {
#if defined(__SANITIZE_THREAD__)
  // TSan defers asynchronous signals until a thread enters an intercepted function, which a
  // thread spinning in JIT code never does, so Boehm's stop-the-world would wait forever.
  // SIGPIPE is one TSan delivers at once. Only takes effect before the collector starts.
  GC_set_suspend_signal(SIGPIPE);
#endif
  GC_INIT();
  GC_allow_register_threads();
  GC_set_finalize_on_demand(1);
  if (size_t have = GC_get_heap_size();
      options.initial_collector_heap_bytes > have &&
      !GC_expand_hp(options.initial_collector_heap_bytes - have)) {
    return make_error("runtime: growing the collector's heap to " +
                      std::to_string(options.initial_collector_heap_bytes) + " bytes failed");
  }

  auto impl = std::make_unique<Impl>();
  impl->options = options;
  auto heap = Heap::create(options.heap);
  if (!heap) return make_error("runtime: creating the code heap: " + heap.error().message);
  impl->heap = std::move(*heap);
  if (options.faults.enabled) {
    if (llvm::Error err = FaultReporter::watch(*impl->heap, options.faults)) return err;
    impl->watch.heap = impl->heap.get();
  }
  // Removal must keep bytes intact: a thread may still run a collected closure's code.
  options.engine.retire_mode = jit::RetireMode::kKeepRunning;
  auto engine = jit::Engine::create(*impl->heap, options.engine);
  if (!engine) return engine.takeError();
  impl->engine = std::move(*engine);
  impl->target_triple = impl->engine->target_triple().str();
  impl->data_layout = impl->engine->data_layout().getStringRepresentation();
  auto registry = scan::ThreadRegistry::create(options.scan);
  if (!registry) return registry.takeError();
  impl->registry = std::move(*registry);
  if (llvm::Error err = impl->registry->register_current_thread()) return err;
  if (options.faults.enabled) {
    if (llvm::Error err = FaultReporter::attach_current_thread(options.faults.alt_stack_bytes)) {
      llvm::consumeError(impl->registry->unregister_current_thread());
      return err;
    }
  }
  return std::unique_ptr<Runtime>(new Runtime(std::move(impl)));
}

Runtime::~Runtime() {
  std::lock_guard lock(impl_->mutex);
  for (auto& [owner, unit] : impl_->units) {
    CodeObject* code = unit.object;
    if (code->magic == kCodeObjectMagic) {
      GC_register_finalizer_no_order(code, nullptr, nullptr, nullptr, nullptr);
      code->magic = 0;
      code->runtime = nullptr;
    }
    // Modules go with the engine; adopted blocks go to quarantine, so that the heap, destroyed
    // next, runs their on_gone.
    if (unit.adopted) llvm::consumeError(impl_->retire(owner, unit));
  }
  impl_->units.clear();
  impl_->engine.reset();  // removes every module
  if (impl_->registry->is_current_thread_registered()) {
    llvm::consumeError(impl_->registry->unregister_current_thread());
    if (impl_->options.faults.enabled) FaultReporter::detach_current_thread();
  }
}

llvm::Expected<Runtime::Compiled> Runtime::compile(llvm::orc::ThreadSafeModule module,
                                                   llvm::StringRef name,
                                                   llvm::ArrayRef<void*> literals, Tier tier) {
  return impl_->compile(std::move(module), name, literals, tier, std::chrono::steady_clock::now());
}

llvm::Expected<CodeObject*> Runtime::compile(llvm::StringRef ir, llvm::StringRef name,
                                             llvm::ArrayRef<void*> literals, Tier tier) {
  const auto start = std::chrono::steady_clock::now();
  auto context = std::make_unique<llvm::LLVMContext>();
  llvm::SMDiagnostic diagnostic;
  std::unique_ptr<llvm::Module> module =
      llvm::parseIR(llvm::MemoryBufferRef(ir, name), diagnostic, *context);
  if (!module) {
    std::string text;
    llvm::raw_string_ostream os(text);
    diagnostic.print(name.str().c_str(), os, /*ShowColors=*/false);
    return make_error("compile '" + name.str() + "': invalid IR: " + os.str());
  }
  auto compiled = impl_->compile(llvm::orc::ThreadSafeModule(std::move(module), std::move(context)),
                                 name, literals, tier, start);
  if (!compiled) return compiled.takeError();
  return compiled->code;
}

llvm::Expected<CodeObject*> Runtime::adopt(OwnerId owner, size_t code_bytes,
                                           std::function<void()> on_gone, llvm::StringRef name,
                                           llvm::ArrayRef<void*> literals, Tier tier,
                                           uint64_t compile_ns) {
  if (owner == kNoOwner) return make_error("adopt '" + name.str() + "': no owner (kNoOwner)");
  Impl::Unit unit;
  unit.tier = tier;
  unit.bytes = code_bytes;
  unit.adopted = true;
  unit.on_gone = std::move(on_gone);
  auto code = impl_->make_code_object(std::move(unit), owner, "adopt '" + name.str() + "'",
                                      literals, compile_ns);
  if (code) impl_->log->debug("adopted '{}' (owner {})", name.str(), owner);
  return code;
}

namespace {
bool is_live(const CodeObject* code, const void* runtime) {
  return code != nullptr && code->magic == kCodeObjectMagic && code->runtime == runtime;
}
}  // namespace

llvm::Expected<void*> Runtime::symbol(CodeObject* code, llvm::StringRef name) {
  if (!is_live(code, impl_.get())) {
    return make_error("symbol '" + name.str() + "': not a live code object of this runtime");
  }
  auto address = impl_->engine->lookup(private_name(name, code->owner));
  if (!address) {
    llvm::consumeError(address.takeError());
    return make_error("symbol '" + name.str() + "': the code object defines no such symbol");
  }
  return address->toPtr<void*>();
}

llvm::Expected<Closure*> Runtime::make_closure(CodeObject* code, llvm::StringRef entry, void* env) {
  auto address = symbol(code, entry);
  if (!address) return address.takeError();
  auto* closure = static_cast<Closure*>(GC_MALLOC(sizeof(Closure)));
  if (closure == nullptr) return make_error("make_closure: out of GC memory");
  *closure = Closure{code, *address, env};
  std::lock_guard lock(impl_->mutex);
  ++impl_->counters.closures_created;
  return closure;
}

OwnerId Runtime::owner(const CodeObject* code) const {
  return is_live(code, impl_.get()) ? code->owner : kNoOwner;
}

llvm::ArrayRef<void*> Runtime::literals(const CodeObject* code) const {
  if (!is_live(code, impl_.get())) return {};
  return llvm::ArrayRef<void*>(code->literals, code->literal_count);
}

llvm::Expected<void*> Runtime::define_function(llvm::StringRef name, llvm::StringRef ir) {
  void* stub = nullptr;
  llvm::Error err = with_code_space("define '" + name + "'", [&]() -> llvm::Error {
    auto defined = impl_->engine->define_function(name, ir);
    if (!defined) return defined.takeError();
    stub = defined->toPtr<void*>();
    return llvm::Error::success();
  });
  if (err) return err;
  return stub;
}

llvm::Error Runtime::with_code_space(const llvm::Twine& what,
                                     llvm::function_ref<llvm::Error()> attempt) {
  llvm::Error err = attempt();
  if (!err || !impl_->collect_for_room(err, what)) return err;
  return Impl::still_full(attempt(), what);
}

llvm::Error Runtime::define_host_symbol(llvm::StringRef name, void* address) {
  llvm::StringMap<llvm::orc::ExecutorAddr> symbols;
  symbols[name] = llvm::orc::ExecutorAddr::fromPtr(address);
  return impl_->engine->define_host_symbols(symbols);
}

llvm::Error Runtime::register_current_thread() {
  if (!GC_thread_is_registered()) {
    GC_stack_base base;
    if (GC_get_stack_base(&base) != GC_SUCCESS) {
      return make_error("register_current_thread: Boehm GC cannot find this thread's stack");
    }
    int rc = GC_register_my_thread(&base);
    if (rc != GC_SUCCESS && rc != GC_DUPLICATE) {
      return make_error("register_current_thread: GC_register_my_thread failed (" +
                        std::to_string(rc) + ")");
    }
  }
  if (llvm::Error err = impl_->registry->register_current_thread()) return err;
  if (!impl_->options.faults.enabled) return llvm::Error::success();
  if (llvm::Error err =
          FaultReporter::attach_current_thread(impl_->options.faults.alt_stack_bytes)) {
    llvm::consumeError(impl_->registry->unregister_current_thread());
    return err;
  }
  return llvm::Error::success();
}

llvm::Error Runtime::unregister_current_thread() {
  if (llvm::Error err = impl_->registry->unregister_current_thread()) return err;
  if (impl_->options.faults.enabled) FaultReporter::detach_current_thread();
  // The main thread stays known to Boehm (GC_INIT registered it, and it must stay so).
  if (getpid() != pid_t(syscall(SYS_gettid))) GC_unregister_my_thread();
  return llvm::Error::success();
}

void Runtime::note_tier_up(bool installed) {
  std::lock_guard lock(impl_->mutex);
  ++(installed ? impl_->counters.tier_ups : impl_->counters.tier_ups_discarded);
}

const std::string& Runtime::target_triple() const { return impl_->target_triple; }
const std::string& Runtime::data_layout() const { return impl_->data_layout; }

size_t Runtime::safepoint() { return impl_->safepoint(); }

ReclaimReport Runtime::reclaim() { return impl_->reclaim(); }

llvm::Error Runtime::warm_up(llvm::orc::ThreadSafeModule module) {
  return impl_->engine->warm_up(std::move(module));
}

CollectReport Runtime::collect() { return impl_->collect(); }

size_t Runtime::live_code_objects() const {
  std::lock_guard lock(impl_->mutex);
  size_t live = 0;
  for (const auto& [owner, unit] : impl_->units) live += unit.object->magic == kCodeObjectMagic;
  return live;
}

GcCounters Runtime::counters() const {
  const uint64_t reclaim_passes = impl_->heap->counters().reclaim_passes.count;
  std::lock_guard lock(impl_->mutex);
  GcCounters c = impl_->counters;
  c.reclaim_passes = reclaim_passes;
  return c;
}

std::string Runtime::dump_json() const {
  // The heap's statistics as data, with the gc section beside them. Owner names are not
  // checked for UTF-8 (an embedder may name code anything): invalid bytes are replaced.
  nlohmann::json dump = impl_->heap->stats();
  dump["gc"] =
      gc_section_json(counters(), live_code_objects(), impl_->registry->registered_threads());
  return dump.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string Runtime::dump_text() const {
  return impl_->heap->dump_text() +
         gc_section_text(counters(), live_code_objects(), impl_->registry->registered_threads());
}

Heap& Runtime::heap() { return *impl_->heap; }
jit::Engine& Runtime::engine() { return *impl_->engine; }

}  // namespace codeheap::gc
