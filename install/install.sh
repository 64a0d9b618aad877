#!/usr/bin/env bash
# Installs codeheap's C API for builds outside Bazel (docs/embedding.md):
#   PREFIX/include/codeheap/gcglue/codeheap.h
#   PREFIX/lib/libcodeheap.a, libcodeheap.so.VERSION (+ libcodeheap.so.MAJOR, libcodeheap.so)
#   PREFIX/lib/pkgconfig/codeheap.pc
#   PREFIX/lib/cmake/codeheap/codeheapConfig.cmake, codeheapConfigVersion.cmake
# Run it as `bazel run //:install -- --prefix DIR`; a relative DIR is taken relative to the
# directory the command was run from.
set -Eeuo pipefail  # -E: the ERR trap below also fires inside functions

me=install
usage() {
  cat <<USAGE
usage: bazel run //:install -- --prefix DIR [--strip]

Installs codeheap's C API (header, libcodeheap.a, libcodeheap.so, pkg-config file, CMake
package) under DIR. A relative DIR is relative to the directory the command was run from.

  --prefix DIR   where to install (required)
  --strip        strip debug information from the installed libraries
  -h, --help     this text
USAGE
}
usage_error() {
  echo "$me: $*" >&2
  echo "usage: bazel run //:install -- --prefix DIR [--strip]   (--help for more)" >&2
  exit 2
}
die() {
  echo "$me: $*" >&2
  exit 1
}

prefix='' strip=0
while (($#)); do
  case $1 in
    --prefix)
      if (($# < 2)) || [[ -z $2 ]]; then usage_error "--prefix needs a directory"; fi
      prefix=$2
      shift 2
      ;;
    --prefix=*)
      prefix=${1#--prefix=}
      [[ -n $prefix ]] || usage_error "--prefix needs a directory"
      shift
      ;;
    --strip) strip=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage_error "unknown argument '$1'" ;;
  esac
done
[[ -n $prefix ]] || usage_error "missing --prefix DIR"

# `bazel run` starts us in the runfiles tree; BUILD_WORKING_DIRECTORY is where it was invoked.
if [[ $prefix != /* ]]; then
  prefix=${BUILD_WORKING_DIRECTORY:-$PWD}/$prefix
fi
prefix=$(realpath -m -- "$prefix")

# The files to install: in our runfiles (bazel run, or bazel-bin/install/install), or in the
# runfiles of a test that has us as data.
self=${BASH_SOURCE[0]}
if [[ -d $self.runfiles ]]; then
  runfiles=$self.runfiles
elif [[ -n ${RUNFILES_DIR:-} ]]; then
  runfiles=$RUNFILES_DIR
elif [[ -n ${TEST_SRCDIR:-} ]]; then
  runfiles=$TEST_SRCDIR
else
  die "cannot find the files to install: run this as 'bazel run //:install -- --prefix DIR'"
fi
src=$runfiles/codeheap
[[ -f $src/install/version.txt ]] || die "cannot find the files to install under $runfiles"
version=$(<"$src/install/version.txt")
soversion=${version%%.*}

# Link flags of what the static archive leaves to shared libraries: LLVM (Debian ships no .pc
# for it: llvm-config-19 says), spdlog with fmt, and the C++ runtime. Boehm comes through
# `Requires: bdw-gc`.
command -v llvm-config-19 >/dev/null || die "llvm-config-19 not found (Debian package llvm-19-dev)"
command -v pkg-config >/dev/null || die "pkg-config not found (Debian package pkg-config)"
pkg-config --exists bdw-gc || die "pkg-config finds no bdw-gc (Debian package libgc-dev)"
llvm_libs=$(llvm-config-19 --link-shared --ldflags --libs --system-libs) ||
  die "llvm-config-19 cannot say how to link LLVM"
spdlog_libs=$(pkg-config --libs spdlog) || die "pkg-config finds no spdlog (Debian package libspdlog-dev)"
# One line, words separated by single spaces (llvm-config writes several lines).
libs_private=$(printf '%s ' "$llvm_libs" "$spdlog_libs" -lstdc++ -lm | tr -s '[:space:]' ' ')
libs_private=${libs_private# }
libs_private=${libs_private% }

# Checked before anything is written: a prefix we cannot create or write into is an error.
include_dir=$prefix/include/codeheap
lib_dir=$prefix/lib
for dir in "$include_dir/gcglue" "$lib_dir/pkgconfig" "$lib_dir/cmake/codeheap"; do
  if ! error=$(mkdir -p -- "$dir" 2>&1) || [[ ! -w $dir ]]; then
    die "cannot install into '$prefix': ${error:-$dir is not writable}"
  fi
done
trap 'echo "$me: installing into $prefix failed" >&2' ERR

# `template IN OUT`: IN with @VERSION@, @SOVERSION@, @PREFIX@, @LIBS_PRIVATE@ and
# @LIBS_PRIVATE_LIST@ (the same flags as a CMake list) replaced.
template() {
  local text
  text=$(<"$1")
  text=${text//@VERSION@/"$version"}
  text=${text//@SOVERSION@/"$soversion"}
  text=${text//@PREFIX@/"$prefix"}
  text=${text//@LIBS_PRIVATE@/"$libs_private"}
  text=${text//@LIBS_PRIVATE_LIST@/"${libs_private// /;}"}
  printf '%s\n' "$text" >"$2"
  chmod 0644 -- "$2"
}

install -m 0644 -- "$src/gcglue/codeheap.h" "$include_dir/gcglue/codeheap.h"
install -m 0644 -- "$src/install/libcodeheap.a" "$lib_dir/libcodeheap.a"
install -m 0755 -- "$src/install/libcodeheap.so.$version" "$lib_dir/libcodeheap.so.$version"
if ((strip)); then
  strip --strip-debug -- "$lib_dir/libcodeheap.a" "$lib_dir/libcodeheap.so.$version"
fi
ln -sfn -- "libcodeheap.so.$version" "$lib_dir/libcodeheap.so.$soversion"
ln -sfn -- "libcodeheap.so.$soversion" "$lib_dir/libcodeheap.so"
template "$src/install/codeheap.pc.in" "$lib_dir/pkgconfig/codeheap.pc"
template "$src/install/codeheapConfig.cmake.in" "$lib_dir/cmake/codeheap/codeheapConfig.cmake"
template "$src/install/codeheapConfigVersion.cmake.in" \
  "$lib_dir/cmake/codeheap/codeheapConfigVersion.cmake"

echo "$me: installed codeheap $version into $prefix"
echo "  pkg-config: PKG_CONFIG_PATH=$lib_dir/pkgconfig pkg-config --cflags --libs codeheap"
echo "  CMake:      cmake -DCMAKE_PREFIX_PATH=$prefix ...; find_package(codeheap)"
