// Shared by mcjit_test.cc and visibility_test.cc: MCJIT engines and RTDyld-based LLJITs on an
// RtdyldMemoryManager, built from textual IR with the Small code model.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "codeheap/heap.h"
#include "jit/rtdyld_memory_manager.h"
#include "llvm/AsmParser/Parser.h"
#include "llvm/ExecutionEngine/ExecutionEngine.h"
#include "llvm/ExecutionEngine/JITEventListener.h"
#include "llvm/ExecutionEngine/MCJIT.h"
#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/ExecutionEngine/Orc/RTDyldObjectLinkingLayer.h"
#include "llvm/ExecutionEngine/Orc/ThreadSafeModule.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/raw_ostream.h"

namespace codeheap::jit::testing {

inline void init_native_target() {
  static std::once_flag once;
  std::call_once(once, [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
  });
}

// Members are destroyed bottom-up: the engine (which owns the module and the manager) goes
// before the context the module lives in.
struct McjitEngine {
  std::unique_ptr<llvm::LLVMContext> context;
  std::unique_ptr<llvm::ExecutionEngine> engine;
  RtdyldMemoryManager* manager = nullptr;  // owned by `engine`

  template <typename F>
  F function(const std::string& name) {
    return reinterpret_cast<F>(engine->getFunctionAddress(name));
  }
};

// Parses `ir`, creates an MCJIT engine (CodeModel::Small, static relocations) whose sections
// live in `heap`, lets `configure` define host symbols, attaches `listeners` and finalizes.
// On failure the returned engine is null and a gtest failure has been recorded.
template <typename Configure>
McjitEngine make_mcjit(Heap& heap, const std::string& ir, const std::string& name,
                       Configure configure,
                       const std::vector<llvm::JITEventListener*>& listeners = {}) {
  init_native_target();
  McjitEngine result;
  result.context = std::make_unique<llvm::LLVMContext>();
  llvm::SMDiagnostic diagnostic;
  std::unique_ptr<llvm::Module> module = llvm::parseAssemblyString(ir, diagnostic, *result.context);
  if (!module) {
    std::string text;
    llvm::raw_string_ostream os(text);
    diagnostic.print(name.c_str(), os);
    ADD_FAILURE() << "IR does not parse: " << text;
    return result;
  }
  auto manager = std::make_unique<RtdyldMemoryManager>(heap, name);
  result.manager = manager.get();
  configure(*manager);
  std::string error;
  result.engine.reset(llvm::EngineBuilder(std::move(module))
                          .setEngineKind(llvm::EngineKind::JIT)
                          .setErrorStr(&error)
                          .setMCJITMemoryManager(std::move(manager))
                          .setCodeModel(llvm::CodeModel::Small)
                          .setRelocationModel(llvm::Reloc::Static)
                          .setOptLevel(llvm::CodeGenOptLevel::Default)
                          .create());
  if (!result.engine) {
    ADD_FAILURE() << "EngineBuilder: " << error;
    result.manager = nullptr;
    return result;
  }
  // MCJIT installs LLVM's own GDB listener; visibility.h asks users to replace it by ours.
  result.engine->UnregisterJITEventListener(
      llvm::JITEventListener::createGDBRegistrationListener());
  for (llvm::JITEventListener* listener : listeners)
    result.engine->RegisterJITEventListener(listener);
  result.engine->finalizeObject();
  return result;
}

inline McjitEngine make_mcjit(Heap& heap, const std::string& ir, const std::string& name) {
  return make_mcjit(heap, ir, name, [](RtdyldMemoryManager&) {});
}

inline std::unique_ptr<Heap> make_heap(HeapOptions options) {
  auto heap = Heap::create(std::move(options));
  if (!heap) {
    ADD_FAILURE() << "Heap::create: " << heap.error().message;
    return nullptr;
  }
  return std::move(*heap);
}

// A heap far smaller than the default, so tests never crowd the low window.
inline std::unique_ptr<Heap> make_heap(const std::string& name) {
  HeapOptions options;
  options.code_bytes = size_t{16} << 20;
  options.read_only_bytes = size_t{8} << 20;
  options.data_bytes = size_t{8} << 20;
  options.name = name;
  return make_heap(std::move(options));
}

// "" for success, else the error's text (consumes the error either way).
inline std::string error_text(llvm::Error error) {
  return error ? llvm::toString(std::move(error)) : std::string();
}

// An LLJIT whose object layer is an RTDyldObjectLinkingLayer making one RtdyldMemoryManager
// (owner `name`) per object, CodeModel::Small, no platform; `configure` adjusts the layer.
inline std::unique_ptr<llvm::orc::LLJIT> make_rtdyld_lljit(
    Heap& heap, const std::string& name,
    std::function<void(llvm::orc::RTDyldObjectLinkingLayer&)> configure = {}) {
  init_native_target();
  auto machine = llvm::orc::JITTargetMachineBuilder::detectHost();
  if (!machine) {
    ADD_FAILURE() << llvm::toString(machine.takeError());
    return nullptr;
  }
  machine->setCodeModel(llvm::CodeModel::Small);
  machine->setRelocationModel(llvm::Reloc::Static);
  auto jit =
      llvm::orc::LLJITBuilder()
          .setJITTargetMachineBuilder(std::move(*machine))
          .setObjectLinkingLayerCreator(
              [&heap, name, configure](llvm::orc::ExecutionSession& session, const llvm::Triple&) {
                auto layer = std::make_unique<llvm::orc::RTDyldObjectLinkingLayer>(
                    session,
                    [&heap, name] { return std::make_unique<RtdyldMemoryManager>(heap, name); });
                if (configure) configure(*layer);
                return layer;
              })
          .setPlatformSetUp(llvm::orc::setUpInactivePlatform)
          .create();
  if (!jit) {
    ADD_FAILURE() << llvm::toString(jit.takeError());
    return nullptr;
  }
  return std::move(*jit);
}

inline llvm::orc::ThreadSafeModule parse_module(const std::string& ir) {
  auto context = std::make_unique<llvm::LLVMContext>();
  llvm::SMDiagnostic diagnostic;
  auto module = llvm::parseAssemblyString(ir, diagnostic, *context);
  EXPECT_TRUE(module) << diagnostic.getMessage().str();
  return llvm::orc::ThreadSafeModule(std::move(module), std::move(context));
}

}  // namespace codeheap::jit::testing
