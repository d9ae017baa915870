/*
 * A rank program for the runtime integration tests: one case per run
 * (runtime_check CASE), each checking one Horovod behaviour through the public API
 * with exact reference values. Prints "CASE <name>: OK" and exits 0, or prints what
 * was wrong and exits 1.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* RUSAGE_THREAD, sched_getaffinity */
#endif
#include <math.h>
#include <sched.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "hvd.h"

static hvd_ctx_t *ctx;
static int R, N;
static int failures;

#define FAIL(...)                                                                         \
  do {                                                                                    \
    fprintf(stderr, "rank %d: FAIL %s:%d: ", R, __func__, __LINE__);                     \
    fprintf(stderr, __VA_ARGS__);                                                         \
    fprintf(stderr, "\n");                                                                \
    failures++;                                                                           \
  } while (0)
#define CHECK_OK(expr)                                                                    \
  do {                                                                                    \
    hvd_status_t rc_ = (expr);                                                            \
    if (rc_ != HVD_OK) FAIL("%s -> %s", #expr, hvd_status_string(rc_));                   \
  } while (0)

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- values of any dtype through double ------------------------------------------ */

static uint16_t f2h(float f) { /* exact for the small integers used here */
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  int e = (int)((x >> 23) & 0xff) - 127 + 15;
  uint32_t m = x & 0x7fffffu;
  if (f == 0) return (uint16_t)sign;
  return (uint16_t)(sign | ((uint32_t)e << 10) | (m >> 13));
}
static float h2f(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ffu;
  if (e == 0 && m == 0) {
    float z;
    memcpy(&z, &sign, 4);
    return z;
  }
  uint32_t x = sign | ((e - 15 + 127) << 23) | (m << 13);
  float f;
  memcpy(&f, &x, 4);
  return f;
}

static void put(void *b, size_t i, hvd_dtype_t d, double v) {
  switch (d) {
  case HVD_FLOAT16: ((uint16_t *)b)[i] = f2h((float)v); break;
  case HVD_BFLOAT16: {
    float f = (float)v;
    uint32_t x;
    memcpy(&x, &f, 4);
    ((uint16_t *)b)[i] = (uint16_t)(x >> 16);
    break;
  }
  case HVD_FLOAT32: ((float *)b)[i] = (float)v; break;
  case HVD_FLOAT64: ((double *)b)[i] = v; break;
  case HVD_INT8: ((int8_t *)b)[i] = (int8_t)v; break;
  case HVD_UINT8: ((uint8_t *)b)[i] = (uint8_t)v; break;
  case HVD_INT32: ((int32_t *)b)[i] = (int32_t)v; break;
  case HVD_INT64: ((int64_t *)b)[i] = (int64_t)v; break;
  default: abort();
  }
}
static double get(const void *b, size_t i, hvd_dtype_t d) {
  switch (d) {
  case HVD_FLOAT16: return h2f(((const uint16_t *)b)[i]);
  case HVD_BFLOAT16: {
    uint32_t x = (uint32_t)((const uint16_t *)b)[i] << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
  }
  case HVD_FLOAT32: return ((const float *)b)[i];
  case HVD_FLOAT64: return ((const double *)b)[i];
  case HVD_INT8: return ((const int8_t *)b)[i];
  case HVD_UINT8: return ((const uint8_t *)b)[i];
  case HVD_INT32: return ((const int32_t *)b)[i];
  case HVD_INT64: return (double)((const int64_t *)b)[i];
  default: abort();
  }
}

static void *buf_of(size_t n, hvd_dtype_t d) { return calloc(n ? n : 1, hvd_dtype_size(d)); }

/* Small values whose reductions over <= 8 ranks are exact in every dtype. */
static double val(size_t i, int r, hvd_op_t op) {
  if (op == HVD_PRODUCT) return (double)((long)((i + (size_t)r) % 3) - 1);
  return (double)((long)((i * 7 + (size_t)r * 3) % 9) - 4);
}

static double ref(size_t i, hvd_op_t op, int n) {
  double acc = val(i, 0, op);
  for (int r = 1; r < n; r++) {
    double v = val(i, r, op);
    if (op == HVD_SUM || op == HVD_AVERAGE) acc += v;
    else if (op == HVD_MIN) acc = fmin(acc, v);
    else if (op == HVD_MAX) acc = fmax(acc, v);
    else acc *= v;
  }
  return acc;
}


/* ---- cases ---------------------------------------------------------------------------- */

/* sum, min, max, product for every dtype, out of place and in place; average of the
 * same tensor on every rank is that tensor (integers too). */
static void case_ops(void) {
  const size_t count = 17 * 17;
  for (int d = 0; d < HVD_DTYPE_COUNT; d++) {
    hvd_dtype_t dt = (hvd_dtype_t)d;
    for (int o = 0; o < HVD_OP_COUNT; o++) {
      hvd_op_t op = (hvd_op_t)o;
      if (dt == HVD_UINT8 && op != HVD_AVERAGE) continue; /* negative values: see below */
      for (int inplace = 0; inplace < 2; inplace++) {
        void *in = buf_of(count, dt), *out = inplace ? in : buf_of(count, dt);
        for (size_t i = 0; i < count; i++)
          put(in, i, dt, op == HVD_AVERAGE ? (double)(i % 16) : val(i, R, op));
        char name[96];
        snprintf(name, sizeof name, "ops.%s.%s.%d", hvd_dtype_name(dt), hvd_op_name(op), inplace);
        CHECK_OK(hvd_allreduce(ctx, name, in, out, count, dt, op));
        for (size_t i = 0; i < count; i++) {
          double want = op == HVD_AVERAGE ? (double)(i % 16) : ref(i, op, N); /* sums fit int8 */
          if (get(out, i, dt) != want) {
            FAIL("%s[%zu] = %g, want %g", name, i, get(out, i, dt), want);
            break;
          }
        }
        if (!inplace) free(out);
        free(in);
      }
    }
  }
  /* uint8: non-negative values. */
  uint8_t u[64], w[64];
  for (int i = 0; i < 64; i++) u[i] = (uint8_t)(i % 5 + R);
  CHECK_OK(hvd_allreduce(ctx, "ops.uint8.max", u, w, 64, HVD_UINT8, HVD_MAX));
  for (int i = 0; i < 64; i++)
    if (w[i] != i % 5 + N - 1) FAIL("uint8 max[%d] = %d", i, w[i]);
  /* Integer average truncates toward zero: sum 0+1+...+(N-1) over N. */
  int32_t a = R, b;
  CHECK_OK(hvd_allreduce(ctx, "ops.int32.avg.trunc", &a, &b, 1, HVD_INT32, HVD_AVERAGE));
  if (b != (N * (N - 1) / 2) / N) FAIL("int average = %d, want %d", b, (N * (N - 1) / 2) / N);
}

/* 200 tensors of mixed sizes in one burst: correct, truly asynchronous, and fused. */
static void case_async_fused(void) {
  enum { T = 200 };
  hvd_req_t *req[T];
  float *bufs[T];
  size_t counts[T];
  hvd_stats_t s0, s1;
  hvd_get_stats(ctx, &s0);
  int not_done = 0;
  for (int t = 0; t < T; t++) {
    counts[t] = (size_t)((t * 7919) % 5000 + (t % 3 == 0 ? 20000 : 1));
    bufs[t] = malloc(counts[t] * sizeof(float));
    for (size_t i = 0; i < counts[t]; i++) bufs[t][i] = (float)((i + (size_t)t + (size_t)R) % 13);
    char name[32];
    snprintf(name, sizeof name, "fused.%d", t);
    CHECK_OK(hvd_allreduce_async(ctx, name, bufs[t], bufs[t], counts[t], HVD_FLOAT32, HVD_SUM, &req[t]));
    int done = 1;
    hvd_test(req[t], &done);
    if (!done) not_done++;
  }
  for (int t = 0; t < T; t++) {
    CHECK_OK(hvd_wait(req[t]));
    hvd_req_free(req[t]);
    for (size_t i = 0; i < counts[t]; i++) {
      float want = 0;
      for (int r = 0; r < N; r++) want += (float)((i + (size_t)t + (size_t)r) % 13);
      if (bufs[t][i] != want) {
        FAIL("fused.%d[%zu] = %g, want %g", t, i, bufs[t][i], want);
        break;
      }
    }
    free(bufs[t]);
  }
  hvd_get_stats(ctx, &s1);
  unsigned long long colls = (unsigned long long)(s1.collectives - s0.collectives);
  printf("rank %d: %d tensors ran in %llu collective executions (%llu fused); test() said "
         "not done %d times\n", R, T, colls, (unsigned long long)(s1.fused_tensors - s0.fused_tensors),
         not_done);
  if (N > 1 && colls > T / 4) FAIL("%llu collective executions for %d tensors: not fused", colls, T);
  if (N > 1 && not_done == 0) FAIL("test() never returned not done");
}

static void case_scale(void) {
  double x[100], y[100];
  for (int i = 0; i < 100; i++) x[i] = i + R;
  hvd_op_args_t a = HVD_OP_ARGS_INIT;
  a.name = "scale.f64";
  a.sendbuf = x;
  a.recvbuf = y;
  a.count = 100;
  a.dtype = HVD_FLOAT64;
  a.prescale = 0.5;
  a.postscale = 3;
  hvd_req_t *req;
  CHECK_OK(hvd_allreduce_ex(ctx, &a, &req));
  CHECK_OK(hvd_wait(req));
  hvd_req_free(req);
  for (int i = 0; i < 100; i++) {
    double want = 0;
    for (int r = 0; r < N; r++) want += (i + r) * 0.5;
    want *= 3;
    if (y[i] != want) FAIL("scale[%d] = %g, want %g", i, y[i], want);
  }
  int32_t xi[10], yi[10];
  for (int i = 0; i < 10; i++) xi[i] = i;
  a.name = "scale.i32";
  a.sendbuf = xi;
  a.recvbuf = yi;
  a.count = 10;
  a.dtype = HVD_INT32;
  a.prescale = 2;
  a.postscale = 3;
  a.op = HVD_AVERAGE;
  CHECK_OK(hvd_allreduce_ex(ctx, &a, &req));
  CHECK_OK(hvd_wait(req));
  hvd_req_free(req);
  for (int i = 0; i < 10; i++)
    if (yi[i] != i * 2 * 3) FAIL("scaled int average[%d] = %d, want %d", i, yi[i], i * 6);
}

static void case_psets(void) {
  int even[8], odd[8], ne = 0, no = 0;
  for (int r = 0; r < N; r++) {
    if (r % 2 == 0) even[ne++] = r;
    else odd[no++] = r;
  }
  int ide = -1, ido = -1;
  CHECK_OK(hvd_process_set_create(ctx, even, ne, &ide));
  CHECK_OK(hvd_process_set_create(ctx, odd, no, &ido));
  if (ide <= 0 || ido <= 0 || ide == ido) FAIL("process set ids %d %d", ide, ido);
  int mine = R % 2 == 0 ? ide : ido;
  int n = R % 2 == 0 ? ne : no;
  if (hvd_process_set_size(ctx, mine) != n) FAIL("set size %d", hvd_process_set_size(ctx, mine));
  if (hvd_process_set_rank(ctx, mine) != R / 2) FAIL("set rank %d", hvd_process_set_rank(ctx, mine));
  if (hvd_process_set_rank(ctx, R % 2 == 0 ? ido : ide) != -1) FAIL("member of the other set?");
  for (int k = 0; k < 3; k++) {
    int64_t v[33], w[33];
    for (int i = 0; i < 33; i++) v[i] = (int64_t)(R * 1000 + i);
    hvd_op_args_t a = HVD_OP_ARGS_INIT;
    a.name = "pset.t"; /* the same name in both sets: they are separate namespaces */
    a.sendbuf = v;
    a.recvbuf = w;
    a.count = 33;
    a.dtype = HVD_INT64;
    a.process_set = mine;
    hvd_req_t *req;
    CHECK_OK(hvd_allreduce_ex(ctx, &a, &req));
    CHECK_OK(hvd_wait(req));
    hvd_req_free(req);
    for (int i = 0; i < 33; i++) {
      int64_t want = 0;
      for (int r = R % 2; r < N; r += 2) want += (int64_t)(r * 1000 + i);
      if (w[i] != want) FAIL("pset sum[%d] = %lld, want %lld", i, (long long)w[i], (long long)want);
    }
  }
  /* A set this rank is not in. */
  float f = 1;
  hvd_op_args_t a = HVD_OP_ARGS_INIT;
  a.sendbuf = a.recvbuf = &f;
  a.count = 1;
  a.process_set = R % 2 == 0 ? ido : ide;
  hvd_req_t *req;
  if (N > 1 && hvd_allreduce_ex(ctx, &a, &req) != HVD_ERR_INVALID_PARAM) FAIL("non-member accepted");
  a.process_set = 999;
  if (hvd_allreduce_ex(ctx, &a, &req) != HVD_ERR_INVALID_PARAM) FAIL("unknown set accepted");
  CHECK_OK(hvd_barrier(ctx, mine));
  CHECK_OK(hvd_barrier(ctx, 0));
}

static void expect_mismatch(hvd_status_t rc, hvd_req_t *req, const char *name, const char *what) {
  if (rc != HVD_OK) {
    FAIL("submit %s: %s", name, hvd_status_string(rc));
    return;
  }
  rc = hvd_wait(req);
  const char *msg = hvd_req_error(req);
  if (rc != HVD_ERR_MISMATCH) FAIL("%s: status %s, want MISMATCH", name, hvd_status_string(rc));
  else if (!strstr(msg, name) || !strstr(msg, what) || !strstr(msg, "rank"))
    FAIL("%s: message does not name tensor, field and ranks: '%s'", name, msg);
  else if (R == 0)
    printf("rank 0: %s failed as expected: %s\n", name, msg);
  hvd_req_free(req);
}

static void case_mismatch(void) {
  float x[16] = {0}, y[16];
  hvd_req_t *req;
  /* count */
  hvd_status_t rc = hvd_allreduce_async(ctx, "mm.count", x, y, R == 0 ? 10 : 11, HVD_FLOAT32, HVD_SUM, &req);
  expect_mismatch(rc, req, "mm.count", "element counts");
  /* dtype */
  rc = hvd_allreduce_async(ctx, "mm.dtype", x, y, 4, R % 2 ? HVD_FLOAT32 : HVD_INT32, HVD_SUM, &req);
  expect_mismatch(rc, req, "mm.dtype", "data types");
  /* reduction */
  rc = hvd_allreduce_async(ctx, "mm.op", x, y, 4, HVD_FLOAT32, R == N - 1 ? HVD_MAX : HVD_SUM, &req);
  expect_mismatch(rc, req, "mm.op", "reduction");
  /* broadcast root */
  hvd_op_args_t a = HVD_OP_ARGS_INIT;
  a.name = "mm.root";
  a.sendbuf = a.recvbuf = x;
  a.count = 4;
  a.root = R == 0 ? 0 : N - 1;
  rc = hvd_broadcast_ex(ctx, &a, &req);
  expect_mismatch(rc, req, "mm.root", "root");
  /* operation type */
  a = (hvd_op_args_t)HVD_OP_ARGS_INIT;
  a.name = "mm.type";
  a.sendbuf = a.recvbuf = x;
  a.count = 4;
  rc = R == 0 ? hvd_broadcast_ex(ctx, &a, &req) : hvd_allreduce_ex(ctx, &a, &req);
  expect_mismatch(rc, req, "mm.type", "operations");
  /* The job goes on. */
  for (int i = 0; i < 16; i++) x[i] = 1;
  CHECK_OK(hvd_allreduce(ctx, "mm.after", x, y, 16, HVD_FLOAT32, HVD_SUM));
  for (int i = 0; i < 16; i++)
    if (y[i] != N) FAIL("after mismatch: %g", y[i]);
  /* A cached name coming back with a different count. */
  CHECK_OK(hvd_allreduce(ctx, "mm.cached", x, y, 8, HVD_FLOAT32, HVD_SUM));
  CHECK_OK(hvd_allreduce(ctx, "mm.cached", x, y, 8, HVD_FLOAT32, HVD_SUM));
  rc = hvd_allreduce_async(ctx, "mm.cached", x, y, R == 0 ? 8 : 9, HVD_FLOAT32, HVD_SUM, &req);
  if (N > 1) expect_mismatch(rc, req, "mm.cached", "element counts");
  else {
    hvd_wait(req);
    hvd_req_free(req);
  }
  CHECK_OK(hvd_allreduce(ctx, "mm.cached", x, y, 16, HVD_FLOAT32, HVD_SUM));
  for (int i = 0; i < 16; i++)
    if (y[i] != N) FAIL("cached name with new count: %g", y[i]);
}

static void case_duplicate(void) {
  float x = 1, y = 0;
  hvd_req_t *r1 = NULL, *r2 = NULL;
  if (R == 0) {
    CHECK_OK(hvd_allreduce_async(ctx, "dup", &x, &y, 1, HVD_FLOAT32, HVD_SUM, &r1));
    hvd_status_t rc = hvd_allreduce_async(ctx, "dup", &x, &y, 1, HVD_FLOAT32, HVD_SUM, &r2);
    if (rc != HVD_ERR_INVALID_PARAM || r2 != NULL) FAIL("duplicate name accepted: %s", hvd_status_string(rc));
  }
  CHECK_OK(hvd_barrier(ctx, 0));
  if (R != 0) CHECK_OK(hvd_allreduce_async(ctx, "dup", &x, &y, 1, HVD_FLOAT32, HVD_SUM, &r1));
  CHECK_OK(hvd_wait(r1));
  hvd_req_free(r1);
  if (y != N) FAIL("dup result %g", y);
}

static void case_grouped(void) {
  enum { G = 5 };
  hvd_op_args_t a[G];
  double *b[G];
  for (int g = 0; g < G; g++) {
    size_t n = (size_t)(g * 1000 + 3);
    b[g] = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) b[g][i] = (double)(i % 7) * (R + 1);
    a[g] = (hvd_op_args_t)HVD_OP_ARGS_INIT;
    char *nm = malloc(32);
    snprintf(nm, 32, "group.%d", g);
    a[g].name = nm;
    a[g].sendbuf = a[g].recvbuf = b[g];
    a[g].count = n;
    a[g].dtype = HVD_FLOAT64;
    a[g].op = HVD_AVERAGE;
  }
  hvd_req_t *req;
  CHECK_OK(hvd_grouped_allreduce(ctx, a, G, &req));
  CHECK_OK(hvd_wait(req));
  hvd_req_free(req);
  for (int g = 0; g < G; g++) {
    for (size_t i = 0; i < a[g].count; i++) {
      double want = (double)(i % 7) * (N + 1) / 2.0;
      if (b[g][i] != want) {
        FAIL("group.%d[%zu] = %g, want %g", g, i, b[g][i], want);
        break;
      }
    }
    free(b[g]);
    free((void *)a[g].name);
  }
}

/* Every rank in turn joins first; the others allreduce two tensors (fused) and see
 * the joined rank's zeros; everyone gets the same last-joined rank. */
static void join_round(int first, int warm, const char *tag) {
  float x[2][64], y[2][64];
  char n0[64], n1[64];
  snprintf(n0, sizeof n0, "join.%s.a", tag);
  snprintf(n1, sizeof n1, "join.%s.b", tag);
  for (int t = 0; t < 2; t++)
    for (int i = 0; i < 64; i++) x[t][i] = (float)(i + t);
  if (warm) { /* put both names in the response cache first */
    CHECK_OK(hvd_allreduce(ctx, n0, x[0], y[0], 64, HVD_FLOAT32, HVD_AVERAGE));
    CHECK_OK(hvd_allreduce(ctx, n1, x[1], y[1], 64, HVD_FLOAT32, HVD_AVERAGE));
  }
  int last = -2;
  if (R == first) {
    CHECK_OK(hvd_join(ctx, 0, &last));
  } else {
    hvd_req_t *r0, *r1;
    CHECK_OK(hvd_allreduce_async(ctx, n0, x[0], y[0], 64, HVD_FLOAT32, HVD_AVERAGE, &r0));
    CHECK_OK(hvd_allreduce_async(ctx, n1, x[1], y[1], 64, HVD_FLOAT32, HVD_AVERAGE, &r1));
    CHECK_OK(hvd_wait(r0));
    CHECK_OK(hvd_wait(r1));
    hvd_req_free(r0);
    hvd_req_free(r1);
    for (int t = 0; t < 2; t++)
      for (int i = 0; i < 64; i++) {
        float want = (float)(i + t) * (float)(N - 1) / (float)N;
        if (fabsf(y[t][i] - want) > 1e-5f * fabsf(want)) {
          FAIL("%s join first=%d: y[%d][%d] = %g, want %g", tag, first, t, i, y[t][i], want);
          t = 2;
          break;
        }
      }
    CHECK_OK(hvd_join(ctx, 0, &last));
  }
  int mn = last, mx = last;
  CHECK_OK(hvd_allreduce(ctx, "join.last.min", &last, &mn, 1, HVD_INT32, HVD_MIN));
  CHECK_OK(hvd_allreduce(ctx, "join.last.max", &last, &mx, 1, HVD_INT32, HVD_MAX));
  if (mn != mx) FAIL("ranks disagree on the last joined rank: %d..%d", mn, mx);
  if (last < 0 || last >= N || (N > 1 && last == first))
    FAIL("last joined rank %d (first to join was %d)", last, first);
}

static void case_join(void) {
  for (int first = 0; first < N; first++) {
    char tag[32];
    snprintf(tag, sizeof tag, "cold%d", first);
    join_round(first, 0, tag);
    snprintf(tag, sizeof tag, "warm%d", first);
    join_round(first, 1, tag);
  }
  /* Other collectives fail while a rank has joined; the join still completes. */
  if (N > 1) {
    int last;
    if (R == 0) {
      CHECK_OK(hvd_join(ctx, 0, &last));
    } else {
      float x[4] = {1, 2, 3, 4};
      hvd_op_args_t a = HVD_OP_ARGS_INIT;
      a.name = "join.allgather";
      a.sendbuf = x;
      a.count = 4;
      hvd_req_t *req;
      CHECK_OK(hvd_allgather_ex(ctx, &a, &req));
      hvd_status_t rc = hvd_wait(req);
      if (rc != HVD_ERR_NOT_SUPPORTED) FAIL("allgather while joined: %s", hvd_status_string(rc));
      else if (R == 1) printf("rank 1: allgather while rank 0 joined failed as expected: %s\n", hvd_req_error(req));
      hvd_req_free(req);
      CHECK_OK(hvd_join(ctx, 0, &last));
    }
  }
}

static void case_barrier(void) {
  /* Barrier with outstanding async ops, then rank 0 arrives late. */
  float x = 1, y = 0;
  hvd_req_t *req;
  CHECK_OK(hvd_allreduce_async(ctx, "barrier.pending", &x, &y, 1, HVD_FLOAT32, HVD_SUM, &req));
  if (R == 0) usleep(1500000);
  double t0 = now_s();
  CHECK_OK(hvd_barrier(ctx, 0));
  double dt = now_s() - t0;
  CHECK_OK(hvd_wait(req));
  hvd_req_free(req);
  if (y != N) FAIL("allreduce around barrier %g", y);
  if (R != 0 && N > 1 && dt < 1.3) FAIL("barrier returned after %.2f s, before rank 0 arrived", dt);
  printf("rank %d: barrier took %.2f s\n", R, dt);
}

static void case_collectives(void) {
  hvd_req_t *req;
  /* allgather, variable parts, output allocated by hvd */
  {
    size_t mine = (size_t)R + 1;
    int32_t *x = malloc(mine * sizeof *x);
    for (size_t i = 0; i < mine; i++) x[i] = R * 100 + (int)i;
    hvd_op_args_t a = HVD_OP_ARGS_INIT;
    a.name = "ag.alloc";
    a.sendbuf = x;
    a.count = mine;
    a.dtype = HVD_INT32;
    CHECK_OK(hvd_allgather_ex(ctx, &a, &req));
    CHECK_OK(hvd_wait(req));
    void *out;
    size_t total;
    const size_t *rc;
    int nr;
    CHECK_OK(hvd_req_output(req, &out, &total));
    CHECK_OK(hvd_req_recv_counts(req, &rc, &nr));
    if (total != (size_t)(N * (N + 1) / 2) || nr != N) FAIL("allgather total %zu", total);
    size_t k = 0;
    for (int r = 0; r < N && !failures; r++) {
      if (rc[r] != (size_t)r + 1) FAIL("recv count[%d] = %zu", r, rc[r]);
      for (int i = 0; i <= r; i++, k++)
        if (((int32_t *)out)[k] != r * 100 + i) FAIL("allgather[%zu] = %d", k, ((int32_t *)out)[k]);
    }
    hvd_req_free(req);
    /* into a caller buffer; and one too small fails cleanly on that rank only */
    int32_t big[64];
    a.name = "ag.buf";
    a.recvbuf = big;
    a.recv_capacity = 64;
    CHECK_OK(hvd_allgather_ex(ctx, &a, &req));
    CHECK_OK(hvd_wait(req));
    hvd_req_free(req);
    if (big[0] != 0 || (N > 1 && big[1] != 100)) FAIL("allgather into buffer: %d %d", big[0], big[1]);
    a.name = "ag.small";
    a.recv_capacity = R == 0 ? 1 : 64;
    CHECK_OK(hvd_allgather_ex(ctx, &a, &req));
    hvd_status_t st = hvd_wait(req);
    if (R == 0 && N > 1 && st != HVD_ERR_INVALID_PARAM) FAIL("small recv buffer: %s", hvd_status_string(st));
    if (R != 0 && st != HVD_OK) FAIL("allgather with a small buffer elsewhere: %s", hvd_status_string(st));
    hvd_req_free(req);
    free(x);
  }
  /* broadcast from every root */
  for (int root = 0; root < N; root++) {
    double v[1000];
    for (int i = 0; i < 1000; i++) v[i] = R == root ? root * 10.0 + i : -1;
    char name[32];
    snprintf(name, sizeof name, "bcast.%d", root);
    CHECK_OK(hvd_broadcast(ctx, name, v, 1000, HVD_FLOAT64, root));
    for (int i = 0; i < 1000; i++)
      if (v[i] != root * 10.0 + i) {
        FAIL("broadcast root %d: v[%d] = %g", root, i, v[i]);
        break;
      }
  }
  /* alltoall with splits: rank r sends j+1 elements to rank j */
  {
    size_t splits[16], total = 0;
    for (int j = 0; j < N; j++) total += (splits[j] = (size_t)j + 1);
    int64_t *x = malloc(total * sizeof *x);
    size_t k = 0;
    for (int j = 0; j < N; j++)
      for (size_t i = 0; i < splits[j]; i++) x[k++] = R * 1000 + j * 10 + (int64_t)i;
    hvd_op_args_t a = HVD_OP_ARGS_INIT;
    a.name = "a2a";
    a.sendbuf = x;
    a.count = total;
    a.dtype = HVD_INT64;
    a.splits = splits;
    CHECK_OK(hvd_alltoall_ex(ctx, &a, &req));
    CHECK_OK(hvd_wait(req));
    void *out;
    size_t got;
    CHECK_OK(hvd_req_output(req, &out, &got));
    if (got != (size_t)N * (size_t)(R + 1)) FAIL("alltoall received %zu", got);
    k = 0;
    for (int r = 0; r < N; r++)
      for (int i = 0; i <= R; i++, k++)
        if (((int64_t *)out)[k] != r * 1000 + R * 10 + i) FAIL("alltoall[%zu] = %lld", k, (long long)((int64_t *)out)[k]);
    hvd_req_free(req);
    free(x);
    size_t bad[16] = {0};
    a.splits = bad;
    if (hvd_alltoall_ex(ctx, &a, &req) != HVD_ERR_INVALID_PARAM) FAIL("bad splits accepted");
  }
  /* reducescatter: block r of the sum, the first count % N blocks one larger */
  for (int avg = 0; avg < 2; avg++) {
    size_t count = 1000003;
    float *x = malloc(count * sizeof *x);
    for (size_t i = 0; i < count; i++) x[i] = (float)((i + (size_t)R) % 11);
    size_t q = count / (size_t)N, rem = count % (size_t)N;
    size_t mine = q + ((size_t)R < rem ? 1 : 0);
    size_t off = (size_t)R * q + ((size_t)R < rem ? (size_t)R : rem);
    float *y = malloc(mine * sizeof *y);
    hvd_op_args_t a = HVD_OP_ARGS_INIT;
    a.name = avg ? "rs.avg" : "rs.sum";
    a.sendbuf = x;
    a.recvbuf = y;
    a.count = count;
    a.op = avg ? HVD_AVERAGE : HVD_SUM;
    CHECK_OK(hvd_reducescatter_ex(ctx, &a, &req));
    CHECK_OK(hvd_wait(req));
    hvd_req_free(req);
    for (size_t i = 0; i < mine; i++) {
      float want = 0;
      for (int r = 0; r < N; r++) want += (float)((off + i + (size_t)r) % 11);
      if (avg) want /= (float)N;
      if (fabsf(y[i] - want) > 1e-6f * fabsf(want)) {
        FAIL("%s[%zu] = %g, want %g", a.name, i, y[i], want);
        break;
      }
    }
    free(x);
    free(y);
  }
}

/* Rank 0 submits a tensor the others never submit, and vice versa. */
static void case_stall(void) {
  float x = 1, y;
  hvd_req_t *req;
  CHECK_OK(hvd_allreduce_async(ctx, R == 0 ? "stall.only.rank0" : "stall.only.others", &x, &y, 1,
                               HVD_FLOAT32, HVD_SUM, &req));
  double t0 = now_s();
  hvd_status_t rc = hvd_wait(req);
  double dt = now_s() - t0;
  if (rc != HVD_ERR_TIMEOUT) FAIL("stalled tensor: %s, want TIMEOUT", hvd_status_string(rc));
  printf("rank %d: stalled tensor failed after %.1f s: %s\n", R, dt, hvd_req_error(req));
  hvd_req_free(req);
  x = 1;
  CHECK_OK(hvd_allreduce(ctx, "stall.after", &x, &y, 1, HVD_FLOAT32, HVD_SUM));
  if (y != N) FAIL("after stall: %g", y);
}

typedef struct {
  int t;
} thr_arg_t;

static void *thread_main(void *p) {
  int t = ((thr_arg_t *)p)->t;
  for (int k = 0; k < 40; k++) {
    int32_t v[257], w[257];
    for (int i = 0; i < 257; i++) v[i] = t * 1000 + k + i + R;
    char name[64];
    snprintf(name, sizeof name, "thread.%d.%d", t, k);
    hvd_req_t *req;
    CHECK_OK(hvd_allreduce_async(ctx, name, v, w, 257, HVD_INT32, HVD_SUM, &req));
    CHECK_OK(hvd_wait(req));
    hvd_req_free(req);
    for (int i = 0; i < 257; i++) {
      int32_t want = N * (t * 1000 + k + i) + N * (N - 1) / 2;
      if (w[i] != want) {
        FAIL("%s[%d] = %d, want %d", name, i, w[i], want);
        break;
      }
    }
  }
  return NULL;
}

static void case_threads(void) {
  pthread_t th[4];
  thr_arg_t args[4];
  for (int t = 0; t < 4; t++) {
    args[t].t = t;
    pthread_create(&th[t], NULL, thread_main, &args[t]);
  }
  for (int t = 0; t < 4; t++) pthread_join(th[t], NULL);
}

static void case_invalid(void) {
  float x[4];
  hvd_req_t *req = (hvd_req_t *)1;
  struct {
    const char *what;
    hvd_status_t rc;
  } c[] = {
      {"NULL sendbuf", hvd_allreduce_async(ctx, "inv.1", NULL, x, 4, HVD_FLOAT32, HVD_SUM, &req)},
      {"NULL recvbuf", hvd_allreduce_async(ctx, "inv.2", x, NULL, 4, HVD_FLOAT32, HVD_SUM, &req)},
      {"bad dtype", hvd_allreduce_async(ctx, "inv.3", x, x, 4, (hvd_dtype_t)99, HVD_SUM, &req)},
      {"bad op", hvd_allreduce_async(ctx, "inv.4", x, x, 4, HVD_FLOAT32, (hvd_op_t)77, &req)},
      {"overflow", hvd_allreduce_async(ctx, "inv.5", x, x, SIZE_MAX / 2, HVD_FLOAT64, HVD_SUM, &req)},
      {"overlap", hvd_allreduce_async(ctx, "inv.6", x, x + 1, 3, HVD_FLOAT32, HVD_SUM, &req)},
      {"NULL req", hvd_allreduce_async(ctx, "inv.7", x, x, 4, HVD_FLOAT32, HVD_SUM, NULL)},
  };
  for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
    if (c[i].rc != HVD_ERR_INVALID_PARAM) FAIL("%s: %s", c[i].what, hvd_status_string(c[i].rc));
  if (req != NULL) FAIL("req not NULL after a failed submit");
  hvd_op_args_t a = HVD_OP_ARGS_INIT;
  a.name = "inv.root";
  a.sendbuf = a.recvbuf = x;
  a.count = 4;
  a.root = N;
  if (hvd_broadcast_ex(ctx, &a, &req) != HVD_ERR_INVALID_PARAM) FAIL("root out of range accepted");
  a.root = -1;
  if (hvd_broadcast_ex(ctx, &a, &req) != HVD_ERR_INVALID_PARAM) FAIL("negative root accepted");
  a.root = 0;
  a.prescale = NAN;
  if (hvd_allreduce_ex(ctx, &a, &req) != HVD_ERR_INVALID_PARAM) FAIL("NaN prescale accepted");
  int bad_ranks[2] = {0, 0};
  int id;
  if (hvd_process_set_create(ctx, bad_ranks, 2, &id) != HVD_ERR_INVALID_PARAM) FAIL("duplicate ranks accepted");
  /* Zero elements with NULL buffers is fine. */
  CHECK_OK(hvd_allreduce(ctx, "inv.zero", NULL, NULL, 0, HVD_FLOAT32, HVD_SUM));
  /* What needs peers (tests/unit/test_badinput.c has the rest; test_runtime.c checks
   * the messages) */
  if (N < 2) return;
  int out_of_job[2] = {0, N};
  if (hvd_process_set_create(ctx, out_of_job, 2, &id) != HVD_ERR_INVALID_PARAM) FAIL("rank N accepted");
  size_t splits[64] = {SIZE_MAX, 2}; /* wraps to 1 when added */
  a = (hvd_op_args_t)HVD_OP_ARGS_INIT;
  a.name = "inv.a2a";
  a.sendbuf = x;
  a.count = 1;
  a.splits = splits;
  if (hvd_alltoall_ex(ctx, &a, &req) != HVD_ERR_INVALID_PARAM) FAIL("overflowing splits accepted");
  a.splits = NULL;
  a.count = (size_t)N + 1;
  if (hvd_alltoall_ex(ctx, &a, &req) != HVD_ERR_INVALID_PARAM) FAIL("uneven count accepted");
  int only0[1] = {0};
  CHECK_OK(hvd_process_set_create(ctx, only0, 1, &id));
  a = (hvd_op_args_t)HVD_OP_ARGS_INIT;
  a.name = "inv.member";
  a.sendbuf = a.recvbuf = x;
  a.count = 1;
  a.process_set = id;
  hvd_status_t rc = hvd_allreduce_ex(ctx, &a, &req);
  if (R == 0) {
    CHECK_OK(rc);
    if (rc == HVD_OK) CHECK_OK(hvd_wait(req));
    if (rc == HVD_OK) hvd_req_free(req);
  } else if (rc != HVD_ERR_INVALID_PARAM) {
    FAIL("non-member accepted");
  }
  if (R != 0 && hvd_process_set_rank(ctx, id) != -1) FAIL("non-member has a set rank");
  if (hvd_process_set_size(ctx, id) != 1) FAIL("set size %d", hvd_process_set_size(ctx, id));
  /* The longest name goes through negotiation, the cache and the timeline like any */
  static char longest[HVD_NAME_MAX + 1];
  memset(longest, 'L', HVD_NAME_MAX);
  for (int k = 0; k < 3; k++) {
    float one = 1, sum = 0;
    CHECK_OK(hvd_allreduce(ctx, longest, &one, &sum, 1, HVD_FLOAT32, HVD_SUM));
    if (sum != N) FAIL("longest name: sum %g", sum);
  }
}

/* A rank waiting on a slow peer must not burn a core: rank 1 arrives 3 s late
 * (RUNTIME_CHECK_SLOW_S seconds: the performance issue's figure is 10); the others
 * measure their process's CPU time (all threads) over the wait. */
static void case_slow_peer(void) {
  const char *env = getenv("RUNTIME_CHECK_SLOW_S");
  int late = env != NULL && atoi(env) > 0 ? atoi(env) : 3;
  float x = 1, y = 0;
  CHECK_OK(hvd_allreduce(ctx, "slow.warm", &x, &y, 1, HVD_FLOAT32, HVD_SUM));
  if (R == 1) sleep((unsigned)late);
  struct rusage u0, u1;
  getrusage(RUSAGE_SELF, &u0);
  double t0 = now_s();
  float big[4096];
  for (int i = 0; i < 4096; i++) big[i] = 1;
  CHECK_OK(hvd_allreduce(ctx, "slow.op", big, big, 4096, HVD_FLOAT32, HVD_SUM));
  double wall = now_s() - t0;
  getrusage(RUSAGE_SELF, &u1);
  double cpu = (double)(u1.ru_utime.tv_sec - u0.ru_utime.tv_sec) +
               (double)(u1.ru_stime.tv_sec - u0.ru_stime.tv_sec) +
               (double)(u1.ru_utime.tv_usec - u0.ru_utime.tv_usec) * 1e-6 +
               (double)(u1.ru_stime.tv_usec - u0.ru_stime.tv_usec) * 1e-6;
  if (big[0] != N) FAIL("slow.op result %g", big[0]);
  if (R != 1) {
    printf("rank %d: waited %.2f s for the slow peer using %.3f s of CPU (%.1f%% of a core)\n", R,
           wall, cpu, 100 * cpu / wall);
    if (wall > late - 0.5 && cpu / wall > 0.05)
      FAIL("waiting used %.1f%% of a core", 100 * cpu / wall);
  }
}

static double cpu_of(int who) {
  struct rusage u;
  getrusage(who, &u);
  return (double)u.ru_utime.tv_sec + (double)u.ru_stime.tv_sec +
         ((double)u.ru_utime.tv_usec + (double)u.ru_stime.tv_usec) * 1e-6;
}

/* A rank computing with tensors in flight on the core its background thread shares
 * (hvdrun binds one core per rank at np <= cores) leaves the core to the computation:
 * while the application spins for 300 ms without waiting, every other thread of the
 * process together uses < 5 % of it (the background thread sleeps; a polling one
 * would take about half). Even ranks submit before computing, so their tensors stay
 * in flight throughout (odd ranks submit theirs only after computing); then the
 * tensors complete with the right values. */
static void submit_busy(hvd_req_t **req, float (*x)[1000], int T, int C) {
  for (int t = 0; t < T; t++) {
    for (int i = 0; i < C; i++) x[t][i] = (float)(i % 7 + t + R);
    char name[32];
    snprintf(name, sizeof name, "busy.%d", t);
    CHECK_OK(hvd_allreduce_async(ctx, name, x[t], x[t], (size_t)C, HVD_FLOAT32, HVD_SUM, &req[t]));
  }
}

static void case_busy_compute(void) {
  enum { T = 4, C = 1000 };
  static float x[T][C];
  hvd_req_t *req[T];
  float y = 1, z = 0;
  CHECK_OK(hvd_allreduce(ctx, "busy.warm", &y, &z, 1, HVD_FLOAT32, HVD_SUM));
  if (R % 2 == 0) submit_busy(req, x, T, C);
  double p0 = cpu_of(RUSAGE_SELF), m0 = cpu_of(RUSAGE_THREAD), t0 = now_s();
  volatile double sink = 0;
  while (now_s() - t0 < 0.3)
    for (int i = 0; i < 10000; i++) sink += i * 1e-9;
  double wall = now_s() - t0;
  if (sink < 0) FAIL("the computation went negative"); /* uses it */
  double others = (cpu_of(RUSAGE_SELF) - p0) - (cpu_of(RUSAGE_THREAD) - m0);
  if (R % 2 == 1) submit_busy(req, x, T, C);
  for (int t = 0; t < T; t++) {
    CHECK_OK(hvd_wait(req[t]));
    hvd_req_free(req[t]);
    for (int i = 0; i < C; i++) {
      float want = 0;
      for (int r = 0; r < N; r++) want += (float)(i % 7 + t + r);
      if (x[t][i] != want) {
        FAIL("busy.%d[%d] = %g, want %g", t, i, x[t][i], want);
        break;
      }
    }
  }
  cpu_set_t set;
  int shared = sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) == 1;
  printf("rank %d: %s core; while computing %.2f s, the other threads used %.3f s of CPU "
         "(%.1f%%)\n", R, shared ? "shared" : "not a shared", wall, others, 100 * others / wall);
  if (shared && others / wall > 0.05)
    FAIL("the other threads took %.1f%% of the core while the application computed",
         100 * others / wall);
}

/* Application threads submitting at once on different process sets (two on all ranks,
 * one on the even and one on the odd ranks), every operation with a completion
 * callback, which runs on the background thread: the submitting thread waits for its
 * callback's flag, then hvd_wait returns the status the callback saw, the callback ran
 * exactly once, and the values are right. Allgathers read their output inside the
 * callback. scripts/test.sh also runs this under ThreadSanitizer. */
typedef struct {
  atomic_int calls;
  hvd_status_t status; /* written before calls is incremented */
  size_t output_count; /* allgather: what hvd_req_output said inside the callback */
} cb_state_t;

static void on_done(hvd_req_t *req, hvd_status_t st, void *arg) {
  cb_state_t *s = arg;
  s->status = st;
  void *out;
  size_t n = 0;
  if (hvd_req_output(req, &out, &n) == HVD_OK) s->output_count = n;
  atomic_fetch_add_explicit(&s->calls, 1, memory_order_release);
}

typedef struct {
  int t, set, n;
  int members[64];
} cb_thread_t;

static void *callback_thread(void *p) {
  const cb_thread_t *c = p;
  int64_t member_sum = 0;
  for (int j = 0; j < c->n; j++) member_sum += c->members[j];
  for (int k = 0; k < 30; k++) {
    int gather = k % 5 == 4;
    int32_t v[129], w[129 * 64];
    for (int i = 0; i < 129; i++) v[i] = c->t * 1000 + k * 10 + i % 7 + R;
    char name[64];
    snprintf(name, sizeof name, "cb.%d.%d", c->t, k);
    cb_state_t s = {.calls = 0, .status = HVD_IN_PROGRESS, .output_count = 0};
    hvd_op_args_t a = HVD_OP_ARGS_INIT;
    a.name = name;
    a.sendbuf = v;
    a.recvbuf = w;
    a.count = 129;
    a.dtype = HVD_INT32;
    a.process_set = c->set;
    a.callback = on_done;
    a.callback_arg = &s;
    hvd_req_t *req;
    hvd_status_t rc;
    if (gather) {
      a.recv_capacity = 129 * 64;
      rc = hvd_allgather_ex(ctx, &a, &req);
    } else {
      rc = hvd_allreduce_ex(ctx, &a, &req);
    }
    if (rc != HVD_OK) {
      FAIL("%s: submit: %s", name, hvd_status_string(rc));
      continue;
    }
    double end = now_s() + 60;
    while (atomic_load_explicit(&s.calls, memory_order_acquire) == 0 && now_s() < end)
      usleep(200);
    rc = hvd_wait(req);
    int calls = atomic_load_explicit(&s.calls, memory_order_acquire);
    if (calls != 1 || s.status != rc || rc != HVD_OK)
      FAIL("%s: %d callbacks, callback status %s, wait %s", name, calls,
           hvd_status_string(s.status), hvd_status_string(rc));
    hvd_req_free(req);
    if (gather) {
      if (s.output_count != 129 * (size_t)c->n) FAIL("%s: callback saw %zu elements", name, s.output_count);
      for (int j = 0; j < c->n; j++)
        for (int i = 0; i < 129; i++)
          if (w[j * 129 + i] != c->t * 1000 + k * 10 + i % 7 + c->members[j]) {
            FAIL("%s[%d] = %d", name, j * 129 + i, w[j * 129 + i]);
            j = c->n;
            break;
          }
    } else {
      for (int i = 0; i < 129; i++) {
        int64_t want = (int64_t)c->n * (c->t * 1000 + k * 10 + i % 7) + member_sum;
        if (w[i] != want) {
          FAIL("%s[%d] = %d, want %lld", name, i, w[i], (long long)want);
          break;
        }
      }
    }
  }
  return NULL;
}

static void case_callbacks(void) {
  cb_thread_t th[4];
  int even[64] = {0}, odd[64] = {0}, ne = 0, no = 0;
  if (N > 64) {
    FAIL("at most 64 ranks");
    return;
  }
  for (int r = 0; r < N; r++) {
    if (r % 2 == 0) even[ne++] = r;
    else odd[no++] = r;
  }
  int ide = 0, ido = 0;
  CHECK_OK(hvd_process_set_create(ctx, even, ne, &ide));
  if (no > 0) CHECK_OK(hvd_process_set_create(ctx, odd, no, &ido));
  for (int t = 0; t < 4; t++) {
    th[t].t = t;
    th[t].set = t == 1 ? (R % 2 == 0 ? ide : ido) : 0; /* thread 1: this rank's parity set */
    th[t].n = 0;
    for (int r = 0; r < N; r++)
      if (th[t].set == 0 || r % 2 == R % 2) th[t].members[th[t].n++] = r;
  }
  /* Threads 0, 2 and 3 on all ranks at once, thread 1 on the parity set. */
  pthread_t tid[4];
  for (int t = 0; t < 4; t++) pthread_create(&tid[t], NULL, callback_thread, &th[t]);
  for (int t = 0; t < 4; t++) pthread_join(tid[t], NULL);
  CHECK_OK(hvd_barrier(ctx, 0));
}

/* Shutdown completes outstanding work with a clear status, and init works again. */
static void case_reinit(void) {
  for (int round = 0; round < 2; round++) {
    float x = 1, y = 0;
    hvd_req_t *req;
    CHECK_OK(hvd_allreduce_async(ctx, "reinit.pending", &x, &y, 1, HVD_FLOAT32, HVD_SUM, &req));
    hvd_status_t rc = hvd_shutdown(ctx);
    if (rc != HVD_OK) FAIL("shutdown: %s", hvd_status_string(rc));
    hvd_status_t st = hvd_wait(req); /* must not hang; OK or SHUTDOWN */
    if (st != HVD_OK && st != HVD_ERR_SHUTDOWN) FAIL("pending op after shutdown: %s", hvd_status_string(st));
    if (st == HVD_OK && y != N) FAIL("pending op result %g", y);
    hvd_req_free(req);
    ctx = NULL;
    rc = hvd_init(&ctx);
    if (rc != HVD_OK) {
      FAIL("init after shutdown: %s", hvd_status_string(rc));
      return;
    }
    if (hvd_rank(ctx) != R || hvd_size(ctx) != N) FAIL("rank/size changed after re-init");
    CHECK_OK(hvd_allreduce(ctx, "reinit.after", &x, &y, 1, HVD_FLOAT32, HVD_SUM));
    if (y != N) FAIL("after re-init: %g", y);
  }
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: runtime_check CASE\n");
    return 2;
  }
  const char *c = argv[1];
  hvd_status_t rc = hvd_init(&ctx);
  if (rc != HVD_OK) {
    fprintf(stderr, "hvd_init: %s\n", hvd_status_string(rc));
    return 1;
  }
  R = hvd_rank(ctx);
  N = hvd_size(ctx);
  if (!strcmp(c, "ops")) case_ops();
  else if (!strcmp(c, "async_fused")) case_async_fused();
  else if (!strcmp(c, "scale")) case_scale();
  else if (!strcmp(c, "psets")) case_psets();
  else if (!strcmp(c, "mismatch")) case_mismatch();
  else if (!strcmp(c, "duplicate")) case_duplicate();
  else if (!strcmp(c, "grouped")) case_grouped();
  else if (!strcmp(c, "join")) case_join();
  else if (!strcmp(c, "barrier")) case_barrier();
  else if (!strcmp(c, "collectives")) case_collectives();
  else if (!strcmp(c, "stall")) case_stall();
  else if (!strcmp(c, "threads")) case_threads();
  else if (!strcmp(c, "callbacks")) case_callbacks();
  else if (!strcmp(c, "invalid")) case_invalid();
  else if (!strcmp(c, "reinit")) case_reinit();
  else if (!strcmp(c, "slow_peer")) case_slow_peer();
  else if (!strcmp(c, "busy_compute")) case_busy_compute();
  else {
    fprintf(stderr, "unknown case %s\n", c);
    return 2;
  }
  rc = hvd_shutdown(ctx);
  if (rc != HVD_OK) FAIL("shutdown: %s", hvd_status_string(rc));
  if (failures) {
    printf("CASE %s: FAILED (%d) on rank %d\n", c, failures, R);
    return 1;
  }
  printf("CASE %s: OK on rank %d\n", c, R);
  return 0;
}
