// gcglue/runtime.h, the header every embedder includes, brings no ORC or JITLink header: what
// it needs of them is declared (issue 16, item 3). This file includes it first and alone.
#include "gcglue/runtime.h"

#if defined(LLVM_EXECUTIONENGINE_ORC_CORE_H) || defined(LLVM_EXECUTIONENGINE_ORC_LLJIT_H) || \
    defined(LLVM_EXECUTIONENGINE_ORC_THREADSAFEMODULE_H) ||                                  \
    defined(LLVM_EXECUTIONENGINE_ORC_OBJECTLINKINGLAYER_H) ||                                \
    defined(LLVM_EXECUTIONENGINE_JITLINK_JITLINK_H)
#error "gcglue/runtime.h includes ORC or JITLink headers; declare what it needs instead"
#endif

#include <gtest/gtest.h>

namespace codeheap::gc {
namespace {

// The options a runtime is configured with are complete types without ORC.
TEST(RuntimeHeader, ConfiguresARuntimeWithoutOrc) {
  RuntimeOptions options;
  EXPECT_EQ(options.engine.code_model, llvm::CodeModel::Small);
  EXPECT_EQ(options.engine.retire_mode, jit::RetireMode::kKeepRunning);
  EXPECT_FALSE(options.engine.add_plugins);
  options.engine.visibility.perf_map = true;
  EXPECT_TRUE(options.engine.visibility.perf_map);
}

}  // namespace
}  // namespace codeheap::gc
