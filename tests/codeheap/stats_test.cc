// Stats, the text and JSON dumps, the heap map, and the CODEHEAP_STATS and CODEHEAP_MAP dumps at
// exit and on destruction.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "codeheap/heap.h"
#include "codeheap/stats.h"
#include "codeheap/stats_json.h"
#include "tests/codeheap/test_util.h"

namespace codeheap::test {
namespace {

using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::Not;

class StatsTest : public HeapTest {
 protected:
  // A heap with something in every state: live, quarantined, free, owned and not.
  void SetUp() override {
    heap_ = make_heap(small_options("stats"));
    ASSERT_NE(heap_, nullptr);
    owner_ = heap_->register_owner("lisp:fact");
    const OwnerId old = heap_->register_owner("lisp:fact (old)");
    ASSERT_TRUE(heap_->allocate(Arena::kCode, 300, 16, owner_));
    ASSERT_TRUE(heap_->allocate(Arena::kReadOnly, 2000, 64, owner_));
    auto gone = heap_->allocate(Arena::kCode, 5000, 16, old);
    ASSERT_TRUE(gone);
    ASSERT_TRUE(heap_->allocate(Arena::kData, 24, 8));
    ASSERT_TRUE(heap_->release(gone->address));
    heap_->retire_owner(old);
    ASSERT_FALSE(heap_->allocate(Arena::kCode, 2 << 20, 16));
  }
  std::unique_ptr<Heap> heap_;
  OwnerId owner_ = kNoOwner;
};

TEST_F(StatsTest, TotalsAddUp) {
  const HeapStats s = heap_->stats();
  EXPECT_EQ(s.name, "stats");
  ASSERT_EQ(s.arenas.size(), 3u);
  size_t reserved = 0, used = 0, quarantined = 0, free = 0, committed = 0;
  for (const ArenaStats& a : s.arenas) {
    EXPECT_EQ(a.reserved_bytes, a.end - a.begin);
    EXPECT_EQ(a.used_bytes + a.quarantined_bytes + a.free_bytes, a.reserved_bytes);
    EXPECT_DOUBLE_EQ(a.fragmentation, 1.0 - static_cast<double>(a.largest_free_block) /
                                                static_cast<double>(a.free_bytes));
    EXPECT_EQ(a.free_histogram.size(), 64u - __builtin_clzll(a.reserved_bytes));
    reserved += a.reserved_bytes;
    used += a.used_bytes;
    quarantined += a.quarantined_bytes;
    free += a.free_bytes;
    committed += a.committed_bytes;
  }
  EXPECT_EQ(s.reserved_bytes, reserved);
  EXPECT_EQ(s.used_bytes, used);
  EXPECT_EQ(s.quarantined_bytes, quarantined);
  EXPECT_EQ(s.free_bytes, free);
  EXPECT_EQ(s.committed_bytes, committed);
  EXPECT_EQ(s.arenas[0].name, "code");
  EXPECT_EQ(s.arenas[1].name, "read_only");
  EXPECT_EQ(s.arenas[2].name, "data");
  EXPECT_EQ(s.arenas[0].used_bytes, 304u);
  EXPECT_EQ(s.arenas[0].quarantined_bytes, 5008u);
  EXPECT_EQ(s.arenas[0].live_blocks, 1u);
  EXPECT_EQ(s.arenas[0].quarantined_blocks, 1u);
  EXPECT_EQ(s.counters.allocations, 4u);
  EXPECT_EQ(s.counters.allocation_failures, 1u);
  EXPECT_EQ(s.counters.releases, 1u);
  ASSERT_EQ(s.owners.size(), 2u);
  EXPECT_EQ(s.owners[0].name, "lisp:fact");
  EXPECT_EQ(s.owners[1].name, "lisp:fact (old)");
  EXPECT_TRUE(s.owners[1].retired);
  EXPECT_EQ(s.owners[1].quarantined_blocks, 1u);
}

TEST_F(StatsTest, TextDumpIsATableForPeople) {
  const std::string text = heap_->dump_text();
  EXPECT_THAT(text, HasSubstr("heap-stats \"stats\""));
  // Arenas side by side, sizes in binary units with exact bytes.
  EXPECT_THAT(text, ContainsRegex("arena +code +read_only +data"));
  EXPECT_THAT(text,
              ContainsRegex("reserved +1\\.0 MiB \\(1048576 B\\) +256\\.0 KiB \\(262144 B\\)"));
  EXPECT_THAT(text, ContainsRegex("quarantined +4\\.9 KiB \\(5008 B\\)"));
  EXPECT_THAT(text, HasSubstr("free blocks by size"));
  EXPECT_THAT(text, HasSubstr("owners: 2"));
  EXPECT_THAT(text, ContainsRegex("1 +lisp:fact +active"));
  EXPECT_THAT(text, ContainsRegex("2 +lisp:fact \\(old\\) +retired"));
  EXPECT_THAT(text, ContainsRegex("allocation failures +1"));
  EXPECT_THAT(text, HasSubstr("reclaim time, total"));
  EXPECT_EQ(text, format_text(heap_->stats()));
}

TEST_F(StatsTest, JsonDumpHasTheDocumentedFieldsAndRoundTrips) {
  const nlohmann::json j = nlohmann::json::parse(heap_->dump_json());
  auto keys = [](const nlohmann::json& object) {
    std::set<std::string> names;
    for (const auto& [key, value] : object.items()) names.insert(key);
    return names;
  };
  EXPECT_EQ(keys(j), (std::set<std::string>{"name", "reserved_bytes", "committed_bytes",
                                            "used_bytes", "quarantined_bytes", "free_bytes",
                                            "largest_free_block", "arenas", "owners", "counters"}));
  ASSERT_EQ(j["arenas"].size(), 3u);
  EXPECT_EQ(keys(j["arenas"][0]), (std::set<std::string>{"name",
                                                         "begin",
                                                         "end",
                                                         "reserved_bytes",
                                                         "committed_bytes",
                                                         "used_bytes",
                                                         "quarantined_bytes",
                                                         "free_bytes",
                                                         "largest_free_block",
                                                         "fragmentation",
                                                         "live_blocks",
                                                         "quarantined_blocks",
                                                         "free_blocks",
                                                         "free_histogram",
                                                         "peak_committed_bytes",
                                                         "peak_used_bytes",
                                                         "peak_quarantined_bytes",
                                                         "peak_live_blocks",
                                                         "peak_quarantined_blocks",
                                                         "allocated_bytes_total"}));
  ASSERT_EQ(j["owners"].size(), 2u);
  EXPECT_EQ(keys(j["owners"][0]),
            (std::set<std::string>{"id", "name", "retired", "live_blocks", "live_bytes",
                                   "quarantined_blocks", "quarantined_bytes", "low", "high"}));
  EXPECT_EQ(
      keys(j["counters"]),
      (std::set<std::string>{"allocations", "allocation_failures", "releases", "retires",
                             "abandons", "release_errors", "reclaim_passes", "blocks_reclaimed",
                             "bytes_reclaimed", "reclaim_ns_total", "reclaim_ns_last",
                             "decommitted_bytes", "automatic_reclaim_passes"}));
  EXPECT_EQ(j["owners"][0]["name"], "lisp:fact");
  EXPECT_EQ(j["arenas"][1]["name"], "read_only");
  EXPECT_EQ(j.get<HeapStats>(), heap_->stats());
}

// Peaks are high-water marks: they stay when the gauges fall, and a later, lower rise leaves
// them alone. Totals only grow.
TEST(StatsPeaksTest, PeaksAreHighWaterMarksPerArena) {
  HeapOptions options = small_options("peaks");
  options.retain_free_bytes = 0;  // reclaim returns every whole free page
  auto heap = make_heap(options);
  ASSERT_NE(heap, nullptr);
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  std::vector<uintptr_t> blocks;
  for (int i = 0; i < 8; ++i) {
    auto block = heap->allocate(Arena::kCode, page, 16);
    ASSERT_TRUE(block);
    blocks.push_back(block->address);
  }
  const ArenaStats full = heap->stats().arenas[0];
  EXPECT_EQ(full.peak_used_bytes, full.used_bytes);
  EXPECT_EQ(full.peak_live_blocks, 8u);
  EXPECT_EQ(full.peak_committed_bytes, full.committed_bytes);
  EXPECT_EQ(full.allocated_bytes_total, full.used_bytes);

  for (uintptr_t address : blocks) ASSERT_TRUE(heap->retire(address));
  heap->reclaim([](uintptr_t, uintptr_t) { return false; });
  auto again = heap->allocate(Arena::kCode, page, 16);
  ASSERT_TRUE(again);
  const ArenaStats after = heap->stats().arenas[0];
  EXPECT_LT(after.used_bytes, full.used_bytes);
  EXPECT_LT(after.committed_bytes, full.committed_bytes);
  EXPECT_EQ(after.quarantined_bytes, 0u);
  EXPECT_EQ(after.peak_used_bytes, full.used_bytes);
  EXPECT_EQ(after.peak_live_blocks, 8u);
  EXPECT_EQ(after.peak_committed_bytes, full.committed_bytes);
  EXPECT_EQ(after.peak_quarantined_bytes, full.used_bytes);
  EXPECT_EQ(after.peak_quarantined_blocks, 8u);
  EXPECT_EQ(after.allocated_bytes_total, full.used_bytes + after.used_bytes);
  // The other arenas saw nothing.
  EXPECT_EQ(heap->stats().arenas[1].peak_used_bytes, 0u);
  EXPECT_EQ(heap->stats().arenas[2].peak_live_blocks, 0u);
  // The text dump shows them.
  EXPECT_THAT(heap->dump_text(), ContainsRegex("peak live blocks +8 +0 +0"));
}

// Every JSON field (and the environment variable) is described in docs/heap-stats.md.
TEST_F(StatsTest, DocsDescribeEveryField) {
  std::ifstream file("docs/heap-stats.md");
  ASSERT_TRUE(file) << "docs/heap-stats.md is a data dependency of this test";
  std::stringstream buffer;
  buffer << file.rdbuf();
  const std::string docs = buffer.str();
  std::function<void(const nlohmann::json&)> check = [&](const nlohmann::json& j) {
    for (const auto& [key, value] : j.items()) {
      if (j.is_object()) {
        EXPECT_THAT(docs, HasSubstr("`" + key + "`")) << "undocumented field";
      }
      if (value.is_structured()) check(value);
    }
  };
  check(nlohmann::json::parse(heap_->dump_json()));
  EXPECT_THAT(docs, HasSubstr("CODEHEAP_STATS"));
  EXPECT_THAT(docs, HasSubstr("SPDLOG_LEVEL"));
}

TEST(HumanBytesTest, BinaryUnitsWithOneDecimal) {
  EXPECT_EQ(human_bytes(0), "0 B");
  EXPECT_EQ(human_bytes(1023), "1023 B");
  EXPECT_EQ(human_bytes(1024), "1.0 KiB");
  EXPECT_EQ(human_bytes(1536), "1.5 KiB");
  EXPECT_EQ(human_bytes(size_t{256} << 20), "256.0 MiB");
  EXPECT_EQ(human_bytes(size_t{3} << 30), "3.0 GiB");
}

std::string read_file(const std::string& path) {
  std::ifstream file(path);
  std::stringstream buffer;
  buffer << file.rdbuf();
  return buffer.str();
}

std::string temp_path(const std::string& name) {
  const std::string path = ::testing::TempDir() + name;
  std::remove(path.c_str());
  return path;
}

// Creates a heap that is still alive when the process exits.
void leak_a_heap(const char* name) {
  HeapOptions options = small_options(name);
  auto heap = Heap::create(options);
  if (!heap) std::exit(2);
  const OwnerId owner = (*heap)->register_owner("leaked-owner");
  if (!(*heap)->allocate(Arena::kCode, 100, 16, owner)) std::exit(3);
  (*heap).release();  // deliberately leaked: dumped by the exit handler
}

TEST(StatsDumpDeathTest, DumpsLiveHeapsToStderrAtExit) {
  EXPECT_EXIT(
      {
        setenv("CODEHEAP_STATS", "stderr", 1);
        leak_a_heap("exit-to-stderr");
        std::exit(0);
      },
      ::testing::ExitedWithCode(0),
      "heap-stats at exit.*heap-stats \"exit-to-stderr\".*leaked-owner");
}

TEST(StatsDumpDeathTest, DumpsJsonLinesToAFileAtExit) {
  const std::string path = temp_path("codeheap_exit_dump.json");
  EXPECT_EXIT(
      {
        setenv("CODEHEAP_STATS", path.c_str(), 1);
        leak_a_heap("exit-json-1");
        leak_a_heap("exit-json-2");
        std::exit(0);
      },
      ::testing::ExitedWithCode(0), "");
  std::istringstream lines(read_file(path));
  std::vector<nlohmann::json> records;
  for (std::string line; std::getline(lines, line);) records.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0]["name"], "exit-json-1");
  EXPECT_EQ(records[1]["name"], "exit-json-2");
  for (const nlohmann::json& r : records) {
    EXPECT_EQ(r["event"], "exit");
    EXPECT_GT(r["pid"].get<int>(), 0);
    EXPECT_EQ(r["owners"][0]["name"], "leaked-owner");
    EXPECT_NO_THROW(r.get<HeapStats>());
  }
}

// A heap created while `variable` (CODEHEAP_STATS or CODEHEAP_MAP) is `value`, which is then
// unset again.
std::unique_ptr<Heap> make_watched_heap(const char* variable, const std::string& value,
                                        const std::string& name) {
  setenv(variable, value.c_str(), 1);
  auto heap = make_heap(small_options(name));
  unsetenv(variable);
  return heap;
}

TEST(StatsDumpTest, DumpsTextToAFileWhenAHeapIsDestroyed) {
  const std::string path = temp_path("codeheap_destroy_dump.txt");
  auto heap = make_watched_heap("CODEHEAP_STATS", path, "destroyed-heap");
  ASSERT_NE(heap, nullptr);
  auto unwatched = make_heap(small_options("unwatched-heap"));
  ASSERT_NE(unwatched, nullptr);
  heap.reset();
  unwatched.reset();
  const std::string text = read_file(path);
  EXPECT_THAT(text, HasSubstr("heap-stats when destroyed"));
  EXPECT_THAT(text, HasSubstr("heap-stats \"destroyed-heap\""));
  EXPECT_THAT(text, Not(HasSubstr("unwatched-heap")));
}

// The heap map (stats_svg.h). heap_map_test.py parses maps with an XML parser and checks that
// they add up; these check the snapshot behind them, the names in them, and CODEHEAP_MAP.
TEST_F(StatsTest, MapIsTheSnapshotOfItsStats) {
  const HeapMap map = heap_->map();
  EXPECT_EQ(map.stats, heap_->stats());
  ASSERT_EQ(map.arenas.size(), map.stats.arenas.size());
  for (size_t i = 0; i < map.arenas.size(); ++i) {
    const ArenaStats& arena = map.stats.arenas[i];
    size_t quarantined = 0, committed = 0;
    for (const HeapMap::Block& block : map.arenas[i].blocks) quarantined += block.quarantined;
    for (const HeapMap::Range& range : map.arenas[i].committed) {
      committed += range.end - range.begin;
    }
    EXPECT_EQ(map.arenas[i].blocks.size(), arena.live_blocks + arena.quarantined_blocks);
    EXPECT_EQ(quarantined, arena.quarantined_blocks);
    EXPECT_EQ(committed, arena.committed_bytes);
  }
}

TEST_F(StatsTest, MapKeepsNamesThatAreNotXmlWellFormed) {
  const OwnerId odd = heap_->register_owner("odd \xff\xfe <name> \x01");
  ASSERT_TRUE(heap_->allocate(Arena::kData, 64, 16, odd));
  const HeapStats before = heap_->stats();
  const std::string svg = heap_->dump_svg();
  EXPECT_EQ(heap_->stats(), before) << "drawing changed the heap";
  EXPECT_THAT(svg, HasSubstr("odd ?? &lt;name&gt; ?"));
  EXPECT_THAT(svg, Not(HasSubstr("\xff")));
  EXPECT_THAT(svg, Not(HasSubstr("\x01")));
  EXPECT_THAT(svg, HasSubstr("lisp:fact (old)"));
}

TEST(WriteTextFileTest, AnUnwritablePathIsAnErrorNamingIt) {
  auto written = write_text_file("/nonexistent-dir/map.svg", "<svg/>");
  ASSERT_FALSE(written);
  EXPECT_EQ(written.error().code, ErrorCode::kSystemError);
  EXPECT_THAT(written.error().message, HasSubstr("'/nonexistent-dir/map.svg'"));
  EXPECT_THAT(written.error().message, HasSubstr("No such file or directory"));
  written = write_text_file("", "<svg/>");
  ASSERT_FALSE(written);
  EXPECT_EQ(written.error().code, ErrorCode::kInvalidArgument);
}

TEST(StatsDumpTest, WritesTheMapWhenAHeapIsDestroyed) {
  const std::string path = temp_path("codeheap_destroy_map.svg");
  auto heap = make_watched_heap("CODEHEAP_MAP", path, "mapped-heap");
  ASSERT_NE(heap, nullptr);
  ASSERT_TRUE(heap->allocate(Arena::kCode, 100, 16, heap->register_owner("mapped-owner")));
  heap.reset();
  const std::string svg = read_file(path);
  EXPECT_THAT(svg, ::testing::StartsWith("<?xml"));
  EXPECT_THAT(svg, HasSubstr("heap map \u201cmapped-heap\u201d"));
  EXPECT_THAT(svg, HasSubstr("mapped-owner (owner 1): live"));
  EXPECT_THAT(svg, ::testing::EndsWith("</svg>\n"));
}

TEST(StatsDumpTest, AnUnwritableMapIsLogged) {
  auto heap = make_watched_heap("CODEHEAP_MAP", "/nonexistent-dir/map.svg", "unmappable-heap");
  ASSERT_NE(heap, nullptr);
  LogCapture log;
  heap.reset();
  EXPECT_TRUE(
      log.contains("CODEHEAP_MAP: heap 'unmappable-heap': cannot open "
                   "'/nonexistent-dir/map.svg' for writing"));
}

TEST(StatsDumpDeathTest, WritesTheMapOfALiveHeapAtExit) {
  const std::string path = temp_path("codeheap_exit_map.svg");
  EXPECT_EXIT(
      {
        setenv("CODEHEAP_MAP", path.c_str(), 1);
        leak_a_heap("exit-map");
        std::exit(0);
      },
      ::testing::ExitedWithCode(0), "");
  const std::string svg = read_file(path);
  EXPECT_THAT(svg, HasSubstr("heap map \u201cexit-map\u201d"));
  EXPECT_THAT(svg, HasSubstr("leaked-owner"));
}

}  // namespace
}  // namespace codeheap::test
