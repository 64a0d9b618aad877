#include "jit/stencil_emitter.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cinttypes>
#include <cstring>
#include <iterator>
#include <mutex>
#include <string>

#include <fmt/format.h>

#include "codeheap/log.h"
#include "jit/error.h"

// libgcc's registration of a whole .eh_frame section (CIE, FDEs, zero terminator); the C++
// runtime's unwinder looks FDEs up there for code outside every loaded object.
extern "C" void __register_frame(void* begin);
extern "C" void __deregister_frame(void* begin);

namespace codeheap::jit {
namespace {

constexpr uint8_t kTrap = 0xCC;         // int3
constexpr uint32_t kTailJumpBytes = 5;  // E9 rel32
constexpr size_t kTrampolineBytes = 8;  // FF 25 rel32: jmp *slot(%rip), then int3 int3
constexpr size_t kCodeAlignment = 16;
constexpr size_t kEHFrameAlignment = 8;
constexpr uint32_t kUnplaced = UINT32_MAX;
// A helper closer than 2 GiB minus this to both ends of the code arena needs no trampoline;
// the margin covers the addends of branch holes.
constexpr int64_t kReachMargin = int64_t{1} << 16;

bool fits_int32(int64_t value) { return value >= INT32_MIN && value <= INT32_MAX; }

void write32(uint8_t* at, uint32_t value) { std::memcpy(at, &value, sizeof(value)); }

llvm::Error error(const char* format, auto... args) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), format, args...);
}

const char* kind_name(HoleKind kind) {
  switch (kind) {
    case HoleKind::kAbs64:
      return "abs64";
    case HoleKind::kPcRel32:
      return "pcrel32";
    case HoleKind::kAbs32:
      return "abs32";
    case HoleKind::kAbs32S:
      return "abs32s";
  }
  return "?";
}

// Writes S + A (minus P for pc-relative holes) into the hole at `at`; false if it does not fit.
bool patch_hole(uint8_t* at, HoleKind kind, uint64_t target, uint64_t place) {
  switch (kind) {
    case HoleKind::kAbs64:
      std::memcpy(at, &target, sizeof(target));
      return true;
    case HoleKind::kPcRel32: {
      const int64_t displacement = static_cast<int64_t>(target - place);
      if (!fits_int32(displacement)) return false;
      write32(at, static_cast<uint32_t>(displacement));
      return true;
    }
    case HoleKind::kAbs32:
      if (target > UINT32_MAX) return false;
      write32(at, static_cast<uint32_t>(target));
      return true;
    case HoleKind::kAbs32S:
      if (!fits_int32(static_cast<int64_t>(target))) return false;
      write32(at, static_cast<uint32_t>(target));
      return true;
  }
  return false;
}

// The perf map (see jit/visibility.h): one append per unit, under a lock, so the lines of
// concurrent units never interleave.
void append_perf_map(const std::string& lines) {
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  const std::string path = "/tmp/perf-" + std::to_string(::getpid()) + ".map";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  bool ok = fd >= 0;
  for (size_t done = 0; ok && done < lines.size();) {
    const ssize_t n = ::write(fd, lines.data() + done, lines.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<size_t>(n);
  }
  if (!ok) logger("stencil")->warn("perf map {}: {}", path, std::strerror(errno));
  if (fd >= 0) ::close(fd);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// HelperTable

llvm::Expected<std::unique_ptr<HelperTable>> HelperTable::create(Heap& heap) {
#if !defined(__x86_64__)
  return error("stencil helpers: trampolines are only implemented for x86-64");
#else
  const HeapStats stats = heap.stats();
  const ArenaStats& code = stats.arenas[static_cast<size_t>(Arena::kCode)];
  return std::unique_ptr<HelperTable>(new HelperTable(heap, code.begin, code.end));
#endif
}

HelperTable::HelperTable(Heap& heap, uintptr_t code_begin, uintptr_t code_end)
    : heap_(heap), code_begin_(code_begin), code_end_(code_end) {}

HelperTable::~HelperTable() {
  for (const auto& entry : helpers_) {
    if (entry.second.trampoline == kNoOwner) continue;
    if (auto result = heap_.end_group(entry.second.trampoline, Exit::kRetire); !result)
      logger("stencil")->error("trampoline of helper '{}': {}", entry.first().str(),
                               result.error().message);
  }
}

llvm::Error HelperTable::define(llvm::StringRef name, const void* address) {
  const auto target = reinterpret_cast<uintptr_t>(address);
  if (target == 0) return error("stencil helper '%s': null address", name.str().c_str());
  auto [it, added] = helpers_.try_emplace(name);
  if (!added) return error("stencil helper '%s' is already defined", name.str().c_str());
  Helper& helper = it->second;
  helper.address = target;
  helper.call_target = target;
  ++generation_;
  const int64_t from_begin = static_cast<int64_t>(target - code_begin_);
  const int64_t from_end = static_cast<int64_t>(target - code_end_);
  if (fits_int32(from_begin + (from_begin < 0 ? -kReachMargin : kReachMargin)) &&
      fits_int32(from_end + (from_end < 0 ? -kReachMargin : kReachMargin)))
    return llvm::Error::success();

  // Out of reach: a trampoline in the code arena jumps through a slot in the data arena. Both
  // lie in the heap's one low reservation, so the stub's rel32 reaches the slot.
  const BlockRequest requests[] = {{Arena::kCode, kTrampolineBytes, kTrampolineBytes},
                                   {Arena::kData, sizeof(uint64_t), alignof(uint64_t)}};
  Allocation blocks[2];
  auto owner = heap_.allocate_group("stencil helper " + name.str(), requests, blocks);
  if (!owner) {
    helpers_.erase(it);
    return to_llvm_error(std::move(owner.error()));
  }
  const Allocation& stub = blocks[0];
  const Allocation& slot = blocks[1];
  std::memcpy(slot.writable, &target, sizeof(target));
  uint8_t bytes[kTrampolineBytes] = {0xFF, 0x25, 0, 0, 0, 0, kTrap, kTrap};
  write32(bytes + 2, static_cast<uint32_t>(slot.address - (stub.address + 6)));
  std::memcpy(stub.writable, bytes, sizeof(bytes));
  __builtin___clear_cache(reinterpret_cast<char*>(stub.address),
                          reinterpret_cast<char*>(stub.address + kTrampolineBytes));
  helper.call_target = stub.address;
  helper.trampoline = *owner;
  return llvm::Error::success();
}

uintptr_t HelperTable::address(llvm::StringRef name) const {
  auto it = helpers_.find(name);
  return it == helpers_.end() ? 0 : it->second.address;
}

uintptr_t HelperTable::call_target(llvm::StringRef name) const {
  auto it = helpers_.find(name);
  return it == helpers_.end() ? 0 : it->second.call_target;
}

// ---------------------------------------------------------------------------------------------
// CodeUnitBuilder

CodeUnitBuilder::CodeUnitBuilder(const StencilLibrary& library, const HelperTable& helpers,
                                 bool perf_map)
    : library_(library),
      helpers_(helpers),
      perf_map_(perf_map),
      helper_address_(library.symbol_count),
      helper_call_(library.symbol_count),
      bound_epoch_(library.symbol_count),
      bound_value_(library.symbol_count),
      bound_label_(library.symbol_count),
      rodata_epoch_(library.stencil_count),
      rodata_offset_(library.stencil_count) {
  resolve_helpers();
}

void CodeUnitBuilder::resolve_helpers() {
  for (uint32_t i = 0; i < library_.symbol_count; ++i) {
    helper_address_[i] = helpers_.address(library_.symbols[i]);
    helper_call_[i] = helpers_.call_target(library_.symbols[i]);
  }
  helper_generation_ = helpers_.generation();
}

void CodeUnitBuilder::reset() {
  instances_.clear();
  bindings_.clear();
  labels_.clear();
  label_offsets_.clear();
  code_ = 0;
}

CodeUnitBuilder::Label CodeUnitBuilder::new_label() {
  labels_.push_back(kUnplaced);
  return static_cast<Label>(labels_.size() - 1);
}

void CodeUnitBuilder::place(Label label) {
  assert(label < labels_.size() && labels_[label] == kUnplaced);
  labels_[label] = static_cast<uint32_t>(instances_.size());
}

void CodeUnitBuilder::append(uint16_t stencil) {
  assert(stencil < library_.stencil_count);
  Instance instance;
  instance.stencil = stencil;
  instance.bindings_begin = instance.bindings_end = static_cast<uint32_t>(bindings_.size());
  instances_.push_back(instance);
}

void CodeUnitBuilder::set_value(uint16_t symbol, uint64_t value) {
  assert(!instances_.empty() && symbol < library_.symbol_count);
  bindings_.push_back({symbol, false, value});
  instances_.back().bindings_end = static_cast<uint32_t>(bindings_.size());
}

void CodeUnitBuilder::set_label(uint16_t symbol, Label label) {
  assert(!instances_.empty() && symbol < library_.symbol_count && label < labels_.size());
  bindings_.push_back({symbol, true, label});
  instances_.back().bindings_end = static_cast<uint32_t>(bindings_.size());
}

// Makes the instance's bindings current (bound_*[symbol] valid while bound_epoch_ == epoch_).
// False if a symbol is set twice or to a label never placed (binding_error says which).
bool CodeUnitBuilder::bind(const Instance& instance) {
  if (++epoch_ == 0) {  // wrapped: forget every stamp
    std::fill(bound_epoch_.begin(), bound_epoch_.end(), 0);
    epoch_ = 1;
  }
  bool ok = true;
  for (uint32_t b = instance.bindings_begin; b < instance.bindings_end; ++b) {
    const Binding& binding = bindings_[b];
    ok &= bound_epoch_[binding.symbol] != epoch_ &&
          !(binding.label && labels_[binding.value] == kUnplaced);
    bound_epoch_[binding.symbol] = epoch_;
    bound_value_[binding.symbol] = binding.value;
    bound_label_[binding.symbol] = binding.label;
  }
  return ok;
}

llvm::Error CodeUnitBuilder::binding_error(const Instance& instance, llvm::StringRef owner_name,
                                           uint32_t index) const {
  for (uint32_t b = instance.bindings_begin; b < instance.bindings_end; ++b) {
    const Binding& binding = bindings_[b];
    const bool twice =
        std::any_of(bindings_.begin() + instance.bindings_begin, bindings_.begin() + b,
                    [&](const Binding& o) { return o.symbol == binding.symbol; });
    if (twice || (binding.label && labels_[binding.value] == kUnplaced))
      return error("unit '%s': stencil '%s' (instance %u): symbol '%s' is %s",
                   owner_name.str().c_str(), library_.stencils[instance.stencil].name, index,
                   library_.symbols[binding.symbol],
                   twice ? "set twice" : "set to a label never placed");
  }
  return llvm::Error::success();
}

llvm::Error CodeUnitBuilder::check_holes(const Stencil& stencil, const Hole* holes, uint32_t count,
                                         llvm::StringRef owner_name, uint32_t index) const {
  for (uint32_t h = 0; h < count; ++h) {
    const Hole& hole = holes[h];
    if (hole.target != HoleTarget::kSymbol || bound_epoch_[hole.symbol] == epoch_ ||
        helper_address_[hole.symbol] != 0)
      continue;
    return error(
        "unit '%s': stencil '%s' (instance %u) uses symbol '%s', which is neither set "
        "for the instance nor defined in the helper table",
        owner_name.str().c_str(), stencil.name, index, library_.symbols[hole.symbol]);
  }
  return llvm::Error::success();
}

// S for a symbol hole of the current instance, once the unit is laid out and allocated.
uint64_t CodeUnitBuilder::symbol_value(uint16_t symbol, bool branch) const {
  if (bound_epoch_[symbol] == epoch_)
    return bound_label_[symbol] ? code_ + label_offsets_[bound_value_[symbol]]
                                : bound_value_[symbol];
  return branch ? helper_call_[symbol] : helper_address_[symbol];
}

llvm::Error CodeUnitBuilder::patch(const Stencil& stencil, const Hole* holes, uint32_t count,
                                   int32_t skip, uint8_t* writable, uintptr_t address,
                                   uintptr_t code, uintptr_t rodata, llvm::StringRef owner_name,
                                   uint32_t index) const {
  for (uint32_t h = 0; h < count; ++h) {
    if (static_cast<int32_t>(h) == skip) continue;
    const Hole& hole = holes[h];
    uint64_t target = 0;
    switch (hole.target) {
      case HoleTarget::kSymbol:
        target = symbol_value(hole.symbol, hole.branch);
        break;
      case HoleTarget::kReadOnly:
        target = rodata;
        break;
      case HoleTarget::kCode:
        target = code;
        break;
    }
    target += static_cast<uint64_t>(hole.addend);
    if (patch_hole(writable + hole.offset, hole.kind, target, address + hole.offset)) continue;
    return error(
        "unit '%s': stencil '%s' (instance %u): %s hole at +%u against %s: "
        "0x%" PRIx64 " does not fit (from 0x%" PRIxPTR ")",
        owner_name.str().c_str(), stencil.name, index, kind_name(hole.kind), hole.offset,
        hole.target == HoleTarget::kSymbol ? library_.symbols[hole.symbol]
        : hole.target == HoleTarget::kCode ? "its code"
                                           : "its read-only data",
        target, address + hole.offset);
  }
  return llvm::Error::success();
}

llvm::Expected<EmittedUnit> CodeUnitBuilder::emit(Heap& heap, llvm::StringRef owner_name) {
  if (instances_.empty()) return error("unit '%s': no stencil appended", owner_name.str().c_str());
  if (&heap != &helpers_.heap())
    return error("unit '%s': the heap is not the helper table's", owner_name.str().c_str());
  if (helpers_.generation() != helper_generation_) resolve_helpers();
  if (++unit_epoch_ == 0) {
    std::fill(rodata_epoch_.begin(), rodata_epoch_.end(), 0);
    unit_epoch_ = 1;
  }

  // Check that every hole has a value, decide which tail jumps to drop and lay the unit out:
  // code, then read-only data, then .eh_frame (the CIE, one FDE per instance, a terminator).
  const auto count = static_cast<uint32_t>(instances_.size());
  uint32_t code_size = 0;
  size_t rodata_size = 0;
  size_t read_only_align = kEHFrameAlignment;
  size_t eh_frame_size = library_.cie_size;
  for (uint32_t i = 0; i < count; ++i) {
    Instance& instance = instances_[i];
    const Stencil& stencil = library_.stencils[instance.stencil];
    if (!bind(instance)) return binding_error(instance, owner_name, i);
    if (auto err = check_holes(stencil, stencil.holes, stencil.hole_count, owner_name, i))
      return err;
    if (auto err =
            check_holes(stencil, stencil.rodata_holes, stencil.rodata_hole_count, owner_name, i))
      return err;
    instance.drop_tail_jump = false;
    if (stencil.tail_jump_hole >= 0 && i + 1 < count) {
      const uint16_t symbol = stencil.holes[stencil.tail_jump_hole].symbol;
      instance.drop_tail_jump = bound_epoch_[symbol] == epoch_ && bound_label_[symbol] &&
                                labels_[bound_value_[symbol]] == i + 1;
    }
    instance.code_offset = code_size;
    instance.code_size = stencil.code_size - (instance.drop_tail_jump ? kTailJumpBytes : 0);
    code_size += instance.code_size;
    instance.owns_rodata = false;
    if (stencil.rodata_size > 0) {
      if (stencil.rodata_shared && rodata_epoch_[instance.stencil] == unit_epoch_) {
        instance.rodata_offset = rodata_offset_[instance.stencil];
      } else {
        const size_t align = std::max<size_t>(stencil.rodata_align, 1);
        rodata_size = (rodata_size + align - 1) / align * align;
        read_only_align = std::max(read_only_align, align);
        instance.rodata_offset = static_cast<uint32_t>(rodata_size);
        instance.owns_rodata = true;
        rodata_size += stencil.rodata_size;
        rodata_epoch_[instance.stencil] = unit_epoch_;
        rodata_offset_[instance.stencil] = instance.rodata_offset;
      }
    }
    eh_frame_size += stencil.fde_size;
  }
  label_offsets_.resize(labels_.size());
  for (size_t l = 0; l < labels_.size(); ++l)
    label_offsets_[l] = labels_[l] == kUnplaced ? 0
                        : labels_[l] < count    ? instances_[labels_[l]].code_offset
                                                : code_size;
  const bool has_eh_frame = library_.cie_size > 0;
  const size_t eh_frame_offset =
      has_eh_frame ? (rodata_size + kEHFrameAlignment - 1) / kEHFrameAlignment * kEHFrameAlignment
                   : rodata_size;
  if (has_eh_frame) eh_frame_size += sizeof(uint32_t);  // the terminator
  const size_t read_only_size = eh_frame_offset + (has_eh_frame ? eh_frame_size : 0);

  const BlockRequest requests[] = {{Arena::kCode, code_size, kCodeAlignment},
                                   {Arena::kReadOnly, read_only_size, read_only_align}};
  Allocation blocks[2];
  const size_t block_count = read_only_size > 0 ? 2 : 1;
  auto owner = heap.allocate_group(owner_name.str(), std::span(requests, block_count),
                                   std::span(blocks, block_count));
  if (!owner) return to_llvm_error(std::move(owner.error()));
  const Allocation& code = blocks[0];
  const Allocation& read_only = blocks[1];
  code_ = code.address;

  // Copy and patch.
  auto abandon = [&](llvm::Error err) -> llvm::Error {
    for (size_t b = 0; b < block_count; ++b) (void)heap.abandon(blocks[b].address);
    heap.retire_owner(*owner);
    code_ = 0;
    return err;
  };
  uint8_t* eh_frame = read_only.writable + eh_frame_offset;
  size_t eh_frame_at = library_.cie_size;
  if (has_eh_frame) std::memcpy(eh_frame, library_.cie, library_.cie_size);
  for (uint32_t i = 0; i < count; ++i) {
    const Instance& instance = instances_[i];
    const Stencil& stencil = library_.stencils[instance.stencil];
    const uintptr_t at = code.address + instance.code_offset;
    const uintptr_t rodata = read_only.address + instance.rodata_offset;
    std::memcpy(code.writable + instance.code_offset, stencil.code, instance.code_size);
    bind(instance);
    if (auto err = patch(stencil, stencil.holes, stencil.hole_count,
                         instance.drop_tail_jump ? stencil.tail_jump_hole : -1,
                         code.writable + instance.code_offset, at, at, rodata, owner_name, i))
      return abandon(std::move(err));
    if (instance.owns_rodata) {
      std::memcpy(read_only.writable + instance.rodata_offset, stencil.rodata, stencil.rodata_size);
      if (auto err =
              patch(stencil, stencil.rodata_holes, stencil.rodata_hole_count, -1,
                    read_only.writable + instance.rodata_offset, rodata, at, rodata, owner_name, i))
        return abandon(std::move(err));
    }
    if (stencil.fde_size > 0) {
      // The FDE's CIE pointer counts back from its own field; pc_begin is pc-relative (and
      // fits: code and read-only data lie in one reservation below 2 GiB).
      uint8_t* fde = eh_frame + eh_frame_at;
      std::memcpy(fde, stencil.fde, stencil.fde_size);
      write32(fde + kFdeCiePointer, static_cast<uint32_t>(eh_frame_at + kFdeCiePointer));
      const uintptr_t pc_begin = read_only.address + eh_frame_offset + eh_frame_at + kFdePcBegin;
      write32(fde + kFdePcBegin, static_cast<uint32_t>(at - pc_begin));
      uint32_t pc_range;
      std::memcpy(&pc_range, fde + kFdePcRange, sizeof(pc_range));
      write32(fde + kFdePcRange, std::min(pc_range, instance.code_size));
      eh_frame_at += stencil.fde_size;
    }
  }
  if (has_eh_frame) write32(eh_frame + eh_frame_at, 0);

  EmittedUnit unit;
  unit.owner = *owner;
  unit.code = code.address;
  unit.code_size = code_size;
  if (block_count == 2) {
    unit.read_only = read_only.address;
    unit.read_only_size = read_only_size;
  }
  if (has_eh_frame) {
    void* frames = reinterpret_cast<void*>(read_only.address + eh_frame_offset);
    __register_frame(frames);
    unit.on_gone = [frames] { __deregister_frame(frames); };
  }
  __builtin___clear_cache(reinterpret_cast<char*>(code.address),
                          reinterpret_cast<char*>(code.address + code_size));
  if (perf_map_) write_perf_map(owner_name);
  return unit;
}

// "START SIZE name" per instance, hex without 0x, as perf(1) reads it.
void CodeUnitBuilder::write_perf_map(llvm::StringRef owner_name) const {
  std::string name = owner_name.str();
  std::replace_if(name.begin(), name.end(), [](char c) { return c == '\n' || c == '\r'; }, ' ');
  std::string lines;
  for (const Instance& instance : instances_)
    fmt::format_to(std::back_inserter(lines), "{:x} {:x} {}:{}\n", code_ + instance.code_offset,
                   instance.code_size, name, library_.stencils[instance.stencil].name);
  append_perf_map(lines);
}

uintptr_t CodeUnitBuilder::label_address(Label label) const {
  assert(code_ != 0 && label < label_offsets_.size() && labels_[label] != kUnplaced);
  return code_ + label_offsets_[label];
}

llvm::Error retire_unit(Heap& heap, EmittedUnit& unit) {
  auto result = heap.end_group(unit.owner, Exit::kRetire, std::move(unit.on_gone));
  unit = EmittedUnit();
  return to_llvm_error(std::move(result));
}

}  // namespace codeheap::jit
