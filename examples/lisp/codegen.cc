// The LLVM tier's code generation: AST -> LLVM IR (one function per lambda, all of the uniform
// Entry type). tiers.cc links the module into a code object.
//
// Representation inside a function (closure conversion):
//   - an immutable local is an SSA value;
//   - an assigned local that no closure captures lives in a stack slot (SROA promotes it);
//   - an assigned, captured local lives in a heap Box shared by the closures;
//   - a free variable is loaded from the closure's slots (for a boxed one, the Box pointer).
//
// Every function starts by storing its closure into a volatile stack slot. The code embeds its
// literals as immediates, which the collector cannot see; the closure reaches the code object
// and through it the literal pool, so keeping the closure on the stack keeps the literals alive
// for as long as the function runs, even if the program drops its last reference meanwhile.
// The same prologue compares the stack pointer with lisp_stack_limit, so deep non-tail
// recursion raises a Lisp error instead of overflowing the stack.
//
// Calls in tail position are `musttail` calls followed by `ret`: every procedure has the same
// prototype, so LLVM must (and does) turn them into jumps, and a loop written as tail recursion
// runs in constant stack.
#include <unordered_map>

#include <spdlog/fmt/fmt.h>

#include "codeheap/log.h"
#include "examples/lisp/abi.h"
#include "examples/lisp/ast.h"
#include "examples/lisp/compiler.h"
#include "examples/lisp/error.h"
#include "examples/lisp/primitives.h"
#include "llvm/IR/IRBuilder.h"
#include "llvm/IR/Intrinsics.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/MDBuilder.h"
#include "llvm/IR/Module.h"
#include "llvm/IR/Verifier.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Transforms/InstCombine/InstCombine.h"
#include "llvm/Transforms/Scalar/EarlyCSE.h"
#include "llvm/Transforms/Scalar/SROA.h"
#include "llvm/Transforms/Scalar/SimplifyCFG.h"

namespace lisp {
namespace {

enum class Storage { kValue, kSlot, kBox };

struct Binding {
  Storage storage;
  llvm::Value* value;  // the SSA value, the stack slot, or the Box (i64)
};

class Codegen {
 public:
  Codegen(const Runtime& runtime, const std::string& module_name)
      : context_(std::make_unique<llvm::LLVMContext>()),
        module_(std::make_unique<llvm::Module>(module_name, *context_)),
        b_(*context_),
        i64_(b_.getInt64Ty()),
        ptr_(b_.getPtrTy()),
        entry_type_(llvm::FunctionType::get(i64_, {ptr_, i64_, i64_, i64_, i64_, ptr_},
                                            /*isVarArg=*/false)) {
    module_->setTargetTriple(runtime.target_triple());
    module_->setDataLayout(runtime.data_layout());
  }

  // Emits one function per lambda of `unit` in `lambdas`; templates[i] is lambda i's template.
  void emit_unit(Unit& unit, const std::vector<Template*>& templates,
                 const std::vector<int>& lambdas);
  // Verifies and optionally optimizes the module, and hands it over.
  llvm::orc::ThreadSafeModule finish(bool optimize);

 private:
  struct Frame {
    const Lambda* lambda = nullptr;
    llvm::Function* function = nullptr;
    llvm::BasicBlock* entry = nullptr;
    std::unordered_map<const Var*, Binding> bindings;
    std::unordered_map<const Var*, int> free_slots;
    llvm::Value* closure() const { return function->getArg(0); }
  };

  llvm::Function* new_function(const std::string& name);
  void emit_lambda(const Lambda& lambda);
  llvm::Value* emit(const Node* node, bool tail);
  llvm::Value* emit_if(const Node* node, bool tail);
  llvm::Value* emit_call(const Node* node, bool tail);
  llvm::Value* emit_primitive(const Node* node, bool tail);
  llvm::Value* emit_apply(const std::vector<llvm::Value*>& args, bool tail);
  llvm::Value* emit_closure(const Lambda* lambda);

  // In tail position, returns `value` from the function (and yields nullptr); otherwise
  // yields `value`.
  llvm::Value* done(llvm::Value* value, bool tail) {
    if (!tail) return value;
    b_.CreateRet(value);
    return nullptr;
  }

  // Variables.
  void bind(const Var* var, llvm::Value* value);
  llvm::Value* read(const Var* var);
  void write(const Var* var, llvm::Value* value);
  llvm::Value* raw(const Var* var);  // what a closure capturing `var` stores
  llvm::Value* global_value(Value symbol);

  // Calls.
  llvm::Value* call_procedure(llvm::FunctionCallee callee, llvm::Value* closure, llvm::Value* argc,
                              llvm::Value* a0, llvm::Value* a1, llvm::Value* a2, llvm::Value* rest,
                              bool tail);
  llvm::Value* call_with(llvm::FunctionCallee callee, llvm::Value* closure,
                         const std::vector<llvm::Value*>& args, bool tail);
  // Checks that `value` (the value of global `symbol`, if given) is a closure and yields its
  // entry point.
  llvm::Value* closure_entry(llvm::Value* value, Value symbol = kFalse);

  // Checks and open-coded operations.
  void fail_if(llvm::Value* failed, const char* error, std::vector<llvm::Value*> args);
  llvm::Value* has_type(llvm::Value* value, Type type);
  llvm::Value* arithmetic(OpenCode op, llvm::Value* a, llvm::Value* b);
  llvm::Value* compare(OpenCode op, const std::vector<llvm::Value*>& args);

  // IR helpers.
  llvm::Constant* word(Value v) { return b_.getInt64(v); }
  llvm::Constant* pointer(const void* p) {
    return llvm::ConstantExpr::getIntToPtr(b_.getInt64(reinterpret_cast<uint64_t>(p)), ptr_);
  }
  llvm::Value* address(llvm::Value* object, int offset) {
    llvm::Value* p = object->getType() == ptr_ ? object : b_.CreateIntToPtr(object, ptr_);
    return offset == 0 ? p : b_.CreateConstInBoundsGEP1_64(b_.getInt8Ty(), p, offset);
  }
  llvm::Value* load(llvm::Value* object, int offset) {
    return b_.CreateLoad(i64_, address(object, offset));
  }
  void store(llvm::Value* object, int offset, llvm::Value* value) {
    b_.CreateStore(value, address(object, offset));
  }
  llvm::Value* boolean(llvm::Value* condition) {
    return b_.CreateSelect(condition, word(kTrue), word(kFalse));
  }
  llvm::Value* alloca_in_entry(llvm::Type* type) {
    llvm::IRBuilder<> entry(frame_->entry, frame_->entry->begin());
    return entry.CreateAlloca(type);
  }
  llvm::BasicBlock* block(const char* name) {
    return llvm::BasicBlock::Create(*context_, name, frame_->function);
  }
  llvm::FunctionCallee host(const char* name, llvm::Type* result,
                            std::initializer_list<llvm::Type*> params) {
    return module_->getOrInsertFunction(name, llvm::FunctionType::get(result, params, false));
  }

  std::unique_ptr<llvm::LLVMContext> context_;
  std::unique_ptr<llvm::Module> module_;
  llvm::IRBuilder<> b_;
  llvm::IntegerType* i64_;
  llvm::PointerType* ptr_;
  llvm::FunctionType* entry_type_;
  Unit* unit_ = nullptr;
  const std::vector<Template*>* templates_ = nullptr;
  Frame* frame_ = nullptr;
};

}  // namespace

std::string function_name(const Lambda& lambda) {
  return fmt::format(
      "{}.{}", lambda.index,
      lambda.name == kFalse ? std::string("lambda") : std::string(symbol_name(lambda.name)));
}

namespace {

llvm::Function* Codegen::new_function(const std::string& name) {
  auto* f = llvm::Function::Create(entry_type_, llvm::GlobalValue::ExternalLinkage, name, *module_);
  // Unwind tables: errors thrown by host helpers unwind through this frame.
  f->setUWTableKind(llvm::UWTableKind::Async);
  f->addFnAttr("frame-pointer", "all");  // perf and gdb can walk Lisp frames
  // A cache line: fib(30) ran 3-7% slower in some runs when its code began mid-line.
  f->setAlignment(llvm::Align(64));
  return f;
}

void Codegen::emit_unit(Unit& unit, const std::vector<Template*>& templates,
                        const std::vector<int>& lambdas) {
  unit_ = &unit;
  templates_ = &templates;
  for (int index : lambdas) emit_lambda(unit.lambdas[index]);
}

void Codegen::emit_lambda(const Lambda& lambda) {
  Frame frame;
  frame.lambda = &lambda;
  frame.function = new_function(function_name(lambda));
  frame_ = &frame;
  for (size_t i = 0; i < lambda.free.size(); ++i) frame.free_slots[lambda.free[i]] = int(i);
  frame.entry = block("entry");
  b_.SetInsertPoint(frame.entry);

  llvm::Function* f = frame.function;
  llvm::Value* keep = b_.CreateAlloca(ptr_);
  b_.CreateStore(frame.closure(), keep, /*isVolatile=*/true);
  llvm::Value* limit = b_.CreateLoad(i64_, module_->getOrInsertGlobal(abi::kStackLimit, i64_));
  fail_if(b_.CreateICmpULT(b_.CreatePtrToInt(keep, i64_), limit), abi::kErrorStack, {});

  llvm::Value* argc = f->getArg(1);
  const int64_t required = static_cast<int64_t>(lambda.params.size());
  llvm::Value* bad_arity = lambda.rest != nullptr ? b_.CreateICmpSLT(argc, b_.getInt64(required))
                                                  : b_.CreateICmpNE(argc, b_.getInt64(required));
  fail_if(bad_arity, abi::kErrorArity,
          {frame.closure(), argc, b_.getInt64(required), b_.getInt64(lambda.rest != nullptr)});
  llvm::Value* rest = f->getArg(5);
  for (int64_t i = 0; i < required; ++i) {
    bind(lambda.params[i],
         i < kRegisterArgs ? f->getArg(2 + i) : load(rest, 8 * (i - kRegisterArgs)));
  }
  if (lambda.rest != nullptr) {
    llvm::Value* list = b_.CreateCall(
        host(abi::kRestList, i64_, {i64_, i64_, i64_, i64_, ptr_, i64_}),
        {argc, f->getArg(2), f->getArg(3), f->getArg(4), rest, b_.getInt64(required)});
    bind(lambda.rest, list);
  }
  emit(lambda.body, /*tail=*/true);
  frame_ = nullptr;
}

llvm::Value* Codegen::emit(const Node* node, bool tail) {
  switch (node->kind) {
    case NodeKind::kConst:
      return done(word(node->value), tail);
    case NodeKind::kLocalRef:
      return done(read(node->var), tail);
    case NodeKind::kGlobalRef:
      return done(global_value(node->value), tail);
    case NodeKind::kLocalSet:
      write(node->var, emit(node->kids[0], false));
      return done(word(kUnspecified), tail);
    case NodeKind::kGlobalSet: {
      llvm::Value* value = emit(node->kids[0], false);
      unit_->add_literal(node->value);
      b_.CreateCall(host(abi::kSetGlobal, b_.getVoidTy(), {ptr_, i64_}),
                    {pointer(as<Symbol>(node->value)), value});
      return done(word(kUnspecified), tail);
    }
    case NodeKind::kIf:
      return emit_if(node, tail);
    case NodeKind::kSeq:
      for (size_t i = 0; i + 1 < node->kids.size(); ++i) emit(node->kids[i], false);
      return emit(node->kids.back(), tail);
    case NodeKind::kLet: {
      std::vector<llvm::Value*> values;
      for (size_t i = 0; i < node->vars.size(); ++i) values.push_back(emit(node->kids[i], false));
      for (size_t i = 0; i < node->vars.size(); ++i) bind(node->vars[i], values[i]);
      return emit(node->kids.back(), tail);
    }
    case NodeKind::kLambda:
      return done(emit_closure(node->lambda), tail);
    case NodeKind::kCall:
      return emit_call(node, tail);
    case NodeKind::kPrimCall:
      return emit_primitive(node, tail);
  }
  throw Error("internal compiler error: unknown node kind");
}

llvm::Value* Codegen::emit_if(const Node* node, bool tail) {
  llvm::Value* test = emit(node->kids[0], false);
  llvm::BasicBlock* then_block = block("then");
  llvm::BasicBlock* else_block = block("else");
  b_.CreateCondBr(b_.CreateICmpNE(test, word(kFalse)), then_block, else_block);
  if (tail) {
    b_.SetInsertPoint(then_block);
    emit(node->kids[1], true);
    b_.SetInsertPoint(else_block);
    emit(node->kids[2], true);
    return nullptr;
  }
  llvm::BasicBlock* join = block("join");
  b_.SetInsertPoint(then_block);
  llvm::Value* then_value = emit(node->kids[1], false);
  llvm::BasicBlock* then_end = b_.GetInsertBlock();
  b_.CreateBr(join);
  b_.SetInsertPoint(else_block);
  llvm::Value* else_value = emit(node->kids[2], false);
  llvm::BasicBlock* else_end = b_.GetInsertBlock();
  b_.CreateBr(join);
  b_.SetInsertPoint(join);
  llvm::PHINode* phi = b_.CreatePHI(i64_, 2);
  phi->addIncoming(then_value, then_end);
  phi->addIncoming(else_value, else_end);
  return phi;
}

void Codegen::bind(const Var* var, llvm::Value* value) {
  if (var->boxed()) {
    frame_->bindings[var] = {Storage::kBox,
                             b_.CreateCall(host(abi::kMakeBox, i64_, {i64_}), {value})};
  } else if (var->assigned) {
    llvm::Value* slot = alloca_in_entry(i64_);
    b_.CreateStore(value, slot);
    frame_->bindings[var] = {Storage::kSlot, slot};
  } else {
    frame_->bindings[var] = {Storage::kValue, value};
  }
}

llvm::Value* Codegen::raw(const Var* var) {
  auto it = frame_->bindings.find(var);
  if (it == frame_->bindings.end()) {
    return load(frame_->closure(), offsetof(Closure, slots) + 8 * frame_->free_slots.at(var));
  }
  const Binding& binding = it->second;
  return binding.storage == Storage::kSlot ? b_.CreateLoad(i64_, binding.value) : binding.value;
}

llvm::Value* Codegen::read(const Var* var) {
  llvm::Value* value = raw(var);
  return var->boxed() ? load(value, offsetof(Box, value)) : value;
}

void Codegen::write(const Var* var, llvm::Value* value) {
  auto it = frame_->bindings.find(var);
  if (it != frame_->bindings.end() && it->second.storage == Storage::kSlot) {
    b_.CreateStore(value, it->second.value);
  } else {
    store(raw(var), offsetof(Box, value), value);  // assigned and not a slot: boxed
  }
}

llvm::Value* Codegen::global_value(Value symbol) {
  unit_->add_literal(symbol);
  llvm::Value* value = load(pointer(as<Symbol>(symbol)), offsetof(Symbol, value));
  fail_if(b_.CreateICmpEQ(value, word(kUnbound)), abi::kErrorUnbound,
          {pointer(as<Symbol>(symbol))});
  return value;
}

llvm::Value* Codegen::emit_closure(const Lambda* lambda) {
  Template* templ = (*templates_)[lambda->index];
  if (lambda->free.empty()) return word(to_value(templ->constant));
  llvm::Value* closure = b_.CreateCall(host(abi::kMakeClosure, ptr_, {ptr_, i64_}),
                                       {pointer(templ), b_.getInt64(lambda->free.size())});
  for (size_t i = 0; i < lambda->free.size(); ++i) {
    store(closure, offsetof(Closure, slots) + 8 * i, raw(lambda->free[i]));
  }
  return b_.CreatePtrToInt(closure, i64_);
}

void Codegen::fail_if(llvm::Value* failed, const char* error, std::vector<llvm::Value*> args) {
  std::vector<llvm::Type*> types;
  for (llvm::Value* arg : args) types.push_back(arg->getType());
  llvm::FunctionCallee callee =
      module_->getOrInsertFunction(error, llvm::FunctionType::get(b_.getVoidTy(), types, false));
  auto* declaration = llvm::cast<llvm::Function>(callee.getCallee());
  declaration->setDoesNotReturn();
  declaration->addFnAttr(llvm::Attribute::Cold);

  llvm::BasicBlock* bad = block("error");
  llvm::BasicBlock* ok = block("ok");
  b_.CreateCondBr(failed, bad, ok, llvm::MDBuilder(*context_).createUnlikelyBranchWeights());
  b_.SetInsertPoint(bad);
  b_.CreateCall(callee, args)->setDoesNotReturn();
  b_.CreateUnreachable();
  b_.SetInsertPoint(ok);
}

// i1: `value` is a heap object of `type`. The header is only read once the tag says pointer.
llvm::Value* Codegen::has_type(llvm::Value* value, Type type) {
  llvm::BasicBlock* start = b_.GetInsertBlock();
  llvm::BasicBlock* check = block("check_type");
  llvm::BasicBlock* join = block("type_known");
  b_.CreateCondBr(b_.CreateICmpEQ(b_.CreateAnd(value, 7), word(0)), check, join);
  b_.SetInsertPoint(check);
  llvm::Value* header = b_.CreateLoad(b_.getInt8Ty(), address(value, 0));
  llvm::Value* matches = b_.CreateICmpEQ(header, b_.getInt8(static_cast<uint8_t>(type)));
  b_.CreateBr(join);
  b_.SetInsertPoint(join);
  llvm::PHINode* phi = b_.CreatePHI(b_.getInt1Ty(), 2);
  phi->addIncoming(b_.getFalse(), start);
  phi->addIncoming(matches, check);
  return phi;
}

llvm::Value* Codegen::closure_entry(llvm::Value* value, Value symbol) {
  llvm::Value* not_closure = b_.CreateNot(has_type(value, Type::kClosure));
  if (symbol == kFalse) {
    fail_if(not_closure, abi::kErrorNotProcedure, {value});
  } else {
    fail_if(not_closure, abi::kErrorGlobalNotProcedure, {pointer(as<Symbol>(symbol)), value});
  }
  llvm::Value* templ = b_.CreateLoad(ptr_, address(value, offsetof(Closure, templ)));
  return b_.CreateLoad(ptr_, address(templ, offsetof(Template, entry)));
}

llvm::Value* Codegen::call_procedure(llvm::FunctionCallee callee, llvm::Value* closure,
                                     llvm::Value* argc, llvm::Value* a0, llvm::Value* a1,
                                     llvm::Value* a2, llvm::Value* rest, bool tail) {
  llvm::CallInst* call = b_.CreateCall(callee, {closure, argc, a0, a1, a2, rest});
  if (!tail) return call;
  call->setTailCallKind(llvm::CallInst::TCK_MustTail);
  b_.CreateRet(call);
  return nullptr;
}

llvm::Value* Codegen::call_with(llvm::FunctionCallee callee, llvm::Value* closure,
                                const std::vector<llvm::Value*>& args, bool tail) {
  llvm::Value* in_registers[kRegisterArgs];
  for (size_t i = 0; i < kRegisterArgs; ++i) {
    in_registers[i] = i < args.size() ? args[i] : llvm::PoisonValue::get(i64_);
  }
  llvm::Value* rest = llvm::ConstantPointerNull::get(ptr_);
  if (args.size() > kRegisterArgs) {
    rest = b_.CreateCall(host(abi::kMakeArgs, ptr_, {i64_}),
                         {b_.getInt64(args.size() - kRegisterArgs)});
    for (size_t i = kRegisterArgs; i < args.size(); ++i) {
      store(rest, 8 * (i - kRegisterArgs), args[i]);
    }
  }
  return call_procedure(callee, closure, b_.getInt64(args.size()), in_registers[0], in_registers[1],
                        in_registers[2], rest, tail);
}

llvm::Value* Codegen::emit_call(const Node* node, bool tail) {
  const Node* head = node->kids[0];
  std::vector<llvm::Value*> args;
  if (head->kind == NodeKind::kGlobalRef && (as<Symbol>(head->value)->flags & kGlobalHasCell)) {
    // What the global's entry cell does (baseline code calls the cell), inline: the global is
    // read after the arguments, checked, and its procedure's current entry called.
    for (size_t i = 1; i < node->kids.size(); ++i) args.push_back(emit(node->kids[i], false));
    llvm::Value* procedure = global_value(head->value);
    llvm::Value* entry = closure_entry(procedure, head->value);
    return call_with(llvm::FunctionCallee(entry_type_, entry), b_.CreateIntToPtr(procedure, ptr_),
                     args, tail);
  }
  llvm::Value* procedure = emit(head, false);
  for (size_t i = 1; i < node->kids.size(); ++i) args.push_back(emit(node->kids[i], false));
  llvm::Value* entry =
      closure_entry(procedure, head->kind == NodeKind::kGlobalRef ? head->value : kFalse);
  return call_with(llvm::FunctionCallee(entry_type_, entry), b_.CreateIntToPtr(procedure, ptr_),
                   args, tail);
}

llvm::Value* Codegen::arithmetic(OpenCode op, llvm::Value* a, llvm::Value* b) {
  llvm::Value* code = b_.getInt64(static_cast<uint64_t>(op));
  fail_if(b_.CreateICmpEQ(b_.CreateAnd(b_.CreateAnd(a, b), 1), word(0)), abi::kErrorType,
          {code, a, b});
  // On tagged words: (2x+1) + (2y+1) - 1 = 2(x+y)+1; (2x+1) - (2y+1) + 1 = 2(x-y)+1;
  // (2x) * y = 2xy, then | 1. Each overflows exactly when the fixnum result does not fit.
  llvm::Value* result;
  switch (op) {
    case OpenCode::kAdd:
      result = b_.CreateBinaryIntrinsic(llvm::Intrinsic::sadd_with_overflow, a,
                                        b_.CreateSub(b, word(1)));
      break;
    case OpenCode::kSub:
      result = b_.CreateBinaryIntrinsic(llvm::Intrinsic::ssub_with_overflow, a,
                                        b_.CreateSub(b, word(1)));
      break;
    default:
      result = b_.CreateBinaryIntrinsic(llvm::Intrinsic::smul_with_overflow,
                                        b_.CreateSub(a, word(1)), b_.CreateAShr(b, 1));
      break;
  }
  fail_if(b_.CreateExtractValue(result, 1), abi::kErrorOverflow, {code, a, b});
  llvm::Value* value = b_.CreateExtractValue(result, 0);
  return op == OpenCode::kMul ? b_.CreateOr(value, 1) : value;
}

llvm::Value* Codegen::compare(OpenCode op, const std::vector<llvm::Value*>& args) {
  llvm::Value* code = b_.getInt64(static_cast<uint64_t>(op));
  llvm::Value* all = b_.getTrue();
  for (size_t i = 0; i < args.size(); ++i) {
    llvm::Value* a = args[i];
    llvm::Value* b = i + 1 < args.size() ? args[i + 1] : a;
    fail_if(b_.CreateICmpEQ(b_.CreateAnd(b_.CreateAnd(a, b), 1), word(0)), abi::kErrorType,
            {code, a, b});
    if (i + 1 == args.size()) break;
    llvm::Value* holds;
    switch (op) {  // tagged fixnums compare like the integers they encode
      case OpenCode::kLess:
        holds = b_.CreateICmpSLT(a, b);
        break;
      case OpenCode::kLessEqual:
        holds = b_.CreateICmpSLE(a, b);
        break;
      case OpenCode::kGreater:
        holds = b_.CreateICmpSGT(a, b);
        break;
      case OpenCode::kGreaterEqual:
        holds = b_.CreateICmpSGE(a, b);
        break;
      default:
        holds = b_.CreateICmpEQ(a, b);
        break;
    }
    all = b_.CreateAnd(all, holds);
  }
  return boolean(all);
}

llvm::Value* Codegen::emit_primitive(const Node* node, bool tail) {
  const Primitive* prim = node->prim;
  std::vector<llvm::Value*> args;
  for (const Node* kid : node->kids) args.push_back(emit(kid, false));
  const size_t n = args.size();
  switch (prim->open_code) {
    case OpenCode::kAdd:
    case OpenCode::kSub:
    case OpenCode::kMul: {
      const bool is_mul = prim->open_code == OpenCode::kMul;
      if (n == 0) return done(word(make_fixnum(is_mul ? 1 : 0)), tail);
      // (- x) is 0 - x; (+ x) and (* x) still check that x is a number.
      llvm::Value* acc = n == 1 ? word(make_fixnum(is_mul ? 1 : 0)) : args[0];
      for (size_t i = n == 1 ? 0 : 1; i < n; ++i) acc = arithmetic(prim->open_code, acc, args[i]);
      return done(acc, tail);
    }
    case OpenCode::kLess:
    case OpenCode::kLessEqual:
    case OpenCode::kNumEqual:
    case OpenCode::kGreater:
    case OpenCode::kGreaterEqual:
      return done(compare(prim->open_code, args), tail);
    case OpenCode::kCar:
    case OpenCode::kCdr: {
      llvm::Value* code = b_.getInt64(static_cast<uint64_t>(prim->open_code));
      fail_if(b_.CreateNot(has_type(args[0], Type::kPair)), abi::kErrorType,
              {code, args[0], args[0]});
      int offset = prim->open_code == OpenCode::kCar ? offsetof(Pair, car) : offsetof(Pair, cdr);
      return done(load(args[0], offset), tail);
    }
    case OpenCode::kCons:
      return done(b_.CreateCall(host(abi::kCons, i64_, {i64_, i64_}), {args[0], args[1]}), tail);
    case OpenCode::kIsNull:
      return done(boolean(b_.CreateICmpEQ(args[0], word(kNil))), tail);
    case OpenCode::kIsPair:
      return done(boolean(has_type(args[0], Type::kPair)), tail);
    case OpenCode::kIsEq:
      return done(boolean(b_.CreateICmpEQ(args[0], args[1])), tail);
    case OpenCode::kNot:
      return done(boolean(b_.CreateICmpEQ(args[0], word(kFalse))), tail);
    case OpenCode::kApply:
      return emit_apply(args, tail);
    case OpenCode::kNone:
      break;
  }
  // A plain call of the host function: fixed arity as C arguments, otherwise (argc, argv)
  // with the arguments in a stack array (where the collector sees them).
  llvm::Value* result;
  if (prim->fixed()) {
    std::vector<llvm::Type*> types(n, i64_);
    result = b_.CreateCall(module_->getOrInsertFunction(
                               prim->host_symbol(), llvm::FunctionType::get(i64_, types, false)),
                           args);
  } else {
    llvm::Value* argv = alloca_in_entry(llvm::ArrayType::get(i64_, std::max<size_t>(n, 1)));
    for (size_t i = 0; i < n; ++i) store(argv, 8 * i, args[i]);
    result = b_.CreateCall(host(prim->host_symbol().c_str(), i64_, {i64_, ptr_}),
                           {b_.getInt64(n), argv});
  }
  return done(result, tail);
}

// (apply f a ... list): the spread arguments are collected into a list, then laid out for the
// uniform convention by the host, so the call itself can still be a tail call.
llvm::Value* Codegen::emit_apply(const std::vector<llvm::Value*>& args, bool tail) {
  llvm::Value* list = args.back();
  for (size_t i = args.size() - 2; i >= 1; --i) {
    list = b_.CreateCall(host(abi::kCons, i64_, {i64_, i64_}), {args[i], list});
  }
  llvm::Value* out = alloca_in_entry(llvm::ArrayType::get(i64_, kRegisterArgs + 1));
  llvm::Value* argc = b_.CreateCall(host(abi::kSpreadArgs, i64_, {i64_, ptr_}), {list, out});
  llvm::Value* a0 = load(out, 0);
  llvm::Value* a1 = load(out, 8);
  llvm::Value* a2 = load(out, 16);
  llvm::Value* rest = b_.CreateLoad(ptr_, address(out, 24));
  llvm::Value* entry = closure_entry(args[0]);
  return call_procedure(llvm::FunctionCallee(entry_type_, entry), b_.CreateIntToPtr(args[0], ptr_),
                        argc, a0, a1, a2, rest, tail);
}

llvm::orc::ThreadSafeModule Codegen::finish(bool optimize) {
  std::string problems;
  llvm::raw_string_ostream problem_stream(problems);
  if (llvm::verifyModule(*module_, &problem_stream)) {
    throw Error("internal compiler error: invalid IR for " + module_->getModuleIdentifier() + ": " +
                problems);
  }
  if (optimize) {
    llvm::LoopAnalysisManager loops;
    llvm::FunctionAnalysisManager functions;
    llvm::CGSCCAnalysisManager cgscc;
    llvm::ModuleAnalysisManager modules;
    llvm::PassBuilder builder;
    builder.registerModuleAnalyses(modules);
    builder.registerCGSCCAnalyses(cgscc);
    builder.registerFunctionAnalyses(functions);
    builder.registerLoopAnalyses(loops);
    builder.crossRegisterProxies(loops, functions, cgscc, modules);
    llvm::FunctionPassManager passes;
    passes.addPass(llvm::SROAPass(llvm::SROAOptions::ModifyCFG));
    passes.addPass(llvm::EarlyCSEPass());
    passes.addPass(llvm::InstCombinePass());
    passes.addPass(llvm::SimplifyCFGPass());
    llvm::ModulePassManager pipeline;
    pipeline.addPass(llvm::createModuleToFunctionPassAdaptor(std::move(passes)));
    pipeline.run(*module_, modules);
  }
  static const auto log = codeheap::logger("lisp");
  if (log->should_log(spdlog::level::trace)) {
    std::string ir;
    llvm::raw_string_ostream ir_stream(ir);
    module_->print(ir_stream, nullptr);
    log->trace("IR of {}:\n{}", module_->getModuleIdentifier(), ir_stream.str());
  }
  return llvm::orc::ThreadSafeModule(std::move(module_), std::move(context_));
}

}  // namespace

llvm::orc::ThreadSafeModule emit_llvm(const Runtime& runtime, Unit& unit,
                                      const std::vector<Template*>& templates,
                                      const std::vector<int>& lambdas, const std::string& name) {
  Codegen codegen(runtime, name);
  codegen.emit_unit(unit, templates, lambdas);
  return codegen.finish(runtime.optimize());
}

}  // namespace lisp
