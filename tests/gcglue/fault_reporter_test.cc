// The fatal-signal reporter (gcglue/fault_reporter.h): a crash in JIT code names the code, the
// process still dies of the same signal, and faults elsewhere go to the handlers they went to.
#include "gcglue/fault_reporter.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "gcglue/runtime.h"
#include "jit/engine.h"
#include "tests/scan/fresh_stack.h"

namespace codeheap::gc {
namespace {

using ::testing::HasSubstr;
using ::testing::KilledBySignal;

constexpr const char* kTrap = R"(
declare void @llvm.trap()
define void @boom(ptr %env) {
  call void @llvm.trap()
  unreachable
}
)";

// Infinite non-tail recursion: the volatile store keeps the frame, and `sub` (not associative)
// keeps LLVM from turning the recursion into a loop.
constexpr const char* kDeep = R"(
define i64 @deep(ptr %env, i64 %n) {
  %slot = alloca [4 x i64]
  store volatile i64 %n, ptr %slot
  %m = add i64 %n, 1
  %r = call i64 @deep(ptr %env, i64 %m)
  %s = sub i64 %r, %n
  ret i64 %s
}
)";

constexpr const char* kVictim = R"(
define i64 @victim(ptr %env) {
  ret i64 7
}
)";

// int3 in the middle of live code, then a normal return.
constexpr const char* kDebugTrap = R"(
declare void @llvm.debugtrap()
define i64 @pause_here(ptr %env) {
  call void @llvm.debugtrap()
  ret i64 42
}
)";

std::unique_ptr<Runtime> must_create(RuntimeOptions options = {}) {
  options.heap.code_bytes = 4 << 20;
  options.heap.read_only_bytes = 1 << 20;
  options.heap.data_bytes = 1 << 20;
  // No tail-recursion elimination, no surprises: the code is what the IR says.
  options.engine.opt_level = llvm::CodeGenOptLevel::None;
  auto runtime = Runtime::create(options);
  if (!runtime) {
    ADD_FAILURE() << llvm::toString(runtime.takeError());
    return nullptr;
  }
  return std::move(*runtime);
}

void* must_symbol(Runtime& runtime, const char* ir, const char* module, const char* name) {
  auto code = runtime.compile(ir, module);
  if (!code) {
    ADD_FAILURE() << llvm::toString(code.takeError());
    std::abort();
  }
  auto address = runtime.symbol(*code, name);
  if (!address) {
    ADD_FAILURE() << llvm::toString(address.takeError());
    std::abort();
  }
  return *address;
}

// In a death test's child: no core file for the crash the test asks for.
void no_core_dump() {
  const rlimit none = {0, 0};
  setrlimit(RLIMIT_CORE, &none);
}

// The death tests run each child from a fresh exec: the handlers and the runtimes of one test
// never meet another's, and no thread of the parent (Boehm's markers) is missing in a fork.
class FaultReporterDeathTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

void run_trap() {
  no_core_dump();
  auto runtime = must_create();
  auto* boom =
      reinterpret_cast<void (*)(void*)>(must_symbol(*runtime, kTrap, "trap_module", "boom"));
  boom(nullptr);
}

TEST_F(FaultReporterDeathTest, ATrapInJitCodeNamesTheFunctionItsBlockAndOwner) {
  EXPECT_EXIT(run_trap(), KilledBySignal(SIGILL),
              "codeheap: fatal SIGILL \\(illegal instruction\\) in JIT code at 0x[0-9a-f]+: "
              "function 'boom\\.co[0-9]+'\\+0x[0-9a-f]+, live code block 0x[0-9a-f]+\\+0x[0-9a-f]+ "
              "of owner 'trap_module[^']*' \\(#[0-9]+\\), heap 'codeheap'; pid [0-9]+, thread");
}

TEST_F(FaultReporterDeathTest, WithTheReporterOffATrapDiesSilently) {
  EXPECT_EXIT(
      {
        no_core_dump();
        RuntimeOptions options;
        options.faults.enabled = false;
        auto runtime = must_create(options);
        auto* boom =
            reinterpret_cast<void (*)(void*)>(must_symbol(*runtime, kTrap, "trap_module", "boom"));
        boom(nullptr);
      },
      KilledBySignal(SIGILL), ::testing::Not(HasSubstr("codeheap: fatal")));
}

// An engine that releases removed code at once (trap bytes), on a heap the reporter watches: a
// stale call traps in quarantined code whose owner and function are still known.
void run_released_call() {
  no_core_dump();
  HeapOptions heap_options;
  heap_options.code_bytes = 1 << 20;
  heap_options.read_only_bytes = 1 << 20;
  heap_options.data_bytes = 1 << 20;
  auto heap = Heap::create(heap_options);
  if (!heap) std::abort();
  jit::EngineOptions engine_options;
  engine_options.retire_mode = jit::RetireMode::kTrapNow;
  auto engine = jit::Engine::create(**heap, engine_options);
  if (!engine) std::abort();
  if (FaultReporter::watch(**heap, {})) std::abort();
  auto module = (*engine)->add_module(kVictim, "released_module");
  auto victim = (*engine)->lookup("victim");
  if (!module || !victim) std::abort();
  if ((*engine)->remove_module(*module)) std::abort();
  victim->toPtr<int64_t (*)(void*)>()(nullptr);
}

TEST_F(FaultReporterDeathTest, ACallIntoReleasedCodeNamesWhatWasThere) {
  EXPECT_EXIT(run_released_call(), KilledBySignal(SIGTRAP),
              "fatal SIGTRAP \\(trace/breakpoint trap\\) in JIT code at 0x[0-9a-f]+: "
              "function 'victim'\\+0x[0-9a-f]+, quarantined \\(released, trap-filled\\) code "
              "block 0x[0-9a-f]+\\+0x[0-9a-f]+ of owner 'released_module");
}

// The same through the collector: the code object is dropped, collected and its block
// reclaimed (trap-filled, free); a stale pointer still finds out whose code was there.
void run_collected_call() {
  no_core_dump();
  auto runtime = must_create();
  // The address is kept scrambled, so that no stack or register the scan sees points at it.
  constexpr uintptr_t kScramble = 0x5a5a5a5a5a5a5a5a;
  uintptr_t scrambled = 0;
  testing::run_on_fresh_stack([&] {
    if (runtime->register_current_thread()) std::abort();
    scrambled =
        reinterpret_cast<uintptr_t>(must_symbol(*runtime, kVictim, "collected_module", "victim")) ^
        kScramble;
    if (runtime->unregister_current_thread()) std::abort();
  });
  if (runtime->unregister_current_thread()) std::abort();  // its frames are the scan's
  AddressInfo info;
  for (int i = 0; i < 20; ++i) {
    testing::run_on_fresh_stack([&] {
      if (runtime->register_current_thread()) std::abort();
      runtime->collect();
      if (runtime->unregister_current_thread()) std::abort();
    });
    runtime->heap().describe(scrambled ^ kScramble, info);
    if (info.former) break;
  }
  if (!info.former) {
    fprintf(stderr, "the code object was never reclaimed\n");
    std::abort();
  }
  if (runtime->register_current_thread()) std::abort();  // for the alternate signal stack
  reinterpret_cast<int64_t (*)(void*)>(scrambled ^ kScramble)(nullptr);
}

TEST_F(FaultReporterDeathTest, ACallIntoCollectedCodeNamesTheCodeLastThere) {
  EXPECT_EXIT(run_collected_call(), KilledBySignal(SIGTRAP),
              "fatal SIGTRAP \\(trace/breakpoint trap\\) in JIT code at 0x[0-9a-f]+: "
              "function 'victim\\.co[0-9]+'\\+0x[0-9a-f]+, free code memory, last used by "
              "block 0x[0-9a-f]+\\+0x[0-9a-f]+ of owner 'collected_module");
}

// A registered thread with a small stack recurses without end in JIT code: the guard page
// faults, the handler runs on the thread's alternate stack.
void run_stack_overflow() {
  no_core_dump();
  auto runtime = must_create();
  auto* deep = reinterpret_cast<int64_t (*)(void*, int64_t)>(
      must_symbol(*runtime, kDeep, "deep_module", "deep"));
  struct Args {
    Runtime* runtime;
    int64_t (*deep)(void*, int64_t);
  } args{runtime.get(), deep};
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256 << 10);
  pthread_t thread;
  pthread_create(
      &thread, &attr,
      [](void* p) -> void* {
        auto* a = static_cast<Args*>(p);
        if (a->runtime->register_current_thread()) std::abort();
        a->deep(nullptr, 0);
        return nullptr;
      },
      &args);
  pthread_join(thread, nullptr);
}

TEST_F(FaultReporterDeathTest, AStackOverflowInJitCodeIsReportedFromTheAlternateStack) {
  EXPECT_EXIT(run_stack_overflow(), KilledBySignal(SIGSEGV),
              "fatal SIGSEGV \\(segmentation fault\\) in JIT code at 0x[0-9a-f]+: "
              "function 'deep\\.co[0-9]+'\\+0x[0-9a-f]+, live code block .* of owner "
              "'deep_module[^']*'.*; fault address 0x[0-9a-f]+, next to the stack pointer "
              "0x[0-9a-f]+: stack overflow");
}

// A fault outside every heap goes to the handler installed before the reporter.
void run_host_fault_with_an_earlier_handler() {
  no_core_dump();
  struct sigaction action = {};
  action.sa_handler = [](int) {
    constexpr char kText[] = "the embedder's handler\n";
    [[maybe_unused]] ssize_t n = write(STDERR_FILENO, kText, sizeof kText - 1);
    _exit(42);
  };
  sigemptyset(&action.sa_mask);
  sigaction(SIGSEGV, &action, nullptr);
  auto runtime = must_create();
  static volatile uintptr_t nowhere = 16;  // not a null the compiler could turn into a trap
  *reinterpret_cast<volatile int*>(nowhere) = 1;
}

TEST_F(FaultReporterDeathTest, AFaultOutsideTheHeapGoesToTheHandlerInstalledBefore) {
  EXPECT_EXIT(run_host_fault_with_an_earlier_handler(), ::testing::ExitedWithCode(42),
              "the embedder's handler");
}

// --- Without dying. ---

int g_claimed = 0;

bool claim_debug_traps(int signal, siginfo_t*, void*, void* data) {
  if (signal != SIGTRAP) return false;
  ++*static_cast<int*>(data);
  return true;  // int3 has executed: resuming runs the code after it
}

TEST(FaultReporterTest, AClaimHookSeesFaultsInJitCodeFirst) {
  RuntimeOptions options;
  options.faults.claim = &claim_debug_traps;
  options.faults.claim_data = &g_claimed;
  auto runtime = must_create(options);
  ASSERT_NE(runtime, nullptr);
  auto* pause_here = reinterpret_cast<int64_t (*)(void*)>(
      must_symbol(*runtime, kDebugTrap, "debugtrap_module", "pause_here"));
  EXPECT_EQ(pause_here(nullptr), 42);
  EXPECT_EQ(g_claimed, 1);
}

bool has_alternate_stack() {
  stack_t stack;
  return sigaltstack(nullptr, &stack) == 0 && !(stack.ss_flags & SS_DISABLE);
}

TEST(FaultReporterTest, RegisteredThreadsHaveAnAlternateSignalStackUntilTheyUnregister) {
  bool threads_have_one = false;
  testing::run_on_fresh_stack([&] { threads_have_one = has_alternate_stack(); });
  if (threads_have_one) GTEST_SKIP() << "every thread has an alternate stack (a sanitizer's)";
  // TSan gives the main thread one of its own (use_sigaltstack), which the runtime keeps.
  const bool main_had_one = has_alternate_stack();
  auto runtime = must_create();
  ASSERT_NE(runtime, nullptr);
  EXPECT_TRUE(has_alternate_stack());  // the creating thread
  testing::run_on_fresh_stack([&] {
    EXPECT_FALSE(has_alternate_stack());
    ASSERT_FALSE(runtime->register_current_thread());
    EXPECT_TRUE(has_alternate_stack());
    ASSERT_FALSE(runtime->unregister_current_thread());
    EXPECT_FALSE(has_alternate_stack());
  });
  RuntimeOptions off;
  off.faults.enabled = false;
  runtime.reset();
  EXPECT_EQ(has_alternate_stack(), main_had_one);
  runtime = must_create(off);
  EXPECT_EQ(has_alternate_stack(), main_had_one);
}

}  // namespace
}  // namespace codeheap::gc
