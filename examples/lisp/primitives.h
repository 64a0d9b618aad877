// Primitive procedures: host functions bound to global symbols.
//
// Each primitive is reachable two ways:
//   - as a value (a Closure whose entry is a host adapter with the uniform calling convention,
//     so compiled code and map/apply call it like any procedure), and
//   - directly: a call (car x) whose operator is the untouched global primitive is compiled
//     either open-coded (OpenCode, e.g. fixnum + with an overflow check) or as a plain C call
//     of `function`, registered as the host symbol "lisp.prim.<name>".
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "examples/lisp/value.h"

namespace lisp {

class Runtime;

// Operations the code generator expands inline instead of calling `function`.
enum class OpenCode : uint8_t {
  kNone,
  kAdd,
  kSub,
  kMul,
  kLess,
  kLessEqual,
  kNumEqual,
  kGreater,
  kGreaterEqual,
  kCar,
  kCdr,
  kCons,
  kIsNull,
  kIsPair,
  kIsEq,
  kNot,
  kApply,  // so that (apply f args) in tail position is a tail call
};

struct Primitive {
  const char* name;
  int min_args;
  int max_args;  // -1: any number
  // min_args == max_args <= 3: Value (*)(Value...) with exactly that many arguments.
  // Otherwise: Value (*)(int64_t argc, const Value* argv).
  void* function;
  OpenCode open_code;

  bool fixed() const { return min_args == max_args && max_args <= kRegisterArgs; }
  bool accepts(int64_t argc) const {
    return argc >= min_args && (max_args < 0 || argc <= max_args);
  }
  std::string host_symbol() const { return std::string("lisp.prim.") + name; }
};

// Binds every primitive to its global and registers the host symbols with `runtime`.
void install_primitives(Runtime& runtime);

// The primitive behind a global symbol's value, if the global still holds its primitive.
const Primitive* primitive_of_global(Value symbol);

// The name of an open-coded operation, for error messages.
const char* open_code_name(OpenCode op);

}  // namespace lisp
