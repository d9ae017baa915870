/*
 * hvd-bench: nccl-tests style benchmark of hvd's collectives.
 *
 *   hvdrun -np 2 hvd-bench -c allreduce -b 8 -e 256M -f 2 -d float32 -o sum -a auto
 *
 * Raw mode (default) times the collective algorithms themselves on the world
 * communicator, on the background thread (raw.c). Runtime mode goes through the
 * public API, negotiation and fusion included (rt.c). Rank 0 prints; lines that are
 * not results start with '#'. Columns, per size:
 *
 *   size count type redop root time(us) algbw busbw #wrong memeff algo iters min p90
 *
 * size/count follow nccl-tests (bench_common.h); time is the median over iterations
 * of the per-iteration time of the slowest rank; algbw = size/time in GB/s (1e9);
 * busbw = algbw x {allreduce 2(n-1)/n, allgather/reducescatter/alltoall (n-1)/n,
 * broadcast 1}; #wrong is the number of wrong elements, summed over ranks, of one
 * extra run checked element by element against an exact reference; memeff (allreduce)
 * is 2 n size / (time B_mem) with B_mem measured at start (bench_memcpy_bw).
 *
 * Bad arguments: one "hvd-bench: error: ..." line on stderr, exit status 2.
 * Wrong results: exit status 1 after the sweep. hvd failures: exit status 1.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "collectives/reduce.h"
#include "collectives/select.h"
#include "runtime/ctx.h"
#include "tools/hvd-bench/bench.h"

#define BENCH_BMEM_BYTES (256u << 20)
#define BENCH_BMEM_REPS 7

static const char usage[] =
    "usage: hvd-bench [-c allreduce|allgather|broadcast|reducescatter|alltoall]\n"
    "                 [-b MINBYTES] [-e MAXBYTES] [-f FACTOR] [-d DTYPE] [-o sum|min|max|prod|avg]\n"
    "                 [-a ALGO] [-n ITERS] [-w WARMUP] [-r ROOT]\n"
    "                 [--mode raw|runtime] [--runtime-case small|mixed] [--tensors N]\n"
    "                 [--check 0|1] [--csv] [--barrier 0|1] [--bmem GBPS] [-h]\n";

static const char help[] =
    "\n"
    "Run under hvdrun, e.g.: hvdrun -np 2 hvd-bench -c allreduce -b 8 -e 256M -f 2\n"
    "\n"
    "  -c, --collective   collective to time (default allreduce)\n"
    "  -b, --minbytes     smallest size (default 8; K/M/G suffixes)\n"
    "  -e, --maxbytes     largest size (default 256M; runtime small: 4K)\n"
    "  -f, --stepfactor   multiply the size by this between steps (default 2)\n"
    "  -d, --datatype     float16 bfloat16 float32 float64 int8 uint8 int32 int64\n"
    "                     (default float32)\n"
    "  -o, --op           sum min max prod (raw); avg too in runtime mode (default sum)\n"
    "  -a, --algo         algorithm (default auto: what the runtime would run, i.e. the\n"
    "                     shared-memory arena when every rank is on one host, else the\n"
    "                     selection table). allreduce: ring tree rd shm; allgather: ring\n"
    "                     bruck shm; broadcast: tree scatter_ring shm; reducescatter:\n"
    "                     ring shm\n"
    "  -n, --iters        timed iterations per size (default: enough for 50 ms, >= 20)\n"
    "  -w, --warmup_iters untimed iterations per size first (default 5)\n"
    "  -r, --root         broadcast root (default 0)\n"
    "  --mode raw         time the algorithms on the background thread (default)\n"
    "  --mode runtime     go through the public API (negotiation, cache, fusion):\n"
    "    --runtime-case small  one tensor per step, synchronous, sizes -b..-e\n"
    "    --runtime-case mixed  --tensors N (100) of mixed sizes totalling -e (4M) per\n"
    "                          step, async then all waited; vs one raw allreduce\n"
    "  --check 0|1        check every element of one extra run per size (default 1)\n"
    "  --csv              comma-separated result lines\n"
    "  --barrier 0|1      raw mode: untimed barrier before each iteration (default 1)\n"
    "  --bmem GBPS        memory bandwidth (read+write GB/s) for memeff instead of\n"
    "                     measuring it\n";

static void die_usage(const char *fmt, const char *arg) {
  fprintf(stderr, "hvd-bench: error: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n%s", usage);
  exit(2);
}

long bench_auto_iters(double est_s) {
  if (!(est_s > 0)) return BENCH_MIN_ITERS_AUTO;
  double k = ceil(BENCH_TARGET_SECONDS / est_s);
  if (k < BENCH_MIN_ITERS_AUTO) return BENCH_MIN_ITERS_AUTO;
  if (k > BENCH_MAX_ITERS_AUTO) return BENCH_MAX_ITERS_AUTO;
  return (long)k;
}

static int parse_dtype(const char *s) {
  for (int d = 0; d < HVD_DTYPE_COUNT; d++)
    if (strcasecmp(s, hvd_dtype_name((hvd_dtype_t)d)) == 0) return d;
  if (!strcasecmp(s, "float") || !strcasecmp(s, "fp32")) return HVD_FLOAT32;
  if (!strcasecmp(s, "double") || !strcasecmp(s, "fp64")) return HVD_FLOAT64;
  if (!strcasecmp(s, "half") || !strcasecmp(s, "fp16")) return HVD_FLOAT16;
  if (!strcasecmp(s, "bf16")) return HVD_BFLOAT16;
  if (!strcasecmp(s, "int")) return HVD_INT32;
  return -1;
}

static long parse_long(const char *opt, const char *s, long lo, long hi) {
  char *end;
  errno = 0;
  long v = s ? strtol(s, &end, 10) : 0;
  if (s == NULL || errno || end == s || *end || v < lo || v > hi) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s needs an integer in [%ld, %ld], got '%%s'", opt, lo, hi);
    die_usage(msg, s ? s : "");
  }
  return v;
}

static int is_opt(const char *a, const char *s, const char *l) {
  return !strcmp(a, s) || (l != NULL && !strcmp(a, l));
}

static void parse(int argc, char **argv, bench_opts_t *o) {
  *o = (bench_opts_t){.coll = BENCH_ALLREDUCE, .min_bytes = 8, .max_bytes = 256u << 20,
                      .factor = 2, .dtype = HVD_FLOAT32, .op = BENCH_OP_SUM,
                      .algo = HVD_ALGO_AUTO, .warmup = 5, .mode = BENCH_MODE_RAW,
                      .rt_case = BENCH_RT_SMALL, .ntensors = 100, .check = 1, .barrier = 1};
  int have_b = 0, have_e = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define IS(s, l) is_opt(a, s, l)
#define NEED()                                                                          \
  do {                                                                                  \
    if (v == NULL) die_usage("option %s needs a value", a);                             \
    i++;                                                                                \
  } while (0)
    if (IS("-h", "--help")) {
      printf("%s%s", usage, help);
      exit(0);
    } else if (IS("-c", "--collective")) {
      NEED();
      if ((o->coll = bench_coll_parse(v)) < 0) die_usage("unknown collective '%s'", v);
    } else if (IS("-b", "--minbytes")) {
      NEED();
      if (bench_parse_size(v, &o->min_bytes)) die_usage("bad size '%s' for -b", v);
      have_b = 1;
    } else if (IS("-e", "--maxbytes")) {
      NEED();
      if (bench_parse_size(v, &o->max_bytes)) die_usage("bad size '%s' for -e", v);
      have_e = 1;
    } else if (IS("-f", "--stepfactor")) {
      NEED();
      char *end;
      o->factor = strtod(v, &end);
      if (end == v || *end || !(o->factor > 1.0) || o->factor > 1024)
        die_usage("-f needs a number in (1, 1024], got '%s'", v);
    } else if (IS("-d", "--datatype")) {
      NEED();
      int d = parse_dtype(v);
      if (d < 0) die_usage("unknown datatype '%s'", v);
      o->dtype = (hvd_dtype_t)d;
    } else if (IS("-o", "--op")) {
      NEED();
      if ((o->op = bench_op_parse(v)) < 0) die_usage("unknown reduction '%s'", v);
    } else if (IS("-a", "--algo")) {
      NEED();
      int al = hvd_algo_parse(v);
      if (al < 0) die_usage("unknown algorithm '%s'", v);
      o->algo = (hvd_algo_t)al;
    } else if (IS("-n", "--iters")) {
      NEED();
      o->iters = parse_long(a, v, 1, 10000000);
    } else if (IS("-w", "--warmup_iters")) {
      NEED();
      o->warmup = parse_long(a, v, 0, 1000000);
    } else if (IS("-r", "--root")) {
      NEED();
      o->root = (int)parse_long(a, v, 0, HVD_TP_MAX_RANKS - 1);
    } else if (IS("--mode", NULL)) {
      NEED();
      if (!strcmp(v, "raw")) o->mode = BENCH_MODE_RAW;
      else if (!strcmp(v, "runtime")) o->mode = BENCH_MODE_RUNTIME;
      else die_usage("--mode must be raw or runtime, got '%s'", v);
    } else if (IS("--runtime-case", NULL)) {
      NEED();
      if (!strcmp(v, "small")) o->rt_case = BENCH_RT_SMALL;
      else if (!strcmp(v, "mixed")) o->rt_case = BENCH_RT_MIXED;
      else die_usage("--runtime-case must be small or mixed, got '%s'", v);
    } else if (IS("--tensors", NULL)) {
      NEED();
      o->ntensors = (int)parse_long(a, v, 1, 100000);
    } else if (IS("--check", "-C")) {
      NEED();
      o->check = (int)parse_long(a, v, 0, 1);
    } else if (IS("--barrier", NULL)) {
      NEED();
      o->barrier = (int)parse_long(a, v, 0, 1);
    } else if (IS("--csv", NULL)) {
      o->csv = 1;
    } else if (IS("--bmem", NULL)) {
      NEED();
      char *end;
      o->bmem = strtod(v, &end);
      if (end == v || *end || !(o->bmem > 0)) die_usage("--bmem needs a positive GB/s, got '%s'", v);
    } else {
      die_usage("unknown argument '%s'", a);
    }
#undef IS
#undef NEED
  }
  o->sizes_given = have_b || have_e;
  if (o->mode == BENCH_MODE_RUNTIME) {
    if (o->coll != BENCH_ALLREDUCE) die_usage("--mode runtime measures allreduce only (got -c %s)",
                                              bench_coll_names[o->coll]);
    if (o->rt_case == BENCH_RT_SMALL && !have_e) o->max_bytes = 4096;
    if (o->rt_case == BENCH_RT_MIXED && !have_e) o->max_bytes = 4u << 20;
  } else if (o->op == BENCH_OP_AVG) {
    die_usage("%s: raw collectives have no average (it is sum + scale in the runtime); use "
              "--mode runtime", "-o avg");
  }
  static const hvd_coll_kind_t kind[BENCH_COLL_COUNT] = {
      [BENCH_ALLREDUCE] = HVD_COLL_ALLREDUCE, [BENCH_ALLGATHER] = HVD_COLL_ALLGATHER,
      [BENCH_BROADCAST] = HVD_COLL_BROADCAST, [BENCH_REDUCESCATTER] = HVD_COLL_REDUCESCATTER,
      [BENCH_ALLTOALL] = HVD_COLL_ALLTOALL};
  if (!hvd_algo_supported(kind[o->coll], o->algo)) {
    fprintf(stderr, "hvd-bench: error: -a %s cannot run %s (choices: %s)\n%s",
            hvd_algo_name(o->algo), bench_coll_names[o->coll], hvd_algo_choices(kind[o->coll]),
            usage);
    exit(2);
  }
  if (o->min_bytes > o->max_bytes) die_usage("-b is larger than -e%s", "");
  if (o->coll == BENCH_ALLREDUCE || o->coll == BENCH_REDUCESCATTER) {
    if (!hvd_reduce_supported(o->dtype, (hvd_op_t)o->op))
      die_usage("the reduction is not supported for %s", hvd_dtype_name(o->dtype));
  }
}

/* ---- output ------------------------------------------------------------------------ */

static void header(const bench_opts_t *o, hvd_ctx_t *ctx, double bmem, double copy_rate) {
  const int n = hvd_size(ctx);
  printf("# hvd-bench: %s, mode %s, %d rank%s, dtype %s, op %s", bench_coll_names[o->coll],
         o->mode == BENCH_MODE_RAW ? "raw" : "runtime", n, n == 1 ? "" : "s",
         hvd_dtype_name(o->dtype), bench_op_names[o->op]);
  printf(", algo %s", hvd_algo_name(o->algo));
  if (o->coll == BENCH_BROADCAST) printf(", root %d", o->root);
  printf("\n");
  const char *prov = n > 1 ? ctx->tp->ops->peer_provider(ctx->tp, (hvd_rank(ctx) + 1) % n) : "self";
  printf("# transport to the next rank: %s; reduction kernels: %s\n", prov ? prov : "?",
         hvd_reduce_isa());
  if (o->iters > 0)
    printf("# iterations: %ld per size, warmup %ld", o->iters, o->warmup);
  else
    printf("# iterations: auto (>= %ld and >= %.0f ms per size), warmup %ld",
           BENCH_MIN_ITERS_AUTO, BENCH_TARGET_SECONDS * 1e3, o->warmup);
  if (o->mode == BENCH_MODE_RAW)
    printf("; %s\n", o->barrier ? "untimed barrier before each iteration" : "back to back");
  else
    printf("; back to back through the public API\n");
  printf("# time: median over iterations of the per-iteration time of the slowest rank (us)\n");
  if (bmem > 0) {
    if (copy_rate > 0)
      printf("# B_mem: %.2f GB/s read+write traffic (single-thread memcpy of %u MiB, median of "
             "%d: %.2f GB/s copied)\n",
             bmem / 1e9, BENCH_BMEM_BYTES >> 20, BENCH_BMEM_REPS, copy_rate / 1e9);
    else
      printf("# B_mem: %.2f GB/s read+write traffic (given with --bmem)\n", bmem / 1e9);
  }
}

static void columns(const bench_opts_t *o) {
  if (o->csv)
    printf("#size,count,type,redop,root,time_us,algbw_gbs,busbw_gbs,wrong,memeff,algo,iters,"
           "min_us,p90_us\n");
  else
    printf("#%12s %12s %9s %6s %5s %11s %9s %9s %7s %7s %5s %7s %11s %11s\n", "size", "count",
           "type", "redop", "root", "time(us)", "algbw", "busbw", "#wrong", "memeff", "algo",
           "iters", "min(us)", "p90(us)");
}

static void line(const bench_opts_t *o, size_t size, size_t count, int n, double bmem,
                 const bench_result_t *r, double *busbw_out) {
  double t = r->med_s;
  double algbw = (double)size / t / 1e9, busbw = algbw * bench_busbw_factor(o->coll, n);
  char wrong[32], memeff[32];
  if (r->checked) snprintf(wrong, sizeof wrong, "%llu", (unsigned long long)r->wrong);
  else snprintf(wrong, sizeof wrong, "N/A");
  if (o->coll == BENCH_ALLREDUCE && bmem > 0)
    snprintf(memeff, sizeof memeff, "%.3f", 2.0 * n * (double)size / (t * bmem));
  else
    snprintf(memeff, sizeof memeff, "-");
  int root = o->coll == BENCH_BROADCAST ? o->root : -1;
  if (o->csv)
    printf("%zu,%zu,%s,%s,%d,%.2f,%.3f,%.3f,%s,%s,%s,%ld,%.2f,%.2f\n", size, count,
           hvd_dtype_name(o->dtype), bench_op_names[o->op], root, t * 1e6, algbw, busbw, wrong,
           memeff, r->algo, r->iters, r->min_s * 1e6, r->p90_s * 1e6);
  else
    printf(" %12zu %12zu %9s %6s %5d %11.2f %9.3f %9.3f %7s %7s %5s %7ld %11.2f %11.2f\n", size,
           count, hvd_dtype_name(o->dtype), bench_op_names[o->op], root, t * 1e6, algbw, busbw,
           wrong, memeff, r->algo, r->iters, r->min_s * 1e6, r->p90_s * 1e6);
  fflush(stdout);
  *busbw_out = busbw;
}

/* ---- buffers ----------------------------------------------------------------------- */

static void *alloc_touched(size_t bytes) {
  size_t sz = (bytes + 4095) & ~(size_t)4095;
  if (sz == 0) sz = 4096;
  void *p = aligned_alloc(4096, sz);
  if (p) memset(p, 0, sz);
  return p;
}

static int alloc_bufs(const bench_opts_t *o, int rank, bench_bufs_t *b) {
  const size_t es = hvd_dtype_size(o->dtype);
  b->send_bytes = o->max_bytes + es;
  b->recv_bytes = o->max_bytes + es;
  b->send = alloc_touched(b->send_bytes);
  b->recv = alloc_touched(b->recv_bytes);
  if (b->send == NULL || b->recv == NULL) return -1;
  bench_fill(b->send, o->dtype, o->op, rank, 0, b->send_bytes / es);
  return 0;
}

/* ---- raw sweep --------------------------------------------------------------------- */

static int raw_sweep(hvd_ctx_t *ctx, const bench_opts_t *o, bench_bufs_t *b, double bmem) {
  const int n = hvd_size(ctx), me = hvd_rank(ctx);
  const size_t es = hvd_dtype_size(o->dtype);
  raw_job_t job;
  if (bench_raw_init(&job, o, b, n)) {
    fprintf(stderr, "hvd-bench: rank %d: out of memory\n", me);
    return 1;
  }
  uint64_t wrong = 0;
  double bus_sum = 0;
  int lines = 0, failed = 0;
  if (me == 0) columns(o);
  size_t prev = 0;
  for (size_t size = o->min_bytes; size <= o->max_bytes;) {
    size_t used;
    size_t count = bench_count_for(o->coll, size, n, es, &used);
    if (count == 0) {
      if (me == 0 && !o->csv) printf("# %zu B: less than one element per rank, skipped\n", size);
    } else if (used != prev) {
      job.count = count;
      hvd_status_t rc = bench_raw_run(ctx, &job);
      if (rc != HVD_OK) {
        fprintf(stderr, "hvd-bench: rank %d: %s at %zu B failed: %s (%s)\n", me,
                bench_coll_names[o->coll], used, job.err[0] ? job.err : hvd_status_string(rc),
                hvd_ctx_error(ctx));
        failed = 1;
        break;
      }
      if (me == 0) {
        double busbw;
        line(o, used, count, n, bmem, &job.res, &busbw);
        bus_sum += busbw;
        lines++;
      }
      wrong += job.res.checked ? job.res.wrong : 0;
      prev = used;
    }
    size_t next = (size_t)((double)size * o->factor);
    if (next <= size) next = size + 1;
    size = next;
  }
  if (me == 0 && !failed) {
    if (o->check) printf("# Out of bounds values : %llu %s\n", (unsigned long long)wrong,
                         wrong ? "FAILED" : "OK");
    printf("# Avg bus bandwidth    : %.3f\n", lines ? bus_sum / lines : 0.0);
  }
  bench_raw_fini(&job);
  return failed ? 1 : wrong ? 1 : 0;
}

int main(int argc, char **argv) {
  bench_opts_t o;
  parse(argc, argv, &o);

  hvd_ctx_t *ctx;
  hvd_status_t rc = hvd_init(&ctx);
  if (rc != HVD_OK) {
    fprintf(stderr, "hvd-bench: hvd_init failed: %s\n", hvd_status_string(rc));
    return 1;
  }
  const int n = hvd_size(ctx), me = hvd_rank(ctx);
  if (o.root >= n) {
    if (me == 0) fprintf(stderr, "hvd-bench: error: -r %d is not a rank of this %d-rank job\n%s",
                         o.root, n, usage);
    hvd_shutdown(ctx);
    return 2;
  }

  /* B_mem on rank 0 alone, the other ranks parked in a barrier (sleeping). */
  double bmem = o.bmem * 1e9, copy_rate = 0;
  if (bmem <= 0 && o.coll == BENCH_ALLREDUCE) {
    if (me == 0) bmem = bench_memcpy_bw(BENCH_BMEM_BYTES, BENCH_BMEM_REPS, &copy_rate);
    rc = hvd_barrier(ctx, 0);
    if (rc != HVD_OK) {
      fprintf(stderr, "hvd-bench: rank %d: barrier failed: %s (%s)\n", me,
              hvd_status_string(rc), hvd_ctx_error(ctx));
      hvd_shutdown(ctx);
      return 1;
    }
  }

  bench_bufs_t b;
  if (alloc_bufs(&o, me, &b)) {
    fprintf(stderr, "hvd-bench: rank %d: cannot allocate 2 x %zu bytes\n", me, o.max_bytes);
    hvd_shutdown(ctx);
    return 1;
  }
  if (me == 0) header(&o, ctx, bmem, copy_rate);
  fflush(stdout);

  int status = o.mode == BENCH_MODE_RAW ? raw_sweep(ctx, &o, &b, bmem)
                                        : bench_runtime_main(ctx, &o, &b, bmem);
  free(b.send);
  free(b.recv);
  rc = hvd_shutdown(ctx);
  if (rc != HVD_OK && status == 0) {
    fprintf(stderr, "hvd-bench: rank %d: hvd_shutdown: %s\n", me, hvd_status_string(rc));
    status = 1;
  }
  return status;
}
