// The engine's compilation: the target machine it compiles for, textual IR parsing, and the
// pooled IR compiler with the object keeper it feeds (engine_internal.h).
#include <string>
#include <utility>

#include "jit/engine.h"
#include "jit/engine_internal.h"
#include "llvm/AsmParser/Parser.h"
#include "llvm/ExecutionEngine/Orc/CompileUtils.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Metadata.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/TargetSelect.h"

namespace codeheap::jit {

using llvm::Expected;
using llvm::StringRef;

Expected<llvm::orc::JITTargetMachineBuilder> target_machine_builder(const EngineOptions& options) {
  static const bool native_target_missing = [] {
    return llvm::InitializeNativeTarget() || llvm::InitializeNativeTargetAsmPrinter() ||
           llvm::InitializeNativeTargetAsmParser();
  }();
  if (native_target_missing)
    return engine_internal::jit_error("LLVM has no native target for this host");
  auto builder = llvm::orc::JITTargetMachineBuilder::detectHost();
  if (!builder) return builder.takeError();
  builder->setCodeModel(options.code_model)
      .setRelocationModel(options.relocation_model)
      .setCodeGenOptLevel(options.opt_level);
  return builder;
}

namespace engine_internal {

namespace {
constexpr const char* kKeepObjectMetadata = "codeheap.keep_object";
}  // namespace

uint64_t ObjectKeeper::expect() {
  std::lock_guard<std::mutex> lock(mutex_);
  const uint64_t token = next_++;
  objects_[token] = nullptr;
  return token;
}

void ObjectKeeper::put(uint64_t token, std::unique_ptr<llvm::MemoryBuffer> object) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = objects_.find(token);
  if (it != objects_.end()) it->second = std::move(object);
}

std::unique_ptr<llvm::MemoryBuffer> ObjectKeeper::take(uint64_t token) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = objects_.find(token);
  if (it == objects_.end()) return nullptr;
  std::unique_ptr<llvm::MemoryBuffer> object = std::move(it->second);
  objects_.erase(it);
  return object;
}

void ObjectKeeper::tag(llvm::Module& module, uint64_t token) {
  llvm::LLVMContext& context = module.getContext();
  module.getOrInsertNamedMetadata(kKeepObjectMetadata)
      ->addOperand(llvm::MDNode::get(context, llvm::MDString::get(context, std::to_string(token))));
}

uint64_t ObjectKeeper::untag(llvm::Module& module) {
  llvm::NamedMDNode* tag = module.getNamedMetadata(kKeepObjectMetadata);
  if (tag == nullptr) return 0;
  uint64_t token = 0;
  if (tag->getNumOperands() == 1 && tag->getOperand(0)->getNumOperands() == 1) {
    if (auto* text = llvm::dyn_cast<llvm::MDString>(tag->getOperand(0)->getOperand(0))) {
      if (text->getString().getAsInteger(10, token)) token = 0;
    }
  }
  module.eraseNamedMetadata(tag);
  return token;
}

PooledIRCompiler::PooledIRCompiler(llvm::orc::JITTargetMachineBuilder builder, ObjectKeeper& keeper)
    : IRCompiler(llvm::orc::irManglingOptionsFromTargetOptions(builder.getOptions())),
      builder_(std::move(builder)),
      keeper_(keeper) {}

Expected<std::unique_ptr<llvm::MemoryBuffer>> PooledIRCompiler::operator()(llvm::Module& module) {
  const uint64_t token = ObjectKeeper::untag(module);
  std::unique_ptr<llvm::TargetMachine> machine;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!idle_.empty()) {
      machine = std::move(idle_.back());
      idle_.pop_back();
    }
  }
  if (!machine) {
    auto made = builder_.createTargetMachine();
    if (!made) return made.takeError();
    machine = std::move(*made);
  }
  auto object = llvm::orc::SimpleCompiler(*machine)(module);
  if (token != 0 && object) {
    keeper_.put(token, llvm::MemoryBuffer::getMemBufferCopy((*object)->getBuffer(),
                                                            (*object)->getBufferIdentifier()));
  }
  std::lock_guard<std::mutex> lock(mutex_);
  idle_.push_back(std::move(machine));
  return object;
}

Expected<llvm::orc::ThreadSafeModule> parse_module(StringRef ir_text, StringRef name) {
  auto context = std::make_unique<llvm::LLVMContext>();
  llvm::SMDiagnostic diagnostic;
  std::unique_ptr<llvm::Module> module =
      llvm::parseAssembly(llvm::MemoryBufferRef(ir_text, name), diagnostic, *context);
  if (!module) {
    return jit_error(llvm::formatv("cannot parse module '{0}': line {1}, column {2}: {3}", name,
                                   diagnostic.getLineNo(), diagnostic.getColumnNo() + 1,
                                   diagnostic.getMessage()));
  }
  return llvm::orc::ThreadSafeModule(std::move(module), std::move(context));
}

}  // namespace engine_internal
}  // namespace codeheap::jit
