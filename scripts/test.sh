#!/usr/bin/env bash
# Install what is missing, build, and run every test:
#   1. unit and integration tests (Criterion, through ctest) on the normal build;
#   2. the unit tests again under AddressSanitizer + UndefinedBehaviorSanitizer
#      (LeakSanitizer reports are collected in files and fail the stage);
#   3. a 4-rank job with 4 application threads per rank under ThreadSanitizer
#      (Criterion's runner itself does not run under TSan, so this stage runs the
#      job directly);
#   4. the libFuzzer harnesses of fuzz/ (clang, ASan+UBSan), 45 s each.
# Exits non-zero if anything fails.
set -uo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

scripts/setup.sh build || exit 1
scripts/setup.sh build-asan -DHVD_ASAN=ON -DHVD_UBSAN=ON >/dev/null || exit 1
HVD_BUILD_TARGETS="hvdrun runtime_check" scripts/setup.sh build-tsan -DHVD_TSAN=ON >/dev/null || exit 1

# Stale shm regions from killed jobs of earlier runs would only waste /dev/shm.
find /dev/shm -maxdepth 1 -user "$(id -u)" -name '*:*:*' -mmin +60 -delete 2>/dev/null || true

passed=0
failed=0
stage() { # name, status
  if [ "$2" -eq 0 ]; then passed=$((passed + 1)); echo "== $1: passed"
  else failed=$((failed + 1)); echo "== $1: FAILED"; fi
}

echo "== unit + integration tests"
(cd build && ctest --output-on-failure --timeout 1500)
stage "unit + integration tests" $?

echo "== unit tests under ASan+UBSan"
sandir=$(mktemp -d)
(cd build-asan && ASAN_OPTIONS="detect_leaks=1:log_path=$sandir/asan" \
   UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$sandir/ubsan" \
   ctest --output-on-failure -L unit --timeout 600)
st=$?
if ls "$sandir"/* >/dev/null 2>&1; then
  echo "sanitizer reports:"; cat "$sandir"/*; st=1
fi
rm -rf "$sandir"
stage "unit tests under ASan+UBSan" $st

echo "== 4 ranks x 4 threads under TSan"
log=$(mktemp)
TSAN_OPTIONS="halt_on_error=1" timeout 600 build-tsan/hvdrun -np 4 build-tsan/tests/runtime_check threads >"$log" 2>&1
st=$?
if grep -q "ThreadSanitizer" "$log" || [ "$(grep -c 'CASE threads: OK' "$log")" -ne 4 ]; then st=1; fi
[ $st -eq 0 ] || cat "$log"
rm -f "$log"
stage "TSan: 4 ranks x 4 threads" $st

echo "== libFuzzer harnesses (fuzz/run.sh: 45 s each, two at a time)"
FUZZ_JOBS=2 fuzz/run.sh 45
stage "libFuzzer harnesses" $?

echo "== tests finished in $(( $(date +%s) - start )) s"
echo "stages: $passed passed, $failed failed"
[ $failed -eq 0 ]
