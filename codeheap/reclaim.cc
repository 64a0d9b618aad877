// Reclaim: quarantined blocks back to the free list, in one pass of named steps.
//
//   1. snapshot   (locked)    the quarantine, sorted by address
//   2. scan       (unlocked)  the scanner gets every footprint once and marks what is referenced
//   3. free       (locked)    unmarked blocks go to the free list, code trap-filled, neighbours
//                             coalesced; an owner with an on_gone callback is held back whole
//   4. on_gone    (unlocked)  those owners' callbacks, while their blocks are still intact
//   5. free again, then trim  (locked)  their blocks; committed free pages beyond
//                             retain_free_bytes go back to the OS
//
// And automatic reclamation (ReclaimPolicy): when a release or retire has grown the quarantine
// enough, or an allocation found no room, the thread that noticed runs a pass once it has let
// go of the heap lock.
#include <algorithm>
#include <chrono>
#include <mutex>
#include <utility>

#include <spdlog/fmt/fmt.h>

#include "codeheap/heap_impl.h"

namespace codeheap {
namespace {

uint64_t elapsed_ns(std::chrono::steady_clock::time_point since) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - since)
          .count());
}

// Set while this thread runs an automatic pass: an on_gone callback or a scanner that touches
// the heap must not start another one (it would wait for itself).
thread_local bool t_in_automatic_pass = false;

// A predicate per block, for Heap::reclaim's simple form.
class PredicateScanner final : public ReferenceScanner {
 public:
  explicit PredicateScanner(const std::function<bool(uintptr_t, uintptr_t)>& is_referenced)
      : is_referenced_(is_referenced) {}
  ScanReport scan(std::span<const AddressRange> ranges, std::span<uint8_t> referenced) override {
    for (size_t i = 0; i < ranges.size(); ++i) {
      referenced[i] = is_referenced_(ranges[i].begin, ranges[i].end) ? 1 : 0;
    }
    return {};
  }

 private:
  const std::function<bool(uintptr_t, uintptr_t)>& is_referenced_;
};

}  // namespace

// One pass over a snapshot of the quarantine.
class Heap::Impl::ReclaimPass {
 public:
  explicit ReclaimPass(Heap::Impl& heap) : h_(heap), start_(std::chrono::steady_clock::now()) {}

  ReclaimReport run(ReferenceScanner& scanner) {
    snapshot();
    scan(scanner);
    std::vector<std::function<void()>> on_gone;
    {
      std::lock_guard lock(h_.mutex);
      on_gone = free_unreferenced_locked();
      // Bytes freed so far go to the free list before the lock is let go: in a pending run
      // they would be neither quarantined nor free for the callbacks' duration.
      flush_run();
      if (on_gone.empty()) finish_locked();
    }
    if (!on_gone.empty()) {
      for (auto& callback : on_gone) callback();
      std::lock_guard lock(h_.mutex);
      free_held_back_locked();
      finish_locked();
    }
    for (auto& callback : ready_) callback();
    if (trim_failure_) h_.log->warn("{}", *trim_failure_);
    h_.log->debug(
        "heap '{}': reclaim examined {} blocks, reclaimed {} ({} bytes), {} still "
        "referenced, {} ns",
        h_.options.name, report_.examined_blocks, report_.reclaimed_blocks, report_.reclaimed_bytes,
        report_.still_referenced_blocks, report_.duration_ns);
    return report_;
  }

 private:
  // 1. The work list, in address order (what the scanner is promised). Usually already so (see
  // quarantine.h): then checking is all it costs.
  void snapshot() {
    {
      std::lock_guard lock(h_.mutex);
      candidates_ = h_.quarantine.snapshot();
    }
    auto by_address = [](const QuarantineEntry& a, const QuarantineEntry& b) {
      return a.begin < b.begin;
    };
    if (!std::is_sorted(candidates_.begin(), candidates_.end(), by_address)) {
      std::sort(candidates_.begin(), candidates_.end(), by_address);
    }
  }

  // 2. Unlocked: the scanner may stop threads and scan stacks, and those threads may be inside
  // allocate or release right now.
  void scan(ReferenceScanner& scanner) {
    std::vector<AddressRange> ranges(candidates_.size());
    for (size_t i = 0; i < candidates_.size(); ++i) {
      ranges[i] = {candidates_[i].begin, candidates_[i].end};
    }
    referenced_.assign(candidates_.size(), 0);
    if (!ranges.empty()) report_.scan = scanner.scan(ranges, referenced_);
    report_.examined_blocks = candidates_.size();
    for (uint8_t r : referenced_) report_.still_referenced_blocks += r != 0;
  }

  // Meanwhile a concurrent pass may have freed a candidate, and its range may even hold a newer
  // released block (a different generation) that this scan never saw. Given what the block
  // table holds at the candidate's address, returns the candidate's entry, or null if it is no
  // longer this candidate.
  static BlockTable::Handle still_candidate(const QuarantineEntry& candidate,
                                            BlockTable::Handle entry) {
    if (entry == nullptr || entry->second.state != BlockState::kQuarantined ||
        entry->second.generation != candidate.generation) {
      return nullptr;
    }
    return entry;
  }

  // 3. Frees every unreferenced candidate whose owner waits for no on_gone callback. An owner
  // with one (a module whose unwind tables are registered) is reclaimed all together, and its
  // callback runs while its blocks are still quarantined and intact: deregistration may read
  // the tables, and they must not be reused while registered. Returns those callbacks; their
  // owners' candidates go to held_back_.
  std::vector<std::function<void()>> free_unreferenced_locked() {
    std::vector<std::pair<OwnerRecord*, size_t>> grouped;  // (owner, candidate)
    std::vector<OwnerRecord*> held;                        // owners with a referenced block
    // The candidates' index slots and entries are prefetched kAhead candidates ahead in the
    // lookup loop, their owner and fault records kAhead ahead in the second loop
    // (docs/performance-notes.md, "Reclaim: lookups a few candidates ahead").
    constexpr size_t kAhead = 8;
    std::vector<BlockTable::Handle> found(candidates_.size());
    for (size_t i = 0; i < candidates_.size(); ++i) {
      if (i + kAhead < candidates_.size()) h_.blocks.prefetch(candidates_[i + kAhead].begin);
      found[i] = h_.blocks.find(candidates_[i].begin);
      if (found[i] != nullptr) __builtin_prefetch(found[i]);
    }
    for (size_t i = candidates_.size(); i-- > 0;) {  // downwards: see free_block
      if (i >= kAhead && found[i - kAhead] != nullptr) {
        __builtin_prefetch(found[i - kAhead]->second.owner_record);
        FaultMap::prefetch(found[i - kAhead]->second.fault_record);
      }
      const BlockTable::Handle entry = still_candidate(candidates_[i], found[i]);
      if (entry == nullptr) continue;
      const Block* block = &entry->second;
      if (!OwnerTable::has_on_gone(block->owner_record)) {
        if (!referenced_[i]) free_block(candidates_[i], entry);
      } else if (referenced_[i]) {
        held.push_back(block->owner_record);
      } else {
        grouped.emplace_back(block->owner_record, i);
      }
    }
    std::sort(grouped.begin(), grouped.end());
    std::sort(held.begin(), held.end());
    std::vector<std::function<void()>> on_gone;
    for (auto first = grouped.begin(); first != grouped.end();) {
      OwnerRecord* const owner = first->first;
      const auto last =
          std::find_if(first, grouped.end(), [owner](const auto& g) { return g.first != owner; });
      if (!std::binary_search(held.begin(), held.end(), owner)) {
        // Empty if some block of the owner is still live, or outside this pass.
        if (std::function<void()> callback =
                OwnerTable::take_on_gone_if_emptied_by(*owner, static_cast<size_t>(last - first))) {
          on_gone.push_back(std::move(callback));
          for (auto g = first; g != last; ++g) held_back_.push_back(g->second);
        }
      }
      first = last;
    }
    return on_gone;
  }

  // 5a. The blocks of the owners whose on_gone callbacks have run (step 4).
  void free_held_back_locked() {
    std::sort(held_back_.begin(), held_back_.end(), std::greater<>());  // see free_block
    for (size_t i : held_back_) {
      if (const BlockTable::Handle entry =
              still_candidate(candidates_[i], h_.blocks.find(candidates_[i].begin))) {
        free_block(candidates_[i], entry);
      }
    }
  }

  // Footprints freed one after another that touch go to the free list as one range: blocks
  // allocated together (a closure's code, modules linked in a row) tend to die together, and
  // one merge is cheaper than one per block. Blocks are freed from the highest address down:
  // best fit carves the next blocks from the bottom of the range freed here, so the code
  // trap-filled last is what the next links are copied into (docs/performance-notes.md,
  // "Reclaim frees downwards").
  void free_block(const QuarantineEntry& candidate, BlockTable::Handle entry) {
    ArenaState& a = h_.arena(entry->second.arena);
    const size_t footprint = entry->second.footprint;
    ++report_.reclaimed_blocks;
    report_.reclaimed_bytes += footprint;
    h_.unbook_locked(entry);  // trap-fills code
    if (run_.arena == &a && run_.begin == candidate.begin + footprint) {
      run_.begin = candidate.begin;
    } else {
      flush_run();
      run_ = {&a, candidate.begin, candidate.begin + footprint};
    }
  }

  void flush_run() {
    if (run_.arena != nullptr) run_.arena->free.free(run_.begin, run_.end - run_.begin);
    run_.arena = nullptr;
  }

  // 5b. The last of the pass under the lock: trim, the counters, the callbacks to run after.
  void finish_locked() {
    flush_run();
    h_.blocks.compact();
    trim_failure_ = h_.trim_locked();
    ready_ = h_.owners.take_ready();
    report_.duration_ns = elapsed_ns(start_);
    Counters& c = h_.counters;
    c.reclaim_passes.add(report_.duration_ns);
    c.reclaimed.count += report_.reclaimed_blocks;
    c.reclaimed.total += report_.reclaimed_bytes;
    c.reclaim_ns_last = report_.duration_ns;
    h_.quarantined_after_pass = 0;
    for (const ArenaState& a : h_.arenas) h_.quarantined_after_pass += a.quarantined_bytes.current;
  }

  Heap::Impl& h_;
  const std::chrono::steady_clock::time_point start_;
  ReclaimReport report_;
  std::vector<QuarantineEntry> candidates_;
  std::vector<uint8_t> referenced_;  // by candidate
  std::vector<size_t> held_back_;    // candidates freed after their owner's on_gone
  struct Run {
    ArenaState* arena = nullptr;
    uintptr_t begin = 0;
    uintptr_t end = 0;
  } run_;
  std::optional<std::string> trim_failure_;
  std::vector<std::function<void()>> ready_;
};

ReclaimReport Heap::Impl::reclaim(ReferenceScanner& scanner) {
  ReclaimReport report;
  scanner.run_pass([&] { report = ReclaimPass(*this).run(scanner); });
  return report;
}

ReclaimReport Heap::reclaim(ReferenceScanner& scanner) { return impl_->reclaim(scanner); }

ReclaimReport Heap::reclaim(
    const std::function<bool(uintptr_t begin, uintptr_t end)>& is_referenced) {
  PredicateScanner scanner(is_referenced);
  return impl_->reclaim(scanner);
}

bool Heap::Impl::wants_pass_locked() const {
  if (policy.scanner == nullptr || policy.quarantined_bytes == 0) return false;
  size_t quarantined = 0;
  for (const ArenaState& a : arenas) quarantined += a.quarantined_bytes.current;
  return quarantined >= quarantined_after_pass + policy.quarantined_bytes;
}

bool Heap::Impl::may_retry_locked(const Error& error) const {
  return error.code == ErrorCode::kOutOfMemory && policy.scanner != nullptr &&
         policy.on_allocation_failure && !t_in_automatic_pass;
}

// `wait`: for an allocation that failed, which must not retry before a pass has run; a pass
// that the quarantine's growth asks for is skipped if another one is under way (it covers the
// same blocks, or the next release asks again).
void Heap::Impl::reclaim_automatically(bool wait) {
  if (t_in_automatic_pass) return;
  std::unique_lock pass_lock(automatic_mutex, std::defer_lock);
  if (wait) {
    pass_lock.lock();
  } else if (!pass_lock.try_lock()) {
    return;
  }
  ReferenceScanner* scanner = nullptr;
  {
    std::lock_guard lock(mutex);
    // A pass that ran while this thread waited may have done the work.
    if (wait || wants_pass_locked()) scanner = policy.scanner;
    if (scanner != nullptr) ++counters.automatic_reclaim_passes;
  }
  if (scanner == nullptr) return;
  t_in_automatic_pass = true;
  const ReclaimReport report = reclaim(*scanner);
  t_in_automatic_pass = false;
  log->debug("heap '{}': automatic reclaim ({}): {} of {} blocks reclaimed", options.name,
             wait ? "an allocation found no room" : "quarantine threshold", report.reclaimed_blocks,
             report.examined_blocks);
}

void Heap::set_reclaim_policy(const ReclaimPolicy& policy) {
  Impl& h = *impl_;
  std::lock_guard pass_lock(h.automatic_mutex);
  std::lock_guard lock(h.mutex);
  h.policy = policy;
}

// Returns whole free pages to the OS until at most retain_free_bytes of them stay committed.
// Runs under the lock: returning pages outside it would let a concurrent allocate hand them out
// (and have its code zeroed by the hole punch) or make them briefly unallocatable (a spurious
// out-of-memory); reclaim is rare, and only pages beyond the budget pay a system call.
// Returns a warning to log if the OS refused.
std::optional<std::string> Heap::Impl::trim_locked() {
  const size_t page = region->page_size();
  size_t idle_bytes = 0;
  for (const ArenaState& a : arenas) idle_bytes += a.commit.idle_pages() * page;
  if (idle_bytes <= options.retain_free_bytes) return std::nullopt;
  size_t excess = (idle_bytes - options.retain_free_bytes + page - 1) / page;  // in pages

  // From the top of the region down (data, read_only, code; high spans first), so the low,
  // most recently reused part of each arena stays warm.
  std::optional<std::string> failure;
  for (auto a = arenas.rbegin(); a != arenas.rend() && excess > 0 && !failure; ++a) {
    a->free.for_each_descending([&](uintptr_t begin, size_t size) {
      // Only the whole pages inside a free span; a partial page shares memory with a block.
      const size_t first = (begin - a->begin + page - 1) / page;
      size_t end = (begin + size - a->begin) / page;
      while (excess > 0 && end > first) {
        const size_t top = a->commit.last_committed_below(first, end);
        if (top == CommitMap::kNone) break;
        size_t low = top;
        while (low > first && top - low + 1 < excess && a->commit.committed(low - 1)) --low;
        const size_t count = top - low + 1;
        if (auto done = region->decommit(a->id, a->begin + low * page, count * page); !done) {
          failure = fmt::format("heap '{}': cannot return free pages of the {} arena to the OS: {}",
                                options.name, to_string(a->id), done.error().message);
          return false;
        }
        a->commit.decommitted(low, count);
        counters.decommitted_bytes += count * page;
        excess -= count;
        end = low;
      }
      return excess > 0;
    });
  }
  return failure;
}

}  // namespace codeheap
