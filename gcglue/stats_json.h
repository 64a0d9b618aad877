// nlohmann-json conversions of the runtime's counters, in both directions, with the field names
// of the structs in gcglue/runtime.h (the "gc" section of Runtime::dump_json; see
// docs/heap-stats.md). GcCounters::tiers is left out: the dump keys the tiers by name.
//
//   nlohmann::json j = runtime.counters();
//   auto back = j.get<codeheap::gc::GcCounters>();  // throws if a field is missing
#pragma once

#include <nlohmann/json.hpp>

#include "gcglue/runtime.h"

namespace codeheap::gc {

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(TierCounters, code_objects_created, code_objects_finalized,
                                   code_bytes_live, compile_ns_total)

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(GcCounters, code_objects_created, code_objects_finalized,
                                   closures_created, modules_retired, collections, reclaim_passes,
                                   blocks_kept_referenced, threads_timed_out, retire_failures,
                                   full_heap_collections, scan_ns_total, scan_ns_last, tier_ups,
                                   tier_ups_discarded)

}  // namespace codeheap::gc
