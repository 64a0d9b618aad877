#include "jit/entry_cell.h"

#include <atomic>
#include <cstring>
#include <initializer_list>
#include <string>

#include "codeheap/log.h"
#include "jit/error.h"
#include "llvm/Support/MathExtras.h"
#include "llvm/Support/Memory.h"

namespace codeheap::jit {

using llvm::orc::ExecutorAddr;

namespace {

constexpr size_t kStubBytes = 8;  // 6 bytes of jmp, 2 of int3
constexpr size_t kJmpBytes = 6;
constexpr uint8_t kTrap = 0xCC;  // int3

std::atomic_ref<uint64_t> slot_ref(const Allocation& slot) {
  return std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(slot.writable));
}

}  // namespace

llvm::Expected<std::unique_ptr<EntryCell>> EntryCell::create(Heap& heap, llvm::StringRef name,
                                                             ExecutorAddr target) {
#if !defined(__x86_64__)
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 "entry cell '%s': stubs are only implemented for x86-64",
                                 name.str().c_str());
#else
  const OwnerId owner = heap.register_owner("entry cell " + name.str());
  auto stub = heap.allocate(Arena::kCode, kStubBytes, kStubBytes, owner);
  if (!stub) {
    heap.retire_owner(owner);
    return to_llvm_error(std::move(stub.error()));
  }
  auto slot = heap.allocate(Arena::kData, sizeof(uint64_t), alignof(uint64_t), owner);
  if (!slot) {
    (void)heap.abandon(stub->address);  // never executed; cannot fail for a block just made
    heap.retire_owner(owner);
    return to_llvm_error(std::move(slot.error()));
  }

  // jmp *rel32(%rip): rel32 counts from the end of the 6-byte instruction. Both blocks lie in
  // one reservation of at most 2 GiB, so the displacement always fits; checked all the same,
  // because a wrapped displacement would jump somewhere arbitrary.
  const int64_t displacement =
      static_cast<int64_t>(slot->address) - static_cast<int64_t>(stub->address + kJmpBytes);
  if (!llvm::isInt<32>(displacement)) {
    (void)heap.abandon(slot->address);
    (void)heap.abandon(stub->address);
    heap.retire_owner(owner);
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   "entry cell '%s': slot is out of rel32 range of its stub",
                                   name.str().c_str());
  }

  slot_ref(*slot).store(target.getValue(), std::memory_order_relaxed);
  uint8_t bytes[kStubBytes] = {0xFF, 0x25, 0, 0, 0, 0, kTrap, kTrap};
  const int32_t rel32 = static_cast<int32_t>(displacement);
  std::memcpy(bytes + 2, &rel32, sizeof(rel32));
  std::memcpy(stub->writable, bytes, kStubBytes);
  llvm::sys::Memory::InvalidateInstructionCache(reinterpret_cast<const void*>(stub->address),
                                                kStubBytes);
  return std::unique_ptr<EntryCell>(new EntryCell(heap, owner, *stub, *slot));
#endif
}

EntryCell::EntryCell(Heap& heap, OwnerId owner, Allocation stub, Allocation slot)
    : heap_(heap), owner_(owner), stub_(stub), slot_(slot) {}

EntryCell::~EntryCell() {
  // Retire rather than release: a thread may be executing the stub's jmp right now, and its
  // bytes must stay valid until a reclaim pass has checked that.
  for (const Allocation* block : {&stub_, &slot_}) {
    if (auto result = heap_.retire(block->address); !result)
      codeheap::logger("jit")->error("entry cell block {:#x}: {}", block->address,
                                     result.error().message);
  }
  heap_.retire_owner(owner_);
}

ExecutorAddr EntryCell::target() const {
  return ExecutorAddr(slot_ref(slot_).load(std::memory_order_acquire));
}

void EntryCell::set_target(ExecutorAddr target) {
  slot_ref(slot_).store(target.getValue(), std::memory_order_release);
}

}  // namespace codeheap::jit
