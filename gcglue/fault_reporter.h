// FaultReporter: a crash in JIT code says whose code it was.
//
// Without it a fault in JIT code is an anonymous SIGSEGV, SIGILL or SIGTRAP. With it, before the
// process dies, stderr gets one line such as
//
//   codeheap: fatal SIGILL (illegal instruction) in JIT code at 0x4a3c0012: function
//   'boom.co3'+0x2, live code block 0x4a3c0000+0x12 of owner 'trap' (#3),
//   heap 'codeheap'; pid 4242, thread 4243
//
// (one line; wrapped here), then the process dies of the same signal (default disposition,
// re-raised), so exit statuses, core dumps and parent processes see what they would have seen.
//
// What it reports: SIGSEGV, SIGBUS, SIGILL, SIGTRAP and SIGFPE raised by a fault (not sent by
// kill or raise) whose program counter lies in a watched heap (for SIGTRAP, pc - 1: an `int3`,
// such as the trap bytes of released code, has already executed), or, for SIGSEGV and SIGBUS,
// whose fault address does. The line names the signal, the block's state (live, quarantined,
// released, or free with the block that was last there), the owner's name (the heap owner: the
// module name given to compile / add_module / codeheap_compile, as the heap dump shows it), the
// offset in the block and the JIT function with its offset where the link named it
// (jit::Engine names every function it links; Heap::add_symbols). A fault address next to the
// stack pointer is called a stack overflow. The lookup takes no lock (Heap::describe) and the
// line is formatted by hand and written with one write(2): the one place in the library that
// bypasses spdlog, which is not async-signal-safe.
//
// Order of handlers (guard pages and safepoint polls use SIGSEGV too):
//   1. Handlers installed after the reporter run first: the kernel calls the newest one. Such a
//      handler must chain to the handler it replaced (the reporter) for faults it does not
//      claim, as every well-behaved handler does.
//   2. The reporter first calls the claim hook of each watching runtime
//      (FaultReporterOptions::claim), one after the other; a hook that returns true has
//      handled the fault and the thread resumes where its ucontext says (the others are not
//      called). This
//      is the way for a handler installed *before* the reporter (e.g. before gc::Runtime::create)
//      to see faults in JIT code first, such as a safepoint poll whose pc is in the heap.
//   3. A fault whose pc and fault address are outside every watched heap goes to the handler
//      that was installed before the reporter (called as the kernel would, with the same
//      arguments; its own sa_mask and flags are not re-applied). If that was the default
//      disposition, or SIG_IGN for a fault (the kernel does not ignore a synchronous fault), the
//      default is restored and the signal re-raised.
//   4. Otherwise the reporter writes its line, restores the default disposition and re-raises.
//
// The handlers are installed once per process, by the first runtime that asks, with SA_ONSTACK,
// and stay installed (a handler installed later may chain to them); when no runtime watches a
// heap any more they only chain (3).
//
// Alternate signal stacks: a stack overflow faults on the guard page, where no handler can run
// on the same stack. attach_current_thread gives the calling thread an alternate signal stack
// (sigaltstack) unless it has one already (its own, or a sanitizer's, which is then used as it
// is); gc::Runtime does it for the thread that creates it and every thread registered through
// it, and detaching on unregistration (or thread exit) removes what it installed.
#pragma once

#include <signal.h>

#include <cstddef>

#include "codeheap/heap.h"
#include "llvm/Support/Error.h"

namespace codeheap::gc {

// Returns true if it handled the fault (see above, step 2). Runs in a signal handler: it must be
// async-signal-safe. `data` is FaultReporterOptions::claim_data.
using FaultClaim = bool (*)(int signal, siginfo_t* info, void* ucontext, void* data);

struct FaultReporterOptions {
  // Install the reporter (process-wide) and watch this runtime's heap.
  bool enabled = true;
  // Called first for every fault signal the reporter receives, with `claim_data`; may be null.
  FaultClaim claim = nullptr;
  void* claim_data = nullptr;
  // The alternate signal stack given to each attached thread (at least the system's
  // SIGSTKSZ).
  size_t alt_stack_bytes = size_t{64} << 10;
};

class FaultReporter {
 public:
  // Installs the handlers (once per process) and reports faults in `heap` until unwatch. Fails
  // if sigaction does, or if too many heaps (64) are watched at once. `heap` must stay alive
  // until unwatch returns.
  static llvm::Error watch(const Heap& heap, const FaultReporterOptions& options);
  // Stops reporting faults in `heap`; returns once no handler can still be reading it.
  static void unwatch(const Heap& heap);

  // Gives the calling thread an alternate signal stack of `bytes` (rounded up to the system's
  // minimum) unless it has one. Calls nest: detach_current_thread removes the stack installed
  // here when the last attach of the thread is undone (or when the thread exits).
  static llvm::Error attach_current_thread(size_t bytes);
  static void detach_current_thread();
};

}  // namespace codeheap::gc
