#include "gcglue/runtime.h"

#define GC_THREADS
#define GC_NO_THREAD_REDIRECTS  // threads register explicitly (Runtime::register_current_thread)
#include <gc/gc.h>

#include <sys/syscall.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "codeheap/log.h"
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

}  // namespace

// Lives in the Boehm heap (GC_MALLOC, so `literals` is traced). `runtime` points to malloc
// memory the collector does not trace; it is cleared when the runtime goes away first.
struct CodeObject {
  uint64_t magic;
  const void* runtime;  // the Runtime::Impl that made it
  uint64_t module;  // jit::ModuleHandle id
  uint64_t id;      // names its definitions: "<name>.co<id>"
  void** literals;  // GC_MALLOC'd copy of the pool
  size_t literal_count;
};

struct Runtime::Impl {
  RuntimeOptions options;
  std::unique_ptr<Heap> heap;
  std::unique_ptr<jit::Engine> engine;
  std::unique_ptr<ThreadRegistry> registry;
  std::shared_ptr<spdlog::logger> log = codeheap::logger("gc");

  // Serializes safepoint draining, reclaim passes and compile bookkeeping.
  mutable std::mutex mutex;
  // Code objects whose finalizer has not run. Malloc memory, so these are weak references the
  // collector does not see. An entry whose object no longer carries the magic was finalized
  // and is dropped at the next safepoint.
  std::unordered_set<CodeObject*> live;
  uint64_t next_id = 1;
  GcCounters counters;

  // Filled by finalizers (which run inside GC_invoke_finalizers); guarded by its own mutex,
  // never held while allocating.
  std::mutex pending_mutex;
  std::vector<uint64_t> pending;

  static void finalize(void* object, void* client_data) {
    auto* code = static_cast<CodeObject*>(object);
    auto* impl = static_cast<Impl*>(client_data);
    if (code->magic != kCodeObjectMagic || code->runtime != impl) return;
    code->magic = 0;
    std::lock_guard lock(impl->pending_mutex);
    impl->pending.push_back(code->module);
  }

  ReclaimReport reclaim_pass();

  size_t retire_pending() {
    std::vector<uint64_t> modules;
    {
      std::lock_guard lock(pending_mutex);
      modules.swap(pending);
    }
    size_t retired = 0;
    for (uint64_t id : modules) {
      if (llvm::Error err = engine->removeModule(jit::ModuleHandle{id})) {
        ++counters.retire_failures;
        log->error("retiring module {} failed: {}", id, llvm::toString(std::move(err)));
      } else {
        ++retired;
      }
    }
    return retired;
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

  auto impl = std::make_unique<Impl>();
  impl->options = options;
  auto heap = Heap::create(options.heap);
  if (!heap) return make_error("runtime: creating the code heap: " + heap.error().message);
  impl->heap = std::move(*heap);
  // Removal must keep bytes intact: a thread may still run a collected closure's code.
  options.engine.retire_mode = jit::RetireMode::kKeepRunning;
  auto engine = jit::Engine::create(*impl->heap, options.engine);
  if (!engine) return engine.takeError();
  impl->engine = std::move(*engine);
  auto registry = ThreadRegistry::create(options.scan);
  if (!registry) return registry.takeError();
  impl->registry = std::move(*registry);
  if (llvm::Error err = impl->registry->register_current_thread()) return std::move(err);
  return std::unique_ptr<Runtime>(new Runtime(std::move(impl)));
}

Runtime::~Runtime() {
  std::lock_guard lock(impl_->mutex);
  for (CodeObject* code : impl_->live) {
    GC_register_finalizer_no_order(code, nullptr, nullptr, nullptr, nullptr);
    code->magic = 0;
    code->runtime = nullptr;
  }
  impl_->live.clear();
  impl_->engine.reset();  // removes every module
  if (impl_->registry->is_current_thread_registered()) {
    llvm::consumeError(impl_->registry->unregister_current_thread());
  }
}

llvm::Expected<CodeObject*> Runtime::compile(llvm::StringRef ir, llvm::StringRef name,
                                             llvm::ArrayRef<void*> literals) {
  uint64_t id;
  {
    std::lock_guard lock(impl_->mutex);
    id = impl_->next_id++;
  }
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
  // Private names: two code objects may define the same function names.
  std::string suffix = ".co" + std::to_string(id);
  for (llvm::GlobalValue& value : module->global_values()) {
    if (!value.isDeclaration() && !value.hasLocalLinkage()) {
      value.setName(value.getName() + suffix);
    }
  }
  auto handle = impl_->engine->addModule(
      llvm::orc::ThreadSafeModule(std::move(module), std::move(context)), name);
  if (!handle) return handle.takeError();

  void** pool = nullptr;
  if (!literals.empty()) {
    pool = static_cast<void**>(GC_MALLOC(literals.size() * sizeof(void*)));
    if (pool == nullptr) {
      llvm::consumeError(impl_->engine->removeModule(*handle));
      return make_error("compile '" + name.str() + "': out of GC memory for the literal pool");
    }
    std::memcpy(pool, literals.data(), literals.size() * sizeof(void*));
  }
  auto* code = static_cast<CodeObject*>(GC_MALLOC(sizeof(CodeObject)));
  if (code == nullptr) {
    llvm::consumeError(impl_->engine->removeModule(*handle));
    return make_error("compile '" + name.str() + "': out of GC memory for the code object");
  }
  *code = CodeObject{kCodeObjectMagic, impl_.get(), handle->id, id, pool, literals.size()};
  GC_register_finalizer_no_order(code, &Impl::finalize, impl_.get(), nullptr, nullptr);
  std::lock_guard lock(impl_->mutex);
  impl_->live.insert(code);
  ++impl_->counters.code_objects_created;
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
  auto address = impl_->engine->lookup(name.str() + ".co" + std::to_string(code->id));
  if (!address) {
    llvm::consumeError(address.takeError());
    return make_error("symbol '" + name.str() + "': the code object defines no such symbol");
  }
  return address->toPtr<void*>();
}

llvm::Expected<Closure*> Runtime::make_closure(CodeObject* code, llvm::StringRef entry,
                                               void* env) {
  auto address = symbol(code, entry);
  if (!address) return address.takeError();
  auto* closure = static_cast<Closure*>(GC_MALLOC(sizeof(Closure)));
  if (closure == nullptr) return make_error("make_closure: out of GC memory");
  *closure = Closure{code, *address, env};
  std::lock_guard lock(impl_->mutex);
  ++impl_->counters.closures_created;
  return closure;
}

llvm::ArrayRef<void*> Runtime::literals(const CodeObject* code) const {
  if (!is_live(code, impl_.get())) return {};
  return llvm::ArrayRef<void*>(code->literals, code->literal_count);
}

llvm::Expected<void*> Runtime::define_function(llvm::StringRef name, llvm::StringRef ir) {
  auto stub = impl_->engine->defineFunction(name, ir);
  if (!stub) return stub.takeError();
  return stub->toPtr<void*>();
}

llvm::Error Runtime::define_host_symbol(llvm::StringRef name, void* address) {
  llvm::StringMap<llvm::orc::ExecutorAddr> symbols;
  symbols[name] = llvm::orc::ExecutorAddr::fromPtr(address);
  return impl_->engine->defineHostSymbols(symbols);
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
  return impl_->registry->register_current_thread();
}

llvm::Error Runtime::unregister_current_thread() {
  if (llvm::Error err = impl_->registry->unregister_current_thread()) return err;
  // The main thread stays known to Boehm (GC_INIT registered it, and it must stay so).
  if (getpid() != pid_t(syscall(SYS_gettid))) GC_unregister_my_thread();
  return llvm::Error::success();
}

size_t Runtime::safepoint() {
  std::lock_guard lock(impl_->mutex);
  size_t finalized = 0;
  if (GC_should_invoke_finalizers()) finalized = size_t(GC_invoke_finalizers());
  impl_->counters.code_objects_finalized += finalized;
  {
    // Finalized objects are no longer in the live table.
    std::lock_guard pending_lock(impl_->pending_mutex);
    if (!impl_->pending.empty()) {
      for (auto it = impl_->live.begin(); it != impl_->live.end();) {
        it = (*it)->magic == kCodeObjectMagic ? std::next(it) : impl_->live.erase(it);
      }
    }
  }
  size_t retired = impl_->retire_pending();
  impl_->counters.modules_retired += retired;
  return retired;
}

ReclaimReport Runtime::reclaim() {
  // The pass runs on a thread of its own that runs no JIT code and is not registered: the
  // caller, if registered, is then interrupted and scanned like every other thread, and the
  // block addresses the pass handles never sit in the caller's frames, where the scan would
  // find them. Waiting in join() also lets a TSan build deliver the handshake signal at once.
  ReclaimReport report;
  std::thread reclaimer([&] { report = impl_->reclaim_pass(); });
  reclaimer.join();
  return report;
}

ReclaimReport Runtime::Impl::reclaim_pass() {
  std::lock_guard lock(mutex);
  std::vector<BlockInfo> blocks = heap->quarantined();
  std::vector<AddressRange> ranges;
  ranges.reserve(blocks.size());
  for (const BlockInfo& block : blocks) {
    ranges.push_back({block.address, block.address + block.size});
  }
  ScanReport scan = registry->scan(ranges);
  std::unordered_map<uintptr_t, bool> referenced;
  for (size_t i = 0; i < blocks.size(); ++i) referenced[blocks[i].address] = scan.referenced[i];
  // Blocks quarantined after the snapshot were not scanned: keep them for the next pass.
  ReclaimReport report = heap->reclaim([&](uintptr_t begin, uintptr_t) {
    auto it = referenced.find(begin);
    return it == referenced.end() || it->second;
  });
  GcCounters& c = counters;
  ++c.reclaim_passes;
  c.threads_timed_out += scan.threads_timed_out;
  c.scan_ns_last = scan.duration_ns;
  c.scan_ns_total += scan.duration_ns;
  for (bool hit : scan.referenced) c.blocks_kept_referenced += hit;
  return report;
}

CollectReport Runtime::collect() {
  GC_gcollect();
  CollectReport report;
  uint64_t before;
  {
    std::lock_guard lock(impl_->mutex);
    before = impl_->counters.code_objects_finalized;
    ++impl_->counters.collections;
  }
  report.modules_retired = safepoint();
  {
    std::lock_guard lock(impl_->mutex);
    report.finalized = impl_->counters.code_objects_finalized - before;
  }
  report.reclaim = reclaim();
  return report;
}

size_t Runtime::live_code_objects() const {
  std::lock_guard lock(impl_->mutex);
  size_t live = 0;
  for (CodeObject* code : impl_->live) live += code->magic == kCodeObjectMagic;
  return live;
}

GcCounters Runtime::counters() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->counters;
}

namespace {
nlohmann::json to_json(const GcCounters& c, size_t live) {
  return {{"live_code_objects", live},
          {"code_objects_created", c.code_objects_created},
          {"code_objects_finalized", c.code_objects_finalized},
          {"closures_created", c.closures_created},
          {"modules_retired", c.modules_retired},
          {"collections", c.collections},
          {"reclaim_passes", c.reclaim_passes},
          {"blocks_kept_referenced", c.blocks_kept_referenced},
          {"threads_timed_out", c.threads_timed_out},
          {"retire_failures", c.retire_failures},
          {"scan_ns_total", c.scan_ns_total},
          {"scan_ns_last", c.scan_ns_last}};
}
}  // namespace

std::string Runtime::dump_json() const {
  nlohmann::json dump = nlohmann::json::parse(impl_->heap->dump_json());
  dump["gc"] = to_json(counters(), live_code_objects());
  dump["gc"]["registered_threads"] = impl_->registry->registered_threads();
  return dump.dump(2);
}

std::string Runtime::dump_text() const {
  GcCounters c = counters();
  std::string text = impl_->heap->dump_text();
  text += fmt::format(
      "gc: {} live code objects ({} created, {} finalized), {} closures created\n"
      "    {} modules retired, {} collections, {} reclaim passes ({} blocks kept referenced, "
      "{} thread timeouts)\n"
      "    stack scans: last {:.3f} ms, total {:.3f} ms; {} registered threads\n",
      live_code_objects(), c.code_objects_created, c.code_objects_finalized,
      c.closures_created, c.modules_retired, c.collections, c.reclaim_passes,
      c.blocks_kept_referenced, c.threads_timed_out, c.scan_ns_last / 1e6,
      c.scan_ns_total / 1e6, impl_->registry->registered_threads());
  return text;
}

Heap& Runtime::heap() { return *impl_->heap; }
jit::Engine& Runtime::engine() { return *impl_->engine; }

}  // namespace codeheap::gc
