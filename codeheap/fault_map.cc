#include "codeheap/fault_map.h"

#include <algorithm>
#include <cstring>
#include <new>

namespace codeheap {

namespace {

// A reader scans again when a record it needed was being written; this many times at most.
constexpr int kReadAttempts = 64;

}  // namespace

void FaultRecord::copy_name(char* out) const {
  const size_t length =
      std::min<size_t>(name_length.load(std::memory_order_relaxed), kAddressInfoNameBytes - 1);
  for (size_t i = 0; i * sizeof(uint64_t) < length; ++i) {
    const uint64_t word = name[i].load(std::memory_order_relaxed);
    std::memcpy(out + i * sizeof word, &word, sizeof word);
  }
  out[length] = '\0';
}

FaultMap::FaultMap() : chunks_(new std::atomic<FaultRecord*>[kMaxChunks]) {
  static_assert(sizeof(FaultRecord) == 128, "the memory cost in fault_map.h");
  for (size_t i = 0; i < kMaxChunks; ++i) chunks_[i].store(nullptr, std::memory_order_relaxed);
}

FaultMap::~FaultMap() {
  for (size_t i = 0; i < kMaxChunks; ++i) delete[] chunks_[i].load(std::memory_order_relaxed);
}

FaultRecord* FaultMap::allocate_new_record() {
  const uint32_t index = count_.load(std::memory_order_relaxed);
  if (index >= kMaxChunks * kChunkRecords) return nullptr;
  std::atomic<FaultRecord*>& chunk = chunks_[index / kChunkRecords];
  if (chunk.load(std::memory_order_relaxed) == nullptr) {
    FaultRecord* fresh = new (std::nothrow) FaultRecord[kChunkRecords];
    if (fresh == nullptr) return nullptr;
    for (size_t i = 0; i < kChunkRecords; ++i) {
      fresh[i].index = static_cast<uint32_t>(index / kChunkRecords * kChunkRecords + i);
    }
    chunk.store(fresh, std::memory_order_release);
  }
  count_.store(index + 1, std::memory_order_release);
  return &at(index);
}

uint32_t FaultMap::evict_oldest_former() {
  const uint32_t index = formers_[oldest_former_];
  oldest_former_ = (oldest_former_ + 1) % kFormers;
  --formers_count_;
  FaultRecord& r = at(index);
  for (uint32_t f = r.next.load(std::memory_order_relaxed); f != 0;) {
    const uint32_t next = at(f).next.load(std::memory_order_relaxed);
    free_record(at(f));
    f = next;
  }
  r.next.store(0, std::memory_order_relaxed);
  return index;
}

void FaultMap::free_record(FaultRecord& r) {
  if (r.kind.load(std::memory_order_relaxed) != Kind::kFunction) {
    for (uint32_t f = r.next.load(std::memory_order_relaxed); f != 0;) {
      const uint32_t next = at(f).next.load(std::memory_order_relaxed);
      free_record(at(f));
      f = next;
    }
  }
  r.begin_write();
  r.kind.store(Kind::kUnused, std::memory_order_relaxed);
  r.end_write();
  r.next.store(free_, std::memory_order_relaxed);
  free_ = r.index;
}

void FaultMap::add_function(FaultRecord* block, uintptr_t address, size_t size,
                            std::string_view name) {
  if (block == nullptr) return;
  FaultRecord* f = allocate_record();
  if (f == nullptr) return;
  f->begin_write();
  f->kind.store(Kind::kFunction, std::memory_order_relaxed);
  f->begin.store(address, std::memory_order_relaxed);
  f->size.store(static_cast<uint32_t>(size), std::memory_order_relaxed);
  f->parent.store(block->index, std::memory_order_relaxed);
  f->order.store(block->sequence.load(std::memory_order_relaxed), std::memory_order_relaxed);
  f->set_name(name);
  f->end_write();
  f->next.store(block->next.load(std::memory_order_relaxed), std::memory_order_relaxed);
  block->next.store(f->index, std::memory_order_relaxed);
}

bool FaultMap::describe(uintptr_t address, AddressInfo& info) const {
  const uint32_t count = count_.load(std::memory_order_acquire);
  for (int attempt = 0; attempt < kReadAttempts; ++attempt) {
    bool busy = false;  // some record was being written: it may have been the one
    AddressInfo found = info;
    uint32_t block = 0;
    uint32_t block_sequence = 0;
    uint64_t rank = 0;  // a block in the heap beats any former; a later former an earlier one
    for (uint32_t i = 1; i < count; ++i) {
      const FaultRecord* r = record(i);
      if (r == nullptr) break;
      const uint32_t sequence = r->sequence.load(std::memory_order_acquire);
      if (sequence & 1) {
        busy = true;
        continue;
      }
      const Kind kind = r->kind.load(std::memory_order_acquire);
      if (kind == Kind::kUnused || kind == Kind::kFunction) continue;
      const uintptr_t begin = r->begin.load(std::memory_order_relaxed);
      const size_t size = r->size.load(std::memory_order_relaxed);
      if (address < begin || address - begin >= size) continue;
      const uint64_t order =
          kind == Kind::kFormer ? r->order.load(std::memory_order_relaxed) : UINT64_MAX;
      if (block != 0 && order <= rank) continue;
      AddressInfo candidate = found;
      candidate.block = begin;
      candidate.block_size = size;
      candidate.owner = r->owner.load(std::memory_order_relaxed);
      candidate.former = kind == Kind::kFormer;
      candidate.state = kind == Kind::kLive          ? AddressInfo::State::kLive
                        : kind == Kind::kQuarantined ? AddressInfo::State::kQuarantined
                        : kind == Kind::kReleased    ? AddressInfo::State::kReleased
                                                     : AddressInfo::State::kFree;
      r->copy_name(candidate.owner_name);
      std::atomic_thread_fence(std::memory_order_acquire);
      if (r->sequence.load(std::memory_order_relaxed) != sequence) {
        busy = true;
        continue;
      }
      found = candidate;
      block = i;
      block_sequence = sequence;
      rank = order;
    }
    if (block == 0 && busy) continue;
    // The function of the block containing the address, else the nearest one below it.
    uintptr_t best = 0;
    bool contained = false;
    for (uint32_t i = 1; block != 0 && i < count && !contained; ++i) {
      const FaultRecord* r = record(i);
      if (r == nullptr) break;
      const uint32_t sequence = r->sequence.load(std::memory_order_acquire);
      if ((sequence & 1) || r->kind.load(std::memory_order_relaxed) != Kind::kFunction ||
          r->parent.load(std::memory_order_relaxed) != block ||
          r->order.load(std::memory_order_relaxed) != block_sequence) {
        continue;
      }
      const uintptr_t begin = r->begin.load(std::memory_order_relaxed);
      const size_t size = r->size.load(std::memory_order_relaxed);
      if (begin > address || (found.function != 0 && begin < best)) continue;
      char name[kNameBytes];
      r->copy_name(name);
      std::atomic_thread_fence(std::memory_order_acquire);
      if (r->sequence.load(std::memory_order_relaxed) != sequence) continue;
      best = begin;
      contained = address - begin < size;
      found.function = begin;
      found.function_size = size;
      std::memcpy(found.function_name, name, kNameBytes);
    }
    info = found;
    return true;
  }
  info.consistent = false;
  return false;
}

}  // namespace codeheap
