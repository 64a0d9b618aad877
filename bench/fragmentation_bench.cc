// Issue 6, part 3: how well codeheap::Heap packs code that comes and goes.
//
// 1,000,000 random operations (fixed seed) on the code arena of a default Heap. A table of
// kSlots slots stands for the code a runtime holds; each operation picks a slot at random and
// allocates into it if empty, with a size log-uniform over 64 B..64 KiB (the shape of real JIT
// code: many small functions, a few large ones), or frees it if full. So about half the slots
// are live at any time. Freeing is Heap::release (into quarantine, trap-filled); a reclaim pass
// with a predicate that finds nothing referenced runs every kReleasesPerReclaim releases, as a
// runtime's collector would, so quarantined blocks cost memory until the next pass, as they do
// in real use.
//
// Reported (JSON counters):
//   committed_over_peak_live   the heap's peak committed bytes over the peak of live bytes
//                              (requested sizes). Committed bytes only grow between reclaim
//                              passes, so sampling before each pass and at the end finds the
//                              exact peak.
//   largest_free_over_free     at the end, after a last reclaim pass: the largest free span over
//                              all free bytes below the end of the highest live block. The
//                              never-touched top of the arena is one huge free span that would
//                              make any layout look unfragmented, so it is left out; the spans
//                              are computed from the live blocks and checked against the heap's
//                              own free_bytes and largest_free_block (whole arena, reported
//                              too as largest_free_over_free_whole_arena).
//   map_bytes                  with --map=PATH.svg: the size of the heap map of the final
//                              state (Heap::dump_svg), written to PATH; over 1 MB fails the run.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bench/harness.h"
#include "codeheap/heap.h"

namespace codeheap::bench {
namespace {

constexpr size_t kOperations = 1'000'000;
constexpr size_t kSmokeOperations = 20'000;
constexpr size_t kSlots = 8192;
constexpr size_t kReleasesPerReclaim = 256;
constexpr size_t kMinBytes = 64;
constexpr size_t kMaxBytes = 64 * 1024;
constexpr size_t kAlignment = 16;
constexpr size_t kGranule = 16;  // the heap's footprint rounding (heap.h)
constexpr uint64_t kSeed = 20240601;
constexpr size_t kMaxMapBytes = 1'000'000;  // docs/heap-stats.md promises less for this run

std::string map_path;  // --map=PATH: write the heap map of the final state there

struct Live {
  uintptr_t address;
  size_t size;
};

size_t footprint(size_t size) { return (size + kGranule - 1) / kGranule * kGranule; }

struct FreeSpans {
  size_t below_top_total = 0;
  size_t below_top_largest = 0;
  size_t whole_total = 0;
  size_t whole_largest = 0;
};

// The free spans of the arena [begin, end) when exactly `live` is allocated in it.
FreeSpans free_spans(std::vector<Live> live, uintptr_t begin, uintptr_t end) {
  std::sort(live.begin(), live.end(),
            [](const Live& a, const Live& b) { return a.address < b.address; });
  FreeSpans spans;
  uintptr_t cursor = begin;
  for (const Live& block : live) {
    const size_t gap = block.address - cursor;
    spans.below_top_total += gap;
    spans.below_top_largest = std::max(spans.below_top_largest, gap);
    cursor = block.address + footprint(block.size);
  }
  const size_t top = end - cursor;
  spans.whole_total = spans.below_top_total + top;
  spans.whole_largest = std::max(spans.below_top_largest, top);
  return spans;
}

const ArenaStats& code_arena(const HeapStats& stats) {
  return stats.arenas[static_cast<size_t>(Arena::kCode)];
}

void fragmentation(benchmark::State& state) {
  const size_t operations = smoke() ? kSmokeOperations : kOperations;
  for (auto _ : state) {
    state.PauseTiming();
    auto created = Heap::create({.name = "fragmentation"});
    if (!created) die("creating the heap: " + created.error().message);
    Heap& heap = **created;
    std::mt19937_64 random(kSeed);
    std::uniform_int_distribution<size_t> pick_slot(0, kSlots - 1);
    std::uniform_real_distribution<double> log_size(std::log(double(kMinBytes)),
                                                    std::log(double(kMaxBytes)));
    std::vector<std::optional<Live>> slots(kSlots);
    size_t live_bytes = 0, peak_live = 0, peak_committed = 0, releases = 0, failures = 0;
    auto sample_committed = [&] {
      peak_committed = std::max(peak_committed, code_arena(heap.stats()).committed_bytes);
    };
    state.ResumeTiming();

    for (size_t op = 0; op < operations; ++op) {
      std::optional<Live>& slot = slots[pick_slot(random)];
      if (!slot) {
        const auto size = static_cast<size_t>(std::lround(std::exp(log_size(random))));
        auto block = heap.allocate(Arena::kCode, size, kAlignment);
        if (!block) {
          ++failures;
          continue;
        }
        slot = Live{block->address, size};
        live_bytes += size;
        peak_live = std::max(peak_live, live_bytes);
      } else {
        if (!heap.release(slot->address)) die("release failed");
        live_bytes -= slot->size;
        slot.reset();
        if (++releases % kReleasesPerReclaim == 0) {
          state.PauseTiming();
          sample_committed();
          state.ResumeTiming();
          heap.reclaim([](uintptr_t, uintptr_t) { return false; });
        }
      }
    }

    state.PauseTiming();
    sample_committed();
    heap.reclaim([](uintptr_t, uintptr_t) { return false; });
    std::vector<Live> live;
    for (const auto& slot : slots)
      if (slot) live.push_back(*slot);
    const ArenaStats arena = code_arena(heap.stats());
    const FreeSpans spans = free_spans(std::move(live), arena.begin, arena.end);
    if (spans.whole_total != arena.free_bytes || spans.whole_largest != arena.largest_free_block)
      die("free spans computed from the live blocks disagree with the heap's statistics");
    state.counters["operations"] = double(operations);
    state.counters["allocation_failures"] = double(failures);
    state.counters["peak_live_bytes"] = double(peak_live);
    state.counters["peak_committed_bytes"] = double(peak_committed);
    state.counters["committed_over_peak_live"] = double(peak_committed) / double(peak_live);
    state.counters["free_bytes_below_top"] = double(spans.below_top_total);
    state.counters["largest_free_over_free"] =
        double(spans.below_top_largest) / double(spans.below_top_total);
    state.counters["largest_free_over_free_whole_arena"] =
        double(spans.whole_largest) / double(spans.whole_total);
    if (!map_path.empty()) {
      const std::string svg = heap.dump_svg();
      if (auto written = write_text_file(map_path, svg); !written) die(written.error().message);
      if (svg.size() >= kMaxMapBytes) {
        die("the heap map of the final state is " + std::to_string(svg.size()) +
            " bytes, not under " + std::to_string(kMaxMapBytes));
      }
      state.counters["map_bytes"] = double(svg.size());
    }
    created->reset();  // unmapping the region is not part of the measurement
    state.ResumeTiming();
  }
}

void register_benchmarks() {
  // One deterministic run: repeating it would give the same layout again.
  benchmark::RegisterBenchmark("fragmentation/codeheap", fragmentation)
      ->Iterations(1)
      ->Repetitions(1)
      ->Unit(benchmark::kMillisecond);
}

}  // namespace
}  // namespace codeheap::bench

int main(int argc, char** argv) {
  // --map=PATH is ours; the harness gets the rest.
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.starts_with("--map=")) {
      codeheap::bench::map_path = arg.substr(6);
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  codeheap::bench::register_benchmarks();
  return codeheap::bench::main(argc, argv);
}
