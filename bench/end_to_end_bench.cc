// Issue 6, part 2: one closure's whole life through a JIT, ours against stock LLVM.
//
// A cycle parses a tiny IR module, adds it, looks its function up, calls it and removes it:
//   e2e/engine          our Engine (LLJIT on a default Heap through HeapJITLinkMemoryManager);
//                       removal retires to quarantine, and a reclaim pass runs every
//                       kReclaimEvery removals, inside the timed cycles;
//   e2e/stock_lljit     LLJITBuilder with every default, the module under a ResourceTracker of
//                       its own that is removed at the end of the cycle;
//   e2e/lljit_codeheap  the stock LLJIT with only its memory manager replaced by ours (and the
//                       same reclaim cadence as the engine). It separates what the memory
//                       manager costs from the engine's own choices (a compiler per compilation,
//                       verification, eager linking, no IR platform).
// All three get the same IR text and parse it the same way, and the function keeps its name
// across cycles, so no JIT accumulates symbol names. bench/run.sh also runs 100,000 cycles of
// the engine and of stock LLJIT in fixed-iteration mode for their peak RSS and /proc/self/maps
// size.
#include <cstdint>
#include <memory>
#include <utility>

#include "bench/harness.h"
#include "bench/jit_support.h"
#include "jit/eh_frame_plugin.h"
#include "jit/engine.h"
#include "jit/jitlink_memory_manager.h"
#include "llvm/ExecutionEngine/Orc/ObjectLinkingLayer.h"

namespace codeheap::bench {
namespace {

constexpr const char* kModuleIr = R"IR(
define i64 @tiny_inc(i64 %x) {
  %r = add i64 %x, 1
  ret i64 %r
}
)IR";

using IncFn = int64_t (*)(int64_t);

void call_and_check(llvm::orc::ExecutorAddr address) {
  if (address.toPtr<IncFn>()(41) != 42) die("tiny_inc(41) != 42");
}

class EngineCycle final : public Workload {
 public:
  EngineCycle()
      : heap_(make_heap("bench")),
        engine_(check(jit::Engine::create(*heap_), "creating the engine")) {}

  void run(size_t count) override {
    for (size_t i = 0; i < count; ++i) {
      jit::ModuleHandle module =
          check(engine_->add_module(parse_module(kModuleIr, "tiny"), "tiny"), "add_module");
      call_and_check(check(engine_->lookup("tiny_inc"), "lookup"));
      check(engine_->remove_module(module), "remove_module");
      if (++removals_ % kReclaimEvery == 0) heap_->reclaim(nothing_referenced);
    }
  }

 private:
  std::unique_ptr<Heap> heap_;  // outlives the engine
  std::unique_ptr<jit::Engine> engine_;
  size_t removals_ = 0;
};

// One cycle through an LLJIT.
void lljit_cycle(llvm::orc::LLJIT& jit) {
  llvm::orc::ResourceTrackerSP tracker = jit.getMainJITDylib().createResourceTracker();
  check(jit.addIRModule(tracker, parse_module(kModuleIr, "tiny")), "addIRModule");
  call_and_check(check(jit.lookup("tiny_inc"), "lookup"));
  check(tracker->remove(), "removing the module");
}

class StockCycle final : public Workload {
 public:
  StockCycle() : jit_(make_stock_lljit()) {}

  void run(size_t count) override {
    for (size_t i = 0; i < count; ++i) lljit_cycle(*jit_);
  }

 private:
  std::unique_ptr<llvm::orc::LLJIT> jit_;
};

class LLJITOnCodeHeapCycle final : public Workload {
 public:
  LLJITOnCodeHeapCycle() : heap_(make_heap("bench")), memory_(*heap_) {
    // What LLJITBuilder sets up for JITLink by itself (PIC, the Small code model, an
    // ObjectLinkingLayer with eh_frame registration), with our memory manager and the eh_frame
    // plugin that goes with it (jit/eh_frame_plugin.h).
    auto target = check(llvm::orc::JITTargetMachineBuilder::detectHost(), "detectHost");
    target.setRelocationModel(llvm::Reloc::PIC_).setCodeModel(llvm::CodeModel::Small);
    jit_ = check(llvm::orc::LLJITBuilder()
                     .setJITTargetMachineBuilder(std::move(target))
                     .setObjectLinkingLayerCreator(
                         [this](llvm::orc::ExecutionSession& session, const llvm::Triple&)
                             -> llvm::Expected<std::unique_ptr<llvm::orc::ObjectLayer>> {
                           auto layer =
                               std::make_unique<llvm::orc::ObjectLinkingLayer>(session, memory_);
                           layer->addPlugin(std::make_unique<jit::DeferredEHFramePlugin>());
                           return layer;
                         })
                     .create(),
                 "creating LLJIT on the code heap");
  }

  void run(size_t count) override {
    for (size_t i = 0; i < count; ++i) {
      lljit_cycle(*jit_);
      if (++removals_ % kReclaimEvery == 0) heap_->reclaim(nothing_referenced);
    }
  }

 private:
  std::unique_ptr<Heap> heap_;
  jit::HeapJITLinkMemoryManager memory_;  // outlives the JIT
  std::unique_ptr<llvm::orc::LLJIT> jit_;
  size_t removals_ = 0;
};

// Our JIT and stock LLJIT in alternation, one cycle each (harness.h): a cycle is ~1 ms of LLVM
// code generation that both sides share, and the manager's share of it (a few percent) is
// smaller than the drift between two separately measured benchmarks (repetitions vary by ~13%).
std::unique_ptr<Workload> alternating_with_stock(std::unique_ptr<Workload> ours) {
  constexpr size_t kWarmup = 100;
  return std::make_unique<Alternating>(Alternating::Side{std::move(ours), 1},
                                       Alternating::Side{std::make_unique<StockCycle>(), 1},
                                       kWarmup);
}

void register_benchmarks() {
  initialize_native_target();
  add({.name = "e2e/engine", .make = [] { return std::make_unique<EngineCycle>(); }, .warmup = 100})
      ->Unit(benchmark::kMicrosecond);
  add({.name = "e2e/stock_lljit",
       .make = [] { return std::make_unique<StockCycle>(); },
       .warmup = 100})
      ->Unit(benchmark::kMicrosecond);
  add({.name = "e2e/lljit_codeheap",
       .make = [] { return std::make_unique<LLJITOnCodeHeapCycle>(); },
       .warmup = 100})
      ->Unit(benchmark::kMicrosecond);
  add({.name = "e2e/paired/engine",
       .make = [] { return alternating_with_stock(std::make_unique<EngineCycle>()); }})
      ->Unit(benchmark::kMicrosecond);
  add({.name = "e2e/paired/lljit_codeheap",
       .make = [] { return alternating_with_stock(std::make_unique<LLJITOnCodeHeapCycle>()); }})
      ->Unit(benchmark::kMicrosecond);
}

}  // namespace
}  // namespace codeheap::bench

int main(int argc, char** argv) {
  codeheap::bench::register_benchmarks();
  return codeheap::bench::main(argc, argv);
}
