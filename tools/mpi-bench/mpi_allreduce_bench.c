/*
 * mpi_allreduce_bench: the MPI side of tools/compare-ompi.sh. Same sizes, data,
 * timing method and columns as hvd-bench's raw mode, so the two can be compared line
 * by line:
 *
 *   mpirun -np 2 mpi_allreduce_bench -c allreduce|allgather|reducescatter|broadcast|alltoall
 *          -b 8 -e 256M -f 2 -d float32 -o sum -n ITERS -w WARMUP -r ROOT --check 0|1 --csv
 *
 * Per size: warmup; iterations (-n, or enough for 50 ms and >= 20, agreed with an
 * MPI_Allreduce MAX); timed loop [MPI_Barrier, untimed] t0; collective; t[i] = now - t0;
 * MPI_Allreduce MAX over t[] (slowest rank per iteration); time = median over
 * iterations. One extra run is checked element by element (#wrong summed over ranks).
 * Built by tools/compare-ompi.sh with mpicc; shares tools/hvd-bench/bench_common.h.
 */
#include <errno.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"

#define MAX_ITERS_AUTO 100000L
#define MIN_ITERS_AUTO 20L
#define TARGET_SECONDS 0.05

typedef enum { DT_FLOAT32, DT_FLOAT64, DT_INT32, DT_INT64, DT_COUNT } dt_t;
static const char *const dt_names[DT_COUNT] = {"float32", "float64", "int32", "int64"};
static const size_t dt_size[DT_COUNT] = {4, 8, 4, 8};

typedef struct opts {
  int coll, op, root, check, csv, barrier;
  dt_t dt;
  size_t min_bytes, max_bytes;
  double factor, bmem;
  long iters, warmup;
} opts_t;

static int rank_, size_;

static void die_usage(const char *fmt, const char *arg) {
  if (rank_ == 0) {
    fprintf(stderr, "mpi_allreduce_bench: error: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nusage: mpi_allreduce_bench [-c allreduce|allgather|reducescatter|broadcast|"
                    "alltoall] [-b MIN] [-e MAX] [-f FACTOR] [-d float32|float64|int32|int64] "
                    "[-o sum|min|max|prod] [-n ITERS] [-w WARMUP] [-r ROOT] [--check 0|1] "
                    "[--csv] [--barrier 0|1] [--bmem GBPS]\n");
  }
  MPI_Finalize();
  exit(2);
}

static long parse_long(const char *s, long lo, long hi) {
  char *end;
  errno = 0;
  long v = s ? strtol(s, &end, 10) : 0;
  if (s == NULL || errno || end == s || *end || v < lo || v > hi)
    die_usage("bad integer '%s'", s ? s : "");
  return v;
}

static void parse(int argc, char **argv, opts_t *o) {
  *o = (opts_t){.coll = BENCH_ALLREDUCE, .op = BENCH_OP_SUM, .check = 1, .barrier = 1,
                .dt = DT_FLOAT32, .min_bytes = 8, .max_bytes = 256u << 20, .factor = 2,
                .warmup = 5};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    int takes = strcmp(a, "--csv") != 0;
    if (takes && v == NULL) die_usage("option %s needs a value", a);
    if (!strcmp(a, "-c")) {
      if ((o->coll = bench_coll_parse(v)) < 0) die_usage("unknown collective '%s'", v);
    } else if (!strcmp(a, "-b")) {
      if (bench_parse_size(v, &o->min_bytes)) die_usage("bad size '%s'", v);
    } else if (!strcmp(a, "-e")) {
      if (bench_parse_size(v, &o->max_bytes)) die_usage("bad size '%s'", v);
    } else if (!strcmp(a, "-f")) {
      o->factor = strtod(v, NULL);
      if (!(o->factor > 1)) die_usage("bad factor '%s'", v);
    } else if (!strcmp(a, "-d")) {
      int d = -1;
      for (int k = 0; k < DT_COUNT; k++)
        if (!strcmp(v, dt_names[k])) d = k;
      if (d < 0) die_usage("datatype '%s' not supported here (float32 float64 int32 int64)", v);
      o->dt = (dt_t)d;
    } else if (!strcmp(a, "-o")) {
      o->op = bench_op_parse(v);
      if (o->op < 0 || o->op == BENCH_OP_AVG) die_usage("unsupported op '%s'", v);
    } else if (!strcmp(a, "-n")) {
      o->iters = parse_long(v, 1, 10000000);
    } else if (!strcmp(a, "-w")) {
      o->warmup = parse_long(v, 0, 1000000);
    } else if (!strcmp(a, "-r")) {
      o->root = (int)parse_long(v, 0, 1 << 20);
    } else if (!strcmp(a, "--check")) {
      o->check = (int)parse_long(v, 0, 1);
    } else if (!strcmp(a, "--barrier")) {
      o->barrier = (int)parse_long(v, 0, 1);
    } else if (!strcmp(a, "--bmem")) {
      o->bmem = strtod(v, NULL);
    } else if (!strcmp(a, "--csv")) {
      o->csv = 1;
    } else {
      die_usage("unknown argument '%s'", a);
    }
    if (takes) i++;
  }
  if (o->min_bytes > o->max_bytes) die_usage("-b is larger than -e%s", "");
  if (o->root >= size_) die_usage("-r %s: root is not a rank of this job", "");
}

/* ---- typed data ---- */
static void store(void *buf, dt_t dt, size_t i, double v) {
  switch (dt) {
  case DT_FLOAT32: ((float *)buf)[i] = (float)v; break;
  case DT_FLOAT64: ((double *)buf)[i] = v; break;
  case DT_INT32: ((int32_t *)buf)[i] = (int32_t)v; break;
  default: ((int64_t *)buf)[i] = (int64_t)v; break;
  }
}
static double load(const void *buf, dt_t dt, size_t i) {
  switch (dt) {
  case DT_FLOAT32: return ((const float *)buf)[i];
  case DT_FLOAT64: return ((const double *)buf)[i];
  case DT_INT32: return ((const int32_t *)buf)[i];
  default: return (double)((const int64_t *)buf)[i];
  }
}
static void sentinel(void *buf, dt_t dt, size_t n) {
  if (dt == DT_FLOAT32 || dt == DT_FLOAT64) memset(buf, 0xff, n * dt_size[dt]);
  else for (size_t i = 0; i < n; i++) store(buf, dt, i, dt == DT_INT32 ? 2147483647.0 : 9.0e18);
}

static MPI_Datatype mpi_dt(dt_t dt) {
  switch (dt) {
  case DT_FLOAT32: return MPI_FLOAT;
  case DT_FLOAT64: return MPI_DOUBLE;
  case DT_INT32: return MPI_INT32_T;
  default: return MPI_INT64_T;
  }
}
static MPI_Op mpi_op(int op) {
  switch (op) {
  case BENCH_OP_MIN: return MPI_MIN;
  case BENCH_OP_MAX: return MPI_MAX;
  case BENCH_OP_PROD: return MPI_PROD;
  default: return MPI_SUM;
  }
}

static void run_once(const opts_t *o, void *s, void *r, size_t count) {
  MPI_Datatype d = mpi_dt(o->dt);
  int c = (int)count;
  switch (o->coll) {
  case BENCH_ALLREDUCE: MPI_Allreduce(s, r, c, d, mpi_op(o->op), MPI_COMM_WORLD); break;
  case BENCH_BROADCAST: MPI_Bcast(r, c, d, o->root, MPI_COMM_WORLD); break;
  case BENCH_ALLGATHER: MPI_Allgather(s, c, d, r, c, d, MPI_COMM_WORLD); break;
  case BENCH_REDUCESCATTER:
    MPI_Reduce_scatter_block(s, r, c, d, mpi_op(o->op), MPI_COMM_WORLD);
    break;
  case BENCH_ALLTOALL: MPI_Alltoall(s, c, d, r, c, d, MPI_COMM_WORLD); break;
  }
}

static uint64_t check(const opts_t *o, const void *out, size_t count) {
  uint64_t bad = 0;
  const int n = size_, r = rank_;
  switch (o->coll) {
  case BENCH_ALLREDUCE:
    for (size_t i = 0; i < count; i++) bad += load(out, o->dt, i) != bench_expected(n, i, o->op, 0);
    break;
  case BENCH_REDUCESCATTER:
    for (size_t i = 0; i < count; i++)
      bad += load(out, o->dt, i) != bench_expected(n, (size_t)r * count + i, o->op, 0);
    break;
  case BENCH_BROADCAST:
    for (size_t i = 0; i < count; i++) bad += load(out, o->dt, i) != bench_value(o->root, i, o->op, 0);
    break;
  case BENCH_ALLGATHER:
    for (int j = 0; j < n; j++)
      for (size_t i = 0; i < count; i++)
        bad += load(out, o->dt, (size_t)j * count + i) != bench_value(j, i, o->op, 0);
    break;
  case BENCH_ALLTOALL:
    for (int j = 0; j < n; j++)
      for (size_t i = 0; i < count; i++)
        bad += load(out, o->dt, (size_t)j * count + i) != bench_value(j, (size_t)r * count + i, o->op, 0);
    break;
  }
  return bad;
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  opts_t o;
  parse(argc, argv, &o);
  const int n = size_;
  const size_t es = dt_size[o.dt];

  double bmem = o.bmem * 1e9, copy = 0;
  if (bmem <= 0 && o.coll == BENCH_ALLREDUCE && rank_ == 0) bmem = bench_memcpy_bw(256u << 20, 7, &copy);
  MPI_Barrier(MPI_COMM_WORLD);

  size_t cap = o.max_bytes + es;
  char *send = aligned_alloc(4096, (cap + 4095) & ~(size_t)4095);
  char *recv = aligned_alloc(4096, (cap + 4095) & ~(size_t)4095);
  double *t = calloc(MAX_ITERS_AUTO > o.iters ? MAX_ITERS_AUTO : o.iters, sizeof *t);
  double *tmp = calloc(MAX_ITERS_AUTO > o.iters ? MAX_ITERS_AUTO : o.iters, sizeof *t);
  if (!send || !recv || !t || !tmp) {
    fprintf(stderr, "mpi_allreduce_bench: out of memory\n");
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  memset(recv, 0, cap);
  for (size_t i = 0; i < cap / es; i++) store(send, o.dt, i, bench_value(rank_, i, o.op, 0));

  if (rank_ == 0) {
    int len;
    char ver[MPI_MAX_LIBRARY_VERSION_STRING];
    MPI_Get_library_version(ver, &len);
    char *nl = strchr(ver, '\n');
    if (nl) *nl = '\0';
    printf("# mpi_allreduce_bench: %s, %d ranks, dtype %s, op %s, root %d\n# MPI: %s\n",
           bench_coll_names[o.coll], n, dt_names[o.dt], bench_op_names[o.op], o.root, ver);
    printf("# time: median over iterations of the per-iteration time of the slowest rank (us); "
           "%s\n", o.barrier ? "untimed barrier before each iteration" : "back to back");
    if (bmem > 0)
      printf("# B_mem: %.2f GB/s read+write traffic (single-thread memcpy, %.2f GB/s copied)\n",
             bmem / 1e9, copy / 1e9);
    if (o.csv)
      printf("#size,count,type,redop,root,time_us,algbw_gbs,busbw_gbs,wrong,memeff,algo,iters,"
             "min_us,p90_us\n");
    else
      printf("#%12s %12s %9s %6s %5s %11s %9s %9s %7s %7s %5s %7s %11s %11s\n", "size", "count",
             "type", "redop", "root", "time(us)", "algbw", "busbw", "#wrong", "memeff", "algo",
             "iters", "min(us)", "p90(us)");
    fflush(stdout);
  }

  uint64_t wrong_all = 0;
  size_t prev = 0;
  for (size_t size = o.min_bytes; size <= o.max_bytes;) {
    size_t used, count = bench_count_for(o.coll, size, n, es, &used);
    if (count > 0 && used != prev && count <= 2147483647u) {
      if (o.coll == BENCH_BROADCAST && rank_ == o.root) memcpy(recv, send, count * es);
      double est = 1e30;
      long warm = o.warmup > 0 ? o.warmup : (o.iters > 0 ? 0 : 1);
      for (long w = 0; w < warm; w++) {
        if (o.barrier) MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        run_once(&o, send, recv, count);
        double dt = MPI_Wtime() - t0;
        if (dt < est) est = dt;
      }
      long iters = o.iters;
      if (iters <= 0) {
        double k = ceil(TARGET_SECONDS / est);
        k = k < MIN_ITERS_AUTO ? MIN_ITERS_AUTO : k > MAX_ITERS_AUTO ? MAX_ITERS_AUTO : k;
        MPI_Allreduce(MPI_IN_PLACE, &k, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        iters = (long)k;
      }
      for (long i = 0; i < iters; i++) {
        if (o.barrier) MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        run_once(&o, send, recv, count);
        t[i] = MPI_Wtime() - t0;
      }
      MPI_Allreduce(MPI_IN_PLACE, t, (int)iters, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
      double med = bench_quantile(t, (size_t)iters, 0.5, tmp);
      double tmin = bench_quantile(t, (size_t)iters, 0.0, tmp);
      double p90 = bench_quantile(t, (size_t)iters, 0.9, tmp);
      char wrong[24] = "N/A";
      if (o.check) {
        size_t out = (o.coll == BENCH_ALLGATHER || o.coll == BENCH_ALLTOALL) ? count * (size_t)n : count;
        if (o.coll != BENCH_BROADCAST || rank_ != o.root) sentinel(recv, o.dt, out);
        MPI_Barrier(MPI_COMM_WORLD);
        run_once(&o, send, recv, count);
        double bad = (double)check(&o, recv, count);
        MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        wrong_all += (uint64_t)bad;
        snprintf(wrong, sizeof wrong, "%llu", (unsigned long long)bad);
      }
      if (rank_ == 0) {
        double algbw = (double)used / med / 1e9, busbw = algbw * bench_busbw_factor(o.coll, n);
        char memeff[24] = "-";
        if (o.coll == BENCH_ALLREDUCE && bmem > 0)
          snprintf(memeff, sizeof memeff, "%.3f", 2.0 * n * (double)used / (med * bmem));
        int root = o.coll == BENCH_BROADCAST ? o.root : -1;
        if (o.csv)
          printf("%zu,%zu,%s,%s,%d,%.2f,%.3f,%.3f,%s,%s,%s,%ld,%.2f,%.2f\n", used, count,
                 dt_names[o.dt], bench_op_names[o.op], root, med * 1e6, algbw, busbw, wrong,
                 memeff, "mpi", iters, tmin * 1e6, p90 * 1e6);
        else
          printf(" %12zu %12zu %9s %6s %5d %11.2f %9.3f %9.3f %7s %7s %5s %7ld %11.2f %11.2f\n",
                 used, count, dt_names[o.dt], bench_op_names[o.op], root, med * 1e6, algbw, busbw,
                 wrong, memeff, "mpi", iters, tmin * 1e6, p90 * 1e6);
        fflush(stdout);
      }
      prev = used;
    }
    size_t next = (size_t)((double)size * o.factor);
    size = next > size ? next : size + 1;
  }
  if (rank_ == 0 && o.check)
    printf("# Out of bounds values : %llu %s\n", (unsigned long long)wrong_all,
           wrong_all ? "FAILED" : "OK");
  free(send);
  free(recv);
  free(t);
  free(tmp);
  MPI_Finalize();
  return wrong_all ? 1 : 0;
}
