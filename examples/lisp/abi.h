// The contract between generated code and the host: the names under which the runtime
// registers its helpers (Runtime::define_host_symbol) and their IR signatures. codegen.cc
// declares them, runtime.cc defines and registers them; both include this file.
//
// Every compiled procedure has the uniform type of lisp::Entry,
//   i64 (ptr closure, i64 argc, i64 a0, i64 a1, i64 a2, ptr rest)
// six arguments, all passed in registers on x86-64, so that every Lisp call in tail position
// can be a `musttail` call (caller and callee prototypes match) that compiles to a jump.
#pragma once

namespace lisp::abi {

// Allocation.
inline constexpr char kCons[] = "lisp_cons";                 // i64 (i64 car, i64 cdr)
inline constexpr char kMakeBox[] = "lisp_make_box";          // i64 (i64 value)
inline constexpr char kMakeClosure[] = "lisp_make_closure";  // ptr (ptr Template, i64 slots)
inline constexpr char kMakeArgs[] = "lisp_make_args";        // ptr (i64 count)
// The list of arguments from `fixed` on: i64 (i64 argc, i64 a0, i64 a1, i64 a2, ptr rest,
// i64 fixed).
inline constexpr char kRestList[] = "lisp_rest_list";
// For apply: spreads a proper list into out[0..2] (a0..a2) and out[3] (rest); returns argc.
// i64 (i64 list, ptr out)
inline constexpr char kSpreadArgs[] = "lisp_spread_args";

// Globals: void (ptr symbol, i64 value).
inline constexpr char kSetGlobal[] = "lisp_set_global";

// Baseline tier only. i64 (i64 open_code, i64 argc, ptr argv): a comparison of other than two
// operands. void (ptr template): a lambda's call budget ran out (tiers.h).
inline constexpr char kCompare[] = "lisp_compare";
inline constexpr char kTierUp[] = "lisp_tier_up";

// The lowest stack address compiled code may run at (i64, host data, per running thread).
inline constexpr char kStackLimit[] = "lisp_stack_limit";

// Errors: never return; they throw lisp::Error, which unwinds through compiled frames.
inline constexpr char kErrorUnbound[] = "lisp_error_unbound";             // void (ptr symbol)
inline constexpr char kErrorNotProcedure[] = "lisp_error_not_procedure";  // void (i64 value)
// void (ptr symbol, i64 value): a call of a global that does not hold a procedure
inline constexpr char kErrorGlobalNotProcedure[] = "lisp_error_global_not_procedure";
// void (ptr closure, i64 argc, i64 required, i64 variadic)
inline constexpr char kErrorArity[] = "lisp_error_arity";
// void (i64 open_code, i64 a, i64 b): an open-coded primitive got an argument of the wrong type
inline constexpr char kErrorType[] = "lisp_error_type";
inline constexpr char kErrorOverflow[] = "lisp_error_overflow";  // void (i64 open_code, i64, i64)
inline constexpr char kErrorStack[] = "lisp_error_stack";        // void ()

}  // namespace lisp::abi
