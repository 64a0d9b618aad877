// lay_out and place (jit/segment_layout.h) give every block the offset jitlink::BasicLayout
// gives it, in segments of the same sizes and alignments, and leave no stale byte in a block.
#include "jit/segment_layout.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "llvm/ADT/BitmaskEnum.h"
#include "llvm/ExecutionEngine/JITLink/JITLinkMemoryManager.h"

namespace codeheap::jit {
namespace {

using llvm::jitlink::Block;
using llvm::jitlink::LinkGraph;
using llvm::orc::AllocGroup;
using llvm::orc::ExecutorAddr;
using llvm::orc::MemLifetime;
using llvm::orc::MemProt;

LLVM_ENABLE_BITMASK_ENUMS_IN_NAMESPACE();

constexpr MemProt kRX = MemProt::Read | MemProt::Exec;
constexpr MemProt kRW = MemProt::Read | MemProt::Write;

// Sections of every kind: several blocks per section and per segment, mixed alignments,
// zero-fill after content, a finalize-lifetime segment and a NoAlloc section. Distinct source
// addresses, so that both layouts order blocks without ties.
std::unique_ptr<LinkGraph> make_graph() {
  static const char kBytes[64] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
  auto graph =
      std::make_unique<LinkGraph>("layout", llvm::Triple("x86_64-unknown-linux-gnu"), 8,
                                  llvm::endianness::little, llvm::jitlink::getGenericEdgeKindName);
  uint64_t at = 0x1000;
  auto content = [&](llvm::jitlink::Section& s, size_t size, uint64_t align) {
    graph->createContentBlock(s, llvm::ArrayRef(kBytes, size), ExecutorAddr(at += 0x100), align, 0);
  };
  auto zeros = [&](llvm::jitlink::Section& s, size_t size, uint64_t align) {
    graph->createZeroFillBlock(s, size, ExecutorAddr(at += 0x100), align, 0);
  };
  auto& text = graph->createSection(".text", kRX);
  content(text, 10, 16);
  content(text, 33, 32);
  content(graph->createSection(".text.more", kRX), 5, 8);
  auto& rodata = graph->createSection(".rodata", MemProt::Read);
  content(rodata, 7, 4);
  auto& data = graph->createSection(".data", kRW);
  content(data, 12, 8);
  auto& bss = graph->createSection(".bss", kRW);
  zeros(bss, 64, 64);
  zeros(bss, 3, 1);
  auto& fin = graph->createSection(".finalize", MemProt::Read);
  fin.setMemLifetime(MemLifetime::Finalize);
  content(fin, 24, 8);
  auto& debug = graph->createSection(".debug_info", MemProt::Read);
  debug.setMemLifetime(MemLifetime::NoAlloc);
  content(debug, 20, 1);
  return graph;
}

struct Placed {
  std::map<AllocGroup, std::pair<uint64_t, uint64_t>> segments;    // (bytes, alignment)
  std::map<const Block*, std::pair<AllocGroup, uint64_t>> blocks;  // (segment, offset)
};

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<uint8_t, FreeDeleter>;

// A 4 KiB-aligned buffer holding `bytes`, filled with 0xEE (a reused block's old bytes).
Buffer stale_buffer(uint64_t bytes) {
  const size_t size = (bytes + 4095) / 4096 * 4096;
  Buffer buffer(static_cast<uint8_t*>(std::aligned_alloc(4096, size)));
  std::memset(buffer.get(), 0xEE, size);
  return buffer;
}

TEST(SegmentLayout, PlacesEveryBlockWhereBasicLayoutDoes) {
  auto graph = make_graph();
  const Segments segments = lay_out(*graph);
  Placed ours;
  std::vector<Buffer> buffers;
  for (const Segment& s : segments) {
    ours.segments[s.group] = {s.bytes, s.alignment};
    Buffer& buffer = buffers.emplace_back(stale_buffer(s.bytes));
    const auto base = reinterpret_cast<uintptr_t>(buffer.get());
    place(s, Allocation{.address = base, .writable = buffer.get(), .size = s.bytes});
    for (const Block* b : s.content) {
      ours.blocks[b] = {s.group, b->getAddress().getValue() - base};
      EXPECT_EQ(
          std::memcmp(buffer.get() + ours.blocks[b].second, b->getContent().data(), b->getSize()),
          0);
    }
    for (const Block* b : s.zero_fill)
      ours.blocks[b] = {s.group, b->getAddress().getValue() - base};
    // Every byte that is not content is zero: padding and zero-fill.
    std::vector<bool> is_content(s.bytes);
    for (const Block* b : s.content) {
      for (uint64_t i = 0; i < b->getSize(); ++i) is_content[ours.blocks[b].second + i] = true;
    }
    for (uint64_t i = 0; i < s.bytes; ++i) {
      if (!is_content[i]) {
        EXPECT_EQ(buffer.get()[i], 0) << "offset " << i;
      }
    }
  }
  EXPECT_EQ(ours.segments.size(), 4u);  // RX, R, RW standard; R finalize; no NoAlloc segment

  llvm::jitlink::BasicLayout basic(*graph);
  Placed theirs;
  std::vector<Buffer> their_buffers;
  std::map<AllocGroup, uint64_t> bases;  // apply() moves each segment's Addr past its blocks
  for (auto& [group, s] : basic.segments()) {
    const uint64_t bytes = s.ContentSize + s.ZeroFillSize;
    if (group.getMemLifetime() == MemLifetime::NoAlloc) continue;
    theirs.segments[group] = {bytes, s.Alignment.value()};
    Buffer& buffer = their_buffers.emplace_back(stale_buffer(bytes));
    s.Addr = ExecutorAddr::fromPtr(buffer.get());
    bases[group] = s.Addr.getValue();
    s.WorkingMem = reinterpret_cast<char*>(buffer.get());
  }
  ASSERT_FALSE(static_cast<bool>(basic.apply()));
  for (const Block* b : graph->blocks()) {
    if (b->getSection().getMemLifetime() == MemLifetime::NoAlloc) continue;
    const AllocGroup group(b->getSection().getMemProt(), b->getSection().getMemLifetime());
    theirs.blocks[b] = {group, b->getAddress().getValue() - bases.at(group)};
  }
  EXPECT_EQ(ours.segments, theirs.segments);
  EXPECT_EQ(ours.blocks, theirs.blocks);
}

}  // namespace
}  // namespace codeheap::jit
