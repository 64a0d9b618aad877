// Links every system dependency once, so a broken package install shows up here
// rather than deep inside a layer's tests.
#include <gc/gc.h>
#include <gtest/gtest.h>
#include <llvm/ADT/StringRef.h>
#include <llvm/Config/llvm-config.h>
#include <llvm/Support/Error.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <tl/expected.hpp>

#include <string>

TEST(Smoke, Llvm) {
  EXPECT_EQ(LLVM_VERSION_MAJOR, 19);
  llvm::Error err = llvm::make_error<llvm::StringError>("boom", llvm::inconvertibleErrorCode());
  EXPECT_EQ(llvm::toString(std::move(err)), "boom");
}

TEST(Smoke, BoehmGc) {
  GC_INIT();
  void* p = GC_MALLOC(64);
  ASSERT_NE(p, nullptr);
  EXPECT_GE(GC_size(p), 64u);
}

TEST(Smoke, SpdlogAndJson) {
  auto logger = spdlog::default_logger();
  ASSERT_NE(logger, nullptr);
  nlohmann::json j = {{"answer", 42}};
  EXPECT_EQ(j.dump(), R"({"answer":42})");
}

TEST(Smoke, Expected) {
  tl::expected<int, std::string> e = tl::make_unexpected(std::string("no"));
  EXPECT_FALSE(e.has_value());
  EXPECT_EQ(e.error(), "no");
}
