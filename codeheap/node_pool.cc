#include "codeheap/node_pool.h"

#include <new>

namespace codeheap {

void* NodePool::do_allocate(size_t bytes, size_t alignment) {
  if (!pooled(bytes, alignment)) {
    return ::operator new(bytes, std::align_val_t{alignment});
  }
  const size_t rounded = (bytes + kGranule - 1) / kGranule * kGranule;
  used_bytes_ += rounded;
  FreeNode*& head = free_[rounded / kGranule];
  if (head != nullptr) {
    FreeNode* node = head;
    head = node->next;
    return node;
  }
  if (unused_bytes_ < rounded) {
    // The tail of the previous chunk (less than one node of this size) stays unused.
    chunks_.push_back(std::make_unique_for_overwrite<std::byte[]>(kChunkBytes));
    unused_ = chunks_.back().get();
    unused_bytes_ = kChunkBytes;
  }
  void* node = unused_;
  unused_ += rounded;
  unused_bytes_ -= rounded;
  return node;
}

void NodePool::do_deallocate(void* p, size_t bytes, size_t alignment) {
  if (!pooled(bytes, alignment)) {
    ::operator delete(p, bytes, std::align_val_t{alignment});
    return;
  }
  const size_t rounded = (bytes + kGranule - 1) / kGranule * kGranule;
  used_bytes_ -= rounded;
  FreeNode*& head = free_[rounded / kGranule];
  head = new (p) FreeNode{head};
}

}  // namespace codeheap
