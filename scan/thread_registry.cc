#include "scan/thread_registry.h"

#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <utility>

#include "codeheap/log.h"

namespace codeheap::scan {
namespace {

// getcontext may return twice, like setjmp: kept out of scan() so that none of scan's locals is
// live across it (gcc -Wextra: "might be clobbered by longjmp").
[[gnu::noinline]] bool capture_context(ucontext_t& context) { return getcontext(&context) == 0; }

int default_signal() {
#if defined(__SANITIZE_THREAD__)
  return SIGSYS;  // see ScanOptions::signal
#else
  return SIGRTMIN + 6;
#endif
}

llvm::Error make_error(const std::string& message) {
  return llvm::make_error<llvm::StringError>(message, llvm::inconvertibleErrorCode());
}

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

}  // namespace

struct ThreadRegistry::Record {
  pthread_t thread;
  pid_t tid;
  uintptr_t stack_high;  // one past the highest stack address
};

// What one handshake asks of one thread. Lives until the target acknowledged; abandoned (never
// freed) when the target times out, because its handler may still run later.
struct HandshakeRequest {
  const AddressRange* ranges = nullptr;
  size_t count = 0;
  pid_t target = 0;  // a late signal reaching another thread must not use this request
  uintptr_t stack_high = 0;
  std::atomic<uint8_t>* hits = nullptr;  // per range
  std::atomic<size_t> words{0};
  std::atomic<bool> done{false};
  sem_t ack;
};

namespace {

// The handshake in flight (one at a time in the whole process: scans of all registries share
// one signal handler).
std::atomic<HandshakeRequest*> g_request{nullptr};
std::mutex g_scan_mutex;

// The calling thread as run_pass found it: where a scan inside the pass reads it from.
struct CallerContext {
  const ThreadRegistry* registry;
  ucontext_t context;
};
thread_local const CallerContext* t_caller = nullptr;

// Marks the ranges containing `word`, if any. `ranges` is sorted and disjoint, and a range
// contains its end (AddressRange): a word equal to the end of one range and the begin of the
// next marks both. Runs in the scan signal handler, which may interrupt a sanitizer's runtime
// while it holds a lock of its own: uninstrumented and inlined into its callers, so the handler
// never calls back into it.
__attribute__((no_sanitize("address", "thread"), always_inline)) inline void mark(
    const AddressRange* ranges, size_t count, std::atomic<uint8_t>* hits, uintptr_t word) {
  // The first range that does not end below `word` (the ends are sorted too).
  size_t lo = 0, hi = count;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (ranges[mid].end < word) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  if (lo == count || word < ranges[lo].begin) return;
  hits[lo].store(1, std::memory_order_relaxed);
  if (word == ranges[lo].end && lo + 1 < count && ranges[lo + 1].begin == word) {
    hits[lo + 1].store(1, std::memory_order_relaxed);
  }
}

// Reads another frame's stack words, including ASan redzones, like any conservative scanner.
__attribute__((no_sanitize("address", "thread"))) size_t scan_words(uintptr_t low, uintptr_t high,
                                                                    const AddressRange* ranges,
                                                                    size_t count,
                                                                    std::atomic<uint8_t>* hits) {
  low &= ~uintptr_t(sizeof(uintptr_t) - 1);
  size_t n = 0;
  for (uintptr_t p = low; p + sizeof(uintptr_t) <= high; p += sizeof(uintptr_t), ++n) {
    mark(ranges, count, hits, *reinterpret_cast<const uintptr_t*>(p));
  }
  return n;
}

// A thread's registers, then its stack from the stack pointer they hold up to `stack_high`
// (below the stack pointer lies only the x86-64 red zone, leaf data, never a return address).
// Returns the stack words read.
__attribute__((no_sanitize("address", "thread"))) size_t scan_thread(const ucontext_t* uc,
                                                                     uintptr_t stack_high,
                                                                     const AddressRange* ranges,
                                                                     size_t count,
                                                                     std::atomic<uint8_t>* hits) {
  for (int i = 0; i < NGREG; ++i) mark(ranges, count, hits, uintptr_t(uc->uc_mcontext.gregs[i]));
  return scan_words(uintptr_t(uc->uc_mcontext.gregs[REG_RSP]), stack_high, ranges, count, hits);
}

}  // namespace

// Runs in the interrupted thread. Async-signal-safe: atomics, memory reads, sem_post.
static void handshake_handler(int sig, siginfo_t* info, void* context) {
  int saved_errno = errno;
  if (info->si_code != SI_TKILL || info->si_pid != getpid()) {
    // Not sent by a scan. A real-time signal is dropped; SIGSYS (seccomp) gets its default.
    if (sig == SIGSYS) {
      signal(SIGSYS, SIG_DFL);
      raise(SIGSYS);
    }
    errno = saved_errno;
    return;
  }
  HandshakeRequest* r = g_request.load(std::memory_order_acquire);
  if (r != nullptr && r->target == pid_t(syscall(SYS_gettid)) &&
      !r->done.load(std::memory_order_acquire)) {
    r->words.store(scan_thread(static_cast<const ucontext_t*>(context), r->stack_high, r->ranges,
                               r->count, r->hits),
                   std::memory_order_relaxed);
    r->done.store(true, std::memory_order_release);
    sem_post(&r->ack);
  }
  errno = saved_errno;
}

ThreadRegistry::ThreadRegistry(ScanOptions options) : options_(options) {}

ThreadRegistry::~ThreadRegistry() = default;

llvm::Expected<std::unique_ptr<ThreadRegistry>> ThreadRegistry::create(ScanOptions options) {
  if (options.signal == 0) options.signal = default_signal();
  if ((options.signal < SIGRTMIN || options.signal > SIGRTMAX) && options.signal != SIGSYS) {
    return make_error("thread registry: handshake signal " + std::to_string(options.signal) +
                      " is neither a real-time signal (SIGRTMIN..SIGRTMAX) nor SIGSYS");
  }
  if (options.ack_timeout.count() <= 0) {
    return make_error("thread registry: ack_timeout must be positive");
  }
  struct sigaction current;
  if (sigaction(options.signal, nullptr, &current) != 0) {
    return make_error(std::string("thread registry: sigaction: ") + strerror(errno));
  }
  bool ours = (current.sa_flags & SA_SIGINFO) && current.sa_sigaction == &handshake_handler;
  bool free_slot = !(current.sa_flags & SA_SIGINFO) && current.sa_handler == SIG_DFL;
  if (!ours && !free_slot) {
    return make_error("thread registry: signal " + std::to_string(options.signal) +
                      " already has a handler; choose another with ScanOptions::signal");
  }
  if (!ours) {
    struct sigaction action = {};
    action.sa_sigaction = &handshake_handler;
    action.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&action.sa_mask);
    if (sigaction(options.signal, &action, nullptr) != 0) {
      return make_error(std::string("thread registry: sigaction: ") + strerror(errno));
    }
  }
  return std::unique_ptr<ThreadRegistry>(new ThreadRegistry(options));
}

llvm::Error ThreadRegistry::register_current_thread() {
  pthread_attr_t attr;
  if (int rc = pthread_getattr_np(pthread_self(), &attr); rc != 0) {
    return make_error(std::string("thread registry: pthread_getattr_np: ") + strerror(rc));
  }
  void* stack_low = nullptr;
  size_t stack_size = 0;
  int rc = pthread_attr_getstack(&attr, &stack_low, &stack_size);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    return make_error(std::string("thread registry: pthread_attr_getstack: ") + strerror(rc));
  }
  std::lock_guard lock(mutex_);
  for (auto& record : records_) {
    if (pthread_equal(record->thread, pthread_self())) {
      return make_error("thread registry: thread is already registered");
    }
  }
  records_.push_back(
      std::make_unique<Record>(Record{pthread_self(), pid_t(syscall(SYS_gettid)),
                                      reinterpret_cast<uintptr_t>(stack_low) + stack_size}));
  codeheap::logger("scan")->debug("registered thread {} (stack top {:#x})", records_.back()->tid,
                                  records_.back()->stack_high);
  return llvm::Error::success();
}

llvm::Error ThreadRegistry::unregister_current_thread() {
  std::lock_guard lock(mutex_);
  auto it = std::find_if(records_.begin(), records_.end(), [](const auto& record) {
    return pthread_equal(record->thread, pthread_self());
  });
  if (it == records_.end()) {
    return make_error("thread registry: thread is not registered");
  }
  records_.erase(it);
  return llvm::Error::success();
}

bool ThreadRegistry::is_current_thread_registered() const {
  std::lock_guard lock(mutex_);
  return std::any_of(records_.begin(), records_.end(), [](const auto& record) {
    return pthread_equal(record->thread, pthread_self());
  });
}

size_t ThreadRegistry::registered_threads() const {
  std::lock_guard lock(mutex_);
  return records_.size();
}

// Not inlined, so that `caller` lies in this frame, above the frames of the pass.
__attribute__((noinline)) void ThreadRegistry::run_pass(const std::function<void()>& pass) {
  CallerContext caller{this, {}};  // zeroed: getcontext leaves most of it unwritten, and it is
                                   // scanned with this frame
  if (getcontext(&caller.context) != 0) {
    // Without the registers the caller is read from scan's own frame up (see scan).
    pass();
    return;
  }
  struct Restore {
    const CallerContext* outer;
    ~Restore() { t_caller = outer; }  // also if the pass throws
  } restore{std::exchange(t_caller, &caller)};
  pass();
}

ScanReport ThreadRegistry::scan(std::span<const AddressRange> input,
                                std::span<uint8_t> referenced) {
  const uint64_t start = now_ns();
  ScanReport report;
  const auto by_address = [](const AddressRange& a, const AddressRange& b) {
    return a.begin < b.begin;
  };
  if (referenced.size() != input.size() ||
      !std::is_sorted(input.begin(), input.end(), by_address)) {
    codeheap::logger("scan")->error("scan: {} ranges, {} results, {}: keeping every range",
                                    input.size(), referenced.size(),
                                    "ranges must be sorted with one result each");
    std::fill(referenced.begin(), referenced.end(), 1);
    return report;
  }
  // A copy of the ranges and hit flags, shared with the handlers. Heap-allocated so that a
  // timed-out handshake can abandon them to a handler that may still run.
  struct Buffers {
    std::vector<AddressRange> ranges;
    std::unique_ptr<std::atomic<uint8_t>[]> hits;
  };
  auto buffers = std::make_unique<Buffers>();
  buffers->ranges.assign(input.begin(), input.end());
  buffers->hits.reset(new std::atomic<uint8_t>[input.size() + 1]);
  const std::vector<AddressRange>& ranges = buffers->ranges;
  std::atomic<uint8_t>* hits = buffers->hits.get();
  for (size_t i = 0; i < ranges.size(); ++i) hits[i].store(0, std::memory_order_relaxed);
  bool all_referenced = false;

  std::lock_guard scan_lock(g_scan_mutex);
  std::lock_guard lock(mutex_);
  const pthread_t self = pthread_self();

  for (auto& record : records_) {
    if (all_referenced) break;
    if (pthread_equal(record->thread, self)) {
      // A thread cannot interrupt itself: it reads its own stack, from where run_pass found it
      // if it is inside one, else from here (this frame and the scan's, which hold no
      // quarantined address but may hold stale copies of one, are then read too).
      ucontext_t here{};  // zeroed: what getcontext leaves unwritten is scanned too
      const ucontext_t* context = nullptr;
      if (t_caller != nullptr && t_caller->registry == this) {
        context = &t_caller->context;
      } else if (capture_context(here)) {
        context = &here;
      }
      if (context == nullptr) {
        all_referenced = true;  // cannot read itself: keep everything
        continue;
      }
      report.stack_words_scanned +=
          scan_thread(context, record->stack_high, ranges.data(), ranges.size(), hits);
      ++report.threads_scanned;
      continue;
    }
    auto request = std::make_unique<HandshakeRequest>();
    request->ranges = ranges.data();
    request->count = ranges.size();
    request->target = record->tid;
    request->stack_high = record->stack_high;
    request->hits = hits;
    sem_init(&request->ack, 0, 0);
    g_request.store(request.get(), std::memory_order_release);

    // tgkill rather than pthread_kill: a thread that exited without unregistering gives ESRCH
    // instead of undefined behaviour.
    if (syscall(SYS_tgkill, getpid(), record->tid, options_.signal) != 0) {
      codeheap::logger("scan")->warn("thread {} is gone without unregistering; skipped",
                                     record->tid);
      g_request.store(nullptr, std::memory_order_release);
      sem_destroy(&request->ack);
      continue;
    }
    timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    auto timeout = options_.ack_timeout;
    deadline.tv_sec += timeout.count() / 1000;
    deadline.tv_nsec += (timeout.count() % 1000) * 1000000;
    if (deadline.tv_nsec >= 1000000000) {
      deadline.tv_sec += 1;
      deadline.tv_nsec -= 1000000000;
    }
    bool acked = false;
    while (!acked) {
      if (sem_timedwait(&request->ack, &deadline) == 0) {
        acked = request->done.load(std::memory_order_acquire);
      } else if (errno != EINTR) {
        break;
      }
    }
    g_request.store(nullptr, std::memory_order_release);
    if (acked) {
      report.stack_words_scanned += request->words.load(std::memory_order_relaxed);
      ++report.threads_scanned;
      sem_destroy(&request->ack);
    } else {
      // The handler may still run later and touch the request and the hit array: leak both.
      ++report.threads_timed_out;
      all_referenced = true;
      request.release();
      buffers.release();
      codeheap::logger("scan")->warn(
          "thread {} did not acknowledge the scan signal within {} ms; keeping all {} ranges "
          "quarantined",
          record->tid, timeout.count(), ranges.size());
    }
  }

  for (size_t i = 0; i < ranges.size(); ++i) {
    referenced[i] = all_referenced || hits[i].load(std::memory_order_relaxed) != 0;
  }
  report.duration_ns = now_ns() - start;
  return report;
}

}  // namespace codeheap::scan
