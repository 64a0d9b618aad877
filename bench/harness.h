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
