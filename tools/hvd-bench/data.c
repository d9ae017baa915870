/*
 * Typed test data for hvd-bench: fill inputs from bench_value() (small integers,
 * exact in every type), poison outputs with a value no correct result can have, and
 * count the output elements that differ from the exact reference. The check is a
 * full element-by-element comparison; it runs outside the timed loop.
 */
#include <math.h>
#include <string.h>

#include "collectives/reduce_scalar.h"
#include "tools/hvd-bench/bench.h"

int bench_is_unsigned(hvd_dtype_t dt) { return dt == HVD_UINT8; }

static void store(void *buf, hvd_dtype_t dt, size_t i, double v) {
  switch (dt) {
  case HVD_FLOAT16: ((uint16_t *)buf)[i] = hvd_f32_to_f16((float)v); break;
  case HVD_BFLOAT16: ((uint16_t *)buf)[i] = hvd_f32_to_bf16((float)v); break;
  case HVD_FLOAT32: ((float *)buf)[i] = (float)v; break;
  case HVD_FLOAT64: ((double *)buf)[i] = v; break;
  case HVD_INT8: ((int8_t *)buf)[i] = (int8_t)v; break;
  case HVD_UINT8: ((uint8_t *)buf)[i] = (uint8_t)v; break;
  case HVD_INT32: ((int32_t *)buf)[i] = (int32_t)v; break;
  case HVD_INT64: ((int64_t *)buf)[i] = (int64_t)v; break;
  default: break;
  }
}

double bench_load(const void *buf, hvd_dtype_t dt, size_t i) {
  switch (dt) {
  case HVD_FLOAT16: return hvd_f16_to_f32(((const uint16_t *)buf)[i]);
  case HVD_BFLOAT16: return hvd_bf16_to_f32(((const uint16_t *)buf)[i]);
  case HVD_FLOAT32: return ((const float *)buf)[i];
  case HVD_FLOAT64: return ((const double *)buf)[i];
  case HVD_INT8: return ((const int8_t *)buf)[i];
  case HVD_UINT8: return ((const uint8_t *)buf)[i];
  case HVD_INT32: return ((const int32_t *)buf)[i];
  case HVD_INT64: return (double)((const int64_t *)buf)[i];
  default: return NAN;
  }
}

void bench_fill(void *buf, hvd_dtype_t dt, int op, int rank, size_t g0, size_t count) {
  const int uns = bench_is_unsigned(dt);
  if (dt == HVD_FLOAT32) { /* the common case, kept fast for 256 MiB buffers */
    float *f = buf;
    for (size_t i = 0; i < count; i++) f[i] = (float)bench_value(rank, g0 + i, op, uns);
    return;
  }
  for (size_t i = 0; i < count; i++) store(buf, dt, i, bench_value(rank, g0 + i, op, uns));
}

void bench_fill_sentinel(void *buf, hvd_dtype_t dt, size_t count) {
  size_t es = hvd_dtype_size(dt);
  switch (dt) {
  case HVD_INT8: memset(buf, 0x7f, count); break;
  case HVD_UINT8: memset(buf, 0xff, count); break;
  case HVD_INT32:
    for (size_t i = 0; i < count; i++) ((int32_t *)buf)[i] = INT32_MAX;
    break;
  case HVD_INT64:
    for (size_t i = 0; i < count; i++) ((int64_t *)buf)[i] = INT64_MAX;
    break;
  default: memset(buf, 0xff, count * es); break; /* NaN in every float type */
  }
}

/* One element: exact for every op but AVG, which gets a tolerance that covers the
 * runtime's sum-then-scale (float) or truncation (integers). */
static int wrong(double got, double want, hvd_dtype_t dt, int op) {
  if (op != BENCH_OP_AVG) return !(got == want);
  double tol;
  switch (dt) {
  case HVD_FLOAT16: tol = 1e-3; break;
  case HVD_BFLOAT16: tol = 8e-3; break;
  case HVD_FLOAT32: tol = 1e-6; break;
  case HVD_FLOAT64: tol = 1e-12; break;
  default: return !(got == trunc(want) || fabs(got - trunc(want)) <= 1.0);
  }
  return !(fabs(got - want) <= tol * (fabs(want) > 1 ? fabs(want) : 1));
}

uint64_t bench_check_allreduce_range(const void *out, hvd_dtype_t dt, int op, int n,
                                     size_t g0, size_t count) {
  const int uns = bench_is_unsigned(dt);
  uint64_t bad = 0;
  for (size_t i = 0; i < count; i++)
    bad += (uint64_t)wrong(bench_load(out, dt, i), bench_expected(n, g0 + i, op, uns), dt, op);
  return bad;
}

uint64_t bench_check(int coll, const void *out, hvd_dtype_t dt, int op, int r, int n,
                     size_t count, int root) {
  const int uns = bench_is_unsigned(dt);
  uint64_t bad = 0;
  switch (coll) {
  case BENCH_ALLREDUCE: return bench_check_allreduce_range(out, dt, op, n, 0, count);
  case BENCH_REDUCESCATTER:
    for (size_t i = 0; i < count; i++)
      bad += (uint64_t)wrong(bench_load(out, dt, i),
                             bench_expected(n, (size_t)r * count + i, op, uns), dt, op);
    return bad;
  case BENCH_BROADCAST:
    for (size_t i = 0; i < count; i++)
      bad += bench_load(out, dt, i) != bench_value(root, i, op, uns);
    return bad;
  case BENCH_ALLGATHER:
    for (int j = 0; j < n; j++)
      for (size_t i = 0; i < count; i++)
        bad += bench_load(out, dt, (size_t)j * count + i) != bench_value(j, i, op, uns);
    return bad;
  case BENCH_ALLTOALL:
    for (int j = 0; j < n; j++)
      for (size_t i = 0; i < count; i++)
        bad += bench_load(out, dt, (size_t)j * count + i) !=
               bench_value(j, (size_t)r * count + i, op, uns);
    return bad;
  default: return count;
  }
}
