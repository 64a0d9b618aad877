// The benchmark binaries' shared main: every operation is written once, as a Workload, and runs
// in two modes.
//
//   Google Benchmark (the default): all flags are Google Benchmark's, plus --smoke (below).
//   Fixed iterations: `--run=NAME --iterations=N [--warmup=W]` builds workload NAME, runs W
//     untimed operations, then exactly N, prints one JSON line (wall time, peak RSS, lines of
//     /proc/self/maps) and exits. bench/run.sh runs it under `strace -c` (system calls per
//     operation: an N-iteration run minus a 0-iteration run of the same setup and warm-up) and
//     for the memory figures of long churn runs, which must not depend on how many iterations
//     Google Benchmark happens to choose.
//
// --smoke tells workloads with a fixed amount of work (e.g. the fragmentation run) to do a
// small fraction of it, so tests can check that every benchmark still runs in seconds.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include <benchmark/benchmark.h>

namespace codeheap::bench {

// One benchmarked operation and the state it runs in.
class Workload {
 public:
  virtual ~Workload() = default;
  // Untimed, before each run(): makes what the next `count` operations consume (fresh
  // LinkGraphs, pre-linked bodies, ...), so that only the operation itself is measured.
  virtual void prepare(size_t count) { (void)count; }
  // Timed: performs `count` operations. Periodic costs that belong to the operation (a reclaim
  // pass every so many deallocations) are paid in here, so they are amortized into the time.
  virtual void run(size_t count) = 0;
  // After the last timed run() of a Google Benchmark repetition: lets a workload that measures
  // something of its own report it as counters.
  virtual void report(benchmark::State& state) { (void)state; }
};

// Ours and a baseline timed in alternation, each on this thread's CPU clock: per round,
// `ours_per_round` operations of ours, then `baseline_per_round` of the baseline. When a ratio is
// the target and this machine's drift between two separately measured benchmarks is as large as
// the margin (the end-to-end cycle; the baseline's system calls, whose cost moves with the other
// tenants of the host), spells of load hit both sides of a round alike, so the ratio of the two
// sums is steady where the ratio of two medians is not. One run() operation is one round.
// Counters: ours_us and stock_us per operation of each side, and speedup = baseline time per
// operation / ours (above 1: ours faster).
class Alternating final : public Workload {
 public:
  struct Side {
    std::unique_ptr<Workload> workload;
    size_t per_round;
  };
  // Both sides run `warmup` operations here, untimed: the harness's warm-up goes through run().
  Alternating(Side ours, Side baseline, size_t warmup);

  void run(size_t rounds) override;
  void report(benchmark::State& state) override;

 private:
  Side ours_;
  Side baseline_;
  double ours_ns_ = 0;
  double baseline_ns_ = 0;
  size_t rounds_ = 0;
};

struct WorkloadSpec {
  std::string name;
  std::function<std::unique_ptr<Workload>()> make;
  // Operations per run() call: many for nanosecond operations, so that the benchmark loop and
  // prepare() cost nothing per operation.
  size_t batch = 1;
  // Whether prepare() does anything; only then is the timer paused around it.
  bool prepared = false;
  // Untimed operations before measuring, in both modes (fixed mode: unless --warmup is given):
  // first-touch page faults and one-off reservations are not steady state.
  size_t warmup = 0;
};

// Registers `spec` for both modes; returns the Google Benchmark for further settings (unit, ...).
benchmark::internal::Benchmark* add(WorkloadSpec spec);

// True under --smoke.
bool smoke();

// Prints `what` and exits with status 1: benchmarks have nobody to return errors to, and a
// silently skipped operation would make the numbers lie.
[[noreturn]] void die(const std::string& what);

// The benchmark binaries' main().
int main(int argc, char** argv);

}  // namespace codeheap::bench
