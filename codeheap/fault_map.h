// FaultMap: what a crash handler may learn about an address of the heap without taking a lock.
//
// Heap::find takes the heap mutex, which a signal handler must not do: the faulting thread may
// hold it, or another thread may hold it for as long as it likes. The FaultMap is a second view
// of the code blocks, written under the heap mutex (one writer at a time) and read by anyone
// with atomic loads only: one record per code block (its range, state, owner id and a copy of
// the owner's name) and one per named function (Heap::add_symbols, pointing at its block's
// record), in chunks of records that are never freed while the map lives. Read-only data and
// data blocks are not recorded: a pc is in code, and each record costs the allocation path.
// Each record is a seqlock: its sequence number is odd while the writer changes it, so a reader
// that read an even number before and the same number after has a consistent copy, and a reader
// that meets a recycled record reads recycled memory, never unmapped memory.
//
// Writers only touch the record of the block at hand, which the block's entry points to: a code
// block's allocation writes the record it takes, retire, release and reclaim a few bytes of it.
// The heap prefetches records before writing them where it can (docs/performance-notes.md,
// "Fault map records"; the cost: docs/reliability.md).
// Readers scan every record, O(records): a crash handler runs once, and scanning a few thousand
// records takes microseconds.
//
// A block that leaves the heap leaves its record behind as a *former* block, one of the last
// kFormers freed, so a jump through a stale pointer into reclaimed code still says whose code
// was there and which function (a failed link's abandoned blocks never ran and leave nothing).
// A reader prefers a live or quarantined block containing the address to a former one, and the
// most recently freed former to older ones. The oldest former's record is what a new block
// takes when no record is free, so in steady churn a free writes one record and an allocation
// another.
//
// Memory: 128 bytes per record, for the live and quarantined code blocks, their functions and
// the kFormers last freed ones, in 64 KiB chunks kept until the heap is destroyed (so the
// high-water mark), plus a 32 KiB chunk directory. Names longer than kNameBytes - 1 bytes are
// truncated.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string_view>

#include "codeheap/types.h"

namespace codeheap {

inline constexpr size_t kFaultNameWords = kAddressInfoNameBytes / sizeof(uint64_t);
static_assert(kAddressInfoNameBytes % sizeof(uint64_t) == 0);

// What a FaultRecord is: a state of a block, or a function.
enum class FaultKind : uint8_t { kUnused, kLive, kQuarantined, kReleased, kFormer, kFunction };

// One record of a FaultMap. Every field but `index` is atomic because readers load them while
// the writer may be changing them; the sequence number says whether what a reader loaded was
// consistent. Cache-line aligned, the name last: a name of up to 15 bytes is written with the
// rest of the first line, which is then all a block's allocation touches.
struct alignas(64) FaultRecord {
  std::atomic<uint32_t> sequence{0};  // odd while the writer changes the record
  std::atomic<FaultKind> kind{FaultKind::kUnused};
  std::atomic<uint8_t> name_length{0};
  std::atomic<uint64_t> begin{0};
  std::atomic<uint64_t> owner{0};
  // A former block: when it was freed, to prefer the latest. A function: the sequence number of
  // its block's record, which changes when the record is recycled (and only then).
  std::atomic<uint64_t> order{0};
  std::atomic<uint32_t> size{0};  // a block's footprint; a function's size (both < 4 GiB)
  uint32_t index = 0;             // its place in the map, fixed
  // Writer only. A block: its first function; a function: the next function of its block; a
  // free record: the next free record.
  std::atomic<uint32_t> next{0};
  std::atomic<uint32_t> parent{0};                   // a function's block
  std::atomic<uint64_t> name[kFaultNameWords] = {};  // its first name_length bytes

  // The seqlock's write side: a reader that sees the same even number before and after its loads
  // saw none of the stores in between.
  void begin_write() {
    sequence.store(sequence.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
  }
  void end_write() {
    sequence.store(sequence.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  }
  void set_name(std::string_view text);
  void copy_name(char* out) const;  // `out` has kAddressInfoNameBytes
};

class FaultMap {
 public:
  // Room for a name, its terminating NUL included (AddressInfo's arrays have the same size).
  static constexpr size_t kNameBytes = kAddressInfoNameBytes;
  // Freed blocks still described (as formers): the last this many.
  static constexpr size_t kFormers = 1024;
  using Kind = FaultKind;

  FaultMap();
  ~FaultMap();
  FaultMap(const FaultMap&) = delete;
  FaultMap& operator=(const FaultMap&) = delete;

  // --- Writers: under the heap mutex. Inline: once or twice per block. ---

  // A new live block; returns its record (null if the records ran out, 2 Mi of them: the block
  // is then simply not described).
  FaultRecord* add_block(uintptr_t begin, size_t footprint, OwnerId owner,
                         std::string_view owner_name);
  // The block's new state (kLive, kQuarantined or kReleased). Null records are ignored here and
  // below.
  static void set_state(FaultRecord* record, Kind state);
  // The block left the heap: its record stays as a former block, or (`forget`: it never ran)
  // goes at once with its functions.
  void remove_block(FaultRecord* record, bool forget);
  // Names [address, address + size) of the live block `record`.
  void add_function(FaultRecord* record, uintptr_t address, size_t size, std::string_view name);
  // Starts loading a record that set_state or remove_block will write soon.
  static void prefetch(const FaultRecord* record) {
    if (record != nullptr) __builtin_prefetch(record, 1);
  }
  // Starts loading the record that add_block will take next.
  void prefetch_next() const { prefetch(record(next_candidate())); }

  // --- Readers: any thread, async-signal-safe, no lock, no allocation. ---

  // Fills the block and function details of `info` for `address`. Returns false (and sets
  // info.consistent to false) if a record kept changing under the lookup.
  bool describe(uintptr_t address, AddressInfo& info) const;

 private:
  static constexpr size_t kChunkRecords = 512;
  static constexpr size_t kMaxChunks = 4096;  // 2 Mi records

  FaultRecord* record(uint32_t index) const;  // null for 0 or an index past the chunks
  FaultRecord& at(uint32_t index) const;      // a record handed out (writers)
  // The record add_block takes next: a free one, else the oldest former if there are kFormers
  // of them (else 0: a new one).
  uint32_t next_candidate() const {
    return free_ != 0 ? free_ : formers_count_ == kFormers ? formers_[oldest_former_] : 0;
  }
  FaultRecord* allocate_record();
  FaultRecord* allocate_new_record();     // from the chunks: nothing to recycle
  uint32_t evict_oldest_former();         // its functions freed; returns the record
  void free_record(FaultRecord& record);  // with its functions, if a block

  std::unique_ptr<std::atomic<FaultRecord*>[]> chunks_;
  std::atomic<uint32_t> count_{1};            // records handed out so far, record 0 (none) included
  uint32_t free_ = 0;                         // freed records, linked through `next`
  std::array<uint32_t, kFormers> formers_{};  // a ring of the last freed blocks' records
  size_t oldest_former_ = 0;
  size_t formers_count_ = 0;
  uint64_t frees_ = 0;  // blocks freed so far: orders the formers
};

inline FaultRecord* FaultMap::record(uint32_t index) const {
  if (index == 0 || index / kChunkRecords >= kMaxChunks) return nullptr;
  FaultRecord* chunk = chunks_[index / kChunkRecords].load(std::memory_order_acquire);
  return chunk == nullptr ? nullptr : chunk + index % kChunkRecords;
}

inline FaultRecord& FaultMap::at(uint32_t index) const {
  return chunks_[index / kChunkRecords].load(std::memory_order_relaxed)[index % kChunkRecords];
}

inline FaultRecord* FaultMap::allocate_record() {
  uint32_t index = free_;
  if (index != 0) {
    free_ = at(index).next.load(std::memory_order_relaxed);
  } else if (formers_count_ == kFormers) {
    index = evict_oldest_former();
  } else {
    return allocate_new_record();
  }
  prefetch(record(next_candidate()));  // the next block's record
  return &at(index);
}

// Whole words, and the last one assembled byte by byte (docs/performance-notes.md, "Fault map
// records").
inline void FaultRecord::set_name(std::string_view text) {
  const size_t length = std::min(text.size(), kAddressInfoNameBytes - 1);
  size_t i = 0;
  for (; (i + 1) * sizeof(uint64_t) <= length; ++i) {
    uint64_t word;
    std::memcpy(&word, text.data() + i * sizeof word, sizeof word);
    name[i].store(word, std::memory_order_relaxed);
  }
  if (i * sizeof(uint64_t) < length) {
    uint64_t word = 0;
    for (size_t b = i * sizeof(uint64_t); b < length; ++b) {
      word |= uint64_t{static_cast<uint8_t>(text[b])} << (8 * (b % sizeof(uint64_t)));
    }
    name[i].store(word, std::memory_order_relaxed);
  }
  name_length.store(static_cast<uint8_t>(length), std::memory_order_relaxed);
}

inline FaultRecord* FaultMap::add_block(uintptr_t begin, size_t footprint, OwnerId owner,
                                        std::string_view owner_name) {
  FaultRecord* r = allocate_record();
  if (r == nullptr) return nullptr;
  r->begin_write();
  r->kind.store(Kind::kLive, std::memory_order_relaxed);
  r->begin.store(begin, std::memory_order_relaxed);
  r->size.store(static_cast<uint32_t>(footprint), std::memory_order_relaxed);
  r->owner.store(owner, std::memory_order_relaxed);
  r->set_name(owner_name);
  r->end_write();
  r->next.store(0, std::memory_order_relaxed);
  return r;
}

inline void FaultMap::set_state(FaultRecord* r, Kind state) {
  if (r != nullptr) r->kind.store(state, std::memory_order_release);
}

inline void FaultMap::remove_block(FaultRecord* r, bool forget) {
  if (r == nullptr) return;
  if (forget) {
    free_record(*r);
    return;
  }
  // No new sequence number: the block's functions still name it. A reader that sees kFormer
  // sees its order too.
  r->order.store(++frees_, std::memory_order_relaxed);
  r->kind.store(Kind::kFormer, std::memory_order_release);
  if (formers_count_ == kFormers) free_record(at(evict_oldest_former()));
  formers_[(oldest_former_ + formers_count_++) % kFormers] = r->index;
}

}  // namespace codeheap
