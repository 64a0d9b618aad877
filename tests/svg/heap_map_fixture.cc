// Writes heap maps of heaps in known states, with the stats dump of the same state, for
// heap_map_test.py to parse:
//
//   heap_map_fixture OUTDIR   ->  OUTDIR/{single,aggregated}.{svg,json}
//
// single: a few dozen blocks of three owners (names that need XML escaping, a control
// character, characters beyond ASCII) in all three arenas, some live, some retired or released,
// some reclaimed; drawn one by one. aggregated: thousands of small blocks, some large ones,
// a third of them quarantined and some of those reclaimed; sub-pixel neighbours aggregated.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "codeheap/heap.h"

namespace {

using codeheap::Arena;
using codeheap::Heap;

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "heap_map_fixture: %s\n", message.c_str());
  std::exit(1);
}

std::unique_ptr<Heap> make_heap(const char* name, size_t code_bytes) {
  codeheap::HeapOptions options;
  options.code_bytes = code_bytes;
  options.read_only_bytes = size_t{256} << 10;
  options.data_bytes = size_t{256} << 10;
  options.name = name;
  auto heap = Heap::create(options);
  if (!heap) die(heap.error().message);
  return std::move(*heap);
}

uintptr_t allocate(Heap& heap, Arena arena, size_t size, codeheap::OwnerId owner) {
  auto block = heap.allocate(arena, size, 16, owner);
  if (!block) die(block.error().message);
  return block->address;
}

void check(codeheap::Result<void> result) {
  if (!result) die(result.error().message);
}

void write(const std::string& path, const std::string& text) {
  if (auto written = codeheap::write_text_file(path, text); !written) {
    die(written.error().message);
  }
}

void dump(const Heap& heap, const std::string& prefix) {
  write(prefix + ".svg", heap.dump_svg());
  write(prefix + ".json", heap.dump_json());
}

void single(const std::string& out) {
  auto heap = make_heap("map \"fixture\" <&>", size_t{1} << 20);
  const codeheap::OwnerId alpha = heap->register_owner("alpha");
  const codeheap::OwnerId beta = heap->register_owner("beta <&\"'>");
  const codeheap::OwnerId gamma = heap->register_owner("gamma \x01 \u00e9 \U0001F600");
  std::vector<uintptr_t> a, b;
  for (size_t size : {100, 2000, 5000, 64, 30000, 777}) {
    a.push_back(allocate(*heap, Arena::kCode, size, alpha));
  }
  for (size_t size : {40000, 16, 300}) b.push_back(allocate(*heap, Arena::kCode, size, beta));
  allocate(*heap, Arena::kCode, 4096, codeheap::kNoOwner);
  allocate(*heap, Arena::kCode, 123, gamma);
  allocate(*heap, Arena::kReadOnly, 5000, alpha);
  allocate(*heap, Arena::kReadOnly, 100000, beta);
  allocate(*heap, Arena::kData, 9000, gamma);
  check(heap->retire(a[1]));
  check(heap->retire(a[4]));
  check(heap->release(b[0]));
  check(heap->release(a[3]));
  // Frees a[1] and b[0], keeps the others quarantined: free gaps between live blocks.
  heap->reclaim([&](uintptr_t begin, uintptr_t) { return begin != a[1] && begin != b[0]; });
  dump(*heap, out + "/single");
}

void aggregated(const std::string& out) {
  auto heap = make_heap("aggregated", size_t{4} << 20);
  std::vector<codeheap::OwnerId> owners;
  for (const char* name : {"one", "two", "three"}) owners.push_back(heap->register_owner(name));
  uint64_t random = 12345;  // a fixed LCG: the same state every run
  auto next = [&random] {
    random = random * 6364136223846793005u + 1442695040888963407u;
    return random >> 33;
  };
  std::vector<uintptr_t> blocks;
  for (size_t i = 0; i < 6000; ++i) {
    const size_t size = i % 97 == 0 ? 20000 + next() % 40000 : 16 + next() % 400;
    blocks.push_back(allocate(*heap, Arena::kCode, size, owners[i % owners.size()]));
  }
  for (size_t i = 0; i < 40; ++i) allocate(*heap, Arena::kReadOnly, 16 + next() % 200, owners[0]);
  for (size_t i = 0; i < blocks.size(); i += 3) check(heap->release(blocks[i]));
  heap->reclaim([](uintptr_t begin, uintptr_t) { return (begin / 16) % 4 != 0; });
  dump(*heap, out + "/aggregated");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) die("usage: heap_map_fixture OUTDIR");
  single(argv[1]);
  aggregated(argv[1]);
  return 0;
}
