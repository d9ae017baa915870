/*
 * Reduction kernels: the portable set, the run-time choice between kernel sets, and
 * hvd_scale().
 *
 * Every kernel is an element-wise loop over the scalar operations in reduce_scalar.h,
 * which define the results (rounding, NaN and signed-zero rules are documented
 * there). reduce_avx2.c and reduce_avx512.c compute the same functions eight to
 * sixty-four elements at a time and finish their tails with the scalar operations, so
 * every kernel set gives the same bits for the same inputs; tests/unit/test_reduce.c
 * checks that for every dtype, op and available set.
 *
 * The set is chosen once per process, on first use (pthread_once): the widest one the
 * CPU supports (AVX-512 F+BW, then AVX2+F16C, then generic), unless HVD_REDUCE_ISA
 * (generic | avx2 | avx512) asks for another; a request the CPU cannot run falls back
 * to the best available set with a warning. That choice is the only process-global
 * state of the collectives layer, and it never changes afterwards.
 */
#include <math.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <emmintrin.h>
#endif

#include "collectives/reduce.h"
#include "collectives/reduce_impl.h"
#include "collectives/reduce_scalar.h"
#include "common/log.h"

/* ---- the generic kernel set ------------------------------------------------------- */

#define GEN_KERNEL_(op, sfx, T)                                                         \
  static void gen_##op##_##sfx(void *dst, const void *a, const void *b, size_t n) {    \
    T *d = dst;                                                                         \
    const T *x = a, *y = b;                                                             \
    for (size_t i = 0; i < n; i++) d[i] = hvd_##op##_##sfx(x[i], y[i]);                 \
  }
#define GEN_FLOAT_(sfx, T)                                                              \
  GEN_KERNEL_(sum, sfx, T)                                                              \
  GEN_KERNEL_(prod, sfx, T) GEN_KERNEL_(min, sfx, T) GEN_KERNEL_(max, sfx, T)
#define GEN_INT_(sfx, T)                                                                \
  GEN_FLOAT_(sfx, T) GEN_KERNEL_(band, sfx, T) GEN_KERNEL_(bor, sfx, T)

GEN_FLOAT_(f16, uint16_t)
GEN_FLOAT_(bf16, uint16_t)
GEN_FLOAT_(f32, float)
GEN_FLOAT_(f64, double)
GEN_INT_(i8, int8_t)
GEN_INT_(u8, uint8_t)
GEN_INT_(i32, int32_t)
GEN_INT_(i64, int64_t)

#define ROW_FLOAT_(sfx)                                                                 \
  {[HVD_SUM] = gen_sum_##sfx, [HVD_MIN] = gen_min_##sfx, [HVD_MAX] = gen_max_##sfx,     \
   [HVD_PRODUCT] = gen_prod_##sfx}
#define ROW_INT_(sfx)                                                                   \
  {[HVD_SUM] = gen_sum_##sfx,     [HVD_MIN] = gen_min_##sfx,                            \
   [HVD_MAX] = gen_max_##sfx,     [HVD_PRODUCT] = gen_prod_##sfx,                       \
   [HVD_OP_BAND] = gen_band_##sfx, [HVD_OP_BOR] = gen_bor_##sfx}

static void gen_scale_f32(float *p, size_t n, double factor) {
  for (size_t i = 0; i < n; i++) p[i] = hvd_scale_f32(p[i], factor);
}

static void gen_scale_f64(double *p, size_t n, double factor) {
  for (size_t i = 0; i < n; i++) p[i] = hvd_prod_f64(p[i], factor);
}

static void gen_scale_f16(uint16_t *p, size_t n, float factor) {
  for (size_t i = 0; i < n; i++) p[i] = hvd_scale_f16(p[i], factor);
}

static void gen_scale_bf16(uint16_t *p, size_t n, float factor) {
  for (size_t i = 0; i < n; i++) p[i] = hvd_scale_bf16(p[i], factor);
}

const hvd_reduce_table_t hvd_reduce_table_generic = {
    .name = "generic",
    .scale_f32 = gen_scale_f32,
    .scale_f64 = gen_scale_f64,
    .scale_f16 = gen_scale_f16,
    .scale_bf16 = gen_scale_bf16,
    .fn =
        {
            [HVD_FLOAT16] = ROW_FLOAT_(f16),
            [HVD_BFLOAT16] = ROW_FLOAT_(bf16),
            [HVD_FLOAT32] = ROW_FLOAT_(f32),
            [HVD_FLOAT64] = ROW_FLOAT_(f64),
            [HVD_INT8] = ROW_INT_(i8),
            [HVD_UINT8] = ROW_INT_(u8),
            [HVD_INT32] = ROW_INT_(i32),
            [HVD_INT64] = ROW_INT_(i64),
        },
};

/* ---- choosing a set ----------------------------------------------------------------- */

#if defined(__x86_64__) && defined(__GNUC__)
#define HVD_HAVE_X86_KERNELS 1
#else
#define HVD_HAVE_X86_KERNELS 0
#endif

static const char *const isa_names[HVD_ISA_COUNT] = {"generic", "avx2", "avx512"};

#if HVD_HAVE_X86_KERNELS
/* CPUID.1:ECX.F16C (clang's __builtin_cpu_supports does not know "f16c"). */
static int cpu_has_f16c(void) {
  unsigned a, b, c, d;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}
#endif

int hvd_reduce_isa_available(hvd_isa_t isa) {
  switch (isa) {
  case HVD_ISA_GENERIC:
    return 1;
#if HVD_HAVE_X86_KERNELS
  case HVD_ISA_AVX2:
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && cpu_has_f16c();
  case HVD_ISA_AVX512:
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
#endif
  default:
    return 0;
  }
}

const hvd_reduce_table_t *hvd_reduce_table(hvd_isa_t isa) {
  if (!hvd_reduce_isa_available(isa)) return NULL;
  switch (isa) {
#if HVD_HAVE_X86_KERNELS
  case HVD_ISA_AVX2:
    return &hvd_reduce_table_avx2;
  case HVD_ISA_AVX512:
    return &hvd_reduce_table_avx512;
#endif
  default:
    return &hvd_reduce_table_generic;
  }
}

static pthread_once_t active_once = PTHREAD_ONCE_INIT;
static const hvd_reduce_table_t *active_table; /* written once, under active_once */

static void choose_table(void) {
  hvd_isa_t best = HVD_ISA_GENERIC;
  for (int i = HVD_ISA_COUNT - 1; i > HVD_ISA_GENERIC; i--)
    if (hvd_reduce_isa_available((hvd_isa_t)i)) {
      best = (hvd_isa_t)i;
      break;
    }
  hvd_isa_t pick = best;
  const char *want = getenv("HVD_REDUCE_ISA");
  if (want != NULL && *want != '\0' && strcasecmp(want, "auto") != 0) {
    int found = -1;
    for (int i = 0; i < HVD_ISA_COUNT; i++)
      if (strcasecmp(want, isa_names[i]) == 0) found = i;
    if (found < 0)
      HVD_WARN("HVD_REDUCE_ISA=%s is not one of " HVD_REDUCE_ISA_CHOICES "; using %s", want,
               isa_names[best]);
    else if (!hvd_reduce_isa_available((hvd_isa_t)found))
      HVD_WARN("HVD_REDUCE_ISA=%s: this CPU cannot run it; using %s", want,
               isa_names[best]);
    else
      pick = (hvd_isa_t)found;
  }
  active_table = hvd_reduce_table(pick);
}

static const hvd_reduce_table_t *active(void) {
  pthread_once(&active_once, choose_table);
  return active_table;
}

const char *hvd_reduce_isa(void) { return active()->name; }

/* ---- public entry points ------------------------------------------------------------ */

int hvd_reduce_supported(hvd_dtype_t dtype, hvd_op_t op) {
  if ((unsigned)dtype >= HVD_DTYPE_COUNT || (unsigned)op >= (unsigned)HVD_REDUCE_OPS)
    return 0;
  if (op == HVD_AVERAGE) return 1;
  return hvd_reduce_table_generic.fn[dtype][op] != NULL;
}

void hvd_reduce(void *dst, const void *src, size_t count, hvd_dtype_t dtype, hvd_op_t op) {
  if (count == 0) return;
  active()->fn[dtype][op](dst, dst, src, count);
}

void hvd_reduce3(void *dst, const void *a, const void *b, size_t count, hvd_dtype_t dtype,
                 hvd_op_t op) {
  if (count == 0) return;
  active()->fn[dtype][op](dst, a, b, count);
}

/* ---- scaling -------------------------------------------------------------------------- */

/* Truncate toward zero, saturating at the type's range; NaN gives 0. */
static inline int64_t to_int_sat(double d, int64_t lo, int64_t hi) {
  if (__builtin_isnan(d)) return 0;
  if (d <= (double)lo) return lo;
  if (d >= (double)hi) return hi; /* (double)INT64_MAX is 2^63: the test is exact */
  return (int64_t)d;
}

#define SCALE_INT_(T, lo, hi)                                                           \
  do {                                                                                  \
    T *p = buf;                                                                         \
    for (size_t i = 0; i < count; i++)                                                  \
      p[i] = (T)to_int_sat((double)p[i] * factor, (lo), (hi));                          \
  } while (0)

void hvd_scale(void *buf, size_t count, hvd_dtype_t dtype, double factor) {
  if (factor == 1.0) return; /* exact for every type, and spares int64 the trip to double */
  float f32f = (float)factor;
  switch (dtype) {
  case HVD_FLOAT16:
    active()->scale_f16(buf, count, f32f);
    break;
  case HVD_BFLOAT16:
    active()->scale_bf16(buf, count, f32f);
    break;
  case HVD_FLOAT32: /* the kernel set's: AVERAGE's 1/n pass over every result */
    active()->scale_f32(buf, count, factor);
    break;
  case HVD_FLOAT64:
    active()->scale_f64(buf, count, factor);
    break;
  case HVD_INT8:
    SCALE_INT_(int8_t, INT8_MIN, INT8_MAX);
    break;
  case HVD_UINT8:
    SCALE_INT_(uint8_t, 0, UINT8_MAX);
    break;
  case HVD_INT32:
    SCALE_INT_(int32_t, INT32_MIN, INT32_MAX);
    break;
  case HVD_INT64:
    SCALE_INT_(int64_t, INT64_MIN, INT64_MAX);
    break;
  default:
    break;
  }
}

/* ---- streaming copy ----------------------------------------------------------------- */

#if defined(__x86_64__) && defined(__GNUC__)
void hvd_copy_streaming(void *dst, const void *src, size_t bytes) {
  char *d = dst;
  const char *s = src;
  size_t head = (size_t)(-(uintptr_t)d & 15); /* movntdq needs 16-byte aligned stores */
  if (head > bytes) head = bytes;
  memcpy(d, s, head);
  d += head, s += head, bytes -= head;
  for (; bytes >= 64; bytes -= 64, d += 64, s += 64) { /* a whole line per iteration */
    __m128i x0 = _mm_loadu_si128((const __m128i *)s);
    __m128i x1 = _mm_loadu_si128((const __m128i *)(s + 16));
    __m128i x2 = _mm_loadu_si128((const __m128i *)(s + 32));
    __m128i x3 = _mm_loadu_si128((const __m128i *)(s + 48));
    _mm_stream_si128((__m128i *)d, x0);
    _mm_stream_si128((__m128i *)(d + 16), x1);
    _mm_stream_si128((__m128i *)(d + 32), x2);
    _mm_stream_si128((__m128i *)(d + 48), x3);
  }
  memcpy(d, s, bytes);
}

void hvd_streaming_fence(void) { _mm_sfence(); }
#else
void hvd_copy_streaming(void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }

void hvd_streaming_fence(void) { atomic_thread_fence(memory_order_seq_cst); }
#endif
