// Which tier compiles what, and the tier-up (docs/tiers.md).
//
// Every form is first compiled by the baseline tier (unless the threshold is 0: LLVM at once).
// A baseline entry counts calls down from the threshold in its lambda's Template; at zero it
// calls lisp_tier_up, which analyzes the lambda's top-level form again (on the Lisp thread:
// the analyzer interns symbols) and queues the AST for the compile thread. That thread runs the
// LLVM tier on the one lambda, links it, and installs it with a compare-and-swap of the
// Template's entry against the baseline entry it replaces: every closure of the lambda then
// runs the new code, and the baseline code object, no longer referenced, is collected, retired
// to quarantine and reclaimed once no frame is inside it. A result that lost a race (the
// global it was defined as now holds another procedure) is dropped unused.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include <spdlog/fmt/fmt.h>

#include "codeheap/log.h"
#include "examples/lisp/ast.h"
#include "examples/lisp/baseline.h"
#include "examples/lisp/compiler.h"
#include "examples/lisp/error.h"
#include "examples/lisp/reader.h"
#include "examples/lisp/tiers.h"
#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"

namespace lisp {
namespace {

const std::shared_ptr<spdlog::logger>& log() {
  static const auto logger = codeheap::logger("lisp");
  return logger;
}

// One Template per lambda of `unit`, rooted by the unit's literal pool.
std::vector<Template*> make_templates(Unit& unit, Value source, uint8_t kind, int64_t budget) {
  const size_t n = unit.lambdas.size();
  auto** siblings = static_cast<Template**>(GC_MALLOC(n * sizeof(Template*)));
  if (siblings == nullptr) throw Error("out of memory");
  std::vector<Template*> templates;
  templates.reserve(n);
  for (const Lambda& lambda : unit.lambdas) {
    Template* templ = make_template(lambda.name, budget);
    if (lambda.free.empty()) templ->constant = make_closure(templ, 0);
    templ->source = source;
    templ->siblings = siblings;
    templ->index = static_cast<uint32_t>(lambda.index);
    templ->source_kind = kind;
    siblings[lambda.index] = templ;
    templates.push_back(templ);
    unit.add_literal(to_value(templ));
  }
  return templates;
}

std::vector<int> all_lambdas(const Unit& unit) {
  std::vector<int> indices;
  for (const Lambda& lambda : unit.lambdas) indices.push_back(lambda.index);
  return indices;
}

void compile_with_llvm(Runtime& runtime, Unit& unit, const std::vector<Template*>& templates,
                       const std::string& name) {
  auto compiled =
      runtime.link([&] { return emit_llvm(runtime, unit, templates, all_lambdas(unit), name); },
                   name, unit.literals);
  for (const Lambda& lambda : unit.lambdas) {
    Template* templ = templates[lambda.index];
    templ->code = compiled.code;
    templ->entry = reinterpret_cast<Entry>(compiled.definitions.lookup(function_name(lambda)));
    templ->tier = Tier::kOptimized;
  }
}

Closure* compile_unit(Runtime& runtime, Unit& unit, Value source, uint8_t kind,
                      const std::string& name) {
  const int64_t threshold = runtime.tier_up_threshold();
  std::vector<Template*> templates =
      make_templates(unit, source, kind, threshold < 0 ? INT64_MAX : threshold);
  if (threshold == 0) {
    compile_with_llvm(runtime, unit, templates, name);
  } else {
    std::optional<BaselineUnit> emitted;
    try {
      emitted = runtime.emit_baseline(unit, templates, name);
    } catch (const BaselineRefused& refused) {
      log()->debug("{}: {}; compiling it with LLVM", name, refused.what());
      compile_with_llvm(runtime, unit, templates, name);
      return templates.front()->constant;
    }
    codeheap::gc::CodeObject* code =
        runtime.adopt_baseline(std::move(emitted->unit), name, unit.literals, emitted->compile_ns);
    for (const Lambda& lambda : unit.lambdas) {
      Template* templ = templates[lambda.index];
      templ->code = code;
      templ->entry = reinterpret_cast<Entry>(emitted->entries[lambda.index]);
      templ->tier = Tier::kBaseline;
    }
  }
  return templates.front()->constant;
}

}  // namespace

Closure* compile_lambda(Runtime& runtime, Value lambda_form, Value name,
                        const std::string& unit_name) {
  Unit unit;
  analyze_lambda(unit, lambda_form, name);
  return compile_unit(runtime, unit, lambda_form, kSourceLambda, unit_name);
}

Closure* compile_thunk(Runtime& runtime, Value expr, const std::string& unit_name) {
  Unit unit;
  analyze_thunk(unit, expr);
  return compile_unit(runtime, unit, expr, kSourceThunk, unit_name);
}

// --- The compile thread ---

namespace {

// The first LLVM compilation of a process costs ~50 ms more than the next ones (static
// initialization, the first touch of libLLVM's passes and code generator). Paid here, on the
// compile thread at startup, it overlaps the program instead of delaying its first tier-up,
// during which the lambda would run baseline code. A lambda like the hot ones (a branch, fixnum
// arithmetic, a call of a global) goes through the LLVM tier's own IR passes and code
// generator, to an object in memory: compiling a one-instruction function instead left the
// first real tier-up ~30 ms slower than the next. Nothing reaches the code heap.
constexpr std::string_view kWarmUpForm = "(lambda (n) (if (< n 2) n (lisp:warm-up (- n 1))))";

void warm_up(Runtime& runtime, Unit& unit) {
  llvm::orc::ThreadSafeModule module = emit_llvm(runtime, unit, {nullptr}, {0}, "lisp:warm-up");
  if (llvm::Error err = runtime.gc().warm_up(std::move(module))) {
    log()->debug("warm-up compile: {}", llvm::toString(std::move(err)));
  }
}

}  // namespace

// A queued tier-up holds its Template weakly (a Boehm disappearing link, cleared when the
// template becomes unreachable), so a lambda dropped while its request waits is collected and
// its job skipped. The AST's constants are rooted by the unit; none of them reaches a template.
struct TierUp::Job {
  std::unique_ptr<Unit> unit;
  GC_hidden_pointer templ = 0;
  Entry baseline = nullptr;  // the entry the LLVM code replaces
  std::string name;

  explicit Job(Template* t) : templ(GC_HIDE_POINTER(t)) {
    GC_general_register_disappearing_link(reinterpret_cast<void**>(&templ), t);
  }
  ~Job() { GC_unregister_disappearing_link(reinterpret_cast<void**>(&templ)); }
  // The template, or null once it was collected. The allocation lock orders the read with
  // the collector clearing the link; from then on the pointer is on the caller's stack.
  Template* target() {
    return static_cast<Template*>(GC_call_with_alloc_lock(
        [](void* self) -> void* {
          GC_hidden_pointer hidden = static_cast<Job*>(self)->templ;
          return hidden == 0 ? nullptr : GC_REVEAL_POINTER(hidden);
        },
        this));
  }
};

TierUp::TierUp(Runtime& runtime, size_t capacity) : runtime_(runtime), capacity_(capacity) {
  // Analyzed here, on the Lisp thread: the analyzer interns symbols.
  warm_up_ = std::make_unique<Unit>();
  analyze_lambda(*warm_up_, Reader(kWarmUpForm, "warm-up").next().value(), kFalse);
  thread_ = std::thread([this] { run(); });
}

TierUp::~TierUp() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    queue_.clear();  // pending work is dropped
  }
  wake_.notify_all();
  thread_.join();
}

void TierUp::request(Template* templ) {
  if (templ->tier_up_requested) return;
  templ->tier_up_requested = 1;
  templ->budget = INT64_MAX;  // no more requests from this lambda's entry
  {
    std::lock_guard lock(mutex_);
    if (queue_.size() >= capacity_) {
      log()->debug("tier-up queue full; a lambda of {} stays in the baseline tier",
                   write_short(templ->source));
      return;
    }
  }
  auto job = std::make_unique<Job>(templ);
  job->unit = std::make_unique<Unit>();
  job->baseline = templ->entry;
  const Template* first = templ->siblings[0];
  try {
    if (templ->source_kind == kSourceLambda) {
      analyze_lambda(*job->unit, templ->source, first->name);
    } else {
      analyze_thunk(*job->unit, templ->source);
    }
  } catch (const std::exception& e) {
    log()->warn("tier-up: analyzing the form again failed: {}", e.what());
    return;
  }
  Unit& unit = *job->unit;
  if (unit.lambdas.size() <= templ->index) {
    log()->warn("tier-up: the form no longer has lambda {}", templ->index);
    return;
  }
  job->name = fmt::format("lisp:tier-up {}", function_name(unit.lambdas[templ->index]));
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    queue_.push_back(std::move(job));
  }
  wake_.notify_all();
  log()->debug("tier-up of {} queued", write_short(templ->source));
}

void TierUp::hold(bool on) {
  {
    std::lock_guard lock(mutex_);
    held_ = on;
  }
  wake_.notify_all();
}

void TierUp::wait_idle() {
  std::unique_lock lock(mutex_);
  idle_.wait(lock, [&] { return stopping_ || (queue_.empty() && !busy_) || held_; });
}

void TierUp::run() {
  if (llvm::Error err = runtime_.gc().register_current_thread()) {
    log()->warn("tier-up thread: {}; no tier-ups", llvm::toString(std::move(err)));
    std::lock_guard lock(mutex_);
    stopping_ = true;
    idle_.notify_all();
    return;
  }
  try {
    warm_up(runtime_, *warm_up_);
  } catch (const std::exception& e) {
    log()->warn("tier-up thread: warming LLVM up failed: {}", e.what());
  }
  warm_up_.reset();
  log()->debug("tier-up thread: LLVM warmed up");
  for (;;) {
    // Waiting, the thread is "blocked" for Boehm: collections scan its stack as it was when it
    // began to wait instead of stopping it with a signal, which a program that allocates
    // briskly would otherwise pay for at every collection. Nothing here touches the GC heap.
    struct Wait {
      TierUp* self;
      std::unique_ptr<Job> job;
    } wait{this, nullptr};
    GC_do_blocking(
        [](void* arg) -> void* {
          auto& wait = *static_cast<Wait*>(arg);
          TierUp& self = *wait.self;
          std::unique_lock lock(self.mutex_);
          self.idle_.notify_all();
          self.wake_.wait(lock,
                          [&] { return self.stopping_ || (!self.queue_.empty() && !self.held_); });
          if (self.stopping_) return nullptr;
          wait.job = std::move(self.queue_.front());
          self.queue_.pop_front();
          self.busy_ = true;
          return nullptr;
        },
        &wait);
    std::unique_ptr<Job> job = std::move(wait.job);
    if (job == nullptr) break;
    try {
      compile(*job);
    } catch (const std::exception& e) {  // e.g. an internal compiler error: stay baseline
      log()->warn("tier-up of {} failed, it stays in the baseline tier: {}", job->name, e.what());
    }
    job.reset();
    std::lock_guard lock(mutex_);
    busy_ = false;
  }
  if (llvm::Error err = runtime_.gc().unregister_current_thread()) {
    log()->warn("tier-up thread: {}", llvm::toString(std::move(err)));
  }
}

void TierUp::compile(Job& job) {
  Template* templ = job.target();
  if (templ == nullptr) return;  // dropped while it waited
  Unit& unit = *job.unit;
  std::vector<Template*> siblings(templ->siblings, templ->siblings + unit.lambdas.size());
  // The code embeds the other lambdas' templates (to make their closures): the pool roots them.
  for (Template* sibling : siblings) {
    unit.add_literal(to_value(sibling));
    if (sibling->constant != nullptr) unit.add_literal(to_value(sibling->constant));
  }
  const Lambda& lambda = unit.lambdas[templ->index];
  const auto start = std::chrono::steady_clock::now();
  auto compiled =
      runtime_.gc().compile(emit_llvm(runtime_, unit, siblings, {int(templ->index)}, job.name),
                            job.name, unit.literals, codeheap::gc::Tier::kOptimized);
  if (!compiled) {
    log()->warn("tier-up of {} failed, it stays in the baseline tier: {}", job.name,
                llvm::toString(compiled.takeError()));
    return;
  }
  auto entry = reinterpret_cast<Entry>(compiled->definitions.lookup(function_name(lambda)));
  const auto took = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::steady_clock::now() - start);
  // A global defined as this lambda and redefined meanwhile: the redefinition wins.
  bool stale = false;
  if (templ->source_kind == kSourceLambda && templ->index == 0 && is_symbol(templ->name)) {
    Value now = as<Symbol>(templ->name)->value;
    stale = !(is_closure(now) && as<Closure>(now)->templ == templ);
  }
  Entry expected = job.baseline;
  bool installed =
      !stale && std::atomic_ref<Entry>(templ->entry)
                    .compare_exchange_strong(expected, entry, std::memory_order_release);
  if (installed) {
    // The baseline code object is now unreferenced (unless a sibling still runs there).
    std::atomic_ref<codeheap::gc::CodeObject*>(templ->code)
        .store(compiled->code, std::memory_order_release);
    templ->tier = Tier::kOptimized;
  }
  runtime_.gc().note_tier_up(installed);
  log()->debug("tier-up of {}: {} ({} us to compile)", job.name,
               installed ? "installed" : "dropped (stale)", took.count());
}

}  // namespace lisp
