#include "gcglue/fault_reporter.h"

#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <mutex>
#include <string>

namespace codeheap::gc {
namespace {

constexpr int kSignals[] = {SIGSEGV, SIGBUS, SIGILL, SIGTRAP, SIGFPE};
constexpr size_t kMaxWatched = 64;
// A fault address this close to the stack pointer is a stack overflow (a push or a call hits the
// guard page, or a frame's store just below it).
constexpr uintptr_t kStackOverflowReach = uintptr_t{64} << 10;

llvm::Error make_error(const std::string& message) {
  return llvm::make_error<llvm::StringError>(message, llvm::inconvertibleErrorCode());
}

struct Watched {
  std::atomic<const Heap*> heap{nullptr};
  std::atomic<FaultClaim> claim{nullptr};
  std::atomic<void*> claim_data{nullptr};
};

// Read by the handler without a lock; written under g_mutex.
Watched g_watched[kMaxWatched];
// Handlers that may be reading a watched heap right now: unwatch waits until none is.
std::atomic<int> g_readers{0};
// The actions the reporter replaced, by index in kSignals; written before it is installed.
struct sigaction g_previous[std::size(kSignals)];
std::mutex g_mutex;  // guards installation and the slots of g_watched
bool g_installed = false;

int signal_index(int signal) {
  for (size_t i = 0; i < std::size(kSignals); ++i) {
    if (kSignals[i] == signal) return static_cast<int>(i);
  }
  return -1;
}

// Restores the default action and raises `signal` again: it is blocked while its handler runs,
// so it is delivered, and the process dies of it, as soon as the handler returns.
void die_of(int signal) {
  struct sigaction action = {};
  action.sa_handler = SIG_DFL;
  sigemptyset(&action.sa_mask);
  sigaction(signal, &action, nullptr);
  raise(signal);
}

// --- The report line, formatted by hand: snprintf is not async-signal-safe. ---

class Line {
 public:
  Line& text(const char* s) {
    while (*s != '\0' && size_ < sizeof buffer_) buffer_[size_++] = *s++;
    return *this;
  }
  Line& hex(uint64_t value) {
    char digits[16];
    int n = 0;
    do {
      digits[n++] = "0123456789abcdef"[value & 15];
      value >>= 4;
    } while (value != 0);
    text("0x");
    while (n > 0 && size_ < sizeof buffer_) buffer_[size_++] = digits[--n];
    return *this;
  }
  Line& dec(uint64_t value) {
    char digits[20];
    int n = 0;
    do {
      digits[n++] = static_cast<char>('0' + value % 10);
      value /= 10;
    } while (value != 0);
    while (n > 0 && size_ < sizeof buffer_) buffer_[size_++] = digits[--n];
    return *this;
  }
  // Writes the line (newline-terminated, truncated if need be) to stderr.
  void write_to_stderr() {
    if (size_ == sizeof buffer_) --size_;
    buffer_[size_++] = '\n';
    for (size_t done = 0; done < size_;) {
      const ssize_t n = ::write(STDERR_FILENO, buffer_ + done, size_ - done);
      if (n > 0) {
        done += static_cast<size_t>(n);
      } else if (n < 0 && errno != EINTR) {
        return;
      }
    }
  }

 private:
  char buffer_[1024];
  size_t size_ = 0;
};

const char* signal_name(int signal) {
  switch (signal) {
    case SIGSEGV:
      return "SIGSEGV (segmentation fault)";
    case SIGBUS:
      return "SIGBUS (bus error)";
    case SIGILL:
      return "SIGILL (illegal instruction)";
    case SIGTRAP:
      return "SIGTRAP (trace/breakpoint trap)";
    case SIGFPE:
      return "SIGFPE (arithmetic exception)";
  }
  return "signal";
}

// "function 'f'+0x4, live code block 0x...+0x12 of owner 'm' (#3), heap 'h'"
void describe_into(Line& line, const AddressInfo& info, uintptr_t address, const Heap& heap) {
  const char* state = "free";
  switch (info.state) {
    case AddressInfo::State::kLive:
      state = "live";
      break;
    case AddressInfo::State::kQuarantined:
      state = "quarantined (retired)";
      break;
    case AddressInfo::State::kReleased:
      state = "quarantined (released, trap-filled)";
      break;
    default:
      break;
  }
  if (info.function != 0) {
    line.text("function '").text(info.function_name).text("'+").hex(address - info.function);
    line.text(", ");
  }
  if (info.state == AddressInfo::State::kUntracked) {
    line.text(to_string(info.arena)).text(" memory");  // only code blocks are described
  } else if (!info.consistent) {
    line.text("a block of ").text(to_string(info.arena)).text(" memory changing too fast to ");
    line.text("describe");
  } else if (info.block == 0) {
    line.text(state).text(" ").text(to_string(info.arena)).text(" memory");
  } else {
    if (info.former) {
      line.text("free ").text(to_string(info.arena)).text(" memory, last used by block ");
    } else {
      line.text(state).text(" ").text(to_string(info.arena)).text(" block ");
    }
    line.hex(info.block).text("+").hex(address - info.block);
    if (info.owner != kNoOwner) {
      line.text(" of owner '").text(info.owner_name).text("' (#").dec(info.owner).text(")");
    }
  }
  line.text(", heap '").text(heap.options().name.c_str()).text("'");
}

// The heap of `address` among the watched ones, with `info` filled; null if none.
const Heap* find(uintptr_t address, AddressInfo& info) {
  for (Watched& watched : g_watched) {
    const Heap* heap = watched.heap.load(std::memory_order_seq_cst);
    if (heap != nullptr && heap->describe(address, info)) return heap;
  }
  return nullptr;
}

// Writes the report if the fault is in a watched heap; false if it is not.
bool report(int signal, const siginfo_t* info, const ucontext_t* context) {
  const uintptr_t pc = static_cast<uintptr_t>(context->uc_mcontext.gregs[REG_RIP]);
  const uintptr_t sp = static_cast<uintptr_t>(context->uc_mcontext.gregs[REG_RSP]);
  // int3 traps after it executed: the pc is one past it, maybe past the block's end.
  const uintptr_t code = signal == SIGTRAP ? pc - 1 : pc;
  const uintptr_t address =
      signal == SIGSEGV || signal == SIGBUS ? reinterpret_cast<uintptr_t>(info->si_addr) : 0;
  AddressInfo at_code, at_address;
  const Heap* code_heap = find(code, at_code);
  const Heap* address_heap = address != 0 ? find(address, at_address) : nullptr;
  if (code_heap == nullptr && address_heap == nullptr) return false;

  Line line;
  line.text("codeheap: fatal ").text(signal_name(signal));
  if (code_heap != nullptr) {
    line.text(" in JIT code at ").hex(code).text(": ");
    describe_into(line, at_code, code, *code_heap);
  } else {
    line.text(" at pc ").hex(pc).text(" (not JIT code)");
  }
  if (address != 0) {
    line.text("; fault address ").hex(address);
    if (address_heap != nullptr) {
      line.text(": ");
      describe_into(line, at_address, address, *address_heap);
    } else if (address + kStackOverflowReach > sp && address < sp + kStackOverflowReach) {
      line.text(", next to the stack pointer ").hex(sp).text(": stack overflow");
    }
  }
  line.text("; pid ").dec(static_cast<uint64_t>(getpid()));
  line.text(", thread ").dec(static_cast<uint64_t>(syscall(SYS_gettid)));
  line.write_to_stderr();
  return true;
}

// Passes the signal on to the action the reporter replaced, as the kernel would have.
void chain(int signal, siginfo_t* info, void* context) {
  const int index = signal_index(signal);
  if (index < 0) return;
  const struct sigaction& previous = g_previous[index];
  const bool sent = info == nullptr || info->si_code <= 0;  // kill, raise, sigqueue: no fault
  if (previous.sa_flags & SA_SIGINFO) {
    if (previous.sa_sigaction != nullptr) previous.sa_sigaction(signal, info, context);
  } else if (previous.sa_handler == SIG_IGN && sent) {
    // Ignored, as asked. (The kernel never ignores a fault, which would only recur.)
  } else if (previous.sa_handler == SIG_DFL || previous.sa_handler == SIG_IGN) {
    die_of(signal);
  } else {
    previous.sa_handler(signal);
  }
}

void on_fault(int signal, siginfo_t* info, void* context) {
  const int saved_errno = errno;
  for (Watched& watched : g_watched) {
    const FaultClaim claim = watched.claim.load(std::memory_order_acquire);
    if (claim != nullptr &&
        claim(signal, info, context, watched.claim_data.load(std::memory_order_relaxed))) {
      errno = saved_errno;
      return;
    }
  }
  bool reported = false;
  if (info != nullptr && info->si_code > 0) {
    g_readers.fetch_add(1, std::memory_order_seq_cst);
    reported = report(signal, info, static_cast<const ucontext_t*>(context));
    g_readers.fetch_sub(1, std::memory_order_seq_cst);
  }
  if (reported) {
    die_of(signal);
  } else {
    chain(signal, info, context);
  }
  errno = saved_errno;
}

// Once per process, under g_mutex.
llvm::Error install() {
  if (g_installed) return llvm::Error::success();
  // The previous actions first, so that the handler never runs without them.
  for (size_t i = 0; i < std::size(kSignals); ++i) {
    if (sigaction(kSignals[i], nullptr, &g_previous[i]) != 0) {
      return make_error(std::string("fault reporter: sigaction: ") + std::strerror(errno));
    }
  }
  struct sigaction action = {};
  action.sa_sigaction = &on_fault;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&action.sa_mask);
  for (size_t i = 0; i < std::size(kSignals); ++i) {
    if (sigaction(kSignals[i], &action, nullptr) != 0) {
      const int error = errno;
      for (size_t j = 0; j < i; ++j) sigaction(kSignals[j], &g_previous[j], nullptr);
      return make_error(std::string("fault reporter: sigaction: ") + std::strerror(error));
    }
  }
  g_installed = true;
  return llvm::Error::success();
}

// The alternate signal stack a thread got from attach_current_thread; removed when the last
// attach is undone or the thread exits.
class AltStack {
 public:
  ~AltStack() { remove(); }

  llvm::Error attach(size_t bytes) {
    if (attached_++ > 0) return llvm::Error::success();
    stack_t current;
    if (sigaltstack(nullptr, &current) != 0) {
      --attached_;
      return make_error(std::string("fault reporter: sigaltstack: ") + std::strerror(errno));
    }
    if (!(current.ss_flags & SS_DISABLE)) return llvm::Error::success();  // the thread has one
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const long minimum = sysconf(_SC_SIGSTKSZ);
    bytes = std::max(bytes, static_cast<size_t>(minimum > 0 ? minimum : SIGSTKSZ));
    bytes = (bytes + page - 1) / page * page;
    // A guard page below, so that a handler overflowing it faults instead of writing over
    // whatever lies there.
    void* mapping = mmap(nullptr, bytes + page, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (mapping == MAP_FAILED || mprotect(mapping, page, PROT_NONE) != 0) {
      const int error = errno;
      if (mapping != MAP_FAILED) munmap(mapping, bytes + page);
      --attached_;
      return make_error(std::string("fault reporter: cannot map an alternate signal stack: ") +
                        std::strerror(error));
    }
    stack_t stack = {};
    stack.ss_sp = static_cast<char*>(mapping) + page;
    stack.ss_size = bytes;
    if (sigaltstack(&stack, nullptr) != 0) {
      const int error = errno;
      munmap(mapping, bytes + page);
      --attached_;
      return make_error(std::string("fault reporter: sigaltstack: ") + std::strerror(error));
    }
    mapping_ = mapping;
    mapping_bytes_ = bytes + page;
    stack_ = stack.ss_sp;
    return llvm::Error::success();
  }

  void detach() {
    if (attached_ > 0 && --attached_ == 0) remove();
  }

 private:
  void remove() {
    if (mapping_ == nullptr) return;
    stack_t current;
    if (sigaltstack(nullptr, &current) == 0 && current.ss_sp == stack_) {
      if (current.ss_flags & SS_ONSTACK) return;  // cannot happen outside a handler; keep it
      stack_t off = {};
      off.ss_flags = SS_DISABLE;
      sigaltstack(&off, nullptr);
    }
    munmap(mapping_, mapping_bytes_);
    mapping_ = nullptr;
  }

  int attached_ = 0;
  void* mapping_ = nullptr;  // null if the thread had a stack of its own
  size_t mapping_bytes_ = 0;
  void* stack_ = nullptr;
};

thread_local AltStack t_alt_stack;

}  // namespace

llvm::Error FaultReporter::watch(const Heap& heap, const FaultReporterOptions& options) {
  std::lock_guard lock(g_mutex);
  if (llvm::Error err = install()) return err;
  for (Watched& watched : g_watched) {
    if (watched.heap.load(std::memory_order_relaxed) != nullptr) continue;
    watched.claim_data.store(options.claim_data, std::memory_order_relaxed);
    watched.claim.store(options.claim, std::memory_order_release);
    watched.heap.store(&heap, std::memory_order_seq_cst);
    return llvm::Error::success();
  }
  return make_error("fault reporter: " + std::to_string(kMaxWatched) +
                    " heaps are watched already; heap '" + heap.options().name +
                    "' is not (its faults are not reported)");
}

void FaultReporter::unwatch(const Heap& heap) {
  std::lock_guard lock(g_mutex);
  for (Watched& watched : g_watched) {
    if (watched.heap.load(std::memory_order_relaxed) != &heap) continue;
    watched.heap.store(nullptr, std::memory_order_seq_cst);
    watched.claim.store(nullptr, std::memory_order_release);
    watched.claim_data.store(nullptr, std::memory_order_relaxed);
  }
  // A handler that loaded `heap` before the store above is counted in g_readers: wait for it.
  while (g_readers.load(std::memory_order_seq_cst) != 0) sched_yield();
}

llvm::Error FaultReporter::attach_current_thread(size_t bytes) { return t_alt_stack.attach(bytes); }

void FaultReporter::detach_current_thread() { t_alt_stack.detach(); }

}  // namespace codeheap::gc
