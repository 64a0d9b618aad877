#include "codeheap/stats.h"

#include <algorithm>
#include <array>
#include <utility>

#include <spdlog/fmt/fmt.h>

#include "codeheap/stats_json.h"

namespace codeheap {

namespace {

// A size cell: exact bytes alone when small, else "1.5 KiB (1536 B)".
std::string size_cell(uint64_t bytes) {
  if (bytes < 1024) return fmt::format("{} B", bytes);
  return fmt::format("{} ({} B)", human_bytes(bytes), bytes);
}

std::string duration_cell(uint64_t ns) {
  static constexpr std::array<std::pair<uint64_t, const char*>, 3> kUnits = {
      {{1'000'000'000, "s"}, {1'000'000, "ms"}, {1'000, "us"}}};
  for (const auto& [scale, unit] : kUnits) {
    if (ns >= scale) {
      return fmt::format("{:.3f} {} ({} ns)", static_cast<double>(ns) / scale, unit, ns);
    }
  }
  return fmt::format("{} ns", ns);
}

std::string range_cell(uintptr_t begin, uintptr_t end) {
  if (begin == 0 && end == 0) return "-";
  return fmt::format("{:#x}-{:#x}", begin, end);
}

// Rows of cells rendered as aligned columns. `align` has one letter per column, 'l' or 'r';
// columns beyond it are left-aligned.
class Table {
 public:
  explicit Table(std::string align) : align_(std::move(align)) {}

  void row(std::vector<std::string> cells) { rows_.push_back(std::move(cells)); }

  void render(std::string& out, int indent) const {
    std::vector<size_t> widths;
    for (const auto& cells : rows_) {
      widths.resize(std::max(widths.size(), cells.size()), 0);
      for (size_t i = 0; i < cells.size(); ++i) widths[i] = std::max(widths[i], cells[i].size());
    }
    for (const auto& cells : rows_) {
      std::string line(static_cast<size_t>(indent), ' ');
      for (size_t i = 0; i < cells.size(); ++i) {
        if (i > 0) line += "   ";
        const bool right = i < align_.size() && align_[i] == 'r';
        line += right ? fmt::format("{:>{}}", cells[i], widths[i])
                      : fmt::format("{:<{}}", cells[i], widths[i]);
      }
      line.erase(line.find_last_not_of(' ') + 1);
      out += line;
      out += '\n';
    }
  }

 private:
  std::string align_;
  std::vector<std::vector<std::string>> rows_;
};

void render_arenas(std::string& out, const std::vector<ArenaStats>& arenas) {
  Table table("l" + std::string(arenas.size(), 'r'));
  auto add = [&](const char* label, auto cell) {
    std::vector<std::string> cells{label};
    for (const ArenaStats& a : arenas) cells.push_back(cell(a));
    table.row(std::move(cells));
  };
  add("arena", [](const ArenaStats& a) { return a.name; });
  add("range", [](const ArenaStats& a) { return range_cell(a.begin, a.end); });
  add("reserved", [](const ArenaStats& a) { return size_cell(a.reserved_bytes); });
  add("committed", [](const ArenaStats& a) { return size_cell(a.committed_bytes); });
  add("used", [](const ArenaStats& a) { return size_cell(a.used_bytes); });
  add("quarantined", [](const ArenaStats& a) { return size_cell(a.quarantined_bytes); });
  add("free", [](const ArenaStats& a) { return size_cell(a.free_bytes); });
  add("largest free block", [](const ArenaStats& a) { return size_cell(a.largest_free_block); });
  add("fragmentation",
      [](const ArenaStats& a) { return fmt::format("{:.1f} %", a.fragmentation * 100); });
  add("live blocks", [](const ArenaStats& a) { return fmt::format("{}", a.live_blocks); });
  add("quarantined blocks",
      [](const ArenaStats& a) { return fmt::format("{}", a.quarantined_blocks); });
  add("free blocks", [](const ArenaStats& a) { return fmt::format("{}", a.free_blocks); });
  add("peak committed", [](const ArenaStats& a) { return size_cell(a.peak_committed_bytes); });
  add("peak used", [](const ArenaStats& a) { return size_cell(a.peak_used_bytes); });
  add("peak quarantined", [](const ArenaStats& a) { return size_cell(a.peak_quarantined_bytes); });
  add("peak live blocks",
      [](const ArenaStats& a) { return fmt::format("{}", a.peak_live_blocks); });
  add("peak quarantined blocks",
      [](const ArenaStats& a) { return fmt::format("{}", a.peak_quarantined_blocks); });
  add("allocated in all", [](const ArenaStats& a) { return size_cell(a.allocated_bytes_total); });
  out += '\n';
  table.render(out, 2);
}

void render_histogram(std::string& out, const std::vector<ArenaStats>& arenas) {
  size_t buckets = 0;
  for (const ArenaStats& a : arenas) buckets = std::max(buckets, a.free_histogram.size());
  Table table("l" + std::string(arenas.size(), 'r'));
  std::vector<std::string> header{"free blocks by size"};
  for (const ArenaStats& a : arenas) header.push_back(a.name);
  table.row(std::move(header));
  for (size_t i = 0; i < buckets; ++i) {
    std::vector<std::string> cells{
        fmt::format("[{}, {})", human_bytes(uint64_t{1} << i), human_bytes(uint64_t{2} << i))};
    bool any = false;
    for (const ArenaStats& a : arenas) {
      const size_t n = i < a.free_histogram.size() ? a.free_histogram[i] : 0;
      any |= n != 0;
      cells.push_back(fmt::format("{}", n));
    }
    if (any) table.row(std::move(cells));
  }
  out += '\n';
  table.render(out, 2);
}

void render_owners(std::string& out, const std::vector<OwnerStats>& owners) {
  out += fmt::format("\n  owners: {}\n", owners.size());
  if (owners.empty()) return;
  Table table("rllrrrrl");
  table.row({"id", "name", "state", "live blocks", "live bytes", "quarantined blocks",
             "quarantined bytes", "range"});
  for (const OwnerStats& o : owners) {
    table.row({fmt::format("{}", o.id), o.name, o.retired ? "retired" : "active",
               fmt::format("{}", o.live_blocks), size_cell(o.live_bytes),
               fmt::format("{}", o.quarantined_blocks), size_cell(o.quarantined_bytes),
               range_cell(o.low, o.high)});
  }
  table.render(out, 4);
}

void render_counters(std::string& out, const Counters& c) {
  Table table("lr");
  auto count = [&](const char* label, uint64_t n) { table.row({label, fmt::format("{}", n)}); };
  count("allocations", c.allocations);
  count("allocation failures", c.allocation_failures);
  count("releases", c.releases);
  count("retires", c.retires);
  count("abandons", c.abandons);
  count("release errors", c.release_errors);
  count("reclaim passes", c.reclaim_passes.count);
  count("  automatic", c.automatic_reclaim_passes);
  count("blocks reclaimed", c.reclaimed.count);
  table.row({"bytes reclaimed", size_cell(c.reclaimed.total)});
  table.row({"reclaim time, total", duration_cell(c.reclaim_passes.total)});
  table.row({"reclaim time, last pass", duration_cell(c.reclaim_ns_last)});
  table.row({"returned to the OS", size_cell(c.decommitted_bytes)});
  out += "\n  counters\n";
  table.render(out, 4);
}

}  // namespace

std::string human_bytes(uint64_t bytes) {
  static constexpr std::array<const char*, 5> kUnits = {"KiB", "MiB", "GiB", "TiB", "PiB"};
  if (bytes < 1024) return fmt::format("{} B", bytes);
  double value = static_cast<double>(bytes) / 1024;
  size_t unit = 0;
  while (value >= 1024 && unit + 1 < kUnits.size()) {
    value /= 1024;
    ++unit;
  }
  return fmt::format("{:.1f} {}", value, kUnits[unit]);
}

std::string format_text(const HeapStats& stats) {
  std::string out;
  const uintptr_t begin = stats.arenas.empty() ? 0 : stats.arenas.front().begin;
  const uintptr_t end = stats.arenas.empty() ? 0 : stats.arenas.back().end;
  out += fmt::format("heap-stats \"{}\"  region {}\n", stats.name, range_cell(begin, end));
  Table totals("lr");
  totals.row({"reserved", size_cell(stats.reserved_bytes)});
  totals.row({"committed", size_cell(stats.committed_bytes)});
  totals.row({"used", size_cell(stats.used_bytes)});
  totals.row({"quarantined", size_cell(stats.quarantined_bytes)});
  totals.row({"free", size_cell(stats.free_bytes)});
  totals.row({"largest free block", size_cell(stats.largest_free_block)});
  totals.render(out, 2);
  render_arenas(out, stats.arenas);
  render_histogram(out, stats.arenas);
  render_owners(out, stats.owners);
  render_counters(out, stats.counters);
  return out;
}

// Owner names come from embedders and may be any bytes: invalid UTF-8 is replaced (U+FFFD), as
// nlohmann would otherwise throw from the dump.
void clear_history(HeapStats& stats) {
  stats.counters = {};
  for (ArenaStats& a : stats.arenas) {
    a.peak_committed_bytes = a.peak_used_bytes = a.peak_quarantined_bytes = 0;
    a.peak_live_blocks = a.peak_quarantined_blocks = a.allocated_bytes_total = 0;
  }
}

std::string format_json(const HeapStats& stats) {
  return nlohmann::json(stats).dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace codeheap
