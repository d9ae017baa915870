/*
 * Pieces shared by hvd-bench and the MPI comparison bench (tools/mpi-bench), header
 * only so that the MPI bench builds from one mpicc line without the hvd library:
 *
 *  - test data: element g of rank r's input is a small integer (|v| <= 4, or 1/2/-1
 *    for product), so every reduction of up to a few dozen ranks is exact in every
 *    type, float16 and bfloat16 included, whatever order the algorithm adds in. The
 *    reference result is then computed exactly, in double, element by element;
 *  - statistics (median, percentiles) over per-iteration times;
 *  - the memory-bandwidth probe (single-thread memcpy of a buffer much larger than
 *    the last-level cache) that "memory efficiency" is relative to;
 *  - size arithmetic shared by both benches (count per size, busbw factors).
 *
 * Nothing here allocates behind the caller's back or prints.
 */
#ifndef HVD_BENCH_COMMON_H
#define HVD_BENCH_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef enum {
  BENCH_ALLREDUCE = 0,
  BENCH_ALLGATHER,
  BENCH_BROADCAST,
  BENCH_REDUCESCATTER,
  BENCH_ALLTOALL,
  BENCH_COLL_COUNT
} bench_coll_t;

static const char *const bench_coll_names[BENCH_COLL_COUNT] = {
    "allreduce", "allgather", "broadcast", "reducescatter", "alltoall"};

static inline int bench_coll_parse(const char *s) {
  for (int i = 0; i < BENCH_COLL_COUNT; i++)
    if (strcmp(s, bench_coll_names[i]) == 0) return i;
  if (strcmp(s, "bcast") == 0) return BENCH_BROADCAST;
  return -1;
}

/* Reductions the data generator knows (same order as hvd_op_t for the first five). */
typedef enum {
  BENCH_OP_SUM = 0,
  BENCH_OP_AVG,
  BENCH_OP_MIN,
  BENCH_OP_MAX,
  BENCH_OP_PROD,
  BENCH_OP_COUNT
} bench_op_t;

static const char *const bench_op_names[BENCH_OP_COUNT] = {"sum", "avg", "min", "max", "prod"};

static inline int bench_op_parse(const char *s) {
  for (int i = 0; i < BENCH_OP_COUNT; i++)
    if (strcmp(s, bench_op_names[i]) == 0) return i;
  if (strcmp(s, "average") == 0) return BENCH_OP_AVG;
  if (strcmp(s, "product") == 0) return BENCH_OP_PROD;
  return -1;
}

static inline double bench_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- test data ---------------------------------------------------------------------
 * Value of global element g on rank r. For product: 2 on one rank in four, -1 on one
 * in five, else 1 (so products stay powers of two, |p| <= 2^ceil(n/4)); otherwise an
 * integer in [-4, 4] ([0, 8] for unsigned types). */
static inline double bench_value(int r, size_t g, int op, int is_unsigned) {
  if (op == BENCH_OP_PROD) {
    if ((g + (size_t)r) % 4 == 0) return 2.0;
    if (!is_unsigned && (g + 2 * (size_t)r) % 5 == 0) return -1.0;
    return 1.0;
  }
  double v = (double)((g % 13 + 3 * (size_t)r) % 9);
  return is_unsigned ? v : v - 4.0;
}

/* Exact reduction over ranks 0..n-1 of element g (AVG: the exact quotient; callers
 * compare it with a tolerance). */
static inline double bench_expected(int n, size_t g, int op, int is_unsigned) {
  double acc = bench_value(0, g, op, is_unsigned);
  for (int r = 1; r < n; r++) {
    double v = bench_value(r, g, op, is_unsigned);
    switch (op) {
    case BENCH_OP_MIN: acc = v < acc ? v : acc; break;
    case BENCH_OP_MAX: acc = v > acc ? v : acc; break;
    case BENCH_OP_PROD: acc *= v; break;
    default: acc += v; break;
    }
  }
  if (op == BENCH_OP_AVG) acc /= n;
  return acc;
}

/* ---- statistics -------------------------------------------------------------------- */

static inline int bench_cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* q-quantile (0..1) of v[0..n) by the nearest-rank rule on a sorted copy in tmp;
 * q = 0.5 gives the median (mean of the middle two for even n). */
static inline double bench_quantile(const double *v, size_t n, double q, double *tmp) {
  if (n == 0) return 0.0;
  memcpy(tmp, v, n * sizeof *v);
  qsort(tmp, n, sizeof *tmp, bench_cmp_double);
  if (q == 0.5) return n % 2 ? tmp[n / 2] : 0.5 * (tmp[n / 2 - 1] + tmp[n / 2]);
  size_t k = (size_t)(q * (double)n + 0.999999);
  if (k == 0) k = 1;
  if (k > n) k = n;
  return tmp[k - 1];
}

/* ---- memory bandwidth --------------------------------------------------------------
 * Median over reps of single-thread memcpy of bytes (both buffers touched first).
 * Returns the traffic rate in bytes/s counting read + write (2 * bytes / time): the
 * unit of "memory efficiency" = 2 n S / (T B_mem), so that a 1-rank "allreduce" that
 * is a plain memcpy scores 1. *copy_rate gets bytes/time (what memcpy benchmarks
 * usually quote). 0 if the buffers cannot be allocated. */
static inline double bench_memcpy_bw(size_t bytes, int reps, double *copy_rate) {
  char *a = aligned_alloc(4096, bytes), *b = aligned_alloc(4096, bytes);
  double t[32], tmp[32];
  if (a == NULL || b == NULL || reps < 1) {
    free(a);
    free(b);
    return 0.0;
  }
  if (reps > 32) reps = 32;
  memset(a, 1, bytes);
  memset(b, 2, bytes);
  memcpy(b, a, bytes); /* warm the page tables / TLB path once */
  for (int i = 0; i < reps; i++) {
    double t0 = bench_now();
    memcpy(i % 2 ? a : b, i % 2 ? b : a, bytes);
    t[i] = bench_now() - t0;
  }
  double med = bench_quantile(t, (size_t)reps, 0.5, tmp);
  volatile char sink = a[bytes / 2] + b[bytes / 3];
  (void)sink;
  free(a);
  free(b);
  if (copy_rate) *copy_rate = (double)bytes / med;
  return 2.0 * (double)bytes / med;
}

/* ---- sizes --------------------------------------------------------------------------
 * nccl-tests conventions. `size` is the larger of the send and receive sizes of one
 * rank: allreduce/broadcast: the vector; allgather: the gathered result (count = one
 * rank's part); reducescatter: the input (count = one rank's block); alltoall: one
 * rank's whole send buffer (count = one peer's part). Returns the element count for
 * the requested size (rounded down) and stores the size actually used. */
static inline size_t bench_count_for(int coll, size_t size, int n, size_t es, size_t *used) {
  size_t per = (coll == BENCH_ALLREDUCE || coll == BENCH_BROADCAST) ? es : es * (size_t)n;
  size_t count = size / per;
  *used = count * per;
  return count;
}

/* algbw -> busbw factor. */
static inline double bench_busbw_factor(int coll, int n) {
  switch (coll) {
  case BENCH_ALLREDUCE: return 2.0 * (n - 1) / n;
  case BENCH_BROADCAST: return 1.0;
  default: return (double)(n - 1) / n;
  }
}

/* Parse "8", "64K", "1M", "256M", "1G" (binary multiples); 0 on success. */
static inline int bench_parse_size(const char *s, size_t *out) {
  char *end;
  if (s == NULL || *s == '\0' || *s == '-') return -1;
  unsigned long long v = strtoull(s, &end, 10);
  if (end == s) return -1;
  unsigned long long mult = 1;
  if (*end != '\0') {
    switch (*end) {
    case 'k': case 'K': mult = 1ull << 10; break;
    case 'm': case 'M': mult = 1ull << 20; break;
    case 'g': case 'G': mult = 1ull << 30; break;
    default: return -1;
    }
    if (end[1] != '\0' && !((end[1] == 'B' || end[1] == 'b') && end[2] == '\0')) return -1;
  }
  if (v > (~0ull) / mult) return -1;
  *out = (size_t)(v * mult);
  return 0;
}

#endif
