#!/usr/bin/env bash
# Build the libFuzzer harnesses with clang (ASan+UBSan) and run each for a while.
#   fuzz/run.sh [SECONDS] [HARNESS...]     default: 60 s each, every harness
#   fuzz/run.sh --regen-corpus             rewrite the seeds in fuzz/corpus/ (keeps crash-*)
# Environment: FUZZ_JOBS harnesses at a time (default 2), FUZZ_BUILD build directory
# (default build-fuzz), FUZZ_RSS_MB memory limit per harness (default 2048).
#
# Each harness starts from a temporary copy of fuzz/corpus/<harness>/, so a run never
# changes the repository. A harness that finds a crash, leak, sanitizer report,
# broken property or hang fails the run; its input is kept under
# $FUZZ_BUILD/artifacts/ (the path is printed). Reproduce with
#   $FUZZ_BUILD/fuzz/<harness> <input>
# then fix the decoder and copy the input into fuzz/corpus/<harness>/crash-<what>.
set -uo pipefail
cd "$(dirname "$0")/.."

build=${FUZZ_BUILD:-build-fuzz}
jobs=${FUZZ_JOBS:-2}
rss=${FUZZ_RSS_MB:-2048}
all=(fuzz_rdv_frame fuzz_rdv_server fuzz_request_list fuzz_response_list)

command -v clang >/dev/null || { echo "fuzz: clang is not installed (scripts/setup.sh installs it)"; exit 1; }
CC=clang cmake -S . -B "$build" -DHVD_FUZZ=ON -DHVD_BUILD_TESTS=OFF -DHVD_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  >"$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
cmake --build "$build" -j"$(nproc)" --target fuzzers >"$build/fuzz-build.log" 2>&1 ||
  { cat "$build/fuzz-build.log"; echo "fuzz: build failed (libFuzzer runtime missing? apt-get install libclang-rt-14-dev)"; exit 1; }

if [ "${1:-}" = "--regen-corpus" ]; then
  for h in "${all[@]}"; do find "fuzz/corpus/$h" -type f ! -name 'crash-*' -delete 2>/dev/null; done
  "$build/fuzz/gen-corpus" fuzz/corpus || exit 1
  for h in "${all[@]}"; do echo "fuzz/corpus/$h: $(ls "fuzz/corpus/$h" | wc -l) files"; done
  exit 0
fi

secs=${1:-60}
shift || true
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=("${all[@]}")

art="$build/artifacts"
mkdir -p "$art"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

run_one() { # harness
  local h=$1 corpus="$work/$1.corpus" log="$work/$1.log"
  mkdir -p "$corpus"
  cp fuzz/corpus/"$h"/* "$corpus"/ 2>/dev/null
  # Crash inputs kept in the repository must stay fixed: replay them first.
  local crashes=(fuzz/corpus/"$h"/crash-*)
  if [ -e "${crashes[0]}" ] && ! "$build/fuzz/$h" "${crashes[@]}" >"$log" 2>&1; then
    echo "== $h: a known crash input fails again"; tail -40 "$log"; return 1
  fi
  # -timeout: one input running this long is a hang. -max_len: inputs up to 4 KiB
  # reach every field and limit check (lengths beyond are in the headers).
  "$build/fuzz/$h" -max_total_time="$secs" -rss_limit_mb="$rss" -timeout=10 -max_len=4096 \
    -print_final_stats=1 -artifact_prefix="$art/$h-" "$corpus" >"$log" 2>&1
  local st=$?
  local stats
  stats=$(grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)' "$log" | sed 's/stat:://' | tr '\n' ' ')
  local cov
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1)
  if [ $st -eq 0 ]; then
    echo "== $h: ok ($secs s, $cov, $stats)"
  else
    echo "== $h: FAILED (exit $st)"
    tail -60 "$log"
    ls -1 "$art/$h-"* 2>/dev/null | sed 's/^/   input: /'
  fi
  return $st
}

failed=0
pids=()
names=()
for h in "${harnesses[@]}"; do
  [ -x "$build/fuzz/$h" ] || { echo "fuzz: no harness $h"; failed=1; continue; }
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
  run_one "$h" &
  pids+=($!)
  names+=("$h")
done
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || failed=1
done
[ $failed -eq 0 ] && echo "fuzz: ${#harnesses[@]} harnesses, no failures" || echo "fuzz: FAILED"
exit $failed
