#!/usr/bin/env bash
# Soak test: np ranks run tests/integration/progs/soak_prog.c for a while (random
# collectives, sizes, names, dtypes and reductions, every result checked), then this
# prints a summary and fails on any error or on resident-memory growth.
#   scripts/soak.sh [minutes] [np]       defaults: 10 minutes, 4 ranks
# minutes may be fractional, or a number of seconds with an "s" suffix (CI's smoke
# run: scripts/soak.sh 20s 4). Environment:
#   HVD_BUILD=DIR             build tree to use (default build/; built if missing)
#   SOAK_SEED=N               schedule seed (default: the date, printed)
#   SOAK_RSS_BOUND_KB=N       allowed VmRSS growth per rank from the end of the
#                             warm-up to the end (default 16384 kB); the growth in
#                             the second half of the run must also stay under half of it;
#                             "none" skips the check (a sanitizer build, whose allocator
#                             keeps freed memory in quarantine, grows by design)
#   HVD_CACHE_CAPACITY        default 64 here (the name pool is 120), so the response
#                             cache evicts by capacity as well as by shape changes
# Exits 0 only if every rank reported, with zero errors and memory within the bound.
set -uo pipefail
cd "$(dirname "$0")/.."

arg=${1:-10}
np=${2:-4}
case "$arg" in
  *s) seconds=${arg%s} ;;
  *) seconds=$(awk -v m="$arg" 'BEGIN { printf "%d", m * 60 }') ;;
esac
[[ "$seconds" =~ ^[0-9]+$ && "$seconds" -gt 0 && "$np" =~ ^[0-9]+$ && "$np" -gt 0 ]] ||
  { echo "usage: scripts/soak.sh [minutes | SECONDSs] [np]" >&2; exit 2; }
build=${HVD_BUILD:-build}
seed=${SOAK_SEED:-$(date +%s)}
bound=${SOAK_RSS_BOUND_KB:-16384}
export HVD_CACHE_CAPACITY=${HVD_CACHE_CAPACITY:-64}

if [ ! -x "$build/tests/soak_prog" ] || [ ! -x "$build/hvdrun" ]; then
  HVD_BUILD_TARGETS="hvdrun soak_prog" scripts/setup.sh "$build" >/dev/null || exit 1
fi

log=$(mktemp /tmp/hvd-soak.XXXXXX)
echo "soak: $np ranks for $seconds s, seed $seed, log $log"
# Generous outer deadline: the last step may be a large one, and shutdown is bounded.
timeout $((seconds + 300)) "$build/hvdrun" -np "$np" "$build/tests/soak_prog" \
  --seconds "$seconds" --seed "$seed" --report "$(( seconds >= 600 ? 60 : seconds >= 60 ? 30 : 5 ))" \
  >"$log" 2>&1
status=$?
grep -E 'soak: [0-9]+ s,' "$log" | sed 's/^\[0\]<stdout>://'

awk -v np="$np" -v bound="$bound" -v status="$status" '
  /SOAK ERROR/ { if (shown++ < 10) print "  " $0 }
  /SOAK rank [0-9]+:/ {
    for (i = 1; i <= NF; i++) v[$i] = $(i + 1)
    r = $3; sub(":", "", r)
    seen++; ops += v["ops"]; errs += v["errors"]
    grow = v["rss_end_kb"] - v["rss_start_kb"]; late = v["rss_end_kb"] - v["rss_mid_kb"]
    printf "  rank %s: %d steps, %d ops, %d errors, %d cache hits, VmRSS %d kB after warm-up, %d kB at half time, %d kB at the end (%+d kB, %+d kB in the second half), max %d kB\n",
      r, v["steps"], v["ops"], v["errors"], v["cache_hits"], v["rss_start_kb"], v["rss_mid_kb"],
      v["rss_end_kb"], grow, late, v["rss_max_kb"]
    if (bound != "none" && (grow > bound || late > bound / 2)) { bad = 1; print "  rank " r ": memory grew beyond the bound (" bound " kB; " bound / 2 " kB in the second half)" }
  }
  END {
    printf "soak summary: %d of %d ranks reported, %d operations, %d errors, hvdrun status %d\n",
      seen, np, ops, errs, status
    if (seen != np || errs != 0 || status != 0 || bad) { print "soak: FAILED"; exit 1 }
    print "soak: passed"
  }' "$log"
rc=$?
[ $rc -eq 0 ] && rm -f "$log" || echo "soak: full output in $log"
exit $rc
