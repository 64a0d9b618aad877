// The tables of a stencil library: machine code with holes, written by //jit:stencil_tool from
// an object file that clang-19 compiled at build time (cc_stencils in jit/stencils.bzl), read
// by CodeUnitBuilder (jit/stencil_emitter.h) at run time. Plain constant data, no dynamic
// initialization. The convention and the hole kinds are described in docs/stencils.md.
#pragma once

#include <cstdint>

namespace codeheap::jit {

// How a hole is patched, with S the target's address, A the addend and P the hole's address.
enum class HoleKind : uint8_t {
  kAbs64,    // 8 bytes: S + A                                      (R_X86_64_64)
  kPcRel32,  // 4 bytes: S + A - P, which must fit in int32        (R_X86_64_PC32, _PLT32)
  kAbs32,    // 4 bytes: S + A, which must fit in uint32           (R_X86_64_32)
  kAbs32S,   // 4 bytes: S + A, which must fit in int32            (R_X86_64_32S)
};

enum class HoleTarget : uint8_t {
  kSymbol,    // S: the library's symbol `symbol`, bound per instance or by the HelperTable
  kReadOnly,  // S: this instance's copy of its stencil's read-only data (A: offset in it)
  kCode,      // S: this instance's first code byte (A: offset in the stencil's code)
};

struct Hole {
  uint32_t offset;  // in the stencil's code (or in its read-only data, for rodata_holes)
  HoleKind kind;
  HoleTarget target;
  uint16_t symbol;  // for HoleTarget::kSymbol: an index into StencilLibrary::symbols
  int64_t addend;
  // R_X86_64_PLT32: a call or jump, which may reach a helper through its trampoline. Any other
  // pc-relative hole (a data reference) needs the helper's own address within rel32 range.
  bool branch;
};

struct Stencil {
  const char* name;  // the function's symbol name
  const uint8_t* code;
  uint32_t code_size;
  const Hole* holes;  // by offset
  uint32_t hole_count;
  // The read-only data the code refers to, copied from the object's .rodata* sections (each
  // once, aligned as its section was), with holes of its own (jump tables, pointer tables).
  const uint8_t* rodata;
  uint32_t rodata_size;
  uint32_t rodata_align;
  const Hole* rodata_holes;
  uint32_t rodata_hole_count;
  // True when no rodata hole depends on the instance (its code or its symbols), so the
  // instances of this stencil in one unit can share one copy.
  bool rodata_shared;
  // The index in `holes` of the code's final `jmp rel32` to a symbol (a musttail
  // continuation), -1 if it has none. The emitter drops those 5 bytes when the jump's target
  // is placed right after the instance.
  int32_t tail_jump_hole;
  // The function's .eh_frame FDE (fde_size 0 if it has none), with 32-bit length, using the
  // library's CIE: bytes 4..7 (CIE pointer) and 8..11 (pc_begin, pcrel sdata4) are zero here
  // and written by the emitter, 12..15 hold pc_range.
  const uint8_t* fde;
  uint32_t fde_size;
};

inline constexpr uint32_t kFdeCiePointer = 4;
inline constexpr uint32_t kFdePcBegin = 8;
inline constexpr uint32_t kFdePcRange = 12;

struct StencilLibrary {
  const char* name;         // the Bazel target that built it
  const Stencil* stencils;  // sorted by name
  uint32_t stencil_count;
  const char* const* symbols;  // the extern symbols the holes refer to, sorted by name
  uint32_t symbol_count;
  // The one CIE of every FDE (augmentation "zR", pointers pcrel sdata4); empty without FDEs.
  const uint8_t* cie;
  uint32_t cie_size;
};

}  // namespace codeheap::jit
