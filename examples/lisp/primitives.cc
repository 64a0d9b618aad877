#include "examples/lisp/primitives.h"

#include <charconv>
#include <cstdio>
#include <ctime>
#include <utility>
#include <vector>

#include <spdlog/fmt/fmt.h>

#include "examples/lisp/boehm.h"
#include "examples/lisp/error.h"
#include "examples/lisp/runtime.h"
#include "examples/lisp/tiers.h"

namespace lisp {
namespace {

[[noreturn]] void wrong_type(const char* who, const char* expected, Value got) {
  throw Error(fmt::format("{}: expected {}, got {}", who, expected, write_short(got)));
}

int64_t integer(const char* who, Value v) {
  if (!is_fixnum(v)) wrong_type(who, "a number", v);
  return fixnum_value(v);
}

Value checked(const char* who, __int128 n) {
  if (n < kFixnumMin || n > kFixnumMax) {
    throw Error(
        fmt::format("{}: fixnum overflow (fixnums are {} .. {})", who, kFixnumMin, kFixnumMax));
  }
  return make_fixnum(static_cast<int64_t>(n));
}

Value pair(const char* who, Value v) {
  if (!is_pair(v)) wrong_type(who, "a pair", v);
  return v;
}

std::string_view text(const char* who, Value v) {
  if (!is_string(v)) wrong_type(who, "a string", v);
  return string_view_of(v);
}

int64_t list_size(const char* who, Value v) {
  int64_t n = list_length(v);
  if (n < 0) wrong_type(who, "a list", v);
  return n;
}

// --- Numbers. + - * and the comparisons are open-coded when called directly; these
// versions serve calls through a value, e.g. (apply + list). ---

Value add(int64_t argc, const Value* argv) {
  __int128 sum = 0;
  for (int64_t i = 0; i < argc; ++i) sum = fixnum_value(checked("+", sum + integer("+", argv[i])));
  return make_fixnum(static_cast<int64_t>(sum));
}

Value subtract(int64_t argc, const Value* argv) {
  if (argc == 1) return checked("-", -static_cast<__int128>(integer("-", argv[0])));
  __int128 result = integer("-", argv[0]);
  for (int64_t i = 1; i < argc; ++i) {
    result = fixnum_value(checked("-", result - integer("-", argv[i])));
  }
  return make_fixnum(static_cast<int64_t>(result));
}

Value multiply(int64_t argc, const Value* argv) {
  __int128 product = 1;
  for (int64_t i = 0; i < argc; ++i) {
    product = fixnum_value(checked("*", product * integer("*", argv[i])));
  }
  return make_fixnum(static_cast<int64_t>(product));
}

template <typename Holds>
Value compare_chain(const char* who, int64_t argc, const Value* argv, Holds holds) {
  bool result = true;
  for (int64_t i = 0; i < argc; ++i) {
    int64_t a = integer(who, argv[i]);
    if (i + 1 < argc && !holds(a, integer(who, argv[i + 1]))) result = false;
  }
  return make_bool(result);
}

Value less(int64_t argc, const Value* argv) {
  return compare_chain("<", argc, argv, [](int64_t a, int64_t b) { return a < b; });
}
Value less_equal(int64_t argc, const Value* argv) {
  return compare_chain("<=", argc, argv, [](int64_t a, int64_t b) { return a <= b; });
}
Value num_equal(int64_t argc, const Value* argv) {
  return compare_chain("=", argc, argv, [](int64_t a, int64_t b) { return a == b; });
}
Value greater(int64_t argc, const Value* argv) {
  return compare_chain(">", argc, argv, [](int64_t a, int64_t b) { return a > b; });
}
Value greater_equal(int64_t argc, const Value* argv) {
  return compare_chain(">=", argc, argv, [](int64_t a, int64_t b) { return a >= b; });
}

int64_t divisor(const char* who, Value v) {
  int64_t d = integer(who, v);
  if (d == 0) throw Error(fmt::format("{}: division by zero", who));
  return d;
}

Value quotient(Value a, Value b) {
  int64_t d = divisor("quotient", b);
  return checked("quotient", static_cast<__int128>(integer("quotient", a)) / d);
}
Value remainder(Value a, Value b) {
  int64_t d = divisor("remainder", b);
  return make_fixnum(integer("remainder", a) % d);
}
Value modulo(Value a, Value b) {
  int64_t d = divisor("modulo", b);
  int64_t r = integer("modulo", a) % d;
  return make_fixnum(r != 0 && (r < 0) != (d < 0) ? r + d : r);
}
Value abs_(Value a) {
  int64_t n = integer("abs", a);
  return checked("abs", n < 0 ? -static_cast<__int128>(n) : n);  // (abs kFixnumMin) overflows
}
Value min_(int64_t argc, const Value* argv) {
  int64_t m = integer("min", argv[0]);
  for (int64_t i = 1; i < argc; ++i) m = std::min(m, integer("min", argv[i]));
  return make_fixnum(m);
}
Value max_(int64_t argc, const Value* argv) {
  int64_t m = integer("max", argv[0]);
  for (int64_t i = 1; i < argc; ++i) m = std::max(m, integer("max", argv[i]));
  return make_fixnum(m);
}
Value is_number(Value a) { return make_bool(is_fixnum(a)); }
Value is_zero(Value a) { return make_bool(integer("zero?", a) == 0); }
Value is_even(Value a) { return make_bool(integer("even?", a) % 2 == 0); }
Value is_odd(Value a) { return make_bool(integer("odd?", a) % 2 != 0); }

// --- Pairs and lists ---

Value car_(Value p) { return car(pair("car", p)); }
Value cdr_(Value p) { return cdr(pair("cdr", p)); }
Value cons_(Value a, Value b) { return cons(a, b); }
Value cadr(Value p) { return car(pair("cadr", cdr(pair("cadr", p)))); }
Value cddr(Value p) { return cdr(pair("cddr", cdr(pair("cddr", p)))); }
Value caar(Value p) { return car(pair("caar", car(pair("caar", p)))); }
Value caddr(Value p) { return car(pair("caddr", cddr(p))); }
Value is_null(Value v) { return make_bool(v == kNil); }
Value is_pair_(Value v) { return make_bool(is_pair(v)); }
Value is_list(Value v) { return make_bool(list_length(v) >= 0); }

Value list(int64_t argc, const Value* argv) {
  Value result = kNil;
  for (int64_t i = argc - 1; i >= 0; --i) result = cons(argv[i], result);
  return result;
}

Value length(Value v) { return make_fixnum(list_size("length", v)); }

Value reverse(Value v) {
  list_size("reverse", v);
  Value result = kNil;
  for (; v != kNil; v = cdr(v)) result = cons(car(v), result);
  return result;
}

// Copies `list` in order, ending in `tail`.
Value copy_onto(Value list, Value tail) {
  Value head = kNil, last = kNil;
  for (; list != kNil; list = cdr(list)) {
    Value cell = cons(car(list), kNil);
    if (head == kNil) {
      head = cell;
    } else {
      as<Pair>(last)->cdr = cell;
    }
    last = cell;
  }
  if (head == kNil) return tail;
  as<Pair>(last)->cdr = tail;
  return head;
}

Value append(int64_t argc, const Value* argv) {
  if (argc == 0) return kNil;
  Value result = argv[argc - 1];
  for (int64_t i = argc - 2; i >= 0; --i) {
    list_size("append", argv[i]);
    result = copy_onto(argv[i], result);
  }
  return result;
}

Value list_tail(Value list, Value k) {
  for (int64_t i = integer("list-tail", k); i > 0; --i) list = cdr(pair("list-tail", list));
  return list;
}

Value list_ref(Value list, Value k) { return car(pair("list-ref", list_tail(list, k))); }

bool equal(Value a, Value b);

template <bool (*Same)(Value, Value)>
Value member_in(const char* who, Value x, Value list) {
  for (; is_pair(list); list = cdr(list)) {
    if (Same(x, car(list))) return list;
  }
  if (list != kNil) wrong_type(who, "a list", list);
  return kFalse;
}

template <bool (*Same)(Value, Value)>
Value association_in(const char* who, Value key, Value alist) {
  for (; is_pair(alist); alist = cdr(alist)) {
    Value entry = car(alist);
    if (!is_pair(entry)) wrong_type(who, "a list of pairs", entry);
    if (Same(key, car(entry))) return entry;
  }
  if (alist != kNil) wrong_type(who, "a list", alist);
  return kFalse;
}

bool same(Value a, Value b) { return a == b; }

Value memq(Value x, Value list) { return member_in<same>("memq", x, list); }
Value member(Value x, Value list) { return member_in<equal>("member", x, list); }
Value assq(Value key, Value alist) { return association_in<same>("assq", key, alist); }
Value assoc(Value key, Value alist) { return association_in<equal>("assoc", key, alist); }

// (map f list ...) / (for-each f list ...): stops at the shortest list.
Value map_lists(const char* who, int64_t argc, const Value* argv, bool collect) {
  Value procedure = argv[0];
  if (!is_closure(procedure)) wrong_type(who, "a procedure", procedure);
  // Boehm-visible: the cursors are the only references to the lists' remaining cells.
  std::vector<Value, traceable_allocator<Value>> cursors(argv + 1, argv + argc);
  std::vector<Value, traceable_allocator<Value>> args(cursors.size());
  Value head = kNil, last = kNil;
  for (;;) {
    for (size_t i = 0; i < cursors.size(); ++i) {
      if (!is_pair(cursors[i])) {
        if (cursors[i] != kNil) wrong_type(who, "a list", argv[i + 1]);
        return collect ? head : kUnspecified;
      }
      args[i] = car(cursors[i]);
      cursors[i] = cdr(cursors[i]);
    }
    Value result = Runtime::current().apply(procedure, args);
    if (!collect) continue;
    Value cell = cons(result, kNil);
    if (head == kNil) {
      head = cell;
    } else {
      as<Pair>(last)->cdr = cell;
    }
    last = cell;
  }
}

Value map(int64_t argc, const Value* argv) { return map_lists("map", argc, argv, true); }
Value for_each(int64_t argc, const Value* argv) { return map_lists("for-each", argc, argv, false); }

// --- Equivalence and types ---

// Without recursion (the cdrs still to compare wait in a vector): data built at run time can
// nest as deep as memory allows. No allocation here, so no collection can free what waits.
bool equal(Value a, Value b) {
  std::vector<std::pair<Value, Value>> pending{{a, b}};
  while (!pending.empty()) {
    auto [x, y] = pending.back();
    pending.pop_back();
    while (x != y) {
      if (!is_pair(x) || !is_pair(y)) {
        if (is_string(x) && is_string(y) && string_view_of(x) == string_view_of(y)) break;
        return false;
      }
      pending.emplace_back(cdr(x), cdr(y));
      x = car(x);
      y = car(y);
    }
  }
  return true;
}

Value is_eq(Value a, Value b) { return make_bool(a == b); }
Value is_equal(Value a, Value b) { return make_bool(equal(a, b)); }
Value not_(Value v) { return make_bool(v == kFalse); }
Value is_boolean(Value v) { return make_bool(v == kTrue || v == kFalse); }
Value is_symbol_(Value v) { return make_bool(is_symbol(v)); }
Value is_string_(Value v) { return make_bool(is_string(v)); }
Value is_procedure(Value v) { return make_bool(is_closure(v)); }
Value is_char_(Value v) { return make_bool(is_char(v)); }

// --- Strings, symbols, characters ---

Value string_length(Value s) { return make_fixnum(text("string-length", s).size()); }

Value string_append(int64_t argc, const Value* argv) {
  std::string result;
  for (int64_t i = 0; i < argc; ++i) result += text("string-append", argv[i]);
  return make_string(result);
}

Value substring(Value s, Value start, Value end) {
  std::string_view t = text("substring", s);
  int64_t from = integer("substring", start), to = integer("substring", end);
  if (from < 0 || to < from || to > static_cast<int64_t>(t.size())) {
    throw Error(fmt::format("substring: range [{}, {}) is outside a string of length {}", from, to,
                            t.size()));
  }
  return make_string(t.substr(from, to - from));
}

Value string_ref(Value s, Value k) {
  std::string_view t = text("string-ref", s);
  int64_t i = integer("string-ref", k);
  if (i < 0 || i >= static_cast<int64_t>(t.size())) {
    throw Error(fmt::format("string-ref: index {} is outside a string of length {}", i, t.size()));
  }
  return make_char(static_cast<unsigned char>(t[i]));
}

Value string_equal(Value a, Value b) {
  return make_bool(text("string=?", a) == text("string=?", b));
}
Value string_less(Value a, Value b) { return make_bool(text("string<?", a) < text("string<?", b)); }

Value number_to_string(Value n) {
  return make_string(std::to_string(integer("number->string", n)));
}

Value string_to_number(Value s) {
  std::string_view t = text("string->number", s);
  int64_t n = 0;
  auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), n);
  if (t.empty() || ec != std::errc() || end != t.data() + t.size() || !fits_fixnum(n))
    return kFalse;
  return make_fixnum(n);
}

Value symbol_to_string(Value s) {
  if (!is_symbol(s)) wrong_type("symbol->string", "a symbol", s);
  return make_string(symbol_name(s));
}

Value string_to_symbol(Value s) { return intern(text("string->symbol", s)); }

Value char_to_integer(Value c) {
  if (!is_char(c)) wrong_type("char->integer", "a character", c);
  return make_fixnum(char_value(c));
}

Value integer_to_char(Value n) {
  int64_t code = integer("integer->char", n);
  if (code < 0 || code > 255) throw Error(fmt::format("integer->char: {} is not a byte", code));
  return make_char(static_cast<uint32_t>(code));
}

// --- Output ---

Value display(Value v) {
  std::string s = display_string(v);
  std::fwrite(s.data(), 1, s.size(), stdout);
  return kUnspecified;
}

Value write(Value v) {
  std::string s = write_string(v);
  std::fwrite(s.data(), 1, s.size(), stdout);
  return kUnspecified;
}

Value newline() {
  std::fputc('\n', stdout);
  return kUnspecified;
}

// --- Control ---

Value eval(int64_t, const Value* argv) {  // (eval form [environment]): one global environment
  return Runtime::current().eval(argv[0]);
}

Value apply(int64_t argc, const Value* argv) {
  std::vector<Value, traceable_allocator<Value>> args(argv + 1, argv + argc - 1);
  Value last = argv[argc - 1];
  if (list_length(last) < 0) wrong_type("apply", "a list as the last argument", last);
  for (; last != kNil; last = cdr(last)) args.push_back(car(last));
  return Runtime::current().apply(argv[0], args);
}

Value error(int64_t argc, const Value* argv) {
  std::string message = display_string(argv[0]);
  for (int64_t i = 1; i < argc; ++i) message += " " + write_string(argv[i]);
  throw Error(message);
}

Value exit_(int64_t argc, const Value* argv) {
  throw ExitRequest(argc == 0 ? 0 : static_cast<int>(integer("exit", argv[0])));
}

// --- The code heap ---

Value gc() {
  Runtime::current().collect();
  return kUnspecified;
}

Value heap_stats() {
  std::string dump = Runtime::current().gc().dump_text();
  std::fwrite(dump.data(), 1, dump.size(), stdout);
  return kUnspecified;
}

// (heap-map "file.svg"): the heap map (docs/heap-stats.md), a picture of the code heap.
Value heap_map(Value path) {
  const std::string file(text("heap-map", path));
  auto written = codeheap::write_text_file(file, Runtime::current().gc().heap().dump_svg());
  if (!written) throw Error(fmt::format("heap-map: {}", written.error().message));
  return kUnspecified;
}

// (heap-stat 'key): one number from the statistics, for programs that report on themselves.
Value heap_stat(Value key) {
  if (!is_symbol(key)) wrong_type("heap-stat", "a symbol", key);
  codeheap::gc::Runtime& gc = Runtime::current().gc();
  codeheap::HeapStats heap = gc.heap().stats();
  const codeheap::ArenaStats& code = heap.arenas[static_cast<int>(codeheap::Arena::kCode)];
  codeheap::gc::GcCounters counters = gc.counters();
  std::string_view k = symbol_name(key);
  uint64_t n;
  if (k == "code-used") {
    n = code.used_bytes;
  } else if (k == "code-committed") {
    n = code.committed_bytes;
  } else if (k == "code-quarantined") {
    n = code.quarantined_bytes;
  } else if (k == "used") {
    n = heap.used_bytes;
  } else if (k == "committed") {
    n = heap.committed_bytes;
  } else if (k == "live-code-objects") {
    n = gc.live_code_objects();
  } else if (k == "code-objects-created") {
    n = counters.code_objects_created;
  } else if (k == "code-objects-finalized") {
    n = counters.code_objects_finalized;
  } else if (k.starts_with("baseline-") || k.starts_with("llvm-")) {
    // Per tier: units (created), live-units, bytes (of the live units), compile-ns (total).
    const bool baseline = k.starts_with("baseline-");
    const codeheap::gc::TierCounters& tier =
        counters.tier(baseline ? codeheap::gc::Tier::kBaseline : codeheap::gc::Tier::kOptimized);
    std::string_view what = k.substr(baseline ? 9 : 5);
    if (what == "units") {
      n = tier.code_objects_created;
    } else if (what == "live-units") {
      n = tier.live();
    } else if (what == "bytes") {
      n = tier.code_bytes_live;
    } else if (what == "compile-ns") {
      n = tier.compile_ns_total;
    } else {
      throw Error(
          fmt::format("heap-stat: unknown key {} (baseline-/llvm- units, live-units, "
                      "bytes, compile-ns)",
                      k));
    }
  } else if (k == "tier-ups") {
    n = counters.tier_ups;
  } else if (k == "tier-ups-discarded") {
    n = counters.tier_ups_discarded;
  } else {
    throw Error(fmt::format(
        "heap-stat: unknown key {} (code-used, code-committed, code-quarantined, used, "
        "committed, live-code-objects, code-objects-created, code-objects-finalized, "
        "baseline-units, baseline-live-units, baseline-bytes, baseline-compile-ns, the same for "
        "llvm-, tier-ups, tier-ups-discarded)",
        k));
  }
  return make_fixnum(static_cast<int64_t>(n));
}

// --- Tiers (docs/tiers.md) ---

// (procedure-tier f): baseline, llvm or primitive: the code f runs now.
Value procedure_tier(Value f) {
  if (!is_closure(f)) wrong_type("procedure-tier", "a procedure", f);
  switch (as<Closure>(f)->templ->tier) {
    case Tier::kBaseline:
      return intern("baseline");
    case Tier::kOptimized:
      return intern("llvm");
    case Tier::kHost:
      break;
  }
  return intern("primitive");
}

// (tier-up-wait): returns once the compile thread has nothing left to do (or is held).
Value tier_up_wait() {
  if (TierUp* tier_up = Runtime::current().tier_up()) tier_up->wait_idle();
  return kUnspecified;
}

// (tier-up-hold #t): requests wait in the queue until (tier-up-hold #f). For tests of races.
Value tier_up_hold(Value on) {
  if (TierUp* tier_up = Runtime::current().tier_up()) tier_up->hold(on != kFalse);
  return kUnspecified;
}

// --- Time ---

// (current-time-ns): CLOCK_MONOTONIC in nanoseconds, so that programs can time themselves.
Value current_time_ns() {
  timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return make_fixnum(static_cast<int64_t>(now.tv_sec) * 1000000000 + now.tv_nsec);
}

// --- The table ---

template <typename F>
void* fn(F* f) {
  return reinterpret_cast<void*>(f);
}

constexpr int kAny = -1;

const Primitive kPrimitives[] = {
    {"+", 0, kAny, fn(add), OpenCode::kAdd},
    {"-", 1, kAny, fn(subtract), OpenCode::kSub},
    {"*", 0, kAny, fn(multiply), OpenCode::kMul},
    {"<", 1, kAny, fn(less), OpenCode::kLess},
    {"<=", 1, kAny, fn(less_equal), OpenCode::kLessEqual},
    {"=", 1, kAny, fn(num_equal), OpenCode::kNumEqual},
    {">", 1, kAny, fn(greater), OpenCode::kGreater},
    {">=", 1, kAny, fn(greater_equal), OpenCode::kGreaterEqual},
    {"quotient", 2, 2, fn(quotient), OpenCode::kNone},
    {"remainder", 2, 2, fn(remainder), OpenCode::kNone},
    {"modulo", 2, 2, fn(modulo), OpenCode::kNone},
    {"abs", 1, 1, fn(abs_), OpenCode::kNone},
    {"min", 1, kAny, fn(min_), OpenCode::kNone},
    {"max", 1, kAny, fn(max_), OpenCode::kNone},
    {"number?", 1, 1, fn(is_number), OpenCode::kNone},
    {"zero?", 1, 1, fn(is_zero), OpenCode::kNone},
    {"even?", 1, 1, fn(is_even), OpenCode::kNone},
    {"odd?", 1, 1, fn(is_odd), OpenCode::kNone},
    {"cons", 2, 2, fn(cons_), OpenCode::kCons},
    {"car", 1, 1, fn(car_), OpenCode::kCar},
    {"cdr", 1, 1, fn(cdr_), OpenCode::kCdr},
    {"cadr", 1, 1, fn(cadr), OpenCode::kNone},
    {"cddr", 1, 1, fn(cddr), OpenCode::kNone},
    {"caar", 1, 1, fn(caar), OpenCode::kNone},
    {"caddr", 1, 1, fn(caddr), OpenCode::kNone},
    {"null?", 1, 1, fn(is_null), OpenCode::kIsNull},
    {"pair?", 1, 1, fn(is_pair_), OpenCode::kIsPair},
    {"list?", 1, 1, fn(is_list), OpenCode::kNone},
    {"list", 0, kAny, fn(list), OpenCode::kNone},
    {"length", 1, 1, fn(length), OpenCode::kNone},
    {"reverse", 1, 1, fn(reverse), OpenCode::kNone},
    {"append", 0, kAny, fn(append), OpenCode::kNone},
    {"list-tail", 2, 2, fn(list_tail), OpenCode::kNone},
    {"list-ref", 2, 2, fn(list_ref), OpenCode::kNone},
    {"memq", 2, 2, fn(memq), OpenCode::kNone},
    {"member", 2, 2, fn(member), OpenCode::kNone},
    {"assq", 2, 2, fn(assq), OpenCode::kNone},
    {"assoc", 2, 2, fn(assoc), OpenCode::kNone},
    {"map", 2, kAny, fn(map), OpenCode::kNone},
    {"for-each", 2, kAny, fn(for_each), OpenCode::kNone},
    {"eq?", 2, 2, fn(is_eq), OpenCode::kIsEq},
    {"eqv?", 2, 2, fn(is_eq), OpenCode::kIsEq},  // fixnums and characters are immediate
    {"equal?", 2, 2, fn(is_equal), OpenCode::kNone},
    {"not", 1, 1, fn(not_), OpenCode::kNot},
    {"boolean?", 1, 1, fn(is_boolean), OpenCode::kNone},
    {"symbol?", 1, 1, fn(is_symbol_), OpenCode::kNone},
    {"string?", 1, 1, fn(is_string_), OpenCode::kNone},
    {"procedure?", 1, 1, fn(is_procedure), OpenCode::kNone},
    {"char?", 1, 1, fn(is_char_), OpenCode::kNone},
    {"string-length", 1, 1, fn(string_length), OpenCode::kNone},
    {"string-append", 0, kAny, fn(string_append), OpenCode::kNone},
    {"substring", 3, 3, fn(substring), OpenCode::kNone},
    {"string-ref", 2, 2, fn(string_ref), OpenCode::kNone},
    {"string=?", 2, 2, fn(string_equal), OpenCode::kNone},
    {"string<?", 2, 2, fn(string_less), OpenCode::kNone},
    {"number->string", 1, 1, fn(number_to_string), OpenCode::kNone},
    {"string->number", 1, 1, fn(string_to_number), OpenCode::kNone},
    {"symbol->string", 1, 1, fn(symbol_to_string), OpenCode::kNone},
    {"string->symbol", 1, 1, fn(string_to_symbol), OpenCode::kNone},
    {"char->integer", 1, 1, fn(char_to_integer), OpenCode::kNone},
    {"integer->char", 1, 1, fn(integer_to_char), OpenCode::kNone},
    {"display", 1, 1, fn(display), OpenCode::kNone},
    {"write", 1, 1, fn(write), OpenCode::kNone},
    {"newline", 0, 0, fn(newline), OpenCode::kNone},
    {"eval", 1, 2, fn(eval), OpenCode::kNone},
    {"apply", 2, kAny, fn(apply), OpenCode::kApply},
    {"error", 1, kAny, fn(error), OpenCode::kNone},
    {"exit", 0, 1, fn(exit_), OpenCode::kNone},
    {"gc", 0, 0, fn(gc), OpenCode::kNone},
    {"heap-stats", 0, 0, fn(heap_stats), OpenCode::kNone},
    {"heap-stat", 1, 1, fn(heap_stat), OpenCode::kNone},
    {"heap-map", 1, 1, fn(heap_map), OpenCode::kNone},
    {"current-time-ns", 0, 0, fn(current_time_ns), OpenCode::kNone},
    {"procedure-tier", 1, 1, fn(procedure_tier), OpenCode::kNone},
    {"tier-up-wait", 0, 0, fn(tier_up_wait), OpenCode::kNone},
    {"tier-up-hold", 1, 1, fn(tier_up_hold), OpenCode::kNone},
};

// --- Primitives as procedures: adapters from the uniform convention ---

const Primitive* descriptor(const Closure* closure) {
  return reinterpret_cast<const Primitive*>(closure->slots[0]);
}

[[noreturn]] void arity_error(const Primitive& p, int64_t argc) {
  std::string expected;
  if (p.max_args == p.min_args) {
    expected = fmt::format("{} argument{}", p.min_args, p.min_args == 1 ? "" : "s");
  } else if (p.max_args < 0) {
    expected = fmt::format("at least {} argument{}", p.min_args, p.min_args == 1 ? "" : "s");
  } else {
    expected = fmt::format("{} to {} arguments", p.min_args, p.max_args);
  }
  throw Error(fmt::format("{}: expected {}, got {}", p.name, expected, argc));
}

template <int N>
Value fixed_entry(Closure* self, int64_t argc, Value a0, Value a1, Value a2, Value*) {
  const Primitive& p = *descriptor(self);
  if (argc != N) arity_error(p, argc);
  if constexpr (N == 0) return reinterpret_cast<Value (*)()>(p.function)();
  if constexpr (N == 1) return reinterpret_cast<Value (*)(Value)>(p.function)(a0);
  if constexpr (N == 2) return reinterpret_cast<Value (*)(Value, Value)>(p.function)(a0, a1);
  if constexpr (N == 3) {
    return reinterpret_cast<Value (*)(Value, Value, Value)>(p.function)(a0, a1, a2);
  }
}

Value variadic_entry(Closure* self, int64_t argc, Value a0, Value a1, Value a2, Value* rest) {
  const Primitive& p = *descriptor(self);
  if (!p.accepts(argc)) arity_error(p, argc);
  auto function = reinterpret_cast<Value (*)(int64_t, const Value*)>(p.function);
  const Value registers[kRegisterArgs] = {a0, a1, a2};
  if (argc <= kRegisterArgs) return function(argc, registers);
  Value* argv = make_value_array(argc);
  std::copy(registers, registers + kRegisterArgs, argv);
  std::copy(rest, rest + (argc - kRegisterArgs), argv + kRegisterArgs);
  return function(argc, argv);
}

Entry entry_for(const Primitive& p) {
  if (!p.fixed()) return variadic_entry;
  switch (p.min_args) {
    case 0:
      return fixed_entry<0>;
    case 1:
      return fixed_entry<1>;
    case 2:
      return fixed_entry<2>;
    default:
      return fixed_entry<3>;
  }
}

}  // namespace

void install_primitives(Runtime& runtime) {
  for (const Primitive& p : kPrimitives) {
    Value symbol = intern(p.name);
    Template* templ = make_template(symbol, 0);
    templ->entry = entry_for(p);
    Closure* closure = make_closure(templ, 1);
    templ->constant = closure;
    closure->slots[0] = reinterpret_cast<Value>(&p);
    as<Symbol>(symbol)->value = to_value(closure);
    as<Symbol>(symbol)->flags = kGlobalPrimitive;
    runtime.define_primitive_symbol(p.host_symbol(), p.function);
  }
}

const Primitive* primitive_of_global(Value symbol) {
  const Symbol* s = as<Symbol>(symbol);
  return (s->flags & kGlobalPrimitive) != 0 ? descriptor(as<Closure>(s->value)) : nullptr;
}

const char* open_code_name(OpenCode op) {
  for (const Primitive& p : kPrimitives) {
    if (p.open_code == op) return p.name;
  }
  return "?";
}

}  // namespace lisp
