#!/usr/bin/env bash
# compare-ompi.sh: hvd-bench (raw collectives) against Open MPI on this host, same
# sizes, data, timing method and columns (tools/mpi-bench/mpi_allreduce_bench.c).
#
#   tools/compare-ompi.sh [--quick] [--rounds R] [--np "2 4"] [--colls "allreduce ..."]
#                         [-b MIN] [-e MAX] [-f FACTOR] [--pinned] [--ucx] [--sweep]
#                         [--out DIR]
#   tools/compare-ompi.sh --selection [--np "2 3 4"] [-b 8] [-e 16M] [--rounds R] [--pin]
#
# Comparison: for each np, collective and size, R rounds of (hvd run, Open MPI run)
# back to back, one size per run, the order swapped every round, so that both halves of
# a pair see the same machine: on this VM mid-size transfers between the two cores run
# at one of two speeds ~3x apart for seconds at a time, for both libraries alike
# (docs/performance.md, "Two speeds"), and pairs a whole sweep apart compared the two
# speeds rather than the libraries. --sweep instead runs whole -b..-e sweeps per round
# (faster, one launch per library and round). Per size it prints the median over rounds
# of each busbw, the median over rounds of the per-round ratio hvd/ompi, and hvd's
# memory efficiency (allreduce), as markdown tables that can be pasted into
# docs/performance.md (also written to OUT/compare.md). The memory bandwidth behind
# the efficiency is measured once (hvd-bench's B_mem) and passed to every run. Around
# every pair core-latency probes which speed the machine is in (before, between,
# after); two more columns compare hvd's and Open MPI's median busbw over the runs
# made in the fast speed (both probes around the run under 300 ns), and in the slow one.
# Open MPI runs with its defaults (pml ob1 + btl vader on one host); --ucx adds a
# third column set with --mca pml ucx. np > cores uses --oversubscribe.
# hvdrun's default binding (--bind-to auto) gives each local rank its share of the
# cores (one core each when np <= cores, none when ranks outnumber cores), as Open MPI
# binds each rank to a core when np <= cores. --pinned adds a third run per round,
# "hvd-pinned", each rank started under taskset -c (local rank mod cores), which also
# pins oversubscribed ranks.
# RUN_TIMEOUT (seconds, default 1800) bounds each benchmark run.
#
# Selection (--selection): allreduce with -a ring, tree and rd interleaved, R rounds,
# at each np; prints the median time per algorithm and size and the fastest one
# (OUT/selection.md): the data behind the rules[] table in collectives/select.c.
# --pin runs the hvd ranks under taskset as above.
#
# Needs: a build of hvd (HVD_BUILD_DIR, default build-bench; configured and built
# here if hvd-bench is missing), mpicc/mpirun (installed with apt-get if missing),
# python3 for the tables.
set -euo pipefail

ARGS="$*"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${HVD_BUILD_DIR:-$ROOT/build-bench}
OUT=""
ROUNDS=3
NPS=""
COLLS="allreduce allgather reducescatter broadcast"
MINB=8
MAXB=64M
FACTOR=2
QUICK=0
UCX=0
SELECTION=0
EXTRA_HVD=""
PINNED=0
PIN=0
SWEEP=0
RUN_TIMEOUT=${RUN_TIMEOUT:-1800} # seconds per benchmark run; a hung run fails the script

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; } # the header

while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --rounds) ROUNDS=$2; shift ;;
    --np) NPS=$2; shift ;;
    --colls) COLLS=$2; shift ;;
    -b) MINB=$2; shift ;;
    -e) MAXB=$2; shift ;;
    -f) FACTOR=$2; shift ;;
    --ucx) UCX=1 ;;
    --pinned) PINNED=1 ;;
    --pin) PIN=1 ;;
    --sweep) SWEEP=1 ;;
    --out) OUT=$2; shift ;;
    --selection) SELECTION=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "compare-ompi.sh: error: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
if [ "$QUICK" = 1 ]; then
  MAXB=1M; FACTOR=4; EXTRA_HVD="-w 2"
fi
if [ "$SELECTION" = 1 ]; then
  [ -n "$NPS" ] || NPS="2 3 4"
  [ "$MAXB" != 64M ] || MAXB=16M
else
  [ -n "$NPS" ] || NPS="2 4"
fi
[ "$ROUNDS" -ge 1 ] 2>/dev/null || { echo "compare-ompi.sh: error: --rounds needs a positive integer" >&2; exit 2; }
OUT=${OUT:-$BUILD/compare-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT/raw"

say() { echo "[compare-ompi] $*" >&2; }

# ---- build ---------------------------------------------------------------------------
if [ ! -x "$BUILD/hvd-bench" ] || [ ! -x "$BUILD/hvdrun" ]; then
  say "building hvd in $BUILD"
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$BUILD" -j2 --target hvd-bench hvdrun core-latency >/dev/null

MPIBENCH=$BUILD/mpi-bench/mpi_allreduce_bench
if [ "$SELECTION" = 0 ]; then
  if ! command -v mpicc >/dev/null || ! command -v mpirun >/dev/null; then
    say "installing Open MPI (openmpi-bin libopenmpi-dev)"
    apt-get update >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y openmpi-bin libopenmpi-dev >/dev/null
  fi
  mkdir -p "$BUILD/mpi-bench"
  mpicc -O2 -g -std=gnu11 -Wall -Wextra -I "$ROOT/tools/hvd-bench" \
    "$ROOT/tools/mpi-bench/mpi_allreduce_bench.c" -o "$MPIBENCH" -lm
fi

NCPU=$(nproc)
mpirun_for() { # np
  local args=(-np "$1")
  [ "$(id -u)" = 0 ] && args+=(--allow-run-as-root)
  [ "$1" -gt "$NCPU" ] && args+=(--oversubscribe)
  echo "${args[@]}"
}

run_hvd() { # np coll algo outfile [pin [bmem]]
  local pre=() bm=()
  [ "${5:-0}" = 1 ] && pre=(sh -c "exec taskset -c \$((HVD_LOCAL_RANK % $NCPU)) \"\$0\" \"\$@\"")
  [ -n "${6:-}" ] && bm=(--bmem "$6")
  timeout "$RUN_TIMEOUT" "$BUILD/hvdrun" -np "$1" --no-tag-output "${pre[@]}" "$BUILD/hvd-bench" -c "$2" -a "$3" \
    -b "$MINB" -e "$MAXB" -f "$FACTOR" --csv $EXTRA_HVD "${bm[@]}" >"$4" 2>"$4.err" ||
    { say "hvd-bench failed (np $1 $2 $3), see $4.err"; tail -5 "$4.err" >&2; return 1; }
}

bmem_of() { # csv file -> GB/s read+write from the header, or empty
  sed -n 's/^# B_mem: \([0-9.]*\) GB.*/\1/p' "$1" | head -1
}

run_ompi() { # np coll outfile bmem [extra mca...]
  local np=$1 coll=$2 out=$3 bmem=$4
  shift 4
  local bm=()
  [ -n "$bmem" ] && bm=(--bmem "$bmem")
  # shellcheck disable=SC2046
  timeout "$RUN_TIMEOUT" mpirun $(mpirun_for "$np") "$@" "$MPIBENCH" -c "$coll" -b "$MINB" -e "$MAXB" -f "$FACTOR" \
    --csv $EXTRA_HVD "${bm[@]}" >"$out" 2>"$out.err" ||
    { say "MPI bench failed (np $np $coll $*), see $out.err"; tail -5 "$out.err" >&2; return 1; }
}

{
  echo "# host: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
  echo "# date: $(date -u +%FT%TZ); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# hvd commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo ?)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (+ local changes)')"
  command -v mpirun >/dev/null && echo "# $(mpirun --version 2>/dev/null | head -1)"
  echo "# command: $0 $ARGS"
} >"$OUT/env.txt"

# ---- selection -----------------------------------------------------------------------
if [ "$SELECTION" = 1 ]; then
  for np in $NPS; do
    for r in $(seq 1 "$ROUNDS"); do
      for algo in ring tree rd; do
        say "selection np=$np round $r/$ROUNDS algo $algo"
        run_hvd "$np" allreduce "$algo" "$OUT/raw/sel_np${np}_${algo}_r${r}.csv" "$PIN"
      done
    done
  done
  echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/env.txt"
  python3 - "$OUT" "$NPS" <<'EOF' | tee "$OUT/selection.md"
import csv, glob, os, re, statistics, sys
out, nps = sys.argv[1], sys.argv[2].split()
def rows(path):
    with open(path) as f:
        return [r for r in csv.reader(l for l in f if l.strip() and not l.startswith('#'))]
print(open(os.path.join(out, 'env.txt')).read().replace('# ', '').rstrip().replace('\n', '  \n'))
print()
for np in nps:
    t = {}
    for path in glob.glob(os.path.join(out, 'raw', f'sel_np{np}_*_r*.csv')):
        algo = re.search(r'_np\d+_(\w+?)_r\d+\.csv$', path).group(1)
        for r in rows(path):
            t.setdefault(int(r[0]), {}).setdefault(algo, []).append(float(r[5]))
    print(f'**np = {np}** (median over rounds of the median per-iteration time, µs; bold = fastest)\n')
    print('| size (B) | ring | tree | rd | fastest | rd/ring |')
    print('|---:|---:|---:|---:|:---|---:|')
    for size in sorted(t):
        med = {a: statistics.median(v) for a, v in t[size].items()}
        best = min(med, key=med.get)
        cells = []
        for a in ('ring', 'tree', 'rd'):
            cells.append(('**%.1f**' if a == best else '%.1f') % med[a] if a in med else '-')
        ratio = med['rd'] / med['ring'] if 'rd' in med and 'ring' in med else float('nan')
        print(f'| {size} | ' + ' | '.join(cells) + f' | {best} | {ratio:.2f} |')
    print()
EOF
  say "tables in $OUT/selection.md"
  exit 0
fi

# ---- comparison ----------------------------------------------------------------------
sizes() { # MINB MAXB FACTOR -> the sizes a sweep visits, one per line (K/M/G suffixes)
  python3 - "$@" <<'EOF'
import sys
def b(v):
    m = {'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30}
    return int(float(v[:-1]) * m[v[-1].upper()]) if v[-1].upper() in m else int(v)
lo, hi, f = b(sys.argv[1]), b(sys.argv[2]), float(sys.argv[3])
s = lo
while s <= hi:
    print(s)
    n = int(s * f)
    s = n if n > s else s + 1
EOF
}

keep_rows() { # csv file -> appended to $2 without comment lines
  grep -v '^#' "$1" >>"$2" || true
}

probe() { # ns: a cache line's round trip between CPUs 0 and 1 (median of 3), or 0
  [ "$NCPU" -ge 2 ] || { echo 0; return; }
  "$BUILD/core-latency" -n 3 -i 10 -r 20000 2>/dev/null | awk '{print $3}' | sort -n | sed -n 2p
}

if [ "$SWEEP" = 0 ]; then
  # B_mem once (hvd-bench measures it on rank 0), then one size per run, pairs back to back.
  say "measuring memory bandwidth (B_mem)"
  ALLMINB=$MINB ALLMAXB=$MAXB
  MINB=8 MAXB=8
  run_hvd 1 allreduce auto "$OUT/raw/bmem.csv"
  BMEM=$(bmem_of "$OUT/raw/bmem.csv")
  one=$OUT/raw/one.csv
  for np in $NPS; do
    for coll in $COLLS; do
      for size in $(sizes "$ALLMINB" "$ALLMAXB" "$FACTOR"); do
        MINB=$size MAXB=$size
        for r in $(seq 1 "$ROUNDS"); do
          say "np=$np $coll $size B round $r/$ROUNDS"
          order="hvd ompi"
          [ $((r % 2)) = 0 ] && order="ompi hvd"
          probes=$(probe)
          for who in $order; do
            if [ "$who" = hvd ]; then
              run_hvd "$np" "$coll" auto "$one" 0 "$BMEM"
            else
              run_ompi "$np" "$coll" "$one" "$BMEM"
            fi
            keep_rows "$one" "$OUT/raw/np${np}_${coll}_${who}_r${r}.csv"
            probes="$probes $(probe)"
          done
          echo "$np $coll $size $r $probes" >>"$OUT/raw/probes.txt"
          if [ "$PINNED" = 1 ]; then
            run_hvd "$np" "$coll" auto "$one" 1 "$BMEM"
            keep_rows "$one" "$OUT/raw/np${np}_${coll}_hvdpin_r${r}.csv"
          fi
          if [ "$UCX" = 1 ]; then
            run_ompi "$np" "$coll" "$one" "$BMEM" --mca pml ucx
            keep_rows "$one" "$OUT/raw/np${np}_${coll}_ucx_r${r}.csv"
          fi
        done
      done
    done
  done
  MINB=$ALLMINB MAXB=$ALLMAXB
  echo "# pairing: one size per run, hvd and Open MPI back to back, order swapped each round; B_mem ${BMEM:-?} GB/s" >>"$OUT/env.txt"
fi

for np in $NPS; do
  [ "$SWEEP" = 1 ] || break
  for coll in $COLLS; do
    for r in $(seq 1 "$ROUNDS"); do

      say "np=$np $coll round $r/$ROUNDS: hvd"
      f=$OUT/raw/np${np}_${coll}_hvd_r${r}.csv
      run_hvd "$np" "$coll" auto "$f"
      bm=$(bmem_of "$f")
      say "np=$np $coll round $r/$ROUNDS: ompi"
      run_ompi "$np" "$coll" "$OUT/raw/np${np}_${coll}_ompi_r${r}.csv" "$bm"
      if [ "$PINNED" = 1 ]; then
        say "np=$np $coll round $r/$ROUNDS: hvd pinned"
        run_hvd "$np" "$coll" auto "$OUT/raw/np${np}_${coll}_hvdpin_r${r}.csv" 1
      fi
      if [ "$UCX" = 1 ]; then
        say "np=$np $coll round $r/$ROUNDS: ompi pml ucx"
        run_ompi "$np" "$coll" "$OUT/raw/np${np}_${coll}_ucx_r${r}.csv" "$bm" --mca pml ucx
      fi
    done
  done
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/env.txt"

python3 - "$OUT" "$NPS" "$COLLS" "$UCX" "$PINNED" <<'EOF' | tee "$OUT/compare.md"
import csv, glob, os, statistics, sys
out, nps, colls = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
ucx, pinned = sys.argv[4] == '1', sys.argv[5] == '1'
def load(np, coll, impl):
    runs = []
    paths = glob.glob(os.path.join(out, 'raw', f'np{np}_{coll}_{impl}_r*.csv'))
    for path in sorted(paths, key=lambda p: int(p.rsplit('_r', 1)[1].split('.')[0])):
        with open(path) as f:
            rs = [r for r in csv.reader(l for l in f if l.strip() and not l.startswith('#'))]
        runs.append({int(r[0]): r for r in rs})
    return runs
def med(v):
    return statistics.median(v) if v else float('nan')
probes = {}  # (np, coll, size, round) -> probe ns before, between and after the pair
if os.path.exists(os.path.join(out, 'raw', 'probes.txt')):
    for l in open(os.path.join(out, 'raw', 'probes.txt')):
        f = l.split()
        if len(f) >= 7 and all(x.replace('.', '', 1).isdigit() for x in f[4:]) and float(f[4]) > 0:
            probes[(f[0], f[1], int(f[2]), int(f[3]))] = [float(x) for x in f[4:]]
print(open(os.path.join(out, 'env.txt')).read().replace('# ', '').rstrip().replace('\n', '  \n'))
print()
for np in nps:
    for coll in colls:
        hvd, ompi = load(np, coll, 'hvd'), load(np, coll, 'ompi')
        pin = load(np, coll, 'hvdpin') if pinned else []
        u = load(np, coll, 'ucx') if ucx else []
        if not hvd:
            continue
        ar = coll == 'allreduce'
        head = '| size (B) | hvd time (µs) | hvd busbw | ompi time (µs) | ompi busbw | hvd/ompi |'
        line = '|---:|---:|---:|---:|---:|---:|'
        if probes:
            head += ' hvd/ompi fast speed (runs) | hvd/ompi slow speed (runs) |'; line += '---:|---:|'
        if pin:
            head += ' hvd-pinned time (µs) | hvd-pinned busbw | pinned/ompi |'; line += '---:|---:|---:|'
        if u:
            head += ' ompi-ucx busbw | hvd/ucx |'; line += '---:|---:|'
        if ar:
            head += ' hvd memeff |'; line += '---:|'
            if pin:
                head += ' hvd-pinned memeff |'; line += '---:|'
            head += ' ompi memeff |'; line += '---:|'
        bad = sum(int(r[8]) for run in hvd + ompi + pin + u for r in run.values() if r[8].isdigit())
        print(f'**{coll}, np = {np}** ({len(hvd)} interleaved rounds; busbw in GB/s; medians over rounds; '
              f'ratios = median of the per-round busbw ratios, i.e. Open MPI time / hvd time; #wrong total {bad})\n')
        print(head); print(line)
        def col(runs, size, k):
            return [float(run[size][k]) for run in runs if size in run and run[size][k] not in ('-', 'N/A')]
        def ratio(a, b, size):  # busbw a/b = time b/a (same size): from the times, which
            # keep their digits for the smallest sizes, where busbw rounds to 0.001
            return med([float(y[size][5]) / float(x[size][5]) for x, y in zip(a, b)
                        if size in x and size in y and float(x[size][5]) > 0])
        for size in sorted(hvd[0]):
            cells = [f'{med(col(hvd, size, 5)):.1f}', f'{med(col(hvd, size, 7)):.3f}',
                     f'{med(col(ompi, size, 5)):.1f}', f'{med(col(ompi, size, 7)):.3f}',
                     f'{ratio(hvd, ompi, size):.2f}']
            if probes:
                # each run's speed from the probes just before and after it (odd rounds
                # ran hvd first); median times per library and speed, compared
                for slow in (False, True):
                    t = {'hvd': [], 'ompi': []}  # times (µs): busbw ratio = inverse time ratio
                    for r in range(len(hvd)):
                        p = probes.get((np, coll, size, r + 1))
                        if not p or len(p) < 3:
                            continue
                        first, second = ('hvd', 'ompi') if (r + 1) % 2 else ('ompi', 'hvd')
                        for who, (a, b) in ((first, p[0:2]), (second, p[1:3])):
                            runs = hvd if who == 'hvd' else ompi
                            if (a >= 300) == slow and (b >= 300) == slow and r < len(runs) and size in runs[r]:
                                t[who].append(float(runs[r][size][5]))
                    ok = t['hvd'] and t['ompi'] and med(t['hvd']) > 0
                    cells += [f"{med(t['ompi']) / med(t['hvd']):.2f} ({len(t['hvd'])}/{len(t['ompi'])})"
                              if ok else f"- ({len(t['hvd'])}/{len(t['ompi'])})"]
            if pin:
                cells += [f'{med(col(pin, size, 5)):.1f}', f'{med(col(pin, size, 7)):.3f}',
                          f'{ratio(pin, ompi, size):.2f}']
            if u:
                cells += [f'{med(col(u, size, 7)):.3f}', f'{ratio(hvd, u, size):.2f}']
            if ar:
                cells += [f'{med(col(hvd, size, 9)):.3f}']
                if pin:
                    cells += [f'{med(col(pin, size, 9)):.3f}']
                cells += [f'{med(col(ompi, size, 9)):.3f}']
            print(f'| {size} | ' + ' | '.join(cells) + ' |')
        print()
EOF
say "tables in $OUT/compare.md, raw CSV in $OUT/raw"
