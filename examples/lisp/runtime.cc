#include "examples/lisp/runtime.h"

#include <pthread.h>

#include <optional>

#include <spdlog/fmt/fmt.h>

#include "codeheap/log.h"
#include "examples/lisp/abi.h"
#include "examples/lisp/ast.h"
#include "examples/lisp/baseline.h"
#include "examples/lisp/boehm.h"
#include "examples/lisp/compiler.h"
#include "examples/lisp/error.h"
#include "examples/lisp/primitives.h"
#include "examples/lisp/tiers.h"
#include "jit/stencil_emitter.h"

namespace lisp {
namespace {

Runtime* current_runtime = nullptr;
bool runtime_created = false;

// The lowest stack address at which compiled code may enter a procedure (abi::kStackLimit);
// compiled code reads it through the GOT.
uintptr_t stack_limit = 0;

const std::shared_ptr<spdlog::logger>& log() {
  static const auto logger = codeheap::logger("lisp");
  return logger;
}

std::string plural(int64_t n, const char* noun) {
  return fmt::format("{} {}{}", n, noun, n == 1 ? "" : "s");
}

// --- Helpers called by compiled code (abi.h) ---

Value helper_cons(Value head, Value tail) { return cons(head, tail); }

Value helper_make_box(Value value) { return make_box(value); }

Closure* helper_make_closure(Template* templ, int64_t slots) {
  return make_closure(templ, static_cast<size_t>(slots));
}

Value* helper_make_args(int64_t count) { return make_value_array(static_cast<size_t>(count)); }

Value helper_rest_list(int64_t argc, Value a0, Value a1, Value a2, const Value* rest,
                       int64_t fixed) {
  const Value registers[kRegisterArgs] = {a0, a1, a2};
  Value list = kNil;
  for (int64_t i = argc - 1; i >= fixed; --i) {
    list = cons(i < kRegisterArgs ? registers[i] : rest[i - kRegisterArgs], list);
  }
  return list;
}

int64_t helper_spread_args(Value list, Value* out) {
  int64_t argc = list_length(list);
  if (argc < 0) throw Error("apply: the last argument must be a list, got " + write_short(list));
  Value* rest = argc > kRegisterArgs ? make_value_array(argc - kRegisterArgs) : nullptr;
  for (int64_t i = 0; i < argc; ++i, list = cdr(list)) {
    (i < kRegisterArgs ? out[i] : rest[i - kRegisterArgs]) = car(list);
  }
  out[kRegisterArgs] = reinterpret_cast<Value>(rest);
  return argc;
}

void helper_set_global(Symbol* symbol, Value value) {
  Runtime::current().set_global(to_value(symbol), value);
}

[[noreturn]] void error_type(int64_t op, Value a, Value b);

// A comparison of other than two operands, as codegen.cc's compare() open-codes it: every
// adjacent pair checked, left to right, then the conjunction.
Value helper_compare(int64_t op, int64_t argc, const Value* argv) {
  bool all = true;
  for (int64_t i = 0; i < argc; ++i) {
    Value a = argv[i], b = i + 1 < argc ? argv[i + 1] : a;
    if ((a & b & 1) == 0) error_type(op, a, b);
    if (i + 1 == argc) break;
    auto x = static_cast<int64_t>(a), y = static_cast<int64_t>(b);
    switch (static_cast<OpenCode>(op)) {
      case OpenCode::kLess:
        all = all && x < y;
        break;
      case OpenCode::kLessEqual:
        all = all && x <= y;
        break;
      case OpenCode::kGreater:
        all = all && x > y;
        break;
      case OpenCode::kGreaterEqual:
        all = all && x >= y;
        break;
      default:
        all = all && x == y;
        break;
    }
  }
  return make_bool(all);
}

// Baseline code calls this when a lambda's call budget runs out.
void helper_tier_up(Template* templ) {
  if (TierUp* tier_up = Runtime::current().tier_up()) tier_up->request(templ);
}

[[noreturn]] void error_unbound(Symbol* symbol) {
  throw Error(fmt::format("unbound variable: {}", symbol_name(to_value(symbol))));
}

[[noreturn]] void error_not_procedure(Value value) {
  throw Error("not a procedure: " + write_short(value));
}

[[noreturn]] void error_global_not_procedure(Symbol* symbol, Value value) {
  throw Error(fmt::format("not a procedure: {} (the value of {})", write_short(value),
                          symbol_name(to_value(symbol))));
}

[[noreturn]] void error_arity(Closure* closure, int64_t argc, int64_t required, int64_t variadic) {
  Value symbol = closure->templ->name;
  std::string name = symbol == kFalse ? "anonymous procedure" : std::string(symbol_name(symbol));
  throw Error(fmt::format("{}: expected {}{}, got {}", name, variadic ? "at least " : "",
                          plural(required, "argument"), argc));
}

[[noreturn]] void error_type(int64_t op, Value a, Value b) {
  auto code = static_cast<OpenCode>(op);
  const char* name = open_code_name(code);
  if (code == OpenCode::kCar || code == OpenCode::kCdr) {
    throw Error(fmt::format("{}: expected a pair, got {}", name, write_short(a)));
  }
  throw Error(
      fmt::format("{}: expected a number, got {}", name, write_short(is_fixnum(a) ? b : a)));
}

[[noreturn]] void error_overflow(int64_t op, Value a, Value b) {
  auto code = static_cast<OpenCode>(op);
  // The open-coded forms of (- x), (+ x) and (* x) start from the identity element.
  throw Error(fmt::format("{}: fixnum overflow in ({} {} {}) (fixnums are {} .. {})",
                          open_code_name(code), open_code_name(code), fixnum_value(a),
                          fixnum_value(b), kFixnumMin, kFixnumMax));
}

[[noreturn]] void error_stack() {
  throw Error(
      "recursion too deep: the stack limit was reached (a non-tail recursion nests "
      "too deeply)");
}

// Runs `attempt`, which allocates in the code heap itself (a baseline unit, an entry cell: not
// through gc::Runtime::compile, which makes room on its own), with the runtime's collect and
// retry when the heap is full (gc::Runtime::with_code_space); throws when it still fails.
template <typename T, typename F>
T with_code_space(Runtime& runtime, const std::string& what, F attempt) {
  std::optional<T> value;
  llvm::Error err = runtime.gc().with_code_space(what, [&]() -> llvm::Error {
    llvm::Expected<T> result = attempt();
    if (!result) return result.takeError();
    value.emplace(std::move(*result));
    return llvm::Error::success();
  });
  if (err) throw Error(what + ": " + llvm::toString(std::move(err)));
  return std::move(*value);
}

}  // namespace

Runtime::Runtime(RuntimeOptions options, std::unique_ptr<codeheap::gc::Runtime> gc)
    : options_(std::move(options)), gc_(std::move(gc)) {}

std::unique_ptr<Runtime> Runtime::create(RuntimeOptions options) {
  // Globals live in the symbols, which outlive a runtime, and their flags name entry cells of
  // this runtime's engine: a second runtime would inherit stale globals.
  if (runtime_created) throw Error("a process can create only one Lisp runtime");
  runtime_created = true;
  auto gc = codeheap::gc::Runtime::create(options.gc);
  if (!gc) throw Error("cannot create the code heap runtime: " + llvm::toString(gc.takeError()));
  std::unique_ptr<Runtime> runtime(new Runtime(std::move(options), std::move(*gc)));
  auto helpers = codeheap::jit::HelperTable::create(runtime->gc_->heap());
  if (!helpers)
    throw Error("cannot create the helper table: " + llvm::toString(helpers.takeError()));
  runtime->helpers_ = std::move(*helpers);
  current_runtime = runtime.get();
  runtime->register_helpers();
  install_primitives(*runtime);
  runtime->baseline_ = std::make_unique<BaselineTier>(runtime->gc_->heap(), *runtime->helpers_);
  runtime->attach_current_thread();
  if (runtime->options_.tier_up > 0) {
    runtime->tier_up_ = std::make_unique<TierUp>(*runtime, runtime->options_.tier_up_queue);
  }
  return runtime;
}

Runtime::~Runtime() {
  tier_up_.reset();  // before the code heap goes
  current_runtime = nullptr;
}

std::optional<int64_t> parse_tier_up(std::string_view text) {
  if (text == "never") return kTierUpNever;
  if (text.empty() || text.size() > 18) return std::nullopt;
  int64_t n = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + (c - '0');
  }
  return n;
}

Runtime& Runtime::current() { return *current_runtime; }

void Runtime::register_helpers() {
  const std::pair<const char*, void*> helpers[] = {
      {abi::kCons, reinterpret_cast<void*>(&helper_cons)},
      {abi::kMakeBox, reinterpret_cast<void*>(&helper_make_box)},
      {abi::kMakeClosure, reinterpret_cast<void*>(&helper_make_closure)},
      {abi::kMakeArgs, reinterpret_cast<void*>(&helper_make_args)},
      {abi::kRestList, reinterpret_cast<void*>(&helper_rest_list)},
      {abi::kSpreadArgs, reinterpret_cast<void*>(&helper_spread_args)},
      {abi::kSetGlobal, reinterpret_cast<void*>(&helper_set_global)},
      {abi::kCompare, reinterpret_cast<void*>(&helper_compare)},
      {abi::kTierUp, reinterpret_cast<void*>(&helper_tier_up)},
      {abi::kStackLimit, reinterpret_cast<void*>(&stack_limit)},
      {abi::kErrorUnbound, reinterpret_cast<void*>(&error_unbound)},
      {abi::kErrorNotProcedure, reinterpret_cast<void*>(&error_not_procedure)},
      {abi::kErrorGlobalNotProcedure, reinterpret_cast<void*>(&error_global_not_procedure)},
      {abi::kErrorArity, reinterpret_cast<void*>(&error_arity)},
      {abi::kErrorType, reinterpret_cast<void*>(&error_type)},
      {abi::kErrorOverflow, reinterpret_cast<void*>(&error_overflow)},
      {abi::kErrorStack, reinterpret_cast<void*>(&error_stack)},
  };
  for (const auto& [name, address] : helpers) {
    llvm::Error err = gc_->define_host_symbol(name, address);
    if (!err) err = helpers_->define(name, address);
    if (err) {
      throw Error(
          fmt::format("cannot define host symbol {}: {}", name, llvm::toString(std::move(err))));
    }
  }
}

void Runtime::define_primitive_symbol(const std::string& name, void* function) {
  llvm::Error err = gc_->define_host_symbol(name, function);
  if (!err) err = helpers_->define(name, function);
  if (err) {
    throw Error(
        fmt::format("cannot define primitive {}: {}", name, llvm::toString(std::move(err))));
  }
}

void Runtime::attach_current_thread() {
  if (pthread_equal(pthread_self(), creator_) == 0) {
    if (llvm::Error err = gc_->register_current_thread()) {
      throw Error("cannot register the thread: " + llvm::toString(std::move(err)));
    }
  }
  pthread_attr_t attr;
  void* low = nullptr;
  size_t size = 0;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    pthread_attr_getstack(&attr, &low, &size);
    pthread_attr_destroy(&attr);
  }
  // Leave room below the limit for the host code a Lisp procedure calls into (primitives,
  // and the compiler itself when it runs eval).
  const size_t margin = std::min<size_t>(size / 4, size_t{256} << 10);
  stack_limit = reinterpret_cast<uintptr_t>(low) + margin;
  log()->debug("stack [{}, +{} KiB), limit {:#x}", low, size >> 10, stack_limit);
}

void Runtime::detach_current_thread() {
  if (pthread_equal(pthread_self(), creator_) != 0) return;
  if (llvm::Error err = gc_->unregister_current_thread()) {
    log()->warn("unregistering the thread: {}", llvm::toString(std::move(err)));
  }
}

Value Runtime::eval(Value form) {
  static const Value begin = intern("begin"), define = intern("define");
  if (is_pair(form) && car(form) == begin) {
    if (list_length(form) < 0) throw Error("bad syntax in (begin ...): not a proper list");
    Value result = kUnspecified;
    for (Value rest = cdr(form); rest != kNil; rest = cdr(rest)) result = eval(car(rest));
    return result;
  }
  if (is_pair(form) && car(form) == define) return define_toplevel(form);
  Closure* thunk = compile_thunk(*this, form, fmt::format("lisp:expr {}", ++units_));
  return apply(to_value(thunk), {});
}

Value Runtime::define_toplevel(Value form) {
  static const Value lambda = intern("lambda");
  Definition d = parse_definition(form);
  std::string unit = fmt::format("lisp:define {}", symbol_name(d.name));
  Value value = kUnspecified;
  if (!d.has_value) {
    value = kUnspecified;
  } else if (is_pair(d.value_form) && car(d.value_form) == lambda) {
    // A procedure definition compiles the lambda itself, not a thunk that would make it.
    value = to_value(compile_lambda(*this, d.value_form, d.name, unit));
  } else {
    value = apply(to_value(compile_thunk(*this, d.value_form, unit)), {});
  }
  define_global(d.name, value);
  return kUnspecified;
}

Value Runtime::apply(Value procedure, std::span<const Value> args) {
  if (!is_closure(procedure)) throw Error("not a procedure: " + write_short(procedure));
  Value registers[kRegisterArgs] = {kUnspecified, kUnspecified, kUnspecified};
  Value* rest =
      args.size() > kRegisterArgs ? make_value_array(args.size() - kRegisterArgs) : nullptr;
  for (size_t i = 0; i < args.size(); ++i) {
    (i < kRegisterArgs ? registers[i] : rest[i - kRegisterArgs]) = args[i];
  }
  Closure* closure = as<Closure>(procedure);
  return closure->templ->entry(closure, static_cast<int64_t>(args.size()), registers[0],
                               registers[1], registers[2], rest);
}

void Runtime::define_global(Value symbol, Value value) {
  Symbol* s = as<Symbol>(symbol);
  // The cell first: if that fails the global keeps its old value.
  if (is_closure(value) && !(s->flags & kGlobalHasCell)) make_entry_cell(symbol);
  s->value = value;
  s->flags &= ~kGlobalPrimitive;
}

void Runtime::set_global(Value symbol, Value value) {
  Symbol* s = as<Symbol>(symbol);
  if (s->value == kUnbound) {
    throw Error(fmt::format("set!: unbound variable: {}", symbol_name(symbol)));
  }
  s->value = value;
  s->flags &= ~kGlobalPrimitive;
}

void Runtime::make_entry_cell(Value symbol) {
  std::string what = "define " + std::string(symbol_name(symbol));
  with_code_space<uintptr_t>(*this, what, [&] { return baseline_->make_cell(symbol); });
  as<Symbol>(symbol)->flags |= kGlobalHasCell;
}

void Runtime::before_compile() {
  safepoint();
  uint64_t created = gc_->counters().code_objects_created;
  if (created - compiled_at_last_collection_ >= options_.compiles_per_collection) collect();
}

codeheap::gc::Runtime::Compiled Runtime::link(
    const std::function<llvm::orc::ThreadSafeModule()>& module, const std::string& name,
    llvm::ArrayRef<void*> literals) {
  before_compile();
  // A full code heap: compile collects and links again the object code it kept, so `module`
  // is called once.
  auto compiled = gc_->compile(module(), name, literals, codeheap::gc::Tier::kOptimized);
  if (!compiled) throw Error("compile " + name + ": " + llvm::toString(compiled.takeError()));
  return std::move(*compiled);
}

BaselineUnit Runtime::emit_baseline(Unit& unit, const std::vector<Template*>& templates,
                                    const std::string& name) {
  before_compile();
  return with_code_space<BaselineUnit>(*this, "compile " + name,
                                       [&] { return baseline_->compile(unit, templates, name); });
}

codeheap::gc::CodeObject* Runtime::adopt_baseline(codeheap::jit::EmittedUnit unit,
                                                  const std::string& name,
                                                  llvm::ArrayRef<void*> literals,
                                                  uint64_t compile_ns) {
  auto code = gc_->adopt(unit.owner, unit.code_size, unit.on_gone, name, literals,
                         codeheap::gc::Tier::kBaseline, compile_ns);
  if (!code) {
    llvm::consumeError(codeheap::jit::retire_unit(gc_->heap(), unit));
    throw Error("compile " + name + ": " + llvm::toString(code.takeError()));
  }
  return *code;
}

void Runtime::safepoint() { gc_->safepoint(); }

void Runtime::collect() {
  codeheap::gc::CollectReport report = gc_->collect();
  compiled_at_last_collection_ = gc_->counters().code_objects_created;
  log()->debug("collect: {} code objects finalized, {} modules retired, {} blocks reclaimed",
               report.finalized, report.modules_retired, report.reclaim.reclaimed_blocks);
}

}  // namespace lisp
