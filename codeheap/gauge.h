// Gauge: the shape of every statistic that rises and falls (codeheap/stats.h, the heap's own
// bookkeeping). Header-only, no dependencies.
#pragma once

#include <cassert>
#include <cstddef>

namespace codeheap {

// The shape of a statistic that rises and falls, as mimalloc's stats keep theirs: its value now,
// its high-water mark, and the sum of every increase. (Statistics that only count events are
// plain counters: see Counters.)
struct Gauge {
  size_t current = 0;
  size_t peak = 0;
  size_t total = 0;

  void increase(size_t n = 1) {
    current += n;
    total += n;
    if (current > peak) peak = current;
  }
  void decrease(size_t n = 1) {
    assert(current >= n);
    current -= n;
  }
  bool operator==(const Gauge&) const = default;
};

}  // namespace codeheap
