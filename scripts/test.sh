#!/usr/bin/env bash
# Install what is missing, build, and run every test:
#   1. unit and integration tests (Criterion, through ctest) on the normal build;
#   2. the unit and integration tests again under AddressSanitizer +
#      UndefinedBehaviorSanitizer, the integration suites in their reduced
#      configuration (HVD_TEST_QUICK=1, tests/integration/harness.h), then a 20 s soak
#      (scripts/soak.sh); every process reports to files, the ranks that hvdrun
#      starts included (LeakSanitizer too), and any report fails the stage;
#   3. the multi-threaded jobs under ThreadSanitizer: 4 ranks x 4 application
#      threads with the timeline writer on, timeline windows switched by the
#      application, completion callbacks from 4 threads on process sets, and an
#      srun-style job whose rank 0 serves the rendezvous inside hvd_init (Criterion's
#      runner itself does not run under TSan, so this stage runs the jobs directly);
#   4. the libFuzzer harnesses of fuzz/ (clang, ASan+UBSan), 45 s each.
# Exits non-zero if anything fails.
set -uo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

scripts/setup.sh build || exit 1
scripts/setup.sh build-asan -DHVD_ASAN=ON -DHVD_UBSAN=ON >/dev/null || exit 1
HVD_BUILD_TARGETS="hvdrun runtime_check timeline_prog" scripts/setup.sh build-tsan -DHVD_TSAN=ON >/dev/null || exit 1

# libfabric's shm provider names its region /dev/shm/<pid>:<n>:<n>; one left by a killed
# process makes a new process that gets the same pid fail fi_enable with EBUSY (forced
# shm fails; otherwise that rank silently uses tcp). On a machine where jobs were killed
# (a developer's, or CI right after one) there are hundreds: remove every one whose
# process is gone.
for f in /dev/shm/[0-9]*:*:*; do
  p=${f#/dev/shm/}
  p=${p%%:*}
  if [ -O "$f" ] && [ ! -d "/proc/$p" ]; then rm -f "$f"; fi
done

echo "== builds finished in $(( $(date +%s) - start )) s"
passed=0
failed=0
stage_t=$(date +%s)
stage() { # name, status; says how long the stage took (since the previous one ended)
  local took=$(( $(date +%s) - stage_t ))
  stage_t=$(date +%s)
  if [ "$2" -eq 0 ]; then passed=$((passed + 1)); echo "== $1: passed ($took s)"
  else failed=$((failed + 1)); echo "== $1: FAILED ($took s)"; fi
}

echo "== unit + integration tests"
(cd build && ctest --output-on-failure --timeout 1500)
stage "unit + integration tests" $?

echo "== unit + integration tests (HVD_TEST_QUICK) and a 20 s soak under ASan+UBSan"
sandir=$(mktemp -d)
# Inherited by every process, hvdrun's ranks included (remote ones too: hvdrun
# forwards *SAN_OPTIONS). A report goes to a file; any file fails the stage.
san_env=(ASAN_OPTIONS="detect_leaks=1:log_path=$sandir/asan"
         UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$sandir/ubsan")
(cd build-asan && env "${san_env[@]}" HVD_TEST_QUICK=1 \
   ctest --output-on-failure -L 'unit|integration' --timeout 900)
st=$?
# The allocator's quarantine keeps freed memory resident: no RSS bound here.
env "${san_env[@]}" HVD_BUILD=build-asan SOAK_RSS_BOUND_KB=none scripts/soak.sh 20s 4 || st=1
if ls "$sandir"/* >/dev/null 2>&1; then
  echo "sanitizer reports:"; cat "$sandir"/*; st=1
fi
rm -rf "$sandir"
stage "unit + integration tests and soak under ASan+UBSan" $st

echo "== multi-threaded jobs under TSan"
tsandir=$(mktemp -d)
st=0
tsan_job() { # description, number of lines matching pattern wanted, pattern, command...
  local what=$1 want=$2 pattern=$3 t0 rc
  shift 3
  t0=$(date +%s)
  TSAN_OPTIONS="halt_on_error=1" timeout 300 "$@" >"$tsandir/log" 2>&1
  rc=$?
  if grep -q "ThreadSanitizer" "$tsandir/log" || [ "$(grep -c "$pattern" "$tsandir/log")" -ne "$want" ]
  then rc=1; fi
  echo "   $what: $([ $rc -eq 0 ] && echo ok || echo FAILED) ($(( $(date +%s) - t0 )) s)"
  [ $rc -eq 0 ] || { cat "$tsandir/log"; st=1; }
}
tsan_job "4 ranks x 4 threads, timeline writer on" 4 'CASE threads: OK' \
  env HVD_TIMELINE="$tsandir/threads.json" build-tsan/hvdrun -np 4 build-tsan/tests/runtime_check threads
tsan_job "timeline windows started and stopped by the application" 2 'TIMELINE_PROG windows: OK' \
  build-tsan/hvdrun -np 2 build-tsan/tests/timeline_prog windows "$tsandir"
tsan_job "completion callbacks from 4 threads on process sets" 3 'CASE callbacks: OK' \
  build-tsan/hvdrun -np 3 build-tsan/tests/runtime_check callbacks
# What srun sets for two tasks on one node: rank 0 serves the rendezvous on a thread
# of its own, started by hvd_init.
tsan_job "srun-style job, rank 0 serving the rendezvous" 2 'CASE threads: OK' \
  sh -c 'export SLURM_STEP_NUM_TASKS=2 SLURM_STEP_TASKS_PER_NODE=2 SLURM_NODEID=0
         export SLURM_STEP_NUM_NODES=1 SLURM_JOB_ID=1 HVD_RENDEZVOUS_ADDR=127.0.0.1
         export HVD_RENDEZVOUS_PORT=$1
         SLURM_PROCID=1 SLURM_LOCALID=1 $2 threads & SLURM_PROCID=0 SLURM_LOCALID=0 $2 threads
         a=$?; wait $!; exit $((a + $?))' sh $((20000 + RANDOM % 20000)) build-tsan/tests/runtime_check
rm -rf "$tsandir"
stage "TSan: multi-threaded jobs" $st

echo "== libFuzzer harnesses (fuzz/run.sh: 45 s each, two at a time)"
FUZZ_JOBS=2 fuzz/run.sh 45
stage "libFuzzer harnesses" $?

echo "== tests finished in $(( $(date +%s) - start )) s"
echo "stages: $passed passed, $failed failed"
[ $failed -eq 0 ]
