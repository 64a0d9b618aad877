// Copy-and-patch emission: code units built from the stencils of a cc_stencils library
// (jit/stencil.h, docs/stencils.md), with no LLVM code generation at run time.
//
//   auto helpers = HelperTable::create(heap);            // once per heap
//   (*helpers)->define("overflow_helper", &overflow_helper);
//   CodeUnitBuilder builder(my_stencils::library(), **helpers);
//   auto entry = builder.new_label(), next = builder.new_label();
//   builder.place(entry);
//   builder.append(my_stencils::kStencil_add_const);
//   builder.set_value(my_stencils::kSymbol_K, 42);
//   builder.set_label(my_stencils::kSymbol_CONT, next);   // placed next: its jmp is dropped
//   builder.place(next);
//   builder.append(my_stencils::kStencil_ret);
//   auto unit = builder.emit(heap, "f");                  // code at unit->code
//   ...
//   retire_unit(heap, *unit);                              // when the code is dead
//
// Thread safety: a CodeUnitBuilder is used by one thread at a time. A HelperTable is defined
// first and only read afterwards; define() must not run concurrently with anything else on it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "codeheap/heap.h"
#include "jit/stencil.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

namespace codeheap::jit {

// Addresses of the runtime helpers and data that stencils refer to by extern symbol name, for
// every library. A branch (R_X86_64_PLT32) to a helper out of rel32 range of the heap's code
// arena, as everything in a PIE executable or a shared library is, goes through a trampoline
// `jmp *slot(%rip)` in the heap's code arena with its slot in the data arena; every other hole
// gets the address itself. One table per heap; define everything, then use it.
class HelperTable {
 public:
  static llvm::Expected<std::unique_ptr<HelperTable>> create(Heap& heap);
  // Retires the trampolines: a thread may still be in one, so they wait for a reclaim pass.
  ~HelperTable();
  HelperTable(const HelperTable&) = delete;
  HelperTable& operator=(const HelperTable&) = delete;

  // Defines `name` (an error if it is already defined, or if the trampoline it needs cannot
  // be allocated: HeapError, kOutOfMemory).
  llvm::Error define(llvm::StringRef name, const void* address);
  // 0 if undefined.
  uintptr_t address(llvm::StringRef name) const;
  // Where a branch to `name` goes: its trampoline, or its address when it is within reach.
  // 0 if undefined.
  uintptr_t call_target(llvm::StringRef name) const;

  Heap& heap() const { return heap_; }
  // Changes with every define(), so that builders know when to look their symbols up again.
  uint64_t generation() const { return generation_; }

 private:
  struct Helper {
    uintptr_t address = 0;
    uintptr_t call_target = 0;
    OwnerId trampoline = kNoOwner;
  };

  HelperTable(Heap& heap, uintptr_t code_begin, uintptr_t code_end);

  Heap& heap_;
  uintptr_t code_begin_;
  uintptr_t code_end_;
  llvm::StringMap<Helper> helpers_;
  uint64_t generation_ = 0;
};

struct EmittedUnit {
  OwnerId owner = kNoOwner;  // the heap owner of the unit's blocks
  uintptr_t code = 0;        // execution address of the code block
  size_t code_size = 0;
  uintptr_t read_only = 0;  // its read-only data and .eh_frame (0 if it has neither)
  size_t read_only_size = 0;
  // Deregisters the unit's unwind info (empty if it has none). Pass it as `on_gone` to
  // Heap::end_group(owner, Exit::kRetire, on_gone), as retire_unit does, so that it runs only once
  // no thread can be inside the code.
  std::function<void()> on_gone;
};

// Builds code units from the stencils of one library, one unit at a time. Emission is the hot
// path of a tier that compiles small functions in microseconds: the builder keeps its vectors
// from unit to unit and looks nothing up by name.
class CodeUnitBuilder {
 public:
  using Label = uint32_t;

  // Both must outlive the builder. `perf_map`: append one /tmp/perf-<pid>.map line per
  // stencil instance of every unit ("<owner name>:<stencil>"; see jit/visibility.h), e.g.
  // VisibilityOptions::from_environment().perf_map.
  CodeUnitBuilder(const StencilLibrary& library, const HelperTable& helpers, bool perf_map = false);

  // Starts a new unit, keeping capacity. Labels and label addresses of the last unit are gone.
  void reset();

  Label new_label();
  // The label's address is where the next appended stencil starts (the end of the code if
  // none follows). A label is placed once.
  void place(Label label);

  // Appends one instance of stencil `stencil` (a kStencil_ constant). Every symbol its holes
  // use must then be set for it with the two calls below or be defined in the HelperTable;
  // emit() fails, naming the stencil and the symbol, if one is neither.
  void append(uint16_t stencil);
  // Symbol `symbol` (a kSymbol_ constant) of the last appended instance is `value`.
  void set_value(uint16_t symbol, uint64_t value);
  // Symbol `symbol` of the last appended instance is the address of `label` (jumps and calls
  // within the unit). A final musttail jump to a label placed right after the instance is
  // dropped.
  void set_label(uint16_t symbol, Label label);

  // Lays the unit out and allocates it as ONE allocate_group named `owner_name` (code in
  // kCode; read-only data and .eh_frame in kReadOnly), copies the stencils through the
  // writable alias, patches every hole (a value that does not fit its hole is an error),
  // registers the unit's .eh_frame with the unwinder, and flushes the instruction cache.
  // Instances of one stencil share one copy of its read-only data unless that data has holes
  // of its own that depend on the instance. A failure leaves the heap as it was; a heap that
  // is full gives a HeapError with ErrorCode::kOutOfMemory (collect, reclaim, retry). The
  // builder keeps the unit's contents: call reset() before building the next one.
  llvm::Expected<EmittedUnit> emit(Heap& heap, llvm::StringRef owner_name);

  // The execution address of `label` in the last emitted unit (valid until reset()).
  uintptr_t label_address(Label label) const;

  const StencilLibrary& library() const { return library_; }

 private:
  struct Instance {
    uint16_t stencil = 0;
    bool drop_tail_jump = false;
    bool owns_rodata = false;  // copies and patches its read-only data (not a shared copy)
    uint32_t bindings_begin = 0;
    uint32_t bindings_end = 0;
    uint32_t code_offset = 0;
    uint32_t code_size = 0;
    uint32_t rodata_offset = 0;
  };
  struct Binding {
    uint16_t symbol;
    bool label;
    uint64_t value;  // a value or a Label
  };
  struct Layout;

  void resolve_helpers();
  bool bind(const Instance& instance);
  llvm::Error binding_error(const Instance& instance, llvm::StringRef owner_name,
                            uint32_t index) const;
  llvm::Error check_holes(const Stencil& stencil, const Hole* holes, uint32_t count,
                          llvm::StringRef owner_name, uint32_t index) const;
  uint64_t symbol_value(uint16_t symbol, bool branch) const;
  llvm::Error patch(const Stencil& stencil, const Hole* holes, uint32_t count, int32_t skip,
                    uint8_t* writable, uintptr_t address, uintptr_t code, uintptr_t rodata,
                    llvm::StringRef owner_name, uint32_t index) const;
  void write_perf_map(llvm::StringRef owner_name) const;

  const StencilLibrary& library_;
  const HelperTable& helpers_;
  const bool perf_map_;

  std::vector<Instance> instances_;
  std::vector<Binding> bindings_;
  std::vector<uint32_t> labels_;         // label -> the instance it precedes
  std::vector<uint32_t> label_offsets_;  // label -> code offset, once laid out
  uintptr_t code_ = 0;                   // of the last emitted unit

  // Per symbol: the helper's address and branch target (0: undefined), and the instance's
  // binding while `epoch_` matches.
  uint64_t helper_generation_ = 0;
  std::vector<uintptr_t> helper_address_;
  std::vector<uintptr_t> helper_call_;
  std::vector<uint32_t> bound_epoch_;
  std::vector<uint64_t> bound_value_;  // a value or a label's address (once laid out)
  std::vector<uint8_t> bound_label_;
  uint32_t epoch_ = 0;
  // Per stencil: the offset of the unit's shared copy of its read-only data, while
  // `rodata_epoch_` matches `unit_epoch_`.
  std::vector<uint32_t> rodata_epoch_;
  std::vector<uint32_t> rodata_offset_;
  uint32_t unit_epoch_ = 0;
};

// Retires a unit's blocks to quarantine (bytes intact) with the deregistration of its unwind
// info deferred until a reclaim pass frees them. The unit is empty afterwards.
llvm::Error retire_unit(Heap& heap, EmittedUnit& unit);

}  // namespace codeheap::jit
