// The baseline tier: AST -> a chain of stencils (stencils.cc) copied and patched into one code
// unit, with no LLVM at run time. One top-level form is one unit; each lambda in it is a body
// (its operations, in order) followed by an entry stencil sized for the body's frame.
//
// Values move through an accumulator; every variable and every temporary has a slot in the
// frame (stencils.cc explains the layout). Slots are handed out like a stack: an expression
// releases the temporaries it took when it is done, so the frame is as deep as the deepest
// expression. Evaluation order and error checks follow codegen.cc exactly, so both tiers give
// the same results and the same error messages.
#include <chrono>
#include <optional>
#include <unordered_map>

#include <spdlog/fmt/fmt.h>

#include "examples/lisp/abi.h"
#include "examples/lisp/ast.h"
#include "examples/lisp/baseline.h"
#include "examples/lisp/error.h"
#include "examples/lisp/lisp_stencils.h"
#include "examples/lisp/primitives.h"
#include "jit/options.h"

namespace lisp {
namespace {

namespace s = lisp_stencils;
using Label = codeheap::jit::CodeUnitBuilder::Label;

constexpr int kFirstLocal = 7;  // fp[0..6]: closure, argc, a0..a2, rest, tail-call entry
#define LISP_FRAME_SIZES(X) X(9) X(11) X(13) X(17) X(25) X(33) X(65) X(129) X(257) X(513)
#define LISP_SIZE(n) n,
#define LISP_FIXED(n) s::kStencil_entry_fixed_##n,
#define LISP_REST(n) s::kStencil_entry_rest_##n,
constexpr int kFrameSizes[] = {LISP_FRAME_SIZES(LISP_SIZE)};
constexpr uint16_t kEntryFixed[] = {LISP_FRAME_SIZES(LISP_FIXED)};
constexpr uint16_t kEntryRest[] = {LISP_FRAME_SIZES(LISP_REST)};
#undef LISP_SIZE
#undef LISP_FIXED
#undef LISP_REST

// Stencils whose CONT, if any, the compiler sets itself (the others continue with whatever is
// emitted next).
bool ends_flow(uint16_t stencil) {
  switch (stencil) {
    case s::kStencil_jump:
    case s::kStencil_ret:
    case s::kStencil_tail_call0:
    case s::kStencil_tail_call1:
    case s::kStencil_tail_call2:
    case s::kStencil_tail_call3:
    case s::kStencil_tail_call_n:
    case s::kStencil_tail_call0_global:
    case s::kStencil_tail_call1_global:
    case s::kStencil_tail_call2_global:
    case s::kStencil_tail_call3_global:
    case s::kStencil_tail_call_n_global:
    case s::kStencil_tail_call0_cell:
    case s::kStencil_tail_call1_cell:
    case s::kStencil_tail_call2_cell:
    case s::kStencil_tail_call3_cell:
    case s::kStencil_tail_call_n_cell:
    case s::kStencil_tail_apply:
      return true;
    default:
      return false;
  }
}

int64_t offset_of_slot(int slot) { return int64_t{8} * slot; }
int64_t offset_of_free(int index) {
  return static_cast<int64_t>(offsetof(Closure, slots)) + int64_t{8} * index;
}

class Compiler {
 public:
  Compiler(BaselineTier& tier, Unit& unit, const std::vector<Template*>& templates)
      : tier_(tier), b_(tier.builder()), unit_(unit), templates_(templates) {}

  // Emits every lambda of the unit; entries_[i] labels lambda i's entry stencil.
  void emit_unit() {
    entries_.clear();
    for (const Lambda& lambda : unit_.lambdas) emit_lambda(lambda);
  }
  Label entry(size_t lambda) const { return entries_[lambda]; }

 private:
  struct Frame {
    const Lambda* lambda = nullptr;
    std::unordered_map<const Var*, int> slots;  // variables living in the frame
    std::unordered_map<const Var*, int> free;   // captured: index in the closure
    int next = kFirstLocal;
    int high = kFirstLocal;
  };

  // --- Emission primitives ---

  // Appends `stencil`; its CONT (if it continues) goes to whatever is emitted next.
  void op(uint16_t stencil) {
    flush();
    b_.append(stencil);
    if (!ends_flow(stencil)) {
      pending_ = b_.new_label();
      b_.set_label(s::kSymbol_CONT, *pending_);
    }
  }
  void flush() {
    if (pending_) b_.place(*pending_);
    pending_.reset();
  }
  void place(Label label) {
    flush();
    b_.place(label);
  }
  void value(uint16_t symbol, uint64_t v) { b_.set_value(symbol, v); }
  void slot_operand(int slot) { value(s::kSymbol_SLOT, offset_of_slot(slot)); }
  void constant(Value v) {
    unit_.add_literal(v);
    op(s::kStencil_constant);
    value(s::kSymbol_K, v);
  }

  int temp() {
    int slot = frame_->next++;
    if (frame_->next > frame_->high) frame_->high = frame_->next;
    return slot;
  }
  int temps(size_t n) {
    int first = frame_->next;
    for (size_t i = 0; i < n; ++i) temp();
    return first;
  }
  void store(int slot) {
    op(s::kStencil_set_local);
    slot_operand(slot);
  }
  void load(int slot) {
    op(s::kStencil_local);
    slot_operand(slot);
  }
  // In tail position the value in acc is the procedure's result.
  void done(bool tail) {
    if (tail) op(s::kStencil_ret);
  }

  // --- Lambdas ---

  void emit_lambda(const Lambda& lambda) {
    Frame frame;
    frame.lambda = &lambda;
    frame_ = &frame;
    for (size_t i = 0; i < lambda.free.size(); ++i) frame.free[lambda.free[i]] = int(i);
    Label body = b_.new_label();
    place(body);
    const int64_t required = static_cast<int64_t>(lambda.params.size());
    for (int64_t i = 0; i < required; ++i) {
      int slot;
      if (i < kRegisterArgs) {
        slot = 2 + int(i);
      } else {
        slot = temp();
        op(s::kStencil_param_from_rest);
        slot_operand(slot);
        value(s::kSymbol_N, i - kRegisterArgs);
      }
      bind(lambda.params[i], slot);
    }
    if (lambda.rest != nullptr) {
      int slot = temp();
      op(s::kStencil_rest_list);
      slot_operand(slot);
      value(s::kSymbol_N, required);
      bind(lambda.rest, slot);
    }
    emit(lambda.body, /*tail=*/true);

    size_t size = 0;
    while (size < std::size(kFrameSizes) && kFrameSizes[size] < frame.high) ++size;
    if (size == std::size(kFrameSizes)) {
      throw BaselineRefused(fmt::format("a frame of {} slots is too deep", frame.high));
    }
    Label entry = b_.new_label();
    place(entry);
    b_.append(lambda.rest != nullptr ? kEntryRest[size] : kEntryFixed[size]);
    b_.set_label(s::kSymbol_BODY, body);
    value(s::kSymbol_REQ, required);
    value(s::kSymbol_TEMPL, reinterpret_cast<uint64_t>(templates_[lambda.index]));
    entries_.push_back(entry);
    frame_ = nullptr;
  }

  // Binds `var` to `slot`, which holds its initial value (boxed here when it must be).
  void bind(const Var* var, int slot) {
    frame_->slots[var] = slot;
    if (var->boxed()) {
      op(s::kStencil_box_local);
      slot_operand(slot);
    }
  }

  // --- Expressions: the value ends in acc ---

  void emit(const Node* node, bool tail) {
    switch (node->kind) {
      case NodeKind::kConst:
        constant(node->value);
        return done(tail);
      case NodeKind::kLocalRef:
        read(node->var);
        return done(tail);
      case NodeKind::kGlobalRef:
        unit_.add_literal(node->value);
        op(s::kStencil_global);
        value(s::kSymbol_SYM, node->value);
        return done(tail);
      case NodeKind::kLocalSet:
        emit(node->kids[0], false);
        write(node->var);
        constant(kUnspecified);
        return done(tail);
      case NodeKind::kGlobalSet:
        emit(node->kids[0], false);
        unit_.add_literal(node->value);
        op(s::kStencil_set_global);
        value(s::kSymbol_SYM, node->value);
        return done(tail);
      case NodeKind::kIf:
        return emit_if(node, tail);
      case NodeKind::kSeq:
        for (size_t i = 0; i + 1 < node->kids.size(); ++i) emit(node->kids[i], false);
        return emit(node->kids.back(), tail);
      case NodeKind::kLet:
        return emit_let(node, tail);
      case NodeKind::kLambda:
        emit_closure(node->lambda);
        return done(tail);
      case NodeKind::kCall:
        return emit_call(node, tail);
      case NodeKind::kPrimCall:
        return emit_primitive(node, tail);
    }
    throw Error("internal compiler error: unknown node kind");
  }

  void read(const Var* var) {
    auto it = frame_->slots.find(var);
    if (it != frame_->slots.end()) {
      op(var->boxed() ? s::kStencil_local_box : s::kStencil_local);
      slot_operand(it->second);
    } else {
      op(var->boxed() ? s::kStencil_free_box : s::kStencil_free_var);
      value(s::kSymbol_SLOT, offset_of_free(frame_->free.at(var)));
    }
  }

  void write(const Var* var) {
    auto it = frame_->slots.find(var);
    if (it != frame_->slots.end()) {
      op(var->boxed() ? s::kStencil_set_local_box : s::kStencil_set_local);
      slot_operand(it->second);
    } else {  // a captured variable that is assigned is boxed
      op(s::kStencil_set_free_box);
      value(s::kSymbol_SLOT, offset_of_free(frame_->free.at(var)));
    }
  }

  void emit_if(const Node* node, bool tail) {
    Label otherwise = b_.new_label();
    const Node* test = node->kids[0];
    if (!fused_test(test, otherwise)) {
      emit(test, false);
      op(s::kStencil_branch_if_false);
      b_.set_label(s::kSymbol_ELSE, otherwise);
    }
    int mark = frame_->next;
    emit(node->kids[1], tail);
    if (tail) {
      place(otherwise);
      emit(node->kids[2], true);
      return;
    }
    Label join = b_.new_label();
    op(s::kStencil_jump);
    b_.set_label(s::kSymbol_CONT, join);
    frame_->next = mark;
    place(otherwise);
    emit(node->kids[2], false);
    place(join);
  }

  // (if (< a b) ...): the comparison branches itself instead of making a boolean.
  bool fused_test(const Node* test, Label otherwise) {
    if (test->kind != NodeKind::kPrimCall || test->kids.size() != 2) return false;
    uint16_t stencil;
    switch (test->prim->open_code) {
      case OpenCode::kLess:
        stencil = s::kStencil_less_branch;
        break;
      case OpenCode::kLessEqual:
        stencil = s::kStencil_less_equal_branch;
        break;
      case OpenCode::kNumEqual:
        stencil = s::kStencil_num_equal_branch;
        break;
      case OpenCode::kGreater:
        stencil = s::kStencil_greater_branch;
        break;
      case OpenCode::kGreaterEqual:
        stencil = s::kStencil_greater_equal_branch;
        break;
      default:
        return false;
    }
    int first = binary_operands(test);
    op(stencil);
    slot_operand(first);
    b_.set_label(s::kSymbol_ELSE, otherwise);
    frame_->next = first;
    return true;
  }

  void emit_let(const Node* node, bool tail) {
    int mark = frame_->next;
    int first = temps(node->vars.size());
    for (size_t i = 0; i < node->vars.size(); ++i) {
      emit(node->kids[i], false);
      store(first + int(i));
    }
    for (size_t i = 0; i < node->vars.size(); ++i) bind(node->vars[i], first + int(i));
    emit(node->kids.back(), tail);
    frame_->next = mark;
  }

  void emit_closure(const Lambda* lambda) {
    Template* templ = templates_[lambda->index];
    if (lambda->free.empty()) return constant(to_value(templ->constant));
    op(s::kStencil_make_closure);
    value(s::kSymbol_TEMPL, reinterpret_cast<uint64_t>(templ));
    value(s::kSymbol_N, lambda->free.size());
    for (size_t i = 0; i < lambda->free.size(); ++i) {
      const Var* var = lambda->free[i];
      auto it = frame_->slots.find(var);
      if (it != frame_->slots.end()) {
        op(s::kStencil_closure_from_local);
        slot_operand(it->second);
      } else {
        op(s::kStencil_closure_from_free);
        value(s::kSymbol_SLOT, offset_of_free(frame_->free.at(var)));
      }
      value(s::kSymbol_N, i);
    }
  }

  // Evaluates `kids` into consecutive fresh slots; returns the first.
  int operands(const std::vector<Node*>& kids, size_t from = 0) {
    int first = temps(kids.size() - from);
    for (size_t i = from; i < kids.size(); ++i) {
      emit(kids[i], false);
      store(first + int(i - from));
    }
    return first;
  }
  // Two operands: the first into a fresh slot (returned), the second left in acc.
  int binary_operands(const Node* node) {
    int first = temp();
    emit(node->kids[0], false);
    store(first);
    emit(node->kids[1], false);
    return first;
  }

  void emit_call(const Node* node, bool tail) {
    const Node* head = node->kids[0];
    const size_t argc = node->kids.size() - 1;
    const int kind = argc <= 3 ? int(argc) : 4;
    int mark = frame_->next;
    int first = temps(node->kids.size());
    uint16_t stencil;
    if (head->kind == NodeKind::kGlobalRef && (as<Symbol>(head->value)->flags & kGlobalHasCell)) {
      for (size_t i = 1; i < node->kids.size(); ++i) {
        emit(node->kids[i], false);
        store(first + int(i));
      }
      static constexpr uint16_t kCell[] = {s::kStencil_call0_cell, s::kStencil_call1_cell,
                                           s::kStencil_call2_cell, s::kStencil_call3_cell,
                                           s::kStencil_call_n_cell};
      static constexpr uint16_t kTailCell[] = {
          s::kStencil_tail_call0_cell, s::kStencil_tail_call1_cell, s::kStencil_tail_call2_cell,
          s::kStencil_tail_call3_cell, s::kStencil_tail_call_n_cell};
      stencil = (tail ? kTailCell : kCell)[kind];
      op(stencil);
      value(s::kSymbol_CELL, tier_.cell_address(head->value));
    } else {
      for (size_t i = 0; i < node->kids.size(); ++i) {
        emit(node->kids[i], false);
        store(first + int(i));
      }
      const bool global = head->kind == NodeKind::kGlobalRef;
      static constexpr uint16_t kPlain[] = {s::kStencil_call0, s::kStencil_call1, s::kStencil_call2,
                                            s::kStencil_call3, s::kStencil_call_n};
      static constexpr uint16_t kTailPlain[] = {s::kStencil_tail_call0, s::kStencil_tail_call1,
                                                s::kStencil_tail_call2, s::kStencil_tail_call3,
                                                s::kStencil_tail_call_n};
      static constexpr uint16_t kGlobal[] = {s::kStencil_call0_global, s::kStencil_call1_global,
                                             s::kStencil_call2_global, s::kStencil_call3_global,
                                             s::kStencil_call_n_global};
      static constexpr uint16_t kTailGlobal[] = {
          s::kStencil_tail_call0_global, s::kStencil_tail_call1_global,
          s::kStencil_tail_call2_global, s::kStencil_tail_call3_global,
          s::kStencil_tail_call_n_global};
      stencil = global ? (tail ? kTailGlobal : kGlobal)[kind] : (tail ? kTailPlain : kPlain)[kind];
      op(stencil);
      if (global) value(s::kSymbol_SYM, head->value);
    }
    slot_operand(first);
    if (kind == 4) value(s::kSymbol_N, argc);
    frame_->next = mark;
  }

  void emit_primitive(const Node* node, bool tail) {
    const Primitive* prim = node->prim;
    const size_t n = node->kids.size();
    const int mark = frame_->next;
    switch (prim->open_code) {
      case OpenCode::kAdd:
      case OpenCode::kSub:
      case OpenCode::kMul:
        emit_arithmetic(node);
        break;
      case OpenCode::kLess:
      case OpenCode::kLessEqual:
      case OpenCode::kNumEqual:
      case OpenCode::kGreater:
      case OpenCode::kGreaterEqual:
        emit_compare(node);
        break;
      case OpenCode::kCar:
      case OpenCode::kCdr:
      case OpenCode::kIsNull:
      case OpenCode::kIsPair:
      case OpenCode::kNot:
        emit(node->kids[0], false);
        op(unary_stencil(prim->open_code));
        break;
      case OpenCode::kCons:
      case OpenCode::kIsEq:
        slot_operand_after(binary_operands(node), prim->open_code == OpenCode::kCons
                                                      ? s::kStencil_cons
                                                      : s::kStencil_is_eq);
        break;
      case OpenCode::kApply:
        return emit_apply(node, tail);
      case OpenCode::kNone:
        emit_host_call(node, n);
        break;
    }
    frame_->next = mark;
    done(tail);
  }

  void slot_operand_after(int slot, uint16_t stencil) {
    op(stencil);
    slot_operand(slot);
  }

  static uint16_t unary_stencil(OpenCode code) {
    switch (code) {
      case OpenCode::kCar:
        return s::kStencil_car;
      case OpenCode::kCdr:
        return s::kStencil_cdr;
      case OpenCode::kIsNull:
        return s::kStencil_is_null;
      case OpenCode::kIsPair:
        return s::kStencil_is_pair;
      default:
        return s::kStencil_is_not;
    }
  }

  // Folds left to right like codegen.cc's arithmetic(): (- x) is 0 - x, (+ x) is 0 + x.
  void emit_arithmetic(const Node* node) {
    const OpenCode code = node->prim->open_code;
    const size_t n = node->kids.size();
    const uint16_t stencil = code == OpenCode::kAdd   ? s::kStencil_add
                             : code == OpenCode::kSub ? s::kStencil_sub
                                                      : s::kStencil_mul;
    const Value identity = make_fixnum(code == OpenCode::kMul ? 1 : 0);
    if (n == 0) return constant(identity);
    if (n == 2 && code != OpenCode::kMul && node->kids[1]->kind == NodeKind::kConst &&
        is_fixnum(node->kids[1]->value)) {
      emit(node->kids[0], false);
      op(code == OpenCode::kAdd ? s::kStencil_add_constant : s::kStencil_sub_constant);
      value(s::kSymbol_K, node->kids[1]->value);
      return;
    }
    if (n == 1) {
      int left = temp();
      constant(identity);
      store(left);
      emit(node->kids[0], false);
      return slot_operand_after(left, stencil);
    }
    if (n == 2) return slot_operand_after(binary_operands(node), stencil);
    // Every operand first (side effects before any check, as in the LLVM tier), then fold.
    int first = operands(node->kids);
    load(first + 1);
    slot_operand_after(first, stencil);
    for (size_t i = 2; i < n; ++i) {
      store(first);
      load(first + int(i));
      slot_operand_after(first, stencil);
    }
  }

  void emit_compare(const Node* node) {
    const OpenCode code = node->prim->open_code;
    if (node->kids.size() == 2) {
      uint16_t stencil;
      switch (code) {
        case OpenCode::kLess:
          stencil = s::kStencil_less;
          break;
        case OpenCode::kLessEqual:
          stencil = s::kStencil_less_equal;
          break;
        case OpenCode::kNumEqual:
          stencil = s::kStencil_num_equal;
          break;
        case OpenCode::kGreater:
          stencil = s::kStencil_greater;
          break;
        default:
          stencil = s::kStencil_greater_equal;
          break;
      }
      return slot_operand_after(binary_operands(node), stencil);
    }
    int first = node->kids.empty() ? temp() : operands(node->kids);
    op(s::kStencil_compare_n);
    slot_operand(first);
    value(s::kSymbol_K, static_cast<uint64_t>(code));
    value(s::kSymbol_N, node->kids.size());
  }

  // A primitive's host function called directly (fixed arity) or with (argc, argv).
  void emit_host_call(const Node* node, size_t n) {
    const Primitive* prim = node->prim;
    uintptr_t function = tier_.primitive_target(*prim);
    if (!prim->fixed()) {
      int first = n == 0 ? temp() : operands(node->kids);
      op(s::kStencil_primitive_n);
      slot_operand(first);
      value(s::kSymbol_N, n);
      value(s::kSymbol_PRIMV, function);
      return;
    }
    switch (n) {
      case 0:
        op(s::kStencil_primitive0);
        value(s::kSymbol_PRIM0, function);
        return;
      case 1:
        emit(node->kids[0], false);
        op(s::kStencil_primitive1);
        value(s::kSymbol_PRIM1, function);
        return;
      case 2:
        slot_operand_after(binary_operands(node), s::kStencil_primitive2);
        value(s::kSymbol_PRIM2, function);
        return;
      default: {
        int first = temps(2);
        emit(node->kids[0], false);
        store(first);
        emit(node->kids[1], false);
        store(first + 1);
        emit(node->kids[2], false);
        slot_operand_after(first, s::kStencil_primitive3);
        value(s::kSymbol_PRIM3, function);
        return;
      }
    }
  }

  // (apply f a ... list): f and the list in SLOT, SLOT+1, the spread arguments after them.
  void emit_apply(const Node* node, bool tail) {
    const int mark = frame_->next;
    const size_t n = node->kids.size();
    int call = temps(6);
    emit(node->kids[0], false);
    store(call);
    int extra =
        n > 2 ? operands(std::vector<Node*>(node->kids.begin() + 1, node->kids.end() - 1)) : 0;
    emit(node->kids.back(), false);
    for (size_t i = n - 2; i >= 1; --i) {
      op(s::kStencil_cons);
      slot_operand(extra + int(i - 1));
    }
    store(call + 1);
    op(tail ? s::kStencil_tail_apply : s::kStencil_apply);
    slot_operand(call);
    frame_->next = mark;
  }

  BaselineTier& tier_;
  codeheap::jit::CodeUnitBuilder& b_;
  Unit& unit_;
  const std::vector<Template*>& templates_;
  Frame* frame_ = nullptr;
  std::optional<Label> pending_;
  std::vector<Label> entries_;
};

}  // namespace

BaselineTier::BaselineTier(codeheap::Heap& heap, const codeheap::jit::HelperTable& helpers)
    : heap_(heap),
      helpers_(helpers),
      builder_(lisp_stencils::library(), helpers,
               codeheap::jit::VisibilityOptions::from_environment().perf_map) {}

// The cells' unwind info is deregistered when the heap reclaims them, or when it is destroyed.
BaselineTier::~BaselineTier() {
  for (auto& [symbol, cell] : cells_) llvm::consumeError(codeheap::jit::retire_unit(heap_, cell));
}

uintptr_t BaselineTier::primitive_target(const Primitive& prim) {
  auto [it, added] = primitive_targets_.try_emplace(&prim, 0);
  if (added) it->second = helpers_.call_target(prim.host_symbol());
  if (it->second == 0) {
    throw Error(fmt::format("internal error: primitive {} has no host symbol", prim.name));
  }
  return it->second;
}

uintptr_t BaselineTier::cell_address(Value symbol) const {
  auto it = cells_.find(symbol);
  if (it == cells_.end()) {
    throw Error(fmt::format("internal error: {} has no entry cell", symbol_name(symbol)));
  }
  return it->second.code;
}

llvm::Expected<BaselineUnit> BaselineTier::compile(Unit& unit,
                                                   const std::vector<Template*>& templates,
                                                   const std::string& name) {
  const auto start = std::chrono::steady_clock::now();
  builder_.reset();
  Compiler compiler(*this, unit, templates);
  compiler.emit_unit();
  auto emitted = builder_.emit(heap_, name);
  if (!emitted) return emitted.takeError();
  BaselineUnit result{std::move(*emitted), {}, 0};
  for (size_t i = 0; i < unit.lambdas.size(); ++i) {
    result.entries.push_back(builder_.label_address(compiler.entry(i)));
  }
  result.compile_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start)
          .count();
  return result;
}

llvm::Expected<uintptr_t> BaselineTier::make_cell(Value symbol) {
  auto it = cells_.find(symbol);
  if (it != cells_.end()) return it->second.code;
  builder_.reset();
  builder_.append(lisp_stencils::kStencil_cell);
  builder_.set_value(lisp_stencils::kSymbol_SYM, symbol);
  auto emitted = builder_.emit(heap_, fmt::format("lisp:cell {}", symbol_name(symbol)));
  if (!emitted) return emitted.takeError();
  uintptr_t code = emitted->code;
  cells_.emplace(symbol, std::move(*emitted));
  return code;
}

}  // namespace lisp
