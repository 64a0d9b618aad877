// Syntax analysis: Lisp data -> AST (ast.h). Expands the derived forms, resolves variables
// lexically and records, for closure conversion, which variables are captured and assigned and
// which free variables each lambda must carry.
#include <algorithm>
#include <string>
#include <utility>

#include <spdlog/fmt/fmt.h>

#include "examples/lisp/ast.h"
#include "examples/lisp/compiler.h"
#include "examples/lisp/error.h"
#include "examples/lisp/primitives.h"
#include "examples/lisp/reader.h"

namespace lisp {
namespace {

struct Keywords {
  Value quote = intern("quote"), if_ = intern("if"), define = intern("define"),
        set = intern("set!"), lambda = intern("lambda"), let = intern("let"),
        let_star = intern("let*"), letrec = intern("letrec"), letrec_star = intern("letrec*"),
        begin = intern("begin"), and_ = intern("and"), or_ = intern("or"), cond = intern("cond"),
        else_ = intern("else"), arrow = intern("=>"), when = intern("when"),
        unless = intern("unless");
};

const Keywords& keywords() {
  static const Keywords k;  // symbols are never collected, so plain statics are fine
  return k;
}

[[noreturn]] void bad_syntax(Value form, const std::string& what) {
  throw Error(fmt::format("bad syntax in {}: {}", write_short(form, 72), what));
}

// The elements of a proper list, or a syntax error naming `whole`.
std::vector<Value, traceable_allocator<Value>> elements(Value list, Value whole) {
  std::vector<Value, traceable_allocator<Value>> out;
  for (; is_pair(list); list = cdr(list)) out.push_back(car(list));
  if (list != kNil) bad_syntax(whole, "not a proper list");
  return out;
}

// A lexical contour: the variables one binding form introduces.
struct Scope {
  Scope* parent;
  Lambda* lambda;  // the lambda whose frame holds these variables
  std::vector<std::pair<Value, Var*>> bindings;
};

class Analyzer {
 public:
  explicit Analyzer(Unit& unit) : unit_(unit), k_(keywords()) {}

  Lambda* lambda(Value params, Value body_forms, Value whole, Scope* scope, Value name);
  Lambda* thunk(Value expr);

 private:
  Node* expr(Value x, Scope* scope, Value name = kFalse);
  Node* body(Value forms, Scope* scope, Value whole);
  Node* call(Value x, Scope* scope);
  Node* special(Value head, Value x, Scope* scope, Value name, bool* handled);
  Node* let(Value x, Scope* scope);
  Node* named_let(Value x, Scope* scope);
  Node* let_star(Value x, Scope* scope);
  Node* letrec(Value x, Scope* scope);
  Node* and_or(Value operands, Scope* scope, bool is_and);
  Node* cond(Value clauses, Value whole, Scope* scope);
  Node* sequence(Value forms, Value whole, Scope* scope);

  Var* new_var(Value name, Scope* scope);
  Var* bind(Scope* scope, Value name, Value whole);
  Var* lookup(Value symbol, Scope* scope);
  bool is_keyword(Value head, Value keyword, Scope* scope) {
    return head == keyword && lookup_binding(keyword, scope) == nullptr;
  }
  static Var* lookup_binding(Value symbol, Scope* scope);

  Node* constant(Value v) {
    Node* n = unit_.node(NodeKind::kConst);
    n->value = v;
    unit_.add_literal(v);
    return n;
  }
  Node* local_ref(Var* var) {
    Node* n = unit_.node(NodeKind::kLocalRef);
    n->var = var;
    return n;
  }
  Node* local_set(Var* var, Node* value) {
    Node* n = unit_.node(NodeKind::kLocalSet);
    n->var = var;
    n->kids = {value};
    var->assigned = true;
    return n;
  }
  Node* if_node(Node* test, Node* then, Node* otherwise) {
    Node* n = unit_.node(NodeKind::kIf);
    n->kids = {test, then, otherwise};
    return n;
  }
  Node* let_node(std::vector<Var*> vars, std::vector<Node*> inits, Node* body) {
    Node* n = unit_.node(NodeKind::kLet);
    n->vars = std::move(vars);
    n->kids = std::move(inits);
    n->kids.push_back(body);
    return n;
  }
  Node* seq(std::vector<Node*> kids) {
    if (kids.size() == 1) return kids.front();
    Node* n = unit_.node(NodeKind::kSeq);
    n->kids = std::move(kids);
    return n;
  }

  Unit& unit_;
  const Keywords& k_;
  int depth_ = 0;  // expressions being analyzed around the current one
};

Var* Analyzer::new_var(Value name, Scope* scope) {
  Var* var = &unit_.vars.emplace_back();
  var->name = name;
  var->owner = scope->lambda;
  return var;
}

Var* Analyzer::bind(Scope* scope, Value name, Value whole) {
  if (!is_symbol(name))
    bad_syntax(whole, fmt::format("{} is not a variable name", write_short(name, 72)));
  for (auto& [bound, var] : scope->bindings) {
    if (bound == name) bad_syntax(whole, fmt::format("{} is bound twice", symbol_name(name)));
  }
  Var* var = new_var(name, scope);
  scope->bindings.emplace_back(name, var);
  return var;
}

Var* Analyzer::lookup_binding(Value symbol, Scope* scope) {
  for (Scope* s = scope; s != nullptr; s = s->parent) {
    for (auto it = s->bindings.rbegin(); it != s->bindings.rend(); ++it) {
      if (it->first == symbol) return it->second;
    }
  }
  return nullptr;
}

// Resolves `symbol`; a variable of an enclosing lambda becomes a free variable of every lambda
// between here and its owner, so each closure can hand it down to the next.
Var* Analyzer::lookup(Value symbol, Scope* scope) {
  Var* var = lookup_binding(symbol, scope);
  if (var == nullptr || var->owner == scope->lambda) return var;
  var->captured = true;
  for (Lambda* l = scope->lambda; l != var->owner; l = l->parent) {
    if (std::find(l->free.begin(), l->free.end(), var) == l->free.end()) l->free.push_back(var);
  }
  return var;
}

Lambda* Analyzer::lambda(Value params, Value body_forms, Value whole, Scope* scope, Value name) {
  Lambda* l = &unit_.lambdas.emplace_back();
  l->index = static_cast<int>(unit_.lambdas.size()) - 1;
  l->name = name;
  l->parent = scope != nullptr ? scope->lambda : nullptr;
  Scope inner{scope, l, {}};
  for (; is_pair(params); params = cdr(params))
    l->params.push_back(bind(&inner, car(params), whole));
  if (params != kNil) l->rest = bind(&inner, params, whole);
  l->body = body(body_forms, &inner, whole);
  return l;
}

Lambda* Analyzer::thunk(Value expr) {
  Lambda* l = &unit_.lambdas.emplace_back();
  Scope scope{nullptr, l, {}};
  l->body = this->expr(expr, &scope);
  return l;
}

Node* Analyzer::expr(Value x, Scope* scope, Value name) {
  // Bounded as the reader bounds data: the analysis and both tiers' code generators recurse on
  // nesting, and data built at run time (for eval) can nest as deep as memory allows.
  if (depth_ == Reader::kMaxNesting) {
    throw Error(fmt::format("bad syntax: expressions nested more than {} deep", depth_));
  }
  struct Nested {
    int& depth;
    explicit Nested(int& d) : depth(++d) {}
    ~Nested() { --depth; }
  } nested(depth_);
  if (is_symbol(x)) {
    if (Var* var = lookup(x, scope)) return local_ref(var);
    Node* n = unit_.node(NodeKind::kGlobalRef);
    n->value = x;
    return n;
  }
  if (!is_pair(x)) {
    if (x == kNil) bad_syntax(x, "empty combination (quote it: '())");
    return constant(x);  // numbers, strings, characters, booleans evaluate to themselves
  }
  Value head = car(x);
  if (is_symbol(head)) {
    bool handled = false;
    Node* n = special(head, x, scope, name, &handled);
    if (handled) return n;
  }
  return call(x, scope);
}

Node* Analyzer::call(Value x, Scope* scope) {
  auto forms = elements(x, x);
  Value head = forms.front();
  if (is_symbol(head) && lookup_binding(head, scope) == nullptr) {
    // A global primitive called with an arity it accepts: call the host function directly (a
    // wrong arity is left to the generic call, which reports it at run time).
    const Primitive* prim = primitive_of_global(head);
    if (prim != nullptr && prim->accepts(static_cast<int64_t>(forms.size()) - 1)) {
      Node* n = unit_.node(NodeKind::kPrimCall);
      n->prim = prim;
      for (size_t i = 1; i < forms.size(); ++i) n->kids.push_back(expr(forms[i], scope));
      return n;
    }
  }
  Node* n = unit_.node(NodeKind::kCall);
  for (Value form : forms) n->kids.push_back(expr(form, scope));
  return n;
}

Node* Analyzer::special(Value head, Value x, Scope* scope, Value name, bool* handled) {
  *handled = true;
  Value operands = cdr(x);
  int64_t count = list_length(operands);
  if (is_keyword(head, k_.quote, scope)) {
    if (count != 1) bad_syntax(x, "quote takes exactly one datum");
    return constant(car(operands));
  }
  if (is_keyword(head, k_.if_, scope)) {
    if (count != 2 && count != 3) bad_syntax(x, "expected (if test then [else])");
    Node* otherwise = count == 3 ? expr(car(cdr(cdr(operands))), scope) : constant(kUnspecified);
    return if_node(expr(car(operands), scope), expr(car(cdr(operands)), scope), otherwise);
  }
  if (is_keyword(head, k_.lambda, scope)) {
    if (count < 2) bad_syntax(x, "expected (lambda params body...)");
    Node* n = unit_.node(NodeKind::kLambda);
    n->lambda = lambda(car(operands), cdr(operands), x, scope, name);
    return n;
  }
  if (is_keyword(head, k_.set, scope)) {
    if (count != 2 || !is_symbol(car(operands))) bad_syntax(x, "expected (set! variable expr)");
    Value target = car(operands);
    Node* value = expr(car(cdr(operands)), scope, target);
    if (Var* var = lookup(target, scope)) return local_set(var, value);
    Node* n = unit_.node(NodeKind::kGlobalSet);
    n->value = target;
    n->kids = {value};
    return n;
  }
  if (is_keyword(head, k_.define, scope)) {
    bad_syntax(x, "define is only allowed at top level or at the start of a body");
  }
  if (is_keyword(head, k_.begin, scope)) {
    if (count < 0) bad_syntax(x, "not a proper list");
    return count == 0 ? constant(kUnspecified) : sequence(operands, x, scope);
  }
  if (is_keyword(head, k_.let, scope)) {
    if (count >= 2 && is_symbol(car(operands))) return named_let(x, scope);
    return let(x, scope);
  }
  if (is_keyword(head, k_.let_star, scope)) return let_star(x, scope);
  if (is_keyword(head, k_.letrec, scope) || is_keyword(head, k_.letrec_star, scope)) {
    return letrec(x, scope);
  }
  if (is_keyword(head, k_.and_, scope) || is_keyword(head, k_.or_, scope)) {
    if (count < 0) bad_syntax(x, "not a proper list");
    return and_or(operands, scope, head == k_.and_);
  }
  if (is_keyword(head, k_.cond, scope)) {
    if (count < 1) bad_syntax(x, "expected (cond clause...)");
    return cond(operands, x, scope);
  }
  if (is_keyword(head, k_.when, scope) || is_keyword(head, k_.unless, scope)) {
    if (count < 2) bad_syntax(x, "expected a test and at least one expression");
    Node* test = expr(car(operands), scope);
    Node* action = sequence(cdr(operands), x, scope);
    return head == k_.when ? if_node(test, action, constant(kUnspecified))
                           : if_node(test, constant(kUnspecified), action);
  }
  *handled = false;
  return nullptr;
}

Node* Analyzer::sequence(Value forms, Value whole, Scope* scope) {
  std::vector<Node*> kids;
  for (Value form : elements(forms, whole)) kids.push_back(expr(form, scope));
  return seq(std::move(kids));
}

// A body: expressions, possibly with internal defines, which mean letrec* (each defined name
// is bound, unassigned, over the whole body and assigned where its define stands).
Node* Analyzer::body(Value forms, Scope* scope, Value whole) {
  auto items = elements(forms, whole);
  if (items.empty()) bad_syntax(whole, "empty body");
  auto is_define = [&](Value form) {
    return is_pair(form) && is_keyword(car(form), k_.define, scope);
  };
  if (std::none_of(items.begin(), items.end(), is_define)) return sequence(forms, whole, scope);

  Scope inner{scope, scope->lambda, {}};
  std::vector<Definition, traceable_allocator<Definition>> definitions;
  std::vector<Var*> vars;
  std::vector<Node*> inits;
  for (Value form : items) {
    if (!is_define(form)) continue;
    definitions.push_back(parse_definition(form));
    vars.push_back(bind(&inner, definitions.back().name, form));
    inits.push_back(constant(kUnassigned));
  }
  std::vector<Node*> kids;
  size_t next = 0;
  for (Value form : items) {
    if (is_define(form)) {
      const Definition& d = definitions[next];
      Var* var = vars[next++];
      Node* value = d.has_value ? expr(d.value_form, &inner, var->name) : constant(kUnspecified);
      kids.push_back(local_set(var, value));
    } else {
      kids.push_back(expr(form, &inner));
    }
  }
  if (is_define(items.back())) kids.push_back(constant(kUnspecified));
  return let_node(std::move(vars), std::move(inits), seq(std::move(kids)));
}

Node* Analyzer::let(Value x, Scope* scope) {
  Value operands = cdr(x);
  if (list_length(operands) < 2) bad_syntax(x, "expected (let ((name expr) ...) body...)");
  Scope inner{scope, scope->lambda, {}};
  std::vector<Var*> vars;
  std::vector<Node*> inits;
  for (Value binding : elements(car(operands), x)) {
    if (list_length(binding) != 2) bad_syntax(x, "each binding must be (name expr)");
    inits.push_back(expr(car(cdr(binding)), scope, car(binding)));
    vars.push_back(bind(&inner, car(binding), x));
  }
  return let_node(std::move(vars), std::move(inits), body(cdr(operands), &inner, x));
}

// (let loop ((v init) ...) body...) = ((letrec ((loop (lambda (v ...) body...))) loop) init ...)
Node* Analyzer::named_let(Value x, Scope* scope) {
  Value operands = cdr(x);
  Value loop_name = car(operands);
  Value bindings = car(cdr(operands));
  Value params = kNil, *tail = &params;
  std::vector<Node*> inits;
  for (Value binding : elements(bindings, x)) {
    if (list_length(binding) != 2) bad_syntax(x, "each binding must be (name expr)");
    inits.push_back(expr(car(cdr(binding)), scope));
    // Rooted through the Unit: the analyzer allocates while these are in use.
    *tail = unit_.roots.emplace_back(cons(car(binding), kNil));
    tail = &as<Pair>(*tail)->cdr;
  }
  Scope inner{scope, scope->lambda, {}};
  Var* loop = bind(&inner, loop_name, x);
  Node* fn = unit_.node(NodeKind::kLambda);
  fn->lambda = lambda(params, cdr(cdr(operands)), x, &inner, loop_name);
  Node* call = unit_.node(NodeKind::kCall);
  call->kids.push_back(local_ref(loop));
  for (Node* init : inits) call->kids.push_back(init);
  return let_node({loop}, {constant(kUnassigned)}, seq({local_set(loop, fn), call}));
}

Node* Analyzer::let_star(Value x, Scope* scope) {
  Value operands = cdr(x);
  if (list_length(operands) < 2) bad_syntax(x, "expected (let* ((name expr) ...) body...)");
  auto bindings = elements(car(operands), x);
  // Each binding opens a scope of its own; the body sees them all.
  std::vector<Scope> scopes;
  scopes.reserve(bindings.size());
  std::vector<Node*> lets;
  Scope* current = scope;
  for (Value binding : bindings) {
    if (list_length(binding) != 2) bad_syntax(x, "each binding must be (name expr)");
    Node* init = expr(car(cdr(binding)), current, car(binding));
    scopes.push_back(Scope{current, scope->lambda, {}});
    current = &scopes.back();
    lets.push_back(let_node({bind(current, car(binding), x)}, {init}, nullptr));
  }
  Node* result = body(cdr(operands), current, x);
  for (auto it = lets.rbegin(); it != lets.rend(); ++it) {
    (*it)->kids.back() = result;
    result = *it;
  }
  return result;
}

Node* Analyzer::letrec(Value x, Scope* scope) {
  Value operands = cdr(x);
  if (list_length(operands) < 2) bad_syntax(x, "expected (letrec ((name expr) ...) body...)");
  auto bindings = elements(car(operands), x);
  Scope inner{scope, scope->lambda, {}};
  std::vector<Var*> vars;
  std::vector<Node*> inits, kids;
  for (Value binding : bindings) {
    if (list_length(binding) != 2) bad_syntax(x, "each binding must be (name expr)");
    vars.push_back(bind(&inner, car(binding), x));
    inits.push_back(constant(kUnassigned));
  }
  for (size_t i = 0; i < bindings.size(); ++i) {
    kids.push_back(local_set(vars[i], expr(car(cdr(bindings[i])), &inner, vars[i]->name)));
  }
  kids.push_back(body(cdr(operands), &inner, x));
  return let_node(std::move(vars), std::move(inits), seq(std::move(kids)));
}

Node* Analyzer::and_or(Value operands, Scope* scope, bool is_and) {
  if (operands == kNil) return constant(make_bool(is_and));
  Node* first = expr(car(operands), scope);
  if (cdr(operands) == kNil) return first;
  Node* rest = and_or(cdr(operands), scope, is_and);
  if (is_and) return if_node(first, rest, constant(kFalse));
  // (or a b) = (let ((t a)) (if t t b)), with t invisible to the program.
  Var* t = new_var(kFalse, scope);
  return let_node({t}, {first}, if_node(local_ref(t), local_ref(t), rest));
}

Node* Analyzer::cond(Value clauses, Value whole, Scope* scope) {
  if (clauses == kNil) return constant(kUnspecified);
  Value clause = car(clauses);
  int64_t length = list_length(clause);
  if (length < 1) bad_syntax(whole, fmt::format("bad cond clause {}", write_short(clause, 72)));
  Value test = car(clause);
  if (is_keyword(test, k_.else_, scope)) {
    if (cdr(clauses) != kNil) bad_syntax(whole, "else must be the last cond clause");
    if (length < 2) bad_syntax(whole, "else clause without expressions");
    return sequence(cdr(clause), whole, scope);
  }
  Node* rest = cond(cdr(clauses), whole, scope);
  if (length == 1) {  // (test): the test's value if true
    Var* t = new_var(kFalse, scope);
    return let_node({t}, {expr(test, scope)}, if_node(local_ref(t), local_ref(t), rest));
  }
  if (is_keyword(car(cdr(clause)), k_.arrow, scope)) {  // (test => receiver)
    if (length != 3) bad_syntax(whole, "expected (test => receiver)");
    Var* t = new_var(kFalse, scope);
    Node* call = unit_.node(NodeKind::kCall);
    call->kids = {expr(car(cdr(cdr(clause))), scope), local_ref(t)};
    return let_node({t}, {expr(test, scope)}, if_node(local_ref(t), call, rest));
  }
  return if_node(expr(test, scope), sequence(cdr(clause), whole, scope), rest);
}

}  // namespace

Definition parse_definition(Value form) {
  Value operands = cdr(form);
  int64_t count = list_length(operands);
  if (count < 1) {
    bad_syntax(form, "expected (define name expr) or (define (name . params) body...)");
  }
  Value target = car(operands);
  Definition d{target, kUnspecified, count == 2};
  if (is_pair(target)) {
    if (count < 2) bad_syntax(form, "procedure definition without a body");
    d.name = car(target);
    d.value_form = cons(keywords().lambda, cons(cdr(target), cdr(operands)));
    d.has_value = true;
  } else if (count > 2) {
    bad_syntax(form, "expected (define name expr)");
  } else if (count == 2) {
    d.value_form = car(cdr(operands));
  }
  if (!is_symbol(d.name)) bad_syntax(form, "the name to define must be a symbol");
  return d;
}

void analyze_lambda(Unit& unit, Value lambda_form, Value name) {
  unit.roots.push_back(lambda_form);
  Analyzer analyzer(unit);
  if (!is_pair(lambda_form) || car(lambda_form) != keywords().lambda ||
      list_length(lambda_form) < 3) {
    bad_syntax(lambda_form, "expected (lambda params body...)");
  }
  analyzer.lambda(car(cdr(lambda_form)), cdr(cdr(lambda_form)), lambda_form, nullptr, name);
}

void analyze_thunk(Unit& unit, Value expr) {
  unit.roots.push_back(expr);
  Analyzer(unit).thunk(expr);
}

}  // namespace lisp
