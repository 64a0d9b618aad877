// StatelessLinkPlugin: a base for ObjectLinkingLayer plugins that keep no state per resource.
//
// ObjectLinkingLayer::Plugin makes every plugin answer a failed materialization, the removal of
// a resource tracker and the transfer of resources between trackers. A plugin that only adds
// passes or allocation actions to each graph (everything it does travels with the graph's
// allocation) has nothing to do there; deriving from this answers all three with "nothing to
// do", leaving modifyPassConfig (and whatever else the plugin needs) to override.
#pragma once

#include "llvm/ExecutionEngine/Orc/ObjectLinkingLayer.h"

namespace codeheap::jit {

class StatelessLinkPlugin : public llvm::orc::ObjectLinkingLayer::Plugin {
 public:
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
