// HeapJITLinkMemoryManager on its own: plugged into a hand-made ORC stack (as docs/jit.md
// shows), segment placement per arena, finalize/dealloc actions, and every way an allocation
// can end (deallocate, abandon, dropped, failed).
#include "jit/jitlink_memory_manager.h"

#include <atomic>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <memory>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "jit/engine.h"
#include "jit/error.h"
#include "jit/link_plugin.h"
#include "llvm/AsmParser/Parser.h"
#include "llvm/ExecutionEngine/JITLink/JITLink.h"
#include "llvm/ExecutionEngine/Orc/CompileUtils.h"
#include "llvm/ExecutionEngine/Orc/Core.h"
#include "llvm/ExecutionEngine/Orc/ExecutorProcessControl.h"
#include "llvm/ExecutionEngine/Orc/IRCompileLayer.h"
#include "llvm/ExecutionEngine/Orc/ObjectLinkingLayer.h"
#include "llvm/ExecutionEngine/Orc/Shared/WrapperFunctionUtils.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/Support/SourceMgr.h"
#include "tests/jit/orc_support.h"

namespace {
// Allocation actions are plain C functions in the executor (here: this process).
std::atomic<int> finalize_actions_run{0};
std::atomic<int> dealloc_actions_run{0};
std::atomic<bool> fail_finalize_action{false};
}  // namespace

extern "C" llvm::orc::shared::CWrapperFunctionResult orc_test_finalize_action(const char* data,
                                                                              size_t size) {
  using llvm::orc::shared::SPSError;
  return llvm::orc::shared::WrapperFunction<SPSError()>::handle(
             data, size,
             []() -> llvm::Error {
               if (fail_finalize_action)
                 return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                                "finalize action refused");
               ++finalize_actions_run;
               return llvm::Error::success();
             })
      .release();
}

extern "C" llvm::orc::shared::CWrapperFunctionResult orc_test_dealloc_action(const char* data,
                                                                             size_t size) {
  using llvm::orc::shared::SPSError;
  return llvm::orc::shared::WrapperFunction<SPSError()>::handle(data, size,
                                                                []() -> llvm::Error {
                                                                  ++dealloc_actions_run;
                                                                  return llvm::Error::success();
                                                                })
      .release();
}

namespace codeheap::jit {
namespace {

using llvm::jitlink::SimpleSegmentAlloc;
using llvm::orc::AllocGroup;
using llvm::orc::ExecutorAddr;
using llvm::orc::MemLifetime;
using llvm::orc::MemProt;
using orc_testing::error_text;
using orc_testing::make_small_heap;
using orc_testing::stats_without_counters;
using ::testing::HasSubstr;

// MemProt's | lives in namespace llvm; this pulls it in.
LLVM_ENABLE_BITMASK_ENUMS_IN_NAMESPACE();

constexpr MemProt kRX = MemProt::Read | MemProt::Exec;
constexpr MemProt kRW = MemProt::Read | MemProt::Write;
constexpr MemProt kR = MemProt::Read;

// Adds one finalize/dealloc action pair to `graph`.
llvm::Error add_actions(llvm::jitlink::LinkGraph& graph) {
  using Call = llvm::orc::shared::WrapperFunctionCall;
  using NoArgs = llvm::orc::shared::SPSArgList<>;
  auto finalize = Call::Create<NoArgs>(ExecutorAddr::fromPtr(&orc_test_finalize_action));
  if (!finalize) return finalize.takeError();
  auto dealloc = Call::Create<NoArgs>(ExecutorAddr::fromPtr(&orc_test_dealloc_action));
  if (!dealloc) return dealloc.takeError();
  graph.allocActions().push_back({std::move(*finalize), std::move(*dealloc)});
  return llvm::Error::success();
}

// Adds one finalize/dealloc action pair to every graph.
class ActionsPlugin : public jit::StatelessLinkPlugin {
 public:
  void modifyPassConfig(llvm::orc::MaterializationResponsibility&, llvm::jitlink::LinkGraph&,
                        llvm::jitlink::PassConfiguration& config) override {
    config.PostAllocationPasses.emplace_back(add_actions);
  }
};

// The minimal ORC stack from docs/jit.md: session, JITLink layer on the heap, IR compiler.
class OrcPlainStack : public ::testing::Test {
 protected:
  void SetUp() override {
    heap_ = make_small_heap("plain-orc");
    ASSERT_NE(heap_, nullptr);
    memory_ = std::make_unique<HeapJITLinkMemoryManager>(*heap_);
    auto process = llvm::orc::SelfExecutorProcessControl::Create();
    ASSERT_TRUE(static_cast<bool>(process)) << error_text(process.takeError());
    session_ = std::make_unique<llvm::orc::ExecutionSession>(std::move(*process));
    session_->setErrorReporter(
        [this](llvm::Error err) { reported_ += llvm::toString(std::move(err)); });
    dylib_ = &session_->createBareJITDylib("main");
    linker_ = std::make_unique<llvm::orc::ObjectLinkingLayer>(*session_, *memory_);
    linker_->addPlugin(std::make_shared<ActionsPlugin>());
    auto target = target_machine_builder(EngineOptions{});  // host, Small code model
    ASSERT_TRUE(static_cast<bool>(target)) << error_text(target.takeError());
    auto layout = target->getDefaultDataLayoutForTarget();
    ASSERT_TRUE(static_cast<bool>(layout)) << error_text(layout.takeError());
    layout_ = std::make_unique<llvm::DataLayout>(std::move(*layout));
    compiler_ = std::make_unique<llvm::orc::IRCompileLayer>(
        *session_, *linker_, std::make_unique<llvm::orc::ConcurrentIRCompiler>(*target));
    finalize_actions_run = 0;
    dealloc_actions_run = 0;
    fail_finalize_action = false;
  }

  void TearDown() override {
    if (session_) {
      EXPECT_EQ(error_text(session_->endSession()), "");
    }
  }

  llvm::Error add(llvm::orc::ResourceTrackerSP tracker, const char* ir) {
    auto context = std::make_unique<llvm::LLVMContext>();
    llvm::SMDiagnostic diagnostic;
    auto module = llvm::parseAssemblyString(ir, diagnostic, *context);
    if (!module) return llvm::createStringError(llvm::inconvertibleErrorCode(), "bad test IR");
    module->setDataLayout(*layout_);
    return compiler_->add(std::move(tracker),
                          llvm::orc::ThreadSafeModule(std::move(module), std::move(context)));
  }

  std::unique_ptr<Heap> heap_;
  std::unique_ptr<HeapJITLinkMemoryManager> memory_;  // outlives the session's allocations
  std::unique_ptr<llvm::orc::ExecutionSession> session_;
  llvm::orc::JITDylib* dylib_ = nullptr;
  std::unique_ptr<llvm::orc::ObjectLinkingLayer> linker_;
  std::unique_ptr<llvm::DataLayout> layout_;
  std::unique_ptr<llvm::orc::IRCompileLayer> compiler_;
  std::string reported_;
};

TEST_F(OrcPlainStack, LinksRunsAndRemovesThroughTheHeap) {
  const HeapStats empty = stats_without_counters(*heap_);
  auto tracker = dylib_->createResourceTracker();
  ASSERT_EQ(error_text(add(tracker, R"IR(
    @table = constant [3 x i64] [i64 10, i64 20, i64 30]
    @counter = global i64 0
    define i64 @pick(i64 %i) {
      %p = getelementptr [3 x i64], ptr @table, i64 0, i64 %i
      %v = load i64, ptr %p
      %c = load i64, ptr @counter
      %c1 = add i64 %c, 1
      store i64 %c1, ptr @counter
      %r = add i64 %v, %c1
      ret i64 %r
    }
  )IR")),
            "");
  auto pick = session_->lookup({dylib_}, "pick");
  ASSERT_TRUE(static_cast<bool>(pick)) << error_text(pick.takeError());
  auto counter = session_->lookup({dylib_}, "counter");
  auto table = session_->lookup({dylib_}, "table");
  ASSERT_TRUE(counter && table);

  auto fn = pick->getAddress().toPtr<int64_t (*)(int64_t)>();
  EXPECT_EQ(fn(1), 21);
  EXPECT_EQ(fn(2), 32);
  // Code, constants and variables each in their arena, all low.
  for (auto [address, arena] : {std::pair{pick->getAddress(), Arena::kCode},
                                std::pair{table->getAddress(), Arena::kReadOnly},
                                std::pair{counter->getAddress(), Arena::kData}}) {
    EXPECT_LT(address.getValue(), uint64_t{1} << 31);
    const auto block = heap_->find(address.getValue());
    ASSERT_TRUE(block.has_value());
    EXPECT_EQ(block->arena, arena);
    EXPECT_EQ(block->state, BlockState::kLive);
  }
  // One owner, named after the graph.
  const HeapStats live = heap_->stats();
  ASSERT_EQ(live.owners.size(), 1u);
  EXPECT_THAT(live.owners[0].name, HasSubstr("jitted-objectbuffer"));
  EXPECT_EQ(finalize_actions_run, 1);
  EXPECT_EQ(dealloc_actions_run, 0);

  ASSERT_EQ(error_text(tracker->remove()), "");
  // Retired (the default): quarantined with bytes intact until a reclaim pass, and the dealloc
  // actions (eh_frame deregistration) wait for it, since a thread may still be inside.
  EXPECT_EQ(dealloc_actions_run, 0);
  const auto code = heap_->find(pick->getAddress().getValue());
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(code->state, BlockState::kQuarantined);
  EXPECT_NE(*pick->getAddress().toPtr<const uint8_t*>(), 0xCC);
  heap_->reclaim([](uintptr_t, uintptr_t) { return false; });
  EXPECT_EQ(dealloc_actions_run, 1);
  EXPECT_EQ(stats_without_counters(*heap_), empty) << heap_->dump_text();
}

TEST_F(OrcPlainStack, FailedFinalizeActionReturnsEveryByte) {
  const HeapStats empty = stats_without_counters(*heap_);
  fail_finalize_action = true;
  ASSERT_EQ(
      error_text(add(dylib_->getDefaultResourceTracker(), "define i64 @f() {\n ret i64 1\n}\n")),
      "");
  auto f = session_->lookup({dylib_}, "f");
  EXPECT_FALSE(static_cast<bool>(f));
  llvm::consumeError(f.takeError());
  EXPECT_THAT(reported_, HasSubstr("finalize action refused"));
  EXPECT_EQ(stats_without_counters(*heap_), empty) << heap_->dump_text();
}

// --- Direct use through SimpleSegmentAlloc, which builds a one-block-per-segment graph. ---

class OrcMemoryManager : public ::testing::Test {
 protected:
  void SetUp() override {
    heap_ = make_small_heap("jitlink-mm");
    ASSERT_NE(heap_, nullptr);
    empty_ = stats_without_counters(*heap_);
  }

  llvm::Expected<SimpleSegmentAlloc> allocate(HeapJITLinkMemoryManager& memory,
                                              SimpleSegmentAlloc::SegmentMap segments) {
    return SimpleSegmentAlloc::Create(memory, nullptr, std::move(segments));
  }

  std::unique_ptr<Heap> heap_;
  HeapStats empty_;
};

TEST_F(OrcMemoryManager, SegmentsLandInTheirArenasThroughTheWritableAlias) {
  HeapJITLinkMemoryManager memory(*heap_);
  auto alloc = allocate(memory, {{kRX, {100, llvm::Align(16)}},
                                 {kR, {40, llvm::Align(8)}},
                                 {kRW, {24, llvm::Align(8)}},
                                 {AllocGroup(kR, MemLifetime::Finalize), {16, llvm::Align(8)}}});
  ASSERT_TRUE(static_cast<bool>(alloc)) << error_text(alloc.takeError());

  const auto code = alloc->getSegInfo(kRX);
  const auto rodata = alloc->getSegInfo(kR);
  const auto data = alloc->getSegInfo(kRW);
  const auto finalize_only = alloc->getSegInfo(AllocGroup(kR, MemLifetime::Finalize));
  const std::pair<ExecutorAddr, Arena> expected[] = {{code.Addr, Arena::kCode},
                                                     {rodata.Addr, Arena::kReadOnly},
                                                     {data.Addr, Arena::kData},
                                                     {finalize_only.Addr, Arena::kReadOnly}};
  for (const auto& [address, arena] : expected) {
    EXPECT_LT(address.getValue(), uint64_t{1} << 31);
    const auto block = heap_->find(address.getValue());
    ASSERT_TRUE(block.has_value());
    EXPECT_EQ(block->arena, arena);
  }
  // Code is written through the alias, never through the execution view.
  EXPECT_NE(reinterpret_cast<uint64_t>(code.WorkingMem.data()), code.Addr.getValue());
  EXPECT_EQ(reinterpret_cast<uint8_t*>(code.WorkingMem.data()),
            heap_->writable_alias(code.Addr.getValue()));
  std::memset(code.WorkingMem.data(), 0xC3, code.WorkingMem.size());  // ret
  std::memset(rodata.WorkingMem.data(), 0x5A, rodata.WorkingMem.size());

  auto finalized = alloc->finalize();
  ASSERT_TRUE(static_cast<bool>(finalized)) << error_text(finalized.takeError());
  EXPECT_EQ(*code.Addr.toPtr<const uint8_t*>(), 0xC3);
  EXPECT_EQ(*rodata.Addr.toPtr<const uint8_t*>(), 0x5A);
  code.Addr.toPtr<void (*)()>()();  // executes from the read-execute view
  // Finalize-lifetime memory is gone once finalization is over.
  EXPECT_FALSE(heap_->find(finalize_only.Addr.getValue()).has_value());

  ASSERT_EQ(error_text(memory.deallocate(std::move(*finalized))), "");
  EXPECT_EQ(heap_->find(code.Addr.getValue())->state, BlockState::kQuarantined);
  EXPECT_EQ(*code.Addr.toPtr<const uint8_t*>(), 0xC3);  // retired: intact
  heap_->reclaim([](uintptr_t, uintptr_t) { return false; });
  EXPECT_EQ(stats_without_counters(*heap_), empty_) << heap_->dump_text();
}

// The heap ends a link's blocks by owner alone however many segments the graph has (here
// unusual protections, both lifetimes).
TEST_F(OrcMemoryManager, AGraphWithManySegmentsIsRetiredByOwner) {
  HeapJITLinkMemoryManager memory(*heap_);
  const AllocGroup groups[] = {kR,
                               kRW,
                               kRX,
                               AllocGroup(MemProt::Write),
                               AllocGroup(MemProt::Exec),
                               AllocGroup(kR, MemLifetime::Finalize),
                               AllocGroup(kRW, MemLifetime::Finalize)};
  SimpleSegmentAlloc::SegmentMap segments;
  for (const AllocGroup& group : groups) segments[group] = {32, llvm::Align(16)};
  auto alloc = allocate(memory, std::move(segments));
  ASSERT_TRUE(static_cast<bool>(alloc)) << error_text(alloc.takeError());
  auto finalized = alloc->finalize();
  ASSERT_TRUE(static_cast<bool>(finalized)) << error_text(finalized.takeError());
  const HeapStats live = heap_->stats();
  EXPECT_EQ(live.owners.size(), 1u);
  EXPECT_EQ(live.owners[0].live_blocks, 5u);  // the finalize-lifetime two are gone

  ASSERT_EQ(error_text(memory.deallocate(std::move(*finalized))), "");
  const HeapStats retired = heap_->stats();
  EXPECT_EQ(retired.counters.retires, 5u);
  EXPECT_EQ(retired.counters.release_errors, 0u);
  heap_->reclaim([](uintptr_t, uintptr_t) { return false; });
  EXPECT_EQ(stats_without_counters(*heap_), empty_) << heap_->dump_text();
}

// InFlightAlloc::abandon, waited for: its error's text ("" for success).
std::string abandon_now(llvm::jitlink::JITLinkMemoryManager::InFlightAlloc& alloc) {
  std::string text = "not called back";
  alloc.abandon([&](llvm::Error err) { text = error_text(std::move(err)); });
  return text;
}

// A graph of one code and one data block, as a link would hand it to the memory manager.
std::unique_ptr<llvm::jitlink::LinkGraph> make_graph(const char* name) {
  static const char kCode[] = {'\xC3'};
  auto graph = std::make_unique<llvm::jitlink::LinkGraph>(
      name, llvm::Triple("x86_64-unknown-linux-gnu"), 8, llvm::endianness::little,
      llvm::jitlink::getGenericEdgeKindName);
  graph->createContentBlock(graph->createSection(".text", kRX), llvm::ArrayRef(kCode, 1),
                            llvm::orc::ExecutorAddr(), 16, 0);
  graph->createZeroFillBlock(graph->createSection(".bss", kRW), 64, llvm::orc::ExecutorAddr(), 8,
                             0);
  return graph;
}

// The engine chooses a module's owner before its link (place_under): the blocks join it, a failed
// link leaves it to its caller without blocks, and deallocation retires it.
TEST_F(OrcMemoryManager, AGraphPlacedUnderAnOwnerJoinsIt) {
  HeapJITLinkMemoryManager memory(*heap_);
  const OwnerId owner = heap_->register_owner("chosen");
  auto graph = make_graph("placed");
  memory.place_under(*graph, owner);
  auto abandoned = memory.allocate(nullptr, *graph);
  ASSERT_TRUE(static_cast<bool>(abandoned)) << error_text(abandoned.takeError());
  EXPECT_EQ(heap_->find((*graph->blocks().begin())->getAddress().getValue())->owner, owner);
  ASSERT_EQ(heap_->stats().owners.size(), 1u);
  EXPECT_EQ(heap_->stats().owners[0].live_blocks, 2u);
  ASSERT_EQ(abandon_now(**abandoned), "");
  HeapStats stats = heap_->stats();
  ASSERT_EQ(stats.owners.size(), 1u);  // still the caller's
  EXPECT_FALSE(stats.owners[0].retired);
  EXPECT_EQ(stats.owners[0].live_blocks, 0u);

  // The link again, under the same owner, to the end.
  graph = make_graph("placed");
  memory.place_under(*graph, owner);
  auto alloc = memory.allocate(nullptr, *graph);
  ASSERT_TRUE(static_cast<bool>(alloc)) << error_text(alloc.takeError());
  auto finalized = (*alloc)->finalize();
  ASSERT_TRUE(static_cast<bool>(finalized)) << error_text(finalized.takeError());
  EXPECT_EQ(heap_->stats().owners[0].id, owner);
  ASSERT_EQ(error_text(memory.deallocate(std::move(*finalized))), "");
  EXPECT_TRUE(heap_->stats().owners[0].retired);
  heap_->reclaim([](uintptr_t, uintptr_t) { return false; });
  EXPECT_EQ(stats_without_counters(*heap_), empty_) << heap_->dump_text();
}

TEST_F(OrcMemoryManager, AForgottenPlacementGetsAnOwnerOfItsOwn) {
  HeapJITLinkMemoryManager memory(*heap_);
  const OwnerId owner = heap_->register_owner("not this one");
  auto graph = make_graph("own owner");
  memory.place_under(*graph, owner);
  memory.forget_placement(*graph);
  auto alloc = memory.allocate(nullptr, *graph);
  ASSERT_TRUE(static_cast<bool>(alloc)) << error_text(alloc.takeError());
  const HeapStats stats = heap_->stats();
  ASSERT_EQ(stats.owners.size(), 2u);
  EXPECT_EQ(stats.owners[0].live_blocks, 0u);
  EXPECT_EQ(stats.owners[1].name, "own owner");
  EXPECT_EQ(stats.owners[1].live_blocks, 2u);
  ASSERT_EQ(abandon_now(**alloc), "");
}

TEST_F(OrcMemoryManager, TrapNowModeFillsReleasedCodeWithTraps) {
  HeapJITLinkMemoryManager memory(*heap_, RetireMode::kTrapNow);
  auto alloc = allocate(memory, {{kRX, {64, llvm::Align(16)}}});
  ASSERT_TRUE(static_cast<bool>(alloc)) << error_text(alloc.takeError());
  const auto code = alloc->getSegInfo(kRX);
  std::memset(code.WorkingMem.data(), 0x90, code.WorkingMem.size());
  auto finalized = alloc->finalize();
  ASSERT_TRUE(static_cast<bool>(finalized)) << error_text(finalized.takeError());
  ASSERT_EQ(error_text(memory.deallocate(std::move(*finalized))), "");
  EXPECT_EQ(heap_->find(code.Addr.getValue())->state, BlockState::kQuarantined);
  EXPECT_EQ(*code.Addr.toPtr<const uint8_t*>(), 0xCC);
}

TEST_F(OrcMemoryManager, DroppedInFlightAllocationReturnsEveryByte) {
  HeapJITLinkMemoryManager memory(*heap_);
  {
    auto alloc = allocate(memory, {{kRX, {4096, llvm::Align(16)}}, {kRW, {100, llvm::Align(8)}}});
    ASSERT_TRUE(static_cast<bool>(alloc)) << error_text(alloc.takeError());
    EXPECT_GT(heap_->stats().used_bytes, 0u);
  }  // neither finalized nor abandoned
  EXPECT_EQ(stats_without_counters(*heap_), empty_) << heap_->dump_text();
}

TEST_F(OrcMemoryManager, WritableExecutableSegmentIsRefused) {
  HeapJITLinkMemoryManager memory(*heap_);
  auto alloc =
      allocate(memory, {{kR, {64, llvm::Align(8)}},
                        {MemProt::Read | MemProt::Write | MemProt::Exec, {64, llvm::Align(16)}}});
  ASSERT_FALSE(static_cast<bool>(alloc));
  EXPECT_THAT(error_text(alloc.takeError()), HasSubstr("W^X"));
  EXPECT_EQ(stats_without_counters(*heap_), empty_) << heap_->dump_text();
}

TEST_F(OrcMemoryManager, OutOfMemoryIsAHeapErrorAndChangesNothing) {
  HeapJITLinkMemoryManager memory(*heap_);
  // The data arena is 8 MiB: the first 6 MiB fit, the second do not.
  auto first = allocate(memory, {{kRW, {6 << 20, llvm::Align(8)}}});
  ASSERT_TRUE(static_cast<bool>(first)) << error_text(first.takeError());
  const HeapStats before = stats_without_counters(*heap_);
  // Segments are placed in AllocGroup order (R-- before RW-), so the failing one comes last:
  // the read-only block placed before it must be given back.
  auto second = allocate(memory, {{kR, {64, llvm::Align(16)}}, {kRW, {6 << 20, llvm::Align(8)}}});
  ASSERT_FALSE(static_cast<bool>(second));
  bool out_of_memory = false;
  llvm::Error rest = llvm::handleErrors(second.takeError(), [&](const HeapError& e) {
    out_of_memory = e.code() == ErrorCode::kOutOfMemory;
  });
  EXPECT_TRUE(out_of_memory);
  EXPECT_THAT(error_text(std::move(rest)), HasSubstr("cannot place"));
  EXPECT_EQ(stats_without_counters(*heap_), before) << heap_->dump_text();
}

}  // namespace
}  // namespace codeheap::jit
