// Entry cells and hot-swap: a stub + slot per redefinable function, redefinition seen by
// callers compiled earlier, and old versions kept intact while a thread still runs them.
#include "jit/entry_cell.h"

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "jit/engine.h"
#include "tests/jit/orc_support.h"

extern "C" int64_t orc_test_cell_one() { return 1; }
extern "C" int64_t orc_test_cell_two() { return 2; }

namespace codeheap::jit {
namespace {

using llvm::orc::ExecutorAddr;
using orc_testing::call_targets;
using orc_testing::error_text;
using orc_testing::GraphRecorder;
using orc_testing::indirect_jump_slot;
using orc_testing::make_small_heap;
using orc_testing::stats_without_counters;
using ::testing::Contains;
using ::testing::HasSubstr;

using orc_testing::k2GiB;

std::string returning(const std::string& name, int64_t value) {
  return "define i64 @" + name + "() {\n  ret i64 " + std::to_string(value) + "\n}\n";
}

std::unique_ptr<Engine> make_engine(Heap& heap, EngineOptions options = {}) {
  auto engine = Engine::create(heap, std::move(options));
  if (!engine) {
    ADD_FAILURE() << "Engine::create: " << error_text(engine.takeError());
    return nullptr;
  }
  return std::move(*engine);
}

uint64_t slot_value(uint64_t slot) {
  return std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(slot)).load();
}

TEST(OrcEntryCell, StubJumpsThroughSlotAndRetiresOnDestruction) {
  auto heap = make_small_heap("cell");
  ASSERT_NE(heap, nullptr);
  const HeapStats empty = stats_without_counters(*heap);
  {
    auto cell = EntryCell::create(*heap, "f", ExecutorAddr::fromPtr(&orc_test_cell_one));
    ASSERT_TRUE(static_cast<bool>(cell)) << error_text(cell.takeError());
    const uint64_t stub = (*cell)->address().getValue();
    const uint64_t slot = (*cell)->slot_address().getValue();
    EXPECT_LT(stub, k2GiB);
    EXPECT_LT(slot, k2GiB);
    ASSERT_TRUE(heap->find(stub).has_value());
    ASSERT_TRUE(heap->find(slot).has_value());
    EXPECT_EQ(heap->find(stub)->arena, Arena::kCode);
    EXPECT_EQ(heap->find(slot)->arena, Arena::kData);
    EXPECT_EQ(indirect_jump_slot(stub), slot);

    auto call = (*cell)->address().toPtr<int64_t (*)()>();
    EXPECT_EQ(call(), 1);
    (*cell)->set_target(ExecutorAddr::fromPtr(&orc_test_cell_two));
    EXPECT_EQ(call(), 2);
    EXPECT_EQ((*cell)->target(), ExecutorAddr::fromPtr(&orc_test_cell_two));
  }
  // Destroyed: both blocks wait in quarantine, then leave no trace.
  EXPECT_EQ(heap->stats().quarantined_bytes > 0, true);
  heap->reclaim([](uintptr_t, uintptr_t) { return false; });
  EXPECT_EQ(stats_without_counters(*heap), empty) << heap->dump_text();
}

TEST(OrcHotSwap, CallersCompiledEarlierSeeEveryRedefinition) {
  auto heap = make_small_heap("hotswap");
  ASSERT_NE(heap, nullptr);
  auto recorder = std::make_shared<GraphRecorder>();
  EngineOptions options;
  options.add_plugins = [recorder](llvm::orc::ObjectLinkingLayer& layer) {
    layer.addPlugin(recorder);
  };
  auto engine = make_engine(*heap, options);
  ASSERT_NE(engine, nullptr);

  auto stub = engine->define_function("answer", returning("answer", 1));
  ASSERT_TRUE(static_cast<bool>(stub)) << error_text(stub.takeError());
  auto caller = engine->add_module(R"IR(
    declare i64 @answer()
    define i64 @ask() {
      %r = call i64 @answer()
      ret i64 %r
    }
  )IR",
                                   "caller");
  ASSERT_TRUE(static_cast<bool>(caller)) << error_text(caller.takeError());
  auto ask_address = engine->lookup("ask");
  ASSERT_TRUE(static_cast<bool>(ask_address)) << error_text(ask_address.takeError());
  auto ask = ask_address->toPtr<int64_t (*)()>();
  EXPECT_EQ(ask(), 1);

  // The caller calls the stub directly (it is low, within rel32 reach), the stub jumps
  // through a slot in the data arena.
  const auto ask_symbol = recorder->symbol("ask");
  ASSERT_TRUE(ask_symbol.has_value());
  EXPECT_THAT(
      call_targets(ask_symbol->address, ask_symbol->size, stub->getValue(), stub->getValue() + 1),
      Contains(stub->getValue()));
  const auto slot = indirect_jump_slot(stub->getValue());
  ASSERT_TRUE(slot.has_value());
  ASSERT_TRUE(heap->find(*slot).has_value());
  EXPECT_EQ(heap->find(*slot)->arena, Arena::kData);

  for (int64_t version = 2; version <= 10; ++version) {
    const uint64_t previous_body = slot_value(*slot);
    auto again = engine->define_function("answer", returning("answer", version));
    ASSERT_TRUE(static_cast<bool>(again)) << error_text(again.takeError());
    EXPECT_EQ(*again, *stub);  // one address for every version
    EXPECT_EQ(ask(), version);
    EXPECT_NE(slot_value(*slot), previous_body);
    // The previous body waits in quarantine, bytes intact.
    const auto old_block = heap->find(previous_body);
    ASSERT_TRUE(old_block.has_value());
    EXPECT_EQ(old_block->state, BlockState::kQuarantined);
    EXPECT_NE(*reinterpret_cast<const uint8_t*>(previous_body), 0xCC);
  }
  auto looked_up = engine->lookup("answer");
  ASSERT_TRUE(static_cast<bool>(looked_up)) << error_text(looked_up.takeError());
  EXPECT_EQ(*looked_up, *stub);
  EXPECT_EQ(engine->live_modules(), 2u);  // the caller and the current body

  const auto report = heap->reclaim([](uintptr_t, uintptr_t) { return false; });
  EXPECT_GE(report.reclaimed_blocks, 9u);
  EXPECT_EQ(heap->stats().quarantined_bytes, 0u);
  EXPECT_EQ(ask(), 10);
}

TEST(OrcHotSwap, DefinitionErrorsLeaveTheHeapAndCurrentVersionAlone) {
  auto heap = make_small_heap("hotswap-errors");
  ASSERT_NE(heap, nullptr);
  auto engine = make_engine(*heap);
  ASSERT_NE(engine, nullptr);
  auto plain = engine->add_module(returning("plain", 5), "plain");
  ASSERT_TRUE(static_cast<bool>(plain)) << error_text(plain.takeError());
  auto stub = engine->define_function("f", returning("f", 1));
  ASSERT_TRUE(static_cast<bool>(stub)) << error_text(stub.takeError());
  const HeapStats before = stats_without_counters(*heap);

  // Taken by a plain module.
  EXPECT_THAT(error_text(engine->define_function("plain", returning("plain", 6)).takeError()),
              HasSubstr("already defined"));
  // The module does not define the function.
  EXPECT_THAT(error_text(engine->define_function("f", returning("g", 2)).takeError()),
              HasSubstr("does not define function 'f'"));
  // Does not parse.
  EXPECT_THAT(error_text(engine->define_function("f", "define i64 @f( {").takeError()),
              HasSubstr("cannot parse"));
  // Links against nothing.
  EXPECT_THAT(error_text(engine
                             ->define_function("f",
                                               "declare i64 @nowhere()\n"
                                               "define i64 @f() {\n"
                                               "  %r = call i64 @nowhere()\n"
                                               "  ret i64 %r\n}\n")
                             .takeError()),
              HasSubstr("nowhere"));

  EXPECT_EQ(stats_without_counters(*heap), before) << heap->dump_text();
  EXPECT_EQ(engine->live_modules(), 2u);
  EXPECT_EQ(stub->toPtr<int64_t (*)()>()(), 1);
}

TEST(OrcHotSwap, HelpersOfSuccessiveVersionsDoNotClash) {
  auto heap = make_small_heap("hotswap-helpers");
  ASSERT_NE(heap, nullptr);
  auto engine = make_engine(*heap);
  ASSERT_NE(engine, nullptr);
  auto version = [](int64_t v) {
    return "define i64 @helper() {\n  ret i64 " + std::to_string(v) +
           "\n}\n"
           "define i64 @f() {\n  %r = call i64 @helper()\n  ret i64 %r\n}\n";
  };
  auto stub = engine->define_function("f", version(1));
  ASSERT_TRUE(static_cast<bool>(stub)) << error_text(stub.takeError());
  auto again = engine->define_function("f", version(2));
  ASSERT_TRUE(static_cast<bool>(again)) << error_text(again.takeError());
  EXPECT_EQ(stub->toPtr<int64_t (*)()>()(), 2);
  // The helper is private to each version.
  EXPECT_FALSE(static_cast<bool>(engine->lookup("helper")));
}

// A JIT loop spinning on a flag it reads through a host pointer; the old version returns 1.
constexpr const char* kSpinV1 = R"IR(
  define i64 @spin(ptr %flag, ptr %entered) {
  entry:
    store volatile i32 1, ptr %entered
    br label %loop
  loop:
    %v = load volatile i32, ptr %flag
    %done = icmp ne i32 %v, 0
    br i1 %done, label %exit, label %loop
  exit:
    ret i64 1
  }
)IR";

constexpr const char* kSpinV2 = R"IR(
  define i64 @spin(ptr %flag, ptr %entered) {
    store volatile i32 2, ptr %entered
    ret i64 2
  }
)IR";

TEST(OrcHotSwap, OldVersionStaysWhileAThreadRunsIt) {
  auto heap = make_small_heap("hotswap-thread");
  ASSERT_NE(heap, nullptr);
  auto engine = make_engine(*heap);
  ASSERT_NE(engine, nullptr);
  auto stub = engine->define_function("spin", kSpinV1);
  ASSERT_TRUE(static_cast<bool>(stub)) << error_text(stub.takeError());
  using Spin = int64_t (*)(volatile int32_t*, volatile int32_t*);
  auto spin = stub->toPtr<Spin>();
  const auto slot = indirect_jump_slot(stub->getValue());
  ASSERT_TRUE(slot.has_value());

  // The runner's state, as a runtime's thread registry would keep it: whether it is inside JIT
  // code and which body it entered.
  std::atomic<bool> inside{false};
  std::atomic<uint64_t> entered_body{0};
  volatile int32_t flag = 0;
  volatile int32_t entered = 0;
  std::atomic<int64_t> result{0};
  std::thread runner([&] {
    entered_body = slot_value(*slot);
    inside = true;
    result = spin(&flag, &entered);
    inside = false;
  });
  // Let the runner out and wait for it on every path, failed assertions included.
  struct Release {
    volatile int32_t& flag;
    std::thread& runner;
    ~Release() {
      flag = 1;
      if (runner.joinable()) runner.join();
    }
  } release{flag, runner};
  while (entered == 0) std::this_thread::yield();
  const uint64_t old_body = entered_body.load();
  ASSERT_NE(old_body, 0u);

  auto redefined = engine->define_function("spin", kSpinV2);
  ASSERT_TRUE(static_cast<bool>(redefined)) << error_text(redefined.takeError());
  EXPECT_EQ(*redefined, *stub);
  // New calls run the new version while the runner is still in the old one.
  volatile int32_t set_flag = 1;
  volatile int32_t entered_here = 0;
  EXPECT_EQ(spin(&set_flag, &entered_here), 2);
  EXPECT_EQ(entered_here, 2);

  auto referenced = [&](uintptr_t begin, uintptr_t end) {
    const uint64_t body = entered_body.load();
    return inside.load() && begin <= body && body < end;
  };
  const auto first = heap->reclaim(referenced);
  EXPECT_GE(first.still_referenced_blocks, 1u);
  const auto kept = heap->find(old_body);
  ASSERT_TRUE(kept.has_value());
  EXPECT_EQ(kept->state, BlockState::kQuarantined);
  EXPECT_NE(*reinterpret_cast<const uint8_t*>(old_body), 0xCC);  // intact, not trapped
  EXPECT_EQ(result.load(), 0);                                   // still spinning

  flag = 1;
  runner.join();
  EXPECT_EQ(result.load(), 1);  // the old code ran to completion

  const auto second = heap->reclaim(referenced);
  EXPECT_EQ(second.still_referenced_blocks, 0u);
  EXPECT_GE(second.reclaimed_blocks, 1u);
  const auto after = heap->find(old_body);
  EXPECT_TRUE(!after.has_value() || after->state != BlockState::kQuarantined);
  EXPECT_EQ(heap->stats().quarantined_bytes, 0u);
}

TEST(OrcHotSwap, ConcurrentCallersSeeMonotonicVersions) {
  constexpr int64_t kVersions = 40;
  auto heap = make_small_heap("hotswap-concurrent");
  ASSERT_NE(heap, nullptr);
  EngineOptions options;
  options.opt_level = llvm::CodeGenOptLevel::None;
  auto engine = make_engine(*heap, options);
  ASSERT_NE(engine, nullptr);
  auto stub = engine->define_function("version", returning("version", 1));
  ASSERT_TRUE(static_cast<bool>(stub)) << error_text(stub.takeError());
  auto version = stub->toPtr<int64_t (*)()>();

  std::atomic<bool> stop{false};
  std::atomic<bool> monotonic{true};
  std::atomic<int64_t> calls{0};
  std::thread caller([&] {
    int64_t last = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      const int64_t v = version();
      if (v < last || v < 1 || v > kVersions) monotonic = false;
      last = v;
      calls.fetch_add(1, std::memory_order_relaxed);
    }
  });
  int64_t defined = 1;
  for (int64_t v = 2; v <= kVersions; ++v) {
    auto again = engine->define_function("version", returning("version", v));
    if (!again) {
      ADD_FAILURE() << error_text(again.takeError());
      break;
    }
    defined = v;
  }
  stop = true;
  caller.join();
  EXPECT_EQ(defined, kVersions);
  EXPECT_TRUE(monotonic.load());
  EXPECT_GT(calls.load(), 0);
  EXPECT_EQ(version(), kVersions);
}

}  // namespace
}  // namespace codeheap::jit
