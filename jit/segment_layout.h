// How HeapJITLinkMemoryManager lays a LinkGraph out in the heap: one segment per (protection,
// lifetime), each becoming one heap block. Private to //jit (the memory manager), its test and
// its benchmark.
//
// The layout is jitlink::BasicLayout's: content blocks in (section ordinal, address, size) order,
// then zero-fill blocks in the same order, each aligned as it asks. It is computed here without
// BasicLayout's two vectors per segment, walking each section's blocks only up to the last one,
// and placed so that each byte is written once (content copied, only padding and zero-fill
// cleared). Why, with the measurement against BasicLayout: docs/performance-notes.md,
// "lay_out instead of jitlink::BasicLayout".
#pragma once

#include <cstdint>

#include "codeheap/heap.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ExecutionEngine/JITLink/JITLink.h"
#include "llvm/ExecutionEngine/Orc/Shared/MemoryFlags.h"

namespace codeheap::jit {

struct Segment {
  explicit Segment(llvm::orc::AllocGroup group) : group(group) {}
  llvm::orc::AllocGroup group;
  llvm::SmallVector<llvm::jitlink::Block*, 4> content;
  llvm::SmallVector<llvm::jitlink::Block*, 2> zero_fill;
  uint64_t content_bytes = 0;  // the content blocks with the padding between them
  uint64_t bytes = 0;          // and then the zero-fill blocks
  uint64_t alignment = 1;      // the largest of its blocks'
};

using Segments = llvm::SmallVector<Segment, 3>;

// The segments of `graph`'s allocatable sections (NoAlloc ones are left out), in the order their
// first section appears.
Segments lay_out(llvm::jitlink::LinkGraph& graph);

// Gives every block of `s` its address in `block` (a heap block of at least s.bytes, aligned to
// s.alignment) and copies content blocks there through the writable alias; padding and the
// zero-fill tail are cleared, since a reused heap block holds old bytes or trap bytes.
void place(const Segment& s, const Allocation& block);

}  // namespace codeheap::jit
