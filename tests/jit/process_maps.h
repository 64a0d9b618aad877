// Counting the process's memory mappings, to show that JIT churn creates none.
#pragma once

#include <cstddef>
#include <fstream>
#include <sstream>
#include <string>

namespace codeheap::jit::process_maps {

// The number of lines in /proc/self/maps. Under AddressSanitizer and ThreadSanitizer, anonymous
// private read-write mappings are left out: the sanitizer's allocator maps a new region
// whenever malloc's footprint grows, which says nothing about the JIT. Every mapping a memory
// manager could leak (code, read-only data, the heap's shared views) is still counted.
inline size_t count() {
  std::ifstream maps("/proc/self/maps");
  size_t lines = 0;
  for (std::string line; std::getline(maps, line);) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    std::istringstream fields(line);
    std::string range, perms, offset, device, inode, path;
    fields >> range >> perms >> offset >> device >> inode >> path;
    if (perms == "rw-p" && path.empty()) continue;
#endif
    ++lines;
  }
  return lines;
}

}  // namespace codeheap::jit::process_maps
