// The baseline tier: every lambda's first machine code, copied and patched from stencils
// (stencils.cc, compiled by clang at build time) in microseconds, with no LLVM at run time.
// baseline.cc says how; docs/tiers.md says why and how it hands hot lambdas to the LLVM tier.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "codeheap/heap.h"
#include "examples/lisp/error.h"
#include "examples/lisp/value.h"
#include "jit/stencil_emitter.h"
#include "llvm/Support/Error.h"

namespace lisp {

struct Unit;
struct Primitive;

// A form the baseline tier does not compile (the LLVM tier does it instead).
class BaselineRefused : public Error {
 public:
  using Error::Error;
};

// One top-level form's code: the heap blocks, and the entry of each lambda (by index).
struct BaselineUnit {
  codeheap::jit::EmittedUnit unit;
  std::vector<uintptr_t> entries;
  uint64_t compile_ns = 0;  // emission alone (steady clock)
};

class BaselineTier {
 public:
  // `helpers` must define every runtime helper the stencils call (abi.h) and every primitive's
  // host symbol.
  BaselineTier(codeheap::Heap& heap, const codeheap::jit::HelperTable& helpers);
  ~BaselineTier();
  BaselineTier(const BaselineTier&) = delete;
  BaselineTier& operator=(const BaselineTier&) = delete;

  // Emits `unit` (templates[i] is lambda i's template) as one code unit named `name`. Heap
  // errors come back as jit::HeapError (kOutOfMemory: collect and retry); a form the tier
  // cannot handle (a frame deeper than 512 slots) throws BaselineRefused.
  llvm::Expected<BaselineUnit> compile(Unit& unit, const std::vector<Template*>& templates,
                                       const std::string& name);

  // `symbol`'s entry cell: a stub of the Entry type that calls the global's current procedure
  // (stencils.cc, `cell`). Made once per global, kept for the runtime's life.
  llvm::Expected<uintptr_t> make_cell(Value symbol);
  uintptr_t cell_address(Value symbol) const;

  // Where stencil code calls `prim`'s host function (directly or through a trampoline).
  uintptr_t primitive_target(const Primitive& prim);

  codeheap::jit::CodeUnitBuilder& builder() { return builder_; }

 private:
  codeheap::Heap& heap_;
  const codeheap::jit::HelperTable& helpers_;
  codeheap::jit::CodeUnitBuilder builder_;
  std::unordered_map<Value, codeheap::jit::EmittedUnit> cells_;
  std::unordered_map<const Primitive*, uintptr_t> primitive_targets_;
};

}  // namespace lisp
