// Lisp values: one tagged 64-bit word.
//
//   ...xxxxxxx1   fixnum: a 63-bit signed integer n stored as (n << 1) | 1
//   ...xxxxx000   pointer to an object in the Boehm heap (untagged, so the conservative
//                 collector recognizes it on stacks, in registers and inside other objects)
//   ...xxxxx010   constant: #f, #t, '(), unspecified, the unbound / unassigned markers
//   ...xxxxx110   character: code point << 3 | 6
//
// Fixnum arithmetic works on the tagged words directly (a + b - 1, a - b + 1, (a - 1) * (b >> 1)
// | 1) so the compiled fast paths are one overflow-checked instruction each. Comparisons compare
// tagged words as signed integers: the encoding is monotonic.
//
// Every heap object starts with a header word whose low byte is its Type; the generated code
// reads that byte to tell a closure or a pair from other objects. Field offsets are part of the
// calling convention between the compiler and the runtime, hence the static_asserts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace codeheap::gc {
struct CodeObject;
}

namespace lisp {

using Value = uint64_t;

inline constexpr Value kFalse = 0x02;
inline constexpr Value kTrue = 0x0A;
inline constexpr Value kNil = 0x12;
inline constexpr Value kUnspecified = 0x1A;
// The value slot of a global that was never defined.
inline constexpr Value kUnbound = 0x22;
// A letrec / internal-define variable read before its initialization ran.
inline constexpr Value kUnassigned = 0x2A;

inline constexpr int64_t kFixnumMax = (int64_t{1} << 62) - 1;
inline constexpr int64_t kFixnumMin = -(int64_t{1} << 62);

inline bool is_fixnum(Value v) { return (v & 1) != 0; }
inline int64_t fixnum_value(Value v) { return static_cast<int64_t>(v) >> 1; }
inline Value make_fixnum(int64_t n) { return (static_cast<uint64_t>(n) << 1) | 1; }
inline bool fits_fixnum(int64_t n) { return n >= kFixnumMin && n <= kFixnumMax; }

inline bool is_char(Value v) { return (v & 7) == 6; }
inline uint32_t char_value(Value v) { return static_cast<uint32_t>(v >> 3); }
inline Value make_char(uint32_t code) { return (Value{code} << 3) | 6; }

inline Value make_bool(bool b) { return b ? kTrue : kFalse; }

enum class Type : uint8_t {
  kPair = 1,
  kString = 2,
  kSymbol = 3,
  kClosure = 4,
  kBox = 5,
  kTemplate = 6,
};

inline bool is_object(Value v) { return (v & 7) == 0; }

struct Object {
  uint64_t header;  // low byte: Type
};

inline Type type_of(const Object* o) { return static_cast<Type>(o->header & 0xff); }
inline bool has_type(Value v, Type t) {
  return is_object(v) && type_of(reinterpret_cast<const Object*>(v)) == t;
}

struct Pair {
  uint64_t header;
  Value car;
  Value cdr;
};

// Immutable; allocated pointer-free (GC_MALLOC_ATOMIC). `chars` is NUL-terminated.
struct String {
  uint64_t header;
  int64_t length;
  char chars[];
};

// Interned, never collected (the symbol table holds every symbol). A symbol doubles as the
// global variable of its name: `value` is the global's value (kUnbound when undefined).
struct Symbol {
  uint64_t header;
  String* name;
  Value value;
  uint64_t hash;
  uint64_t flags;  // kGlobal* below
};

// Symbol::flags.
// The global still holds the primitive installed at startup, so calls may bypass the value.
inline constexpr uint64_t kGlobalPrimitive = 1;
// The global has an entry cell (see runtime.h): a stub in the code heap that loads the global,
// checks that it holds a procedure and jumps to that procedure's current code. Compiled callers
// call the stub, so a redefinition or a tier-up is seen by callers compiled long before.
inline constexpr uint64_t kGlobalHasCell = 2;

// Host or compiled procedure with the uniform calling convention (see docs/lisp.md):
// `closure` is the closure being called, `argc` the argument count, a0..a2 the first three
// arguments and `rest` a GC-allocated array holding arguments 3..argc-1 (null when argc <= 3).
struct Closure;
using Entry = Value (*)(Closure* closure, int64_t argc, Value a0, Value a1, Value a2, Value* rest);
inline constexpr int kRegisterArgs = 3;

// How a Template's code was made.
enum class Tier : uint8_t { kHost = 0, kBaseline = 1, kOptimized = 2 };

// One per lambda (and per primitive): where every closure of the lambda finds its code. Calls
// load `entry` through the closure, so one release store here (a tier-up) switches every
// existing closure, and only `code` keeps the machine code alive: once a tier-up replaced it,
// the baseline code is garbage like any other. Not a Lisp value (no type test sees one).
struct Template {
  uint64_t header;
  Entry entry;                     // the current tier's code
  codeheap::gc::CodeObject* code;  // null for host primitives
  Value name;                      // a symbol, or #f for an anonymous lambda
  int64_t budget;                  // baseline calls left before a tier-up is requested
  Closure* constant;               // the one closure of a lambda without free variables
  // For the LLVM tier: the top-level form this lambda was compiled from, how (kSource*), its
  // index among that form's lambdas and the templates of all of them (nested lambdas).
  Value source;
  Template** siblings;
  uint32_t index;
  uint8_t source_kind;
  Tier tier;
  uint8_t tier_up_requested;
};
inline constexpr uint8_t kSourceLambda = 0;  // source is (lambda ...) named `name` of lambda 0
inline constexpr uint8_t kSourceThunk = 1;   // source is an expression evaluated by lambda 0

// A flat closure: the captured variables are copied in (mutable ones as Box pointers). Header
// bits 8.. hold the number of captured slots. Host primitives have one slot: a pointer to
// their static descriptor.
struct Closure {
  uint64_t header;
  Template* templ;
  Value slots[];
};

// The cell of a variable that is both captured and assigned (set! must be seen by every
// closure sharing it).
struct Box {
  uint64_t header;
  Value value;
};

// Offsets the code generator relies on.
static_assert(offsetof(Pair, car) == 8 && offsetof(Pair, cdr) == 16);
static_assert(offsetof(Symbol, value) == 16);
static_assert(offsetof(Closure, templ) == 8 && offsetof(Closure, slots) == 16);
static_assert(offsetof(Template, entry) == 8 && offsetof(Template, budget) == 32);
static_assert(offsetof(Box, value) == 8);

template <typename T>
T* as(Value v) {
  return reinterpret_cast<T*>(v);
}
template <typename T>
Value to_value(T* object) {
  return reinterpret_cast<Value>(object);
}

inline bool is_pair(Value v) { return has_type(v, Type::kPair); }
inline bool is_symbol(Value v) { return has_type(v, Type::kSymbol); }
inline bool is_string(Value v) { return has_type(v, Type::kString); }
inline bool is_closure(Value v) { return has_type(v, Type::kClosure); }

inline Value car(Value v) { return as<Pair>(v)->car; }
inline Value cdr(Value v) { return as<Pair>(v)->cdr; }
inline std::string_view string_view_of(Value v) {
  return {as<String>(v)->chars, static_cast<size_t>(as<String>(v)->length)};
}
inline std::string_view symbol_name(Value v) {
  return string_view_of(to_value(as<Symbol>(v)->name));
}

// Allocation in the Boehm heap. They throw lisp::Error when the collector is out of memory.
Value cons(Value car, Value cdr);
Value make_string(std::string_view text);
// Interns `name`: the same name always gives the same symbol.
Value intern(std::string_view name);
Value make_box(Value value);
// A template with no code yet (entry null, budget as given).
Template* make_template(Value name, int64_t budget);
// A closure of `templ` with `slots` captured slots, all unspecified.
Closure* make_closure(Template* templ, size_t slots);
// A pointer-holding array of `count` values for a call's `rest` arguments.
Value* make_value_array(size_t count);

// Length of a proper list, or -1 when `list` is improper (dotted or not a list).
int64_t list_length(Value list);

// external representation: `write` quotes strings and characters, `display` does not.
std::string write_string(Value v);
std::string display_string(Value v);
// write_string(v), cut to at most `limit` characters (ending in "...") for messages.
std::string write_short(Value v, size_t limit = 60);

}  // namespace lisp
