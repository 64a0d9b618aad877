#include "fuzz/check.h"

#include <cstdlib>

#include "codeheap/log.h"

namespace fuzz {

void fail(const char* file, int line, const char* condition, const std::string& what) {
  auto log = codeheap::logger("fuzz");
  log->critical("{}:{}: check failed: {}: {}", file, line, condition, what);
  log->flush();
  std::abort();
}

void quiet_logs(std::initializer_list<const char*> components) {
  if (std::getenv("SPDLOG_LEVEL") != nullptr) return;
  for (const char* component : components) {
    codeheap::logger(component)->set_level(spdlog::level::err);
  }
}

}  // namespace fuzz
