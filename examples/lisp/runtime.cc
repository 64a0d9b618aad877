#include "examples/lisp/runtime.h"

#include <pthread.h>

#include <spdlog/fmt/fmt.h>

#include "codeheap/log.h"
#include "examples/lisp/abi.h"
#include "examples/lisp/boehm.h"
#include "examples/lisp/compiler.h"
#include "examples/lisp/error.h"
#include "examples/lisp/primitives.h"
#include "jit/error.h"

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

Closure* helper_make_closure(const Closure* templ, int64_t slots) {
  return make_closure(templ->code, templ->entry, templ->name, static_cast<size_t>(slots));
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
  std::string name =
      closure->name == kFalse ? "anonymous procedure" : std::string(symbol_name(closure->name));
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

// Runs `attempt`; when the code heap is full, collects once and tries again.
template <typename T, typename F>
T with_code_space(Runtime& runtime, const std::string& what, F attempt) {
  for (int tries = 0;; ++tries) {
    llvm::Expected<T> result = attempt();
    if (result) return *result;
    bool full = false;
    llvm::Error rest = llvm::handleErrors(
        result.takeError(), [&](const codeheap::jit::HeapError& e) -> llvm::Error {
          if (e.code() != codeheap::ErrorCode::kOutOfMemory) {
            return llvm::make_error<codeheap::jit::HeapError>(e.error());
          }
          full = true;
          return llvm::Error::success();
        });
    std::string message = rest ? llvm::toString(std::move(rest)) : "the code heap is full";
    if (!full || tries > 0) throw Error(what + ": " + message);
    log()->info("{}: the code heap is full; collecting and retrying", what);
    runtime.collect();
  }
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
  auto target = codeheap::jit::targetMachineBuilder(options.gc.engine);
  if (!target) throw Error("no JIT target: " + llvm::toString(target.takeError()));
  auto layout = target->getDefaultDataLayoutForTarget();
  if (!layout) throw Error("no JIT data layout: " + llvm::toString(layout.takeError()));
  std::unique_ptr<Runtime> runtime(new Runtime(std::move(options), std::move(*gc)));
  runtime->triple_ = target->getTargetTriple().str();
  runtime->data_layout_ = layout->getStringRepresentation();
  current_runtime = runtime.get();
  runtime->register_helpers();
  install_primitives(*runtime);
  runtime->attach_current_thread();
  return runtime;
}

Runtime::~Runtime() { current_runtime = nullptr; }

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
    if (llvm::Error err = gc_->define_host_symbol(name, address)) {
      throw Error(
          fmt::format("cannot define host symbol {}: {}", name, llvm::toString(std::move(err))));
    }
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
  return closure->entry(closure, static_cast<int64_t>(args.size()), registers[0], registers[1],
                        registers[2], rest);
}

void Runtime::define_global(Value symbol, Value value) {
  Symbol* s = as<Symbol>(symbol);
  // The cell first: if that fails the global keeps its old value and stays consistent.
  if (is_closure(value)) {
    point_entry_cell(symbol, as<Closure>(value));
  } else if (s->flags & kGlobalCellDirect) {
    point_entry_cell(symbol, nullptr);
  }
  s->value = value;
  s->flags &= ~kGlobalPrimitive;
}

void Runtime::set_global(Value symbol, Value value) {
  Symbol* s = as<Symbol>(symbol);
  if (s->value == kUnbound) {
    throw Error(fmt::format("set!: unbound variable: {}", symbol_name(symbol)));
  }
  // A direct cell would keep jumping to the old procedure; the generic body follows the
  // global, so later assignments cost nothing.
  if (s->flags & kGlobalCellDirect) point_entry_cell(symbol, nullptr);
  s->value = value;
  s->flags &= ~kGlobalPrimitive;
}

void Runtime::point_entry_cell(Value symbol, Closure* target) {
  std::string ir = entry_cell_ir(*this, symbol, target);
  std::string name = entry_cell_name(symbol);
  with_code_space<void*>(*this, "define " + std::string(symbol_name(symbol)),
                         [&] { return gc_->define_function(name, ir); });
  Symbol* s = as<Symbol>(symbol);
  s->flags =
      (s->flags & ~kGlobalHasCell) | (target != nullptr ? kGlobalCellDirect : kGlobalCellGeneric);
}

codeheap::gc::CodeObject* Runtime::link(const std::string& ir, const std::string& name,
                                        llvm::ArrayRef<void*> literals) {
  safepoint();
  uint64_t created = gc_->counters().code_objects_created;
  if (created - compiled_at_last_collection_ >= options_.compiles_per_collection) collect();
  return with_code_space<codeheap::gc::CodeObject*>(
      *this, "compile " + name, [&] { return gc_->compile(ir, name, literals); });
}

void* Runtime::function_address(codeheap::gc::CodeObject* code, const std::string& name) {
  auto address = gc_->symbol(code, name);
  if (!address) throw Error("internal error: " + llvm::toString(address.takeError()));
  return *address;
}

void Runtime::safepoint() { gc_->safepoint(); }

void Runtime::collect() {
  codeheap::gc::CollectReport report = gc_->collect();
  compiled_at_last_collection_ = gc_->counters().code_objects_created;
  log()->debug("collect: {} code objects finalized, {} modules retired, {} blocks reclaimed",
               report.finalized, report.modules_retired, report.reclaim.reclaimed_blocks);
}

}  // namespace lisp
