// Thread registry and stack scanner: proves that no registered thread still executes inside,
// or will return into, a quarantined code block. Needs neither Boehm nor a JIT: it serves
// gc::Runtime (gcglue/) and any user of the heap and its memory managers alone, as the
// ReferenceScanner of Heap::reclaim or of a ReclaimPolicy (codeheap/heap.h).
//
// Other threads are stopped the way Boehm stops them: a signal handshake. The scanning thread
// sends each registered thread a signal of our own (not Boehm's SIGPWR/SIGXCPU), one thread at a
// time. The handler takes the interrupted program counter and every general register from its
// ucontext, scans its own stack from the interrupted stack pointer up to the stack base recorded
// at registration, marks the ranges it finds words pointing into, and acknowledges. The handler
// takes no lock and calls only async-signal-safe functions.
//
// The scanning thread, if registered, scans itself directly: its registers and its stack as
// they were when run_pass began (Heap::reclaim calls it first), so the pass's own frames, which
// hold the very addresses looked for, are not read, and no helper thread is needed. Called
// outside run_pass, scan reads the caller from scan's own frame up, which is safe but may find
// such stale copies.
//
// Why one thread at a time is enough: a block is scanned only after it entered quarantine, and
// a quarantined block has no way in any more (its entry cell was redirected or its module
// removed). A thread can hold a reference into it only through a return address, the program
// counter or a register it already had, and all three are seen when that thread is
// interrupted. No thread can acquire a new reference afterwards.
//
// A thread that does not acknowledge within the timeout (blocked with the signal masked, or a
// TSan build deferring the signal while the thread spins in uninstrumented JIT code) counts as
// referencing every range: the blocks stay quarantined and the next pass tries again.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include <llvm/Support/Error.h>

#include "codeheap/heap.h"

namespace codeheap::scan {

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

class ThreadRegistry final : public ReferenceScanner {
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

  // Marks referenced[i] for every ranges[i] (sorted by address, not overlapping; a word equal
  // to a range's end is inside it: AddressRange) that a registered thread's program counter,
  // registers or stack points into: the other threads by the handshake, the caller (if
  // registered) directly, see above. Unsorted ranges are all marked (and logged as a bug).
  // Scans are serialized; registration waits while one runs.
  ScanReport scan(std::span<const AddressRange> ranges, std::span<uint8_t> referenced) override;
  // Records the calling thread's registers and stack pointer, then runs `pass`; a scan inside
  // it reads this thread's stack from there up.
  void run_pass(const std::function<void()>& pass) override;

 private:
  struct Record;
  explicit ThreadRegistry(ScanOptions options);

  ScanOptions options_;
  mutable std::mutex mutex_;  // guards records_ and serializes scans
  std::vector<std::unique_ptr<Record>> records_;
};

}  // namespace codeheap::scan
