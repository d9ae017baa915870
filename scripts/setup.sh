#!/usr/bin/env bash
# Install what is missing (Debian packages), then configure and build hvd.
#   scripts/setup.sh [BUILD_DIR] [extra cmake args...]
# BUILD_DIR defaults to build/. Safe to run again: it installs nothing that is there.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(gcc make cmake pkg-config libfabric-dev libfabric-bin libhwloc-dev libuv1-dev
          libcriterion-dev zlib1g-dev libopenblas-dev dataset-fashion-mnist procps iproute2
          openssh-server openssh-client openmpi-bin libopenmpi-dev # mpirun jobs; hvd-train-mpi
          python3 chromium # the timeline tests: Python's json module, a headless browser
          python3-numpy python3-torch python3-pytest # the Python bindings and their tests
          clang libclang-rt-14-dev) # libFuzzer harnesses

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

build=${1:-build}
shift || true
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHVD_WERROR=ON "$@" >"$build.configure.log" 2>&1 ||
  { cat "$build.configure.log"; exit 1; }
grep -A12 "hvd .* configuration" "$build.configure.log" | sed 's/^-- //' || true
# HVD_BUILD_TARGETS="a b" builds only those targets.
cmake --build "$build" -j"$(nproc)" ${HVD_BUILD_TARGETS:+--target $HVD_BUILD_TARGETS}
