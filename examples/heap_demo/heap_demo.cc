// heap_demo: one block of machine code through its whole life in a codeheap::Heap.
//
//   allocate -> write through the writable alias -> call through the execute view -> release
//   (quarantine, trap bytes) -> reclaim (free list) -> heap-stats dump
//
// Run with `bazel run //:demo`. The program's output goes to stdout; diagnostics go through the
// codeheap logger (try SPDLOG_LEVEL=codeheap=debug), and CODEHEAP_STATS=stderr adds the dump
// that a runtime would get at exit without changing its code.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include <spdlog/fmt/fmt.h>

#include "codeheap/heap.h"
#include "codeheap/log.h"

namespace {

// x86-64: mov eax, 42; ret
constexpr uint8_t kReturn42[] = {0xB8, 0x2A, 0x00, 0x00, 0x00, 0xC3};

int run() {
  codeheap::HeapOptions options;
  options.name = "heap_demo";
  auto created = codeheap::Heap::create(options);
  if (!created) {
    codeheap::logger()->error("cannot create the heap: {}", created.error().message);
    return 1;
  }
  codeheap::Heap& heap = **created;
  const codeheap::HeapStats empty = heap.stats();
  fmt::print("heap '{}': {} reserved at [{:#x}, {:#x}), below 2 GiB\n", empty.name,
             codeheap::human_bytes(empty.reserved_bytes), empty.arenas.front().begin,
             empty.arenas.back().end);

  const codeheap::OwnerId owner = heap.register_owner("demo: answer()");
  auto block = heap.allocate(codeheap::Arena::kCode, sizeof kReturn42, 16, owner);
  if (!block) {
    codeheap::logger()->error("allocate failed: {}", block.error().message);
    return 1;
  }
  // Written through the read-write alias, executed through the read-execute view: two virtual
  // addresses for the same memory, so no page is ever writable and executable at once.
  std::memcpy(block->writable, kReturn42, sizeof kReturn42);
  const auto answer = reinterpret_cast<int (*)()>(block->address);
  fmt::print("allocated {} bytes of code at {:#x} (written through the alias at {})\n", block->size,
             block->address, fmt::ptr(block->writable));
  fmt::print("answer() = {}\n", answer());

  if (auto released = heap.release(block->address); !released) {
    codeheap::logger()->error("release failed: {}", released.error().message);
    return 1;
  }
  for (const codeheap::BlockInfo& q : heap.quarantined()) {
    fmt::print("quarantined: {} bytes at {:#x} (owner {}), first byte now {:#04x} (int3)\n", q.size,
               q.address, q.owner, *reinterpret_cast<const uint8_t*>(q.address));
  }
  for (const codeheap::OwnerStats& o : heap.stats().owners) {
    fmt::print("owner {} '{}': {} live, {} quarantined block(s)\n", o.id, o.name, o.live_blocks,
               o.quarantined_blocks);
  }

  // A runtime would scan its threads' stacks here; nothing references the block.
  const codeheap::ReclaimReport report = heap.reclaim([](uintptr_t, uintptr_t) { return false; });
  fmt::print("reclaimed {} block(s), {} bytes, in {} ns; {} left in quarantine\n",
             report.reclaimed_blocks, report.reclaimed_bytes, report.duration_ns,
             heap.quarantined().size());

  fmt::print("\n{}", heap.dump_text());
  return 0;
}

}  // namespace

int main() { return run(); }
