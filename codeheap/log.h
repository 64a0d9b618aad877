// Logging for codeheap/ and the layers built on it (jit/ uses component "jit").
//
// Every logger writes to stderr through one shared sink, so lines from different components never
// interleave mid-line. Levels come from the environment the spdlog way, e.g.
//
//   SPDLOG_LEVEL=codeheap=debug                 the heap itself
//   SPDLOG_LEVEL=codeheap=debug,codeheap.jit=trace
//   SPDLOG_LEVEL=info                           every spdlog logger, these included
//
// A logger whose name SPDLOG_LEVEL does not mention logs at `warn` and above.
#pragma once

#include <memory>
#include <string>

#include <spdlog/logger.h>

namespace codeheap {

// The logger "codeheap" (empty component) or "codeheap.<component>". Created on first use,
// thread-safely, and registered with spdlog, so spdlog::get(name) returns it as well. An
// application that registers a logger of that name before first use (to send codeheap's
// messages elsewhere) gets its own logger back. Callers on hot paths should keep the pointer.
std::shared_ptr<spdlog::logger> logger(const std::string& component = {});

}  // namespace codeheap
