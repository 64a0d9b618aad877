// A module of one closure body for the gc::Runtime tests and the soak: lambda(env, x) computes
// lambda_value(k, env[0], x) through a dense switch (a jump table in the read-only arena), so
// each body is a few hundred bytes of code and page rounding does not dominate churn numbers.
#pragma once

#include <cstdint>
#include <string>

#include "llvm/Support/FormatVariadic.h"

namespace codeheap::testing {

inline std::string lambda_ir(int64_t k) {
  std::string cases, blocks, phis;
  for (int i = 0; i < 16; ++i) {
    cases += llvm::formatv("    i64 {0}, label %c{0}\n", i).str();
    blocks += llvm::formatv(
                  "c{0}:\n  %m{0} = mul i64 %sum, {1}\n  %r{0} = add i64 %m{0}, {2}\n"
                  "  br label %done\n",
                  i, i + 1, k + i)
                  .str();
    phis += llvm::formatv("[%r{0}, %c{0}], ", i).str();
  }
  phis += "[%sum, %entry]";
  return llvm::formatv(R"(
define i64 @lambda(ptr %env, i64 %x) {{
entry:
  %k = load i64, ptr %env
  %sum = add i64 %x, %k
  %sel = and i64 %x, 31
  switch i64 %sel, label %done [
{0}  ]
{1}
done:
  %res = phi i64 {2}
  ret i64 %res
}
)",
                       cases, blocks, phis)
      .str();
}

// What lambda_ir(k)'s lambda returns for an environment word `env` and argument `x`.
inline int64_t lambda_value(int64_t k, int64_t env, int64_t x) {
  const int64_t sum = x + env;
  const int64_t sel = x & 31;
  return sel < 16 ? sum * (sel + 1) + k + sel : sum;
}

}  // namespace codeheap::testing
