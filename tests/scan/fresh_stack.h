// Runs code on a thread whose stack was never used before.
//
// Stack scans are conservative: stale copies of block addresses in a recycled thread stack, or
// in the locals of a test body, rightly count as references. Tests that expect a scan to find
// nothing start it from a fresh stack.
#pragma once

#include <gtest/gtest.h>
#include <pthread.h>
#include <sys/mman.h>

#include <functional>

namespace codeheap::testing {

inline void run_on_fresh_stack(const std::function<void()>& body) {
  constexpr size_t kStackSize = 8 << 20;
  void* stack = mmap(nullptr, kStackSize, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  ASSERT_NE(stack, MAP_FAILED);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstack(&attr, stack, kStackSize);
  pthread_t thread;
  auto start = [](void* arg) -> void* {
    (*static_cast<const std::function<void()>*>(arg))();
    return nullptr;
  };
  ASSERT_EQ(pthread_create(&thread, &attr, start, const_cast<std::function<void()>*>(&body)), 0);
  pthread_join(thread, nullptr);
  pthread_attr_destroy(&attr);
  munmap(stack, kStackSize);
}

}  // namespace codeheap::testing
