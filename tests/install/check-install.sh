#!/usr/bin/env bash
# Install hvd from a build tree into a temporary prefix, check that it holds what a C
# consumer needs (hvd.h, libhvd.so with its soname, hvdConfig.cmake, hvd.pc, hvdrun),
# then build the two example consumers against it, examples/c/cmake-consumer
# (find_package(hvd) -> hvd::hvd) and examples/c/make-consumer (pkg-config), and run
# each under the installed hvdrun -np 2: both ranks must report a correct allreduce.
#   check-install.sh BUILD_DIR
set -euo pipefail
build=$1
src=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
cmake --install "$build" --prefix "$prefix" >/dev/null

need() { [ -e "$1" ] || { echo "install is missing $1"; exit 1; }; }
need "$prefix/include/hvd.h"
need "$prefix/bin/hvdrun"
lib=$(find "$prefix" -name libhvd.so | head -1)
need "$lib"
libdir=$(dirname "$lib")
need "$libdir/libhvd.so.0"
need "$libdir/cmake/hvd/hvdConfig.cmake"
need "$libdir/pkgconfig/hvd.pc"
objdump -p "$libdir/libhvd.so.0" | grep -q 'SONAME *libhvd.so.0'
if nm -D --defined-only "$libdir/libhvd.so.0" | awk '{print $3}' | grep -v '^hvd_' | grep -q .; then
  echo "libhvd exports symbols outside the hvd_ API:"; nm -D --defined-only "$libdir/libhvd.so.0" | grep -v ' hvd_'
  exit 1
fi

# Runs "$@" under the installed hvdrun with 2 ranks; both must print "<what>: rank R of 2:
# allreduce OK (sum 3)".
run2() {
  local what=$1 out
  shift
  out=$(LD_LIBRARY_PATH="$libdir" timeout 120 "$prefix/bin/hvdrun" -np 2 "$@" 2>&1) ||
    { echo "$what failed under hvdrun -np 2:"; echo "$out"; exit 1; }
  for r in 0 1; do
    grep -q "^\[$r\]<stdout>:$what: rank $r of 2: allreduce OK (sum 3)$" <<<"$out" ||
      { echo "$what: no result line from rank $r:"; echo "$out"; exit 1; }
  done
  echo "$out"
}

# find_package(hvd) -> hvd::hvd
cmake -S "$src/examples/c/cmake-consumer" -B "$tmp/cmake-build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$tmp/cmake-build" >/dev/null
run2 "cmake consumer" "$tmp/cmake-build/consumer"

# pkg-config --cflags --libs hvd, from a Makefile (built in a copy: the source tree stays clean)
cp -r "$src/examples/c/make-consumer" "$tmp/make-consumer"
PKG_CONFIG_PATH="$libdir/pkgconfig" make -s -C "$tmp/make-consumer" >/dev/null
run2 "make consumer" "$tmp/make-consumer/consumer"
echo "install check passed"
