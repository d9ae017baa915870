/*
 * AVX2 (+F16C) reduction kernels: 256-bit vectors, unaligned loads and stores, the
 * tail (fewer elements than one vector) done by the scalar operations of
 * reduce_scalar.h. Every vector operation below reproduces its scalar counterpart
 * bit for bit:
 *
 *  - float sum/product: add/mul, then any NaN lane is replaced by the canonical NaN.
 *  - float min/max: VMINPS returns its second operand when the operands are equal or
 *    either is NaN; equal lanes are fixed up with a|b (min) / a&b (max), which turns
 *    {-0, +0} into -0 / +0 and is the identity otherwise, and NaN lanes with the
 *    canonical NaN.
 *  - float16: VCVTPH2PS (exact), the float32 op, VCVTPS2PH with round-to-nearest-even
 *    from the immediate (not MXCSR).
 *  - bfloat16: widen by a 16-bit shift; narrow with the integer RNE trick
 *    (x + 0x7fff + lsb) >> 16, NaN lanes quieted as in hvd_f32_to_bf16.
 *  - int8 product: two 16-bit multiplies (even and odd bytes); int64 product from
 *    three 32x32->64 multiplies; int64 min/max by compare and blend (AVX2 has no
 *    VPMINSQ).
 *
 * The functions carry target attributes, so the file builds without -mavx2 and the
 * code only runs after reduce.c checked the CPU.
 */
#if defined(__x86_64__) && defined(__GNUC__)

#include <immintrin.h>
#include <stdint.h>

#include "collectives/reduce_impl.h"
#include "collectives/reduce_scalar.h"

#define AVX2 __attribute__((target("avx2,f16c")))

/* ---- per-vector operations ------------------------------------------------------- */

static inline AVX2 __m256 canon_ps(__m256 r) {
  __m256 nan = _mm256_castsi256_ps(_mm256_set1_epi32((int)HVD_F32_QNAN_BITS));
  return _mm256_blendv_ps(r, nan, _mm256_cmp_ps(r, r, _CMP_UNORD_Q));
}
static inline AVX2 __m256d canon_pd(__m256d r) {
  __m256d nan = _mm256_castsi256_pd(_mm256_set1_epi64x((long long)HVD_F64_QNAN_BITS));
  return _mm256_blendv_pd(r, nan, _mm256_cmp_pd(r, r, _CMP_UNORD_Q));
}

static inline AVX2 __m256 v_sum_f32(__m256 a, __m256 b) { return canon_ps(_mm256_add_ps(a, b)); }
static inline AVX2 __m256 v_prod_f32(__m256 a, __m256 b) { return canon_ps(_mm256_mul_ps(a, b)); }
static inline AVX2 __m256 v_min_f32(__m256 a, __m256 b) {
  __m256 m = _mm256_min_ps(a, b);
  m = _mm256_blendv_ps(m, _mm256_or_ps(a, b), _mm256_cmp_ps(a, b, _CMP_EQ_OQ));
  __m256 nan = _mm256_castsi256_ps(_mm256_set1_epi32((int)HVD_F32_QNAN_BITS));
  return _mm256_blendv_ps(m, nan, _mm256_cmp_ps(a, b, _CMP_UNORD_Q));
}
static inline AVX2 __m256 v_max_f32(__m256 a, __m256 b) {
  __m256 m = _mm256_max_ps(a, b);
  m = _mm256_blendv_ps(m, _mm256_and_ps(a, b), _mm256_cmp_ps(a, b, _CMP_EQ_OQ));
  __m256 nan = _mm256_castsi256_ps(_mm256_set1_epi32((int)HVD_F32_QNAN_BITS));
  return _mm256_blendv_ps(m, nan, _mm256_cmp_ps(a, b, _CMP_UNORD_Q));
}

static inline AVX2 __m256d v_sum_f64(__m256d a, __m256d b) { return canon_pd(_mm256_add_pd(a, b)); }
static inline AVX2 __m256d v_prod_f64(__m256d a, __m256d b) { return canon_pd(_mm256_mul_pd(a, b)); }
static inline AVX2 __m256d v_min_f64(__m256d a, __m256d b) {
  __m256d m = _mm256_min_pd(a, b);
  m = _mm256_blendv_pd(m, _mm256_or_pd(a, b), _mm256_cmp_pd(a, b, _CMP_EQ_OQ));
  __m256d nan = _mm256_castsi256_pd(_mm256_set1_epi64x((long long)HVD_F64_QNAN_BITS));
  return _mm256_blendv_pd(m, nan, _mm256_cmp_pd(a, b, _CMP_UNORD_Q));
}
static inline AVX2 __m256d v_max_f64(__m256d a, __m256d b) {
  __m256d m = _mm256_max_pd(a, b);
  m = _mm256_blendv_pd(m, _mm256_and_pd(a, b), _mm256_cmp_pd(a, b, _CMP_EQ_OQ));
  __m256d nan = _mm256_castsi256_pd(_mm256_set1_epi64x((long long)HVD_F64_QNAN_BITS));
  return _mm256_blendv_pd(m, nan, _mm256_cmp_pd(a, b, _CMP_UNORD_Q));
}

static inline AVX2 __m256i v_prod_8(__m256i a, __m256i b) {
  __m256i even = _mm256_mullo_epi16(a, b); /* low byte of each 16-bit lane is right */
  __m256i odd = _mm256_mullo_epi16(_mm256_srli_epi16(a, 8), _mm256_srli_epi16(b, 8));
  return _mm256_or_si256(_mm256_and_si256(even, _mm256_set1_epi16(0x00ff)),
                         _mm256_slli_epi16(odd, 8));
}
static inline AVX2 __m256i v_prod_64(__m256i a, __m256i b) {
  __m256i lolo = _mm256_mul_epu32(a, b);
  __m256i cross = _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(a, 32), b),
                                   _mm256_mul_epu32(a, _mm256_srli_epi64(b, 32)));
  return _mm256_add_epi64(lolo, _mm256_slli_epi64(cross, 32));
}
static inline AVX2 __m256i v_min_64(__m256i a, __m256i b) {
  return _mm256_blendv_epi8(a, b, _mm256_cmpgt_epi64(a, b));
}
static inline AVX2 __m256i v_max_64(__m256i a, __m256i b) {
  return _mm256_blendv_epi8(a, b, _mm256_cmpgt_epi64(b, a));
}

/* ---- half-precision loads and stores (8 elements) -------------------------------- */

static inline AVX2 __m256 ld_f16(const uint16_t *p) {
  return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}
static inline AVX2 void st_f16(uint16_t *p, __m256 v) {
  _mm_storeu_si128((__m128i *)p, _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}
static inline AVX2 __m256 ld_bf16(const uint16_t *p) {
  __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
static inline AVX2 void st_bf16(uint16_t *p, __m256 v) {
  __m256i x = _mm256_castps_si256(v);
  __m256i hi = _mm256_srli_epi32(x, 16);
  __m256i lsb = _mm256_and_si256(hi, _mm256_set1_epi32(1));
  __m256i r = _mm256_srli_epi32(
      _mm256_add_epi32(x, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb)), 16);
  __m256i qnan = _mm256_or_si256(hi, _mm256_set1_epi32(0x0040));
  r = _mm256_blendv_epi8(r, qnan, _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
  /* every lane is <= 0xffff, so the unsigned saturation of PACKUSDW never applies */
  _mm_storeu_si128((__m128i *)p, _mm_packus_epi32(_mm256_castsi256_si128(r),
                                                  _mm256_extracti128_si256(r, 1)));
}

/* ---- kernels ------------------------------------------------------------------------ */

/* A kernel: W elements per iteration through BODY, then the scalar tail. */
#define KERNEL_(name, T, W, SCALAR, BODY)                                               \
  static AVX2 void name(void *dst, const void *a, const void *b, size_t n) {           \
    T *d = dst;                                                                         \
    const T *x = a, *y = b;                                                             \
    size_t i = 0;                                                                       \
    for (; i + (W) <= n; i += (W)) {                                                    \
      BODY;                                                                             \
    }                                                                                   \
    for (; i < n; i++) d[i] = SCALAR(x[i], y[i]);                                       \
  }

#define K_F32_(op)                                                                      \
  KERNEL_(k_##op##_f32, float, 8, hvd_##op##_f32,                                       \
          _mm256_storeu_ps(d + i, v_##op##_f32(_mm256_loadu_ps(x + i),                 \
                                               _mm256_loadu_ps(y + i))))
#define K_F64_(op)                                                                      \
  KERNEL_(k_##op##_f64, double, 4, hvd_##op##_f64,                                      \
          _mm256_storeu_pd(d + i, v_##op##_f64(_mm256_loadu_pd(x + i),                 \
                                               _mm256_loadu_pd(y + i))))
#define K_HALF_(op, sfx)                                                                \
  KERNEL_(k_##op##_##sfx, uint16_t, 8, hvd_##op##_##sfx,                                \
          st_##sfx(d + i, v_##op##_f32(ld_##sfx(x + i), ld_##sfx(y + i))))
#define K_INT_(name, T, W, SCALAR, VOP)                                                 \
  KERNEL_(name, T, W, SCALAR,                                                           \
          _mm256_storeu_si256((__m256i *)(d + i),                                       \
                              VOP(_mm256_loadu_si256((const __m256i *)(x + i)),         \
                                  _mm256_loadu_si256((const __m256i *)(y + i)))))

K_F32_(sum) K_F32_(prod) K_F32_(min) K_F32_(max)
K_F64_(sum) K_F64_(prod) K_F64_(min) K_F64_(max)
K_HALF_(sum, f16) K_HALF_(prod, f16) K_HALF_(min, f16) K_HALF_(max, f16)
K_HALF_(sum, bf16) K_HALF_(prod, bf16) K_HALF_(min, bf16) K_HALF_(max, bf16)

K_INT_(k_sum_i8, int8_t, 32, hvd_sum_i8, _mm256_add_epi8)
K_INT_(k_prod_i8, int8_t, 32, hvd_prod_i8, v_prod_8)
K_INT_(k_min_i8, int8_t, 32, hvd_min_i8, _mm256_min_epi8)
K_INT_(k_max_i8, int8_t, 32, hvd_max_i8, _mm256_max_epi8)
K_INT_(k_band_i8, int8_t, 32, hvd_band_i8, _mm256_and_si256)
K_INT_(k_bor_i8, int8_t, 32, hvd_bor_i8, _mm256_or_si256)

K_INT_(k_sum_u8, uint8_t, 32, hvd_sum_u8, _mm256_add_epi8)
K_INT_(k_prod_u8, uint8_t, 32, hvd_prod_u8, v_prod_8)
K_INT_(k_min_u8, uint8_t, 32, hvd_min_u8, _mm256_min_epu8)
K_INT_(k_max_u8, uint8_t, 32, hvd_max_u8, _mm256_max_epu8)
K_INT_(k_band_u8, uint8_t, 32, hvd_band_u8, _mm256_and_si256)
K_INT_(k_bor_u8, uint8_t, 32, hvd_bor_u8, _mm256_or_si256)

K_INT_(k_sum_i32, int32_t, 8, hvd_sum_i32, _mm256_add_epi32)
K_INT_(k_prod_i32, int32_t, 8, hvd_prod_i32, _mm256_mullo_epi32)
K_INT_(k_min_i32, int32_t, 8, hvd_min_i32, _mm256_min_epi32)
K_INT_(k_max_i32, int32_t, 8, hvd_max_i32, _mm256_max_epi32)
K_INT_(k_band_i32, int32_t, 8, hvd_band_i32, _mm256_and_si256)
K_INT_(k_bor_i32, int32_t, 8, hvd_bor_i32, _mm256_or_si256)

K_INT_(k_sum_i64, int64_t, 4, hvd_sum_i64, _mm256_add_epi64)
K_INT_(k_prod_i64, int64_t, 4, hvd_prod_i64, v_prod_64)
K_INT_(k_min_i64, int64_t, 4, hvd_min_i64, v_min_64)
K_INT_(k_max_i64, int64_t, 4, hvd_max_i64, v_max_64)
K_INT_(k_band_i64, int64_t, 4, hvd_band_i64, _mm256_and_si256)
K_INT_(k_bor_i64, int64_t, 4, hvd_bor_i64, _mm256_or_si256)

#define ROW_FLOAT_(sfx)                                                                 \
  {[HVD_SUM] = k_sum_##sfx, [HVD_MIN] = k_min_##sfx, [HVD_MAX] = k_max_##sfx,           \
   [HVD_PRODUCT] = k_prod_##sfx}
#define ROW_INT_(sfx)                                                                   \
  {[HVD_SUM] = k_sum_##sfx,     [HVD_MIN] = k_min_##sfx,   [HVD_MAX] = k_max_##sfx,     \
   [HVD_PRODUCT] = k_prod_##sfx, [HVD_OP_BAND] = k_band_##sfx, [HVD_OP_BOR] = k_bor_##sfx}

/* hvd_scale for float32/float64: widen to double, multiply, round once. A factor
 * that is a float itself (1/2, 1/4: AVERAGE over 2 or 4 ranks) makes the product of
 * two floats, exact in double, so one float multiply rounds to the same bits. */
static AVX2 void k_scale_f32(float *p, size_t n, double factor) {
  const __m256d f = _mm256_set1_pd(factor);
  size_t i = 0;
  if ((double)(float)factor == factor) {
    const __m256 ff = _mm256_set1_ps((float)factor);
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(p + i, canon_ps(_mm256_mul_ps(_mm256_loadu_ps(p + i), ff)));
  }
  for (; i + 8 <= n; i += 8) {
    __m256 x = _mm256_loadu_ps(p + i);
    __m128 lo = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(x)), f));
    __m128 hi = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)), f));
    _mm256_storeu_ps(p + i, canon_ps(_mm256_insertf128_ps(_mm256_castps128_ps256(lo), hi, 1)));
  }
  for (; i < n; i++) p[i] = hvd_scale_f32(p[i], factor);
}

static AVX2 void k_scale_f64(double *p, size_t n, double factor) {
  const __m256d f = _mm256_set1_pd(factor);
  size_t i = 0;
  for (; i + 4 <= n; i += 4) _mm256_storeu_pd(p + i, v_prod_f64(_mm256_loadu_pd(p + i), f));
  for (; i < n; i++) p[i] = hvd_prod_f64(p[i], factor);
}

/* hvd_scale for float16/bfloat16: widened, times the float factor, rounded back. */
#define K_SCALE_HALF_(sfx)                                                              \
  static AVX2 void k_scale_##sfx(uint16_t *p, size_t n, float factor) {                 \
    const __m256 f = _mm256_set1_ps(factor);                                            \
    size_t i = 0;                                                                       \
    for (; i + 8 <= n; i += 8) st_##sfx(p + i, v_prod_f32(ld_##sfx(p + i), f));        \
    for (; i < n; i++) p[i] = hvd_scale_##sfx(p[i], factor);                            \
  }
K_SCALE_HALF_(f16)
K_SCALE_HALF_(bf16)

const hvd_reduce_table_t hvd_reduce_table_avx2 = {
    .name = "avx2",
    .scale_f32 = k_scale_f32,
    .scale_f64 = k_scale_f64,
    .scale_f16 = k_scale_f16,
    .scale_bf16 = k_scale_bf16,
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

#endif /* x86-64 */
