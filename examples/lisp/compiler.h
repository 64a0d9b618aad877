// The compiler: Lisp forms -> LLVM IR -> a code object in the code heap.
//
// One top-level form is one compilation unit: syntax.cc turns it into an AST (ast.h),
// codegen.cc emits one LLVM function per lambda into one module, and gc::Runtime::compile
// links that module into a code object whose literal pool holds every heap value the code
// embeds. Each lambda gets a template closure (in the pool) that points at the code object;
// a lambda without free variables *is* its template, one with free variables copies it.
#pragma once

#include <string>

#include "examples/lisp/value.h"
#include "examples/lisp/runtime.h"

namespace lisp {

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

// The JIT symbol of `symbol`'s entry cell, which compiled callers of the global call directly.
std::string entry_cell_name(Value symbol);

// IR for the body behind `symbol`'s entry cell. With `target`, a jump to `target` (the
// closure the global holds; it stays alive through the global as long as the cell points
// here). Without, a generic body that loads the global's value on each call and checks it.
std::string entry_cell_ir(const Runtime& runtime, Value symbol, Closure* target);

}  // namespace lisp
