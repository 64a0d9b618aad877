#!/usr/bin/env bash
# //:install into a temporary prefix, then the C API test program (tests/capi/capi_test.c) built
# outside Bazel against it: with pkg-config (shared library, and --static with the archive) and
# with CMake (find_package(codeheap)). Also the installer's errors on bad input.
# Arguments: the installer, capi_test.c, this directory's CMakeLists.txt.
set -euo pipefail

installer=$(realpath "$1")
capi_test_c=$(realpath "$2")
cmake_lists=$(realpath "$3")
tmp=${TEST_TMPDIR:-$(mktemp -d)}
prefix=$tmp/prefix

fail() {
  echo "FAILED: $*" >&2
  exit 1
}
step() { echo "--- $*"; }
# `run PROGRAM`: runs it, shows its last line ("N passed, N failed"), or all of it if it fails.
run() {
  local output
  output=$("$1" 2>&1) || { echo "$output"; fail "$1"; }
  tail -n 1 <<<"$output"
}

# `expect_error MESSAGE ARGS...`: the installer fails with exit status 2 or 1 and says MESSAGE.
expect_error() {
  local message=$1 status=0
  shift
  "$installer" "$@" >"$tmp/out" 2>"$tmp/err" || status=$?
  ((status != 0)) || fail "installer $* succeeded"
  grep -qF -- "$message" "$tmp/err" || fail "installer $*: no '$message' in: $(cat "$tmp/err")"
  echo "installer ${*:-(no arguments)}: exit $status: $(head -n 1 "$tmp/err")"
}

step "bad input"
expect_error "missing --prefix DIR"
expect_error "--prefix needs a directory" --prefix
expect_error "unknown argument '--prefx'" --prefx "$prefix"
touch "$tmp/a-file"
expect_error "cannot install into '$tmp/a-file/prefix': mkdir: " --prefix "$tmp/a-file/prefix"
if (($(id -u) != 0)); then  # root may write anywhere
  mkdir -p "$tmp/read-only"
  chmod 0555 "$tmp/read-only"
  expect_error "cannot install into '$tmp/read-only/prefix'" --prefix "$tmp/read-only/prefix"
fi
[[ ! -e $prefix ]] || fail "a failed install wrote $prefix"

step "install into $prefix"
"$installer" --prefix "$prefix"
for file in include/codeheap/gcglue/codeheap.h lib/libcodeheap.a lib/libcodeheap.so.0.1.0 \
  lib/pkgconfig/codeheap.pc lib/cmake/codeheap/codeheapConfig.cmake \
  lib/cmake/codeheap/codeheapConfigVersion.cmake; do
  [[ -f $prefix/$file ]] || fail "$file not installed"
done
[[ $(readlink "$prefix/lib/libcodeheap.so.0") == libcodeheap.so.0.1.0 ]] || fail "libcodeheap.so.0"
[[ $(readlink "$prefix/lib/libcodeheap.so") == libcodeheap.so.0 ]] || fail "libcodeheap.so"
readelf -d "$prefix/lib/libcodeheap.so.0.1.0" | grep -q 'SONAME.*\[libcodeheap\.so\.0\]' ||
  fail "the shared library's soname is not libcodeheap.so.0"

step "a relative prefix is relative to BUILD_WORKING_DIRECTORY (and --strip)"
mkdir -p "$tmp/workdir"
BUILD_WORKING_DIRECTORY=$tmp/workdir "$installer" --prefix=relative/prefix --strip >/dev/null
[[ -f $tmp/workdir/relative/prefix/lib/libcodeheap.a ]] || fail "relative prefix"
! readelf -S "$tmp/workdir/relative/prefix/lib/libcodeheap.so.0.1.0" | grep -q '\.debug_info' ||
  fail "--strip left debug information"
grep -qx "prefix=$tmp/workdir/relative/prefix" "$tmp/workdir/relative/prefix/lib/pkgconfig/codeheap.pc" ||
  fail "the relative prefix's codeheap.pc does not name it"
rm -rf "$tmp/workdir"

# Under --config=asan or --config=tsan the installed library is instrumented: so is the program.
sanitize=()
needed=$(readelf -d "$prefix/lib/libcodeheap.so.0.1.0")
[[ $needed != *'[libasan.'* ]] || sanitize+=(-fsanitize=address)
[[ $needed != *'[libubsan.'* ]] || sanitize+=(-fsanitize=undefined)
[[ $needed != *'[libtsan.'* ]] || sanitize+=(-fsanitize=thread)
((${#sanitize[@]} == 0)) || echo "--- the library is instrumented: building with ${sanitize[*]}"

export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
[[ $(pkg-config --modversion codeheap) == 0.1.0 ]] || fail "pkg-config --modversion codeheap"
cd "$tmp"

step "cc \$(pkg-config --cflags --libs codeheap): the shared library"
read -r -a flags <<<"$(pkg-config --cflags --libs codeheap)"
cc -std=c11 -Wall -Wextra -Werror "${sanitize[@]}" -o capi_shared "$capi_test_c" "${flags[@]}" \
  -Wl,-rpath,"$prefix/lib"
readelf -d capi_shared | grep -q 'NEEDED.*\[libcodeheap\.so\.0\]' || fail "capi_shared: no libcodeheap.so.0"
run ./capi_shared

step "cc \$(pkg-config --static --cflags --libs codeheap): the static archive"
# The archive and the shared library share a directory, where -lcodeheap finds the shared one.
libs=$(pkg-config --static --cflags --libs codeheap)
read -r -a flags <<<"${libs/-lcodeheap/-l:libcodeheap.a}"
cc -std=c11 -Wall -Wextra -Werror "${sanitize[@]}" -o capi_static "$capi_test_c" "${flags[@]}"
! readelf -d capi_static | grep -q 'libcodeheap' || fail "capi_static needs libcodeheap.so"
run ./capi_static

if command -v cmake >/dev/null; then
  step "CMake: find_package(codeheap), codeheap::codeheap and codeheap::codeheap_static"
  cmake -S "$(dirname "$cmake_lists")" -B cmake-build -DCMAKE_PREFIX_PATH="$prefix" \
    -DCAPI_TEST_SOURCE="$capi_test_c" -DCMAKE_C_FLAGS="${sanitize[*]}" >cmake.log 2>&1 || { cat cmake.log; fail "cmake configure"; }
  cmake --build cmake-build >>cmake.log 2>&1 || { cat cmake.log; fail "cmake --build"; }
  ! grep -i 'warning' cmake.log || fail "warnings in the CMake build"
  run ./cmake-build/capi_shared
  run ./cmake-build/capi_static
  ! readelf -d cmake-build/capi_static | grep -q 'libcodeheap' || fail "capi_static (CMake) needs libcodeheap.so"
else
  echo "--- cmake is not installed: the CMake build is skipped"
fi
echo "PASSED"
