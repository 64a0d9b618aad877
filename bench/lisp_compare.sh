#!/usr/bin/env bash
# Compares our Lisp with SBCL and Guile 3 on fib(30), tak(18 12 6), nqueens(8) and compiling and
# collecting 10,000 small lambdas (programs in bench/lisp/). Installs sbcl and guile-3.0 if they
# are missing, builds //examples/lisp:lisp with --config=opt, prints the table and writes it to
# docs/lisp-benchmarks.md (docs/benchmarks.md belongs to bench/report.py, which rewrites it).
#
#   bench/lisp_compare.sh [--runs N] [--output FILE]
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(sbcl guile-3.0)
missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  [[ "$status" == "installed" ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "lisp_compare: installing missing packages: ${missing[*]}" >&2
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "lisp_compare: apt-get not found; install these Debian packages by hand: ${missing[*]}" >&2
    exit 2
  fi
  if [[ $(id -u) -eq 0 ]]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    echo "lisp_compare: need root (or password-less sudo) to install: ${missing[*]}" >&2
    exit 2
  fi
  export DEBIAN_FRONTEND=noninteractive
  log=$(mktemp)
  if ! { "${sudo[@]}" apt-get update -q && "${sudo[@]}" apt-get install -y -q "${missing[@]}"; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "lisp_compare: installing ${missing[*]} failed (full log: $log)" >&2
    exit 2
  fi
  rm -f "$log"
fi

./bazelw build --config=opt //examples/lisp:lisp
lisp="$(./bazelw info --config=opt bazel-bin 2>/dev/null)/examples/lisp/lisp"
[[ -x "$lisp" ]] || { echo "lisp_compare: no binary at $lisp" >&2; exit 2; }

args=("$@")
[[ " $* " == *" --output "* ]] || args+=(--output docs/lisp-benchmarks.md)
exec python3 bench/lisp_compare.py --lisp "$lisp" "${args[@]}"
