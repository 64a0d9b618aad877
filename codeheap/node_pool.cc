#include "codeheap/node_pool.h"

namespace codeheap {

void* NodePool::carve(size_t rounded) {
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

}  // namespace codeheap
