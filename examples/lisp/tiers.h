// The tier-up: a compile thread that recompiles hot baseline lambdas with LLVM and installs the
// result in their Template (tiers.cc, docs/tiers.md).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "examples/lisp/value.h"

namespace lisp {

class Runtime;
struct Unit;

class TierUp {
 public:
  // Starts the compile thread (registered with the collector and the code heap's threads).
  // At most `capacity` requests wait; more are dropped (those lambdas stay baseline).
  TierUp(Runtime& runtime, size_t capacity);
  // Stops the thread: the job being compiled finishes, pending ones are dropped.
  ~TierUp();
  TierUp(const TierUp&) = delete;
  TierUp& operator=(const TierUp&) = delete;

  // Queues `templ`'s lambda for the LLVM tier, once. Called by baseline code (lisp_tier_up),
  // on the Lisp thread. Never throws: a failure is logged and the lambda stays baseline.
  void request(Template* templ);
  // Tests: hold the queue (requests wait), and wait until the queue is empty and idle.
  void hold(bool on);
  void wait_idle();

 private:
  struct Job;
  void run();
  void compile(Job& job);

  Runtime& runtime_;
  const size_t capacity_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable idle_;
  std::deque<std::unique_ptr<Job>> queue_;
  std::unique_ptr<Unit> warm_up_;  // compiled, never installed, by the thread at its start
  bool stopping_ = false;
  bool held_ = false;
  bool busy_ = false;
  std::thread thread_;
};

}  // namespace lisp
