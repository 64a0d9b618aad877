// DeferredEHFramePlugin: eh_frame registration whose deregistration waits for reclamation.
//
// LLVM 19's EHFrameRegistrationPlugin deregisters a module's frames as soon as the module is
// removed. On this heap a removed module's code is retired, not freed: a thread may still be
// running it, and an exception thrown there must unwind through it. This plugin instead attaches
// registration to each graph as a finalize action and deregistration as the matching dealloc
// action; HeapJITLinkMemoryManager runs dealloc actions only when the heap has reclaimed the
// module's blocks, that is once no thread can be inside them.
//
// Use it in place of EHFrameRegistrationPlugin with HeapJITLinkMemoryManager (with another
// memory manager it behaves like LLVM's plugin: deregistration at deallocation).
#pragma once

#include "llvm/ExecutionEngine/Orc/ObjectLinkingLayer.h"

namespace codeheap::jit {

class DeferredEHFramePlugin : public llvm::orc::ObjectLinkingLayer::Plugin {
 public:
  void modifyPassConfig(llvm::orc::MaterializationResponsibility& responsibility,
                        llvm::jitlink::LinkGraph& graph,
                        llvm::jitlink::PassConfiguration& config) override;
  // Everything is carried by the graph's allocation actions; nothing to track here.
  llvm::Error notifyFailed(llvm::orc::MaterializationResponsibility&) override {
    return llvm::Error::success();
  }
  llvm::Error notifyRemovingResources(llvm::orc::JITDylib&, llvm::orc::ResourceKey) override {
    return llvm::Error::success();
  }
  void notifyTransferringResources(llvm::orc::JITDylib&, llvm::orc::ResourceKey,
                                   llvm::orc::ResourceKey) override {}
};

}  // namespace codeheap::jit
