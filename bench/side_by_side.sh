#!/usr/bin/env bash
# Times the JITLink allocation benchmarks of two commits side by side: builds each commit's
# memory_manager_bench (--config=opt) in a git worktree, then runs the two binaries in turn, ROUNDS
# times, so both share the machine's spells of load, and prints each ratio's median over the
# rounds. Use it to tell whether a change moved the allocation ratios: two runs of bench/run.sh
# on different days compare machines as much as code, and each process draws once where the
# graph's blocks land in LLVM's section hash sets (ASLR moves them), which our time feels
# (docs/performance-notes.md, "Issue 16's benchmark bar").
#
#   bench/side_by_side.sh OLD NEW [ROUNDS] [FILTER]
#
# ROUNDS defaults to 9; FILTER (a --benchmark_filter regex) to the small and 16 KiB mixed shapes.
# Builds share one Bazel output base ($CODEHEAP_SIDE_BY_SIDE_CACHE, default
# ~/.cache/codeheap-side-by-side), so the second commit rebuilds only what differs.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -lt 2 ]]; then
  sed -n '10p' "$0" | sed 's/^# *//' >&2
  exit 2
fi
old=$(git rev-parse --short "$1")
new=$(git rev-parse --short "$2")
rounds=${3:-9}
filter=${4:-'jitlink/(small|mixed16k)/(codeheap|InProcessMemoryManager|alternating)$'}
cache=${CODEHEAP_SIDE_BY_SIDE_CACHE:-$HOME/.cache/codeheap-side-by-side}

work=$(mktemp -d -t codeheap-side-by-side.XXXXXX)
cleanup() {
  for commit in "$old" "$new"; do
    git worktree remove --force "$work/tree-$commit" 2>/dev/null || true
  done
}
trap cleanup EXIT
echo "side_by_side.sh: binaries and results in $work" >&2

for commit in "$old" "$new"; do
  git worktree add --detach "$work/tree-$commit" "$commit" >/dev/null
  (cd "$work/tree-$commit" &&
   ./bazelw --output_base="$cache" build --config=opt //bench:memory_manager_bench &&
   cp "$(./bazelw --output_base="$cache" info --config=opt bazel-bin 2>/dev/null)/bench/memory_manager_bench" \
     "$work/bench-$commit")
done

for round in $(seq "$rounds"); do
  for commit in "$old" "$new"; do
    echo "side_by_side.sh: round $round of $rounds, $commit" >&2
    "$work/bench-$commit" --benchmark_filter="$filter" --benchmark_repetitions=3 \
      --benchmark_report_aggregates_only=true --benchmark_out_format=json \
      --benchmark_out="$work/$commit-$round.json" >/dev/null
  done
done

python3 - "$work" "$rounds" "$old" "$new" <<'EOF'
import glob, json, statistics, sys
from collections import defaultdict

work, rounds, commits = sys.argv[1], sys.argv[2], sys.argv[3:]
# figures[commit][(shape, what)] = one value per round
figures = {c: defaultdict(list) for c in commits}
for commit in commits:
    for path in sorted(glob.glob(f"{work}/{commit}-*.json")):
        medians = {b["run_name"]: b for b in json.load(open(path))["benchmarks"]
                   if b.get("aggregate_name") == "median"}
        for name, b in medians.items():
            _, shape, manager = name.split("/")
            if manager == "codeheap":
                figures[commit][(shape, "ours, ns")].append(b["cpu_time"])
                stock = medians.get(f"jitlink/{shape}/InProcessMemoryManager")
                if stock:
                    figures[commit][(shape, "apart, x faster")].append(
                        stock["cpu_time"] / b["cpu_time"])
            elif manager == "alternating":
                figures[commit][(shape, "alternating, x faster")].append(b["speedup"])

def cell(values):
    if len(values) < 2:
        return f"{values[0]:.1f}" if values else "-"
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return f"{statistics.median(values):.1f} ({q1:.1f}-{q3:.1f})"

print(f"| shape | figure | {commits[0]} | {commits[1]} | {commits[1]} / {commits[0]} |")
print("|---|---|---|---|---|")
for key in sorted(figures[commits[0]]):
    a, b = figures[commits[0]][key], figures[commits[1]].get(key, [])
    change = f"{statistics.median(b) / statistics.median(a):.3f}" if a and b else "-"
    print(f"| {key[0]} | {key[1]} | {cell(a)} | {cell(b)} | {change} |")
print(f"\nMedian over {rounds} rounds (quartiles in brackets); each round's figure is the median "
      "of 3 repetitions.")
EOF
