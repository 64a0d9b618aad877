#!/usr/bin/env bash
# Every C and C++ source of the project is formatted as .clang-format says (clang-format-19,
# installed by ./bazelw). To fix: clang-format-19 -i <file>.
set -uo pipefail
style=""
files=()
for f in "$@"; do
  case "$f" in
    *.clang-format) style="$f" ;;
    *) files+=("$f") ;;
  esac
done
if [[ -z "$style" || ${#files[@]} -eq 0 ]]; then
  echo "format_test: expected .clang-format and the sources as arguments" >&2
  exit 2
fi
status=0
for f in "${files[@]}"; do
  if ! clang-format-19 --style="file:$style" --dry-run --Werror "$f" 2>"${TEST_TMPDIR:-/tmp}/format_test.$$"; then
    head -n 20 "${TEST_TMPDIR:-/tmp}/format_test.$$"
    status=1
  fi
done
rm -f "${TEST_TMPDIR:-/tmp}/format_test.$$"
if ((status == 0)); then echo "format_test: ${#files[@]} files formatted as .clang-format says"; fi
exit "$status"
