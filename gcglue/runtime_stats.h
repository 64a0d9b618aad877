// The gc section of the heap-stats dump (Runtime::dump_json and dump_text), made from the
// runtime's counters. Internal to //gcglue:runtime.
#pragma once

#include <cstddef>
#include <string>

#include <nlohmann/json.hpp>

#include "gcglue/runtime.h"

namespace codeheap::gc {

// The JSON object under "gc": GcCounters' fields by name, "tiers" by tier name, and the two
// gauges the counters do not hold (live code objects, registered threads).
nlohmann::json gc_section_json(const GcCounters& counters, size_t live_code_objects,
                               size_t registered_threads);

// The same for people: the lines that follow the heap's own text dump.
std::string gc_section_text(const GcCounters& counters, size_t live_code_objects,
                            size_t registered_threads);

}  // namespace codeheap::gc
