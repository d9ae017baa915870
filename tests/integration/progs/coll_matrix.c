/*
 * A rank program for the collective matrix test (issue: every collective x algorithm
 * x dtype x reduction x rank count x count, exact and bit-identical). It calls the
 * algorithms directly, on the background thread (hvd_run_on_bg), so the runtime's
 * negotiation is not involved: this tests collectives/ over the real transport.
 * Every algorithm of each collective runs (allreduce ring, tree, rd, shm; broadcast
 * tree, scatter_ring; allgatherv ring, bruck; reducescatter ring), and broadcast,
 * allgatherv and reducescatter once more through the AUTO dispatcher: their shm
 * algorithm when the job has the same-host arena, else the selection table.
 *
 *   coll_matrix [--counts LIST] [--sample K] [--seed S]
 * LIST: comma-separated counts; N-1, N, N+1 mean relative to the rank count.
 * Cases with count >= 65536 run for one combination in K (rotating by seed), so the
 * large sizes are sampled instead of dropped. Inputs are small integers, so every
 * reduction is exact in every dtype (float16/bfloat16 included) and any order of
 * operations gives the same bits; the reference is computed in double.
 * Prints "MATRIX OK <cases>" and exits 0, or the first wrong elements and exits 1.
 *
 *   coll_matrix --sweep allgather|broadcast [--sizes LIST]
 * times the two algorithms of the collective (ring/bruck, tree/scatter_ring) on
 * float32 vectors of each size in bytes (allgather: the gathered total, split evenly;
 * broadcast: the vector, root rotating). The algorithms alternate iteration by
 * iteration, each after a barrier, so background load hits both alike (this machine
 * is shared and has 2 cores); an iteration's time is the slowest rank's. Rank 0
 * prints one line per size: medians, minima, and how often the second algorithm won.
 * The selection thresholds in collectives/select.c come from this
 * (docs/performance.md).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collectives/coll.h"
#include "collectives/reduce.h"
#include "collectives/ring.h"
#include "collectives/select.h"
#include "common/util.h"
#include "hvd.h"
#include "runtime/ctx.h"

static int R, N;

/* ---- element access through double ---------------------------------------------- */

static uint16_t to_half(double v) { /* exact for small integers */
  if (v == 0) return 0;
  uint16_t sign = v < 0 ? 0x8000 : 0;
  double a = v < 0 ? -v : v;
  int e = 0;
  while (a >= 2) { a /= 2; e++; }
  uint16_t mant = (uint16_t)((a - 1) * 1024);
  return (uint16_t)(sign | ((e + 15) << 10) | mant);
}
static double from_half(uint16_t h) {
  if ((h & 0x7fff) == 0) return 0;
  int e = ((h >> 10) & 0x1f) - 15;
  double m = 1 + (h & 0x3ff) / 1024.0;
  double v = m;
  for (; e > 0; e--) v *= 2;
  for (; e < 0; e++) v /= 2;
  return h & 0x8000 ? -v : v;
}
static void put(void *b, size_t i, hvd_dtype_t d, double v) {
  switch (d) {
  case HVD_FLOAT16: ((uint16_t *)b)[i] = to_half(v); break;
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
  case HVD_FLOAT16: return from_half(((const uint16_t *)b)[i]);
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

/* Input of rank r at i, small enough that any reduction over <= 8 ranks is exact. */
static double val(size_t i, int r, hvd_op_t op, hvd_dtype_t d) {
  size_t k = i * 2654435761u + (size_t)r * 40503u;
  if (op == HVD_PRODUCT) return d == HVD_UINT8 ? (double)(k % 2) : (double)((long)(k % 3) - 1);
  if (d == HVD_UINT8) return (double)(k % 9);
  return (double)((long)(k % 9) - 4);
}
static double ref(size_t i, hvd_op_t op, hvd_dtype_t d) {
  double a = val(i, 0, op, d);
  for (int r = 1; r < N; r++) {
    double v = val(i, r, op, d);
    if (op == HVD_SUM) a += v;
    else if (op == HVD_MIN) a = v < a ? v : a;
    else if (op == HVD_MAX) a = v > a ? v : a;
    else a *= v;
  }
  return a;
}

static uint64_t fnv(const void *p, size_t n) {
  const unsigned char *b = p;
  uint64_t h = 14695981039346656037ull;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

/* ---- one case, run on the background thread --------------------------------------- */

typedef enum { C_ALLREDUCE, C_BROADCAST, C_ALLGATHERV, C_REDUCESCATTER, C_ALLTOALLV, C_BARRIER } coll_t;
static const char *coll_names[] = {"allreduce", "broadcast", "allgatherv", "reducescatter", "alltoallv", "barrier"};

typedef struct job {
  coll_t coll;
  hvd_algo_t algo;
  hvd_dtype_t dt;
  hvd_op_t op;
  size_t count;
  void *in, *out;
  size_t *c1, *d1, *c2, *d2; /* per-rank counts and displacements */
  int root;
} job_t;

static hvd_status_t run_job(hvd_comm_t *c, void *arg) {
  job_t *j = arg;
  switch (j->coll) {
  case C_ALLREDUCE:
    switch (j->algo) {
    case HVD_ALGO_RING: return hvd_allreduce_ring(c, j->in, j->out, j->count, j->dt, j->op);
    case HVD_ALGO_TREE: return hvd_allreduce_tree(c, j->in, j->out, j->count, j->dt, j->op);
    case HVD_ALGO_RD: return hvd_allreduce_rd(c, j->in, j->out, j->count, j->dt, j->op);
    case HVD_ALGO_SHM:
      return hvd_allreduce_shm(c, j->in, j->out, j->count, j->dt, j->op);
    default: return HVD_ERR_INVALID_PARAM;
    }
  case C_BROADCAST:
    switch (j->algo) {
    case HVD_ALGO_TREE: return hvd_broadcast_binomial(c, j->out, j->count, j->dt, j->root);
    case HVD_ALGO_SCATTER_RING:
      return hvd_broadcast_scatter_ring(c, j->out, j->count, j->dt, j->root);
    default: return hvd_coll_broadcast(c, j->algo, 0, j->out, j->count, j->dt, j->root);
    }
  case C_ALLGATHERV:
    switch (j->algo) {
    case HVD_ALGO_RING: return hvd_allgatherv_ring(c, j->in, j->out, j->c1, j->dt);
    case HVD_ALGO_BRUCK: return hvd_allgatherv_bruck(c, j->in, j->out, j->c1, j->dt);
    default: return hvd_coll_allgatherv(c, j->algo, 0, j->in, j->out, j->c1, j->dt);
    }
  case C_REDUCESCATTER: return hvd_coll_reducescatter(c, j->algo, j->in, j->out, j->c1, j->dt, j->op);
  case C_ALLTOALLV: return hvd_alltoallv_pairwise(c, j->in, j->c1, j->d1, j->out, j->c2, j->d2, j->dt);
  case C_BARRIER: return hvd_coll_barrier(c); /* the arena's, or dissemination */
  }
  return HVD_ERR_INVALID_PARAM;
}

static int failures, cases;
static uint64_t *hashes;
static size_t nhashes, caphashes;

static void record_hash(uint64_t h) {
  if (nhashes == caphashes) {
    caphashes = caphashes ? caphashes * 2 : 1024;
    hashes = realloc(hashes, caphashes * sizeof *hashes);
  }
  hashes[nhashes++] = h;
}

/* Per-rank element counts for the v-collectives of a case with `count`. */
static size_t part(size_t count, int r) { return count / (size_t)N + (size_t)((r * 3 + 1) % 4); }

static void run_case(hvd_ctx_t *ctx, coll_t coll, hvd_algo_t algo, hvd_dtype_t dt, hvd_op_t op,
                     size_t count) {
  size_t es = hvd_dtype_size(dt);
  job_t j = {.coll = coll, .algo = algo, .dt = dt, .op = op, .count = count};
  size_t c1[64], d1[64], c2[64], d2[64];
  j.c1 = c1;
  j.d1 = d1;
  j.c2 = c2;
  j.d2 = d2;
  size_t nin = count, nout = count;
  if (coll == C_ALLGATHERV) {
    nout = 0;
    for (int r = 0; r < N; r++) nout += (c1[r] = part(count, r));
    nin = c1[R];
  } else if (coll == C_REDUCESCATTER) {
    for (int r = 0; r < N; r++) c1[r] = hvd_block_count(count, N, r);
    nout = c1[R];
  } else if (coll == C_ALLTOALLV) {
    nin = nout = 0;
    for (int r = 0; r < N; r++) {
      c1[r] = (count + (size_t)r * 7 + (size_t)R * 3) % 11 + count / 4; /* what I send to r */
      c2[r] = (count + (size_t)R * 7 + (size_t)r * 3) % 11 + count / 4; /* what r sends me */
      d1[r] = nin;
      d2[r] = nout;
      nin += c1[r];
      nout += c2[r];
    }
  } else if (coll == C_BROADCAST) {
    j.root = (int)((count + (size_t)algo) % (size_t)N); /* roots vary with count and algo */
  }
  j.in = malloc(nin * es + 8);
  j.out = malloc(nout * es + 8);
  memset(j.out, 0x77, nout * es + 8);
  /* inputs */
  size_t base = 0;
  if (coll == C_ALLGATHERV)
    for (int r = 0; r < R; r++) base += c1[r];
  for (size_t i = 0; i < nin; i++) put(j.in, i, dt, val(base + i, R, op, dt));
  if (coll == C_BROADCAST)
    for (size_t i = 0; i < count; i++) put(j.out, i, dt, R == j.root ? val(i, j.root, op, dt) : 3);
  hvd_status_t rc = hvd_run_on_bg(ctx, run_job, &j);
  cases++;
  if (rc != HVD_OK) {
    fprintf(stderr, "rank %d: %s/%s %s %s count %zu: %s (%s)\n", R, coll_names[coll],
            hvd_algo_name(algo), hvd_dtype_name(dt), hvd_op_name(op), count, hvd_status_string(rc),
            hvd_ctx_error(ctx));
    failures++;
    exit(1); /* the communicator is unusable after a transport failure */
  }
  size_t wrong = 0;
  for (size_t i = 0; i < nout; i++) {
    double want;
    switch (coll) {
    case C_ALLREDUCE: want = ref(i, op, dt); break;
    case C_BROADCAST: want = val(i, j.root, op, dt); break;
    case C_ALLGATHERV: {
      size_t k = i;
      int r = 0;
      while (k >= c1[r]) k -= c1[r++];
      want = val(i, r, op, dt);
      break;
    }
    case C_REDUCESCATTER: want = ref(hvd_block_offset(count, N, R) + i, op, dt); break;
    case C_ALLTOALLV: {
      size_t k = i;
      int r = 0;
      while (k >= c2[r]) k -= c2[r++];
      /* rank r's input index for me: its displacement to me plus k */
      size_t sd = 0;
      for (int q = 0; q < R; q++) sd += (count + (size_t)q * 7 + (size_t)r * 3) % 11 + count / 4;
      want = val(sd + k, r, op, dt);
      break;
    }
    default: want = 0;
    }
    double got = get(j.out, i, dt);
    if (got != want) {
      if (wrong < 3)
        fprintf(stderr, "rank %d: %s/%s %s %s count %zu: [%zu] = %g, want %g\n", R,
                coll_names[coll], hvd_algo_name(algo), hvd_dtype_name(dt), hvd_op_name(op), count,
                i, got, want);
      wrong++;
    }
  }
  if (wrong) failures++;
  if (coll == C_ALLREDUCE || coll == C_BROADCAST || coll == C_ALLGATHERV)
    record_hash(fnv(j.out, nout * es));
  free(j.in);
  free(j.out);
}

/* ---- --sweep: interleaved timing of two algorithms --------------------------------- */

typedef struct sweep {
  coll_t coll;
  hvd_algo_t algo[2];
  size_t bytes;
  int iters;
  double *t[2]; /* per iteration, seconds; then the slowest rank's */
} sweep_t;

static hvd_status_t sweep_bg(hvd_comm_t *c, void *arg) {
  sweep_t *w = arg;
  const int n = c->size;
  size_t count = w->bytes / 4, counts[64];
  for (int r = 0; r < n; r++) counts[r] = hvd_block_count(count, n, r);
  float *buf = calloc(count + 1, 4), *in = calloc(counts[c->rank] + 1, 4);
  if (buf == NULL || in == NULL) {
    free(buf);
    free(in);
    return HVD_ERR_NO_MEMORY;
  }
  hvd_status_t rc = HVD_OK;
  for (int it = -2; it < w->iters && rc == HVD_OK; it++) { /* two warm-up rounds */
    for (int k = 0; k < 2 && rc == HVD_OK; k++) {
      int a = (it + k) & 1; /* alternate which goes first */
      rc = hvd_barrier_dissemination(c);
      if (rc != HVD_OK) break;
      uint64_t t0 = hvd_now_ns();
      if (w->coll == C_ALLGATHERV)
        rc = hvd_coll_allgatherv(c, w->algo[a], 0, in, buf, counts, HVD_FLOAT32);
      else
        rc = hvd_coll_broadcast(c, w->algo[a], 0, buf, count, HVD_FLOAT32, (it + 2) % n);
      if (it >= 0) w->t[a][it] = (double)(hvd_now_ns() - t0) * 1e-9;
    }
  }
  for (int a = 0; a < 2 && rc == HVD_OK; a++)
    rc = hvd_coll_allreduce(c, HVD_ALGO_AUTO, 0, w->t[a], w->t[a], (size_t)w->iters,
                            HVD_FLOAT64, HVD_MAX);
  free(buf);
  free(in);
  return rc;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int sweep(hvd_ctx_t *ctx, const char *what, const char *sizes) {
  sweep_t w = {0};
  if (!strcmp(what, "allgather")) {
    w.coll = C_ALLGATHERV;
    w.algo[0] = HVD_ALGO_RING;
    w.algo[1] = HVD_ALGO_BRUCK;
  } else if (!strcmp(what, "broadcast")) {
    w.coll = C_BROADCAST;
    w.algo[0] = HVD_ALGO_TREE;
    w.algo[1] = HVD_ALGO_SCATTER_RING;
  } else {
    fprintf(stderr, "coll_matrix: --sweep allgather|broadcast\n");
    return 2;
  }
  if (R == 0)
    printf("SWEEP %s np %d: bytes | %s median min (us) | %s median min (us) | "
           "median ratio %s/%s | %s won\n",
           what, N, hvd_algo_name(w.algo[0]), hvd_algo_name(w.algo[1]),
           hvd_algo_name(w.algo[1]), hvd_algo_name(w.algo[0]), hvd_algo_name(w.algo[1]));
  char *sl = strdup(sizes);
  for (char *cs = strtok(sl, ","); cs; cs = strtok(NULL, ",")) {
    w.bytes = (size_t)strtoull(cs, NULL, 10);
    /* the same on every rank: derived from the size alone */
    w.iters = w.bytes <= 65536 ? 300 : w.bytes <= 1048576 ? 100 : w.bytes <= 8388608 ? 30 : 12;
    w.t[0] = calloc((size_t)w.iters, sizeof(double));
    w.t[1] = calloc((size_t)w.iters, sizeof(double));
    hvd_status_t rc = hvd_run_on_bg(ctx, sweep_bg, &w);
    if (rc != HVD_OK) {
      fprintf(stderr, "rank %d: sweep %zu: %s\n", R, w.bytes, hvd_status_string(rc));
      return 1;
    }
    int won = 0;
    for (int i = 0; i < w.iters; i++) won += w.t[1][i] < w.t[0][i];
    double med[2], mn[2];
    for (int a = 0; a < 2; a++) {
      qsort(w.t[a], (size_t)w.iters, sizeof(double), cmp_double);
      med[a] = w.t[a][w.iters / 2] * 1e6;
      mn[a] = w.t[a][0] * 1e6;
    }
    if (R == 0)
      printf("SWEEP %s np %d: %10zu | %9.1f %9.1f | %9.1f %9.1f | %5.2f | %3d%%\n", what, N,
             w.bytes, med[0], mn[0], med[1], mn[1], med[1] / med[0], 100 * won / w.iters);
    free(w.t[0]);
    free(w.t[1]);
  }
  free(sl);
  return 0;
}

int main(int argc, char **argv) {
  const char *counts = "0,1,N-1,N,N+1,99991,4194307";
  int sample = 16, seed = 1;
  const char *sweep_what = NULL;
  const char *sweep_sizes = "64,256,1024,4096,16384,65536,262144,1048576,4194304,16777216";
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--counts") && i + 1 < argc) counts = argv[++i];
    else if (!strcmp(argv[i], "--sample") && i + 1 < argc) sample = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--sweep") && i + 1 < argc) sweep_what = argv[++i];
    else if (!strcmp(argv[i], "--sizes") && i + 1 < argc) sweep_sizes = argv[++i];
    else {
      fprintf(stderr, "coll_matrix: unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  hvd_ctx_t *ctx;
  if (hvd_init(&ctx) != HVD_OK) return 1;
  R = hvd_rank(ctx);
  N = hvd_size(ctx);
  if (sweep_what != NULL) {
    int rc = N <= 64 ? sweep(ctx, sweep_what, sweep_sizes) : 2;
    hvd_shutdown(ctx);
    return rc;
  }
  const hvd_algo_t algos[] = {HVD_ALGO_RING, HVD_ALGO_TREE, HVD_ALGO_RD, HVD_ALGO_SHM};
  /* AUTO last: the dispatcher and the selection table */
  /* (AUTO is the arena's shm algorithm when there is one, else the table) */
  const hvd_algo_t bcast_algos[] = {HVD_ALGO_TREE, HVD_ALGO_SCATTER_RING, HVD_ALGO_AUTO};
  const hvd_algo_t gather_algos[] = {HVD_ALGO_RING, HVD_ALGO_BRUCK, HVD_ALGO_AUTO};
  const hvd_algo_t rs_algos[] = {HVD_ALGO_RING, HVD_ALGO_AUTO};
  const hvd_op_t ops[] = {HVD_SUM, HVD_MIN, HVD_MAX, HVD_PRODUCT};
  unsigned combo = (unsigned)seed;
  char *cl = strdup(counts);
  for (char *cs = strtok(cl, ","); cs; cs = strtok(NULL, ",")) {
    size_t count = !strcmp(cs, "N-1") ? (size_t)N - 1
                   : !strcmp(cs, "N") ? (size_t)N
                   : !strcmp(cs, "N+1") ? (size_t)N + 1
                                        : (size_t)strtoull(cs, NULL, 10);
    int large = count >= 65536;
    for (int d = 0; d < HVD_DTYPE_COUNT; d++) {
      hvd_dtype_t dt = (hvd_dtype_t)d;
      for (size_t o = 0; o < 4; o++) {
        for (size_t a = 0; a < 4; a++)
          if (algos[a] == HVD_ALGO_SHM && ctx->arena == NULL) continue; /* tcp, or arena off */
          else if (!large || combo++ % (unsigned)sample == 0) run_case(ctx, C_ALLREDUCE, algos[a], dt, ops[o], count);
        for (size_t a = 0; a < 2; a++)
          if (!large || combo++ % (unsigned)sample == 0) run_case(ctx, C_REDUCESCATTER, rs_algos[a], dt, ops[o], count);
      }
      for (size_t a = 0; a < 3; a++)
        if (!large || combo++ % (unsigned)sample == 0) run_case(ctx, C_BROADCAST, bcast_algos[a], dt, HVD_SUM, count);
      for (size_t a = 0; a < 3; a++)
        if (!large || combo++ % (unsigned)sample == 0) run_case(ctx, C_ALLGATHERV, gather_algos[a], dt, HVD_SUM, count);
      if (!large || combo++ % (unsigned)sample == 0) run_case(ctx, C_ALLTOALLV, HVD_ALGO_AUTO, dt, HVD_SUM, count);
    }
    run_case(ctx, C_BARRIER, HVD_ALGO_AUTO, HVD_FLOAT32, HVD_SUM, 0);
  }
  free(cl);
  /* Identical bytes on every rank: MIN and MAX of each hash agree. */
  int64_t *mn = malloc((nhashes + 1) * sizeof *mn), *mx = malloc((nhashes + 1) * sizeof *mx);
  for (size_t i = 0; i < nhashes; i++) mn[i] = mx[i] = (int64_t)(hashes[i] >> 1);
  if (hvd_allreduce(ctx, "matrix.hash.min", mn, mn, nhashes, HVD_INT64, HVD_MIN) != HVD_OK ||
      hvd_allreduce(ctx, "matrix.hash.max", mx, mx, nhashes, HVD_INT64, HVD_MAX) != HVD_OK)
    failures++;
  for (size_t i = 0; i < nhashes; i++)
    if (mn[i] != mx[i]) {
      fprintf(stderr, "rank %d: result %zu differs between ranks\n", R, i);
      failures++;
      break;
    }
  free(mn);
  free(mx);
  hvd_shutdown(ctx);
  if (failures) {
    printf("rank %d: MATRIX FAILED %d of %d cases\n", R, failures, cases);
    return 1;
  }
  printf("rank %d: MATRIX OK %d cases\n", R, cases);
  return 0;
}
