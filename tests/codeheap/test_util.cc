#include "tests/codeheap/test_util.h"

#include <cstring>
#include <fstream>
#include <sstream>

#include <spdlog/spdlog.h>

#include "codeheap/log.h"

namespace codeheap::test {

HeapOptions small_options(const std::string& name) {
  HeapOptions options;
  options.code_bytes = size_t{1} << 20;
  options.read_only_bytes = size_t{256} << 10;
  options.data_bytes = size_t{256} << 10;
  options.name = name;
  return options;
}

std::unique_ptr<Heap> make_heap(const HeapOptions& options) {
  auto heap = Heap::create(options);
  EXPECT_TRUE(heap.has_value()) << (heap ? "" : heap.error().message);
  return heap ? std::move(*heap) : nullptr;
}

std::vector<Mapping> mappings() {
  std::vector<Mapping> result;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    Mapping m;
    std::istringstream in(line);
    std::string range;
    in >> range >> m.perms;
    const size_t dash = range.find('-');
    m.begin = std::stoull(range.substr(0, dash), nullptr, 16);
    m.end = std::stoull(range.substr(dash + 1), nullptr, 16);
    m.line = line;
    result.push_back(std::move(m));
  }
  return result;
}

std::vector<std::string> writable_executable_mappings() {
  std::vector<std::string> bad;
  for (const Mapping& m : mappings()) {
    if (m.perms.size() >= 3 && m.perms[1] == 'w' && m.perms[2] == 'x') bad.push_back(m.line);
  }
  return bad;
}

Mapping mapping_of(uintptr_t address) {
  for (const Mapping& m : mappings()) {
    if (address >= m.begin && address < m.end) return m;
  }
  ADD_FAILURE() << "no mapping contains " << std::hex << address;
  return {};
}

int call(uintptr_t address) { return reinterpret_cast<int (*)()>(address)(); }

void write_code(const Allocation& allocation, const uint8_t* code, size_t size) {
  std::memcpy(allocation.writable, code, size);
}

bool all_bytes(const uint8_t* p, size_t size, uint8_t value) {
  // A word at a time: the property test checks hundreds of megabytes at -O1.
  const uint64_t word = 0x0101010101010101ULL * value;
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    if (w != word) return false;
  }
  for (; i < size; ++i) {
    if (p[i] != value) return false;
  }
  return true;
}

HeapStats without_counters(HeapStats stats) {
  clear_history(stats);
  return stats;
}

void expect_only_a_failure_counted(const HeapStats& before, const HeapStats& after) {
  EXPECT_EQ(without_counters(after), without_counters(before));
  Counters expected = before.counters;
  ++expected.allocation_failures;
  EXPECT_EQ(after.counters, expected);
}

LogCapture::LogCapture() : sink_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(64)) {
  sink_->set_pattern("[%l] %v");
  logger()->sinks().push_back(sink_);
}

LogCapture::~LogCapture() {
  auto& sinks = logger()->sinks();
  sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
}

std::vector<std::string> LogCapture::lines() const { return sink_->last_formatted(); }

bool LogCapture::contains(const std::string& needle) const {
  for (const std::string& line : lines()) {
    if (line.find(needle) != std::string::npos) return true;
  }
  return false;
}

}  // namespace codeheap::test
