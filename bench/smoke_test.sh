#!/usr/bin/env bash
# //tests:bench_smoke_test: the benchmarks cannot rot unnoticed. Every benchmark binary runs
# briefly (--smoke, --benchmark_min_time=0.01) and exits 0, the fixed-iteration mode that
# bench/run.sh relies on works, and bench/report.py builds its table from the results, which
# fails if any benchmark it reports on is missing. No timing is checked.
#
# Arguments: report.py, then the benchmark binaries.
set -euo pipefail

report=$1
shift
out=${TEST_TMPDIR:-$(mktemp -d)}
mkdir -p "$out/fixed"

for binary in "$@"; do
  name=$(basename "$binary")
  if ! "$binary" --smoke --benchmark_min_time=0.01 --benchmark_out="$out/$name.json" \
         --benchmark_out_format=json >"$out/$name.txt" 2>&1; then
    cat "$out/$name.txt"
    echo "FAIL: $name exited with an error" >&2
    exit 1
  fi
  if [[ $name == end_to_end_bench ]]; then
    for workload in e2e/engine e2e/stock_lljit; do
      line=$("$binary" --run="$workload" --iterations=3 --warmup=0)
      if [[ $line != *"\"iterations\": 3,"*"\"maps_lines\": "* ]]; then
        echo "FAIL: fixed-iteration mode of $workload printed: $line" >&2
        exit 1
      fi
      echo "$line" >"$out/fixed/${workload//\//\~}.json"
    done
  fi
done

python3 "$report" --results "$out" --output "$out/benchmarks.md" >"$out/table.txt"
for area in "1 Allocation" "2 End to end" "3 Fragmentation" "4 Hot-swap" "5 GC churn"; do
  if ! grep -q "| $area |" "$out/benchmarks.md"; then
    cat "$out/table.txt"
    echo "FAIL: no '$area' rows in the report" >&2
    exit 1
  fi
done
echo "PASS"
