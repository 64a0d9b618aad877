#include "codeheap/stats_dump.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <spdlog/fmt/fmt.h>

#include "codeheap/heap.h"
#include "codeheap/log.h"
#include "codeheap/stats_json.h"
#include "codeheap/stats_svg.h"

namespace codeheap::stats_dump {

namespace {

struct Target {
  bool stats = false;  // CODEHEAP_STATS is set
  bool to_stderr = false;
  bool json = false;
  std::string path;
  std::string map_path;  // CODEHEAP_MAP, if set
};

std::optional<Target> target_from_environment() {
  const char* value = std::getenv("CODEHEAP_STATS");
  const char* map = std::getenv("CODEHEAP_MAP");
  Target target;
  if (map != nullptr) target.map_path = map;
  if (value != nullptr && *value != '\0') {
    const std::string path(value);
    target.stats = true;
    target.to_stderr = path == "stderr";
    target.json = !target.to_stderr && (path.ends_with(".json") || path.ends_with(".jsonl"));
    if (!target.to_stderr) target.path = path;
  }
  if (!target.stats && target.map_path.empty()) return std::nullopt;
  return target;
}

// The map is a whole document, so each dump replaces the file's previous content.
void write_map(const Target& target, const Heap& heap) {
  if (auto written = write_text_file(target.map_path, heap.dump_svg()); !written) {
    logger()->warn("CODEHEAP_MAP: heap '{}': {}", heap.options().name, written.error().message);
  }
}

struct Watched {
  std::mutex mutex;
  std::vector<std::pair<const Heap*, Target>> heaps;  // in creation order
};

// Never destroyed: a heap that is itself a static object may be destroyed after the exit
// handler has run, and its destructor still looks itself up here.
Watched& watched() {
  static auto* instance = new Watched;
  return *instance;
}

void write(const Target& target, const Heap& heap, bool at_exit) {
  if (!target.map_path.empty()) write_map(target, heap);
  if (!target.stats) return;
  const HeapStats stats = heap.stats();
  std::string record;
  if (target.json) {
    nlohmann::json j = stats;
    j["event"] = at_exit ? "exit" : "destroy";
    j["pid"] = getpid();
    record = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  } else {
    record = fmt::format("codeheap: heap-stats {} (pid {})\n{}\n",
                         at_exit ? "at exit" : "when destroyed", getpid(), format_text(stats));
  }
  FILE* out = target.to_stderr ? stderr : std::fopen(target.path.c_str(), "a");
  if (out == nullptr) {
    logger()->warn("CODEHEAP_STATS: cannot open {}: {}", target.path, std::strerror(errno));
    return;
  }
  std::fwrite(record.data(), 1, record.size(), out);
  if (target.to_stderr) {
    std::fflush(out);
  } else {
    std::fclose(out);
  }
}

void dump_at_exit() {
  Watched& w = watched();
  std::lock_guard lock(w.mutex);
  for (const auto& [heap, target] : w.heaps) write(target, *heap, /*at_exit=*/true);
}

}  // namespace

void on_create(const Heap& heap) {
  std::optional<Target> target = target_from_environment();
  if (!target) return;
  static std::once_flag registered;
  std::call_once(registered, [] { std::atexit(dump_at_exit); });
  Watched& w = watched();
  std::lock_guard lock(w.mutex);
  w.heaps.emplace_back(&heap, std::move(*target));
}

void on_destroy(const Heap& heap) {
  Watched& w = watched();
  // Held while writing, so the exit handler and destructors on other threads never interleave
  // records, and a heap being dumped at exit is not destroyed underneath the dump.
  std::lock_guard lock(w.mutex);
  auto it = std::find_if(w.heaps.begin(), w.heaps.end(),
                         [&](const auto& entry) { return entry.first == &heap; });
  if (it == w.heaps.end()) return;
  const Target target = std::move(it->second);
  w.heaps.erase(it);
  write(target, heap, /*at_exit=*/false);
}

}  // namespace codeheap::stats_dump
