#include "jit/rtdyld_memory_manager.h"

#include <algorithm>
#include <functional>
#include <utility>

#include "codeheap/log.h"
#include "jit/error.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/BinaryFormat/ELF.h"
#include "llvm/Object/ELFObjectFile.h"
#include "llvm/Support/MathExtras.h"
#include "llvm/Support/Memory.h"

namespace codeheap::jit {

RtdyldMemoryManager::RtdyldMemoryManager(Heap& heap, std::string name)
    : heap_(heap), name_(std::move(name)) {}

RtdyldMemoryManager::~RtdyldMemoryManager() {
  // One heap call per object retires its blocks and its owner together (Heap::end_group): a
  // reclaim pass may run inside any heap call (a ReclaimPolicy), and must not free an object's
  // code before the deregistration of its frames is attached to the owner. A thread may still
  // be running the retired code, so the frames stay registered until the heap reclaims the
  // blocks, and are deregistered then, before any byte is reused.
  for (OwnerId owner : owners_) {
    for (const Block& block : blocks_) {
      if (block.owner != owner || !block.failed_object) continue;
      if (auto result = heap_.abandon(block.address); !result) {
        logger("jit")->error("rtdyld '{}': giving back block {:#x}: {}", name_, block.address,
                             result.error().message);
      }
    }
    std::vector<EHFrame> frames;
    for (const EHFrame& frame : frames_)
      if (frame.owner == owner) frames.push_back(frame);
    std::function<void()> on_gone;
    if (!frames.empty()) {
      on_gone = [frames = std::move(frames)] {
        for (const EHFrame& frame : frames) deregisterEHFramesInProcess(frame.address, frame.size);
      };
    }
    if (auto result = heap_.end_group(owner, Exit::kRetire, std::move(on_gone)); !result) {
      logger("jit")->error("rtdyld '{}': retiring the blocks of owner {}: {}", name_, owner,
                           result.error().message);
    }
  }
}

void RtdyldMemoryManager::deregisterEHFrames() {
  // Deferred to the heap's reclaim of the code (see the destructor): MCJIT and
  // RTDyldObjectLinkingLayer call this just before they drop the manager, while a thread may
  // still be inside the code and need to unwind through it.
}

void RtdyldMemoryManager::define_symbol(llvm::StringRef symbol, uint64_t address) {
  symbols_[symbol] = address;
}

llvm::Error RtdyldMemoryManager::status() const {
  if (!error_) return llvm::Error::success();
  return to_llvm_error(*error_);
}

uint8_t* RtdyldMemoryManager::allocateCodeSection(uintptr_t size, unsigned alignment,
                                                  unsigned /*section_id*/,
                                                  llvm::StringRef section_name) {
  return allocate(Arena::kCode, size, alignment, section_name);
}

uint8_t* RtdyldMemoryManager::allocateDataSection(uintptr_t size, unsigned alignment,
                                                  unsigned /*section_id*/,
                                                  llvm::StringRef section_name, bool is_read_only) {
  return allocate(is_read_only ? Arena::kReadOnly : Arena::kData, size, alignment, section_name);
}

void RtdyldMemoryManager::reserveAllocationSpace(uintptr_t code_size, llvm::Align code_align,
                                                 uintptr_t read_only_size,
                                                 llvm::Align read_only_align,
                                                 uintptr_t read_write_size,
                                                 llvm::Align read_write_align) {
  // RuntimeDyld calls this first for every object with upper bounds of what the object's
  // sections need per arena (each section padded to the largest alignment). One block per
  // arena instead of one per section keeps an object's code and constants together and the
  // heap's block table small. If a reservation cannot be made, sections are placed one by
  // one, which may still fit a fragmented heap.
  const std::pair<uintptr_t, llvm::Align> requests[kArenaCount] = {
      {code_size, code_align},
      {read_only_size, read_only_align},
      {read_write_size, read_write_align}};
  for (int i = 0; i < kArenaCount; ++i) {
    reservations_[i] = {};
    auto [size, align] = requests[i];
    if (size == 0) continue;
    auto block = heap_.allocate(static_cast<Arena>(i), size, align.value(), current_owner());
    if (!block) {
      logger("jit")->debug(
          "rtdyld '{}': no {}-byte reservation in {}: {}; placing sections "
          "one by one",
          name_, size, to_string(static_cast<Arena>(i)), block.error().message);
      continue;
    }
    blocks_.push_back({block->address, current_owner_, false});
    reservations_[i] = {block->address, block->writable, size, 0};
  }
}

uint8_t* RtdyldMemoryManager::allocate(Arena arena, uintptr_t size, unsigned alignment,
                                       llvm::StringRef name) {
  if (current_object_failed_) return allocate_scratch(size, alignment);
  alignment = std::max(alignment, 1u);

  uintptr_t address = 0;
  uint8_t* writable = nullptr;
  Reservation& reservation = reservations_[static_cast<int>(arena)];
  uintptr_t offset = llvm::alignTo(reservation.used, alignment);
  if (reservation.size != 0 && reservation.address % alignment == 0 &&
      offset + size <= reservation.size) {
    address = reservation.address + offset;
    writable = reservation.writable + offset;
    reservation.used = offset + size;
  } else {
    auto block = heap_.allocate(arena, size, alignment, current_owner());
    if (!block) {
      fail(arena, size, alignment, name, std::move(block.error()));
      return allocate_scratch(size, alignment);
    }
    blocks_.push_back({block->address, current_owner_, false});
    address = block->address;
    writable = block->writable;
  }

  if (writable != reinterpret_cast<uint8_t*>(address))
    pending_remaps_.push_back({writable, sections_.size()});
  sections_.push_back({name.str(), address, size, arena});
  return writable;
}

void RtdyldMemoryManager::fail(Arena arena, uintptr_t size, unsigned alignment,
                               llvm::StringRef name, codeheap::Error error) {
  error.message = "cannot place section '" + name.str() + "' (" + std::to_string(size) +
                  " bytes, alignment " + std::to_string(alignment) + ") of '" + name_ +
                  "' in the " + to_string(arena) + " arena: " + error.message;
  logger("jit")->error("rtdyld: {}", error.message);
  unreported_failure_ = error.message;
  if (!error_) error_ = std::move(error);
  current_object_failed_ = true;
  for (size_t i = current_object_first_block_; i < blocks_.size(); ++i)
    blocks_[i].failed_object = true;
}

uint8_t* RtdyldMemoryManager::allocate_scratch(uintptr_t size, unsigned alignment) {
  alignment = std::max(alignment, 1u);
  scratch_.push_back(std::make_unique<uint8_t[]>(size + alignment));
  return reinterpret_cast<uint8_t*>(
      llvm::alignTo(reinterpret_cast<uintptr_t>(scratch_.back().get()), alignment));
}

OwnerId RtdyldMemoryManager::current_owner() {
  if (current_owner_ == kNoOwner) {
    std::string owner_name = name_;
    if (!owners_.empty()) owner_name += "#" + std::to_string(owners_.size() + 1);
    current_owner_ = heap_.register_owner(std::move(owner_name));
    owners_.push_back(current_owner_);
  }
  return current_owner_;
}

void RtdyldMemoryManager::notifyObjectLoaded(llvm::RuntimeDyld& dyld,
                                             const llvm::object::ObjectFile& object) {
  // RuntimeDyld has laid the object out but resolved no relocation yet: tell it where each
  // aliased section really lives, so relocations, symbol addresses and eh_frame use the
  // execution address while the bytes keep going through the alias. Sections that are not
  // loaded for execution (debug info, only with setProcessAllSections) stay linked at address
  // zero, as RuntimeDyld set them up: DWARF refers to them by offset.
  llvm::StringSet<> not_loaded;
  if (const auto* elf = llvm::dyn_cast<llvm::object::ELFObjectFileBase>(&object))
    for (const llvm::object::ELFSectionRef section : elf->sections()) {
      if (section.getFlags() & llvm::ELF::SHF_ALLOC) continue;
      auto name = section.getName();
      if (name)
        not_loaded.insert(*name);
      else
        llvm::consumeError(name.takeError());
    }
  for (const PendingRemap& remap : pending_remaps_)
    if (!not_loaded.contains(sections_[remap.section].name))
      dyld.mapSectionAddress(remap.writable, sections_[remap.section].address);
  pending_remaps_.clear();

  // The next object (if any) gets its own owner and reservations.
  for (Reservation& reservation : reservations_) reservation = {};
  current_owner_ = kNoOwner;
  current_object_failed_ = false;
  current_object_first_block_ = blocks_.size();
}

void RtdyldMemoryManager::registerEHFrames(uint8_t* /*address*/, uint64_t load_address,
                                           size_t size) {
  // The base class would register `address`, our writable alias; the unwinder must read the
  // frames where they were relocated for, the low read-only view.
  std::optional<BlockInfo> block = heap_.find(load_address);
  if (!block || in_failed_object(*block)) return;
  auto* frames = reinterpret_cast<uint8_t*>(load_address);
  registerEHFramesInProcess(frames, size);
  frames_.push_back({block->owner, frames, size});
}

bool RtdyldMemoryManager::in_failed_object(const BlockInfo& info) const {
  // A failed object's frames may point at scratch memory or hold truncated relocations.
  return std::any_of(blocks_.begin(), blocks_.end(), [&](const Block& block) {
    return block.address == info.address && block.failed_object;
  });
}

bool RtdyldMemoryManager::finalizeMemory(std::string* error_message) {
  // Code was written through the alias; permissions never change, but ISAs without a
  // coherent icache must not run stale lines (a no-op on x86-64).
  for (size_t i = first_unflushed_section_; i < sections_.size(); ++i)
    if (sections_[i].arena == Arena::kCode)
      llvm::sys::Memory::InvalidateInstructionCache(
          reinterpret_cast<const void*>(sections_[i].address), sections_[i].size);
  first_unflushed_section_ = sections_.size();

  if (unreported_failure_.empty()) return false;
  if (error_message) *error_message = std::move(unreported_failure_);
  unreported_failure_.clear();
  return true;
}

uint64_t RtdyldMemoryManager::getSymbolAddress(const std::string& name) {
  auto it = symbols_.find(name);
  if (it != symbols_.end()) return it->second;
  return getSymbolAddressInProcess(name);
}

}  // namespace codeheap::jit
