// The Lisp evaluator on programs derived from the fuzz bytes by a grammar whose programs
// terminate. A lisp::Error (wrong type, arity, overflow, unbound variable, ...) is a fine
// outcome; a crash, an ASan report or another exception is a finding.
//
// Why every program terminates:
//   - the operator of a call is a primitive, a lambda written in place, or a global function
//     f<j> called from the body of f<i> with j < i (top-level forms may call any). Globals f<j>
//     only ever get such bodies, in every input (the runtime, and so the globals, outlive an
//     input), so calls form no cycle; a value held in a variable is never called;
//   - loops are named lets whose counter only the loop itself increments, to a bound of 5
//     (200,000 for the loops that build deeply nested data);
//   - a body makes at most two calls of globals, none of them inside loops or map.
// Lambdas tier up to LLVM after 50 calls (LISP_TIER_UP overrides), so both tiers run.
#include <cstdint>
#include <string>
#include <vector>

#include <spdlog/fmt/fmt.h>

#include "codeheap/log.h"
#include "examples/lisp/error.h"
#include "examples/lisp/reader.h"
#include "examples/lisp/tiers.h"
#include "fuzz/check.h"
#include "fuzz/input.h"
#include "fuzz/lisp_runtime.h"

namespace {

constexpr int kFunctions = 8;  // f0 .. f7
constexpr int kVariables = 4;  // v0 .. v3
constexpr int kMaxDepth = 5;

const char* const kPrimitives[] = {"+",
                                   "-",
                                   "*",
                                   "quotient",
                                   "remainder",
                                   "modulo",
                                   "<",
                                   "<=",
                                   "=",
                                   ">",
                                   ">=",
                                   "abs",
                                   "min",
                                   "max",
                                   "number?",
                                   "zero?",
                                   "even?",
                                   "odd?",
                                   "cons",
                                   "car",
                                   "cdr",
                                   "cadr",
                                   "cddr",
                                   "caar",
                                   "caddr",
                                   "null?",
                                   "pair?",
                                   "list?",
                                   "list",
                                   "length",
                                   "reverse",
                                   "append",
                                   "list-tail",
                                   "list-ref",
                                   "memq",
                                   "member",
                                   "assq",
                                   "assoc",
                                   "eq?",
                                   "eqv?",
                                   "equal?",
                                   "not",
                                   "boolean?",
                                   "symbol?",
                                   "string?",
                                   "procedure?",
                                   "char?",
                                   "string-length",
                                   "string-append",
                                   "substring",
                                   "string-ref",
                                   "string=?",
                                   "string<?",
                                   "number->string",
                                   "string->number",
                                   "symbol->string",
                                   "string->symbol",
                                   "char->integer",
                                   "integer->char",
                                   "procedure-tier",
                                   "error"};

class Generator {
 public:
  explicit Generator(fuzz::Input& in) : in_(in) {}

  // One top-level form.
  std::string form() {
    locals_.clear();
    calls_left_ = 2;
    switch (in_.below(6)) {
      case 0:
      case 1: {
        const int f = static_cast<int>(in_.below(kFunctions));
        return fmt::format("(define (f{} {}) {})", f, params(), body(f));
      }
      case 2:
        return fmt::format("(define v{} {})", in_.below(kVariables), expr(kFunctions, 0));
      case 3: {
        const int f = static_cast<int>(in_.below(kFunctions));
        return fmt::format("(set! f{} {})", f, lambda(f, 0));
      }
      default:
        return expr(kFunctions, 0);
    }
  }

 private:
  struct Local {
    std::string name;
    bool assignable;
  };

  std::string fresh() { return fmt::format("x{}", next_name_++); }

  // Binds parameter names (scoped by the caller through locals_) and returns them: a list, a
  // dotted list or a single rest symbol.
  std::string params() {
    const size_t n = in_.below(4);
    std::string text;
    for (size_t i = 0; i < n; ++i) {
      locals_.push_back({fresh(), true});
      text += (i ? " " : "") + locals_.back().name;
    }
    if (in_.below(6) == 0) {
      locals_.push_back({fresh(), true});
      text += (n ? " . " : ". ") + locals_.back().name;
    }
    return text;
  }

  std::string body(int level) { return expr(level, 1); }

  std::string lambda(int level, int depth) {
    const size_t scope = locals_.size();
    const std::string ps = params();
    // A rest parameter alone is written (lambda x ...), not (lambda (. x) ...).
    const std::string list = ps.starts_with(". ") ? ps.substr(2) : "(" + ps + ")";
    std::string text = fmt::format("(lambda {} {})", list, expr(level, depth + 1));
    locals_.resize(scope);
    return text;
  }

  std::string args(int level, int depth, size_t max) {
    std::string text;
    for (size_t n = in_.below(max + 1), i = 0; i < n; ++i) text += " " + expr(level, depth + 1);
    return text;
  }

  std::string literal() {
    switch (in_.below(9)) {
      case 0:
        return std::to_string(static_cast<int64_t>(in_.word(8)) >> 1);  // any fixnum
      case 1:
        return "\"s\"";
      case 2:
        return in_.coin() ? "#t" : "#f";
      case 3:
        return "'()";
      case 4:
        return "#\\a";
      case 5:
        return "'(1 (2 . 3) \"x\" y)";
      case 6:
        return fmt::format("'sym{}", in_.below(4));
      default:
        return std::to_string(static_cast<int>(in_.below(21)) - 10);
    }
  }

  std::string leaf(int level) {
    const size_t choice = in_.below(8);
    if (choice < 3 && !locals_.empty()) return locals_[in_.below(locals_.size())].name;
    if (choice == 3) return fmt::format("v{}", in_.below(kVariables));
    if (choice == 4 && level > 0) return fmt::format("f{}", in_.below(level));  // as a value
    return literal();
  }

  std::string expr(int level, int depth) {
    if (depth >= kMaxDepth || in_.empty() || in_.below(4) == 0) return leaf(level);
    const int d = depth + 1;
    switch (in_.below(21)) {
      case 0:
        return fmt::format("(if {} {} {})", expr(level, d), expr(level, d), expr(level, d));
      case 1:
      case 2:
        return let(level, d);
      case 3:
        return fmt::format("(begin {} {})", expr(level, d), expr(level, d));
      case 4: {
        static const char* const kForms[] = {"and", "or", "when", "unless"};
        return fmt::format("({}{})", kForms[in_.below(4)], args(level, d, 3));
      }
      case 5:
        return fmt::format("(cond ({} {}) (else {}))", expr(level, d), expr(level, d),
                           expr(level, d));
      case 6:
        return assignment(level, d);
      case 7:
      case 8:
      case 9:
        return fmt::format("({}{})", kPrimitives[in_.below(std::size(kPrimitives))],
                           args(level, d, 3));
      case 10:
      case 11: {
        if (level == 0 || calls_left_ == 0) return leaf(level);
        --calls_left_;
        return fmt::format("(f{}{})", in_.below(level), args(level, d, 3));
      }
      case 12:
        return fmt::format("({}{})", lambda(level, d), args(level, d, 4));
      case 13:
        return loop(level, d);
      case 14:
        return without_calls([&] {
          return fmt::format("({} {} (list{}))", in_.coin() ? "map" : "for-each", lambda(level, d),
                             args(level, d, 4));
        });
      case 15:
        return fmt::format("(apply {} (list{}))", in_.coin() ? "+" : lambda(level, d),
                           args(level, d, 4));
      case 16: {
        // eval sees the globals only.
        std::vector<Local> scope = std::move(locals_);
        locals_.clear();
        std::string text = fmt::format("(eval '{})", expr(level, d));
        locals_ = std::move(scope);
        return text;
      }
      case 17:
        return lambda(level, d);  // a closure as a value, never called
      case 18:
        return in_.below(8) == 0 ? "(gc)" : "(heap-stat 'code-used)";
      case 19:
        return deep_data(level, d);
      default:
        return leaf(level);
    }
  }

  std::string let(int level, int depth) {
    static const char* const kForms[] = {"let", "let*", "letrec", "letrec*"};
    const char* form = kForms[in_.below(4)];
    const size_t scope = locals_.size();
    std::string bindings;
    for (size_t n = 1 + in_.below(3), i = 0; i < n; ++i) {
      const std::string name = fresh();
      bindings += fmt::format("({} {})", name, expr(level, depth));
      locals_.push_back({name, true});
    }
    std::string text = fmt::format("({} ({}) {})", form, bindings, expr(level, depth));
    locals_.resize(scope);
    return text;
  }

  std::string assignment(int level, int depth) {
    std::vector<std::string> targets;
    for (const Local& local : locals_) {
      if (local.assignable) targets.push_back(local.name);
    }
    if (!targets.empty() && in_.coin()) {
      const std::string& target = targets[in_.below(targets.size())];
      return fmt::format("(set! {} {})", target, expr(level, depth));
    }
    if (level > 0 && in_.below(4) == 0) {
      // Redefining a lower function while this one runs: its callers see the new body.
      const int f = static_cast<int>(in_.below(level));
      std::vector<Local> scope = std::move(locals_);
      locals_.clear();
      std::string text = fmt::format("(set! f{} {})", f, lambda(f, depth));
      locals_ = std::move(scope);
      return text;
    }
    return fmt::format("(set! v{} {})", in_.below(kVariables), expr(level, depth));
  }

  std::string loop(int level, int depth) {
    const std::string name = fresh(), counter = fresh(), accumulator = fresh();
    const std::string initial = expr(level, depth);
    locals_.push_back({counter, false});
    locals_.push_back({accumulator, true});
    std::string step = without_calls([&] { return expr(level, depth); });
    locals_.resize(locals_.size() - 2);
    return fmt::format("(let {} (({} 0) ({} {})) (if (< {} {}) ({} (+ {} 1) {}) {}))", name,
                       counter, accumulator, initial, counter, in_.below(6), name, counter, step,
                       accumulator);
  }

  // A list nested up to 200,000 deep, built by a loop, handed to a primitive that walks it
  // (equal?, eval, an error message that prints it).
  std::string deep_data(int level, int depth) {
    static const char* const kWalkers[] = {"equal?", "eval", "+", "length", "list?", "memq"};
    const std::string loop = fresh(), counter = fresh(), list = fresh();
    const size_t nesting = in_.coin() ? in_.below(2000) : 1000 * in_.below(201);
    const std::string data = fmt::format(
        "(let {} (({} 0) ({} '(car 1))) (if (< {} {}) ({} (+ {} 1) (list 'car {})) {}))", loop,
        counter, list, counter, nesting, loop, counter, list, list);
    return fmt::format("({} {} {})", kWalkers[in_.below(std::size(kWalkers))], data,
                       in_.coin() ? data : expr(level, depth));
  }

  template <typename F>
  std::string without_calls(F make) {
    const int saved = calls_left_;
    calls_left_ = 0;
    std::string text = make();
    calls_left_ = saved;
    return text;
  }

  fuzz::Input& in_;
  std::vector<Local> locals_;
  int calls_left_ = 2;
  uint64_t next_name_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto log = codeheap::logger("fuzz");  // SPDLOG_LEVEL=codeheap.fuzz=debug
  lisp::Runtime& runtime = fuzz::lisp_runtime(50);
  fuzz::Input in(data, size);
  Generator generate(in);
  for (int forms = 0; forms < 8 && !in.empty(); ++forms) {
    const std::string text = generate.form();
    log->debug("form: {}", text);
    lisp::Reader reader(text, "fuzz");
    try {
      const auto form = reader.next();
      FUZZ_CHECK(form && !reader.next(), "the generator wrote more or less than one form: {}",
                 text);
      runtime.eval(*form);
    } catch (const lisp::SyntaxError& e) {
      FUZZ_CHECK(false, "the generator wrote bad syntax: {}: {}", e.what(), text);
    } catch (const lisp::Error&) {
      // A runtime error of the program: what the input is for.
    }
    runtime.safepoint();
  }
  // No compilation left in flight: the next input starts alike, and exit finds the thread idle.
  if (lisp::TierUp* tier_up = runtime.tier_up()) tier_up->wait_idle();
  return 0;
}
