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

// Counters by hand: each Tally is two flat keys, as before it had its shape (consumers of the
// dump keep working).
inline void to_json(nlohmann::json& j, const Counters& c) {
  j = nlohmann::json{{"allocations", c.allocations},
                     {"allocation_failures", c.allocation_failures},
                     {"releases", c.releases},
                     {"retires", c.retires},
                     {"abandons", c.abandons},
                     {"release_errors", c.release_errors},
                     {"reclaim_passes", c.reclaim_passes.count},
                     {"blocks_reclaimed", c.reclaimed.count},
                     {"bytes_reclaimed", c.reclaimed.total},
                     {"reclaim_ns_total", c.reclaim_passes.total},
                     {"reclaim_ns_last", c.reclaim_ns_last},
                     {"decommitted_bytes", c.decommitted_bytes},
                     {"automatic_reclaim_passes", c.automatic_reclaim_passes}};
}

inline void from_json(const nlohmann::json& j, Counters& c) {
  j.at("allocations").get_to(c.allocations);
  j.at("allocation_failures").get_to(c.allocation_failures);
  j.at("releases").get_to(c.releases);
  j.at("retires").get_to(c.retires);
  j.at("abandons").get_to(c.abandons);
  j.at("release_errors").get_to(c.release_errors);
  j.at("reclaim_passes").get_to(c.reclaim_passes.count);
  j.at("blocks_reclaimed").get_to(c.reclaimed.count);
  j.at("bytes_reclaimed").get_to(c.reclaimed.total);
  j.at("reclaim_ns_total").get_to(c.reclaim_passes.total);
  j.at("reclaim_ns_last").get_to(c.reclaim_ns_last);
  j.at("decommitted_bytes").get_to(c.decommitted_bytes);
  j.at("automatic_reclaim_passes").get_to(c.automatic_reclaim_passes);
}

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(HeapStats, name, reserved_bytes, committed_bytes, used_bytes,
                                   quarantined_bytes, free_bytes, largest_free_block, arenas,
                                   owners, counters)

}  // namespace codeheap
