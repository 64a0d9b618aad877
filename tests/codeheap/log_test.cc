// codeheap::logger(): names, identity, levels from SPDLOG_LEVEL.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>

#include <set>
#include <thread>
#include <vector>

#include "codeheap/log.h"

namespace codeheap {
namespace {

TEST(LogTest, NamedLoggersAreCreatedOnceAndRegistered) {
  auto heap_logger = logger();
  auto jit_logger = logger("jit");
  EXPECT_EQ(heap_logger->name(), "codeheap");
  EXPECT_EQ(jit_logger->name(), "codeheap.jit");
  EXPECT_EQ(logger(), heap_logger);
  EXPECT_EQ(logger("jit"), jit_logger);
  EXPECT_EQ(spdlog::get("codeheap.jit"), jit_logger);
}

TEST(LogTest, ConcurrentFirstUseYieldsOneLogger) {
  std::vector<std::shared_ptr<spdlog::logger>> seen(8);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < seen.size(); ++i) {
    threads.emplace_back([&, i] { seen[i] = logger("race"); });
  }
  for (std::thread& t : threads) t.join();
  for (const auto& l : seen) EXPECT_EQ(l, seen[0]);
}

TEST(LogTest, DefaultLevelIsWarn) {
  const char* env = getenv("SPDLOG_LEVEL");
  if (env != nullptr && *env != '\0') GTEST_SKIP() << "SPDLOG_LEVEL is set";
  EXPECT_EQ(logger("default-level")->level(), spdlog::level::warn);
}

TEST(LogDeathTest, LevelsComeFromSpdlogLevel) {
  EXPECT_EXIT(
      {
        setenv("SPDLOG_LEVEL", "codeheap.from-env=debug,codeheap.quiet=off", 1);
        const bool ok = logger("from-env")->level() == spdlog::level::debug &&
                        logger("quiet")->level() == spdlog::level::off;
        std::exit(ok ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace codeheap
