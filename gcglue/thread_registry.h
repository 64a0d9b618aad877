// Thread registry and stack scanner: proves that no registered thread still executes inside,
// or will return into, a quarantined code block.
//
// Boehm 8.2 does not publish other threads' stack pointers, so the scan stops threads the way
// Boehm itself does: a signal handshake. The scanning thread sends each registered thread a
// signal of our own (not Boehm's SIGPWR/SIGXCPU), one thread at a time. The handler takes the
// interrupted program counter and every general register from its ucontext, scans its own
// stack from the interrupted stack pointer up to the stack base recorded at registration, marks
// the ranges it finds words pointing into, and acknowledges. The handler takes no lock and
// calls only async-signal-safe functions.
//
// Why one thread at a time is enough: a block is scanned only after it entered quarantine, and
// a quarantined block has no way in any more (its entry cell was redirected or its code object
// was collected). A thread can hold a reference into it only through a return address, the
// program counter or a register it already had, and all three are seen when that thread is
// interrupted. No thread can acquire a new reference afterwards.
//
// A thread that does not acknowledge within the timeout (blocked with the signal masked, or a
// TSan build deferring the signal while the thread spins in uninstrumented JIT code) counts as
// referencing every range: the blocks stay quarantined and the next pass tries again.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include <llvm/Support/Error.h>

namespace codeheap::gc {

// The bytes [begin, end) of a code block, where a scanned word equal to `end` counts as
// inside too: a call that is a function's last instruction (a `noreturn` call, which LLVM emits
// with no trap after it on ELF) pushes exactly that return address. Where one range ends at
// the next one's begin, such a word references both.
struct AddressRange {
  uintptr_t begin = 0;
  uintptr_t end = 0;  // one past the last byte; a word equal to it is a reference
};

struct ScanOptions {
  // Signal used for the handshake: a real-time signal, or SIGSYS. 0 selects SIGRTMIN + 6, clear
  // of glibc's and Boehm's; under ThreadSanitizer it selects SIGSYS instead, because TSan defers
  // asynchronous signals until the thread enters an intercepted function, which a thread
  // spinning in JIT code never does, while it delivers SIGSYS at once (it treats it as
  // synchronous). A SIGSYS that is not our handshake (seccomp) still gets its default action.
  int signal = 0;
  // How long to wait for one thread to acknowledge before treating it as referencing all.
  std::chrono::milliseconds ack_timeout{2000};
};

struct ScanReport {
  // referenced[i] is true when some thread's pc, registers or stack point into ranges[i]
  // (its end included, see AddressRange).
  std::vector<bool> referenced;
  size_t threads_scanned = 0;
  size_t threads_timed_out = 0;
  size_t stack_words_scanned = 0;
  uint64_t duration_ns = 0;
};

class ThreadRegistry {
 public:
  static llvm::Expected<std::unique_ptr<ThreadRegistry>> create(ScanOptions options = {});
  ~ThreadRegistry();
  ThreadRegistry(const ThreadRegistry&) = delete;
  ThreadRegistry& operator=(const ThreadRegistry&) = delete;

  // Registers the calling thread (its stack bounds come from pthread_getattr_np). A thread that
  // runs JIT code must be registered, and must unregister before it exits.
  llvm::Error register_current_thread();
  llvm::Error unregister_current_thread();
  bool is_current_thread_registered() const;
  size_t registered_threads() const;

  // Scans every registered thread other than the caller for references into `ranges`. Call it
  // from a thread that runs no JIT code (gc::Runtime uses a short-lived reclaimer thread): the
  // caller's own frames would hold the very addresses being searched for, and a thread cannot
  // interrupt itself. Scans are serialized; registration waits while one runs.
  ScanReport scan(const std::vector<AddressRange>& ranges);

 private:
  struct Record;
  explicit ThreadRegistry(ScanOptions options);

  ScanOptions options_;
  mutable std::mutex mutex_;  // guards records_ and serializes scans
  std::vector<std::unique_ptr<Record>> records_;
};

}  // namespace codeheap::gc
