// gc::Runtime: code objects live exactly as long as the collector says, and their code is
// never freed under a running thread.
#include "gcglue/runtime.h"
#include "jit/engine.h"
#include "gcglue/stats_json.h"

#define GC_THREADS
#define GC_NO_THREAD_REDIRECTS  // threads register explicitly (Runtime::register_current_thread)
#include <gc/gc.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "llvm/AsmParser/Parser.h"
#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/SourceMgr.h"
#include "tests/gcglue/lambda_ir.h"
#include "tests/scan/fresh_stack.h"

namespace codeheap::gc {
namespace {

::testing::AssertionResult ok(llvm::Error error) {
  if (!error) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << llvm::toString(std::move(error));
}

template <typename T>
T take(llvm::Expected<T> value) {
  if (!value) {
    ADD_FAILURE() << llvm::toString(value.takeError());
    return T{};
  }
  return std::move(*value);
}

using codeheap::testing::lambda_ir;
using codeheap::testing::lambda_value;

int64_t call(Closure* closure, int64_t x) {
  return reinterpret_cast<int64_t (*)(void*, int64_t)>(closure->entry)(closure->env, x);
}

// Runs `body` on a new thread registered with the runtime, so that GC pointers it handles are
// seen only on a stack that is gone afterwards: the collector cannot find stale copies of them
// in this test's frames.
void on_thread(Runtime& runtime, const std::function<void()>& body) {
  std::thread thread([&] {
    ASSERT_TRUE(ok(runtime.register_current_thread()));
    body();
    ASSERT_TRUE(ok(runtime.unregister_current_thread()));
  });
  thread.join();
}

// Runs `body` on a registered thread whose stack was never used before (see fresh_stack.h).
void on_fresh_stack(Runtime& runtime, const std::function<void()>& body) {
  testing::run_on_fresh_stack([&] {
    EXPECT_TRUE(ok(runtime.register_current_thread()));
    body();
    EXPECT_TRUE(ok(runtime.unregister_current_thread()));
  });
}

RuntimeOptions small_options() {
  RuntimeOptions options;
  options.heap.code_bytes = 16 << 20;
  options.heap.read_only_bytes = 4 << 20;
  options.heap.data_bytes = 4 << 20;
  options.heap.retain_free_bytes = 0;
  return options;
}

class RuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto runtime = Runtime::create(small_options());
    ASSERT_TRUE(bool(runtime)) << llvm::toString(runtime.takeError());
    runtime_ = std::move(*runtime);
    // This thread only orchestrates: it never runs JIT code while a collection is under way,
    // so it need not be scanned, and its frames hold block addresses the tests inspect.
    ASSERT_TRUE(ok(runtime_->unregister_current_thread()));
  }
  void TearDown() override { runtime_.reset(); }

  CollectReport collect() {
    CollectReport report;
    on_fresh_stack(*runtime_, [&] { report = runtime_->collect(); });
    return report;
  }

  const ArenaStats& code_arena(const HeapStats& stats) {
    return stats.arenas[static_cast<int>(Arena::kCode)];
  }

  std::unique_ptr<Runtime> runtime_;
};

TEST_F(RuntimeTest, ChurnKeepsCodeBoundedAndNeverFinalizesReachableCode) {
  constexpr int kLambdas = 1000;
  constexpr int kClosuresPerLambda = 100;
  constexpr int kCollectEvery = 100;
  constexpr int kKept = 8;

  // Kept closures live in GC memory reachable from this frame: they must survive everything.
  auto** kept = static_cast<Closure**>(GC_MALLOC(kKept * sizeof(Closure*)));
  ASSERT_NE(kept, nullptr);
  CodeObject* kept_code = take(runtime_->compile(lambda_ir(7), "kept"));
  ASSERT_NE(kept_code, nullptr);
  for (int i = 0; i < kKept; ++i) {
    auto* env = static_cast<int64_t*>(GC_MALLOC_ATOMIC(sizeof(int64_t)));
    *env = 1000 + i;
    kept[i] = take(runtime_->make_closure(kept_code, "lambda", env));
    ASSERT_NE(kept[i], nullptr);
  }
  kept_code = nullptr;
  auto check_kept = [&] {
    for (int i = 0; i < kKept; ++i) {
      for (int64_t x : {3, 20}) ASSERT_EQ(call(kept[i], x), lambda_value(7, 1000 + i, x));
      auto block = runtime_->heap().find(reinterpret_cast<uintptr_t>(kept[i]->entry));
      ASSERT_TRUE(block.has_value());
      ASSERT_EQ(block->state, BlockState::kLive);
    }
  };

  size_t peak_used = 0, max_committed = 0;
  for (int round = 0; round < kLambdas / kCollectEvery; ++round) {
    on_thread(*runtime_, [&] {
      for (int j = 0; j < kCollectEvery; ++j) {
        int k = round * kCollectEvery + j;
        CodeObject* code = take(runtime_->compile(lambda_ir(k), "churn"));
        ASSERT_NE(code, nullptr);
        for (int c = 0; c < kClosuresPerLambda; ++c) {
          auto* env = static_cast<int64_t*>(GC_MALLOC_ATOMIC(sizeof(int64_t)));
          *env = c;
          Closure* closure = take(runtime_->make_closure(code, "lambda", env));
          ASSERT_NE(closure, nullptr);
          ASSERT_EQ(call(closure, c), lambda_value(k, c, c));
        }
      }
    });
    peak_used = std::max(peak_used, code_arena(runtime_->heap().stats()).used_bytes);
    collect();
    check_kept();
    max_committed = std::max(max_committed, code_arena(runtime_->heap().stats()).committed_bytes);
  }
  for (int i = 0; i < 3; ++i) collect();
  check_kept();

  GcCounters counters = runtime_->counters();
  EXPECT_EQ(counters.code_objects_created, uint64_t(kLambdas + 1));
  EXPECT_EQ(counters.closures_created, uint64_t(kLambdas * kClosuresPerLambda + kKept));
  // Boehm is conservative: its own tests ask for half of the unreachable objects.
  EXPECT_GE(counters.code_objects_finalized, uint64_t(kLambdas / 2));
  EXPECT_LE(counters.code_objects_finalized, uint64_t(kLambdas));
  EXPECT_EQ(runtime_->live_code_objects(), runtime_->engine().live_modules());
  EXPECT_LE(max_committed, 2 * peak_used)
      << "committed code bytes " << max_committed << " vs peak in-use code bytes " << peak_used;
  RecordProperty("peak_used_code_bytes", std::to_string(peak_used));
  RecordProperty("max_committed_code_bytes", std::to_string(max_committed));
}

// fact(env, n) with env[0] = the closure itself: closure -> env -> closure.
constexpr const char* kSelfRecursive = R"(
define i64 @fact(ptr %env, i64 %n) {
entry:
  %base = icmp sle i64 %n, 1
  br i1 %base, label %one, label %rec
one:
  ret i64 1
rec:
  %self = load ptr, ptr %env
  %fnp = getelementptr i8, ptr %self, i64 8
  %fn = load ptr, ptr %fnp
  %envp = getelementptr i8, ptr %self, i64 16
  %e = load ptr, ptr %envp
  %m = sub i64 %n, 1
  %r = call i64 %fn(ptr %e, i64 %m)
  %x = mul i64 %n, %r
  ret i64 %x
}
)";

// even(env, n) / odd(env, n): env[0] is the other closure; two code objects in one cycle.
constexpr const char* kMutual = R"(
define i64 @{0}(ptr %env, i64 %n) {{
entry:
  %zero = icmp eq i64 %n, 0
  br i1 %zero, label %stop, label %rec
stop:
  ret i64 {1}
rec:
  %other = load ptr, ptr %env
  %fnp = getelementptr i8, ptr %other, i64 8
  %fn = load ptr, ptr %fnp
  %envp = getelementptr i8, ptr %other, i64 16
  %e = load ptr, ptr %envp
  %m = sub i64 %n, 1
  %r = call i64 %fn(ptr %e, i64 %m)
  ret i64 %r
}
)";

TEST_F(RuntimeTest, SelfAndMutuallyRecursiveClosuresAreCollected) {
  std::vector<uintptr_t> entries;
  on_thread(*runtime_, [&] {
    auto* fact_env = static_cast<void**>(GC_MALLOC(sizeof(void*)));
    CodeObject* fact_code = take(runtime_->compile(kSelfRecursive, "fact"));
    ASSERT_NE(fact_code, nullptr);
    Closure* fact = take(runtime_->make_closure(fact_code, "fact", fact_env));
    ASSERT_NE(fact, nullptr);
    fact_env[0] = fact;
    EXPECT_EQ(call(fact, 10), 3628800);

    CodeObject* even_code =
        take(runtime_->compile(llvm::formatv(kMutual, "even", 1).str(), "even"));
    CodeObject* odd_code = take(runtime_->compile(llvm::formatv(kMutual, "odd", 0).str(), "odd"));
    ASSERT_TRUE(even_code && odd_code);
    auto* even_env = static_cast<void**>(GC_MALLOC(sizeof(void*)));
    auto* odd_env = static_cast<void**>(GC_MALLOC(sizeof(void*)));
    Closure* even = take(runtime_->make_closure(even_code, "even", even_env));
    Closure* odd = take(runtime_->make_closure(odd_code, "odd", odd_env));
    ASSERT_TRUE(even && odd);
    even_env[0] = odd;
    odd_env[0] = even;
    EXPECT_EQ(call(even, 10), 1);
    EXPECT_EQ(call(even, 7), 0);
    EXPECT_EQ(call(odd, 7), 1);
    entries = {reinterpret_cast<uintptr_t>(fact->entry), reinterpret_cast<uintptr_t>(even->entry),
               reinterpret_cast<uintptr_t>(odd->entry)};
  });
  ASSERT_EQ(entries.size(), 3u);
  for (uintptr_t entry : entries) ASSERT_TRUE(runtime_->heap().find(entry).has_value());

  for (int i = 0; i < 5 && runtime_->live_code_objects() > 0; ++i) collect();
  EXPECT_EQ(runtime_->live_code_objects(), 0u);
  EXPECT_EQ(runtime_->counters().code_objects_finalized, 3u);
  EXPECT_EQ(runtime_->engine().live_modules(), 0u);
  for (uintptr_t entry : entries) {
    EXPECT_FALSE(runtime_->heap().find(entry).has_value()) << "block still held: " << entry;
  }
  EXPECT_EQ(runtime_->heap().stats().quarantined_bytes, 0u);
}

// spin(env, flag): loops while *flag != 0.
constexpr const char* kSpin = R"(
define void @spin(ptr %env, ptr %flag) {
entry:
  br label %loop
loop:
  %v = load volatile i8, ptr %flag
  %go = icmp ne i8 %v, 0
  br i1 %go, label %loop, label %out
out:
  ret void
}
)";

// deep(env, n, park): recurses n times (not a tail call), then calls park().
constexpr const char* kDeep = R"(
define i64 @deep(ptr %env, i64 %n, ptr %park) {
entry:
  %done = icmp eq i64 %n, 0
  br i1 %done, label %bottom, label %rec
bottom:
  call void %park()
  ret i64 0
rec:
  %m = sub i64 %n, 1
  %r = call i64 @deep(ptr %env, i64 %m, ptr %park)
  %s = add i64 %r, 1
  ret i64 %s
}
)";

std::atomic<bool> g_parked{false};
std::atomic<bool> g_release{false};
void park() {
  g_parked = true;
  while (!g_release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

// The entry of a fresh code object, compiled on a helper thread with a stack of its own so that
// no GC pointer to the code object survives anywhere (a recycled thread stack would hand a
// stale copy to the next thread): it is garbage as soon as this returns. A thread that then runs
// in the code while the test waits for the code object's finalization runs on a fresh stack too:
// a std::thread may get a recycled stack, whose stale words inside its live frames can point at
// the code object's address, reused by Boehm, and keep it alive (seen once in CI).
uintptr_t garbage_code_entry(Runtime& runtime, const char* ir, const char* symbol) {
  uintptr_t entry = 0;
  on_fresh_stack(runtime, [&] {
    CodeObject* code = take(runtime.compile(ir, symbol));
    ASSERT_NE(code, nullptr);
    entry = reinterpret_cast<uintptr_t>(take(runtime.symbol(code, symbol)));
  });
  return entry;
}

TEST_F(RuntimeTest, CodeStaysQuarantinedWhileAThreadSpinsInIt) {
  uintptr_t entry = garbage_code_entry(*runtime_, kSpin, "spin");
  ASSERT_NE(entry, 0u);
  std::atomic<uint8_t> flag{1};
  std::atomic<bool> inside{false};
  std::thread worker([&] {
    testing::run_on_fresh_stack([&] {  // see garbage_code_entry
      ASSERT_TRUE(ok(runtime_->register_current_thread()));
      inside = true;
      reinterpret_cast<void (*)(void*, std::atomic<uint8_t>*)>(entry)(nullptr, &flag);
      ASSERT_TRUE(ok(runtime_->unregister_current_thread()));
    });
  });
  while (!inside) std::this_thread::yield();

  for (int cycle = 0; cycle < 12; ++cycle) {
    collect();
    auto block = runtime_->heap().find(entry);
    if (cycle >= 2) {  // finalized by now: retired, but the worker is still inside
      ASSERT_TRUE(block.has_value()) << "cycle " << cycle;
      EXPECT_EQ(block->state, BlockState::kQuarantined) << "cycle " << cycle;
    }
  }
  EXPECT_EQ(runtime_->live_code_objects(), 0u);
  EXPECT_GE(runtime_->counters().blocks_kept_referenced, 10u);
  flag = 0;
  worker.join();
  collect();
  EXPECT_FALSE(runtime_->heap().find(entry).has_value());
}

TEST_F(RuntimeTest, CodeStaysQuarantinedUnderDeepRecursion) {
  uintptr_t entry = garbage_code_entry(*runtime_, kDeep, "deep");
  ASSERT_NE(entry, 0u);
  g_parked = false;
  g_release = false;
  int64_t depth = -1;
  std::thread worker([&] {
    testing::run_on_fresh_stack([&] {  // see garbage_code_entry
      ASSERT_TRUE(ok(runtime_->register_current_thread()));
      depth =
          reinterpret_cast<int64_t (*)(void*, int64_t, void (*)())>(entry)(nullptr, 5000, &park);
      ASSERT_TRUE(ok(runtime_->unregister_current_thread()));
    });
  });
  while (!g_parked) std::this_thread::yield();
  for (int cycle = 0; cycle < 12; ++cycle) {
    collect();
    if (cycle >= 2) {
      auto block = runtime_->heap().find(entry);
      ASSERT_TRUE(block.has_value()) << "cycle " << cycle;
      EXPECT_EQ(block->state, BlockState::kQuarantined) << "cycle " << cycle;
    }
  }
  g_release = true;
  worker.join();
  EXPECT_EQ(depth, 5000);
  collect();
  EXPECT_FALSE(runtime_->heap().find(entry).has_value());
}

// dies(env, fail): calls fail(), which never returns, so the call is the function's last
// instruction (no trap after it on ELF) and pushes the end of the code as its return address.
// The frame pointer keeps the prologue from pushing a scratch register (which may hold the
// function's own address) to align the stack.
constexpr const char* kDies = R"(
define void @dies(ptr %env, ptr %fail) "frame-pointer"="all" {
  call void %fail() noreturn
  unreachable
}
)";

struct Released {};
std::atomic<uintptr_t> g_fail_return{0};

// What dies() calls: records its return address, parks, then leaves by throwing through the JIT
// frame (which needs its eh_frame, still registered while the block is quarantined).
[[noreturn]] void park_then_throw() {
  g_fail_return = reinterpret_cast<uintptr_t>(__builtin_return_address(0));
  park();
  throw Released{};
}

TEST_F(RuntimeTest, AReturnAddressAtTheVeryEndOfABlockKeepsIt) {
  uintptr_t entry = garbage_code_entry(*runtime_, kDies, "dies");
  ASSERT_NE(entry, 0u);
  const std::optional<BlockInfo> block = runtime_->heap().find(entry);
  ASSERT_TRUE(block.has_value());
  const uintptr_t end = block->address + block->size;
  // A registry of the test's own, to show that nothing but that return address points into
  // the block, so that the case is not decided by some other reference.
  auto own = scan::ThreadRegistry::create();
  ASSERT_TRUE(bool(own)) << llvm::toString(own.takeError());
  std::unique_ptr<scan::ThreadRegistry> registry = std::move(*own);
  g_fail_return = 0;
  g_parked = false;
  g_release = false;
  std::atomic<bool> unwound{false};
  std::thread worker([&] {
    testing::run_on_fresh_stack([&] {  // no stale copies of block addresses below the frames
      ASSERT_TRUE(ok(runtime_->register_current_thread()));
      ASSERT_TRUE(ok(registry->register_current_thread()));
      try {
        reinterpret_cast<void (*)(void*, void (*)())>(entry)(nullptr, &park_then_throw);
      } catch (const Released&) {
        unwound = true;
      }
      EXPECT_TRUE(ok(registry->unregister_current_thread()));
      EXPECT_TRUE(ok(runtime_->unregister_current_thread()));
    });
  });
  while (!g_parked) std::this_thread::yield();
  EXPECT_EQ(g_fail_return, end) << "the call to fail() is not the last instruction of the "
                                   "block ["
                                << std::hex << block->address << ", " << end
                                << "): the test would prove nothing";
  const AddressRange all_but_the_end[] = {{block->address, end - 1}};
  uint8_t hit[1] = {};
  ScanReport others;
  testing::run_on_fresh_stack([&] { others = registry->scan(all_but_the_end, hit); });
  EXPECT_EQ(others.threads_scanned, 1u);
  EXPECT_EQ(hit[0], 0) << "something else points into the block";

  for (int cycle = 0; cycle < 6; ++cycle) {
    collect();
    if (cycle >= 2) {  // finalized by now: retired, but kept by the parked frame
      auto now = runtime_->heap().find(entry);
      ASSERT_TRUE(now.has_value()) << "cycle " << cycle;
      EXPECT_EQ(now->state, BlockState::kQuarantined) << "cycle " << cycle;
    }
  }
  EXPECT_EQ(runtime_->live_code_objects(), 0u);
  g_release = true;
  worker.join();
  EXPECT_TRUE(unwound);
  collect();
  EXPECT_FALSE(runtime_->heap().find(entry).has_value());
}

// calls(env, f): calls f() in a frame of its own (the add keeps it from being a tail call).
constexpr const char* kCalls = R"(
define i64 @calls(ptr %env, ptr %f) {
  %r = call i64 %f()
  %s = add i64 %r, 1
  ret i64 %s
}
)";

[[noreturn]] int64_t throw_released() { throw Released{}; }

// Whether calls(nullptr, throw_released) at `entry` unwinds back here.
bool unwinds_through(void* entry) {
  try {
    reinterpret_cast<int64_t (*)(void*, int64_t (*)())>(entry)(nullptr, &throw_released);
  } catch (const Released&) {
    return true;
  }
  return false;
}

// In a child forked after `inherited` registered eh_frames (which the child's unwinder still
// holds, over zero placeholders): C++ exceptions work, the inherited runtime refuses to compile,
// and a new runtime compiles code that exceptions unwind through. Exits 0 if so, with the number
// of the failed step if not.
[[noreturn]] void use_a_new_runtime_after_fork(Runtime& inherited) {
  try {
    throw Released{};
  } catch (const Released&) {
  }
  auto refused = inherited.compile(kCalls, "in-child");
  if (refused || llvm::toString(refused.takeError()).find("fork") == std::string::npos) {
    std::_Exit(2);
  }
  auto runtime = Runtime::create(small_options());
  if (!runtime) std::_Exit(3);
  auto code = (*runtime)->compile(kCalls, "child");
  if (!code) std::_Exit(4);
  auto entry = (*runtime)->symbol(*code, "calls");
  if (!entry || !unwinds_through(*entry)) std::_Exit(5);
  std::_Exit(0);
}

TEST_F(RuntimeTest, AForkedChildThrowsAndCompilesInANewRuntime) {
  auto** box = static_cast<CodeObject**>(GC_MALLOC(sizeof(CodeObject*)));
  ASSERT_NE(box, nullptr);
  box[0] = take(runtime_->compile(kCalls, "parent"));
  ASSERT_NE(box[0], nullptr);
  void* entry = take(runtime_->symbol(box[0], "calls"));
  ASSERT_TRUE(unwinds_through(entry));  // the unwinder has seen the module's eh_frame
  const pid_t child = fork();
  ASSERT_GE(child, 0) << std::strerror(errno);
  if (child == 0) use_a_new_runtime_after_fork(*runtime_);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  EXPECT_TRUE(unwinds_through(entry));
  EXPECT_EQ(reinterpret_cast<int64_t (*)(void*, int64_t (*)())>(entry)(nullptr,
                                                                       [] { return int64_t{41}; }),
            42);
  EXPECT_NE(take(runtime_->compile(kCalls, "after-fork")), nullptr);
}

std::atomic<int> g_strings_collected{0};
void on_string_collected(void*, void*) { ++g_strings_collected; }

TEST_F(RuntimeTest, LiteralPoolKeepsEmbeddedObjectsAliveExactlyAsLongAsTheCode) {
  g_strings_collected = 0;
  auto** box = static_cast<Closure**>(GC_MALLOC(sizeof(Closure*)));
  ASSERT_NE(box, nullptr);
  on_thread(*runtime_, [&] {
    char* text = static_cast<char*>(GC_MALLOC_ATOMIC(16));
    std::strcpy(text, "hello, code");
    GC_register_finalizer_no_order(text, &on_string_collected, nullptr, nullptr, nullptr);
    // The only reference to `text` outside the pool is this immediate in the code.
    std::string ir = llvm::formatv(R"(
define ptr @text(ptr %env) {{
  ret ptr inttoptr (i64 {0} to ptr)
}
)",
                                   reinterpret_cast<uintptr_t>(text))
                         .str();
    void* literals[] = {text};
    CodeObject* code = take(runtime_->compile(ir, "literal", literals));
    ASSERT_NE(code, nullptr);
    box[0] = take(runtime_->make_closure(code, "text", nullptr));
    ASSERT_NE(box[0], nullptr);
  });
  for (int i = 0; i < 4; ++i) collect();
  EXPECT_EQ(g_strings_collected, 0);
  on_thread(*runtime_, [&] {
    auto* text = reinterpret_cast<const char* (*)(void*)>(box[0]->entry)(nullptr);
    EXPECT_STREQ(text, "hello, code");
  });
  box[0] = nullptr;
  for (int i = 0; i < 6 && g_strings_collected == 0; ++i) collect();
  EXPECT_EQ(runtime_->live_code_objects(), 0u);
  EXPECT_EQ(g_strings_collected, 1);
}

TEST_F(RuntimeTest, FourThreadsCompileCallAndDropConcurrently) {
  constexpr int kThreads = 4;
  constexpr int kIterations = 150;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      if (!ok(runtime_->register_current_thread())) {
        ++failures;
        return;
      }
      for (int i = 0; i < kIterations; ++i) {
        int k = t * 1000 + i;
        auto code = runtime_->compile(lambda_ir(k), "concurrent");
        if (!code) {
          llvm::consumeError(code.takeError());
          ++failures;
          continue;
        }
        auto* env = static_cast<int64_t*>(GC_MALLOC_ATOMIC(sizeof(int64_t)));
        *env = i;
        auto closure = runtime_->make_closure(*code, "lambda", env);
        if (!closure) {
          llvm::consumeError(closure.takeError());
          ++failures;
          continue;
        }
        if (call(*closure, i) != lambda_value(k, i, i)) ++failures;
        if (i % 25 == 0) runtime_->collect();
        runtime_->safepoint();
      }
      if (!ok(runtime_->unregister_current_thread())) ++failures;
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures, 0);
  for (int i = 0; i < 3; ++i) collect();
  EXPECT_EQ(runtime_->counters().code_objects_created, uint64_t(kThreads * kIterations));
  EXPECT_GE(runtime_->counters().code_objects_finalized, uint64_t(kThreads * kIterations / 2));
  EXPECT_EQ(runtime_->live_code_objects(), runtime_->engine().live_modules());
  HeapStats stats = runtime_->heap().stats();
  for (const ArenaStats& arena : stats.arenas) {
    EXPECT_EQ(arena.used_bytes + arena.quarantined_bytes + arena.free_bytes, arena.reserved_bytes)
        << arena.name;
  }
}

TEST_F(RuntimeTest, BadInputGivesErrorsAndLeavesTheHeapAsItWas) {
  HeapStats before = runtime_->heap().stats();
  auto bad = runtime_->compile("define i64 @f( {", "broken");
  ASSERT_FALSE(bool(bad));
  EXPECT_NE(llvm::toString(bad.takeError()).find("broken"), std::string::npos);
  auto undefined = runtime_->compile(
      "declare i64 @nowhere()\ndefine i64 @f(ptr %e) {\n  %r = call i64 "
      "@nowhere()\n  ret i64 %r\n}\n",
      "undefined");
  ASSERT_FALSE(bool(undefined));
  EXPECT_NE(llvm::toString(undefined.takeError()).find("nowhere"), std::string::npos);
  HeapStats after = runtime_->heap().stats();
  clear_history(before);
  clear_history(after);
  EXPECT_EQ(before, after);
  EXPECT_EQ(runtime_->counters().code_objects_created, 0u);

  CodeObject* code = take(runtime_->compile(lambda_ir(1), "fine"));
  ASSERT_NE(code, nullptr);
  auto missing = runtime_->symbol(code, "no_such_function");
  ASSERT_FALSE(bool(missing));
  EXPECT_NE(llvm::toString(missing.takeError()).find("no_such_function"), std::string::npos);
  auto not_code = runtime_->symbol(reinterpret_cast<CodeObject*>(&before), "lambda");
  ASSERT_FALSE(bool(not_code));
  llvm::consumeError(not_code.takeError());
}

TEST_F(RuntimeTest, RedefinitionRetiresTheOldBodyThroughQuarantine) {
  auto body = [](int value) {
    return llvm::formatv("define i64 @answer() {{\n  ret i64 {0}\n}\n", value).str();
  };
  void* stub = take(runtime_->define_function("answer", body(1)));
  ASSERT_NE(stub, nullptr);
  CodeObject* caller = take(runtime_->compile(R"(
declare i64 @answer()
define i64 @ask(ptr %env) {
  %r = call i64 @answer()
  ret i64 %r
}
)",
                                              "caller"));
  ASSERT_NE(caller, nullptr);
  auto* ask = reinterpret_cast<int64_t (*)(void*)>(take(runtime_->symbol(caller, "ask")));
  ASSERT_NE(ask, nullptr);
  EXPECT_EQ(ask(nullptr), 1);
  for (int v = 2; v <= 5; ++v) {
    ASSERT_EQ(take(runtime_->define_function("answer", body(v))), stub);
    EXPECT_EQ(ask(nullptr), v);
    runtime_->reclaim();
  }
  EXPECT_EQ(runtime_->heap().stats().quarantined_bytes, 0u);
  std::string json = runtime_->dump_json();
  EXPECT_NE(json.find("\"gc\""), std::string::npos);
  EXPECT_NE(runtime_->dump_text().find("live code objects"), std::string::npos);
}

// --- compile(ThreadSafeModule): definitions by their written names, from the link. ---

llvm::orc::ThreadSafeModule parse_module(const std::string& ir) {
  auto context = std::make_unique<llvm::LLVMContext>();
  llvm::SMDiagnostic diagnostic;
  auto module = llvm::parseAssemblyString(ir, diagnostic, *context);
  if (!module) ADD_FAILURE() << "parse error: " << diagnostic.getMessage().str();
  return llvm::orc::ThreadSafeModule(std::move(module), std::move(context));
}

// Two functions over a global of the module's own; an internal helper (adding {0}) is no
// definition. A formatv pattern.
constexpr const char* kCounterIr = R"(
@count = global i64 100
define internal i64 @step() {{
  ret i64 {0}
}
define i64 @next(ptr %env) {{
  %v = load i64, ptr @count
  %s = call i64 @step()
  %n = add i64 %v, %s
  store i64 %n, ptr @count
  ret i64 %n
}
define i64 @peek(ptr %env) {{
  %v = load i64, ptr @count
  ret i64 %v
}
)";

// warm_up compiles and links nothing: no code object, no heap block, no definition; the same
// module compiles afterwards as if the warm-up had not happened.
TEST_F(RuntimeTest, WarmUpLeavesNoCodeObjectAndNoHeapBlock) {
  const HeapStats heap_before = runtime_->heap().stats();
  const GcCounters counters_before = runtime_->counters();
  llvm::Error warmed = runtime_->warm_up(parse_module(llvm::formatv(kCounterIr, 1).str()));
  ASSERT_FALSE(bool(warmed)) << llvm::toString(std::move(warmed));
  EXPECT_EQ(runtime_->heap().stats(), heap_before);
  EXPECT_EQ(runtime_->counters(), counters_before);
  auto compiled = runtime_->compile(parse_module(llvm::formatv(kCounterIr, 1).str()), "counter");
  ASSERT_TRUE(bool(compiled)) << llvm::toString(compiled.takeError());
  EXPECT_EQ(reinterpret_cast<int64_t (*)(void*)>(compiled->definitions["next"])(nullptr), 101);
}

TEST_F(RuntimeTest, CompileReturnsEveryDefinitionByItsWrittenName) {
  auto compiled = runtime_->compile(parse_module(llvm::formatv(kCounterIr, 1).str()), "counter");
  ASSERT_TRUE(bool(compiled)) << llvm::toString(compiled.takeError());
  ASSERT_NE(compiled->code, nullptr);
  std::set<std::string> names;
  for (const auto& entry : compiled->definitions) names.insert(entry.getKey().str());
  EXPECT_EQ(names, (std::set<std::string>{"count", "next", "peek"}));

  auto next = reinterpret_cast<int64_t (*)(void*)>(compiled->definitions["next"]);
  auto peek = reinterpret_cast<int64_t (*)(void*)>(compiled->definitions["peek"]);
  auto* count = static_cast<int64_t*>(compiled->definitions["count"]);
  EXPECT_EQ(next(nullptr), 101);
  EXPECT_EQ(next(nullptr), 102);
  EXPECT_EQ(peek(nullptr), 102);
  *count = 7;
  EXPECT_EQ(peek(nullptr), 7);
  // symbol() finds the same addresses under the same names.
  for (const char* name : {"next", "peek", "count"}) {
    EXPECT_EQ(take(runtime_->symbol(compiled->code, name)), compiled->definitions[name]) << name;
  }
  auto helper = runtime_->symbol(compiled->code, "step");
  ASSERT_FALSE(bool(helper));
  llvm::consumeError(helper.takeError());
}

TEST_F(RuntimeTest, CodeObjectsDefiningTheSameNamesGetTheirOwnDefinitions) {
  auto first = runtime_->compile(parse_module(llvm::formatv(kCounterIr, 1).str()), "same");
  auto second = runtime_->compile(parse_module(llvm::formatv(kCounterIr, 10).str()), "same");
  ASSERT_TRUE(bool(first)) << llvm::toString(first.takeError());
  ASSERT_TRUE(bool(second)) << llvm::toString(second.takeError());
  for (const char* name : {"next", "peek", "count"}) {
    ASSERT_NE(first->definitions[name], nullptr) << name;
    EXPECT_NE(first->definitions[name], second->definitions[name]) << name;
  }
  auto next1 = reinterpret_cast<int64_t (*)(void*)>(first->definitions["next"]);
  auto next2 = reinterpret_cast<int64_t (*)(void*)>(second->definitions["next"]);
  EXPECT_EQ(next1(nullptr), 101);
  EXPECT_EQ(next2(nullptr), 110);
  EXPECT_EQ(next1(nullptr), 102);
  EXPECT_EQ(*static_cast<int64_t*>(second->definitions["count"]), 110);
  // The IR-text form renames the same way.
  CodeObject* third = take(runtime_->compile(llvm::formatv(kCounterIr, 100).str(), "same"));
  ASSERT_NE(third, nullptr);
  auto next3 = reinterpret_cast<int64_t (*)(void*)>(take(runtime_->symbol(third, "next")));
  ASSERT_NE(next3, nullptr);
  EXPECT_EQ(next3(nullptr), 200);
  EXPECT_EQ(next1(nullptr), 103);
}

TEST_F(RuntimeTest, ModulesBuiltForTheRuntimesTargetCompile) {
  ASSERT_FALSE(runtime_->target_triple().empty());
  ASSERT_FALSE(runtime_->data_layout().empty());
  EXPECT_EQ(runtime_->target_triple(), runtime_->engine().target_triple().str());
  auto context = std::make_unique<llvm::LLVMContext>();
  auto module = std::make_unique<llvm::Module>("built", *context);
  module->setTargetTriple(runtime_->target_triple());
  module->setDataLayout(runtime_->data_layout());
  llvm::IRBuilder<> b(*context);
  auto* function = llvm::Function::Create(llvm::FunctionType::get(b.getInt64Ty(), false),
                                          llvm::Function::ExternalLinkage, "answer", *module);
  b.SetInsertPoint(llvm::BasicBlock::Create(*context, "entry", function));
  b.CreateRet(b.getInt64(42));
  auto compiled = runtime_->compile(
      llvm::orc::ThreadSafeModule(std::move(module), std::move(context)), "built");
  ASSERT_TRUE(bool(compiled)) << llvm::toString(compiled.takeError());
  EXPECT_EQ(reinterpret_cast<int64_t (*)()>(compiled->definitions["answer"])(), 42);
}

TEST_F(RuntimeTest, CompileErrorsNameTheModuleAndCountNothing) {
  HeapStats before = runtime_->heap().stats();
  auto undefined = runtime_->compile(parse_module(R"(
declare i64 @nowhere()
define i64 @g() {
  %r = call i64 @nowhere()
  ret i64 %r
}
)"),
                                     "undefined-callee");
  ASSERT_FALSE(bool(undefined));
  const std::string error = llvm::toString(undefined.takeError());
  EXPECT_NE(error.find("undefined-callee"), std::string::npos) << error;
  EXPECT_NE(error.find("nowhere"), std::string::npos) << error;
  // A module that already uses the private name its definition `f` would get (the first code
  // object of a runtime has a small id).
  std::string clashing = "define i64 @f() {\n  ret i64 0\n}\n";
  for (int id = 1; id <= 8; ++id) {
    clashing += llvm::formatv("define i64 @f.co{0}() {{\n  ret i64 {0}\n}\n", id).str();
  }
  auto clash = runtime_->compile(parse_module(clashing), "clashing");
  ASSERT_FALSE(bool(clash));
  const std::string clash_error = llvm::toString(clash.takeError());
  EXPECT_NE(clash_error.find("clashing"), std::string::npos) << clash_error;
  EXPECT_NE(clash_error.find("cannot rename 'f'"), std::string::npos) << clash_error;
  HeapStats after = runtime_->heap().stats();
  clear_history(before);
  clear_history(after);
  EXPECT_EQ(before, after);
  const GcCounters c = runtime_->counters();
  EXPECT_EQ(c.code_objects_created, 0u);
  EXPECT_EQ(c.tier(Tier::kOptimized), TierCounters{});
}

// --- adopt(): code units made without LLVM. ---

// A unit of two blocks allocated as a stencil emitter would: code that loads a word from the
// unit's data block and returns it.
struct AdoptedUnit {
  uintptr_t code = 0;
  uintptr_t data = 0;
};

AdoptedUnit emit_load_unit(Heap& heap, int64_t value, OwnerId* owner) {
  const BlockRequest requests[] = {{Arena::kCode, 16, 16}, {Arena::kData, 8, 16}};
  Allocation blocks[2];
  auto group = heap.allocate_group("loader", requests, blocks);
  if (!group) {
    ADD_FAILURE() << group.error().message;
    return {};
  }
  *owner = *group;
  std::memcpy(blocks[1].writable, &value, sizeof value);
  // movabs rax, [data]; ret
  uint8_t code[] = {0x48, 0xa1, 0, 0, 0, 0, 0, 0, 0, 0, 0xc3};
  const uint64_t data = blocks[1].address;
  std::memcpy(code + 2, &data, sizeof data);
  std::memcpy(blocks[0].writable, code, sizeof code);
  return {blocks[0].address, blocks[1].address};
}

// A unit whose code calls park() (a frame of it stays on the caller's stack meanwhile).
AdoptedUnit emit_park_unit(Heap& heap, OwnerId* owner) {
  const BlockRequest requests[] = {{Arena::kCode, 32, 16}};
  Allocation blocks[1];
  auto group = heap.allocate_group("parker", requests, blocks);
  if (!group) {
    ADD_FAILURE() << group.error().message;
    return {};
  }
  *owner = *group;
  // push rbp; mov rbp, rsp; movabs rax, park; call rax; pop rbp; ret
  uint8_t code[] = {0x55, 0x48, 0x89, 0xe5, 0x48, 0xb8, 0,    0,    0,
                    0,    0,    0,    0,    0,    0xff, 0xd0, 0x5d, 0xc3};
  const uint64_t target = reinterpret_cast<uint64_t>(&park);
  std::memcpy(code + 6, &target, sizeof target);
  std::memcpy(blocks[0].writable, code, sizeof code);
  return {blocks[0].address, 0};
}

std::atomic<int> g_gone{0};

// Adopts a unit on a fresh stack so that the code object is garbage once this returns.
AdoptedUnit garbage_adopted_unit(Runtime& runtime, bool park_unit) {
  AdoptedUnit unit;
  on_fresh_stack(runtime, [&] {
    OwnerId owner = kNoOwner;
    unit = park_unit ? emit_park_unit(runtime.heap(), &owner)
                     : emit_load_unit(runtime.heap(), 1234, &owner);
    ASSERT_NE(owner, kNoOwner);
    CodeObject* code = take(runtime.adopt(owner, 64, [] { ++g_gone; }, "adopted"));
    ASSERT_NE(code, nullptr);
  });
  return unit;
}

// Collections until the baseline tier has finalized `count` code objects (bounded), without
// reclaiming: the units' blocks are then in quarantine.
void finalize_baseline(Runtime& runtime, uint64_t count) {
  for (int i = 0; i < 8 && runtime.counters().tier(Tier::kBaseline).code_objects_finalized < count;
       ++i) {
    on_fresh_stack(runtime, [&] {
      GC_gcollect();
      runtime.safepoint();
    });
  }
  ASSERT_EQ(runtime.counters().tier(Tier::kBaseline).code_objects_finalized, count);
}

// One identity from the heap up: the code object's owner owns its blocks, names its private
// symbols and is the engine's handle of the module.
TEST_F(RuntimeTest, ACodeObjectIsTheHeapOwnerOfItsUnit) {
  auto compiled = runtime_->compile(parse_module(llvm::formatv(kCounterIr, 1).str()), "counter");
  ASSERT_TRUE(bool(compiled)) << llvm::toString(compiled.takeError());
  const OwnerId owner = runtime_->owner(compiled->code);
  ASSERT_NE(owner, kNoOwner);
  for (const auto& entry : compiled->definitions) {
    auto block = runtime_->heap().find(reinterpret_cast<uintptr_t>(entry.getValue()));
    ASSERT_TRUE(block.has_value()) << entry.getKey().str();
    EXPECT_EQ(block->owner, owner) << entry.getKey().str();
  }
  auto private_next = runtime_->engine().lookup("next.co" + std::to_string(owner));
  ASSERT_TRUE(bool(private_next)) << llvm::toString(private_next.takeError());
  EXPECT_EQ(private_next->toPtr<void*>(), compiled->definitions["next"]);
  EXPECT_EQ(runtime_->owner(nullptr), kNoOwner);

  // An adopted unit is its owner too; an owner adopted already is refused.
  OwnerId adopted = kNoOwner;
  AdoptedUnit unit = emit_load_unit(runtime_->heap(), 7, &adopted);
  CodeObject* code = take(runtime_->adopt(adopted, 64, {}, "adopted"));
  ASSERT_NE(code, nullptr);
  EXPECT_EQ(runtime_->owner(code), adopted);
  auto again = runtime_->adopt(adopted, 64, {}, "adopted again");
  ASSERT_FALSE(bool(again));
  const std::string refusal = llvm::toString(again.takeError());
  EXPECT_NE(refusal.find("already belongs to a code object"), std::string::npos) << refusal;
  EXPECT_EQ(runtime_->counters().code_objects_created, 2u);
  (void)unit;
}

TEST_F(RuntimeTest, AdoptedUnitIsRetiredThenReclaimedAndItsOnGoneRunsOnce) {
  g_gone = 0;
  AdoptedUnit unit = garbage_adopted_unit(*runtime_, /*park_unit=*/false);
  ASSERT_NE(unit.code, 0u);
  EXPECT_EQ(reinterpret_cast<int64_t (*)()>(unit.code)(), 1234);
  EXPECT_EQ(runtime_->heap().find(unit.code)->state, BlockState::kLive);

  finalize_baseline(*runtime_, 1);
  for (uintptr_t address : {unit.code, unit.data}) {
    auto block = runtime_->heap().find(address);
    ASSERT_TRUE(block.has_value());
    EXPECT_EQ(block->state, BlockState::kQuarantined);
  }
  EXPECT_EQ(g_gone, 0);
  EXPECT_EQ(runtime_->live_code_objects(), 0u);

  on_fresh_stack(*runtime_, [&] { runtime_->reclaim(); });
  EXPECT_FALSE(runtime_->heap().find(unit.code).has_value());
  EXPECT_FALSE(runtime_->heap().find(unit.data).has_value());
  EXPECT_EQ(g_gone, 1);
  EXPECT_EQ(runtime_->heap().stats().quarantined_bytes, 0u);
  EXPECT_EQ(runtime_->heap().stats().used_bytes, 0u);
  for (int i = 0; i < 2; ++i) collect();
  EXPECT_EQ(g_gone, 1);
  EXPECT_EQ(runtime_->counters().modules_retired, 1u);
  EXPECT_EQ(runtime_->counters().retire_failures, 0u);
}

TEST_F(RuntimeTest, AdoptedUnitStaysQuarantinedWhileAThreadIsParkedInIt) {
  g_gone = 0;
  g_parked = false;
  g_release = false;
  AdoptedUnit unit = garbage_adopted_unit(*runtime_, /*park_unit=*/true);
  ASSERT_NE(unit.code, 0u);
  std::thread worker([&] {
    testing::run_on_fresh_stack([&] {  // see garbage_code_entry
      ASSERT_TRUE(ok(runtime_->register_current_thread()));
      reinterpret_cast<void (*)()>(unit.code)();
      ASSERT_TRUE(ok(runtime_->unregister_current_thread()));
    });
  });
  while (!g_parked) std::this_thread::yield();

  finalize_baseline(*runtime_, 1);
  for (int cycle = 0; cycle < 4; ++cycle) {
    collect();
    auto block = runtime_->heap().find(unit.code);
    ASSERT_TRUE(block.has_value()) << "cycle " << cycle;
    EXPECT_EQ(block->state, BlockState::kQuarantined) << "cycle " << cycle;
    EXPECT_EQ(g_gone, 0) << "cycle " << cycle;
  }
  EXPECT_GE(runtime_->counters().blocks_kept_referenced, 4u);
  g_release = true;
  worker.join();
  collect();
  EXPECT_FALSE(runtime_->heap().find(unit.code).has_value());
  EXPECT_EQ(g_gone, 1);
  collect();
  EXPECT_EQ(g_gone, 1);
}

TEST_F(RuntimeTest, AdoptedUnitsStillAliveAtShutdownRunTheirOnGone) {
  g_gone = 0;
  OwnerId owner = kNoOwner;
  AdoptedUnit unit = emit_load_unit(runtime_->heap(), 5, &owner);
  ASSERT_NE(owner, kNoOwner);
  auto** box = static_cast<CodeObject**>(GC_MALLOC(sizeof(CodeObject*)));
  ASSERT_NE(box, nullptr);
  box[0] = take(runtime_->adopt(owner, 32, [] { ++g_gone; }, "kept"));
  ASSERT_NE(box[0], nullptr);
  EXPECT_EQ(reinterpret_cast<int64_t (*)()>(unit.code)(), 5);
  auto bad = runtime_->adopt(kNoOwner, 0, {}, "ownerless");
  ASSERT_FALSE(bool(bad));
  EXPECT_NE(llvm::toString(bad.takeError()).find("ownerless"), std::string::npos);
  runtime_.reset();
  EXPECT_EQ(g_gone, 1);
}

// --- Tiers: per-tier counters and their dumps. ---

TEST_F(RuntimeTest, CountersAndDumpsSayWhatEachTierMade) {
  constexpr uint64_t kAdoptNs = 12345;
  uint64_t llvm_bytes = 0;
  on_fresh_stack(*runtime_, [&] {
    for (int i = 0; i < 2; ++i) {
      OwnerId owner = kNoOwner;
      emit_load_unit(runtime_->heap(), i, &owner);
      ASSERT_NE(take(runtime_->adopt(owner, 48, {}, "stencils", {}, Tier::kBaseline, kAdoptNs)),
                nullptr);
    }
    const size_t used = runtime_->heap().stats().used_bytes;
    ASSERT_NE(take(runtime_->compile(lambda_ir(3), "hot")), nullptr);
    llvm_bytes = runtime_->heap().stats().used_bytes - used;
  });
  runtime_->note_tier_up(true);
  runtime_->note_tier_up(true);
  runtime_->note_tier_up(false);

  GcCounters c = runtime_->counters();
  const TierCounters& baseline = c.tier(Tier::kBaseline);
  const TierCounters& optimized = c.tier(Tier::kOptimized);
  EXPECT_EQ(baseline.code_objects_created, 2u);
  EXPECT_EQ(baseline.live(), 2u);
  EXPECT_EQ(baseline.code_bytes_live, 2u * 48);
  EXPECT_EQ(baseline.compile_ns_total, 2 * kAdoptNs);
  EXPECT_EQ(optimized.code_objects_created, 1u);
  EXPECT_EQ(optimized.live(), 1u);
  EXPECT_GT(llvm_bytes, 0u);
  EXPECT_EQ(optimized.code_bytes_live, llvm_bytes);
  EXPECT_GT(optimized.compile_ns_total, 0u);
  EXPECT_EQ(c.code_objects_created, 3u);
  EXPECT_EQ(c.tier_ups, 2u);
  EXPECT_EQ(c.tier_ups_discarded, 1u);

  nlohmann::json json = nlohmann::json::parse(runtime_->dump_json());
  const nlohmann::json& gc = json.at("gc");
  for (const char* key : {"live_code_objects", "code_objects_created", "code_objects_finalized",
                          "closures_created", "modules_retired", "collections", "reclaim_passes",
                          "blocks_kept_referenced", "threads_timed_out", "retire_failures",
                          "scan_ns_total", "scan_ns_last", "registered_threads"}) {
    EXPECT_TRUE(gc.contains(key)) << key;
  }
  EXPECT_EQ(gc.at("live_code_objects"), 3);
  EXPECT_EQ(gc.at("tier_ups"), 2);
  EXPECT_EQ(gc.at("tier_ups_discarded"), 1);
  const nlohmann::json& json_baseline = gc.at("tiers").at("baseline");
  const nlohmann::json& json_llvm = gc.at("tiers").at("llvm");
  EXPECT_EQ(json_baseline.at("live_code_objects"), 2);
  EXPECT_EQ(json_baseline.at("code_objects_created"), 2);
  EXPECT_EQ(json_baseline.at("code_objects_finalized"), 0);
  EXPECT_EQ(json_baseline.at("code_bytes_live"), 96);
  EXPECT_EQ(json_baseline.at("compile_ns_total"), 2 * kAdoptNs);
  EXPECT_EQ(json_llvm.at("code_objects_created"), 1);
  EXPECT_EQ(json_llvm.at("code_bytes_live"), llvm_bytes);
  EXPECT_EQ(json_llvm.at("compile_ns_total"), optimized.compile_ns_total);
  // The section is GcCounters as gcglue/stats_json.h converts it, and converts back.
  nlohmann::json fields = gc;
  for (const char* key : {"live_code_objects", "registered_threads", "tiers"}) fields.erase(key);
  const GcCounters back = gc.get<GcCounters>();
  EXPECT_EQ(nlohmann::json(back), fields);
  EXPECT_EQ(back.tier_ups, c.tier_ups);
  EXPECT_EQ(json_llvm.get<TierCounters>(), optimized);

  const std::string text = runtime_->dump_text();
  EXPECT_NE(text.find("live code objects"), std::string::npos) << text;
  EXPECT_NE(text.find("baseline tier: 2 live units, 96 bytes"), std::string::npos) << text;
  EXPECT_NE(text.find("llvm tier: 1 live units"), std::string::npos) << text;
  EXPECT_NE(text.find("tier-ups: 2 installed, 1 discarded"), std::string::npos) << text;

  // Everything was made on a stack that is gone: all of it is collected.
  for (int i = 0; i < 6 && runtime_->live_code_objects() > 0; ++i) collect();
  c = runtime_->counters();
  for (Tier tier : {Tier::kBaseline, Tier::kOptimized}) {
    EXPECT_EQ(c.tier(tier).live(), 0u) << to_string(tier);
    EXPECT_EQ(c.tier(tier).code_bytes_live, 0u) << to_string(tier);
  }
  EXPECT_EQ(c.tier(Tier::kBaseline).code_objects_finalized, 2u);
  EXPECT_EQ(c.tier(Tier::kOptimized).code_objects_finalized, 1u);
  EXPECT_EQ(c.code_objects_finalized, 3u);
  EXPECT_EQ(runtime_->heap().stats().used_bytes, 0u);
}

// --- Threads: a background compiler while the main thread collects. ---

TEST_F(RuntimeTest, BackgroundCompilesWhileTheMainThreadCollectsAndAdopts) {
  // At least kCollections collections, and on until the compiler has made kMinCompiles code
  // objects: its first LLVM compile can take longer than the 300 collections (a loaded machine).
  constexpr int kCollections = 300;
  constexpr int kMinCompiles = 16;
  constexpr int kMaxCompiles = 2000;
  constexpr int kKeepEvery = 8;
  constexpr int kKept = kMaxCompiles / kKeepEvery;
  // Reachable from this thread's stack, which Boehm scans: kept code objects must survive.
  auto** kept = static_cast<CodeObject**>(GC_MALLOC(kKept * sizeof(CodeObject*)));
  ASSERT_NE(kept, nullptr);
  std::vector<std::pair<uintptr_t, int64_t>> kept_calls(kKept);  // function, expected result
  std::atomic<bool> stop{false};
  std::atomic<int> compiled{0};
  std::atomic<int> failures{0};
  std::atomic<bool> compiler_done{false};

  std::thread compiler([&] {
    if (!ok(runtime_->register_current_thread())) {
      ++failures;
      compiler_done = true;
      return;
    }
    for (int i = 0; i < kMaxCompiles && !stop; ++i) {
      auto result = runtime_->compile(parse_module(lambda_ir(i)), "background");
      if (!result) {
        ADD_FAILURE() << llvm::toString(result.takeError());
        ++failures;
        continue;
      }
      const uintptr_t entry = reinterpret_cast<uintptr_t>(result->definitions.lookup("lambda"));
      int64_t env = i;
      if (entry == 0 ||
          reinterpret_cast<int64_t (*)(void*, int64_t)>(entry)(&env, 5) != lambda_value(i, i, 5)) {
        ++failures;
      }
      if (i % kKeepEvery == 0) {
        kept[i / kKeepEvery] = result->code;
        kept_calls[i / kKeepEvery] = {entry, lambda_value(i, i, 5)};
      }
      ++compiled;
    }
    if (!ok(runtime_->unregister_current_thread())) ++failures;
    compiler_done = true;
  });

  int collections = 0;
  for (; collections < kCollections || (compiled < kMinCompiles && !compiler_done); ++collections) {
    runtime_->collect();
    OwnerId owner = kNoOwner;
    emit_load_unit(runtime_->heap(), collections, &owner);
    auto adopted = runtime_->adopt(owner, 32, {}, "main");
    if (!adopted) {
      ADD_FAILURE() << llvm::toString(adopted.takeError());
      ++failures;
    }
  }
  stop = true;
  compiler.join();
  EXPECT_EQ(failures, 0);
  EXPECT_GE(compiled, kMinCompiles);
  RecordProperty("background_compiles", compiled.load());

  for (int i = 0; i < 3; ++i) collect();
  const int kept_count = (compiled + kKeepEvery - 1) / kKeepEvery;
  for (int k = 0; k < kept_count; ++k) {
    ASSERT_NE(kept[k], nullptr);
    auto lambda = take(runtime_->symbol(kept[k], "lambda"));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(lambda), kept_calls[k].first);
    int64_t env = k * kKeepEvery;
    EXPECT_EQ(reinterpret_cast<int64_t (*)(void*, int64_t)>(lambda)(&env, 5), kept_calls[k].second);
  }
  const GcCounters c = runtime_->counters();
  EXPECT_EQ(c.tier(Tier::kOptimized).code_objects_created, uint64_t(compiled));
  EXPECT_EQ(c.tier(Tier::kBaseline).code_objects_created, uint64_t(collections));
  EXPECT_EQ(c.code_objects_created, uint64_t(compiled + collections));
  EXPECT_EQ(c.code_objects_finalized, c.tier(Tier::kBaseline).code_objects_finalized +
                                          c.tier(Tier::kOptimized).code_objects_finalized);
  EXPECT_EQ(runtime_->live_code_objects(),
            c.tier(Tier::kBaseline).live() + c.tier(Tier::kOptimized).live());
  EXPECT_EQ(runtime_->engine().live_modules(), c.tier(Tier::kOptimized).live());
  EXPECT_GE(c.tier(Tier::kOptimized).live(), uint64_t(kept_count));
  EXPECT_EQ(c.retire_failures, 0u);
  HeapStats stats = runtime_->heap().stats();
  for (const ArenaStats& arena : stats.arenas) {
    EXPECT_EQ(arena.used_bytes + arena.quarantined_bytes + arena.free_bytes, arena.reserved_bytes)
        << arena.name;
  }
}

// Boehm's heap is process-wide: a larger request grows it at create, a smaller one changes
// nothing.
TEST(RuntimeOptionsTest, InitialCollectorHeapGrowsBoehmsHeapAtCreate) {
  RuntimeOptions options = small_options();
  GC_INIT();
  const size_t before = GC_get_heap_size();
  options.initial_collector_heap_bytes = before + (8 << 20);
  {
    auto runtime = Runtime::create(options);
    ASSERT_TRUE(bool(runtime)) << llvm::toString(runtime.takeError());
    EXPECT_GE(GC_get_heap_size(), before + (8 << 20));
  }
  const size_t grown = GC_get_heap_size();
  options.initial_collector_heap_bytes = 1 << 20;
  auto runtime = Runtime::create(options);
  ASSERT_TRUE(bool(runtime)) << llvm::toString(runtime.takeError());
  EXPECT_EQ(GC_get_heap_size(), grown);
}

}  // namespace
}  // namespace codeheap::gc
