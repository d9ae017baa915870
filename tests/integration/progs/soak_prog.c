/*
 * The soak program (scripts/soak.sh runs it under hvdrun; CI runs it for 20 s).
 *
 *   soak_prog [--seconds S] [--warmup S] [--seed X] [--names K] [--max-count C]
 *             [--step-elems E] [--report S]
 *
 * Until S seconds have passed it runs steps. A step submits 1-20 tensor operations
 * asynchronously and waits for all of them: names drawn from a pool of K (each name
 * keeps its shape until, one time in eight, it is given a new one, so the response
 * cache both hits and evicts), counts log-uniform over 0..C elements, every dtype,
 * sum/min/max/product/average, and mostly allreduces (some in place, some submitted
 * as one grouped allreduce) plus allgather, broadcast, reducescatter and alltoall.
 * Every rank draws the schedule from one RNG seeded with X, so all agree on it;
 * inputs are small integers derived from (X, step, tensor, rank, element), so every
 * rank can compute every rank's input and every result is checked element by element
 * against a locally computed reference (exact for everything but averages of floats,
 * which are checked to the dtype's precision). A step's tensors together hold at most
 * E elements (inputs or outputs, whichever is larger) to bound memory.
 * At the end of each step one int32 MAX allreduce says whether any rank's clock has
 * passed S, so all ranks stop after the same step.
 *
 * Resident memory (VmRSS, after malloc_trim so that freed heap does not count) is
 * read once the warm-up is over (default: a tenth of S, at most 60 s; its first step
 * fills the step budget with float64 allreduces, which fuse, so that the buffers
 * reach their high-water mark), half-way through the rest, every report interval,
 * and at the end. Rank 0 prints a progress line every report interval;
 * every rank ends with
 *   SOAK rank R: steps N ops N elems N errors N cache_hits N rss_start_kb N
 *                rss_mid_kb N rss_end_kb N rss_max_kb N
 * and exits 1 if it saw any error (a failed call or a wrong element).
 */
#include <malloc.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hvd.h"

#define MAX_TENSORS 20
#define MAX_RANKS 64

static int R, N;
static unsigned long long errors;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- the shared schedule RNG (splitmix64: identical on every rank) ---------------- */

static uint64_t rng_state;

static uint64_t rnd(void) {
  uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static uint64_t below(uint64_t n) { return n ? rnd() % n : 0; }
static double unit(void) { return (double)(rnd() >> 11) * (1.0 / 9007199254740992.0); }

/* 0 one time in 16, else log-uniform in [1, max]. */
static size_t log_uniform(size_t max) {
  if (max == 0 || below(16) == 0) return 0;
  return (size_t)floor(exp(unit() * log((double)max + 1.0)));
}

/* ---- values ---------------------------------------------------------------------- */

static uint16_t f2h(float f) { /* exact for the small values used here */
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  if (f == 0) return (uint16_t)sign;
  int e = (int)((x >> 23) & 0xff) - 127 + 15;
  uint32_t m = x & 0x7fffffu;
  return (uint16_t)(sign | ((uint32_t)e << 10) | (m >> 13));
}
static double h2d(uint16_t h) {
  int e = (h >> 10) & 0x1f;
  double m = h & 0x3ff;
  double v = e == 0 ? ldexp(m, -24) : ldexp(m + 1024, e - 25);
  return h & 0x8000 ? -v : v;
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
  case HVD_FLOAT16: return h2d(((const uint16_t *)b)[i]);
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

static int is_float(hvd_dtype_t d) { return d <= HVD_FLOAT64; }

/* ---- one tensor operation of a step ----------------------------------------------- */

typedef enum { C_ALLREDUCE, C_ALLGATHER, C_BROADCAST, C_REDUCESCATTER, C_ALLTOALL, C_KINDS } coll_t;
static const char *const coll_names[C_KINDS] = {"allreduce", "allgather", "broadcast",
                                                "reducescatter", "alltoall"};

typedef struct shape {
  coll_t coll;
  hvd_dtype_t dtype;
  hvd_op_t op;
  size_t count; /* allreduce/broadcast/reducescatter: the tensor; others: a scale */
} shape_t;

typedef struct tensor {
  char name[48];
  shape_t s;
  int root;          /* broadcast */
  int inplace;       /* allreduce */
  int hvd_alloc;     /* allgather/alltoall: hvd allocates the output */
  uint64_t a, b, c;  /* input of rank r at element i: f((i*a + r*b + c) % 9) */
  size_t counts[MAX_RANKS];            /* allgather: each rank's part */
  size_t splits[MAX_RANKS][MAX_RANKS]; /* alltoall: splits[r][j] from rank r to rank j */
  void *in, *out;
  size_t in_count, out_count; /* this rank's */
  hvd_req_t *req;
  hvd_op_args_t args;
} tensor_t;

/* Input element i of rank r: small integers whose sums, products, minima and maxima
 * over <= 8 ranks are exact in every dtype (products of {-1, 0, 1}; uint8 of {0..2}). */
static double input(const tensor_t *t, int r, size_t i) {
  uint64_t h = ((uint64_t)i * t->a + (uint64_t)r * t->b + t->c) % 9;
  int reduces = t->s.coll == C_ALLREDUCE || t->s.coll == C_REDUCESCATTER;
  if (reduces && t->s.op == HVD_PRODUCT) h %= 3;
  if (t->s.dtype == HVD_UINT8) return (double)h;
  return (double)h - (reduces && t->s.op == HVD_PRODUCT ? 1 : 4);
}

static double reduced(const tensor_t *t, size_t i) {
  double acc = input(t, 0, i);
  for (int r = 1; r < N; r++) {
    double v = input(t, r, i);
    switch (t->s.op) {
    case HVD_SUM:
    case HVD_AVERAGE: acc += v; break;
    case HVD_MIN: acc = fmin(acc, v); break;
    case HVD_MAX: acc = fmax(acc, v); break;
    case HVD_PRODUCT: acc *= v; break;
    default: abort();
    }
  }
  if (t->s.op == HVD_AVERAGE) acc = is_float(t->s.dtype) ? acc / N : trunc(acc / N);
  return acc;
}

static int close_enough(const tensor_t *t, double got, double want) {
  if (got == want) return 1;
  if (t->s.op != HVD_AVERAGE || !is_float(t->s.dtype)) return 0;
  double rel = t->s.dtype == HVD_FLOAT16 ? 2e-3 : t->s.dtype == HVD_BFLOAT16 ? 1.6e-2
             : t->s.dtype == HVD_FLOAT32 ? 1e-6 : 1e-12;
  return fabs(got - want) <= rel * fabs(want);
}

static void fail(const tensor_t *t, unsigned long step, const char *what, size_t i, double got,
                 double want) {
  errors++;
  fprintf(stderr,
          "rank %d: SOAK ERROR step %lu tensor %s (%s %s %s count %zu): %s at %zu: got %g, "
          "want %g\n",
          R, step, t->name, coll_names[t->s.coll], hvd_dtype_name(t->s.dtype),
          hvd_op_name(t->s.op), t->s.count, what, i, got, want);
}

/* ---- drawing a step ------------------------------------------------------------------ */

static shape_t new_shape(size_t max_count) {
  shape_t s;
  uint64_t k = below(100);
  s.coll = k < 64 ? C_ALLREDUCE : k < 73 ? C_ALLGATHER : k < 82 ? C_BROADCAST
         : k < 91 ? C_REDUCESCATTER : C_ALLTOALL;
  s.dtype = (hvd_dtype_t)below(HVD_DTYPE_COUNT);
  s.op = (hvd_op_t)below(HVD_OP_COUNT);
  s.count = log_uniform(max_count);
  return s;
}

/* Elements this tensor makes a rank hold: the larger of its inputs and outputs, on
 * the rank where that is largest (so that every rank takes the same decisions). */
static size_t footprint(const tensor_t *t) {
  size_t most = 0;
  for (int me = 0; me < N; me++) {
    size_t in = 0, out = 0;
    switch (t->s.coll) {
    case C_ALLREDUCE:
    case C_BROADCAST: in = out = t->s.count; break;
    case C_REDUCESCATTER: in = t->s.count; out = t->s.count / (size_t)N + 1; break;
    case C_ALLGATHER:
      in = t->counts[me];
      for (int r = 0; r < N; r++) out += t->counts[r];
      break;
    case C_ALLTOALL:
      for (int j = 0; j < N; j++) in += t->splits[me][j];
      for (int r = 0; r < N; r++) out += t->splits[r][me];
      break;
    default: abort();
    }
    if (in > most) most = in;
    if (out > most) most = out;
  }
  return most;
}

/* Draws the rest of t's parameters from its shape (identically on every rank). */
static void draw_details(tensor_t *t) {
  t->a = below(1u << 20) | 1;
  t->b = below(1u << 20) + 1;
  t->c = below(1u << 20);
  t->root = (int)below((uint64_t)N);
  t->inplace = below(4) == 0;
  t->hvd_alloc = below(2) == 0;
  if (t->s.coll == C_ALLGATHER) {
    for (int r = 0; r < N; r++) t->counts[r] = below(t->s.count / (size_t)N + 2);
  } else if (t->s.coll == C_ALLTOALL) {
    for (int r = 0; r < N; r++)
      for (int j = 0; j < N; j++) t->splits[r][j] = below(t->s.count / ((size_t)N * N) + 2);
  }
}

/* ---- running a step ------------------------------------------------------------------ */

static void *xcalloc(size_t n, hvd_dtype_t d) {
  void *p = calloc(n ? n : 1, hvd_dtype_size(d));
  if (p == NULL) {
    fprintf(stderr, "rank %d: out of memory (%zu elements)\n", R, n);
    exit(2);
  }
  return p;
}

/* Buffers and arguments of t on this rank. */
static void prepare(tensor_t *t) {
  hvd_op_args_t a = HVD_OP_ARGS_INIT;
  a.name = t->name;
  a.dtype = t->s.dtype;
  a.op = t->s.op;
  hvd_dtype_t d = t->s.dtype;
  t->in = t->out = NULL;
  switch (t->s.coll) {
  case C_ALLREDUCE:
    t->in_count = t->out_count = t->s.count;
    t->in = xcalloc(t->in_count, d);
    for (size_t i = 0; i < t->in_count; i++) put(t->in, i, d, input(t, R, i));
    t->out = t->inplace ? t->in : xcalloc(t->out_count, d);
    a.count = t->s.count;
    break;
  case C_BROADCAST:
    t->in_count = t->out_count = t->s.count;
    t->out = xcalloc(t->s.count, d);
    /* Non-roots start from their own (different) values, which must be overwritten. */
    for (size_t i = 0; i < t->s.count; i++) put(t->out, i, d, input(t, R, i));
    a.count = t->s.count;
    a.root = t->root;
    break;
  case C_REDUCESCATTER: {
    t->in_count = t->s.count;
    size_t q = t->s.count / (size_t)N, rem = t->s.count % (size_t)N;
    t->out_count = q + ((size_t)R < rem ? 1 : 0);
    t->in = xcalloc(t->in_count, d);
    for (size_t i = 0; i < t->in_count; i++) put(t->in, i, d, input(t, R, i));
    t->out = xcalloc(t->out_count, d);
    a.count = t->s.count;
    break;
  }
  case C_ALLGATHER:
    t->in_count = t->counts[R];
    t->out_count = 0;
    for (int r = 0; r < N; r++) t->out_count += t->counts[r];
    t->in = xcalloc(t->in_count, d);
    for (size_t i = 0; i < t->in_count; i++) put(t->in, i, d, input(t, R, i));
    if (!t->hvd_alloc) {
      t->out = xcalloc(t->out_count, d);
      a.recv_capacity = t->out_count;
    }
    a.count = t->in_count;
    break;
  case C_ALLTOALL:
    t->in_count = t->out_count = 0;
    for (int j = 0; j < N; j++) t->in_count += t->splits[R][j];
    for (int r = 0; r < N; r++) t->out_count += t->splits[r][R];
    t->in = xcalloc(t->in_count, d);
    for (size_t i = 0; i < t->in_count; i++) put(t->in, i, d, input(t, R, i));
    if (!t->hvd_alloc) {
      t->out = xcalloc(t->out_count, d);
      a.recv_capacity = t->out_count;
    }
    a.count = t->in_count;
    a.splits = t->splits[R];
    break;
  default: abort();
  }
  a.sendbuf = t->in;
  a.recvbuf = t->out;
  t->args = a;
}

static void verify(tensor_t *t, unsigned long step) {
  hvd_dtype_t d = t->s.dtype;
  const void *out = t->out;
  size_t got_count = t->out_count;
  if ((t->s.coll == C_ALLGATHER || t->s.coll == C_ALLTOALL)) {
    void *o;
    size_t n;
    if (hvd_req_output(t->req, &o, &n) != HVD_OK) {
      fail(t, step, "hvd_req_output failed", 0, 0, 0);
      return;
    }
    if (!t->hvd_alloc && o != t->out) fail(t, step, "output is not recvbuf", 0, 0, 0);
    out = o;
    got_count = n;
    const size_t *rc;
    int nr;
    if (hvd_req_recv_counts(t->req, &rc, &nr) != HVD_OK || nr != N) {
      fail(t, step, "hvd_req_recv_counts failed", 0, nr, N);
      return;
    }
    for (int r = 0; r < N; r++) {
      size_t want = t->s.coll == C_ALLGATHER ? t->counts[r] : t->splits[r][R];
      if (rc[r] != want) {
        fail(t, step, "received count", (size_t)r, (double)rc[r], (double)want);
        return;
      }
    }
  }
  if (got_count != t->out_count) {
    fail(t, step, "output count", 0, (double)got_count, (double)t->out_count);
    return;
  }
  switch (t->s.coll) {
  case C_ALLREDUCE:
    for (size_t i = 0; i < t->out_count; i++) {
      double want = reduced(t, i), got = get(out, i, d);
      if (!close_enough(t, got, want)) {
        fail(t, step, "element", i, got, want);
        return;
      }
    }
    break;
  case C_REDUCESCATTER: {
    size_t q = t->s.count / (size_t)N, rem = t->s.count % (size_t)N;
    size_t off = (size_t)R * q + ((size_t)R < rem ? (size_t)R : rem);
    for (size_t i = 0; i < t->out_count; i++) {
      double want = reduced(t, off + i), got = get(out, i, d);
      if (!close_enough(t, got, want)) {
        fail(t, step, "element", off + i, got, want);
        return;
      }
    }
    break;
  }
  case C_BROADCAST:
    for (size_t i = 0; i < t->out_count; i++) {
      double want = input(t, t->root, i), got = get(out, i, d);
      if (got != want) {
        fail(t, step, "element", i, got, want);
        return;
      }
    }
    break;
  case C_ALLGATHER: {
    size_t k = 0;
    for (int r = 0; r < N; r++)
      for (size_t i = 0; i < t->counts[r]; i++, k++) {
        double want = input(t, r, i), got = get(out, k, d);
        if (got != want) {
          fail(t, step, "element", k, got, want);
          return;
        }
      }
    break;
  }
  case C_ALLTOALL: {
    size_t k = 0;
    for (int r = 0; r < N; r++) {
      size_t off = 0; /* where rank r's part for this rank starts in its input */
      for (int j = 0; j < R; j++) off += t->splits[r][j];
      for (size_t i = 0; i < t->splits[r][R]; i++, k++) {
        double want = input(t, r, off + i), got = get(out, k, d);
        if (got != want) {
          fail(t, step, "element", k, got, want);
          return;
        }
      }
    }
    break;
  }
  default: abort();
  }
}

static long rss_kb(void) {
  malloc_trim(0);
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kb = -1;
  while (f != NULL && fgets(line, sizeof line, f) != NULL)
    if (sscanf(line, "VmRSS: %ld", &kb) == 1) break;
  if (f != NULL) fclose(f);
  return kb;
}

static int arg(int argc, char **argv, int *i, const char *name, double *out) {
  if (strcmp(argv[*i], name) != 0) return 0;
  if (*i + 1 >= argc) {
    fprintf(stderr, "soak_prog: %s needs a value\n", name);
    exit(2);
  }
  *out = strtod(argv[++*i], NULL);
  return 1;
}

int main(int argc, char **argv) {
  double seconds = 600, warmup = -1, seed = 12345, names = 120, max_count = 4 << 20,
         step_elems = 12 << 20, report = 60;
  for (int i = 1; i < argc; i++) {
    if (!arg(argc, argv, &i, "--seconds", &seconds) && !arg(argc, argv, &i, "--warmup", &warmup) &&
        !arg(argc, argv, &i, "--seed", &seed) && !arg(argc, argv, &i, "--names", &names) &&
        !arg(argc, argv, &i, "--max-count", &max_count) &&
        !arg(argc, argv, &i, "--step-elems", &step_elems) &&
        !arg(argc, argv, &i, "--report", &report)) {
      fprintf(stderr, "soak_prog: unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  if (warmup < 0) warmup = fmin(60, seconds / 10);
  int npool = names < MAX_TENSORS ? MAX_TENSORS : (int)names;

  hvd_ctx_t *ctx;
  hvd_status_t rc = hvd_init(&ctx);
  if (rc != HVD_OK) {
    fprintf(stderr, "hvd_init: %s\n", hvd_status_string(rc));
    return 1;
  }
  R = hvd_rank(ctx);
  N = hvd_size(ctx);
  if (N > MAX_RANKS) {
    fprintf(stderr, "soak_prog: at most %d ranks\n", MAX_RANKS);
    return 2;
  }
  rng_state = (uint64_t)seed;

  shape_t *pool = calloc((size_t)npool, sizeof *pool);
  int *used = calloc((size_t)npool, sizeof *used);
  tensor_t *ts = calloc(MAX_TENSORS, sizeof *ts);
  for (int k = 0; k < npool; k++) pool[k] = new_shape((size_t)max_count);

  double t0 = now_s(), next_report = t0 + report;
  long rss_start = -1, rss_mid = -1, rss_end, rss_max = 0;
  unsigned long long ops = 0, elems = 0;
  unsigned long step;
  for (step = 0;; step++) {
    /* Draw the step: distinct names, each with its shape (sometimes a new one). The
     * first five steps take every buffer to its high-water mark before the warm-up
     * ends: the whole budget in float64 allreduces, which fuse, then the largest
     * reducescatter, allgather, alltoall and broadcast the schedule can draw. */
    int nt = step == 0 ? MAX_TENSORS : step < 5 ? 1 : 1 + (int)below(MAX_TENSORS);
    size_t budget = (size_t)step_elems;
    memset(used, 0, (size_t)npool * sizeof *used);
    for (int k = 0; k < nt; k++) {
      tensor_t *t = &ts[k];
      int p;
      do p = (int)below((uint64_t)npool); while (used[p]);
      used[p] = 1;
      if (below(8) == 0) pool[p] = new_shape((size_t)max_count);
      snprintf(t->name, sizeof t->name, "soak.%d", p);
      t->s = pool[p];
      if (step == 0) {
        t->s = (shape_t){C_ALLREDUCE, HVD_FLOAT64, HVD_SUM, (size_t)step_elems / MAX_TENSORS};
        snprintf(t->name, sizeof t->name, "soak.first.%d", k);
      } else if (step < 5) {
        static const coll_t largest[4] = {C_REDUCESCATTER, C_ALLGATHER, C_ALLTOALL, C_BROADCAST};
        t->s = (shape_t){largest[step - 1], HVD_FLOAT64, HVD_SUM, (size_t)max_count};
        snprintf(t->name, sizeof t->name, "soak.largest.%lu", step);
      }
      draw_details(t);
      if (step >= 1 && step < 5) { /* the most each rank can send */
        for (int r = 0; r < N; r++) t->counts[r] = t->s.count / (size_t)N + 1;
        for (int r = 0; r < N; r++)
          for (int j = 0; j < N; j++) t->splits[r][j] = t->s.count / ((size_t)N * N) + 1;
      }
      if (footprint(t) > budget) { /* too big for what is left of the step: shrink it */
        t->s.count = budget / ((size_t)N + 1);
        draw_details(t);
      }
      size_t f = footprint(t);
      budget = f < budget ? budget - f : 0;
    }
    int grouped = below(5) == 0;

    /* Submit everything (the allreduces as one group sometimes), then wait. */
    hvd_op_args_t gargs[MAX_TENSORS];
    int ng = 0, gfirst = -1;
    for (int k = 0; k < nt; k++) {
      tensor_t *t = &ts[k];
      prepare(t);
      t->req = NULL;
      hvd_status_t st = HVD_OK;
      switch (t->s.coll) {
      case C_ALLREDUCE:
        if (grouped) {
          if (gfirst < 0) gfirst = k;
          gargs[ng++] = t->args;
        } else {
          st = hvd_allreduce_ex(ctx, &t->args, &t->req);
        }
        break;
      case C_ALLGATHER: st = hvd_allgather_ex(ctx, &t->args, &t->req); break;
      case C_BROADCAST: st = hvd_broadcast_ex(ctx, &t->args, &t->req); break;
      case C_REDUCESCATTER: st = hvd_reducescatter_ex(ctx, &t->args, &t->req); break;
      case C_ALLTOALL: st = hvd_alltoall_ex(ctx, &t->args, &t->req); break;
      default: abort();
      }
      if (st != HVD_OK) fail(t, step, hvd_status_string(st), 0, 0, 0);
    }
    hvd_req_t *greq = NULL;
    if (ng > 0) {
      hvd_status_t st = hvd_grouped_allreduce(ctx, gargs, ng, &greq);
      if (st != HVD_OK) fail(&ts[gfirst], step, hvd_status_string(st), 0, 0, 0);
    }
    /* Wait newest first half the time, polling with hvd_test the other half. */
    int poll = below(2) == 0;
    if (greq != NULL) {
      hvd_status_t st = hvd_wait(greq);
      if (st != HVD_OK) fail(&ts[gfirst], step, hvd_req_error(greq), 0, st, 0);
    }
    for (int j = 0; j < nt; j++) {
      tensor_t *t = &ts[poll ? j : nt - 1 - j];
      if (t->req == NULL) continue;
      hvd_status_t st;
      if (poll) {
        int done = 0;
        while ((st = hvd_test(t->req, &done)) == HVD_IN_PROGRESS && !done) {
          struct timespec ts1 = {0, 20000};
          nanosleep(&ts1, NULL);
        }
      } else {
        st = hvd_wait(t->req);
      }
      if (st != HVD_OK) fail(t, step, hvd_req_error(t->req), 0, st, 0);
    }
    for (int k = 0; k < nt; k++) {
      tensor_t *t = &ts[k];
      if (t->req != NULL || (grouped && t->s.coll == C_ALLREDUCE)) verify(t, step);
      hvd_req_free(t->req);
      if (t->out != t->in) free(t->out);
      free(t->in);
      ops++;
      elems += t->s.coll == C_ALLGATHER || t->s.coll == C_ALLTOALL ? t->out_count : t->s.count;
    }
    hvd_req_free(greq);

    /* Progress, memory, and whether to stop: the same answer on every rank. */
    double t = now_s();
    if (rss_start < 0 && t - t0 >= warmup) rss_start = rss_max = rss_kb();
    if (rss_mid < 0 && t - t0 >= warmup + (seconds - warmup) / 2) rss_mid = rss_kb();
    if (t >= next_report) {
      long kb = rss_kb();
      if (kb > rss_max) rss_max = kb;
      if (R == 0)
        printf("soak: %.0f s, %lu steps, %llu ops, %llu errors on rank 0, rss %ld kB\n", t - t0,
               step + 1, ops, errors, kb);
      fflush(stdout);
      next_report += report;
    }
    int32_t stop = t - t0 >= seconds, any;
    rc = hvd_allreduce(ctx, "soak.ctl", &stop, &any, 1, HVD_INT32, HVD_MAX);
    ops++;
    if (rc != HVD_OK) {
      errors++;
      fprintf(stderr, "rank %d: SOAK ERROR step %lu: control allreduce: %s\n", R, step,
              hvd_status_string(rc));
      break;
    }
    if (any) break;
  }
  rss_end = rss_kb();
  if (rss_start < 0) rss_start = rss_end;
  if (rss_mid < 0) rss_mid = rss_end;
  if (rss_end > rss_max) rss_max = rss_end;
  hvd_stats_t stats = {0};
  hvd_get_stats(ctx, &stats);
  rc = hvd_shutdown(ctx);
  if (rc != HVD_OK) {
    errors++;
    fprintf(stderr, "rank %d: SOAK ERROR hvd_shutdown: %s\n", R, hvd_status_string(rc));
  }
  printf("SOAK rank %d: steps %lu ops %llu elems %llu errors %llu cache_hits %llu "
         "rss_start_kb %ld rss_mid_kb %ld rss_end_kb %ld rss_max_kb %ld\n",
         R, step + 1, ops, elems, errors, (unsigned long long)stats.cache_hits, rss_start, rss_mid,
         rss_end, rss_max);
  free(pool);
  free(used);
  free(ts);
  return errors ? 1 : 0;
}
