// FUZZ_CHECK(condition, format, args...): a broken invariant is a finding. It logs what broke
// (logger "codeheap.fuzz") and aborts, so libFuzzer keeps the input and a replay test fails.
#pragma once

#include <initializer_list>
#include <string>

#include <spdlog/fmt/fmt.h>

namespace fuzz {

[[noreturn]] void fail(const char* file, int line, const char* condition, const std::string& what);

}  // namespace fuzz

#define FUZZ_CHECK(condition, ...)                                                            \
  do {                                                                                        \
    if (!(condition)) ::fuzz::fail(__FILE__, __LINE__, #condition, fmt::format(__VA_ARGS__)); \
  } while (0)

namespace fuzz {

// Keeps codeheap's own loggers ("codeheap" and "codeheap.<component>") to errors, so that the
// warnings expected of bad input do not slow a fuzzer down; SPDLOG_LEVEL, if set, wins.
void quiet_logs(std::initializer_list<const char*> components);

}  // namespace fuzz
