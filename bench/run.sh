#!/usr/bin/env bash
# Builds the benchmarks optimised, runs them all, prints one table of ratios and writes it, with a
# description of the machine, to docs/benchmarks.md (issue 6). Takes about 10-15 minutes, most of
# it the two 100,000-cycle end-to-end runs. Run it on a quiet machine: other builds on the same
# cores show up as noise (the report records the load average).
#
#   bench/run.sh [RESULTS_DIR]     raw results go to RESULTS_DIR (default: a new temporary one)
set -euo pipefail
cd "$(dirname "$0")/.."

# Repetitions of each Google Benchmark, run in random order across a binary's benchmarks (so a
# baseline and ours see the same spells of load on a shared machine); the report uses the median.
REPETITIONS=11
# Fixed-iteration runs counted under strace (each also runs once with 0 iterations).
ALLOCATION_OPS=10000
E2E_SYSCALL_CYCLES=200
# Cycles of the end-to-end runs that measure peak RSS and /proc/self/maps.
E2E_LONG_CYCLES=100000

# strace counts the system calls; install it the way ./bazelw installs the build's packages.
if ! command -v strace >/dev/null 2>&1; then
  echo "run.sh: installing strace" >&2
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      echo "run.sh: need root (or password-less sudo) to install strace" >&2
      exit 2
    fi
  fi
  log=$(mktemp)
  if ! { DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -q &&
         DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q strace; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "run.sh: installing strace failed (full log: $log)" >&2
    exit 2
  fi
  rm -f "$log"
fi

results=${1:-$(mktemp -d -t codeheap-bench.XXXXXX)}
mkdir -p "$results/strace" "$results/fixed"
echo "run.sh: raw results in $results" >&2

./bazelw build --config=opt //bench:all
bin="$(./bazelw info --config=opt bazel-bin 2>/dev/null)/bench"
# The optimisation flags the compiler really got, in order (a later -O overrides an earlier one).
flags=$(./bazelw aquery --config=opt 'mnemonic("CppCompile", //bench:harness)' --output=text 2>/dev/null |
        awk '/Command Line:/ { on = 1; next }
             on && /^ *(-O[0-9sg]?|-g[0-9]?|-DNDEBUG) \\$/ { printf "%s%s", sep, $1; sep = " " }
             on && /\)$/ { exit }')

# Measure the default configuration: no perf map, GDB registration, stats dump or debug logging.
unset CODEHEAP_PERF_MAP CODEHEAP_GDB_JIT CODEHEAP_STATS SPDLOG_LEVEL

load=$(cut -d' ' -f1 /proc/loadavg)
if awk -v load="$load" -v cores="$(nproc)" 'BEGIN { exit !(load > cores / 2) }'; then
  echo "run.sh: warning: load average $load on $(nproc) cores; expect noisy numbers" >&2
fi

for binary in memory_manager_bench end_to_end_bench fragmentation_bench hot_swap_bench \
              gc_churn_bench; do
  echo "run.sh: $binary" >&2
  "$bin/$binary" --benchmark_repetitions="$REPETITIONS" --benchmark_enable_random_interleaving=true \
    --benchmark_report_aggregates_only=true \
    --benchmark_out="$results/$binary.json" --benchmark_out_format=json >"$results/$binary.txt"
done

# System calls per operation: N iterations minus 0 iterations, same setup and warm-up.
count_syscalls() {  # binary workload iterations
  local slug=${2//\//\~}
  for n in 0 "$3"; do
    strace -f -c -o "$results/strace/$slug@$n.txt" \
      -e trace=mmap,mprotect,munmap,madvise,fallocate \
      "$bin/$1" --run="$2" --iterations="$n" >/dev/null
  done
}
echo "run.sh: counting system calls" >&2
for workload in $("$bin/memory_manager_bench" --benchmark_list_tests); do
  count_syscalls memory_manager_bench "$workload" "$ALLOCATION_OPS"
done
for workload in e2e/engine e2e/stock_lljit; do
  count_syscalls end_to_end_bench "$workload" "$E2E_SYSCALL_CYCLES"
done

for workload in e2e/engine e2e/stock_lljit; do
  echo "run.sh: $E2E_LONG_CYCLES cycles of $workload" >&2
  "$bin/end_to_end_bench" --run="$workload" --iterations="$E2E_LONG_CYCLES" --warmup=0 \
    >"$results/fixed/${workload//\//\~}.json"
done

python3 bench/report.py --results "$results" --output docs/benchmarks.md --compile-flags "$flags"
echo "run.sh: wrote docs/benchmarks.md" >&2
