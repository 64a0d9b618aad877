// The compiler: Lisp forms -> machine code in the code heap, in two tiers.
//
// One top-level form is one compilation unit: syntax.cc turns it into an AST (ast.h). The
// baseline tier (baseline.h) copies and patches stencils for every lambda of the unit into one
// code unit in microseconds; the LLVM tier (codegen.cc) emits one LLVM function per lambda and
// gc::Runtime links the module. Either way the result is a code object whose literal pool holds
// every heap value the code embeds. Each lambda has a Template (value.h) through which all its
// closures reach its current code; a lambda without free variables has one constant closure.
// tiers.cc decides which tier compiles what and tiers hot lambdas up (docs/tiers.md).
#pragma once

#include <string>
#include <vector>

#include "examples/lisp/runtime.h"
#include "examples/lisp/value.h"
#include "llvm/ExecutionEngine/Orc/ThreadSafeModule.h"

namespace lisp {

struct Unit;
struct Lambda;

// Compiles (lambda params body...) as a top-level procedure named `name` (symbol or #f).
// Throws lisp::Error on bad syntax or when the code heap refuses the code.
Closure* compile_lambda(Runtime& runtime, Value lambda_form, Value name,
                        const std::string& unit_name);

// Compiles `expr` into a procedure of no arguments; calling it evaluates `expr`.
Closure* compile_thunk(Runtime& runtime, Value expr, const std::string& unit_name);

// A definition taken apart: (define name expr), (define name), or (define (name . params)
// body...), whose value form is then the equivalent (lambda params body...).
struct Definition {
  Value name;
  Value value_form;  // meaningful when has_value
  bool has_value;
};
// Throws lisp::Error naming `form` when it is not a well-formed definition.
Definition parse_definition(Value form);

// The LLVM tier: a module with one function per lambda of `unit` listed in `lambdas` (by
// index), named function_name(lambda); templates[i] is lambda i's template.
llvm::orc::ThreadSafeModule emit_llvm(const Runtime& runtime, Unit& unit,
                                      const std::vector<Template*>& templates,
                                      const std::vector<int>& lambdas, const std::string& name);
std::string function_name(const Lambda& lambda);

}  // namespace lisp
