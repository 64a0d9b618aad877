// The heap's statistics, dumps and map: snapshots taken under the lock, rendered after it.
#include <algorithm>
#include <bit>
#include <cassert>
#include <mutex>

#include "codeheap/heap_impl.h"

namespace codeheap {

HeapStats Heap::Impl::stats_locked() const {
  HeapStats s;
  s.name = options.name;
  for (const ArenaState& a : arenas) {
    ArenaStats as;
    as.name = to_string(a.id);
    as.begin = a.begin;
    as.end = a.end;
    as.reserved_bytes = a.end - a.begin;
    as.committed_bytes = a.commit.committed_pages() * region->page_size();
    as.used_bytes = a.used_bytes.current;
    as.quarantined_bytes = a.quarantined_bytes.current;
    as.free_bytes = a.free.free_bytes();
    assert(as.used_bytes + as.quarantined_bytes + as.free_bytes == as.reserved_bytes);
    as.largest_free_block = a.free.largest_span();
    as.fragmentation = as.free_bytes == 0 ? 0.0
                                          : 1.0 - static_cast<double>(as.largest_free_block) /
                                                      static_cast<double>(as.free_bytes);
    as.live_blocks = a.live_blocks.current;
    as.quarantined_blocks = a.quarantined_blocks.current;
    as.peak_committed_bytes = a.commit.peak_committed_pages() * region->page_size();
    as.peak_used_bytes = a.used_bytes.peak;
    as.peak_quarantined_bytes = a.quarantined_bytes.peak;
    as.peak_live_blocks = a.live_blocks.peak;
    as.peak_quarantined_blocks = a.quarantined_blocks.peak;
    as.allocated_bytes_total = a.used_bytes.total;
    as.free_blocks = a.free.span_count();
    // Enough buckets for a span as large as the arena.
    as.free_histogram.assign(std::bit_width(as.reserved_bytes), 0);
    a.free.for_each([&](uintptr_t, size_t size) { ++as.free_histogram[std::bit_width(size) - 1]; });

    s.reserved_bytes += as.reserved_bytes;
    s.committed_bytes += as.committed_bytes;
    s.used_bytes += as.used_bytes;
    s.quarantined_bytes += as.quarantined_bytes;
    s.free_bytes += as.free_bytes;
    s.largest_free_block = std::max(s.largest_free_block, as.largest_free_block);
    s.arenas.push_back(std::move(as));
  }

  s.owners = owners.snapshot();  // sorted by id
  blocks.for_each([&](uintptr_t begin, const Block& block) {
    if (block.owner == kNoOwner) return;
    auto it = std::lower_bound(s.owners.begin(), s.owners.end(), block.owner,
                               [](const OwnerStats& o, OwnerId id) { return o.id < id; });
    assert(it != s.owners.end() && it->id == block.owner);
    it->low = it->low == 0 ? begin : std::min(it->low, begin);
    it->high = std::max(it->high, begin + block.size);
  });
  s.counters = counters;
  return s;
}

HeapStats Heap::stats() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->stats_locked();
}

Counters Heap::counters() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->counters;
}

std::string Heap::dump_text() const { return format_text(stats()); }

std::string Heap::dump_json() const { return format_json(stats()); }

HeapMap Heap::map() const {
  const Impl& h = *impl_;
  HeapMap map;
  map.arenas.resize(h.arenas.size());
  std::lock_guard lock(h.mutex);
  map.stats = h.stats_locked();
  h.blocks.for_each([&](uintptr_t begin, const Block& block) {
    map.arenas[static_cast<size_t>(block.arena)].blocks.push_back(
        {begin, block.footprint, block.owner, block.state == BlockState::kQuarantined});
  });
  const size_t page = h.region->page_size();
  for (size_t i = 0; i < h.arenas.size(); ++i) {
    const ArenaState& a = h.arenas[i];
    std::vector<HeapMap::Range>& runs = map.arenas[i].committed;
    for (size_t p = 0, pages = (a.end - a.begin) / page; p < pages; ++p) {
      if (!a.commit.committed(p)) continue;
      const uintptr_t begin = a.begin + p * page;
      if (!runs.empty() && runs.back().end == begin) {
        runs.back().end += page;
      } else {
        runs.push_back({begin, begin + page});
      }
    }
  }
  return map;
}

std::string Heap::dump_svg() const { return format_svg(map()); }

}  // namespace codeheap
