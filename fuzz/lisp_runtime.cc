#include "fuzz/lisp_runtime.h"

#include <cstdlib>

#include "fuzz/check.h"

namespace fuzz {

lisp::Runtime& lisp_runtime(int64_t tier_up) {
  // Never destroyed: at exit, static destruction would tear it down after statics it uses (the
  // replay of deeply nested data crashed there), while the tier-up thread may still compile.
  static lisp::Runtime* const runtime = [tier_up] {
    quiet_logs({"", "jit", "gc", "lisp"});
    lisp::RuntimeOptions options;
    options.tier_up = tier_up;
    if (const char* env = std::getenv("LISP_TIER_UP"); env != nullptr && *env != '\0') {
      const auto parsed = lisp::parse_tier_up(env);
      FUZZ_CHECK(parsed.has_value(), "LISP_TIER_UP must be a count or \"never\", not {}", env);
      options.tier_up = *parsed;
    }
    return lisp::Runtime::create(options).release();
  }();
  return *runtime;
}

}  // namespace fuzz
