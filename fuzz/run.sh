#!/usr/bin/env bash
# Runs each libFuzzer target for SECONDS (default 120) and prints one summary line per run.
#
#   fuzz/run.sh [SECONDS] [TARGET...]     TARGET: heap capi lisp_compile lisp_compile_llvm lisp_eval
#
# Builds with --config=fuzz (clang-19, ASan, libFuzzer) in an output base of its own, since that
# config switches the C++ compiler (FUZZ_OUTPUT_BASE, default ~/.cache/bazel-fuzz). Each run
# starts from the checked-in seeds (fuzz/corpus/<target>/) plus what earlier runs found, kept in
# FUZZ_WORK (default /tmp/codeheap-fuzz/<target>/corpus); crashing inputs and the log go next
# to it. lisp_compile_llvm is lisp_compile with the LLVM tier (LISP_TIER_UP=0).
set -euo pipefail

seconds=${1:-120}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(heap capi lisp_compile lisp_compile_llvm lisp_eval)

cd "$(dirname "$0")/.."
output_base=${FUZZ_OUTPUT_BASE:-$HOME/.cache/bazel-fuzz}
work=${FUZZ_WORK:-/tmp/codeheap-fuzz}
bazel=(./bazelw --output_base="$output_base")
flags=(--config=fuzz --symlink_prefix=/)

"${bazel[@]}" build "${flags[@]}" //fuzz:heap_fuzzer //fuzz:capi_fuzzer \
  //fuzz:lisp_compile_fuzzer //fuzz:lisp_eval_fuzzer
bin=$("${bazel[@]}" info "${flags[@]}" bazel-bin 2>/dev/null)/fuzz

status=0
for target in "${targets[@]}"; do
  binary=${target%_llvm}_fuzzer
  seeds=fuzz/corpus/${target%_llvm}
  [[ -x "$bin/$binary" ]] || { echo "run.sh: no target '$target'" >&2; exit 2; }
  dir=$work/$target
  mkdir -p "$dir/corpus" "$dir/findings"
  options=(-max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1
           -artifact_prefix="$dir/findings/")
  [[ $target == lisp_* ]] && options+=(-dict=fuzz/lisp.dict)
  # No fake stacks (Boehm must see every local); leak checks only where Boehm holds no memory.
  leaks=0
  [[ $target == heap ]] && leaks=1
  tier_up=${LISP_TIER_UP:-}
  [[ $target == *_llvm ]] && tier_up=0
  echo "run.sh: $target for ${seconds}s (log: $dir/log)" >&2
  if ! ASAN_OPTIONS=detect_stack_use_after_return=0:detect_leaks=$leaks LISP_TIER_UP=$tier_up \
      "$bin/$binary" "${options[@]}" "$dir/corpus" "$seeds" >"$dir/log" 2>&1; then
    status=1
  fi
  executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log")
  coverage=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$dir/log" | tail -1)
  echo "$target: ${executions:-?} executions in ${seconds}s, ${coverage:-no coverage line}," \
    "corpus $(ls "$dir/corpus" | wc -l) inputs," \
    "findings: $(ls "$dir/findings" | grep -vc '^slow-unit-')"
done
exit $status
