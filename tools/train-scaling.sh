#!/usr/bin/env bash
# train-scaling.sh: hvd-train's weak scaling on this host, np=1 against np=2 (the same
# samples per rank per step), paired and repeated.
#
#   tools/train-scaling.sh [--rounds R] [--per-rank "64 256"] [--epochs E] [--np N] [--mpi]
#
# Each round runs, back to back: core-latency (a cache line's round trip between CPUs
# 0 and 1: which of the VM's "two speeds" the machine is in, docs/performance.md),
# hvd-train alone with B samples per step, hvdrun -np N hvd-train with N*B,
# hvdrun -np N hvd-train --sync-only with N*B (every step negotiates and waits for the
# slowest rank as in training, but each gradient allreduce carries one element: the
# step without the bytes), N independent one-rank hvd-train runs at once, each pinned
# to its own CPU (what N ranks would do with no communication at all: the machine's
# own ceiling, lower than N x np=1 when the host slows one vCPU down while the other
# computes), and core-latency again. Efficiency of a round = (np=N samples/s) / (N x
# np=1 samples/s); sync-only's efficiency the same with its samples/s; the ceiling =
# (sum of the N independent runs) / (N x np=1), and np=N / that sum is the share of
# the ceiling hvd reached. So ceiling -> sync-only is what waiting for each other
# costs, sync-only -> np=N what moving the gradients costs;
# the summary gives the median over rounds, also split by the speed the probes saw
# (fast: both probes under 300 ns). One BLAS thread per rank (hvd-train's default).
# --mpi adds a run to every round, right after hvd's np=N: the same trainer with Open
# MPI as its allreduce backend (hvd-train-mpi: hvd's calls as MPI_Iallreduce and
# MPI_Ibcast, tools/mpi-bench/hvd_on_mpi.c), mpirun -np N with Open MPI's defaults (pml
# ob1, btl vader, ranks bound to cores); it reports that run's efficiency over the same
# np=1 and hvd's samples/s over Open MPI's (the ratio a user switching from Open MPI
# would see). Needs libopenmpi-dev (installed with apt-get if mpicc is missing).
# Needs a build (HVD_BUILD_DIR, default build-bench; configured and built here if
# hvd-train is missing) and the Fashion-MNIST files (scripts/setup.sh installs them).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${HVD_BUILD_DIR:-$ROOT/build-bench}
ROUNDS=5
PER_RANK="64 256"
EPOCHS=1
NP=2
MPI=0
RUN_TIMEOUT=${RUN_TIMEOUT:-600}

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; } # the header
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift ;;
    --per-rank) PER_RANK=$2; shift ;;
    --epochs) EPOCHS=$2; shift ;;
    --np) NP=$2; shift ;;
    --mpi) MPI=1 ;;
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
if [ "$MPI" = 1 ]; then
  if ! command -v mpicc >/dev/null || ! command -v mpirun >/dev/null; then
    echo "[train-scaling] installing Open MPI (openmpi-bin libopenmpi-dev)" >&2
    apt-get update >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y openmpi-bin libopenmpi-dev >/dev/null
  fi
  cmake -S "$ROOT" -B "$BUILD" >/dev/null # finds MPI now if it was just installed
  cmake --build "$BUILD" -j2 --target hvd-train-mpi >/dev/null ||
    { echo "train-scaling.sh: could not build hvd-train-mpi (is libopenmpi-dev installed?)" >&2; exit 1; }
  MPIRUN=(mpirun -np "$NP")
  [ "$(id -u)" = 0 ] && MPIRUN+=(--allow-run-as-root)
  [ "$NP" -gt "$(nproc)" ] && MPIRUN+=(--oversubscribe)
fi

probe() { # median of 3 samples of 20k round trips, ns
  "$BUILD/core-latency" -n 3 -i 10 -r 20000 | awk '{print $3}' | sort -n | sed -n 2p
}
ratio() { # a b -> a / b, 3 decimals
  awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'
}
rate() { # command... -> samples/s of the epoch line (the last epoch's)
  timeout "$RUN_TIMEOUT" "$@" 2>&1 | sed -n 's/.*samples\/s \([0-9]*\).*/\1/p' | tail -1
}

echo "# host: $(nproc) cores; hvd commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo ?); $(date -u +%FT%TZ)"
echo "# per round: core-latency, hvd-train --batch B, hvdrun -np $NP hvd-train --batch $NP*B,$([ "$MPI" = 1 ] && echo " mpirun -np $NP hvd-train-mpi --batch $NP*B,") the same with --sync-only, $NP pinned hvd-train --batch B at once, core-latency; --epochs $EPOCHS"
[ "$MPI" = 1 ] && echo "# $(mpirun --version 2>/dev/null | head -1)"
printf '%-10s %6s %12s %12s %10s %9s %12s %8s %9s %12s %8s %8s %14s\n' per_rank round np1_samp/s \
  "np${NP}_samp/s" efficiency sync_eff "${NP}x1_samp/s" ceiling of_ceil mpi_samp/s mpi_eff hvd/mpi probes_ns
out=$(mktemp)
trap 'rm -f "$out" "$out".[0-9]*' EXIT
for b in $PER_RANK; do
  for r in $(seq 1 "$ROUNDS"); do
    p1=$(probe)
    one=$(rate "$BUILD/hvd-train" --epochs "$EPOCHS" --batch "$b")
    many=$(rate "$BUILD/hvdrun" -np "$NP" "$BUILD/hvd-train" --epochs "$EPOCHS" --batch $((NP * b)))
    mpi=-
    if [ "$MPI" = 1 ]; then
      mpi=$(rate "${MPIRUN[@]}" "$BUILD/hvd-train-mpi" --epochs "$EPOCHS" --batch $((NP * b)))
      [ -n "$mpi" ] || { echo "train-scaling.sh: the Open MPI run printed no samples/s" >&2; exit 1; }
    fi
    sync=$(rate "$BUILD/hvdrun" -np "$NP" "$BUILD/hvd-train" --epochs "$EPOCHS" --batch $((NP * b)) --sync-only)
    for i in $(seq 0 $((NP - 1))); do # the ceiling: NP independent runs at once
      rate taskset -c $((i % $(nproc))) "$BUILD/hvd-train" --epochs "$EPOCHS" --batch "$b" >"$out.$i" &
    done
    wait
    pair=$(cat "$out".[0-9]* | awk '{ s += $1; n++ } END { if (n) print s }')
    rm -f "$out".[0-9]*
    p2=$(probe)
    [ -n "$one" ] && [ -n "$many" ] && [ -n "$sync" ] && [ -n "$pair" ] ||
      { echo "train-scaling.sh: a run printed no samples/s" >&2; exit 1; }
    ideal=$((NP * one))
    eff=$(ratio "$many" "$ideal") seff=$(ratio "$sync" "$ideal")
    ceil=$(ratio "$pair" "$ideal") ofc=$(ratio "$many" "$pair")
    meff=- hvdmpi=-
    [ "$mpi" != - ] && meff=$(ratio "$mpi" "$ideal") hvdmpi=$(ratio "$many" "$mpi")
    printf '%-10s %6s %12s %12s %10s %9s %12s %8s %9s %12s %8s %8s %7s %6s\n' "$b" "$r" "$one" "$many" \
      "$eff" "$seff" "$pair" "$ceil" "$ofc" "$mpi" "$meff" "$hvdmpi" "$p1" "$p2"
    echo "$b $eff $p1 $p2 $ceil $ofc $meff $hvdmpi $seff" >>"$out"
  done
done
echo
python3 - "$out" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
mpi = any(r[6] != '-' for r in rows)
print('| samples per rank | rounds | efficiency (median) | min-max | fast-speed rounds: median (n) | slow: median (n) | sync-only efficiency (median, min-max) | ceiling (median, min-max) | share of the ceiling (median, min-max) |'
      + (' Open MPI efficiency (median, min-max) | hvd / Open MPI samples/s (median, min-max) |' if mpi else ''))
print('|---:|---:|---:|---|---|---|---|---|---|' + ('---|---|' if mpi else ''))
for b in dict.fromkeys(r[0] for r in rows):
    e = [float(r[1]) for r in rows if r[0] == b]
    fast = [float(r[1]) for r in rows if r[0] == b and float(r[2]) < 300 and float(r[3]) < 300]
    slow = [float(r[1]) for r in rows if r[0] == b and (float(r[2]) >= 300 or float(r[3]) >= 300)]
    f = lambda v: '%.2f (%d)' % (statistics.median(v), len(v)) if v else '- (0)'
    c = [float(r[4]) for r in rows if r[0] == b]
    o = [float(r[5]) for r in rows if r[0] == b]
    g = lambda v: '%.2f (%.2f-%.2f)' % (statistics.median(v), min(v), max(v))
    tail = ''
    if mpi:
        me = [float(r[6]) for r in rows if r[0] == b]
        hr = [float(r[7]) for r in rows if r[0] == b]
        tail = f' {g(me)} | {g(hr)} |'
    se = [float(r[8]) for r in rows if r[0] == b]
    print(f'| {b} | {len(e)} | {statistics.median(e):.2f} | {min(e):.2f}-{max(e):.2f} | {f(fast)} | {f(slow)} | {g(se)} | {g(c)} | {g(o)} |' + tail)
EOF
