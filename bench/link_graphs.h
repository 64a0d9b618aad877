// Identical JITLink memory requests for every memory manager: minimal LinkGraphs with one
// content block per section, as an object file's sections would give, and the
// allocate/finalize/deallocate steps driven through the managers' asynchronous interface.
#pragma once

#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

#include "llvm/ExecutionEngine/JITLink/JITLink.h"
#include "llvm/ExecutionEngine/JITLink/JITLinkMemoryManager.h"
#include "llvm/ExecutionEngine/Orc/Shared/ExecutorAddress.h"

namespace codeheap::bench {

struct SegmentShape {
  const char* section;
  llvm::orc::MemProt prot;
  size_t bytes;
};

struct RequestShape {
  const char* name;
  std::vector<SegmentShape> segments;
};

// 256 B of code and 64 B of constants: a tiny closure.
extern const RequestShape kSmallRequest;
// 16 KiB: 8 KiB of code, 4 KiB read-only, 4 KiB read-write.
extern const RequestShape kMixedRequest;

// A fresh graph of that shape. A graph serves one allocation: the manager points its blocks at
// the allocation's working memory, which dies with the allocation.
std::unique_ptr<llvm::jitlink::LinkGraph> make_graph(const RequestShape& shape);

// One graph of a shape that serves allocation after allocation: `reset()` points its blocks
// back at their original content and address 0, as make_graph leaves them (a few stores). So
// the graph is in cache when a manager lays it out, as it is in a real link, where the manager
// runs right after JITLink's passes over the same graph.
class ReusableGraph {
 public:
  explicit ReusableGraph(const RequestShape& shape);
  llvm::jitlink::LinkGraph& graph() { return *graph_; }
  void reset();

 private:
  std::unique_ptr<llvm::jitlink::LinkGraph> graph_;
  std::vector<std::pair<llvm::jitlink::Block*, size_t>> blocks_;  // with their content sizes
};

// allocate + finalize through the asynchronous entry points, which every in-process manager
// completes before returning (checked); the synchronous wrappers would add a std::promise per
// step to every manager alike. die() on any error.
llvm::jitlink::JITLinkMemoryManager::FinalizedAlloc allocate_and_finalize(
    llvm::jitlink::JITLinkMemoryManager& manager, llvm::jitlink::LinkGraph& graph);
void deallocate(llvm::jitlink::JITLinkMemoryManager& manager,
                llvm::jitlink::JITLinkMemoryManager::FinalizedAlloc allocation);

// Where the graph's code (its .text block) was placed; valid once allocated.
llvm::orc::ExecutorAddr code_address(llvm::jitlink::LinkGraph& graph);

}  // namespace codeheap::bench
