#include "codeheap/log.h"

#include <mutex>

#include <spdlog/cfg/env.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace codeheap {

std::shared_ptr<spdlog::logger> logger(const std::string& component) {
  const std::string name = component.empty() ? "codeheap" : "codeheap." + component;
  // Serializes get-or-create; spdlog's registry alone would let two threads race to register.
  static std::mutex mutex;
  std::lock_guard lock(mutex);
  if (auto existing = spdlog::get(name)) return existing;

  static const auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  auto created = std::make_shared<spdlog::logger>(name, sink);
  created->set_level(spdlog::level::warn);
  // register_logger, unlike spdlog::initialize_logger, keeps our warn default instead of
  // spdlog's global `info`. load_env_levels() then applies SPDLOG_LEVEL to every registered
  // logger, this one included, so an explicit level for this name (or a global one) wins.
  spdlog::register_logger(created);
  spdlog::cfg::load_env_levels();
  return created;
}

}  // namespace codeheap
