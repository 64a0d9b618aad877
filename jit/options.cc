#include "jit/options.h"

#include <cstdlib>
#include <cstring>

namespace codeheap::jit {

namespace {

bool env_is_one(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && std::strcmp(value, "1") == 0;
}

}  // namespace

VisibilityOptions VisibilityOptions::from_environment() {
  VisibilityOptions options;
  options.perf_map = env_is_one("CODEHEAP_PERF_MAP");
  options.gdb_jit = env_is_one("CODEHEAP_GDB_JIT");
  return options;
}

}  // namespace codeheap::jit
