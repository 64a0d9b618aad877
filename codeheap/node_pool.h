// NodePool: the memory behind a heap's metadata nodes (the free list's tree nodes, the block
// table's entries, the owner table's records).
//
// Allocation and reclaim insert and erase a handful of nodes each, and every node of one kind
// has the same size, so a free list per 16-byte size class does the job in a few instructions:
// libstdc++'s std::pmr pool resource searches its chunks (a binary search on every free) and
// glibc's malloc falls off its per-thread cache under churn; either costs several times the
// tree operation itself. Nodes are carved from 64 KiB chunks that are kept until the pool is
// destroyed, so the metadata stays at the high-water mark of blocks and spans (a few dozen
// bytes each, an owner record 192). Larger or over-aligned requests go to operator new.
//
// Not thread-safe: the Heap's mutex guards it.
#pragma once

#include <array>
#include <cstddef>
#include <memory>
#include <memory_resource>
#include <new>
#include <utility>
#include <vector>

namespace codeheap {

class NodePool final : public std::pmr::memory_resource {
 public:
  NodePool() = default;
  NodePool(const NodePool&) = delete;
  NodePool& operator=(const NodePool&) = delete;

  // What allocate and deallocate do, without the virtual call: for the heap's own tables, which
  // hold the pool itself and take a node for every block (docs/performance-notes.md, "Inlined
  // bookkeeping").
  void* allocate_node(size_t bytes, size_t alignment) {
    if (!pooled(bytes, alignment)) return ::operator new(bytes, std::align_val_t{alignment});
    const size_t rounded = round_up(bytes);
    used_bytes_ += rounded;
    FreeNode*& head = free_[rounded / kGranule];
    if (head == nullptr) return carve(rounded);
    FreeNode* node = head;
    head = node->next;
    // The next node of this size is the next one handed out (docs/performance-notes.md,
    // "NodePool: the next node prefetched").
    __builtin_prefetch(head, 1);
    return node;
  }
  void deallocate_node(void* p, size_t bytes, size_t alignment) {
    if (!pooled(bytes, alignment)) {
      ::operator delete(p, bytes, std::align_val_t{alignment});
      return;
    }
    const size_t rounded = round_up(bytes);
    used_bytes_ -= rounded;
    FreeNode*& head = free_[rounded / kGranule];
    head = new (p) FreeNode{head};
  }
  // Default-initialized (new T, not new T()): no zeroing before the member initializers.
  template <typename T>
  T* new_node() {
    return new (allocate_node(sizeof(T), alignof(T))) T;
  }
  template <typename T, typename... Args>
  T* new_node(Args&&... args) {
    return new (allocate_node(sizeof(T), alignof(T))) T(std::forward<Args>(args)...);
  }
  template <typename T>
  void delete_node(T* node) {
    node->~T();
    deallocate_node(node, sizeof(T), alignof(T));
  }

  // Bytes taken from the system for nodes (chunks), and bytes of them in use.
  size_t reserved_bytes() const { return chunks_.size() * kChunkBytes; }
  size_t used_bytes() const { return used_bytes_; }

 private:
  static constexpr size_t kGranule = 16;
  static constexpr size_t kLargestNode = 256;
  static constexpr size_t kChunkBytes = size_t{64} << 10;

  struct FreeNode {
    FreeNode* next;
  };

  static bool pooled(size_t bytes, size_t alignment) {
    return bytes <= kLargestNode && alignment <= kGranule;
  }
  static size_t round_up(size_t bytes) { return (bytes + kGranule - 1) / kGranule * kGranule; }
  // A node of `rounded` bytes from the newest chunk (or a new one): the free list was empty.
  void* carve(size_t rounded);
  void* do_allocate(size_t bytes, size_t alignment) override {
    return allocate_node(bytes, alignment);
  }
  void do_deallocate(void* p, size_t bytes, size_t alignment) override {
    deallocate_node(p, bytes, alignment);
  }
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override {
    return this == &other;
  }

  std::array<FreeNode*, kLargestNode / kGranule + 1> free_{};  // by size / kGranule
  std::vector<std::unique_ptr<std::byte[]>> chunks_;
  std::byte* unused_ = nullptr;  // the uncarved rest of the newest chunk
  size_t unused_bytes_ = 0;
  size_t used_bytes_ = 0;
};

}  // namespace codeheap
