#!/usr/bin/env bash
# The runtime (argument 1) computes 42 through JIT code and collects without an error.
set -euo pipefail
output=$("$1")
echo "$output"
grep -qx 'scale(7) with factor 6 = 42' <<<"$output"
grep -q '^collected: ' <<<"$output"
