// A threaded soak of gc::Runtime (issue 15, item 7): for a given time, four mutator threads
// churn closures (LLVM modules and adopted units), redefine functions that their callers reach
// through entry cells, park inside old versions of a function while it is redefined, and
// collect; a background compile thread hands optimized code over as a tier-up would. Every
// result is checked. A monitor samples /proc/self/maps for writable-and-executable mappings and
// the code arena's committed bytes: the peak of the second half of the run must not exceed the
// peak of the first half.
//
//   soak [--seconds=N]      (or CODEHEAP_SOAK_SECONDS=N; default 5)
//
// Exits 0 when every check held, 1 otherwise (the log says which failed).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#define GC_THREADS
#define GC_NO_THREAD_REDIRECTS  // threads register explicitly (Runtime::register_current_thread)
#include <gc/gc.h>

#include "codeheap/log.h"
#include "gcglue/runtime.h"
#include "jit/engine.h"
#include "jit/error.h"
#include "llvm/AsmParser/Parser.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/SourceMgr.h"
#include "tests/gcglue/lambda_ir.h"

namespace codeheap::gc {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kMutators = 4;
constexpr int kRing = 8;  // closures each mutator keeps alive across iterations
constexpr int kClosuresPerModule = 4;
constexpr int kRedefineEvery = 4;   // iterations between redefinitions of a mutator's function
constexpr int kParkEvery = 32;      // iterations between parks inside an old version of hold
constexpr int kCollectEvery = 128;  // iterations between a mutator's explicit collections
// A small code arena: churn fills it within the first seconds, and from then on the runtime's
// own full-heap collections (invariant 5) run on every thread that finds it full. Its pages
// stay committed (retain_free_bytes), so committed bytes are a high-water mark: one that had
// to grow in the second half would mean code the collections no longer free, and a heap that
// leaked would fail allocations instead. The other arenas are larger, so that the code arena
// is the one that fills.
constexpr size_t kCodeArena = size_t{128} << 10;
constexpr size_t kOtherArenas = size_t{1} << 20;
// How long a parked thread waits for the other threads' collections before it collects itself.
constexpr auto kParkPatience = std::chrono::seconds(2);

std::shared_ptr<spdlog::logger> g_log;
std::atomic<int> g_failures{0};
std::atomic<bool> g_stop{false};  // the soak's time is up

template <typename... Args>
void fail(fmt::format_string<Args...> format, Args&&... args) {
  // The first failures say what went wrong; a storm of the same one says nothing more.
  if (g_failures.fetch_add(1) < 20) g_log->error(format, std::forward<Args>(args)...);
}

template <typename T>
std::optional<T> take(llvm::Expected<T> value, std::string_view what) {
  if (value) return std::move(*value);
  fail("{}: {}", what, llvm::toString(value.takeError()));
  return std::nullopt;
}

bool ok(llvm::Error error, std::string_view what) {
  if (!error) return true;
  fail("{}: {}", what, llvm::toString(std::move(error)));
  return false;
}

using codeheap::testing::lambda_ir;
using codeheap::testing::lambda_value;

int64_t call(void* entry, void* env, int64_t x) {
  return reinterpret_cast<int64_t (*)(void*, int64_t)>(entry)(env, x);
}

// --- Roots: GC objects the mutators keep, reachable from this static data (a Boehm root). ---

// A kept closure's environment: what lambda_ir(k) adds, and k.
struct Env {
  int64_t value;
  int64_t k;
};

struct MutatorRoots {
  Closure** ring = nullptr;     // kRing closures, GC memory
  CodeObject* asker = nullptr;  // ask<t>(env) calls the entry cell answer<t>
};
MutatorRoots g_roots[kMutators];

// The background compiler's latest result, installed with one release store.
struct Installed {
  CodeObject* code;
  void* entry;  // lambda_ir(k)'s lambda
  int64_t k;
};
std::atomic<Installed*> g_installed{nullptr};

// --- Parking inside old versions of hold. ---

Runtime* g_runtime = nullptr;
std::atomic<void*> g_hold{nullptr};       // the entry cell of hold
std::atomic<int64_t> g_hold_versions{0};  // versions of hold defined so far

// hold(nonce) = 3 * soak_park(nonce, v) + v for version v: the arithmetic after the call runs
// in the old version once the thread returns into it.
std::string hold_ir(int64_t version) {
  return llvm::formatv(R"(
declare i64 @soak_park(i64, i64)
define i64 @hold(i64 %nonce) {{
  %r = call i64 @soak_park(i64 %nonce, i64 {0})
  %m = mul i64 %r, 3
  %s = add i64 %m, {0}
  ret i64 %s
}
)",
                       version)
      .str();
}

// Threads redefine hold concurrently; each version has a number of its own.
bool redefine_hold() {
  static std::atomic<int64_t> next_version{1};
  auto stub = take(g_runtime->define_function("hold", hold_ir(next_version++)), "redefine hold");
  if (!stub) return false;
  void* expected = nullptr;
  if (!g_hold.compare_exchange_strong(expected, *stub) && expected != *stub) {
    fail("hold's entry cell moved on redefinition");
  }
  ++g_hold_versions;
  return true;
}

thread_local int64_t t_parked_version = -1;

// Called by version `version` of hold, whose frame (a return address into its block) stays on
// this thread's stack meanwhile. Makes that version old (redefines hold), waits for two
// reclaim passes of the other threads' collections (or collects itself if none come: they may
// all be parked), and checks that the block stayed quarantined rather than freed.
extern "C" int64_t soak_park(int64_t nonce, int64_t version) {
  t_parked_version = version;
  const auto inside = reinterpret_cast<uintptr_t>(__builtin_return_address(0));
  auto state = [&]() -> std::optional<BlockState> {
    auto block = g_runtime->heap().find(inside);
    return block ? std::optional(block->state) : std::nullopt;
  };
  if (!state()) fail("hold version {}: its block is gone while a thread runs it", version);
  redefine_hold();
  const uint64_t passes = g_runtime->counters().reclaim_passes;
  const auto give_up = Clock::now() + kParkPatience;
  while (g_runtime->counters().reclaim_passes < passes + 2 && !g_stop) {
    if (Clock::now() > give_up) {
      g_runtime->collect();
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (state() != BlockState::kQuarantined) {
    fail(
        "hold version {}: not quarantined after a redefinition and collections while a thread "
        "was parked in it",
        version);
  }
  return nonce + 1;
}

// --- Adopted units: code made without LLVM, as a baseline tier would. ---

std::atomic<uint64_t> g_units_gone{0};  // adopted units whose on_gone ran

// Emits `movabs rax, [data]; ret` and its data word `value` as one group, and adopts it, with
// an on_gone callback (as a baseline tier that registers unwind info would) or without: a pass
// that frees both kinds keeps the heap's bytes adding up while the callbacks run. The
// closure's entry returns `value`.
std::optional<Closure*> adopt_unit(Runtime& runtime, int64_t value, bool with_on_gone) {
  Allocation blocks[2];
  OwnerId owner = kNoOwner;
  llvm::Error error = runtime.with_code_space("soak unit", [&]() -> llvm::Error {
    const BlockRequest requests[] = {{Arena::kCode, 16, 16}, {Arena::kData, 8, 8}};
    auto group = runtime.heap().allocate_group("soak unit", requests, blocks);
    if (!group) return jit::to_llvm_error(group.error());
    owner = *group;
    return llvm::Error::success();
  });
  if (!ok(std::move(error), "adopt: allocate")) return std::nullopt;
  std::memcpy(blocks[1].writable, &value, sizeof value);
  uint8_t code[] = {0x48, 0xa1, 0, 0, 0, 0, 0, 0, 0, 0, 0xc3};
  const uint64_t data = blocks[1].address;
  std::memcpy(code + 2, &data, sizeof data);
  std::memcpy(blocks[0].writable, code, sizeof code);
  std::function<void()> on_gone;
  if (with_on_gone) on_gone = [] { ++g_units_gone; };
  auto adopted = take(runtime.adopt(owner, 32, std::move(on_gone), "soak unit"), "adopt");
  if (!adopted) return std::nullopt;
  auto* closure = static_cast<Closure*>(GC_MALLOC(sizeof(Closure)));
  if (closure == nullptr) {
    fail("GC_MALLOC failed");
    return std::nullopt;
  }
  *closure = {*adopted, reinterpret_cast<void*>(blocks[0].address), nullptr};
  return closure;
}

// --- Threads. ---

std::atomic<uint64_t> g_iterations{0}, g_compiles{0}, g_adoptions{0}, g_redefinitions{0},
    g_parks{0}, g_explicit_collections{0}, g_installed_calls{0}, g_tier_ups{0};

class Registered {
 public:
  explicit Registered(Runtime& runtime) : runtime_(runtime) {
    registered_ = ok(runtime.register_current_thread(), "register thread");
  }
  ~Registered() {
    if (registered_) ok(runtime_.unregister_current_thread(), "unregister thread");
  }
  explicit operator bool() const { return registered_; }

 private:
  Runtime& runtime_;
  bool registered_;
};

std::optional<Closure*> new_closure(Runtime& runtime, CodeObject* code, int64_t k, int64_t value) {
  auto* env = static_cast<Env*>(GC_MALLOC_ATOMIC(sizeof(Env)));
  if (env == nullptr) {
    fail("GC_MALLOC_ATOMIC failed");
    return std::nullopt;
  }
  *env = {value, k};
  return take(runtime.make_closure(code, "lambda", env), "make_closure");
}

void check_closure(Closure* closure, int64_t x, std::string_view what) {
  const auto* env = static_cast<const Env*>(closure->env);
  const int64_t got = call(closure->entry, closure->env, x);
  if (got != lambda_value(env->k, env->value, x)) {
    fail("{} (k {}, env {}): lambda({}) = {}, expected {}", what, env->k, env->value, x, got,
         lambda_value(env->k, env->value, x));
  }
}

void mutator(Runtime& runtime, int t) {
  Registered registered(runtime);
  if (!registered) return;
  MutatorRoots& roots = g_roots[t];
  const std::string answer = "answer" + std::to_string(t);
  void* answer_stub = nullptr;
  int64_t (*ask)(void*) = nullptr;

  for (int64_t i = 0; !g_stop; ++i) {
    const int64_t k = int64_t{t} << 32 | i;
    // Closures over a fresh module; one of them replaces a kept one.
    if (auto code = take(runtime.compile(lambda_ir(k), "soak lambda"), "compile")) {
      ++g_compiles;
      for (int c = 0; c < kClosuresPerModule; ++c) {
        auto closure = new_closure(runtime, *code, k, c);
        if (!closure) continue;
        check_closure(*closure, i + c, "fresh closure");
        if (c == 0) roots.ring[i % kRing] = *closure;
      }
    }
    for (int r = 0; r < kRing; ++r) {
      if (roots.ring[r] != nullptr) check_closure(roots.ring[r], i + r, "kept closure");
    }
    // A unit made without LLVM.
    if (auto unit = adopt_unit(runtime, k, /*with_on_gone=*/i % 2 == 0)) {
      ++g_adoptions;
      const int64_t got = call((*unit)->entry, nullptr, 0);
      if (got != k) fail("adopted unit returned {}, expected {}", got, k);
    }
    // The compile thread's latest code.
    if (Installed* installed = g_installed.load(std::memory_order_acquire)) {
      int64_t env = t;
      const int64_t got = call(installed->entry, &env, i);
      if (got != lambda_value(installed->k, t, i)) {
        fail("installed code (k {}): {}, expected {}", installed->k, got,
             lambda_value(installed->k, t, i));
      }
      ++g_installed_calls;
    }
    // A redefinition, seen through the entry cell by code compiled against it once.
    if (i % kRedefineEvery == 0) {
      const int64_t value = k;
      auto stub =
          take(runtime.define_function(
                   answer,
                   llvm::formatv("define i64 @{0}() {{\n  ret i64 {1}\n}\n", answer, value).str()),
               "define_function");
      if (stub) {
        ++g_redefinitions;
        if (answer_stub != nullptr && *stub != answer_stub) fail("{}'s entry cell moved", answer);
        answer_stub = *stub;
        if (ask == nullptr) {
          const std::string ir = llvm::formatv(
              "declare i64 @{0}()\ndefine i64 @ask(ptr %env) {{\n  %r = call i64 @{0}()\n"
              "  ret i64 %r\n}\n",
              answer);
          if (auto asker = take(runtime.compile(ir, "soak asker"), "compile asker")) {
            roots.asker = *asker;
            if (auto entry = take(runtime.symbol(*asker, "ask"), "symbol ask")) {
              ask = reinterpret_cast<int64_t (*)(void*)>(*entry);
            }
          }
        }
        if (ask != nullptr && ask(nullptr) != value) {
          fail("{} redefined to return {}: its caller got {}", answer, value, ask(nullptr));
        }
      }
    }
    // Parked inside a version of hold that becomes old meanwhile.
    if (i % kParkEvery == t) {
      const auto hold = reinterpret_cast<int64_t (*)(int64_t)>(g_hold.load());
      const int64_t got = hold(k);
      if (got != 3 * (k + 1) + t_parked_version) {
        fail("hold version {} returned {}, expected {}", t_parked_version, got,
             3 * (k + 1) + t_parked_version);
      }
      ++g_parks;
    }
    if (i % kCollectEvery == kCollectEvery / kMutators * t) {
      runtime.collect();
      ++g_explicit_collections;
    }
    runtime.safepoint();
    ++g_iterations;
  }
}

// A tier-up in miniature: compiles on its own (its own LLVMContext and module), then installs
// the result with one release store. The code it replaces becomes garbage at once, while
// mutators may still be running it.
void compile_thread(Runtime& runtime) {
  Registered registered(runtime);
  if (!registered) return;
  for (int64_t k = 0; !g_stop; ++k) {
    auto context = std::make_unique<llvm::LLVMContext>();
    llvm::SMDiagnostic diagnostic;
    auto module = llvm::parseAssemblyString(lambda_ir(-k), diagnostic, *context);
    if (!module) {
      fail("tier-up module {}: {}", k, diagnostic.getMessage().str());
      return;
    }
    auto compiled =
        take(runtime.compile(llvm::orc::ThreadSafeModule(std::move(module), std::move(context)),
                             "soak tier-up"),
             "tier-up compile");
    if (!compiled) continue;
    auto* installed = static_cast<Installed*>(GC_MALLOC(sizeof(Installed)));
    if (installed == nullptr) {
      fail("GC_MALLOC failed");
      continue;
    }
    *installed = {compiled->code, compiled->definitions.lookup("lambda"), -k};
    if (installed->entry == nullptr) fail("tier-up module {} defines no lambda", k);
    g_installed.store(installed, std::memory_order_release);
    runtime.note_tier_up(true);
    ++g_tier_ups;
    runtime.safepoint();
  }
}

// Writable-and-executable mappings of this process, as /proc/self/maps lines.
std::vector<std::string> writable_executable_mappings() {
  std::vector<std::string> found;
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    const size_t space = line.find(' ');
    if (space == std::string::npos || line.size() < space + 4) continue;
    if (line[space + 2] == 'w' && line[space + 3] == 'x') found.push_back(line);
  }
  return found;
}

double duration_seconds(int argc, char** argv) {
  const char* text = std::getenv("CODEHEAP_SOAK_SECONDS");
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg.starts_with("--seconds=")) {
      text = argv[i] + std::strlen("--seconds=");
    } else {
      g_log->error("unknown argument '{}'; usage: soak [--seconds=N]", arg);
      return -1;
    }
  }
  if (text == nullptr) return 5;
  char* end = nullptr;
  const double seconds = std::strtod(text, &end);
  if (end == text || *end != '\0' || !(seconds > 0)) {
    g_log->error("bad duration '{}': expected a positive number of seconds", text);
    return -1;
  }
  return seconds;
}

struct Samples {
  size_t first_half_peak = 0;  // committed code bytes
  size_t second_half_peak = 0;
  size_t count = 0;
  size_t writable_executable = 0;  // W+X mappings seen, all samples together
};

// Samples the code arena's committed bytes and the W+X mappings until g_stop.
Samples monitor(Runtime& runtime, Clock::time_point start, Clock::duration half) {
  Samples samples;
  while (!g_stop) {
    const size_t committed =
        runtime.heap().stats().arenas[static_cast<int>(Arena::kCode)].committed_bytes;
    size_t& peak = Clock::now() - start < half ? samples.first_half_peak : samples.second_half_peak;
    peak = std::max(peak, committed);
    for (const std::string& line : writable_executable_mappings()) {
      fail("writable and executable mapping: {}", line);
      ++samples.writable_executable;
    }
    ++samples.count;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return samples;
}

int run(int argc, char** argv) {
  g_log = logger("soak");
  if (std::getenv("SPDLOG_LEVEL") == nullptr) g_log->set_level(spdlog::level::info);
  const double seconds = duration_seconds(argc, argv);
  if (seconds < 0) return 2;

  RuntimeOptions options;
  options.heap.code_bytes = kCodeArena;
  options.heap.read_only_bytes = kOtherArenas;
  options.heap.data_bytes = kOtherArenas;
  options.heap.retain_free_bytes = kCodeArena;  // never return code pages: see kCodeArena
  options.engine.opt_level = llvm::CodeGenOptLevel::None;  // compile fast: churn
  auto created = Runtime::create(options);
  if (!created) {
    g_log->error("cannot create the runtime: {}", llvm::toString(created.takeError()));
    return 1;
  }
  std::unique_ptr<Runtime> runtime = std::move(*created);
  g_runtime = runtime.get();
  if (!ok(runtime->define_host_symbol("soak_park", reinterpret_cast<void*>(&soak_park)),
          "define soak_park") ||
      !redefine_hold()) {
    return 1;
  }
  for (MutatorRoots& roots : g_roots) {
    roots.ring = static_cast<Closure**>(GC_MALLOC(kRing * sizeof(Closure*)));
    if (roots.ring == nullptr) {
      g_log->error("GC_MALLOC failed");
      return 1;
    }
  }
  // This thread only watches (and reads no GC object): the collections need not stop it.
  if (!ok(runtime->unregister_current_thread(), "unregister the main thread")) return 1;

  g_log->info("soak: {} mutators and a compile thread for {} s", kMutators, seconds);
  const auto start = Clock::now();
  const auto duration =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  std::vector<std::thread> threads;
  for (int t = 0; t < kMutators; ++t) threads.emplace_back(mutator, std::ref(*runtime), t);
  threads.emplace_back(compile_thread, std::ref(*runtime));
  std::thread stopper([&] {
    std::this_thread::sleep_until(start + duration);
    g_stop = true;
  });
  const Samples samples = monitor(*runtime, start, duration / 2);
  stopper.join();
  for (std::thread& thread : threads) thread.join();

  // The end state, from a registered thread (a collection needs one).
  std::thread closing([&] {
    Registered registered(*runtime);
    if (!registered) return;
    for (MutatorRoots& roots : g_roots) {
      for (int r = 0; r < kRing; ++r) {
        if (roots.ring[r] != nullptr) check_closure(roots.ring[r], r, "kept closure at the end");
      }
    }
    for (int i = 0; i < 3; ++i) runtime->collect();
  });
  closing.join();
  const GcCounters counters = runtime->counters();
  const HeapStats stats = runtime->heap().stats();
  for (const ArenaStats& arena : stats.arenas) {
    if (arena.used_bytes + arena.quarantined_bytes + arena.free_bytes != arena.reserved_bytes) {
      fail("arena {}: used {} + quarantined {} + free {} != reserved {}", arena.name,
           arena.used_bytes, arena.quarantined_bytes, arena.free_bytes, arena.reserved_bytes);
    }
  }
  // Every module of the engine is a live LLVM-tier code object or the body of a function:
  // answer<t> for each mutator that defined one, and hold.
  const size_t bodies = g_redefinitions > 0 ? 1 + kMutators : 1;
  if (runtime->engine().live_modules() != counters.tier(Tier::kOptimized).live() + bodies) {
    fail("{} engine modules, {} live LLVM-tier code objects and {} function bodies",
         runtime->engine().live_modules(), counters.tier(Tier::kOptimized).live(), bodies);
  }
  if (counters.retire_failures != 0)
    fail("{} units could not be retired", counters.retire_failures);
  if (g_units_gone == 0 || g_units_gone > g_adoptions) {
    fail("on_gone ran for {} of {} adopted units", g_units_gone.load(), g_adoptions.load());
  }
  if (samples.second_half_peak > samples.first_half_peak) {
    fail("peak committed code bytes grew: {} in the first half, {} in the second",
         samples.first_half_peak, samples.second_half_peak);
  }
  if (g_iterations == 0 || g_tier_ups == 0 || g_parks == 0 || samples.second_half_peak == 0) {
    fail(
        "the soak did too little to prove anything: {} iterations, {} tier-ups, {} parks, "
        "{} peak committed bytes in the second half",
        g_iterations.load(), g_tier_ups.load(), g_parks.load(), samples.second_half_peak);
  }

  g_log->info(
      "soak: {:.1f} s, {} mutator iterations: {} modules compiled, {} units adopted, {} "
      "redefinitions, {} parks in old versions ({} versions of hold), {} tier-ups ({} calls of "
      "installed code)",
      std::chrono::duration<double>(Clock::now() - start).count(), g_iterations.load(),
      g_compiles.load(), g_adoptions.load(), g_redefinitions.load(), g_parks.load(),
      g_hold_versions.load(), g_tier_ups.load(), g_installed_calls.load());
  g_log->info(
      "soak: {} collections ({} explicit from mutators, {} for a full heap), {} reclaim passes, "
      "{} blocks kept referenced, {} threads timed out, {} code objects finalized of {}, {} "
      "adopted units gone",
      counters.collections, g_explicit_collections.load(), counters.full_heap_collections,
      counters.reclaim_passes, counters.blocks_kept_referenced, counters.threads_timed_out,
      counters.code_objects_finalized, counters.code_objects_created, g_units_gone.load());
  g_log->info(
      "soak: peak committed code bytes {} (first half) and {} (second half) of a {} byte "
      "arena; {} samples of /proc/self/maps, {} W+X mappings",
      samples.first_half_peak, samples.second_half_peak, kCodeArena, samples.count,
      samples.writable_executable);
  runtime.reset();
  if (g_failures != 0) {
    g_log->error("soak FAILED: {} failed checks", g_failures.load());
    return 1;
  }
  g_log->info("soak passed");
  return 0;
}

}  // namespace
}  // namespace codeheap::gc

int main(int argc, char** argv) { return codeheap::gc::run(argc, argv); }
