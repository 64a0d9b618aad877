// Heap statistics: the numbers behind the heap-stats dump. Every field is documented in
// docs/heap-stats.md; the JSON dump uses the same names.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "codeheap/gauge.h"

namespace codeheap {

struct ArenaStats {
  std::string name;     // "code", "read_only", "data"
  uintptr_t begin = 0;  // execution-view range [begin, end)
  uintptr_t end = 0;
  size_t reserved_bytes = 0;
  size_t committed_bytes = 0;  // pages that currently cost memory
  size_t used_bytes = 0;       // live blocks (rounded to the allocation granule)
  size_t quarantined_bytes = 0;
  size_t free_bytes = 0;  // reserved - used - quarantined
  size_t largest_free_block = 0;
  double fragmentation = 0.0;  // 1 - largest_free_block / free_bytes (0 when nothing is free)
  size_t live_blocks = 0;
  size_t quarantined_blocks = 0;
  size_t free_blocks = 0;
  // free_histogram[i] counts free blocks with size in [2^i, 2^(i+1)) bytes.
  std::vector<size_t> free_histogram;
  // High-water marks since the heap was created. Per arena only: the arenas peak at different
  // times, so their sum would overstate the heap's peak.
  size_t peak_committed_bytes = 0;
  size_t peak_used_bytes = 0;
  size_t peak_quarantined_bytes = 0;
  size_t peak_live_blocks = 0;
  size_t peak_quarantined_blocks = 0;
  size_t allocated_bytes_total = 0;  // footprints of every block ever handed out

  bool operator==(const ArenaStats&) const = default;
};

struct OwnerStats {
  uint64_t id = 0;
  std::string name;
  bool retired = false;
  size_t live_blocks = 0;
  size_t live_bytes = 0;
  size_t quarantined_blocks = 0;
  size_t quarantined_bytes = 0;
  uintptr_t low = 0;   // lowest block address (0 if none)
  uintptr_t high = 0;  // one past the highest block end

  bool operator==(const OwnerStats&) const = default;
};

// The shape of a statistic that counts events and sums an amount over them, as mimalloc's stat
// counters do: how many, and how much in all. (Statistics that rise and fall are Gauges, shown
// per arena as current value, peak and total.)
struct Tally {
  uint64_t count = 0;
  uint64_t total = 0;

  void add(uint64_t amount) {
    ++count;
    total += amount;
  }
  bool operator==(const Tally&) const = default;
};

// Events since the heap was created. In JSON (and the dump) the tallies keep the flat keys of
// their two halves: reclaim_passes and reclaim_ns_total, blocks_reclaimed and bytes_reclaimed.
struct Counters {
  uint64_t allocations = 0;
  uint64_t allocation_failures = 0;
  uint64_t releases = 0;
  uint64_t retires = 0;
  uint64_t abandons = 0;
  uint64_t release_errors = 0;            // double releases and foreign addresses
  Tally reclaim_passes;                   // count: passes; total: their nanoseconds
  uint64_t automatic_reclaim_passes = 0;  // of those, started by a ReclaimPolicy
  Tally reclaimed;                        // count: blocks freed by passes; total: their bytes
  uint64_t reclaim_ns_last = 0;
  uint64_t decommitted_bytes = 0;

  bool operator==(const Counters&) const = default;
};

struct HeapStats {
  std::string name;
  size_t reserved_bytes = 0;
  size_t committed_bytes = 0;
  size_t used_bytes = 0;
  size_t quarantined_bytes = 0;
  size_t free_bytes = 0;
  size_t largest_free_block = 0;
  std::vector<ArenaStats> arenas;  // indexed by codeheap::Arena
  std::vector<OwnerStats> owners;  // registered or still holding blocks, by id
  Counters counters;

  bool operator==(const HeapStats&) const = default;
};

// Clears what records the past (the counters, each arena's peaks and totals), leaving what the
// heap holds now: two snapshots so cleared are equal when the same blocks are in the same states,
// whatever happened between them (a failed link that allocated and gave back its blocks).
void clear_history(HeapStats& stats);

// Text and JSON renderings of a snapshot (also reachable as Heap::dump_text/dump_json).
// format_text is for people: aligned tables, sizes in binary units followed by exact bytes.
// format_json is for tools: one object with exactly the field names above (pretty-printed);
// codeheap/stats_json.h converts in both directions.
std::string format_text(const HeapStats& stats);
std::string format_json(const HeapStats& stats);

// A size for people: "512 B", "1.5 KiB", "256.0 MiB" (binary units, one decimal).
std::string human_bytes(uint64_t bytes);

}  // namespace codeheap
