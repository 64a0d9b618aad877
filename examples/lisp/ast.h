// The compiler's intermediate form: what syntax.cc makes of a top-level form and codegen.cc
// turns into LLVM IR. Derived forms (let*, letrec, named let, internal define, and, or, cond,
// when, unless) are already expanded; variables are resolved to Var records with the facts
// closure conversion needs (assigned? captured?), and every lambda knows its free variables.
//
// Nodes live in a Unit and die with it. Nodes live in malloc memory, which the collector does
// not scan, so the Unit roots what they point to: the source form (`roots`) and the constants
// the code embeds (`literals`, which becomes the code object's literal pool).
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <unordered_set>
#include <vector>

#include "examples/lisp/boehm.h"
#include "examples/lisp/value.h"

namespace lisp {

struct Primitive;
struct Lambda;

struct Var {
  Value name = kFalse;  // a symbol; #f for compiler temporaries
  Lambda* owner = nullptr;
  bool assigned = false;  // target of set! (letrec and internal defines count)
  bool captured = false;  // referenced from a lambda nested inside its owner
  // Shared mutable state lives in a heap box; everything else is copied into closures.
  bool boxed() const { return assigned && captured; }
};

enum class NodeKind {
  kConst,      // value
  kLocalRef,   // var
  kGlobalRef,  // value = symbol
  kLocalSet,   // var, kids = {value}
  kGlobalSet,  // value = symbol, kids = {value}
  kIf,         // kids = {test, then, else}
  kSeq,        // kids = {first, ..., last}
  kLet,        // vars, kids = {init..., body}
  kLambda,     // lambda
  kCall,       // kids = {procedure, args...}
  kPrimCall,   // prim, kids = {args...}: a global primitive the compiler calls directly
};

struct Node {
  NodeKind kind = NodeKind::kConst;
  Value value = 0;
  Var* var = nullptr;
  Lambda* lambda = nullptr;
  const Primitive* prim = nullptr;
  std::vector<Var*> vars;
  std::vector<Node*> kids;
};

struct Lambda {
  int index = 0;        // its function is "<index>.<name>" in the module
  Value name = kFalse;  // symbol it is bound to, if any (for messages and printing)
  std::vector<Var*> params;
  Var* rest = nullptr;  // (a b . rest) or (lambda args ...)
  Node* body = nullptr;
  Lambda* parent = nullptr;
  std::vector<Var*> free;  // captured from enclosing lambdas, in closure slot order
};

// Everything compiled together into one code object: a top-level lambda (or thunk) and the
// lambdas nested in it. Owns the nodes.
struct Unit {
  std::deque<Node> nodes;
  std::deque<Var> vars;
  std::deque<Lambda> lambdas;  // lambdas[0] is the top-level one
  // traceable_allocator: uncollectable memory that the collector scans.
  std::vector<Value, traceable_allocator<Value>> roots;
  std::vector<void*, traceable_allocator<void*>> literals;  // heap values the code embeds

  std::unordered_set<Value> literal_set;  // only to avoid duplicates; `literals` roots them

  Node* node(NodeKind kind) {
    Node* n = &nodes.emplace_back();
    n->kind = kind;
    return n;
  }
  void add_literal(Value v) {
    if (is_object(v) && literal_set.insert(v).second)
      literals.push_back(reinterpret_cast<void*>(v));
  }
};

// Analyzes `lambda_form`, a (lambda ...) form, as a top-level procedure named `name` (a symbol
// or #f). Throws lisp::Error naming the offending form on bad syntax.
void analyze_lambda(Unit& unit, Value lambda_form, Value name);
// Analyzes `expr` as the body of a procedure of no arguments.
void analyze_thunk(Unit& unit, Value expr);

}  // namespace lisp
