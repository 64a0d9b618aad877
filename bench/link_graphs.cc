#include "bench/link_graphs.h"

#include <cstring>
#include <string>
#include <utility>

#include "bench/jit_support.h"
#include "llvm/ADT/BitmaskEnum.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/Triple.h"

namespace codeheap::bench {

using llvm::jitlink::JITLinkMemoryManager;
using llvm::orc::MemProt;

// MemProt's bitwise operators live in namespace llvm; this pulls them in.
LLVM_ENABLE_BITMASK_ENUMS_IN_NAMESPACE();

namespace {

// Section contents. A content block refers to these bytes until BasicLayout copies them into
// the allocation's working memory, so every manager copies the same amount.
alignas(16) const char kContent[8192] = {};
constexpr size_t kBlockAlignment = 16;

// A reference that LLVM 19's unique_function stores inline. It keeps a callable in its own
// buffer only if the callable's alignment is 1 (it compares with the alignment of that
// std::byte array), so a lambda capturing a pointer is put on the heap: a malloc and a free per
// callback, three per cycle, for every manager alike. The harness's callbacks capture their
// result slot through this instead, so that the rows time the managers, not the harness.
template <typename T>
class InlineRef {
 public:
  explicit InlineRef(T& target) {
    T* pointer = &target;
    std::memcpy(bytes_, &pointer, sizeof pointer);
  }
  T& operator*() const {
    T* pointer;
    std::memcpy(&pointer, bytes_, sizeof pointer);
    return *pointer;
  }

 private:
  unsigned char bytes_[sizeof(T*)];
};

}  // namespace

const RequestShape kSmallRequest{
    "small", {{".text", MemProt::Read | MemProt::Exec, 256}, {".rodata", MemProt::Read, 64}}};
const RequestShape kMixedRequest{"mixed16k",
                                 {{".text", MemProt::Read | MemProt::Exec, 8192},
                                  {".rodata", MemProt::Read, 4096},
                                  {".data", MemProt::Read | MemProt::Write, 4096}}};

std::unique_ptr<llvm::jitlink::LinkGraph> make_graph(const RequestShape& shape) {
  static const llvm::Triple triple(llvm::sys::getProcessTriple());
  auto graph = std::make_unique<llvm::jitlink::LinkGraph>(
      "bench", triple, 8, llvm::endianness::little, llvm::jitlink::getGenericEdgeKindName);
  for (const SegmentShape& segment : shape.segments) {
    llvm::jitlink::Section& section = graph->createSection(segment.section, segment.prot);
    graph->createContentBlock(section, llvm::ArrayRef<char>(kContent, segment.bytes),
                              llvm::orc::ExecutorAddr(), kBlockAlignment, 0);
  }
  return graph;
}

ReusableGraph::ReusableGraph(const RequestShape& shape) : graph_(make_graph(shape)) {
  for (llvm::jitlink::Block* block : graph_->blocks()) {
    blocks_.emplace_back(block, block->getSize());
  }
}

void ReusableGraph::reset() {
  for (auto [block, size] : blocks_) {
    block->setContent(llvm::ArrayRef<char>(kContent, size));
    block->setAddress(llvm::orc::ExecutorAddr());
  }
}

JITLinkMemoryManager::FinalizedAlloc allocate_and_finalize(JITLinkMemoryManager& manager,
                                                           llvm::jitlink::LinkGraph& graph) {
  std::unique_ptr<JITLinkMemoryManager::InFlightAlloc> in_flight;
  manager.allocate(nullptr, graph,
                   [slot = InlineRef(in_flight)](
                       llvm::Expected<std::unique_ptr<JITLinkMemoryManager::InFlightAlloc>> r) {
                     *slot = check(std::move(r), "allocate");
                   });
  if (!in_flight) die("allocate did not call back synchronously");

  JITLinkMemoryManager::FinalizedAlloc finalized;
  in_flight->finalize(
      [slot = InlineRef(finalized)](llvm::Expected<JITLinkMemoryManager::FinalizedAlloc> r) {
        *slot = check(std::move(r), "finalize");
      });
  if (!finalized) die("finalize did not call back synchronously");
  return finalized;
}

void deallocate(JITLinkMemoryManager& manager, JITLinkMemoryManager::FinalizedAlloc allocation) {
  bool done = false;
  manager.deallocate(std::move(allocation), [slot = InlineRef(done)](llvm::Error err) {
    check(std::move(err), "deallocate");
    *slot = true;
  });
  if (!done) die("deallocate did not call back synchronously");
}

llvm::orc::ExecutorAddr code_address(llvm::jitlink::LinkGraph& graph) {
  llvm::jitlink::Section* text = graph.findSectionByName(".text");
  if (text == nullptr || text->blocks_size() != 1) die("graph has no single .text block");
  return (*text->blocks().begin())->getAddress();
}

}  // namespace codeheap::bench
