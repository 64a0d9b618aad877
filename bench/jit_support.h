// What the benchmarks that run LLVM share: fatal error checks, IR parsing, the stock LLJIT
// baseline, and the reclaim cadence that our managers' numbers include.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "bench/harness.h"
#include "codeheap/heap.h"
#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/ExecutionEngine/Orc/ThreadSafeModule.h"
#include "llvm/Support/Error.h"

namespace codeheap::bench {

// Our managers retire code to the heap's quarantine; a reclaim pass returns it to the free
// list. The benchmarks run one every kReclaimEvery deallocations (module removals, swaps), with
// a predicate that finds nothing referenced (single-threaded, nothing runs the retired code),
// inside the timed operations: the pass's cost is amortized into the per-operation time.
inline constexpr size_t kReclaimEvery = 64;
inline bool nothing_referenced(uintptr_t, uintptr_t) { return false; }

// die() with `what` and the error's message on failure.
void check(llvm::Error err, const std::string& what);
template <typename T>
T check(llvm::Expected<T> value, const std::string& what) {
  check(value.takeError(), what);
  return std::move(*value);
}

// A heap with the default options (the configuration a runtime gets), or die().
std::unique_ptr<Heap> make_heap(const std::string& name);

// Native target, asm printer and parser; idempotent.
void initialize_native_target();

// Parses textual IR into a module with a context of its own, or die().
llvm::orc::ThreadSafeModule parse_module(std::string_view ir, const std::string& name);

// The baseline JIT: LLJITBuilder with every default (on x86-64 Linux: JITLink with
// InProcessMemoryManager through SelfExecutorProcessControl, the generic IR platform, one
// compiler on the calling thread).
std::unique_ptr<llvm::orc::LLJIT> make_stock_lljit();

}  // namespace codeheap::bench
