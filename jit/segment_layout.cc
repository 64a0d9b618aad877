#include "jit/segment_layout.h"

#include <algorithm>
#include <cstring>
#include <iterator>
#include <tuple>

namespace codeheap::jit {

using llvm::jitlink::LinkGraph;
using llvm::orc::AllocGroup;
using llvm::orc::ExecutorAddr;
using llvm::orc::MemLifetime;

Segments lay_out(LinkGraph& graph) {
  Segments segments;
  // All sections are prefetched before the walk (docs/performance-notes.md, "lay_out prefetches
  // the sections").
  for (llvm::jitlink::Section& section : graph.sections()) __builtin_prefetch(&section);
  for (llvm::jitlink::Section& section : graph.sections()) {
    if (section.getMemLifetime() == MemLifetime::NoAlloc || section.blocks_size() == 0) continue;
    const AllocGroup group(section.getMemProt(), section.getMemLifetime());
    auto segment = llvm::find_if(segments, [&](const Segment& s) { return s.group == group; });
    if (segment == segments.end()) {
      segments.emplace_back(group);
      segment = std::prev(segments.end());
    }
    // Stop at the last block, before the iterator walks the rest of the section's hash set: a
    // small module's sections hold a block or two in 64 buckets, and advancing past the last
    // one would test every bucket after it.
    size_t left = section.blocks_size();
    for (auto it = section.blocks().begin();; ++it) {
      llvm::jitlink::Block* block = *it;
      if (block->isZeroFill()) {
        segment->zero_fill.push_back(block);
      } else {
        segment->content.push_back(block);
      }
      if (--left == 0) break;
    }
  }
  auto in_order = [](const llvm::jitlink::Block* a, const llvm::jitlink::Block* b) {
    return std::make_tuple(a->getSection().getOrdinal(), a->getAddress(), a->getSize()) <
           std::make_tuple(b->getSection().getOrdinal(), b->getAddress(), b->getSize());
  };
  for (Segment& s : segments) {
    // Most segments of a small module hold one block: nothing to order, not even a call.
    if (s.content.size() > 1) llvm::sort(s.content, in_order);
    if (s.zero_fill.size() > 1) llvm::sort(s.zero_fill, in_order);
    uint64_t offset = 0;
    for (const llvm::jitlink::Block* block : s.content) {
      offset = llvm::jitlink::alignToBlock(offset, *block) + block->getSize();
      s.alignment = std::max(s.alignment, block->getAlignment());
    }
    s.content_bytes = offset;
    for (const llvm::jitlink::Block* block : s.zero_fill) {
      offset = llvm::jitlink::alignToBlock(offset, *block) + block->getSize();
      s.alignment = std::max(s.alignment, block->getAlignment());
    }
    s.bytes = offset;
  }
  return segments;
}

// The heap block is aligned to the largest block alignment, so aligning offsets aligns addresses.
void place(const Segment& s, const Allocation& heap_block) {
  uint8_t* const base = heap_block.writable;
  const uintptr_t address = heap_block.address;
  uint64_t offset = 0;
  for (llvm::jitlink::Block* block : s.content) {
    const uint64_t at = llvm::jitlink::alignToBlock(offset, *block);
    if (at != offset) std::memset(base + offset, 0, at - offset);
    const size_t size = block->getSize();
    std::memcpy(base + at, block->getContent().data(), size);
    block->setAddress(ExecutorAddr(address + at));
    block->setMutableContent({reinterpret_cast<char*>(base + at), size});
    offset = at + size;
  }
  if (s.bytes != offset) std::memset(base + offset, 0, s.bytes - offset);
  for (llvm::jitlink::Block* block : s.zero_fill) {
    offset = llvm::jitlink::alignToBlock(offset, *block);
    block->setAddress(ExecutorAddr(address + offset));
    offset += block->getSize();
  }
}

}  // namespace codeheap::jit
