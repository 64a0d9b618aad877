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

#include "jit/link_plugin.h"

namespace codeheap::jit {

// Everything it does is carried by the graph's allocation actions: no state per resource.
class DeferredEHFramePlugin : public StatelessLinkPlugin {
 public:
  void modifyPassConfig(llvm::orc::MaterializationResponsibility& responsibility,
                        llvm::jitlink::LinkGraph& graph,
                        llvm::jitlink::PassConfiguration& config) override;
};

}  // namespace codeheap::jit
