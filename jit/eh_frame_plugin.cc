#include "jit/eh_frame_plugin.h"

#include "llvm/ExecutionEngine/JITLink/JITLink.h"
#include "llvm/ExecutionEngine/Orc/Shared/AllocationActions.h"
#include "llvm/ExecutionEngine/Orc/Shared/WrapperFunctionUtils.h"
#include "llvm/ExecutionEngine/Orc/TargetProcess/RegisterEHFrames.h"

namespace codeheap::jit {

using llvm::orc::ExecutorAddr;
using llvm::orc::ExecutorAddrRange;
using llvm::orc::shared::SPSArgList;
using llvm::orc::shared::SPSExecutorAddrRange;
using llvm::orc::shared::WrapperFunctionCall;

void DeferredEHFramePlugin::modifyPassConfig(llvm::orc::MaterializationResponsibility&,
                                             llvm::jitlink::LinkGraph&,
                                             llvm::jitlink::PassConfiguration& config) {
  // After fixups the section's final address is known and its content is in place. Built in
  // place: moving a unique_function that holds a lambda inline makes gcc warn that its unused
  // out-of-line storage may be uninitialized.
  config.PostFixupPasses.emplace_back([](llvm::jitlink::LinkGraph& graph) -> llvm::Error {
    llvm::jitlink::Section* section = graph.findSectionByName(".eh_frame");
    if (section == nullptr) return llvm::Error::success();
    llvm::jitlink::SectionRange range(*section);
    if (range.empty()) return llvm::Error::success();
    ExecutorAddrRange frames = range.getRange();
    auto call = [&](auto* wrapper) {
      return WrapperFunctionCall::Create<SPSArgList<SPSExecutorAddrRange>>(
          ExecutorAddr::fromPtr(wrapper), frames);
    };
    auto registration = call(&llvm_orc_registerEHFrameSectionWrapper);
    if (!registration) return registration.takeError();
    auto deregistration = call(&llvm_orc_deregisterEHFrameSectionWrapper);
    if (!deregistration) return deregistration.takeError();
    graph.allocActions().push_back({std::move(*registration), std::move(*deregistration)});
    return llvm::Error::success();
  });
}

}  // namespace codeheap::jit
