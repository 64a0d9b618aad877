// A full code heap is the runtime's problem first (docs/embedding.md, "When the code heap is
// full"; docs/reliability.md): compile, define_function and with_code_space collect, reclaim and
// retry before they fail, and a request no collection can satisfy fails cleanly.
#include "gcglue/runtime.h"
#include "jit/engine.h"

#define GC_THREADS
#define GC_NO_THREAD_REDIRECTS  // threads register explicitly (Runtime::register_current_thread)
#include <gc/gc.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "jit/error.h"
#include "llvm/Support/FormatVariadic.h"

namespace codeheap::gc {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr size_t kArena = size_t{1} << 20;

// `bytes` of trap bytes that the code jumps over: code arena space without the compile time of
// that much code.
std::string padding(size_t bytes) {
  return llvm::formatv("  call void asm sideeffect \"jmp 1f\\0A.skip {0}, 0xcc\\0A1:\", \"\"()\n",
                       bytes)
      .str();
}

// closure_<k>(env) returns env[0] + k, in about half a KiB of code: a 1 MiB arena holds two
// thousand of them.
std::string closure_ir(int k) {
  return llvm::formatv(R"(
define i64 @closure(ptr %env) {{
{0}  %x = load i64, ptr %env
  %r = add i64 %x, {1}
  ret i64 %r
}
)",
                       padding(448), k)
      .str();
}

std::string answer_ir(int value) {
  return llvm::formatv("define i64 @answer() {{\n  ret i64 {0}\n}\n", value).str();
}

// A module whose code takes `bytes` of the code arena, and a few more.
std::string blob_ir(size_t bytes) {
  return llvm::formatv("define i64 @blob(ptr %env) {{\n{0}  ret i64 0\n}\n", padding(bytes)).str();
}

class FullHeapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RuntimeOptions options;
    options.heap.code_bytes = kArena;
    options.heap.read_only_bytes = kArena;
    options.heap.data_bytes = kArena;
    options.heap.retain_free_bytes = 0;
    options.engine.opt_level = llvm::CodeGenOptLevel::None;  // compile fast: many modules
    auto runtime = Runtime::create(options);
    ASSERT_TRUE(bool(runtime)) << llvm::toString(runtime.takeError());
    runtime_ = std::move(*runtime);
  }

  const ArenaStats& code_arena(const HeapStats& stats) { return stats.arenas[0]; }

  std::unique_ptr<Runtime> runtime_;
};

// 20,000 closures compiled and dropped and 1,000 redefinitions in a 1 MiB code arena, with no
// collection of the test's own: the runtime collects whenever the arena is full. The compiler
// is a background thread; the main thread keeps running a closure compiled first and is
// stopped and scanned by every collection the background thread makes.
TEST_F(FullHeapTest, ChurnAndRedefinitionsRunToCompletionInAOneMebibyteArena) {
  constexpr int kClosures = 20000;
  constexpr int kRedefineEvery = 20;
  auto new_env = [] {
    auto* env = static_cast<int64_t*>(GC_MALLOC_ATOMIC(sizeof(int64_t)));
    if (env != nullptr) env[0] = 0;
    return env;
  };
  int64_t* kept_env = new_env();
  ASSERT_NE(kept_env, nullptr);
  auto kept = runtime_->compile(closure_ir(0), "kept");
  ASSERT_TRUE(bool(kept)) << llvm::toString(kept.takeError());
  auto kept_closure = runtime_->make_closure(*kept, "closure", kept_env);
  ASSERT_TRUE(bool(kept_closure)) << llvm::toString(kept_closure.takeError());
  auto call = [](Closure* closure) {
    return reinterpret_cast<int64_t (*)(void*)>(closure->entry)(closure->env);
  };

  std::atomic<bool> done{false};
  std::atomic<int> failures{0};
  std::atomic<size_t> max_committed{0};
  std::thread compiler([&] {
    if (runtime_->register_current_thread()) {
      ++failures;
      done = true;
      return;
    }
    void* answer = nullptr;
    for (int i = 0; i < kClosures && failures == 0; ++i) {
      auto code = runtime_->compile(closure_ir(i), "churn");
      if (!code) {
        ADD_FAILURE() << "closure " << i << ": " << llvm::toString(code.takeError());
        ++failures;
        break;
      }
      auto closure = runtime_->make_closure(*code, "closure", new_env());
      if (!closure || call(*closure) != i) {
        if (!closure) ADD_FAILURE() << llvm::toString(closure.takeError());
        ++failures;
      }
      if (i % kRedefineEvery == 0) {
        auto stub = runtime_->define_function("answer", answer_ir(i));
        if (!stub) {
          ADD_FAILURE() << "redefinition " << i << ": " << llvm::toString(stub.takeError());
          ++failures;
          break;
        }
        if (answer != nullptr && *stub != answer) ++failures;
        answer = *stub;
        if (reinterpret_cast<int64_t (*)()>(answer)() != i) ++failures;
      }
      if (i % 16 == 0) {  // stats() walks every block: not after each of 20,000 compiles
        const size_t committed = code_arena(runtime_->heap().stats()).committed_bytes;
        max_committed = std::max(max_committed.load(), committed);
      }
    }
    if (runtime_->unregister_current_thread()) ++failures;
    done = true;
  });
  int64_t calls = 0;
  while (!done) {
    if (call(*kept_closure) != 0) ++failures;
    ++calls;
    std::this_thread::sleep_for(std::chrono::microseconds(100));  // leave the CPU to the compiler
  }
  compiler.join();

  EXPECT_EQ(failures, 0);
  EXPECT_LE(max_committed, kArena);
  const GcCounters counters = runtime_->counters();
  EXPECT_EQ(counters.tier(Tier::kOptimized).code_objects_created, uint64_t(kClosures + 1));
  EXPECT_GT(counters.full_heap_collections, 0u);
  EXPECT_EQ(counters.collections, counters.full_heap_collections);
  EXPECT_EQ(runtime_->engine().live_modules(),
            runtime_->live_code_objects() + 1);  // the body behind "answer"
  RecordProperty("full_heap_collections", std::to_string(counters.full_heap_collections));
  RecordProperty("max_committed_code_bytes", std::to_string(max_committed.load()));
  RecordProperty("kept_closure_calls", std::to_string(calls));
}

// Heap stats but for the counters, and the counters but for allocation failures: what a failed
// request may change.
struct Snapshot {
  HeapStats layout;
  Counters counters;

  static Snapshot of(const Heap& heap) {
    Snapshot s{heap.stats(), {}};
    s.counters = s.layout.counters;
    clear_history(s.layout);
    s.counters.allocation_failures = 0;
    return s;
  }
};

TEST_F(FullHeapTest, AModuleLargerThanTheArenaFailsCleanlyWithoutCollecting) {
  auto small = runtime_->compile(closure_ir(1), "small");  // something live in the arena
  ASSERT_TRUE(bool(small)) << llvm::toString(small.takeError());
  runtime_->collect();  // trims, so that nothing is left for a later pass to change
  const Snapshot before = Snapshot::of(runtime_->heap());
  const uint64_t failures_before = runtime_->heap().stats().counters.allocation_failures;
  const GcCounters gc_before = runtime_->counters();

  auto big = runtime_->compile(blob_ir(kArena + 4096), "too_big");
  ASSERT_FALSE(bool(big));
  const std::string message = llvm::toString(big.takeError());
  EXPECT_THAT(message, AllOf(HasSubstr("too_big"), HasSubstr("requested"), HasSubstr("free"),
                             HasSubstr("largest free block")))
      << message;

  EXPECT_THAT(message, HasSubstr("code arena")) << message;
  const Snapshot after = Snapshot::of(runtime_->heap());
  EXPECT_EQ(before.layout, after.layout);
  EXPECT_EQ(before.counters, after.counters);
  EXPECT_GT(runtime_->heap().stats().counters.allocation_failures, failures_before);
  EXPECT_EQ(runtime_->counters(), gc_before);  // no collection: it could not have helped
}

TEST_F(FullHeapTest, AModuleThatStillDoesNotFitAfterACollectionFailsCleanly) {
  // Most of the arena live (kept reachable from this frame), the rest too small for the blob.
  auto held = runtime_->compile(blob_ir(kArena / 2), "held");
  ASSERT_TRUE(bool(held)) << llvm::toString(held.takeError());
  runtime_->collect();
  const Snapshot before = Snapshot::of(runtime_->heap());
  const GcCounters gc_before = runtime_->counters();

  auto big = runtime_->compile(blob_ir(kArena * 3 / 4), "does_not_fit");
  ASSERT_FALSE(bool(big));
  const std::string message = llvm::toString(big.takeError());
  EXPECT_THAT(message, AllOf(HasSubstr("does_not_fit"), HasSubstr("even after collecting"),
                             HasSubstr("requested"), HasSubstr("largest free block")))
      << message;
  // The collection freed nothing (there was no garbage); the failed links left nothing.
  EXPECT_EQ(before.layout, Snapshot::of(runtime_->heap()).layout);
  const GcCounters gc_after = runtime_->counters();
  EXPECT_EQ(gc_after.full_heap_collections, gc_before.full_heap_collections + 1);
  EXPECT_EQ(gc_after.code_objects_created, gc_before.code_objects_created);
  EXPECT_NE(*held, nullptr);  // keeps the held module reachable until here
}

// with_code_space: blocks allocated without LLVM (as a stencil emitter does) and adopted.
TEST_F(FullHeapTest, WithCodeSpaceMakesRoomForUnitsAllocatedDirectly) {
  constexpr int kUnits = 100;
  constexpr size_t kUnitBytes = 64 << 10;  // 16 fit in the arena
  std::thread worker([&] {
    ASSERT_FALSE(runtime_->register_current_thread());
    for (int i = 0; i < kUnits; ++i) {
      llvm::Error err = runtime_->with_code_space("unit " + llvm::Twine(i), [&]() -> llvm::Error {
        const std::array<BlockRequest, 1> request = {{{.arena = Arena::kCode, .size = kUnitBytes}}};
        std::array<Allocation, 1> block;
        auto owner = runtime_->heap().allocate_group("unit", request, block);
        if (!owner) return jit::to_llvm_error(std::move(owner.error()));
        std::memset(block[0].writable, 0xC3, kUnitBytes);  // ret
        return runtime_->adopt(*owner, kUnitBytes, {}, "unit").takeError();
      });
      ASSERT_FALSE(err) << llvm::toString(std::move(err));
    }
    ASSERT_FALSE(runtime_->unregister_current_thread());
  });
  worker.join();
  EXPECT_GT(runtime_->counters().full_heap_collections, 0u);
  EXPECT_EQ(runtime_->counters().tier(Tier::kBaseline).code_objects_created, uint64_t(kUnits));
}

}  // namespace
}  // namespace codeheap::gc
