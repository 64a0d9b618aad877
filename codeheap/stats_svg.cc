// format_svg: the heap map (stats_svg.h). Rendering only; Heap::map takes the snapshot.
#include "codeheap/stats_svg.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>

#include <spdlog/fmt/fmt.h>

namespace codeheap {

namespace {

constexpr int kMargin = 12;
constexpr int kMinWidth = 320;
constexpr uint64_t kTargetRows = 28;  // for what the heap used: the map fits 1200x800
// A row: the page band (committed or only reserved), a gap, then the blocks.
constexpr int kBandHeight = 3;
constexpr int kBlockTop = 4;
constexpr int kBlockHeight = 10;
constexpr int kRowPitch = 16;
constexpr int kLine = 16;  // text lines

constexpr const char* kFreeFill = "#e4f1dc";
constexpr const char* kQuarantinedFill = "#d62728";
constexpr const char* kUnownedFill = "#7f8fa6";    // live, no owner
constexpr const char* kAggregateFill = "#5a6b86";  // live, several blocks in one aggregate
constexpr const char* kCommittedFill = "#4d4d4d";
constexpr const char* kReservedFill = "#d9d9d9";

// Text for XML character data and attribute values: escaped, and only characters XML 1.0
// allows (owner names are arbitrary bytes): control characters and bytes that are not UTF-8
// become '?'.
std::string xml_text(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size();) {
    const auto c = static_cast<unsigned char>(in[i]);
    if (c < 0x80) {
      switch (c) {
        case '&':
          out += "&amp;";
          break;
        case '<':
          out += "&lt;";
          break;
        case '>':
          out += "&gt;";
          break;
        case '"':
          out += "&quot;";
          break;
        case '\'':
          out += "&apos;";
          break;
        default:
          out += (c < 0x20 && c != '\t' && c != '\n') || c == 0x7f ? '?' : char(c);
      }
      ++i;
      continue;
    }
    // A well-formed UTF-8 sequence of 2 to 4 bytes, copied whole; anything else is one '?'.
    const size_t length = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
    bool valid = length != 0 && i + length <= in.size();
    uint32_t code = c & (0x7f >> length);
    for (size_t k = 1; valid && k < length; ++k) {
      const auto next = static_cast<unsigned char>(in[i + k]);
      valid = (next & 0xc0) == 0x80;
      code = code << 6 | (next & 0x3f);
    }
    // Overlong forms, surrogates and U+FFFE/U+FFFF are not XML characters either.
    valid = valid &&
            code >= (length == 2   ? 0x80u
                     : length == 3 ? 0x800u
                                   : 0x10000u) &&
            code <= 0x10ffff && !(code >= 0xd800 && code <= 0xdfff) && code != 0xfffe &&
            code != 0xffff;
    if (valid) {
      out.append(in.substr(i, length));
      i += length;
    } else {
      out += '?';
      ++i;
    }
  }
  return out;
}

// A colour per owner: hues from cyan through blue to purple (red is quarantine, green free),
// successive ids far apart (the golden angle), two lightnesses.
std::string owner_fill(uint64_t owner) {
  if (owner == 0) return kUnownedFill;
  const double hue = 175.0 + std::fmod(static_cast<double>(owner) * 137.50776, 135.0);
  const double lightness = owner % 2 == 0 ? 0.42 : 0.60;
  const double saturation = 0.55;
  // HSL -> RGB.
  const double chroma = (1 - std::fabs(2 * lightness - 1)) * saturation;
  const double h = hue / 60.0;
  const double x = chroma * (1 - std::fabs(std::fmod(h, 2.0) - 1));
  std::array<double, 3> rgb{};
  const int sector = static_cast<int>(h);
  static constexpr std::array<std::array<int, 3>, 6> kOrder = {
      {{0, 1, 2}, {1, 0, 2}, {2, 0, 1}, {2, 1, 0}, {1, 2, 0}, {0, 2, 1}}};
  // Per sector: which channel gets the chroma, which x, which nothing.
  const auto& order = kOrder[static_cast<size_t>(sector % 6)];
  rgb[static_cast<size_t>(order[0])] = chroma;
  rgb[static_cast<size_t>(order[1])] = x;
  rgb[static_cast<size_t>(order[2])] = 0;
  const double m = lightness - chroma / 2;
  auto channel = [&](size_t i) { return static_cast<int>(std::lround((rgb[i] + m) * 255)); };
  return fmt::format("#{:02x}{:02x}{:02x}", channel(0), channel(1), channel(2));
}

enum State : uint8_t { kLive, kQuarantined, kFree };
constexpr std::array<const char*, 3> kStateNames = {"live", "quarantined", "free"};

// A block or a free span.
struct Item {
  uint64_t begin;  // offset from the arena's start
  uint64_t end;
  State state;
  uint64_t owner;
};

class Renderer {
 public:
  Renderer(const HeapMap& map, const SvgOptions& options)
      : map_(map), width_(std::max(options.width, kMinWidth)) {
    // The scale fits what the heap has used (blocks and committed pages) into about
    // kTargetRows rows; the free, uncommitted top of each arena is then collapsed into one row.
    const size_t arenas = std::min(map.arenas.size(), map.stats.arenas.size());
    std::vector<uint64_t> extents(arenas);
    uint64_t used = 0;
    for (size_t i = 0; i < arenas; ++i) {
      const uintptr_t begin = map.stats.arenas[i].begin;
      uintptr_t top = begin;
      if (const auto& blocks = map.arenas[i].blocks; !blocks.empty()) {
        top = std::max(top, blocks.back().begin + blocks.back().footprint);
      }
      if (const auto& committed = map.arenas[i].committed; !committed.empty()) {
        top = std::max(top, committed.back().end);
      }
      extents[i] = std::max<uint64_t>(top - begin, 1);
      used += extents[i];
    }
    const uint64_t strip = static_cast<uint64_t>(width_ - 2 * kMargin);
    const uint64_t rows = strip * kTargetRows;  // in pixels
    bytes_per_pixel_ = std::bit_ceil(std::max<uint64_t>((used + rows - 1) / rows, 1));
    row_bytes_ = bytes_per_pixel_ * strip;
    for (size_t i = 0; i < arenas; ++i) {
      const uint64_t size = map.stats.arenas[i].end - map.stats.arenas[i].begin;
      const uint64_t shown = (extents[i] + row_bytes_ - 1) / row_bytes_ * row_bytes_;
      // Collapsing a row or two would save nothing.
      shown_.push_back(size - std::min(shown, size) <= 2 * row_bytes_ ? size : shown);
    }
    size_t items = 0;  // blocks and free spans
    for (const ArenaStats& a : map.stats.arenas) {
      items += a.live_blocks + a.quarantined_blocks + a.free_blocks;
    }
    if (items > options.max_single_items) choose_aggregation(options.max_single_items);
  }

  std::string render() {
    legend();
    for (size_t i = 0; i < map_.arenas.size() && i < map_.stats.arenas.size(); ++i) {
      arena(i);
    }
    std::string out = fmt::format(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" "
        "viewBox=\"0 0 {0} {1}\" font-family=\"DejaVu Sans, Verdana, sans-serif\" "
        "font-size=\"11\" data-bytes-per-pixel=\"{2}\" data-aggregate-below=\"{3}\">\n"
        "<title>heap map of {4}</title>\n"
        "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n",
        width_, y_ + kMargin, bytes_per_pixel_, aggregate_below_, xml_text(map_.stats.name));
    out += body_;
    out += "</svg>\n";
    return out;
  }

 private:
  void text(int x, const std::string& content, const char* attributes = "") {
    body_ += fmt::format("<text x=\"{}\" y=\"{}\"{}>{}</text>\n", x, y_ + 11, attributes, content);
  }

  // A swatch and its label at (x, y_); returns the x after it.
  int swatch(int x, const std::string& fill, const std::string& label) {
    body_ += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"14\" height=\"10\" fill=\"{}\"/>", x,
                         y_ + 2, fill);
    text(x + 18, xml_text(label));
    // No font metrics here: an estimate that errs wide.
    return x + 18 + static_cast<int>(label.size()) * 7 + 14;
  }

  void legend() {
    const HeapStats& s = map_.stats;
    y_ = kMargin;
    const uintptr_t begin = s.arenas.empty() ? 0 : s.arenas.front().begin;
    const uintptr_t end = s.arenas.empty() ? 0 : s.arenas.back().end;
    text(kMargin,
         fmt::format("heap map \u201c{}\u201d  [{:#x}, {:#x})", xml_text(s.name), begin, end),
         " font-size=\"15\" font-weight=\"bold\"");
    y_ += kLine + 6;
    size_t live = 0, quarantined = 0, free = 0;
    for (const ArenaStats& a : s.arenas) {
      live += a.live_blocks;
      quarantined += a.quarantined_blocks;
      free += a.free_blocks;
    }
    text(kMargin,
         fmt::format("reserved {} \u00b7 committed {} \u00b7 used {} in {} live blocks "
                     "\u00b7 quarantined {} in {} blocks \u00b7 free {} in {} spans "
                     "\u00b7 largest free block {}",
                     human_bytes(s.reserved_bytes), human_bytes(s.committed_bytes),
                     human_bytes(s.used_bytes), live, human_bytes(s.quarantined_bytes), quarantined,
                     human_bytes(s.free_bytes), free, human_bytes(s.largest_free_block)));
    y_ += kLine;
    const Counters& c = s.counters;
    text(kMargin,
         fmt::format("{} owners \u00b7 {} allocations \u00b7 {} releases \u00b7 {} retires "
                     "\u00b7 {} reclaim passes ({} blocks, {} reclaimed) \u00b7 1 pixel = {}, "
                     "1 row = {}{}",
                     s.owners.size(), c.allocations, c.releases, c.retires, c.reclaim_passes.count,
                     c.reclaimed.count, human_bytes(c.reclaimed.total),
                     human_bytes(bytes_per_pixel_), human_bytes(row_bytes_),
                     aggregate_below_ == 0
                         ? std::string()
                         : fmt::format(" \u00b7 blocks under {} px drawn as aggregates",
                                       aggregate_below_ / bytes_per_pixel_)));
    y_ += kLine + 4;

    int x = kMargin;
    x = swatch(x, owner_fill(1), "live (a colour per owner)");
    x = swatch(x, kUnownedFill, "live, no owner");
    if (aggregate_below_ != 0) x = swatch(x, kAggregateFill, "live, aggregated");
    x = swatch(x, kQuarantinedFill, "quarantined");
    x = swatch(x, kFreeFill, "free");
    x = swatch(x, kCommittedFill, "committed pages");
    swatch(x, kReservedFill, "reserved pages (not committed)");
    y_ += kLine;

    // The largest owners by live bytes, so the colours mean something at a glance.
    std::vector<const OwnerStats*> owners;
    for (const OwnerStats& o : s.owners) {
      if (o.live_blocks > 0) owners.push_back(&o);
    }
    constexpr size_t kShown = 8;
    const size_t shown = std::min(owners.size(), kShown);
    std::partial_sort(owners.begin(), owners.begin() + static_cast<ptrdiff_t>(shown), owners.end(),
                      [](const OwnerStats* a, const OwnerStats* b) {
                        return a->live_bytes != b->live_bytes ? a->live_bytes > b->live_bytes
                                                              : a->id < b->id;
                      });
    if (shown > 0) {
      text(kMargin, owners.size() > shown ? fmt::format("largest of {} owners:", owners.size())
                                          : std::string("owners:"));
      x = kMargin + 130;
      for (size_t i = 0; i < shown; ++i) {
        // Long names are cut (a cut character becomes '?'); the tooltips have them whole.
        constexpr size_t kNameBytes = 48;
        const std::string& name = owners[i]->name;
        const std::string label = fmt::format("{}{} ({})", name.substr(0, kNameBytes),
                                              name.size() > kNameBytes ? "\u2026" : "",
                                              human_bytes(owners[i]->live_bytes));
        if (x > kMargin + 130 && x + static_cast<int>(label.size()) * 7 + 32 > width_) {
          y_ += kLine;
          x = kMargin + 130;
        }
        x = swatch(x, owner_fill(owners[i]->id), label);
      }
      y_ += kLine;
    }
    y_ += 6;
  }

  // 1 / bytes_per_pixel_, exactly: a power of two has a finite decimal expansion.
  std::string scale() const {
    std::string digits = fmt::format("{:.40f}", 1.0 / static_cast<double>(bytes_per_pixel_));
    digits.erase(digits.find_last_not_of('0') + 1);
    if (digits.back() == '.') digits.pop_back();
    return digits;
  }

  const OwnerStats* owner(uint64_t id) const {
    auto it = std::lower_bound(map_.stats.owners.begin(), map_.stats.owners.end(), id,
                               [](const OwnerStats& o, uint64_t key) { return o.id < key; });
    return it != map_.stats.owners.end() && it->id == id ? &*it : nullptr;
  }

  std::string owner_label(uint64_t id) const {
    if (id == 0) return "no owner";
    const OwnerStats* o = owner(id);
    return o != nullptr ? fmt::format("{} (owner {})", xml_text(o->name), id)
                        : fmt::format("owner {}", id);
  }

  // Calls f(row, x, width, first) for the pieces of [begin, end) (arena offsets), one per row.
  template <typename F>
  void pieces(uint64_t begin, uint64_t end, F&& f) const {
    for (bool first = true; begin < end; first = false) {
      const uint64_t x = begin % row_bytes_;
      const uint64_t width = std::min(end - begin, row_bytes_ - x);
      f(begin / row_bytes_, x, width, first);
      begin += width;
    }
  }

  // Visits f(item) for the blocks and free spans of arena `i` in address order.
  template <typename F>
  void for_each_item(size_t i, F&& f) const {
    const ArenaStats& stats = map_.stats.arenas[i];
    uint64_t cursor = 0;
    for (const HeapMap::Block& block : map_.arenas[i].blocks) {
      const uint64_t begin = block.begin - stats.begin;
      if (begin > cursor) f(Item{cursor, begin, kFree, 0});
      f(Item{begin, begin + block.footprint, block.quarantined ? kQuarantined : kLive,
             block.owner});
      cursor = begin + block.footprint;
    }
    const uint64_t size = stats.end - stats.begin;
    if (cursor < size) f(Item{cursor, size, kFree, 0});
  }

  // Whether `item` of arena `i` goes into an aggregate with its narrow neighbours. (The free
  // top of a collapsed arena is drawn on its own, whatever its size.)
  bool aggregated(const Item& item, size_t i) const {
    return item.end - item.begin < aggregate_below_ && item.end <= shown_[i];
  }

  // Blocks narrower than aggregate_below_ bytes are aggregated with such neighbours: one pixel,
  // or, if that still leaves more than `budget` rects, 2, 4, ... pixels, so the file stays small
  // whatever the heap holds (an aggregate is at most three rects, a block drawn alone one).
  void choose_aggregation(size_t budget) {
    const size_t arenas = std::min(map_.arenas.size(), map_.stats.arenas.size());
    for (aggregate_below_ = bytes_per_pixel_;; aggregate_below_ *= 2) {
      size_t rects = 0;
      for (size_t i = 0; i < arenas; ++i) {
        unsigned run_states = 0;  // bit per state in the current run
        size_t run = 0;
        auto flush = [&] {
          rects += run == 1 ? 1 : static_cast<size_t>(std::popcount(run_states));
          run = 0;
          run_states = 0;
        };
        for_each_item(i, [&](const Item& item) {
          if (aggregated(item, i)) {
            ++run;
            run_states |= 1u << item.state;
          } else {
            flush();
            ++rects;
          }
        });
        flush();
      }
      if (rects <= budget || aggregate_below_ >= map_.stats.reserved_bytes) return;
    }
  }

  void single(const Item& item) {
    const uint64_t bytes = item.end - item.begin;
    const std::string fill = item.state == kLive          ? owner_fill(item.owner)
                             : item.state == kQuarantined ? kQuarantinedFill
                                                          : kFreeFill;
    const std::string title =
        item.state == kFree
            ? fmt::format("free: {} at {:#x}", human_bytes(bytes), arena_begin_ + item.begin)
            : fmt::format("{}: {}, {} at {:#x}", owner_label(item.owner), kStateNames[item.state],
                          human_bytes(bytes), arena_begin_ + item.begin);
    const std::string owner_attribute = item.state != kFree && item.owner != 0
                                            ? fmt::format(" data-owner=\"{}\"", item.owner)
                                            : std::string();
    bool counted = false;
    auto rect = [&](uint64_t row, uint64_t x, uint64_t width, const std::string& extra) {
      body_ += fmt::format(
          "<rect data-state=\"{}\"{}{}{} x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" "
          "fill=\"{}\"><title>{}</title></rect>\n",
          kStateNames[item.state],
          counted ? std::string() : fmt::format(" data-blocks=\"1\" data-bytes=\"{}\"", bytes),
          owner_attribute, extra, x, row * kRowPitch + kBlockTop, width, kBlockHeight, fill, title);
      counted = true;
    };
    pieces(item.begin, std::min(item.end, shown_end_),
           [&](uint64_t row, uint64_t x, uint64_t width, bool) { rect(row, x, width, ""); });
    // Only the free span at the top of an arena reaches past what is drawn to scale: it gets
    // the collapsed row, full width, saying how many bytes it stands for.
    if (item.end > shown_end_) {
      rect(shown_end_ / row_bytes_, 0, row_bytes_,
           fmt::format(" data-collapsed=\"{}\"", item.end - std::max(item.begin, shown_end_)));
    }
  }

  // Two or more sub-pixel neighbours: one rect per state present, stacked, each as tall as its
  // share of the run's bytes.
  void aggregate(const std::vector<Item>& run) {
    std::array<uint64_t, 3> count{}, bytes{};
    for (const Item& item : run) {
      ++count[item.state];
      bytes[item.state] += item.end - item.begin;
    }
    const uint64_t begin = run.front().begin, end = run.back().end;
    const std::string title =
        fmt::format("{} blocks in [{:#x}, {:#x}): {} live ({}), {} quarantined ({}), {} free ({})",
                    run.size(), arena_begin_ + begin, arena_begin_ + end, count[kLive],
                    human_bytes(bytes[kLive]), count[kQuarantined],
                    human_bytes(bytes[kQuarantined]), count[kFree], human_bytes(bytes[kFree]));
    const std::array<const char*, 3> fills = {kAggregateFill, kQuarantinedFill, kFreeFill};
    const auto total = static_cast<double>(end - begin);
    double top = kBlockTop;
    for (int state = kLive; state <= kFree; ++state) {
      if (count[state] == 0) continue;
      const double height = kBlockHeight * static_cast<double>(bytes[state]) / total;
      pieces(begin, end, [&](uint64_t row, uint64_t x, uint64_t width, bool first) {
        body_ += fmt::format(
            "<rect class=\"aggregate\" data-state=\"{}\"{} x=\"{}\" y=\"{:.2f}\" width=\"{}\" "
            "height=\"{:.2f}\" "
            "fill=\"{}\"><title>{}</title></rect>\n",
            kStateNames[state],
            first ? fmt::format(" data-blocks=\"{}\" data-bytes=\"{}\"", count[state], bytes[state])
                  : std::string(),
            x, static_cast<double>(row * kRowPitch) + top, width, height, fills[state], title);
      });
      top += height;
    }
  }

  void arena(size_t index) {
    const ArenaStats& stats = map_.stats.arenas[index];
    const HeapMap::Arena& arena = map_.arenas[index];
    arena_begin_ = stats.begin;
    const uint64_t size = stats.end - stats.begin;
    shown_end_ = shown_[index];
    const bool collapsed = shown_end_ < size;
    const uint64_t rows =
        std::max<uint64_t>((shown_end_ + row_bytes_ - 1) / row_bytes_, 1) + (collapsed ? 1 : 0);

    y_ += 4;
    text(kMargin,
         fmt::format("{}  [{:#x}, {:#x})  reserved {}, committed {}", xml_text(stats.name),
                     stats.begin, stats.end, human_bytes(stats.reserved_bytes),
                     human_bytes(stats.committed_bytes)),
         " font-weight=\"bold\"");
    y_ += kLine;
    text(kMargin, fmt::format("used {} in {} live blocks \u00b7 quarantined {} in {} blocks "
                              "\u00b7 free {} in {} spans, largest {}, fragmentation {:.1f} %",
                              human_bytes(stats.used_bytes), stats.live_blocks,
                              human_bytes(stats.quarantined_bytes), stats.quarantined_blocks,
                              human_bytes(stats.free_bytes), stats.free_blocks,
                              human_bytes(stats.largest_free_block), stats.fragmentation * 100));
    y_ += kLine + 2;

    // The strip: x and width in bytes, scaled to pixels by the group (bytes_per_pixel_ is a
    // power of two, so the scale is exact in decimal).
    body_ += fmt::format(
        "<g data-arena=\"{}\" data-begin=\"{}\" data-end=\"{}\" "
        "transform=\"translate({} {}) scale({} 1)\">\n",
        xml_text(stats.name), stats.begin, stats.end, kMargin, y_, scale());
    for (uint64_t row = 0; row < rows; ++row) {
      body_ += fmt::format(
          "<rect data-kind=\"reserved\" x=\"0\" y=\"{}\" width=\"{}\" height=\"{}\" "
          "fill=\"{}\"/>\n",
          row * kRowPitch, std::min(row_bytes_, size - std::min(size, row * row_bytes_)),
          kBandHeight, kReservedFill);
    }
    committed(arena);
    blocks(index);
    body_ += "</g>\n";
    if (collapsed) {
      const int row_y = y_ + static_cast<int>(rows - 1) * kRowPitch;
      body_ += fmt::format(
          "<text x=\"{}\" y=\"{}\" font-size=\"10\" fill=\"#555555\">\u22ef {} free and "
          "uncommitted up to {:#x}, not drawn to scale</text>\n",
          kMargin + 6, row_y + kBlockTop + 9, human_bytes(size - shown_end_), stats.end);
    }
    y_ += static_cast<int>(rows) * kRowPitch + 8;
  }

  void committed(const HeapMap::Arena& arena) {
    std::vector<HeapMap::Range> runs;
    for (const HeapMap::Range& r : arena.committed) {
      // Aggregated: pages a pixel apart become one run, like the blocks.
      if (aggregate_below_ != 0 && !runs.empty() && r.begin - runs.back().end < bytes_per_pixel_) {
        runs.back().end = r.end;
      } else {
        runs.push_back(r);
      }
    }
    for (const HeapMap::Range& r : runs) {
      pieces(r.begin - arena_begin_, r.end - arena_begin_,
             [&](uint64_t row, uint64_t x, uint64_t width, bool) {
               body_ += fmt::format(
                   "<rect data-kind=\"committed\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" "
                   "fill=\"{}\"/>\n",
                   x, row * kRowPitch, width, kBandHeight, kCommittedFill);
             });
    }
  }

  void blocks(size_t i) {
    std::vector<Item> run;  // narrow neighbours not drawn yet
    auto flush = [&] {
      if (run.size() == 1) single(run.front());
      if (run.size() > 1) aggregate(run);
      run.clear();
    };
    for_each_item(i, [&](const Item& item) {
      if (aggregated(item, i)) {
        run.push_back(item);
      } else {
        flush();
        single(item);
      }
    });
    flush();
  }

  const HeapMap& map_;
  const int width_;
  uint64_t bytes_per_pixel_ = 1;
  uint64_t row_bytes_ = 1;
  std::vector<uint64_t> shown_;   // per arena: bytes drawn to scale, from its start
  uint64_t shown_end_ = 0;        // of the arena being drawn
  uint64_t aggregate_below_ = 0;  // bytes; 0: every block is drawn on its own
  uintptr_t arena_begin_ = 0;
  int y_ = 0;
  std::string body_;
};

}  // namespace

std::string format_svg(const HeapMap& map, const SvgOptions& options) {
  return Renderer(map, options).render();
}

Result<void> write_text_file(const std::string& path, std::string_view text) {
  if (path.empty()) return make_error(ErrorCode::kInvalidArgument, "no file name given");
  struct Closer {
    void operator()(FILE* f) const { std::fclose(f); }
  };
  std::unique_ptr<FILE, Closer> file(std::fopen(path.c_str(), "w"));
  if (file == nullptr) {
    return make_error(ErrorCode::kSystemError,
                      fmt::format("cannot open '{}' for writing: {}", path, std::strerror(errno)));
  }
  const bool written = std::fwrite(text.data(), 1, text.size(), file.get()) == text.size();
  const int write_errno = errno;
  if (std::fclose(file.release()) != 0 || !written) {
    return make_error(
        ErrorCode::kSystemError,
        fmt::format("cannot write '{}': {}", path, std::strerror(written ? errno : write_errno)));
  }
  return {};
}

}  // namespace codeheap
