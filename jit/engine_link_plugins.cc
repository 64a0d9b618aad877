// The engine's own link passes (engine_internal.h): each module's owner and heap bytes, and
// function names for the heap's crash reports.
#include <algorithm>
#include <cstdint>

#include "codeheap/log.h"
#include "jit/engine_internal.h"
#include "jit/link_plugin.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ExecutionEngine/JITLink/JITLink.h"
#include "llvm/Support/MathExtras.h"

namespace codeheap::jit {

// MemProt's bitwise operators live in namespace llvm; this pulls them in.
LLVM_ENABLE_BITMASK_ENUMS_IN_NAMESPACE();

namespace engine_internal {

using llvm::Error;

namespace {

// The heap block of each standard-lifetime segment as HeapJITLinkMemoryManager lays it out:
// from the segment's first block, aligned down to the segment's largest alignment (where the
// heap block starts), to its last block's end, rounded up to the heap's 16-byte granule.
uint64_t heap_bytes_of(llvm::jitlink::LinkGraph& graph) {
  constexpr uint64_t kGranule = 16;  // heap.h: a block's footprint
  struct Span {
    llvm::orc::MemProt prot;
    uint64_t begin = UINT64_MAX;
    uint64_t end = 0;
    uint64_t alignment = 1;
  };
  llvm::SmallVector<Span, 4> spans;
  for (llvm::jitlink::Section& section : graph.sections()) {
    if (section.getMemLifetime() != llvm::orc::MemLifetime::Standard || section.empty()) continue;
    auto span = llvm::find_if(spans, [&](const Span& s) { return s.prot == section.getMemProt(); });
    if (span == spans.end()) span = &spans.emplace_back(Span{section.getMemProt()});
    for (llvm::jitlink::Block* block : section.blocks()) {
      const uint64_t address = block->getAddress().getValue();
      span->begin = std::min(span->begin, address);
      span->end = std::max(span->end, address + block->getSize());
      span->alignment = std::max<uint64_t>(span->alignment, block->getAlignment());
    }
  }
  uint64_t bytes = 0;
  for (const Span& s : spans) {
    const uint64_t start = llvm::alignDown(s.begin, s.alignment);
    bytes += llvm::alignTo(std::max<uint64_t>(s.end - start, 1), kGranule);
  }
  return bytes;
}

class FunctionNamer final : public StatelessLinkPlugin {
 public:
  explicit FunctionNamer(Heap& heap) : heap_(heap) {}

  void modifyPassConfig(llvm::orc::MaterializationResponsibility&, llvm::jitlink::LinkGraph&,
                        llvm::jitlink::PassConfiguration& config) override {
    config.PostAllocationPasses.push_back([this](llvm::jitlink::LinkGraph& graph) {
      name(graph);
      return Error::success();
    });
  }

 private:
  void name(llvm::jitlink::LinkGraph& graph) {
    llvm::SmallVector<SymbolRange, 8> functions;
    for (const llvm::jitlink::Symbol* symbol : graph.defined_symbols()) {
      const llvm::jitlink::Section& section = symbol->getBlock().getSection();
      if (!symbol->hasName() || !symbol->isCallable() ||
          section.getMemLifetime() != llvm::orc::MemLifetime::Standard ||
          (section.getMemProt() & llvm::orc::MemProt::Exec) == llvm::orc::MemProt::None)
        continue;
      functions.push_back({symbol->getAddress().getValue(), symbol->getSize(), symbol->getName()});
    }
    // A refusal only costs a crash report the function's name; the link goes on.
    if (auto added = heap_.add_symbols(functions); !added)
      logger("jit")->debug("graph '{}': {}", graph.getName(), added.error().message);
  }

  Heap& heap_;
};

}  // namespace

void ModuleLinks::expect(llvm::orc::ResourceKey key, OwnerId owner, bool count_bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  links_[key] = Link{owner, count_bytes, 0, nullptr};
}

uint64_t ModuleLinks::take(llvm::orc::ResourceKey key) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = links_.find(key);
  if (it == links_.end()) return 0;
  const uint64_t bytes = it->second.bytes;
  links_.erase(it);
  return bytes;
}

namespace {

// The resource key of what `responsibility` materializes; 0 for a tracker removed meanwhile,
// whose link fails anyway.
llvm::orc::ResourceKey key_of(llvm::orc::MaterializationResponsibility& responsibility) {
  llvm::orc::ResourceKey key = 0;
  if (Error err = responsibility.withResourceKeyDo([&](llvm::orc::ResourceKey k) { key = k; }))
    llvm::consumeError(std::move(err));
  return key;
}

}  // namespace

void ModuleLinks::modifyPassConfig(llvm::orc::MaterializationResponsibility& responsibility,
                                   llvm::jitlink::LinkGraph& graph,
                                   llvm::jitlink::PassConfiguration& config) {
  const llvm::orc::ResourceKey key = key_of(responsibility);
  bool count_bytes = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = links_.find(key);
    if (it == links_.end()) return;
    it->second.placed = &graph;
    count_bytes = it->second.count_bytes;
    memory_.place_under(graph, it->second.owner);
  }
  config.PostAllocationPasses.push_back([this, key, count_bytes](llvm::jitlink::LinkGraph& graph) {
    const uint64_t bytes = count_bytes ? heap_bytes_of(graph) : 0;
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = links_.find(key);
    if (it != links_.end()) {
      it->second.placed = nullptr;  // allocated: the memory manager took the placement
      it->second.bytes += bytes;
    }
    return Error::success();
  });
}

Error ModuleLinks::notifyFailed(llvm::orc::MaterializationResponsibility& responsibility) {
  const llvm::orc::ResourceKey key = key_of(responsibility);
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = links_.find(key);
  if (it != links_.end() && it->second.placed != nullptr) {
    memory_.forget_placement(*it->second.placed);
    it->second.placed = nullptr;
  }
  return Error::success();
}

std::unique_ptr<llvm::orc::ObjectLinkingLayer::Plugin> make_function_namer(Heap& heap) {
  return std::make_unique<FunctionNamer>(heap);
}

}  // namespace engine_internal
}  // namespace codeheap::jit
