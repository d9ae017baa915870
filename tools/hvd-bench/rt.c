/*
 * Runtime mode: allreduce through the public API, so negotiation with the
 * coordinator, the response cache and fusion are all in the measured time.
 *
 *   small   one tensor per step, hvd_allreduce() (synchronous), sizes -b..-e: the
 *           round trip a training loop sees for a lone small gradient. Compared
 *           with the raw algorithm for the same size measured in the same run (back
 *           to back as well, no barrier), so the difference is the runtime's cost.
 *   mixed   --tensors N (100) tensors of mixed sizes totalling -e (4 MiB) bytes per
 *           step, all submitted asynchronously, then all waited: what fusion is for.
 *           Compared with one runtime allreduce of the total and one raw allreduce
 *           of the total (hvd_run_on_bg), measured in the same run; then mixed steps
 *           and raw allreduces alternately, whose median per-pair ratio does not move
 *           with the load of a shared host ("paired").
 *
 * Times: per step on each rank, then the max over ranks of each step (an allreduce
 * MAX through the public API, outside the timed loop); median and p90 over steps.
 * Checks: one extra step with poisoned outputs, every element compared.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collectives/select.h"
#include "runtime/ctx.h"
#include "tools/hvd-bench/bench.h"

typedef struct rt_stats {
  double med, p90, min;
  long iters;
} rt_stats_t;

static hvd_status_t max_over_ranks(hvd_ctx_t *ctx, const char *name, double *v, size_t n) {
  return hvd_allreduce(ctx, name, v, v, n, HVD_FLOAT64, HVD_MAX);
}

static void summarize(double *t, double *tmp, long iters, rt_stats_t *s) {
  s->iters = iters;
  s->med = bench_quantile(t, (size_t)iters, 0.5, tmp);
  s->p90 = bench_quantile(t, (size_t)iters, 0.9, tmp);
  s->min = bench_quantile(t, (size_t)iters, 0.0, tmp);
}

/* A step: fn(arg) on every rank. Warmup, agree on iterations, time, max over ranks. */
typedef hvd_status_t (*step_fn)(hvd_ctx_t *ctx, void *arg);

static hvd_status_t measure(hvd_ctx_t *ctx, const bench_opts_t *o, const char *tag, step_fn fn,
                            void *arg, double *t, double *tmp, long cap, rt_stats_t *s) {
  char name[96];
  double est = 1e30;
  long warm = o->warmup > 0 ? o->warmup : 1;
  for (long w = 0; w < warm; w++) {
    double t0 = bench_now();
    HVD_CHECK(fn(ctx, arg));
    double dt = bench_now() - t0;
    if (dt < est) est = dt;
  }
  long iters = o->iters;
  if (iters <= 0) {
    double v = (double)bench_auto_iters(est);
    snprintf(name, sizeof name, "bench.iters.%s", tag);
    HVD_CHECK(max_over_ranks(ctx, name, &v, 1));
    iters = (long)v;
  }
  if (iters > cap) iters = cap;
  for (long i = 0; i < iters; i++) {
    double t0 = bench_now();
    HVD_CHECK(fn(ctx, arg));
    t[i] = bench_now() - t0;
  }
  snprintf(name, sizeof name, "bench.times.%s", tag);
  HVD_CHECK(max_over_ranks(ctx, name, t, (size_t)iters));
  summarize(t, tmp, iters, s);
  return HVD_OK;
}

/* ---- one tensor, synchronous ---- */
typedef struct one_arg {
  const char *name;
  const void *send;
  void *recv;
  size_t count;
  hvd_dtype_t dt;
  hvd_op_t op;
} one_arg_t;

static hvd_status_t step_one(hvd_ctx_t *ctx, void *arg) {
  one_arg_t *a = arg;
  return hvd_allreduce(ctx, a->name, a->send, a->recv, a->count, a->dt, a->op);
}

/* ---- N tensors, async then waited ---- */
typedef struct many_arg {
  int n;
  char (*names)[32];
  size_t *count, *off; /* elements */
  const char *send;
  char *recv;
  size_t es;
  hvd_dtype_t dt;
  hvd_op_t op;
  hvd_req_t **req;
} many_arg_t;

static hvd_status_t step_many(hvd_ctx_t *ctx, void *arg) {
  many_arg_t *a = arg;
  hvd_status_t first = HVD_OK;
  int posted = 0;
  for (int k = 0; k < a->n; k++) {
    hvd_status_t rc = hvd_allreduce_async(ctx, a->names[k], a->send + a->off[k] * a->es,
                                          a->recv + a->off[k] * a->es, a->count[k], a->dt,
                                          a->op, &a->req[k]);
    if (rc != HVD_OK) {
      first = rc;
      break;
    }
    posted++;
  }
  for (int k = 0; k < posted; k++) {
    hvd_status_t rc = hvd_wait(a->req[k]);
    if (rc != HVD_OK && first == HVD_OK) first = rc;
    hvd_req_free(a->req[k]);
  }
  return first;
}

/* ---- the raw reference, on the background thread ---- */
typedef struct raw_ref {
  const bench_opts_t *o;
  const void *send;
  void *recv;
  size_t count;
  long iters, warmup;
  double *t, *tmp;
  rt_stats_t s;
} raw_ref_t;

static hvd_status_t raw_ref_bg(hvd_comm_t *c, void *arg) {
  raw_ref_t *r = arg;
  const hvd_op_t op = r->o->op == BENCH_OP_AVG ? HVD_SUM : (hvd_op_t)r->o->op;
  for (long w = 0; w < r->warmup; w++)
    HVD_CHECK(hvd_coll_allreduce(c, HVD_ALGO_AUTO, 0, r->send, r->recv, r->count, r->o->dtype, op));
  for (long i = 0; i < r->iters; i++) {
    double t0 = bench_now();
    HVD_CHECK(hvd_coll_allreduce(c, HVD_ALGO_AUTO, 0, r->send, r->recv, r->count, r->o->dtype, op));
    r->t[i] = bench_now() - t0;
  }
  HVD_CHECK(hvd_coll_allreduce(c, HVD_ALGO_AUTO, 0, r->t, r->t, (size_t)r->iters, HVD_FLOAT64,
                               HVD_MAX));
  summarize(r->t, r->tmp, r->iters, &r->s);
  return HVD_OK;
}

/* One raw allreduce, timed on the background thread (the paired measurement). */
typedef struct raw_once {
  const bench_opts_t *o;
  const void *send;
  void *recv;
  size_t count;
  double t;
} raw_once_t;

static hvd_status_t raw_once_bg(hvd_comm_t *c, void *arg) {
  raw_once_t *r = arg;
  const hvd_op_t op = r->o->op == BENCH_OP_AVG ? HVD_SUM : (hvd_op_t)r->o->op;
  double t0 = bench_now();
  hvd_status_t rc = hvd_coll_allreduce(c, HVD_ALGO_AUTO, 0, r->send, r->recv, r->count,
                                       r->o->dtype, op);
  r->t = bench_now() - t0;
  return rc;
}

/* Mixed step and raw allreduce alternately, `iters` pairs: the median of the per-pair
 * ratios (each side the slowest rank's time) is what a shared, noisy host cannot skew
 * by changing its load between the two measurements. */
static hvd_status_t paired_ratio(hvd_ctx_t *ctx, many_arg_t *a, raw_once_t *raw, long iters,
                                 double *t, double *tmp, double *ratio) {
  double *tr = calloc((size_t)iters, sizeof *tr);
  if (tr == NULL) return HVD_ERR_NO_MEMORY;
  hvd_status_t rc = HVD_OK;
  for (long i = 0; i < iters && rc == HVD_OK; i++) {
    double t0 = bench_now();
    rc = step_many(ctx, a);
    t[i] = bench_now() - t0;
    if (rc == HVD_OK) rc = hvd_run_on_bg(ctx, raw_once_bg, raw);
    tr[i] = raw->t;
  }
  if (rc == HVD_OK) rc = max_over_ranks(ctx, "bench.paired.mixed", t, (size_t)iters);
  if (rc == HVD_OK) rc = max_over_ranks(ctx, "bench.paired.raw", tr, (size_t)iters);
  if (rc == HVD_OK) {
    for (long i = 0; i < iters; i++) t[i] = tr[i] > 0 ? t[i] / tr[i] : 0;
    *ratio = bench_quantile(t, (size_t)iters, 0.5, tmp);
  }
  free(tr);
  return rc;
}

static hvd_status_t raw_reference(hvd_ctx_t *ctx, const bench_opts_t *o, bench_bufs_t *b,
                                  size_t count, long iters, double *t, double *tmp,
                                  rt_stats_t *s) {
  raw_ref_t r = {.o = o, .send = b->send, .recv = b->recv, .count = count, .iters = iters,
                 .warmup = o->warmup, .t = t, .tmp = tmp};
  HVD_CHECK(hvd_run_on_bg(ctx, raw_ref_bg, &r));
  *s = r.s;
  return HVD_OK;
}

static hvd_status_t sum_wrong(hvd_ctx_t *ctx, const char *tag, uint64_t mine, uint64_t *total) {
  double v = (double)mine;
  char name[96];
  snprintf(name, sizeof name, "bench.wrong.%s", tag);
  HVD_CHECK(hvd_allreduce(ctx, name, &v, &v, 1, HVD_FLOAT64, HVD_SUM));
  *total = (uint64_t)v;
  return HVD_OK;
}

static int fail(hvd_ctx_t *ctx, const char *what, hvd_status_t rc) {
  fprintf(stderr, "hvd-bench: rank %d: %s failed: %s (%s)\n", hvd_rank(ctx), what,
          hvd_status_string(rc), hvd_ctx_error(ctx));
  return 1;
}

static int run_small(hvd_ctx_t *ctx, const bench_opts_t *o, bench_bufs_t *b, double *t,
                     double *tmp, long cap) {
  const int n = hvd_size(ctx), me = hvd_rank(ctx);
  const size_t es = hvd_dtype_size(o->dtype);
  uint64_t wrong_all = 0;
  if (me == 0) {
    if (o->csv)
      printf("#size,count,type,redop,time_us,p90_us,raw_us,raw_p90_us,overhead_us,ratio,wrong,"
             "iters\n");
    else
      printf("#%12s %10s %9s %6s %10s %10s %10s %10s %12s %7s %7s %7s\n", "size", "count",
             "type", "redop", "time(us)", "p90(us)", "raw(us)", "raw_p90", "overhead(us)",
             "ratio", "#wrong", "iters");
  }
  size_t prev = 0;
  for (size_t size = o->min_bytes; size <= o->max_bytes;) {
    size_t count = size / es, used = count * es;
    if (count > 0 && used != prev) {
      char tag[48], name[64];
      snprintf(tag, sizeof tag, "small.%zu", used);
      snprintf(name, sizeof name, "bench.%s", tag);
      one_arg_t a = {name, b->send, b->recv, count, o->dtype, (hvd_op_t)o->op};
      rt_stats_t s, raw;
      hvd_status_t rc = measure(ctx, o, tag, step_one, &a, t, tmp, cap, &s);
      if (rc != HVD_OK) return fail(ctx, "runtime allreduce", rc);
      rc = raw_reference(ctx, o, b, count, s.iters, t, tmp, &raw);
      if (rc != HVD_OK) return fail(ctx, "raw allreduce", rc);
      uint64_t wrong = 0;
      if (o->check) {
        bench_fill_sentinel(b->recv, o->dtype, count);
        rc = step_one(ctx, &a);
        if (rc != HVD_OK) return fail(ctx, "checked allreduce", rc);
        rc = sum_wrong(ctx, tag,
                       bench_check_allreduce_range(b->recv, o->dtype, o->op, n, 0, count), &wrong);
        if (rc != HVD_OK) return fail(ctx, "summing wrong values", rc);
        wrong_all += wrong;
      }
      char w[24];
      if (o->check) snprintf(w, sizeof w, "%llu", (unsigned long long)wrong);
      else snprintf(w, sizeof w, "N/A");
      if (me == 0) {
        if (o->csv)
          printf("%zu,%zu,%s,%s,%.2f,%.2f,%.2f,%.2f,%.2f,%.3f,%s,%ld\n", used, count,
                 hvd_dtype_name(o->dtype), bench_op_names[o->op], s.med * 1e6, s.p90 * 1e6,
                 raw.med * 1e6, raw.p90 * 1e6, (s.med - raw.med) * 1e6, s.med / raw.med, w,
                 s.iters);
        else
          printf(" %12zu %10zu %9s %6s %10.2f %10.2f %10.2f %10.2f %12.2f %7.2f %7s %7ld\n", used,
                 count, hvd_dtype_name(o->dtype), bench_op_names[o->op], s.med * 1e6,
                 s.p90 * 1e6, raw.med * 1e6, raw.p90 * 1e6, (s.med - raw.med) * 1e6,
                 s.med / raw.med, w, s.iters);
        fflush(stdout);
      }
      prev = used;
    }
    size_t next = (size_t)((double)size * o->factor);
    size = next > size ? next : size + 1;
  }
  if (me == 0 && o->check)
    printf("# Out of bounds values : %llu %s\n", (unsigned long long)wrong_all,
           wrong_all ? "FAILED" : "OK");
  return wrong_all ? 1 : 0;
}

/* Tensor k's share: weights 2^(k mod 12), scaled so the counts add up to total. */
static void mixed_counts(int nt, size_t total, size_t *count, size_t *off) {
  double wsum = 0;
  for (int k = 0; k < nt; k++) wsum += (double)(1u << (k % 12));
  size_t acc = 0;
  for (int k = 0; k < nt; k++) {
    size_t c = (size_t)((double)total * (double)(1u << (k % 12)) / wsum);
    if (c == 0) c = 1;
    if (acc + c > total) c = total - acc;
    if (k == nt - 1) c = total - acc;
    off[k] = acc;
    count[k] = c;
    acc += c;
  }
}

static int run_mixed(hvd_ctx_t *ctx, const bench_opts_t *o, bench_bufs_t *b, double *t,
                     double *tmp, long cap) {
  const int n = hvd_size(ctx), me = hvd_rank(ctx), nt = o->ntensors;
  const size_t es = hvd_dtype_size(o->dtype);
  const size_t total = o->max_bytes / es, bytes = total * es;
  if (total < (size_t)nt) {
    if (me == 0) fprintf(stderr, "hvd-bench: error: -e %zu is too small for %d tensors\n",
                         o->max_bytes, nt);
    return 2;
  }
  many_arg_t a = {.n = nt, .send = b->send, .recv = b->recv, .es = es, .dt = o->dtype,
                  .op = (hvd_op_t)o->op};
  a.names = calloc((size_t)nt, sizeof *a.names);
  a.count = calloc((size_t)nt, sizeof *a.count);
  a.off = calloc((size_t)nt, sizeof *a.off);
  a.req = calloc((size_t)nt, sizeof *a.req);
  int status = 1;
  if (!a.names || !a.count || !a.off || !a.req) {
    fprintf(stderr, "hvd-bench: rank %d: out of memory\n", me);
    goto out;
  }
  mixed_counts(nt, total, a.count, a.off);
  size_t cmin = (size_t)-1, cmax = 0;
  for (int k = 0; k < nt; k++) {
    snprintf(a.names[k], sizeof a.names[k], "bench.mixed.%d", k);
    if (a.count[k] < cmin) cmin = a.count[k];
    if (a.count[k] > cmax) cmax = a.count[k];
  }
  hvd_stats_t st0, st1;
  rt_stats_t mixed, one, raw;
  hvd_status_t rc;
  hvd_get_stats(ctx, &st0);
  if ((rc = measure(ctx, o, "mixed", step_many, &a, t, tmp, cap, &mixed)) != HVD_OK) {
    status = fail(ctx, "mixed allreduces", rc);
    goto out;
  }
  hvd_get_stats(ctx, &st1);
  /* collectives per step, over warmup + timed steps (the bookkeeping allreduces are 1-2) */
  long steps = mixed.iters + (o->warmup > 0 ? o->warmup : 1);
  double colls = (double)(st1.collectives - st0.collectives) / (double)steps;
  double fused = (double)(st1.fused_tensors - st0.fused_tensors) / (double)steps;

  one_arg_t a1 = {"bench.mixed.whole", b->send, b->recv, total, o->dtype, (hvd_op_t)o->op};
  if ((rc = measure(ctx, o, "whole", step_one, &a1, t, tmp, cap, &one)) != HVD_OK) {
    status = fail(ctx, "runtime allreduce", rc);
    goto out;
  }
  if ((rc = raw_reference(ctx, o, b, total, mixed.iters, t, tmp, &raw)) != HVD_OK) {
    status = fail(ctx, "raw allreduce", rc);
    goto out;
  }
  double paired = 0;
  raw_once_t ro = {.o = o, .send = b->send, .recv = b->recv, .count = total};
  if ((rc = paired_ratio(ctx, &a, &ro, mixed.iters, t, tmp, &paired)) != HVD_OK) {
    status = fail(ctx, "paired mixed/raw steps", rc);
    goto out;
  }
  uint64_t wrong = 0;
  if (o->check) {
    bench_fill_sentinel(b->recv, o->dtype, total);
    if ((rc = step_many(ctx, &a)) != HVD_OK) {
      status = fail(ctx, "checked mixed step", rc);
      goto out;
    }
    rc = sum_wrong(ctx, "mixed", bench_check_allreduce_range(b->recv, o->dtype, o->op, n, 0, total),
                   &wrong);
    if (rc != HVD_OK) {
      status = fail(ctx, "summing wrong values", rc);
      goto out;
    }
  }
  if (me == 0) {
    char w[24];
    if (o->check) snprintf(w, sizeof w, "%llu", (unsigned long long)wrong);
    else snprintf(w, sizeof w, "N/A");
    printf("# runtime mixed: %d tensors of %zu..%zu B (weights 2^(k mod 12)), %zu B per step, "
           "%s %s; fused into %.2f collective(s) per step (%.1f tensors fused)\n",
           nt, cmin * es, cmax * es, bytes, hvd_dtype_name(o->dtype), bench_op_names[o->op],
           colls, fused);
    if (o->csv) {
      printf("#case,tensors,bytes,time_us,p90_us,algbw_gbs,vs_raw,wrong,iters\n");
      printf("mixed,%d,%zu,%.2f,%.2f,%.3f,%.3f,%s,%ld\n", nt, bytes, mixed.med * 1e6,
             mixed.p90 * 1e6, (double)bytes / mixed.med / 1e9, mixed.med / raw.med, w,
             mixed.iters);
      printf("runtime-one,1,%zu,%.2f,%.2f,%.3f,%.3f,-,%ld\n", bytes, one.med * 1e6,
             one.p90 * 1e6, (double)bytes / one.med / 1e9, one.med / raw.med, one.iters);
      printf("raw,1,%zu,%.2f,%.2f,%.3f,1.000,-,%ld\n", bytes, raw.med * 1e6, raw.p90 * 1e6,
             (double)bytes / raw.med / 1e9, raw.iters);
      printf("paired,%d,%zu,-,-,-,%.3f,-,%ld\n", nt, bytes, paired, mixed.iters);
    } else {
      printf("#%-22s %8s %10s %10s %10s %10s %8s %7s %7s\n", "case", "tensors", "bytes",
             "time(us)", "p90(us)", "algbw", "vs_raw", "#wrong", "iters");
      printf(" %-22s %8d %10zu %10.1f %10.1f %10.3f %8.3f %7s %7ld\n", "mixed (async, fused)",
             nt, bytes, mixed.med * 1e6, mixed.p90 * 1e6, (double)bytes / mixed.med / 1e9,
             mixed.med / raw.med, w, mixed.iters);
      printf(" %-22s %8d %10zu %10.1f %10.1f %10.3f %8.3f %7s %7ld\n", "one tensor (runtime)",
             1, bytes, one.med * 1e6, one.p90 * 1e6, (double)bytes / one.med / 1e9,
             one.med / raw.med, "-", one.iters);
      printf(" %-22s %8d %10zu %10.1f %10.1f %10.3f %8.3f %7s %7ld\n", "one allreduce (raw)", 1,
             bytes, raw.med * 1e6, raw.p90 * 1e6, (double)bytes / raw.med / 1e9, 1.0, "-",
             raw.iters);
      printf("# ratio mixed/raw: %.3f (medians of the runs above); paired, alternating: "
             "%.3f (median of %ld per-pair ratios)\n",
             mixed.med / raw.med, paired, mixed.iters);
    }
    if (o->check)
      printf("# Out of bounds values : %llu %s\n", (unsigned long long)wrong,
             wrong ? "FAILED" : "OK");
    fflush(stdout);
  }
  status = wrong ? 1 : 0;
out:
  free(a.names);
  free(a.count);
  free(a.off);
  free(a.req);
  return status;
}

int bench_runtime_main(hvd_ctx_t *ctx, const bench_opts_t *o, bench_bufs_t *b, double bmem) {
  (void)bmem;
  long cap = o->iters > BENCH_MAX_ITERS_AUTO ? o->iters : BENCH_MAX_ITERS_AUTO;
  double *t = calloc((size_t)cap, sizeof *t), *tmp = calloc((size_t)cap, sizeof *tmp);
  int status;
  if (t == NULL || tmp == NULL) {
    fprintf(stderr, "hvd-bench: rank %d: out of memory\n", hvd_rank(ctx));
    status = 1;
  } else if (o->rt_case == BENCH_RT_SMALL) {
    status = run_small(ctx, o, b, t, tmp, cap);
  } else {
    status = run_mixed(ctx, o, b, t, tmp, cap);
  }
  free(t);
  free(tmp);
  return status;
}
