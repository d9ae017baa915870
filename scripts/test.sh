#!/usr/bin/env bash
# Install what is missing, build, and run every test:
#   1. unit and integration tests (Criterion, through ctest) on the normal build;
#   2. the unit tests again under AddressSanitizer + UndefinedBehaviorSanitizer.
# Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

scripts/setup.sh build
# Sanitizer build: separate tree; only what the unit tests need.
scripts/setup.sh build-asan -DHVD_ASAN=ON -DHVD_UBSAN=ON >/dev/null

# Stale shm regions from killed jobs of earlier runs would only waste /dev/shm.
find /dev/shm -maxdepth 1 -user "$(id -u)" -name '*:*:*' -mmin +60 -delete 2>/dev/null || true

status=0
echo "== unit + integration tests"
(cd build && ctest --output-on-failure --timeout 1500) || status=1
echo "== unit tests under ASan+UBSan"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
   UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
   ctest --output-on-failure -L unit --timeout 600) || status=1

echo "== tests finished in $(( $(date +%s) - start )) s"
exit $status
