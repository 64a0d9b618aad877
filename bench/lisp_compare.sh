#!/usr/bin/env bash
# Compares our Lisp (in each tier mode: --tier-up never, --tier-up 0, the default) with Chez
# Scheme, SBCL and Guile 3 on lambda churn (eval of 10,000 and 50,000 distinct lambdas),
# redefinition seen by a compiled caller, fib(30), tak(18 12 6), nqueens(8), and (ours only)
# startup-to-exit of examples/lisp/programs/*.scm. Programs are in bench/lisp/; every one times
# itself in-process. Installs chezscheme, sbcl, guile-3.0 and time if they are missing, builds
# //examples/lisp:lisp with --config=opt (unless LISP_COMPARE_BIN names a binary), prints markdown
# tables with PASS/MISS per target, and with --write regenerates the tables of
# docs/lisp-benchmarks.md (the prose outside its generated blocks is kept).
#
#   bench/lisp_compare.sh --quick              smoke check: 1 round, small N, well under a minute
#   bench/lisp_compare.sh --write              the full comparison (5 rounds; see the timing note
#                                              in docs/lisp-benchmarks.md), docs regenerated
#   bench/lisp_compare.sh --help               every option (rounds, sizes, systems, --json)
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(chezscheme sbcl guile-3.0 time)
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

if [[ -n "${LISP_COMPARE_BIN:-}" ]]; then
  lisp="$LISP_COMPARE_BIN"
else
  ./bazelw build --config=opt //examples/lisp:lisp
  lisp="$(./bazelw info --config=opt bazel-bin 2>/dev/null)/examples/lisp/lisp"
fi
[[ -x "$lisp" ]] || { echo "lisp_compare: no binary at $lisp" >&2; exit 2; }

exec python3 bench/lisp_compare.py --lisp "$lisp" "$@"
