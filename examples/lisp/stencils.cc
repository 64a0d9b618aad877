// The baseline tier's stencils: the machine code of every operation the baseline compiler
// (baseline.cc) emits, compiled by clang-19 at build time (cc_stencils, docs/stencils.md) and
// copied and patched at run time. One function per stencil; the holes are extern symbols:
//
//   K, SLOT, SLOT2, N, SYM, TEMPL, REQ   constants (the address of the symbol is the value)
//   CONT, ELSE, BODY                      code of the same unit (continuations are musttail)
//   CELL, PRIM*                           a global's entry cell, a primitive's host function
//   lisp_*                                runtime helpers (abi.h), reached through trampolines
//
// A procedure is an entry stencil followed by its body. The entry stencil has the uniform
// Entry type: it checks the stack limit and the arity, counts the call for the tier-up, and
// keeps the procedure's frame in a local array (on the native stack, where the collector sees
// it): fp[0] the closure, fp[1] argc, fp[2..4] a0..a2, fp[5] rest, fp[6..] locals and
// temporaries. It calls the body, a chain of stencils of the type Body that pass the frame, an
// accumulator and the closure along and end in `ret` (the value) or in a tail call: the body
// stores the callee into fp[0..6] and returns 0 (no Lisp value is 0), and the entry stencil,
// its frame no longer needed, jumps to the callee. So tail calls run in constant stack.
#include <cstdint>

#include "examples/lisp/primitives.h"
#include "examples/lisp/value.h"

using namespace lisp;

namespace {
using Body = Value (*)(Value* fp, Value acc, Closure* self);
inline constexpr int kTailClosure = 0, kTailArgc = 1, kTailA0 = 2, kTailRest = 5, kTailEntry = 6;
}  // namespace

extern "C" {
// Constants.
extern char K[], SLOT[], SLOT2[], N[], SYM[], TEMPL[], REQ[];
// Code.
Value CONT(Value* fp, Value acc, Closure* self);
Value ELSE(Value* fp, Value acc, Closure* self);
Value BODY(Value* fp, Value acc, Closure* self);
Value CELL(Closure* closure, int64_t argc, Value a0, Value a1, Value a2, Value* rest);
Value PRIM0();
Value PRIM1(Value);
Value PRIM2(Value, Value);
Value PRIM3(Value, Value, Value);
Value PRIMV(int64_t argc, const Value* argv);
// Runtime helpers (abi.h).
extern char lisp_stack_limit[];
Value lisp_cons(Value, Value);
Value lisp_make_box(Value);
Closure* lisp_make_closure(Template* templ, int64_t slots);
Value* lisp_make_args(int64_t count);
Value lisp_rest_list(int64_t argc, Value a0, Value a1, Value a2, const Value* rest, int64_t fixed);
int64_t lisp_spread_args(Value list, Value* out);
void lisp_set_global(Symbol* symbol, Value value);
Value lisp_compare(int64_t op, int64_t argc, const Value* argv);
void lisp_tier_up(Template* templ);
[[noreturn]] void lisp_error_unbound(Symbol*);
[[noreturn]] void lisp_error_not_procedure(Value);
[[noreturn]] void lisp_error_global_not_procedure(Symbol*, Value);
[[noreturn]] void lisp_error_arity(Closure*, int64_t argc, int64_t required, int64_t variadic);
[[noreturn]] void lisp_error_type(int64_t op, Value a, Value b);
[[noreturn]] void lisp_error_overflow(int64_t op, Value a, Value b);
[[noreturn]] void lisp_error_stack();
}

#define STENCIL extern "C" __attribute__((used))
#define NEXT(acc) [[clang::musttail]] return CONT(fp, acc, self)
#define BODY_ARGS Value *fp, Value acc, Closure *self

namespace {
template <typename T = int64_t>
inline T hole(char* symbol) {
  return (T)(uintptr_t)symbol;
}
inline Value& slot(Value* fp, char* symbol) { return *(Value*)((char*)fp + hole(symbol)); }
inline Value& free_slot(Closure* self, char* symbol) {
  return *(Value*)((char*)self + hole(symbol));
}
inline Value& box_value(Value box) { return ((Box*)box)->value; }
inline bool both_fixnums(Value a, Value b) { return (a & b & 1) != 0; }
inline bool has(Value v, Type type) { return (v & 7) == 0 && *(const uint8_t*)v == (uint8_t)type; }
inline Entry entry_of(Value closure) { return ((Closure*)closure)->templ->entry; }
inline int64_t op(OpenCode code) { return (int64_t)code; }
}  // namespace

// --- Entry: one stencil per frame size and arity kind ---

// The arguments go to the frame first, so that nothing but the frame lives across the calls
// below: no callee-saved register to spill, which keeps a baseline frame small (deep non-tail
// recursion runs on the same stack in both tiers).
#define ENTRY(NAME, SLOTS, BAD_ARITY, VARIADIC)                                                    \
  STENCIL Value NAME(Closure* self, int64_t argc, Value a0, Value a1, Value a2, Value* rest) {     \
    Value fp[SLOTS];                                                                               \
    if (__builtin_expect((uintptr_t)fp < *(uintptr_t*)lisp_stack_limit, 0)) lisp_error_stack();    \
    if (__builtin_expect(BAD_ARITY, 0)) lisp_error_arity(self, argc, hole(REQ), VARIADIC);         \
    fp[kTailClosure] = (Value)self;                                                                \
    fp[kTailArgc] = (Value)argc;                                                                   \
    fp[kTailA0] = a0;                                                                              \
    fp[kTailA0 + 1] = a1;                                                                          \
    fp[kTailA0 + 2] = a2;                                                                          \
    fp[kTailRest] = (Value)rest;                                                                   \
    Template* templ = (Template*)TEMPL;                                                            \
    if (__builtin_expect(--templ->budget == 0, 0)) lisp_tier_up(templ);                            \
    Value result = BODY(fp, 0, (Closure*)fp[kTailClosure]);                                        \
    if (__builtin_expect(result != 0, 1)) return result;                                           \
    Closure* callee = (Closure*)fp[kTailClosure];                                                  \
    Entry entry = (Entry)fp[kTailEntry];                                                           \
    [[clang::musttail]] return entry(callee, (int64_t)fp[kTailArgc], fp[kTailA0], fp[kTailA0 + 1], \
                                     fp[kTailA0 + 2], (Value*)fp[kTailRest]);                      \
  }

#define ENTRIES(SLOTS)                                    \
  ENTRY(entry_fixed_##SLOTS, SLOTS, argc != hole(REQ), 0) \
  ENTRY(entry_rest_##SLOTS, SLOTS, argc < hole(REQ), 1)

// Frame sizes in slots; odd ones keep the native frame 16-byte aligned with the return address.
ENTRIES(9)
ENTRIES(11)
ENTRIES(13)
ENTRIES(17)
ENTRIES(25)
ENTRIES(33)
ENTRIES(65)
ENTRIES(129)
ENTRIES(257)
ENTRIES(513)

// The body behind a global's entry cell: the global's current procedure, checked.
STENCIL Value cell(Closure*, int64_t argc, Value a0, Value a1, Value a2, Value* rest) {
  Symbol* symbol = (Symbol*)SYM;
  Value value = symbol->value;
  if (__builtin_expect(value == kUnbound, 0)) lisp_error_unbound(symbol);
  if (__builtin_expect(!has(value, Type::kClosure), 0)) {
    lisp_error_global_not_procedure(symbol, value);
  }
  [[clang::musttail]] return entry_of(value)((Closure*)value, argc, a0, a1, a2, rest);
}

// --- Parameters ---

// A parameter past the third, from the rest array.
STENCIL Value param_from_rest(BODY_ARGS) {
  slot(fp, SLOT) = ((Value*)fp[kTailRest])[hole(N)];
  NEXT(acc);
}

STENCIL Value rest_list(BODY_ARGS) {
  slot(fp, SLOT) = lisp_rest_list((int64_t)fp[kTailArgc], fp[kTailA0], fp[kTailA0 + 1],
                                  fp[kTailA0 + 2], (Value*)fp[kTailRest], hole(N));
  NEXT(acc);
}

// --- Values and variables ---

STENCIL Value constant(BODY_ARGS) { NEXT(hole<Value>(K)); }
STENCIL Value local(BODY_ARGS) { NEXT(slot(fp, SLOT)); }
STENCIL Value set_local(BODY_ARGS) {
  slot(fp, SLOT) = acc;
  NEXT(acc);
}
STENCIL Value local_box(BODY_ARGS) { NEXT(box_value(slot(fp, SLOT))); }
STENCIL Value set_local_box(BODY_ARGS) {
  box_value(slot(fp, SLOT)) = acc;
  NEXT(acc);
}
STENCIL Value box_local(BODY_ARGS) {
  slot(fp, SLOT) = lisp_make_box(slot(fp, SLOT));
  NEXT(acc);
}
STENCIL Value free_var(BODY_ARGS) { NEXT(free_slot(self, SLOT)); }
STENCIL Value free_box(BODY_ARGS) { NEXT(box_value(free_slot(self, SLOT))); }
STENCIL Value set_free_box(BODY_ARGS) {
  box_value(free_slot(self, SLOT)) = acc;
  NEXT(acc);
}

STENCIL Value global(BODY_ARGS) {
  Symbol* symbol = (Symbol*)SYM;
  Value value = symbol->value;
  if (__builtin_expect(value == kUnbound, 0)) lisp_error_unbound(symbol);
  NEXT(value);
}
STENCIL Value set_global(BODY_ARGS) {
  lisp_set_global((Symbol*)SYM, acc);
  NEXT(kUnspecified);
}

// A closure of TEMPL with N slots; set_closure_* fill them (acc stays the closure).
STENCIL Value make_closure(BODY_ARGS) { NEXT((Value)lisp_make_closure((Template*)TEMPL, hole(N))); }
STENCIL Value closure_from_local(BODY_ARGS) {
  ((Closure*)acc)->slots[hole(N)] = slot(fp, SLOT);
  NEXT(acc);
}
STENCIL Value closure_from_free(BODY_ARGS) {
  ((Closure*)acc)->slots[hole(N)] = free_slot(self, SLOT);
  NEXT(acc);
}

// --- Control ---

STENCIL Value ret(BODY_ARGS) { return acc; }
STENCIL Value jump(BODY_ARGS) { NEXT(acc); }
STENCIL Value branch_if_false(BODY_ARGS) {
  if (acc == kFalse) [[clang::musttail]]
    return ELSE(fp, acc, self);
  NEXT(acc);
}

// --- Open-coded primitives: the first operand in SLOT, the last in acc ---

#define ARITHMETIC(NAME, CODE, FIRST, SECOND, BUILTIN, FIX)                        \
  STENCIL Value NAME(BODY_ARGS) {                                                  \
    int64_t a = (int64_t)(FIRST), b = (int64_t)(SECOND), r;                        \
    if (__builtin_expect(!both_fixnums(a, b), 0)) lisp_error_type(op(CODE), a, b); \
    if (BUILTIN) lisp_error_overflow(op(CODE), a, b);                              \
    NEXT(FIX);                                                                     \
  }
// On tagged words (value.h): (2x+1) + (2y+1) - 1, (2x+1) - (2y+1) + 1, (2x) * y | 1.
ARITHMETIC(add, OpenCode::kAdd, slot(fp, SLOT), acc, __builtin_add_overflow(a, b - 1, &r), r)
ARITHMETIC(sub, OpenCode::kSub, slot(fp, SLOT), acc, __builtin_sub_overflow(a, b - 1, &r), r)
ARITHMETIC(mul, OpenCode::kMul, slot(fp, SLOT), acc, __builtin_mul_overflow(a - 1, b >> 1, &r),
           r | 1)
// The second operand a fixnum constant K (still type-checked, as the LLVM tier does).
ARITHMETIC(add_constant, OpenCode::kAdd, acc, hole<Value>(K), __builtin_add_overflow(a, b - 1, &r),
           r)
ARITHMETIC(sub_constant, OpenCode::kSub, acc, hole<Value>(K), __builtin_sub_overflow(a, b - 1, &r),
           r)

#define COMPARE(NAME, CODE, RELATION)                                              \
  STENCIL Value NAME(BODY_ARGS) {                                                  \
    int64_t a = (int64_t)slot(fp, SLOT), b = (int64_t)acc;                         \
    if (__builtin_expect(!both_fixnums(a, b), 0)) lisp_error_type(op(CODE), a, b); \
    NEXT(a RELATION b ? kTrue : kFalse);                                           \
  }                                                                                \
  STENCIL Value NAME##_branch(BODY_ARGS) {                                         \
    int64_t a = (int64_t)slot(fp, SLOT), b = (int64_t)acc;                         \
    if (__builtin_expect(!both_fixnums(a, b), 0)) lisp_error_type(op(CODE), a, b); \
    if (a RELATION b) NEXT(acc);                                                   \
    [[clang::musttail]] return ELSE(fp, acc, self);                                \
  }
COMPARE(less, OpenCode::kLess, <)
COMPARE(less_equal, OpenCode::kLessEqual, <=)
COMPARE(num_equal, OpenCode::kNumEqual, ==)
COMPARE(greater, OpenCode::kGreater, >)
COMPARE(greater_equal, OpenCode::kGreaterEqual, >=)

// Comparisons of other than two operands: N operands from SLOT on.
STENCIL Value compare_n(BODY_ARGS) { NEXT(lisp_compare(hole(K), hole(N), &slot(fp, SLOT))); }

#define PAIR_ACCESS(NAME, CODE, FIELD)                                                    \
  STENCIL Value NAME(BODY_ARGS) {                                                         \
    if (__builtin_expect(!has(acc, Type::kPair), 0)) lisp_error_type(op(CODE), acc, acc); \
    NEXT(((Pair*)acc)->FIELD);                                                            \
  }
PAIR_ACCESS(car, OpenCode::kCar, car)
PAIR_ACCESS(cdr, OpenCode::kCdr, cdr)

STENCIL Value cons(BODY_ARGS) { NEXT(lisp_cons(slot(fp, SLOT), acc)); }
STENCIL Value is_null(BODY_ARGS) { NEXT(acc == kNil ? kTrue : kFalse); }
STENCIL Value is_pair(BODY_ARGS) { NEXT(has(acc, Type::kPair) ? kTrue : kFalse); }
STENCIL Value is_eq(BODY_ARGS) { NEXT(slot(fp, SLOT) == acc ? kTrue : kFalse); }
STENCIL Value is_not(BODY_ARGS) { NEXT(acc == kFalse ? kTrue : kFalse); }

// --- Primitives called directly: operands from SLOT on, the last in acc ---

STENCIL Value primitive0(BODY_ARGS) { NEXT(PRIM0()); }
STENCIL Value primitive1(BODY_ARGS) { NEXT(PRIM1(acc)); }
STENCIL Value primitive2(BODY_ARGS) { NEXT(PRIM2(slot(fp, SLOT), acc)); }
STENCIL Value primitive3(BODY_ARGS) {
  Value* args = &slot(fp, SLOT);
  NEXT(PRIM3(args[0], args[1], acc));
}
// Variadic: N operands in the frame from SLOT on (none in acc).
STENCIL Value primitive_n(BODY_ARGS) { NEXT(PRIMV(hole(N), &slot(fp, SLOT))); }

// --- Calls: the procedure in SLOT, its N arguments after it ---

namespace {
// The arguments past the third in a fresh array (the convention's `rest`).
inline Value* rest_of(Value* args, int64_t argc) {
  if (argc <= kRegisterArgs) return nullptr;
  Value* rest = lisp_make_args(argc - kRegisterArgs);
  for (int64_t i = kRegisterArgs; i < argc; ++i) rest[i - kRegisterArgs] = args[i];
  return rest;
}
// Argument i, or unspecified past argc (never read then; keeps the frame's end unread).
inline Value arg(const Value* p, int64_t i, int64_t argc) {
  return i < argc ? p[1 + i] : kUnspecified;
}
// The argument count of a call_n stencil: always more than fits in registers.
inline int64_t many() {
  int64_t n = hole(N);
  __builtin_assume(n > kRegisterArgs);
  return n;
}
inline Value checked(Value procedure) {
  if (__builtin_expect(!has(procedure, Type::kClosure), 0)) lisp_error_not_procedure(procedure);
  return procedure;
}
inline Value checked_global(Value procedure) {
  if (__builtin_expect(!has(procedure, Type::kClosure), 0)) {
    lisp_error_global_not_procedure((Symbol*)SYM, procedure);
  }
  return procedure;
}
// Stores a tail call for the entry stencil to make.
inline Value tail(Value* fp, Value closure, Entry entry, int64_t argc, Value* args, Value* rest) {
  fp[kTailClosure] = closure;
  fp[kTailEntry] = (Value)entry;
  fp[kTailArgc] = (Value)argc;
  fp[kTailA0] = arg(args - 1, 0, argc);
  fp[kTailA0 + 1] = arg(args - 1, 1, argc);
  fp[kTailA0 + 2] = arg(args - 1, 2, argc);
  fp[kTailRest] = (Value)rest;
  return 0;
}
}  // namespace

// call<argc><kind> / tail_call<argc><kind>: argc 0 to 3 baked in, `_n` takes it from N.
#define CALL(NAME, ARGC, PROCEDURE, ENTRY, CLOSURE)                                            \
  STENCIL Value call##NAME(BODY_ARGS) {                                                        \
    Value* p = &slot(fp, SLOT);                                                                \
    int64_t argc = ARGC;                                                                       \
    [[maybe_unused]] Value procedure = PROCEDURE;                                              \
    Value* rest = rest_of(p + 1, argc);                                                        \
    NEXT((ENTRY)((Closure*)(CLOSURE), argc, arg(p, 0, argc), arg(p, 1, argc), arg(p, 2, argc), \
                 rest));                                                                       \
  }                                                                                            \
  STENCIL Value tail_call##NAME(BODY_ARGS) {                                                   \
    Value* p = &slot(fp, SLOT);                                                                \
    int64_t argc = ARGC;                                                                       \
    [[maybe_unused]] Value procedure = PROCEDURE;                                              \
    return tail(fp, CLOSURE, ENTRY, argc, p + 1, rest_of(p + 1, argc));                        \
  }
#define CALLS(NAME, PROCEDURE, ENTRY, CLOSURE) \
  CALL(0##NAME, 0, PROCEDURE, ENTRY, CLOSURE)  \
  CALL(1##NAME, 1, PROCEDURE, ENTRY, CLOSURE)  \
  CALL(2##NAME, 2, PROCEDURE, ENTRY, CLOSURE)  \
  CALL(3##NAME, 3, PROCEDURE, ENTRY, CLOSURE)  \
  CALL(_n##NAME, many(), PROCEDURE, ENTRY, CLOSURE)
CALLS(, checked(p[0]), entry_of(procedure), procedure)
CALLS(_global, checked_global(p[0]), entry_of(procedure), procedure)
// Through a global's entry cell, which supplies the closure.
CALLS(_cell, 0, &CELL, 0)

// (apply f a ... list): f in SLOT, the spread list (extra arguments consed on) after it.
STENCIL Value apply(BODY_ARGS) {
  Value* p = &slot(fp, SLOT);
  int64_t argc = lisp_spread_args(p[1], p + 2);
  Value procedure = checked(p[0]);
  NEXT(entry_of(procedure)((Closure*)procedure, argc, p[2], p[3], p[4], (Value*)p[5]));
}
STENCIL Value tail_apply(BODY_ARGS) {
  Value* p = &slot(fp, SLOT);
  int64_t argc = lisp_spread_args(p[1], p + 2);
  Value procedure = checked(p[0]);
  return tail(fp, procedure, entry_of(procedure), argc, p + 2, (Value*)p[5]);  // p[2..5]: spread
}
