#!/usr/bin/env bash
# Install hvd from a build tree into a temporary prefix, then build and run a small
# program against it twice: with CMake's find_package(hvd) and with pkg-config.
#   check-install.sh BUILD_DIR
set -euo pipefail
build=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
mkdir "$tmp/app"
cat >"$tmp/app/app.c" <<'C'
#include <hvd.h>
#include <stdio.h>
int main(void) {
  hvd_ctx_t *ctx;
  if (hvd_init(&ctx) != HVD_OK) return 1;
  float x = 2;
  if (hvd_allreduce(ctx, "x", &x, &x, 1, HVD_FLOAT32, HVD_SUM) != HVD_OK || x != 2) return 1;
  printf("installed hvd works: rank %d of %d\n", hvd_rank(ctx), hvd_size(ctx));
  return hvd_shutdown(ctx);
}
C
cat >"$tmp/app/CMakeLists.txt" <<'C'
cmake_minimum_required(VERSION 3.20)
project(consumer C)
find_package(hvd REQUIRED)
add_executable(app app.c)
target_link_libraries(app hvd::hvd)
C
cmake -S "$tmp/app" -B "$tmp/app/build" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/app/build" >/dev/null
libdir=$(dirname "$(find "$tmp/prefix" -name 'libhvd.so.0' | head -1)")
LD_LIBRARY_PATH="$libdir" "$tmp/app/build/app"
pc=$(dirname "$(find "$tmp/prefix" -name hvd.pc | head -1)")
# shellcheck disable=SC2046
cc "$tmp/app/app.c" $(PKG_CONFIG_PATH="$pc" pkg-config --cflags --libs hvd) -o "$tmp/app/app-pc"
LD_LIBRARY_PATH="$libdir" "$tmp/app/app-pc"
objdump -p "$libdir/libhvd.so.0" | grep -q 'SONAME *libhvd.so.0'
if nm -D --defined-only "$libdir/libhvd.so.0" | awk '{print $3}' | grep -v '^hvd_' | grep -q .; then
  echo "libhvd exports symbols outside the hvd_ API:"; nm -D --defined-only "$libdir/libhvd.so.0" | grep -v ' hvd_'
  exit 1
fi
echo "install check passed"
