// Issue 6, part 1: the memory of one link, from allocation to deallocation, through our managers
// and through LLVM 19's own, with identical requests.
//
// JITLink: allocate, finalize and deallocate one LinkGraph through
//   codeheap     HeapJITLinkMemoryManager on a default Heap (plus a reclaim pass every
//                kReclaimEvery deallocations, amortized into the time),
//   InProcess    jitlink::InProcessMemoryManager (one mmap per graph, mprotect per segment),
//   Mapper       orc::MapperJITLinkMemoryManager over orc::InProcessMemoryMapper (slabs).
// All three link the same minimal LinkGraph (one content block per section, as an object file's
// sections would give), built once and reset before each allocation (ReusableGraph: a few
// stores, the same for every manager), so graph construction is not measured and the blocks are
// in cache, as they are when JITLink calls a manager right after its passes. (The sections'
// hash sets of blocks, which every manager walks, need not be: JITLink's pruning pass would
// have walked them just before.) Two shapes: "small" (256 B of code + 64 B of read-only data, a
// tiny closure) and "mixed16k" (8 KiB code, 4 KiB read-only, 4 KiB read-write). For each shape,
// copy_floor is the copying and trap-filling alone (CopyFloor), and alternating times codeheap
// and InProcess in turn within each repetition (harness.h's Alternating: a round is one reclaim
// period of ours, then kAlternatingBaselineOps of theirs).
//
// RuntimeDyld: the calls RuntimeDyld makes for the same small object (reserveAllocationSpace if
// the manager asks for it, allocateCodeSection, allocateDataSection, copy the bytes,
// finalizeMemory, destroy) on our RtdyldMemoryManager (reclaim as above) and on LLVM's
// SectionMemoryManager. notifyObjectLoaded is left out: it needs a RuntimeDyld with a loaded
// object, and SectionMemoryManager does nothing there.
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bench/harness.h"
#include "bench/jit_support.h"
#include "bench/link_graphs.h"
#include "jit/jitlink_memory_manager.h"
#include "jit/rtdyld_memory_manager.h"
#include "jit/segment_layout.h"
#include "llvm/ADT/BitmaskEnum.h"
#include "llvm/ExecutionEngine/JITLink/JITLinkMemoryManager.h"
#include "llvm/ExecutionEngine/Orc/MapperJITLinkMemoryManager.h"
#include "llvm/ExecutionEngine/Orc/MemoryMapper.h"
#include "llvm/ExecutionEngine/SectionMemoryManager.h"

namespace codeheap::bench {
namespace {

using llvm::jitlink::JITLinkMemoryManager;

// MemProt's bitwise operators live in namespace llvm; this pulls them in.
LLVM_ENABLE_BITMASK_ENUMS_IN_NAMESPACE();

// Mapper reserves address space in slabs of this size (it never returns a slab).
constexpr size_t kMapperSlabBytes = size_t{64} << 20;

// The RuntimeDyld object: the small request's shape (link_graphs.h) as two sections.
constexpr size_t kCodeBytes = 256;
constexpr size_t kReadOnlyBytes = 64;
constexpr size_t kAlignment = 16;
// What RuntimeDyld would copy into the sections.
alignas(16) const uint8_t kSectionBytes[kCodeBytes] = {};

class JITLinkCycle final : public Workload {
 public:
  // `heap` is null for LLVM's managers; with a heap, reclaim passes run as for our managers.
  JITLinkCycle(std::unique_ptr<Heap> heap, std::unique_ptr<JITLinkMemoryManager> manager,
               const RequestShape& shape)
      : heap_(std::move(heap)), manager_(std::move(manager)), graph_(shape) {}

  void run(size_t count) override {
    for (size_t i = 0; i < count; ++i) {
      graph_.reset();
      deallocate(*manager_, allocate_and_finalize(*manager_, graph_.graph()));
      if (heap_ && ++deallocations_ % kReclaimEvery == 0) heap_->reclaim(nothing_referenced);
    }
  }

 private:
  std::unique_ptr<Heap> heap_;  // declared first: outlives the manager
  std::unique_ptr<JITLinkMemoryManager> manager_;
  ReusableGraph graph_;
  size_t deallocations_ = 0;
};

// The data movement our JITLink manager cannot avoid, with no bookkeeping at all: each
// operation copies the shape's section content into one slot of a ring of kReclaimEvery slots
// (the blocks that sit in quarantine between two reclaim passes), and every kReclaimEvery
// operations the code of every slot is trap-filled, as reclaim fills freed code. It shows how
// much of JITLinkCycle's time is the copy and the fill rather than the heap.
class CopyFloor final : public Workload {
 public:
  explicit CopyFloor(const RequestShape& shape) : graph_(shape) {
    for (llvm::jitlink::Block* block : graph_.graph().blocks()) {
      const bool code =
          (block->getSection().getMemProt() & llvm::orc::MemProt::Exec) != llvm::orc::MemProt::None;
      segments_.push_back({block->getContent(), code});
      slot_bytes_ += block->getSize();
    }
    ring_.resize(kReclaimEvery * slot_bytes_);
  }

  void run(size_t count) override {
    for (size_t i = 0; i < count; ++i) {
      uint8_t* slot = ring_.data() + operations_ % kReclaimEvery * slot_bytes_;
      for (const Segment& s : segments_) {
        std::memcpy(slot, s.content.data(), s.content.size());
        slot += s.content.size();
      }
      if (++operations_ % kReclaimEvery == 0) {
        for (uint8_t* at = ring_.data(); at != ring_.data() + ring_.size();) {
          for (const Segment& s : segments_) {
            if (s.code) std::memset(at, kTrapByte, s.content.size());
            at += s.content.size();
          }
        }
      }
      benchmark::ClobberMemory();
    }
  }

 private:
  static constexpr uint8_t kTrapByte = 0xCC;  // int3, what the heap fills freed code with
  struct Segment {
    llvm::ArrayRef<char> content;
    bool code;
  };
  ReusableGraph graph_;  // only for its content, so the copy reads the bytes the managers read
  std::vector<Segment> segments_;
  size_t slot_bytes_ = 0;
  std::vector<uint8_t> ring_;
  size_t operations_ = 0;
};

// The layout step of a link alone (docs/performance-notes.md, "lay_out instead of
// jitlink::BasicLayout"): the graph's blocks get their addresses in, and their content copied to,
// one reused buffer per segment (no heap: no allocation, no bookkeeping). kOurs is lay_out +
// place (content copied, only padding and zero-fill cleared). The baselines use
// jitlink::BasicLayout: kBasicClearAll as the manager's first version did (build it, clear each
// whole segment, apply(), which copies the content over it); kBasicClearGaps clears after apply()
// only what content does not cover (each segment's content blocks sorted by address, the gaps
// and the zero-fill tail), writing each byte once as ours does.
class LayoutStep final : public Workload {
 public:
  enum class Mode { kOurs, kBasicClearAll, kBasicClearGaps };

  LayoutStep(const RequestShape& shape, Mode mode) : graph_(shape), mode_(mode) {
    for (const jit::Segment& s : jit::lay_out(graph_.graph())) {
      buffers_[s.group].resize(s.bytes + kBufferAlignment);
    }
    graph_.reset();
  }

  void run(size_t count) override {
    for (size_t i = 0; i < count; ++i) {
      graph_.reset();
      if (mode_ == Mode::kOurs) {
        for (const jit::Segment& s : jit::lay_out(graph_.graph())) {
          uint8_t* at = buffer(s.group);
          jit::place(s, Allocation{.address = reinterpret_cast<uintptr_t>(at), .writable = at});
        }
      } else {
        basic();
      }
      benchmark::ClobberMemory();
    }
  }

 private:
  static constexpr size_t kBufferAlignment = 64;  // at least every block's alignment here

  void basic() {
    llvm::jitlink::BasicLayout layout(graph_.graph());
    for (auto& [group, segment] : layout.segments()) {
      uint8_t* at = buffer(group);
      segment.Addr = llvm::orc::ExecutorAddr::fromPtr(at);
      segment.WorkingMem = reinterpret_cast<char*>(at);
      if (mode_ == Mode::kBasicClearAll)
        std::memset(at, 0, segment.ContentSize + segment.ZeroFillSize);
      sizes_[group] = segment.ContentSize + segment.ZeroFillSize;
    }
    if (llvm::Error err = layout.apply()) die("BasicLayout::apply: " + toString(std::move(err)));
    if (mode_ != Mode::kBasicClearGaps) return;
    for (auto& [group, blocks] : content_) blocks.clear();
    for (llvm::jitlink::Section& section : graph_.graph().sections()) {
      const llvm::orc::AllocGroup group(section.getMemProt(), section.getMemLifetime());
      for (llvm::jitlink::Block* block : section.blocks())
        if (!block->isZeroFill()) content_[group].push_back(block);
    }
    for (auto& [group, blocks] : content_) {
      llvm::sort(blocks, [](const llvm::jitlink::Block* a, const llvm::jitlink::Block* b) {
        return a->getAddress() < b->getAddress();
      });
      uint8_t* const base = buffer(group);
      uintptr_t covered = reinterpret_cast<uintptr_t>(base);
      for (const llvm::jitlink::Block* block : blocks) {
        const uintptr_t begin = block->getAddress().getValue();
        std::memset(reinterpret_cast<void*>(covered), 0, begin - covered);
        covered = begin + block->getSize();
      }
      const uintptr_t end = reinterpret_cast<uintptr_t>(base) + sizes_[group];
      std::memset(reinterpret_cast<void*>(covered), 0, end - covered);
    }
  }

  uint8_t* buffer(llvm::orc::AllocGroup group) {
    auto& bytes = buffers_[group];
    const auto at = reinterpret_cast<uintptr_t>(bytes.data());
    return bytes.data() + (-at & (kBufferAlignment - 1));
  }

  ReusableGraph graph_;
  Mode mode_;
  llvm::orc::AllocGroupSmallMap<std::vector<uint8_t>> buffers_;
  llvm::orc::AllocGroupSmallMap<uint64_t> sizes_;
  llvm::orc::AllocGroupSmallMap<std::vector<llvm::jitlink::Block*>> content_;
};

class RtdyldCycle final : public Workload {
 public:
  using Factory = std::function<std::unique_ptr<llvm::RTDyldMemoryManager>()>;

  RtdyldCycle(std::unique_ptr<Heap> heap, Factory make_manager)
      : heap_(std::move(heap)), make_manager_(std::move(make_manager)) {}

  void run(size_t count) override {
    for (size_t i = 0; i < count; ++i) {
      std::unique_ptr<llvm::RTDyldMemoryManager> manager = make_manager_();
      if (manager->needsToReserveAllocationSpace())
        manager->reserveAllocationSpace(kCodeBytes, llvm::Align(kAlignment), kReadOnlyBytes,
                                        llvm::Align(kAlignment), 0, llvm::Align(1));
      uint8_t* code = manager->allocateCodeSection(kCodeBytes, kAlignment, 0, ".text");
      uint8_t* rodata =
          manager->allocateDataSection(kReadOnlyBytes, kAlignment, 1, ".rodata", true);
      std::memcpy(code, kSectionBytes, kCodeBytes);
      std::memcpy(rodata, kSectionBytes, kReadOnlyBytes);
      std::string error;
      if (manager->finalizeMemory(&error)) die("finalizeMemory: " + error);
      manager.reset();
      if (heap_ && ++deallocations_ % kReclaimEvery == 0) heap_->reclaim(nothing_referenced);
    }
  }

 private:
  std::unique_ptr<Heap> heap_;
  Factory make_manager_;
  size_t deallocations_ = 0;
};

constexpr size_t kBatch = 256;
constexpr size_t kWarmup = 1000;

void add_jitlink(const RequestShape& shape, const char* manager_name,
                 std::function<std::unique_ptr<Workload>()> make) {
  add({.name = std::string("jitlink/") + shape.name + "/" + manager_name,
       .make = std::move(make),
       .batch = kBatch,
       .warmup = kWarmup});
}

std::unique_ptr<Workload> codeheap_cycle(const RequestShape& shape) {
  std::unique_ptr<Heap> heap = make_heap("bench");
  auto manager = std::make_unique<jit::HeapJITLinkMemoryManager>(*heap);
  return std::make_unique<JITLinkCycle>(std::move(heap), std::move(manager), shape);
}

std::unique_ptr<Workload> in_process_cycle(const RequestShape& shape) {
  return std::make_unique<JITLinkCycle>(
      nullptr,
      check(llvm::jitlink::InProcessMemoryManager::Create(), "creating InProcessMemoryManager"),
      shape);
}

// InProcessMemoryManager cycles per round of jitlink/<shape>/alternating, after kReclaimEvery of
// ours: about as long (~20-30 us each against ~1 us).
constexpr size_t kAlternatingBaselineOps = 4;

void register_benchmarks() {
  for (const RequestShape* shape : {&kSmallRequest, &kMixedRequest}) {
    add_jitlink(*shape, "codeheap", [shape] { return codeheap_cycle(*shape); });
    add_jitlink(*shape, "InProcessMemoryManager", [shape] { return in_process_cycle(*shape); });
    add_jitlink(*shape, "copy_floor", [shape] { return std::make_unique<CopyFloor>(*shape); });
    add_jitlink(*shape, "MapperJITLinkMemoryManager", [shape] {
      return std::make_unique<JITLinkCycle>(
          nullptr,
          check(llvm::orc::MapperJITLinkMemoryManager::CreateWithMapper<
                    llvm::orc::InProcessMemoryMapper>(kMapperSlabBytes),
                "creating MapperJITLinkMemoryManager"),
          *shape);
    });
    // The baseline's mmap, mprotect and munmap cost what the host's other tenants let them,
    // which moves between minutes by as much as the target's margin; in alternation both sides
    // see the same minutes. (Each side also starts its turn in the caches the other left.)
    add({.name = std::string("jitlink/") + shape->name + "/alternating", .make = [shape] {
           return std::make_unique<Alternating>(
               Alternating::Side{codeheap_cycle(*shape), kReclaimEvery},
               Alternating::Side{in_process_cycle(*shape), kAlternatingBaselineOps}, kWarmup);
         }});
  }

  for (const RequestShape* shape : {&kSmallRequest, &kMixedRequest}) {
    const std::string name = std::string("layout/") + shape->name + "/";
    using Mode = LayoutStep::Mode;
    auto layout = [shape](Mode mode) { return std::make_unique<LayoutStep>(*shape, mode); };
    add({.name = name + "lay_out",
         .make = [layout] { return layout(Mode::kOurs); },
         .batch = kBatch,
         .warmup = kWarmup});
    add({.name = name + "BasicLayout_clear_all",
         .make = [layout] { return layout(Mode::kBasicClearAll); },
         .batch = kBatch,
         .warmup = kWarmup});
    add({.name = name + "BasicLayout_clear_gaps",
         .make = [layout] { return layout(Mode::kBasicClearGaps); },
         .batch = kBatch,
         .warmup = kWarmup});
    // Tens to hundreds of nanoseconds each: alternated, so both see the same spells of load.
    for (auto [suffix, mode] : {std::pair{"alternating_clear_all", Mode::kBasicClearAll},
                                std::pair{"alternating_clear_gaps", Mode::kBasicClearGaps}}) {
      add({.name = name + suffix, .make = [layout, mode] {
             return std::make_unique<Alternating>(Alternating::Side{layout(Mode::kOurs), kBatch},
                                                  Alternating::Side{layout(mode), kBatch}, kWarmup);
           }});
    }
  }

  add({.name = "rtdyld/small/codeheap",
       .make =
           [] {
             std::unique_ptr<Heap> heap = make_heap("bench");
             Heap* raw = heap.get();
             return std::make_unique<RtdyldCycle>(std::move(heap), [raw] {
               return std::make_unique<jit::RtdyldMemoryManager>(*raw, "bench");
             });
           },
       .batch = kBatch,
       .warmup = kWarmup});
  add({.name = "rtdyld/small/SectionMemoryManager",
       .make =
           [] {
             return std::make_unique<RtdyldCycle>(
                 nullptr, [] { return std::make_unique<llvm::SectionMemoryManager>(); });
           },
       .batch = kBatch,
       .warmup = kWarmup});
}

}  // namespace
}  // namespace codeheap::bench

int main(int argc, char** argv) {
  codeheap::bench::register_benchmarks();
  return codeheap::bench::main(argc, argv);
}
