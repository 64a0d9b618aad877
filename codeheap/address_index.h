// AddressIndex<T, kKeyShift>: block start address -> T*, the block table's O(1) lookup (and,
// with kKeyShift 0, the owner table's id -> record).
//
// Open addressing with linear probing over a power-of-two array of (address, pointer) slots,
// at most half full, deletion by backward shift (no tombstones, so lookups never slow down under
// churn). Every allocation, retirement and reclaim of a block looks its start up here; why not
// std::unordered_map or absl::flat_hash_map, measured: docs/performance-notes.md, "AddressIndex:
// open addressing".
//
// Keys are non-zero multiples of 2^kKeyShift (0 marks an empty slot): granule-aligned
// addresses by default. Erasing never shrinks the array: a reclaim pass empties the quarantine
// in one go and the next links fill it again, so shrinking there would rehash back and forth
// every pass. shrink_to_recent_peak() (called
// once per reclaim pass) shrinks it only after a whole period in which it stayed far emptier,
// so a burst of blocks does not leave a large index behind for long.
//
// Not thread-safe: the Heap's mutex guards it.
#pragma once

#include <algorithm>
#include <bit>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace codeheap {

template <typename T, int kKeyShift = 4>
class AddressIndex {
 public:
  AddressIndex() { resize(kMinCapacity); }

  // The value stored for `key`, or nullptr.
  T* find(uintptr_t key) const {
    for (size_t i = home(key);; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return slots_[i].value;
      if (slots_[i].key == 0) return nullptr;
    }
  }

  // Starts loading the slot where a search for `key` begins.
  void prefetch(uintptr_t key) const { __builtin_prefetch(&slots_[home(key)]); }

  // `key` (non-zero) must not be present.
  void insert(uintptr_t key, T* value) {
    assert(key != 0 && find(key) == nullptr);
    if ((size_ + 1) * 2 > slots_.size()) resize(slots_.size() * 2);
    place(key, value);
    ++size_;
    peak_ = std::max(peak_, size_);
  }

  // Removes `key`; false if it was not there.
  bool erase(uintptr_t key) {
    size_t hole = home(key);
    while (slots_[hole].key != key) {
      if (slots_[hole].key == 0) return false;
      hole = (hole + 1) & mask_;
    }
    // Close the gap: a later slot of the same probe run moves into the hole unless its home lies
    // after the hole (cyclically), where a lookup for it would never pass the hole.
    for (size_t next = (hole + 1) & mask_; slots_[next].key != 0; next = (next + 1) & mask_) {
      const size_t from_home = (next - home(slots_[next].key)) & mask_;
      if (from_home >= ((next - hole) & mask_)) {
        slots_[hole] = slots_[next];
        hole = next;
      }
    }
    slots_[hole] = Slot{};
    --size_;
    return true;
  }

  // Shrinks the array to what the largest size since the last call needs (at most half full),
  // if that is less than a quarter of it; then starts a new period.
  void shrink_to_recent_peak() {
    const size_t needed = std::max(kMinCapacity, std::bit_ceil(peak_ * 2));
    if (needed * 4 <= slots_.size()) resize(needed);
    peak_ = size_;
  }

  size_t size() const { return size_; }
  // Slots in the array (for tests of growth and shrinking).
  size_t capacity() const { return slots_.size(); }

  // Visits f(key, value) for every entry, in no particular order.
  template <typename F>
  void for_each(F&& f) const {
    for (const Slot& slot : slots_) {
      if (slot.key != 0) f(slot.key, slot.value);
    }
  }

 private:
  static constexpr size_t kMinCapacity = 64;
  static constexpr uint64_t kFibonacci = 0x9E3779B97F4A7C15;  // 2^64 / golden ratio

  struct Slot {
    uintptr_t key = 0;
    T* value = nullptr;
  };

  // Granules of nearby blocks (and consecutive ids) differ in their low bits; the
  // multiplication spreads them and the top bits pick the slot.
  size_t home(uintptr_t key) const {
    return static_cast<size_t>(((key >> kKeyShift) * kFibonacci) >> shift_);
  }

  void place(uintptr_t key, T* value) {
    size_t i = home(key);
    while (slots_[i].key != 0) i = (i + 1) & mask_;
    slots_[i] = Slot{key, value};
  }

  void resize(size_t capacity) {
    std::vector<Slot> old = std::exchange(slots_, std::vector<Slot>(capacity));
    mask_ = capacity - 1;
    shift_ = 64 - std::countr_zero(capacity);
    for (const Slot& slot : old) {
      if (slot.key != 0) place(slot.key, slot.value);
    }
  }

  std::vector<Slot> slots_;
  size_t mask_ = 0;
  int shift_ = 0;
  size_t size_ = 0;
  size_t peak_ = 0;  // the largest size since the last shrink_to_recent_peak()
};

}  // namespace codeheap
