#!/usr/bin/env bash
# train-scaling.sh: hvd-train's weak scaling on this host, np=1 against np=2 (the same
# samples per rank per step), paired and repeated.
#
#   tools/train-scaling.sh [--rounds R] [--per-rank "64 256"] [--epochs E] [--np N]
#
# Each round runs, back to back: core-latency (a cache line's round trip between CPUs
# 0 and 1: which of the VM's "two speeds" the machine is in, docs/performance.md),
# hvd-train alone with B samples per step, hvdrun -np N hvd-train with N*B, N
# independent one-rank hvd-train runs at once, each pinned to its own CPU (what N ranks
# would do with no communication at all: the machine's own ceiling, lower than N x
# np=1 when the host slows one vCPU down while the other computes), and core-latency
# again. Efficiency of a round = (np=N samples/s) / (N x np=1 samples/s); the ceiling
# = (sum of the N independent runs) / (N x np=1), and np=N / that sum is the share of
# the ceiling hvd reached;
# the summary gives the median over rounds, also split by the speed the probes saw
# (fast: both probes under 300 ns). One BLAS thread per rank (hvd-train's default).
# Needs a build (HVD_BUILD_DIR, default build-bench; configured and built here if
# hvd-train is missing) and the Fashion-MNIST files (scripts/setup.sh installs them).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${HVD_BUILD_DIR:-$ROOT/build-bench}
ROUNDS=5
PER_RANK="64 256"
EPOCHS=1
NP=2
RUN_TIMEOUT=${RUN_TIMEOUT:-600}

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; } # the header
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift ;;
    --per-rank) PER_RANK=$2; shift ;;
    --epochs) EPOCHS=$2; shift ;;
    --np) NP=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "train-scaling.sh: error: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
for v in "$ROUNDS" "$EPOCHS" "$NP" $PER_RANK; do
  [ "$v" -ge 1 ] 2>/dev/null || { echo "train-scaling.sh: error: '$v' is not a positive integer" >&2; exit 2; }
done

if [ ! -x "$BUILD/hvd-train" ] || [ ! -x "$BUILD/hvdrun" ]; then
  echo "[train-scaling] building hvd in $BUILD" >&2
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$BUILD" -j2 --target hvd-train hvdrun core-latency >/dev/null

probe() { # median of 3 samples of 20k round trips, ns
  "$BUILD/core-latency" -n 3 -i 10 -r 20000 | awk '{print $3}' | sort -n | sed -n 2p
}
rate() { # command... -> samples/s of the epoch line (the last epoch's)
  timeout "$RUN_TIMEOUT" "$@" 2>&1 | sed -n 's/.*samples\/s \([0-9]*\).*/\1/p' | tail -1
}

echo "# host: $(nproc) cores; hvd commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo ?); $(date -u +%FT%TZ)"
echo "# per round: core-latency, hvd-train --batch B, hvdrun -np $NP hvd-train --batch $NP*B, core-latency; --epochs $EPOCHS"
printf '%-10s %6s %12s %12s %10s %12s %8s %9s %14s\n' per_rank round np1_samp/s "np${NP}_samp/s" \
  efficiency "${NP}x1_samp/s" ceiling of_ceil probes_ns
out=$(mktemp)
trap 'rm -f "$out" "$out".[0-9]*' EXIT
for b in $PER_RANK; do
  for r in $(seq 1 "$ROUNDS"); do
    p1=$(probe)
    one=$(rate "$BUILD/hvd-train" --epochs "$EPOCHS" --batch "$b")
    many=$(rate "$BUILD/hvdrun" -np "$NP" "$BUILD/hvd-train" --epochs "$EPOCHS" --batch $((NP * b)))
    for i in $(seq 0 $((NP - 1))); do # the ceiling: NP independent runs at once
      rate taskset -c $((i % $(nproc))) "$BUILD/hvd-train" --epochs "$EPOCHS" --batch "$b" >"$out.$i" &
    done
    wait
    pair=$(cat "$out".[0-9]* | awk '{ s += $1; n++ } END { if (n) print s }')
    rm -f "$out".[0-9]*
    p2=$(probe)
    [ -n "$one" ] && [ -n "$many" ] && [ -n "$pair" ] ||
      { echo "train-scaling.sh: a run printed no samples/s" >&2; exit 1; }
    eff=$(awk -v a="$one" -v m="$many" -v n="$NP" 'BEGIN { printf "%.3f", m / (n * a) }')
    ceil=$(awk -v a="$one" -v p="$pair" -v n="$NP" 'BEGIN { printf "%.3f", p / (n * a) }')
    ofc=$(awk -v m="$many" -v p="$pair" 'BEGIN { printf "%.3f", m / p }')
    printf '%-10s %6s %12s %12s %10s %12s %8s %9s %7s %6s\n' "$b" "$r" "$one" "$many" "$eff" \
      "$pair" "$ceil" "$ofc" "$p1" "$p2"
    echo "$b $eff $p1 $p2 $ceil $ofc" >>"$out"
  done
done
echo
python3 - "$out" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
print('| samples per rank | rounds | efficiency (median) | min-max | fast-speed rounds: median (n) | slow: median (n) | ceiling (median, min-max) | share of the ceiling (median, min-max) |')
print('|---:|---:|---:|---|---|---|---|---|')
for b in dict.fromkeys(r[0] for r in rows):
    e = [float(r[1]) for r in rows if r[0] == b]
    fast = [float(r[1]) for r in rows if r[0] == b and float(r[2]) < 300 and float(r[3]) < 300]
    slow = [float(r[1]) for r in rows if r[0] == b and (float(r[2]) >= 300 or float(r[3]) >= 300)]
    f = lambda v: '%.2f (%d)' % (statistics.median(v), len(v)) if v else '- (0)'
    c = [float(r[4]) for r in rows if r[0] == b]
    o = [float(r[5]) for r in rows if r[0] == b]
    g = lambda v: '%.2f (%.2f-%.2f)' % (statistics.median(v), min(v), max(v))
    print(f'| {b} | {len(e)} | {statistics.median(e):.2f} | {min(e):.2f}-{max(e):.2f} | {f(fast)} | {f(slow)} | {g(c)} | {g(o)} |')
EOF
