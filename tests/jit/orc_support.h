// Shared by the ORC tests (engine_test.cc, entry_cell_test.cc, jitlink_memory_manager_test.cc):
// small heaps, statistics without counters, a plugin that records every linked graph, and a
// reader for x86-64 call instructions.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "codeheap/heap.h"
#include "jit/link_plugin.h"
#include "llvm/ExecutionEngine/JITLink/JITLink.h"
#include "llvm/ExecutionEngine/Orc/ObjectLinkingLayer.h"
#include "llvm/Support/Error.h"

namespace codeheap::jit::orc_testing {

// Every address the heap hands to LLVM lies below this (the Small code model's reach).
inline constexpr uint64_t k2GiB = uint64_t{1} << 31;

// A heap far smaller than the default, so tests never crowd the low window. No free pages are
// kept committed after a reclaim, so committed bytes measure what is in use.
inline std::unique_ptr<Heap> make_small_heap(const std::string& name) {
  HeapOptions options;
  options.code_bytes = size_t{16} << 20;
  options.read_only_bytes = size_t{8} << 20;
  options.data_bytes = size_t{8} << 20;
  options.retain_free_bytes = 0;
  options.name = name;
  auto heap = Heap::create(std::move(options));
  if (!heap) {
    ADD_FAILURE() << "Heap::create: " << heap.error().message;
    return nullptr;
  }
  return std::move(*heap);
}

// Everything but the counters, peaks and totals, which legitimately change on every call.
inline HeapStats stats_without_counters(const Heap& heap) {
  HeapStats stats = heap.stats();
  clear_history(stats);
  return stats;
}

// "" for success, else the error's text (consumes the error either way).
inline std::string error_text(llvm::Error error) {
  return error ? llvm::toString(std::move(error)) : std::string();
}

// Records the blocks, defined symbols and edges of every graph after fixups, when addresses
// are final and content sits in the heap.
class GraphRecorder : public jit::StatelessLinkPlugin {
 public:
  struct Block {
    std::string graph;
    std::string section;
    llvm::orc::MemProt prot;
    bool allocated;  // false for NoAlloc sections
    uint64_t address;
    uint64_t size;
  };
  struct Symbol {
    std::string graph;
    std::string name;
    std::string section;
    uint64_t address;
    uint64_t size;
  };
  struct Edge {
    std::string graph;
    std::string from_section;
    std::string to_section;  // "" for external/absolute targets
    std::string to_name;     // "" for anonymous targets
    std::string kind;
  };

  void modifyPassConfig(llvm::orc::MaterializationResponsibility&, llvm::jitlink::LinkGraph&,
                        llvm::jitlink::PassConfiguration& config) override {
    config.PostFixupPasses.push_back([this](llvm::jitlink::LinkGraph& graph) {
      record(graph);
      return llvm::Error::success();
    });
  }

  std::vector<Block> blocks() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return blocks_;
  }
  std::vector<Symbol> symbols() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return symbols_;
  }
  std::vector<Edge> edges() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return edges_;
  }
  std::optional<Symbol> symbol(const std::string& name) const {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const Symbol& s : symbols_)
      if (s.name == name) return s;
    return std::nullopt;
  }

 private:
  void record(llvm::jitlink::LinkGraph& graph) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (llvm::jitlink::Section& section : graph.sections()) {
      const bool allocated = section.getMemLifetime() != llvm::orc::MemLifetime::NoAlloc;
      for (llvm::jitlink::Block* block : section.blocks()) {
        blocks_.push_back({graph.getName(), section.getName().str(), section.getMemProt(),
                           allocated, block->getAddress().getValue(), block->getSize()});
        for (llvm::jitlink::Edge& edge : block->edges()) {
          const llvm::jitlink::Symbol& target = edge.getTarget();
          edges_.push_back(
              {graph.getName(), section.getName().str(),
               target.isDefined() ? target.getBlock().getSection().getName().str() : std::string(),
               target.hasName() ? target.getName().str() : std::string(),
               graph.getEdgeKindName(edge.getKind())});
        }
      }
    }
    for (llvm::jitlink::Symbol* symbol : graph.defined_symbols()) {
      if (!symbol->hasName()) continue;
      symbols_.push_back({graph.getName(), symbol->getName().str(),
                          symbol->getBlock().getSection().getName().str(),
                          symbol->getAddress().getValue(), symbol->getSize()});
    }
  }

  mutable std::mutex mutex_;
  std::vector<Block> blocks_;
  std::vector<Symbol> symbols_;
  std::vector<Edge> edges_;
};

// The targets of every `call rel32` (E8) whose displacement lands inside [low, high), found by
// decoding at every byte offset of [begin, begin + size). A byte-level scan can in principle
// see an E8 inside another instruction, so callers look for a specific target, never count.
inline std::vector<uint64_t> call_targets(uint64_t begin, uint64_t size, uint64_t low,
                                          uint64_t high) {
  std::vector<uint64_t> targets;
  const auto* bytes = reinterpret_cast<const uint8_t*>(begin);
  for (uint64_t i = 0; i + 5 <= size; ++i) {
    if (bytes[i] != 0xE8) continue;
    int32_t rel32;
    std::memcpy(&rel32, bytes + i + 1, sizeof(rel32));
    const uint64_t target = begin + i + 5 + static_cast<int64_t>(rel32);
    if (target >= low && target < high) targets.push_back(target);
  }
  return targets;
}

// For `jmp *rel32(%rip)` (FF 25) at `address`, the address of the pointer it jumps through.
inline std::optional<uint64_t> indirect_jump_slot(uint64_t address) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(address);
  if (bytes[0] != 0xFF || bytes[1] != 0x25) return std::nullopt;
  int32_t rel32;
  std::memcpy(&rel32, bytes + 2, sizeof(rel32));
  return address + 6 + static_cast<int64_t>(rel32);
}

}  // namespace codeheap::jit::orc_testing
