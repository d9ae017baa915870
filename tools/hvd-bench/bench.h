/*
 * hvd-bench internals: options, buffers, and the two measuring modes.
 *
 *   hvd-bench.c  command line, size sweep, output (rank 0 prints)
 *   raw.c        raw mode: a whole size (warmup, timed loop, cross-rank max, check)
 *                runs on the background thread through hvd_run_on_bg()
 *   rt.c         runtime mode: the public API (negotiation, cache, fusion)
 *   data.c       typed fill / sentinel / element-by-element check
 */
#ifndef HVD_BENCH_H
#define HVD_BENCH_H

#include <stddef.h>
#include <stdint.h>

#include "collectives/coll.h"
#include "hvd.h"
#include "tools/hvd-bench/bench_common.h"

#define BENCH_MAX_ITERS_AUTO 100000L
#define BENCH_TARGET_SECONDS 0.05 /* auto iterations: each size runs at least this long */
#define BENCH_MIN_ITERS_AUTO 20L

enum { BENCH_MODE_RAW = 0, BENCH_MODE_RUNTIME };
enum { BENCH_RT_SMALL = 0, BENCH_RT_MIXED };

typedef struct bench_opts {
  int coll;            /* bench_coll_t */
  size_t min_bytes, max_bytes;
  int sizes_given;     /* -b or -e on the command line */
  double factor;       /* -f: multiplicative step */
  hvd_dtype_t dtype;
  int op;              /* bench_op_t == hvd_op_t */
  hvd_algo_t algo;
  long iters;          /* -n; 0 = automatic */
  long warmup;         /* -w */
  int root;            /* -r */
  int mode;            /* BENCH_MODE_* */
  int rt_case;         /* BENCH_RT_* */
  int ntensors;        /* runtime mixed: tensors per step */
  int check;           /* --check */
  int csv;             /* --csv */
  int barrier;         /* raw mode: barrier (untimed) before each iteration */
  double bmem;         /* --bmem GB/s given (read+write traffic); 0 = measure */
} bench_opts_t;

typedef struct bench_bufs {
  void *send; /* pattern: element g holds bench_value(rank, g) */
  void *recv;
  size_t send_bytes, recv_bytes;
} bench_bufs_t;

/* Per-size result, the same on every rank after the cross-rank reductions. */
typedef struct bench_result {
  long iters;
  double med_s, min_s, p90_s; /* over iterations of the max over ranks */
  uint64_t wrong;             /* summed over ranks; only meaningful if checked */
  int checked;
  const char *algo;
} bench_result_t;

/* ---- data.c ---- */
int bench_is_unsigned(hvd_dtype_t dt);
/* buf[i] = bench_value(rank, g0 + i, op) for i < count. */
void bench_fill(void *buf, hvd_dtype_t dt, int op, int rank, size_t g0, size_t count);
/* An impossible result value in every element (NaN, or the type's maximum). */
void bench_fill_sentinel(void *buf, hvd_dtype_t dt, size_t count);
double bench_load(const void *buf, hvd_dtype_t dt, size_t i);
/* Compare a collective's output on rank r of n with the exact reference; returns the
 * number of wrong elements. count as in bench_count_for(). */
uint64_t bench_check(int coll, const void *out, hvd_dtype_t dt, int op, int r, int n,
                     size_t count, int root);
/* Number of wrong elements of an allreduce output covering global elements
 * g0 .. g0+count-1. */
uint64_t bench_check_allreduce_range(const void *out, hvd_dtype_t dt, int op, int n,
                                     size_t g0, size_t count);

/* ---- raw.c ---- */
typedef struct raw_job {
  const bench_opts_t *o;
  bench_bufs_t *b;
  int coll;
  size_t count;
  hvd_algo_t algo;
  int barrier;
  long iters; /* 0: automatic */
  int check;
  bench_result_t res;
  /* scratch owned by the job (allocated by bench_raw_new) */
  size_t *counts, *displs;
  double *t, *tmp;
  long cap;
  char err[256];
} raw_job_t;

int bench_raw_init(raw_job_t *j, const bench_opts_t *o, bench_bufs_t *b, int n);
void bench_raw_fini(raw_job_t *j);
/* Runs one size on the background thread. */
hvd_status_t bench_raw_run(hvd_ctx_t *ctx, raw_job_t *j);

/* ---- rt.c ---- */
int bench_runtime_main(hvd_ctx_t *ctx, const bench_opts_t *o, bench_bufs_t *b, double bmem);

/* ---- hvd-bench.c ---- */
long bench_auto_iters(double est_s);

#endif
