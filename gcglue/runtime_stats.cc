#include "gcglue/runtime_stats.h"

#include <spdlog/fmt/fmt.h>

#include "gcglue/stats_json.h"

namespace codeheap::gc {

nlohmann::json gc_section_json(const GcCounters& c, size_t live_code_objects,
                               size_t registered_threads) {
  nlohmann::json gc = c;
  gc["live_code_objects"] = live_code_objects;
  gc["registered_threads"] = registered_threads;
  for (Tier tier : {Tier::kBaseline, Tier::kOptimized}) {
    nlohmann::json& t = gc["tiers"][to_string(tier)] = c.tier(tier);
    t["live_code_objects"] = c.tier(tier).live();
  }
  return gc;
}

std::string gc_section_text(const GcCounters& c, size_t live_code_objects,
                            size_t registered_threads) {
  std::string text = fmt::format(
      "gc: {} live code objects ({} created, {} finalized), {} closures created\n"
      "    {} modules retired, {} collections ({} for a full code heap), {} reclaim passes ({} "
      "blocks kept referenced, {} thread timeouts)\n"
      "    stack scans: last {:.3f} ms, total {:.3f} ms; {} registered threads\n",
      live_code_objects, c.code_objects_created, c.code_objects_finalized, c.closures_created,
      c.modules_retired, c.collections, c.full_heap_collections, c.reclaim_passes,
      c.blocks_kept_referenced, c.threads_timed_out, c.scan_ns_last / 1e6, c.scan_ns_total / 1e6,
      registered_threads);
  for (Tier tier : {Tier::kBaseline, Tier::kOptimized}) {
    const TierCounters& t = c.tier(tier);
    text += fmt::format(
        "    {} tier: {} live units, {} bytes ({} created, {} finalized), compile {:.3f} ms "
        "total ({:.1f} us per unit)\n",
        to_string(tier), t.live(), t.code_bytes_live, t.code_objects_created,
        t.code_objects_finalized, t.compile_ns_total / 1e6,
        t.code_objects_created ? t.compile_ns_total / 1e3 / t.code_objects_created : 0.0);
  }
  text +=
      fmt::format("    tier-ups: {} installed, {} discarded\n", c.tier_ups, c.tier_ups_discarded);
  return text;
}

}  // namespace codeheap::gc
