#include "gcglue/runtime.h"
#include <gtest/gtest.h>
#include <cstdlib>
namespace codeheap::gc {
TEST(ScratchReport, Show) {
  const char* which = getenv("SCRATCH_WHICH");
  if (which == nullptr) GTEST_SKIP();
  auto runtime = std::move(*Runtime::create({}));
  const char* ir = R"(
declare void @llvm.trap()
define void @boom(ptr %env) {
  call void @llvm.trap()
  unreachable
}
)";
  auto code = runtime->compile(ir, "trap_module");
  auto boom = reinterpret_cast<void (*)(void*)>(*runtime->symbol(*code, "boom"));
  if (std::string(which) == "data") {
    auto* ro = reinterpret_cast<volatile int*>(runtime->heap().stats().arenas[1].begin);
    *ro = 1;
  }
  boom(nullptr);
}
}
