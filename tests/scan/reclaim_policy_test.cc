// A user of the memory manager alone: stock LLJIT on HeapJITLinkMemoryManager, with the heap
// reclaiming on its own (ReclaimPolicy) through a ThreadRegistry's scan. No Boehm, no
// jit::Engine, no predicate written by the user.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <set>
#include <thread>

#include "codeheap/heap.h"
#include "jit/eh_frame_plugin.h"
#include "jit/engine.h"
#include "jit/jitlink_memory_manager.h"
#include "llvm/AsmParser/Parser.h"
#include "llvm/ExecutionEngine/Orc/CompileUtils.h"
#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/ExecutionEngine/Orc/ObjectLinkingLayer.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"
#include "scan/thread_registry.h"

namespace codeheap::scan {
namespace {

::testing::AssertionResult ok(llvm::Error error) {
  if (!error) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << llvm::toString(std::move(error));
}

std::atomic<bool> g_parked{false};
std::atomic<bool> g_release{false};

// What the parked module calls: waits until released.
extern "C" int64_t codeheap_test_park() {
  g_parked = true;
  while (!g_release) std::this_thread::yield();
  return 41;
}

// The parked function's address. The churning thread is registered and reads its own stack, so
// it never handles the parked module's addresses: a stale copy in its frames would rightly keep
// the blocks (the scan is conservative). Short-lived unregistered threads remove the module and
// look at its block.
std::atomic<uintptr_t> g_parked_code{0};
std::atomic<OwnerId> g_parked_owner{kNoOwner};

// Whether the parked function's block is in quarantine (its range may hold a later module's
// block once it is reclaimed: the owner tells them apart).
bool parked_code_quarantined(const Heap& heap) {
  bool quarantined = false;
  std::thread([&] {
    const auto block = heap.find(g_parked_code.load());
    quarantined =
        block && block->owner == g_parked_owner && block->state == BlockState::kQuarantined;
  }).join();
  return quarantined;
}

// The heap's committed bytes, taken on another thread for the same reason: stats() walks every
// block, the parked ones included.
size_t committed_bytes(const Heap& heap) {
  size_t committed = 0;
  std::thread([&] { committed = heap.stats().committed_bytes; }).join();
  return committed;
}

std::unique_ptr<llvm::Module> parse(const char* ir, llvm::LLVMContext& context) {
  llvm::SMDiagnostic diagnostic;
  auto module = llvm::parseAssemblyString(ir, diagnostic, context);
  EXPECT_NE(module, nullptr) << diagnostic.getMessage().str();
  return module;
}

// tiny(x) = x + 7: the module added and removed 10,000 times, compiled once to an object.
constexpr const char* kTiny = R"(
define i64 @tiny(i64 %x) {
  %r = add i64 %x, 7
  ret i64 %r
}
)";

// parked() = park() + 1: the add keeps the call from being a tail call, so the return address
// into this module stays on the parked thread's stack.
constexpr const char* kParked = R"(
declare i64 @codeheap_test_park()
define i64 @parked() {
  %r = call i64 @codeheap_test_park()
  %s = add i64 %r, 1
  ret i64 %s
}
)";

TEST(ReclaimPolicyTest, LLJITChurnsModulesInBoundedMemoryWhileARemovedOneStillRuns) {
  constexpr int kModules = 10000;
  constexpr int kParkAt = 100;
  constexpr int kReleaseAt = kModules / 2;

  HeapOptions options;
  options.code_bytes = size_t{16} << 20;
  options.read_only_bytes = size_t{8} << 20;
  options.data_bytes = size_t{8} << 20;
  options.name = "lljit-policy";
  auto created = Heap::create(options);
  ASSERT_TRUE(created) << created.error().message;
  std::unique_ptr<Heap> heap = std::move(*created);
  auto registry_or = ThreadRegistry::create();
  ASSERT_TRUE(bool(registry_or)) << llvm::toString(registry_or.takeError());
  std::unique_ptr<ThreadRegistry> registry = std::move(*registry_or);
  // This thread runs JIT code too, and reclaims: it reads its own stack.
  ASSERT_TRUE(ok(registry->register_current_thread()));
  heap->set_reclaim_policy({.scanner = registry.get(), .quarantined_bytes = size_t{16} << 10});

  jit::HeapJITLinkMemoryManager memory(*heap);
  auto target = jit::target_machine_builder(jit::EngineOptions{});
  ASSERT_TRUE(bool(target)) << llvm::toString(target.takeError());
  auto built =
      llvm::orc::LLJITBuilder()
          .setJITTargetMachineBuilder(*target)
          .setObjectLinkingLayerCreator(
              [&](llvm::orc::ExecutionSession& session,
                  const llvm::Triple&) -> llvm::Expected<std::unique_ptr<llvm::orc::ObjectLayer>> {
                auto layer = std::make_unique<llvm::orc::ObjectLinkingLayer>(session, memory);
                layer->addPlugin(std::make_shared<jit::DeferredEHFramePlugin>());
                return layer;
              })
          .create();
  ASSERT_TRUE(bool(built)) << llvm::toString(built.takeError());
  std::unique_ptr<llvm::orc::LLJIT> lljit = std::move(*built);
  llvm::orc::JITDylib& main = lljit->getMainJITDylib();
  ASSERT_TRUE(ok(main.define(llvm::orc::absoluteSymbols(
      {{lljit->mangleAndIntern("codeheap_test_park"),
        {llvm::orc::ExecutorAddr::fromPtr(&codeheap_test_park),
         llvm::JITSymbolFlags::Exported | llvm::JITSymbolFlags::Callable}}}))));

  // The tiny module's object code, compiled once: the churn then costs links, not codegen.
  auto machine = target->createTargetMachine();
  ASSERT_TRUE(bool(machine)) << llvm::toString(machine.takeError());
  std::unique_ptr<llvm::MemoryBuffer> tiny_object;
  {
    llvm::LLVMContext context;
    auto module = parse(kTiny, context);
    ASSERT_NE(module, nullptr);
    module->setDataLayout((*machine)->createDataLayout());
    module->setTargetTriple((*machine)->getTargetTriple().str());
    auto object = llvm::orc::SimpleCompiler(**machine)(*module);
    ASSERT_TRUE(bool(object)) << llvm::toString(object.takeError());
    tiny_object = std::move(*object);
  }

  g_parked = false;
  g_release = false;
  std::thread parked_thread;
  std::atomic<int64_t> parked_result{0};
  llvm::orc::ResourceTrackerSP parked_tracker;
  std::set<uintptr_t> code_addresses;
  int reused = 0;
  size_t peak_committed[2] = {0, 0};  // first half, second half
  uint64_t passes_while_parked = 0;

  for (int i = 0; i < kModules; ++i) {
    if (i == kParkAt) {
      parked_tracker = main.createResourceTracker();
      auto context = std::make_unique<llvm::LLVMContext>();
      auto module = parse(kParked, *context);
      ASSERT_NE(module, nullptr);
      ASSERT_TRUE(ok(lljit->addIRModule(
          parked_tracker, llvm::orc::ThreadSafeModule(std::move(module), std::move(context)))));
      parked_thread = std::thread([&] {
        ASSERT_TRUE(ok(registry->register_current_thread()));
        auto parked = lljit->lookup("parked");
        if (!parked) {
          ADD_FAILURE() << llvm::toString(parked.takeError());
          g_parked = true;
        } else {
          g_parked_code = parked->getValue();
          g_parked_owner = heap->find(parked->getValue())->owner;
          parked_result = parked->toPtr<int64_t (*)()>()();
        }
        ASSERT_TRUE(ok(registry->unregister_current_thread()));
      });
      while (!g_parked) std::this_thread::yield();
      std::thread([&] {  // retired while the parked thread is inside
        EXPECT_TRUE(ok(parked_tracker->remove()));
        parked_tracker.reset();
      })
          .join();
      ASSERT_TRUE(parked_code_quarantined(*heap));
      passes_while_parked = heap->counters().automatic_reclaim_passes;
    }
    if (i == kReleaseAt) {
      EXPECT_TRUE(parked_code_quarantined(*heap)) << "reclaimed under the parked thread";
      passes_while_parked = heap->counters().automatic_reclaim_passes - passes_while_parked;
      g_release = true;
      parked_thread.join();
      EXPECT_EQ(parked_result, 42);  // returned through its intact, removed code
    }

    auto tracker = main.createResourceTracker();
    ASSERT_TRUE(ok(lljit->addObjectFile(
        tracker, llvm::MemoryBuffer::getMemBuffer(tiny_object->getMemBufferRef(), false))));
    auto tiny = lljit->lookup("tiny");
    ASSERT_TRUE(bool(tiny)) << llvm::toString(tiny.takeError());
    EXPECT_EQ(tiny->toPtr<int64_t (*)(int64_t)>()(i), i + 7);
    reused += !code_addresses.insert(tiny->getValue()).second;
    ASSERT_TRUE(ok(tracker->remove()));

    // Committed bytes only grow between trims, and this churn never frees the 4 MiB of whole
    // pages that a trim waits for (retain_free_bytes): the last sample of each half is its peak.
    if (i % 100 == 99) {
      size_t& peak = peak_committed[i < kModules / 2 ? 0 : 1];
      peak = std::max(peak, committed_bytes(*heap));
    }
  }

  const Counters counters = heap->counters();
  EXPECT_GT(passes_while_parked, 0u) << "no pass ran while the thread was parked";
  EXPECT_FALSE(parked_code_quarantined(*heap)) << "not reclaimed after the thread returned";
  EXPECT_LE(peak_committed[1], peak_committed[0]);
  EXPECT_GT(reused, kModules * 9 / 10);
  EXPECT_EQ(counters.allocation_failures, 0u);
  RecordProperty("peak_committed_first_half", std::to_string(peak_committed[0]));
  RecordProperty("peak_committed_second_half", std::to_string(peak_committed[1]));
  RecordProperty("distinct_code_addresses", std::to_string(code_addresses.size()));
  RecordProperty("reused", reused);
  RecordProperty("automatic_reclaim_passes", std::to_string(counters.automatic_reclaim_passes));
  RecordProperty("automatic_reclaim_passes_while_parked", std::to_string(passes_while_parked));

  lljit.reset();
  heap->set_reclaim_policy({});
  EXPECT_TRUE(ok(registry->unregister_current_thread()));
}

}  // namespace
}  // namespace codeheap::scan
