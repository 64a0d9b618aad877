#include "bench/jit_support.h"

#include "llvm/AsmParser/Parser.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/TargetSelect.h"

namespace codeheap::bench {

void check(llvm::Error err, const std::string& what) {
  if (err) die(what + ": " + llvm::toString(std::move(err)));
}

std::unique_ptr<Heap> make_heap(const std::string& name) {
  HeapOptions options;
  options.name = name;
  auto heap = Heap::create(options);
  if (!heap) die("creating heap '" + name + "': " + heap.error().message);
  return std::move(*heap);
}

void initialize_native_target() {
  static const bool missing = llvm::InitializeNativeTarget() ||
                              llvm::InitializeNativeTargetAsmPrinter() ||
                              llvm::InitializeNativeTargetAsmParser();
  if (missing) die("LLVM has no native target for this host");
}

llvm::orc::ThreadSafeModule parse_module(std::string_view ir, const std::string& name) {
  auto context = std::make_unique<llvm::LLVMContext>();
  llvm::SMDiagnostic diagnostic;
  std::unique_ptr<llvm::Module> module = llvm::parseAssembly(
      llvm::MemoryBufferRef(llvm::StringRef(ir.data(), ir.size()), name), diagnostic, *context);
  if (!module) die("parsing " + name + ": " + diagnostic.getMessage().str());
  return llvm::orc::ThreadSafeModule(std::move(module), std::move(context));
}

std::unique_ptr<llvm::orc::LLJIT> make_stock_lljit() {
  initialize_native_target();
  return check(llvm::orc::LLJITBuilder().create(), "creating the stock LLJIT");
}

}  // namespace codeheap::bench
