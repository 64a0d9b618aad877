// Issue 6, part 5: closures that the garbage collector creates and collects, through
// gc::Runtime.
//
// churn/runtime: each iteration compiles a closure's code object, makes a closure over a GC
//   environment and calls it, then drops it; after every kClosuresPerCollection closures a full
//   Runtime::collect() (Boehm collection, finalizers retire the dead modules, stack scan,
//   reclaim pass) runs inside the timed loop, so items_per_second is closures created *and*
//   collected per second. Counters, per collection: JIT bytes reclaimed and bytes left in
//   quarantine, code objects finalized, the reclamation pass (stack scan + Heap::reclaim, from
//   CollectReport and the runtime's counters) and the whole collect() call.
// churn/stock_lljit: the baseline, the same IR through stock LLJIT, freed by hand: add under a
//   ResourceTracker, look up, call, remove.
#define GC_THREADS
#define GC_NO_THREAD_REDIRECTS  // as gcglue: threads register through the Runtime
#include <gc/gc.h>

#include <chrono>
#include <cstdint>
#include <memory>

#include "bench/harness.h"
#include "bench/jit_support.h"
#include "gcglue/runtime.h"

namespace codeheap::bench {
namespace {

constexpr const char* kLambdaIr = R"IR(
define i64 @lambda(ptr %env, i64 %x) {
  %k = load i64, ptr %env
  %r = add i64 %x, %k
  ret i64 %r
}
)IR";

using LambdaFn = int64_t (*)(void* env, int64_t x);

void call_and_check(void* entry, void* env) {
  if (reinterpret_cast<LambdaFn>(entry)(env, 41) != 42) die("lambda(env = {1}, 41) != 42");
}

constexpr size_t kClosuresPerCollection = 100;

// Compiles, closes over a fresh environment, calls; the closure is garbage on return.
void make_and_call(gc::Runtime& runtime) {
  gc::CodeObject* code = check(runtime.compile(kLambdaIr, "lambda"), "compile");
  auto* env = static_cast<int64_t*>(GC_MALLOC(sizeof(int64_t)));
  if (env == nullptr) die("GC_MALLOC failed");
  *env = 1;
  gc::Closure* closure = check(runtime.make_closure(code, "lambda", env), "make_closure");
  call_and_check(closure->entry, closure->env);
}

void runtime_churn(benchmark::State& state) {
  std::unique_ptr<gc::Runtime> runtime = check(gc::Runtime::create(), "creating the runtime");
  // One untimed round first: the first compilation and collection pay one-off setup costs.
  for (size_t i = 0; i < kClosuresPerCollection; ++i) make_and_call(*runtime);
  runtime->collect();

  struct {
    double collections = 0, reclaimed_bytes = 0, quarantined_bytes = 0, finalized = 0;
    double pass_ns = 0, collect_ns = 0;
  } total;
  while (state.KeepRunningBatch(kClosuresPerCollection)) {
    for (size_t i = 0; i < kClosuresPerCollection; ++i) make_and_call(*runtime);
    const auto start = std::chrono::steady_clock::now();
    const gc::CollectReport report = runtime->collect();
    const auto collect_ns =
        std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
    state.PauseTiming();
    total.collections += 1;
    total.reclaimed_bytes += report.reclaim.reclaimed_bytes;
    total.quarantined_bytes += runtime->heap().stats().quarantined_bytes;
    total.finalized += report.finalized;
    total.pass_ns += report.reclaim.duration_ns + runtime->counters().scan_ns_last;
    total.collect_ns += collect_ns;
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["reclaimed_bytes_per_collection"] = total.reclaimed_bytes / total.collections;
  state.counters["quarantined_bytes_after_collection"] =
      total.quarantined_bytes / total.collections;
  state.counters["finalized_per_collection"] = total.finalized / total.collections;
  state.counters["reclaim_pass_ns"] = total.pass_ns / total.collections;
  state.counters["collect_ns"] = total.collect_ns / total.collections;
}

class StockChurn final : public Workload {
 public:
  StockChurn() : jit_(make_stock_lljit()) {}

  void run(size_t count) override {
    for (size_t i = 0; i < count; ++i) {
      llvm::orc::ResourceTrackerSP tracker = jit_->getMainJITDylib().createResourceTracker();
      check(jit_->addIRModule(tracker, parse_module(kLambdaIr, "lambda")), "addIRModule");
      int64_t env = 1;
      call_and_check(check(jit_->lookup("lambda"), "lookup").toPtr<void*>(), &env);
      check(tracker->remove(), "removing the module");
    }
  }

 private:
  std::unique_ptr<llvm::orc::LLJIT> jit_;
};

void register_benchmarks() {
  initialize_native_target();
  // Process CPU time: Boehm's parallel marker threads do part of each collection.
  benchmark::RegisterBenchmark("churn/runtime", runtime_churn)
      ->MeasureProcessCPUTime()
      ->Unit(benchmark::kMicrosecond);
  add({.name = "churn/stock_lljit",
       .make = [] { return std::make_unique<StockChurn>(); },
       .warmup = 100})
      ->MeasureProcessCPUTime()
      ->Unit(benchmark::kMicrosecond);
}

}  // namespace
}  // namespace codeheap::bench

int main(int argc, char** argv) {
  codeheap::bench::register_benchmarks();
  return codeheap::bench::main(argc, argv);
}
