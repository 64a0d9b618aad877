// nlohmann-json conversions of the heap statistics, in both directions, with the field names of
// the structs in codeheap/stats.h (the schema of the JSON dump; see docs/heap-stats.md).
//
//   nlohmann::json j = heap.stats();             // what format_json prints
//   auto back = j.get<codeheap::HeapStats>();    // throws if a field is missing
#pragma once

#include <nlohmann/json.hpp>

#include "codeheap/stats.h"

namespace codeheap {

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(ArenaStats, name, begin, end, reserved_bytes, committed_bytes,
                                   used_bytes, quarantined_bytes, free_bytes, largest_free_block,
                                   fragmentation, live_blocks, quarantined_blocks, free_blocks,
                                   free_histogram, peak_committed_bytes, peak_used_bytes,
                                   peak_quarantined_bytes, peak_live_blocks,
                                   peak_quarantined_blocks, allocated_bytes_total)

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(OwnerStats, id, name, retired, live_blocks, live_bytes,
                                   quarantined_blocks, quarantined_bytes, low, high)

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Counters, allocations, allocation_failures, releases, retires,
                                   abandons, release_errors, reclaim_passes, blocks_reclaimed,
                                   bytes_reclaimed, reclaim_ns_total, reclaim_ns_last,
                                   decommitted_bytes, automatic_reclaim_passes)

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(HeapStats, name, reserved_bytes, committed_bytes, used_bytes,
                                   quarantined_bytes, free_bytes, largest_free_block, arenas,
                                   owners, counters)

}  // namespace codeheap
