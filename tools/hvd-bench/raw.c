/*
 * Raw mode: time a collective algorithm directly on the world communicator.
 *
 * One size is one hvd_run_on_bg() call, so the whole measurement runs on the rank's
 * background thread (the only thread that may touch the transport) with no thread
 * hand-off per iteration:
 *
 *   warmup       o->warmup untimed runs (the fastest one estimates the time)
 *   iterations   -n, or enough for BENCH_TARGET_SECONDS (at least 20); ranks agree
 *                on the largest estimate with an allreduce MAX
 *   timed loop   [barrier, untimed] t0 = now; collective; t[i] = now - t0
 *                (OSU style: a rank that arrives late cannot hide in the next op)
 *   cross-rank   allreduce MAX over t[] -> per-iteration time of the slowest rank;
 *                reported: median (and min, p90) over iterations
 *   check        one more run on freshly poisoned outputs, compared element by
 *                element with the exact reference; wrong counts summed over ranks
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collectives/select.h"
#include "runtime/ctx.h"
#include "tools/hvd-bench/bench.h"

int bench_raw_init(raw_job_t *j, const bench_opts_t *o, bench_bufs_t *b, int n) {
  memset(j, 0, sizeof *j);
  j->o = o;
  j->b = b;
  j->coll = o->coll;
  j->algo = o->algo;
  j->barrier = o->barrier;
  j->iters = o->iters;
  j->check = o->check;
  j->cap = o->iters > BENCH_MAX_ITERS_AUTO ? o->iters : BENCH_MAX_ITERS_AUTO;
  j->counts = calloc((size_t)n, sizeof *j->counts);
  j->displs = calloc((size_t)n, sizeof *j->displs);
  j->t = calloc((size_t)j->cap, sizeof *j->t);
  j->tmp = calloc((size_t)j->cap, sizeof *j->tmp);
  return j->counts && j->displs && j->t && j->tmp ? 0 : -1;
}

void bench_raw_fini(raw_job_t *j) {
  free(j->counts);
  free(j->displs);
  free(j->t);
  free(j->tmp);
}

static hvd_status_t run_once(hvd_comm_t *c, raw_job_t *j) {
  const hvd_dtype_t dt = j->o->dtype;
  const hvd_op_t op = (hvd_op_t)j->o->op;
  void *s = j->b->send, *r = j->b->recv;
  switch (j->coll) {
  case BENCH_ALLREDUCE: return hvd_coll_allreduce(c, j->algo, 0, s, r, j->count, dt, op);
  case BENCH_BROADCAST: return hvd_coll_broadcast(c, j->algo, 0, r, j->count, dt, j->o->root);
  case BENCH_ALLGATHER: return hvd_coll_allgatherv(c, j->algo, 0, s, r, j->counts, dt);
  case BENCH_REDUCESCATTER: return hvd_coll_reducescatter(c, j->algo, s, r, j->counts, dt, op);
  case BENCH_ALLTOALL:
    return hvd_alltoallv_pairwise(c, s, j->counts, j->displs, r, j->counts, j->displs, dt);
  default: return HVD_ERR_INVALID_PARAM;
  }
}

static size_t out_elems(const raw_job_t *j, int n) {
  return (j->coll == BENCH_ALLGATHER || j->coll == BENCH_ALLTOALL) ? j->count * (size_t)n
                                                                   : j->count;
}

static hvd_status_t max_over_ranks(hvd_comm_t *c, double *v, size_t n) {
  return hvd_coll_allreduce(c, HVD_ALGO_AUTO, 0, v, v, n, HVD_FLOAT64, HVD_MAX);
}

static hvd_status_t on_bg(hvd_comm_t *c, void *arg) {
  raw_job_t *j = arg;
  const int n = c->size;
  hvd_status_t rc;
#define STEP(what, expr)                                                                 \
  do {                                                                                   \
    rc = (expr);                                                                         \
    if (rc != HVD_OK) {                                                                  \
      snprintf(j->err, sizeof j->err, "%s: %s", what, hvd_status_string(rc));            \
      return rc;                                                                         \
    }                                                                                    \
  } while (0)

  /* The algorithm that really runs (AUTO resolved the way the dispatchers do). */
  const size_t bytes = j->count * hvd_dtype_size(j->o->dtype);
  if (j->coll == BENCH_ALLREDUCE)
    j->res.algo = hvd_algo_name(hvd_allreduce_algo(c, j->algo, bytes, 0));
  else if (j->coll == BENCH_ALLGATHER)
    j->res.algo = hvd_algo_name(hvd_allgather_algo(c, j->algo, bytes * (size_t)n, 0));
  else if (j->coll == BENCH_BROADCAST)
    j->res.algo = hvd_algo_name(hvd_broadcast_algo(c, j->algo, bytes, 0));
  else if (j->coll == BENCH_REDUCESCATTER)
    j->res.algo = hvd_algo_name(hvd_reducescatter_algo(c, j->algo));
  for (int k = 0; k < n; k++) {
    j->counts[k] = j->count;
    j->displs[k] = (size_t)k * j->count;
  }
  if (j->coll == BENCH_BROADCAST && c->rank == j->o->root)
    memcpy(j->b->recv, j->b->send, j->count * hvd_dtype_size(j->o->dtype));

  /* warmup; at least one run when the iteration count must be estimated */
  double est = 1e30;
  long warm = j->o->warmup > 0 ? j->o->warmup : (j->iters > 0 ? 0 : 1);
  for (long w = 0; w < warm; w++) {
    if (j->barrier) STEP("barrier", hvd_coll_barrier(c));
    double t0 = bench_now();
    STEP("warmup", run_once(c, j));
    double dt = bench_now() - t0;
    if (dt < est) est = dt;
  }
  long iters = j->iters;
  if (iters <= 0) {
    double v = (double)bench_auto_iters(est);
    STEP("agreeing on the iteration count", max_over_ranks(c, &v, 1));
    iters = (long)v;
  }
  if (iters > j->cap) iters = j->cap;

  for (long i = 0; i < iters; i++) {
    if (j->barrier) STEP("barrier", hvd_coll_barrier(c));
    double t0 = bench_now();
    STEP("timed run", run_once(c, j));
    j->t[i] = bench_now() - t0;
  }
  STEP("gathering times", max_over_ranks(c, j->t, (size_t)iters));
  j->res.iters = iters;
  j->res.med_s = bench_quantile(j->t, (size_t)iters, 0.5, j->tmp);
  j->res.min_s = bench_quantile(j->t, (size_t)iters, 0.0, j->tmp);
  j->res.p90_s = bench_quantile(j->t, (size_t)iters, 0.9, j->tmp);

  j->res.checked = j->check;
  j->res.wrong = 0;
  if (j->check) {
    if (j->coll != BENCH_BROADCAST || c->rank != j->o->root)
      bench_fill_sentinel(j->b->recv, j->o->dtype, out_elems(j, n));
    STEP("barrier", hvd_coll_barrier(c));
    STEP("checked run", run_once(c, j));
    double bad = (double)bench_check(j->coll, j->b->recv, j->o->dtype, j->o->op, c->rank, n,
                                     j->count, j->o->root);
    STEP("summing wrong values",
         hvd_coll_allreduce(c, HVD_ALGO_AUTO, 0, &bad, &bad, 1, HVD_FLOAT64, HVD_SUM));
    j->res.wrong = (uint64_t)bad;
  }
#undef STEP
  return HVD_OK;
}

hvd_status_t bench_raw_run(hvd_ctx_t *ctx, raw_job_t *j) {
  /* allreduce, allgather, broadcast: set on the background thread */
  j->res.algo = j->coll == BENCH_ALLTOALL ? "pairwise" : "ring";
  j->err[0] = '\0';
  return hvd_run_on_bg(ctx, on_bg, j);
}
