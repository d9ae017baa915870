/*
 * float32 <-> IEEE float16 conversion for --fp16-allreduce (Horovod's fp16 compression):
 * round to nearest even, subnormals kept, overflow to infinity, NaN stays NaN (quieted).
 * With the F16C instructions (x86-64, checked at run time) 8 values per instruction;
 * otherwise one at a time with the same results (tests/unit/test_half.c checks both
 * against each other).
 */
#include <string.h>

#include "collectives/reduce_scalar.h" /* hvd's own scalar conversions: the same bits */
#include "train.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HALF_F16C 1
#endif

#ifdef HALF_F16C
__attribute__((target("avx,f16c"))) static void to_half_f16c(uint16_t *dst, const float *src,
                                                             size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128((__m128i *)(dst + i), h);
  }
  for (; i < n; i++) dst[i] = hvd_f32_to_f16(src[i]);
}

__attribute__((target("avx,f16c"))) static void from_half_f16c(float *dst, const uint16_t *src,
                                                               size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
  for (; i < n; i++) dst[i] = hvd_f16_to_f32(src[i]);
}

static int have_f16c(void) {
  static int have = -1;
  if (have < 0) have = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
  return have;
}
#endif

void half_from_float(uint16_t *dst, const float *src, size_t n, int portable) {
#ifdef HALF_F16C
  if (!portable && have_f16c()) {
    to_half_f16c(dst, src, n);
    return;
  }
#endif
  (void)portable;
  for (size_t i = 0; i < n; i++) dst[i] = hvd_f32_to_f16(src[i]);
}

void half_to_float(float *dst, const uint16_t *src, size_t n, int portable) {
#ifdef HALF_F16C
  if (!portable && have_f16c()) {
    from_half_f16c(dst, src, n);
    return;
  }
#endif
  (void)portable;
  for (size_t i = 0; i < n; i++) dst[i] = hvd_f16_to_f32(src[i]);
}
