// Issue 6, part 4: what a redefinition and a call through an entry cell cost.
//
// swap/*: redefinition without code generation. The new body is linked untimed before each
//   batch (the small request: 256 B code + 64 B constants); the timed step points the function
//   at it and gives the previous body's memory back:
//     entry_cell  EntryCell::set_target, then HeapJITLinkMemoryManager::deallocate of the old
//                 body (its blocks retired to quarantine; a reclaim pass every kReclaimEvery
//                 swaps, amortized into the time);
//     orc_stubs   LLVM's equivalent: LocalIndirectStubsManager::updatePointer, then
//                 InProcessMemoryManager::deallocate of the old body.
// redefine/*: the whole redefinition, code generation included, for context:
//     engine       Engine::define_function (reclaim as above);
//     stock_lljit  stock LLJIT + an ORC stub: add the new version under a ResourceTracker of its
//                  own, look it up, updatePointer, remove the previous version's tracker.
// call/*: a tight loop calling a tiny JIT function (x + 1) directly, through an entry cell and
//   through an ORC stub; the body is the same code in all three.
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bench/harness.h"
#include "bench/jit_support.h"
#include "bench/link_graphs.h"
#include "jit/engine.h"
#include "jit/entry_cell.h"
#include "jit/jitlink_memory_manager.h"
#include "llvm/ExecutionEngine/Orc/IndirectionUtils.h"
#include "llvm/IR/Function.h"
#include "llvm/IR/Module.h"
#include "llvm/TargetParser/Host.h"

namespace codeheap::bench {
namespace {

using llvm::jitlink::JITLinkMemoryManager;
using llvm::orc::ExecutorAddr;

using IncFn = int64_t (*)(int64_t);

constexpr const char* kHotIr = R"IR(
define i64 @hot(i64 %x) {
  %r = add i64 %x, 1
  ret i64 %r
}
)IR";

std::unique_ptr<llvm::orc::IndirectStubsManager> make_stubs_manager() {
  return llvm::orc::createLocalIndirectStubsManagerBuilder(
      llvm::Triple(llvm::sys::getProcessTriple()))();
}

ExecutorAddr find_stub(llvm::orc::IndirectStubsManager& stubs, llvm::StringRef name) {
  ExecutorAddr stub = stubs.findStub(name, /*ExportedStubsOnly=*/false).getAddress();
  if (!stub) die("no ORC stub named " + name.str());
  return stub;
}

// Bodies linked ahead of the timed swaps; the function always points at `current`.
class Bodies {
 public:
  explicit Bodies(JITLinkMemoryManager& memory) : memory_(memory) { current_ = link(); }
  ~Bodies() {
    for (Body& body : pending_)
      if (body.allocation) deallocate(memory_, std::move(body.allocation));  // not yet swapped in
    deallocate(memory_, std::move(current_.allocation));
  }

  ExecutorAddr current() const { return current_.code; }

  void prepare(size_t count) {
    pending_.clear();
    for (size_t i = 0; i < count; ++i) pending_.push_back(link());
  }

  // Makes the i-th prepared body current; returns the previous one's memory.
  JITLinkMemoryManager::FinalizedAlloc advance(size_t i) {
    JITLinkMemoryManager::FinalizedAlloc previous = std::move(current_.allocation);
    current_ = std::move(pending_[i]);
    return previous;
  }

 private:
  struct Body {
    ExecutorAddr code;
    JITLinkMemoryManager::FinalizedAlloc allocation;
  };

  Body link() {
    std::unique_ptr<llvm::jitlink::LinkGraph> graph = make_graph(kSmallRequest);
    JITLinkMemoryManager::FinalizedAlloc allocation = allocate_and_finalize(memory_, *graph);
    return {code_address(*graph), std::move(allocation)};
  }

  JITLinkMemoryManager& memory_;
  Body current_;
  std::vector<Body> pending_;  // consumed in order by advance()
};

class EntryCellSwap final : public Workload {
 public:
  EntryCellSwap()
      : heap_(make_heap("bench")),
        memory_(*heap_),
        bodies_(memory_),
        cell_(check(jit::EntryCell::create(*heap_, "hot", bodies_.current()), "EntryCell")) {}

  void prepare(size_t count) override { bodies_.prepare(count); }

  void run(size_t count) override {
    for (size_t i = 0; i < count; ++i) {
      JITLinkMemoryManager::FinalizedAlloc previous = bodies_.advance(i);
      cell_->set_target(bodies_.current());
      deallocate(memory_, std::move(previous));
      if (++swaps_ % kReclaimEvery == 0) heap_->reclaim(nothing_referenced);
    }
  }

 private:
  std::unique_ptr<Heap> heap_;
  jit::HeapJITLinkMemoryManager memory_;
  Bodies bodies_;
  std::unique_ptr<jit::EntryCell> cell_;
  size_t swaps_ = 0;
};

class OrcStubSwap final : public Workload {
 public:
  OrcStubSwap()
      : memory_(check(llvm::jitlink::InProcessMemoryManager::Create(), "InProcessMemoryManager")),
        bodies_(*memory_),
        stubs_(make_stubs_manager()) {
    check(stubs_->createStub("hot", bodies_.current(), llvm::JITSymbolFlags::Exported),
          "createStub");
  }

  void prepare(size_t count) override { bodies_.prepare(count); }

  void run(size_t count) override {
    for (size_t i = 0; i < count; ++i) {
      JITLinkMemoryManager::FinalizedAlloc previous = bodies_.advance(i);
      check(stubs_->updatePointer("hot", bodies_.current()), "updatePointer");
      deallocate(*memory_, std::move(previous));
    }
  }

 private:
  std::unique_ptr<llvm::jitlink::InProcessMemoryManager> memory_;
  Bodies bodies_;
  std::unique_ptr<llvm::orc::IndirectStubsManager> stubs_;
};

void call_and_check(ExecutorAddr function) {
  if (function.toPtr<IncFn>()(41) != 42) die("hot(41) != 42");
}

class EngineRedefine final : public Workload {
 public:
  EngineRedefine()
      : heap_(make_heap("bench")), engine_(check(jit::Engine::create(*heap_), "Engine")) {
    stub_ = check(engine_->define_function("hot", kHotIr), "define_function");
  }

  void run(size_t count) override {
    for (size_t i = 0; i < count; ++i) {
      check(engine_->define_function("hot", kHotIr), "define_function");
      call_and_check(stub_);
      if (++swaps_ % kReclaimEvery == 0) heap_->reclaim(nothing_referenced);
    }
  }

 private:
  std::unique_ptr<Heap> heap_;
  std::unique_ptr<jit::Engine> engine_;
  ExecutorAddr stub_;
  size_t swaps_ = 0;
};

class StockRedefine final : public Workload {
 public:
  StockRedefine() : jit_(make_stock_lljit()), stubs_(make_stubs_manager()) {
    check(stubs_->createStub("hot", link_version(), llvm::JITSymbolFlags::Exported), "createStub");
    stub_ = find_stub(*stubs_, "hot");
  }

  void run(size_t count) override {
    for (size_t i = 0; i < count; ++i) {
      llvm::orc::ResourceTrackerSP previous = current_;
      check(stubs_->updatePointer("hot", link_version()), "updatePointer");
      check(previous->remove(), "removing the previous version");
      call_and_check(stub_);
    }
  }

 private:
  // Adds a new version of @hot under a private name (two versions are alive at once, as with
  // Engine::define_function) and returns its address.
  ExecutorAddr link_version() {
    const std::string name = "hot.v" + std::to_string(++version_);
    llvm::orc::ThreadSafeModule module = parse_module(kHotIr, name);
    module.withModuleDo([&](llvm::Module& m) { m.getFunction("hot")->setName(name); });
    current_ = jit_->getMainJITDylib().createResourceTracker();
    check(jit_->addIRModule(current_, std::move(module)), "addIRModule");
    return check(jit_->lookup(name), "lookup");
  }

  std::unique_ptr<llvm::orc::LLJIT> jit_;
  std::unique_ptr<llvm::orc::IndirectStubsManager> stubs_;
  llvm::orc::ResourceTrackerSP current_;
  ExecutorAddr stub_;
  uint64_t version_ = 0;
};

// One JIT body of x + 1, reachable directly, through an entry cell and through an ORC stub.
class CallTargets {
 public:
  CallTargets() : heap_(make_heap("bench")), engine_(check(jit::Engine::create(*heap_), "Engine")) {
    check(engine_->add_module(kHotIr, "hot"), "add_module");
    body_ = check(engine_->lookup("hot"), "lookup");
    cell_ = check(jit::EntryCell::create(*heap_, "hot_cell", body_), "EntryCell");
    stubs_ = make_stubs_manager();
    check(stubs_->createStub("hot", body_, llvm::JITSymbolFlags::Exported), "createStub");
  }

  ExecutorAddr direct() const { return body_; }
  ExecutorAddr entry_cell() const { return cell_->address(); }
  ExecutorAddr orc_stub() const { return find_stub(*stubs_, "hot"); }

 private:
  std::unique_ptr<Heap> heap_;
  std::unique_ptr<jit::Engine> engine_;
  ExecutorAddr body_;
  std::unique_ptr<jit::EntryCell> cell_;
  std::unique_ptr<llvm::orc::IndirectStubsManager> stubs_;
};

class CallLoop final : public Workload {
 public:
  using Path = ExecutorAddr (CallTargets::*)() const;
  explicit CallLoop(Path path) : function_((targets_.*path)().toPtr<IncFn>()) {}

  void run(size_t count) override {
    IncFn function = function_;
    // The compiler must not assume anything about the target: an opaque indirect call each time.
    benchmark::DoNotOptimize(function);
    int64_t x = 0;
    for (size_t i = 0; i < count; ++i) x = function(x);
    if (x != static_cast<int64_t>(count)) die("the call loop computed a wrong sum");
  }

 private:
  CallTargets targets_;
  IncFn function_;
};

void register_benchmarks() {
  initialize_native_target();
  constexpr size_t kSwapBatch = 256;
  add({.name = "swap/entry_cell",
       .make = [] { return std::make_unique<EntryCellSwap>(); },
       .batch = kSwapBatch,
       .prepared = true,
       .warmup = 1000});
  add({.name = "swap/orc_stubs",
       .make = [] { return std::make_unique<OrcStubSwap>(); },
       .batch = kSwapBatch,
       .prepared = true,
       .warmup = 1000});

  add({.name = "redefine/engine",
       .make = [] { return std::make_unique<EngineRedefine>(); },
       .warmup = 100})
      ->Unit(benchmark::kMicrosecond);
  add({.name = "redefine/stock_lljit",
       .make = [] { return std::make_unique<StockRedefine>(); },
       .warmup = 100})
      ->Unit(benchmark::kMicrosecond);

  constexpr size_t kCallBatch = 4096;
  add({.name = "call/direct",
       .make = [] { return std::make_unique<CallLoop>(&CallTargets::direct); },
       .batch = kCallBatch});
  add({.name = "call/entry_cell",
       .make = [] { return std::make_unique<CallLoop>(&CallTargets::entry_cell); },
       .batch = kCallBatch});
  add({.name = "call/orc_stub",
       .make = [] { return std::make_unique<CallLoop>(&CallTargets::orc_stub); },
       .batch = kCallBatch});
}

}  // namespace
}  // namespace codeheap::bench

int main(int argc, char** argv) {
  codeheap::bench::register_benchmarks();
  return codeheap::bench::main(argc, argv);
}
