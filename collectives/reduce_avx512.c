/*
 * AVX-512 (F + BW) reduction kernels: 512-bit vectors, unaligned loads and stores,
 * the tail done by the scalar operations of reduce_scalar.h. The same bit-exact
 * constructions as reduce_avx2.c (see there), with mask registers instead of blends:
 *
 *  - float NaN / equal-lane fix-ups through compare masks and masked moves; the
 *    bitwise a|b, a&b go through the integer domain (VORPS zmm needs AVX512DQ).
 *  - float16: VCVTPH2PS / VCVTPS2PH zmm with round-to-nearest-even from the immediate.
 *  - bfloat16: widen with VPMOVZXWD + shift; narrow with the integer RNE trick and
 *    VPMOVDW (truncating; every lane already fits 16 bits).
 *  - int8 product: two VPMULLW (BW); int64 product: _mm512_mullox_epi64 (an AVX512F
 *    sequence, no DQ needed); int64 min/max: VPMINSQ / VPMAXSQ.
 *
 * Not every CPU that has AVX2 has AVX-512; reduce.c only selects this set after
 * checking avx512f and avx512bw.
 */
#if defined(__x86_64__) && defined(__GNUC__)

#include <immintrin.h>
#include <stdint.h>

#include "collectives/reduce_impl.h"
#include "collectives/reduce_scalar.h"

#define AVX512 __attribute__((target("avx512f,avx512bw")))

/* ---- per-vector operations ------------------------------------------------------- */

static inline AVX512 __m512 qnan_ps(void) {
  return _mm512_castsi512_ps(_mm512_set1_epi32((int)HVD_F32_QNAN_BITS));
}
static inline AVX512 __m512d qnan_pd(void) {
  return _mm512_castsi512_pd(_mm512_set1_epi64((long long)HVD_F64_QNAN_BITS));
}
static inline AVX512 __m512 canon_ps(__m512 r) {
  return _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(r, r, _CMP_UNORD_Q), qnan_ps());
}
static inline AVX512 __m512d canon_pd(__m512d r) {
  return _mm512_mask_mov_pd(r, _mm512_cmp_pd_mask(r, r, _CMP_UNORD_Q), qnan_pd());
}

static inline AVX512 __m512 v_sum_f32(__m512 a, __m512 b) { return canon_ps(_mm512_add_ps(a, b)); }
static inline AVX512 __m512 v_prod_f32(__m512 a, __m512 b) { return canon_ps(_mm512_mul_ps(a, b)); }
static inline AVX512 __m512 v_min_f32(__m512 a, __m512 b) {
  __m512 m = _mm512_min_ps(a, b);
  __m512 ab = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(a), _mm512_castps_si512(b)));
  m = _mm512_mask_mov_ps(m, _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ), ab);
  return _mm512_mask_mov_ps(m, _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q), qnan_ps());
}
static inline AVX512 __m512 v_max_f32(__m512 a, __m512 b) {
  __m512 m = _mm512_max_ps(a, b);
  __m512 ab = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), _mm512_castps_si512(b)));
  m = _mm512_mask_mov_ps(m, _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ), ab);
  return _mm512_mask_mov_ps(m, _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q), qnan_ps());
}

static inline AVX512 __m512d v_sum_f64(__m512d a, __m512d b) { return canon_pd(_mm512_add_pd(a, b)); }
static inline AVX512 __m512d v_prod_f64(__m512d a, __m512d b) { return canon_pd(_mm512_mul_pd(a, b)); }
static inline AVX512 __m512d v_min_f64(__m512d a, __m512d b) {
  __m512d m = _mm512_min_pd(a, b);
  __m512d ab = _mm512_castsi512_pd(_mm512_or_si512(_mm512_castpd_si512(a), _mm512_castpd_si512(b)));
  m = _mm512_mask_mov_pd(m, _mm512_cmp_pd_mask(a, b, _CMP_EQ_OQ), ab);
  return _mm512_mask_mov_pd(m, _mm512_cmp_pd_mask(a, b, _CMP_UNORD_Q), qnan_pd());
}
static inline AVX512 __m512d v_max_f64(__m512d a, __m512d b) {
  __m512d m = _mm512_max_pd(a, b);
  __m512d ab = _mm512_castsi512_pd(_mm512_and_si512(_mm512_castpd_si512(a), _mm512_castpd_si512(b)));
  m = _mm512_mask_mov_pd(m, _mm512_cmp_pd_mask(a, b, _CMP_EQ_OQ), ab);
  return _mm512_mask_mov_pd(m, _mm512_cmp_pd_mask(a, b, _CMP_UNORD_Q), qnan_pd());
}

static inline AVX512 __m512i v_prod_8(__m512i a, __m512i b) {
  __m512i even = _mm512_mullo_epi16(a, b);
  __m512i odd = _mm512_mullo_epi16(_mm512_srli_epi16(a, 8), _mm512_srli_epi16(b, 8));
  return _mm512_or_si512(_mm512_and_si512(even, _mm512_set1_epi16(0x00ff)),
                         _mm512_slli_epi16(odd, 8));
}
static inline AVX512 __m512i v_prod_64(__m512i a, __m512i b) { return _mm512_mullox_epi64(a, b); }

/* ---- half-precision loads and stores (16 elements) ------------------------------- */

static inline AVX512 __m512 ld_f16(const uint16_t *p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}
static inline AVX512 void st_f16(uint16_t *p, __m512 v) {
  _mm256_storeu_si256((__m256i *)p, _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}
static inline AVX512 __m512 ld_bf16(const uint16_t *p) {
  __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
static inline AVX512 void st_bf16(uint16_t *p, __m512 v) {
  __m512i x = _mm512_castps_si512(v);
  __m512i hi = _mm512_srli_epi32(x, 16);
  __m512i lsb = _mm512_and_si512(hi, _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(
      _mm512_add_epi32(x, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb)), 16);
  __m512i qnan = _mm512_or_si512(hi, _mm512_set1_epi32(0x0040));
  r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), qnan);
  _mm256_storeu_si256((__m256i *)p, _mm512_cvtepi32_epi16(r));
}

/* ---- kernels ------------------------------------------------------------------------ */

#define KERNEL_(name, T, W, SCALAR, BODY)                                               \
  static AVX512 void name(void *dst, const void *a, const void *b, size_t n) {         \
    T *d = dst;                                                                         \
    const T *x = a, *y = b;                                                             \
    size_t i = 0;                                                                       \
    for (; i + (W) <= n; i += (W)) {                                                    \
      BODY;                                                                             \
    }                                                                                   \
    for (; i < n; i++) d[i] = SCALAR(x[i], y[i]);                                       \
  }

#define K_F32_(op)                                                                      \
  KERNEL_(k_##op##_f32, float, 16, hvd_##op##_f32,                                      \
          _mm512_storeu_ps(d + i, v_##op##_f32(_mm512_loadu_ps(x + i),                 \
                                               _mm512_loadu_ps(y + i))))
#define K_F64_(op)                                                                      \
  KERNEL_(k_##op##_f64, double, 8, hvd_##op##_f64,                                      \
          _mm512_storeu_pd(d + i, v_##op##_f64(_mm512_loadu_pd(x + i),                 \
                                               _mm512_loadu_pd(y + i))))
#define K_HALF_(op, sfx)                                                                \
  KERNEL_(k_##op##_##sfx, uint16_t, 16, hvd_##op##_##sfx,                               \
          st_##sfx(d + i, v_##op##_f32(ld_##sfx(x + i), ld_##sfx(y + i))))
#define K_INT_(name, T, W, SCALAR, VOP)                                                 \
  KERNEL_(name, T, W, SCALAR,                                                           \
          _mm512_storeu_si512((void *)(d + i),                                          \
                              VOP(_mm512_loadu_si512((const void *)(x + i)),            \
                                  _mm512_loadu_si512((const void *)(y + i)))))

K_F32_(sum) K_F32_(prod) K_F32_(min) K_F32_(max)
K_F64_(sum) K_F64_(prod) K_F64_(min) K_F64_(max)
K_HALF_(sum, f16) K_HALF_(prod, f16) K_HALF_(min, f16) K_HALF_(max, f16)
K_HALF_(sum, bf16) K_HALF_(prod, bf16) K_HALF_(min, bf16) K_HALF_(max, bf16)

K_INT_(k_sum_i8, int8_t, 64, hvd_sum_i8, _mm512_add_epi8)
K_INT_(k_prod_i8, int8_t, 64, hvd_prod_i8, v_prod_8)
K_INT_(k_min_i8, int8_t, 64, hvd_min_i8, _mm512_min_epi8)
K_INT_(k_max_i8, int8_t, 64, hvd_max_i8, _mm512_max_epi8)
K_INT_(k_band_i8, int8_t, 64, hvd_band_i8, _mm512_and_si512)
K_INT_(k_bor_i8, int8_t, 64, hvd_bor_i8, _mm512_or_si512)

K_INT_(k_sum_u8, uint8_t, 64, hvd_sum_u8, _mm512_add_epi8)
K_INT_(k_prod_u8, uint8_t, 64, hvd_prod_u8, v_prod_8)
K_INT_(k_min_u8, uint8_t, 64, hvd_min_u8, _mm512_min_epu8)
K_INT_(k_max_u8, uint8_t, 64, hvd_max_u8, _mm512_max_epu8)
K_INT_(k_band_u8, uint8_t, 64, hvd_band_u8, _mm512_and_si512)
K_INT_(k_bor_u8, uint8_t, 64, hvd_bor_u8, _mm512_or_si512)

K_INT_(k_sum_i32, int32_t, 16, hvd_sum_i32, _mm512_add_epi32)
K_INT_(k_prod_i32, int32_t, 16, hvd_prod_i32, _mm512_mullo_epi32)
K_INT_(k_min_i32, int32_t, 16, hvd_min_i32, _mm512_min_epi32)
K_INT_(k_max_i32, int32_t, 16, hvd_max_i32, _mm512_max_epi32)
K_INT_(k_band_i32, int32_t, 16, hvd_band_i32, _mm512_and_si512)
K_INT_(k_bor_i32, int32_t, 16, hvd_bor_i32, _mm512_or_si512)

K_INT_(k_sum_i64, int64_t, 8, hvd_sum_i64, _mm512_add_epi64)
K_INT_(k_prod_i64, int64_t, 8, hvd_prod_i64, v_prod_64)
K_INT_(k_min_i64, int64_t, 8, hvd_min_i64, _mm512_min_epi64)
K_INT_(k_max_i64, int64_t, 8, hvd_max_i64, _mm512_max_epi64)
K_INT_(k_band_i64, int64_t, 8, hvd_band_i64, _mm512_and_si512)
K_INT_(k_bor_i64, int64_t, 8, hvd_bor_i64, _mm512_or_si512)

#define ROW_FLOAT_(sfx)                                                                 \
  {[HVD_SUM] = k_sum_##sfx, [HVD_MIN] = k_min_##sfx, [HVD_MAX] = k_max_##sfx,           \
   [HVD_PRODUCT] = k_prod_##sfx}
#define ROW_INT_(sfx)                                                                   \
  {[HVD_SUM] = k_sum_##sfx,     [HVD_MIN] = k_min_##sfx,   [HVD_MAX] = k_max_##sfx,     \
   [HVD_PRODUCT] = k_prod_##sfx, [HVD_OP_BAND] = k_band_##sfx, [HVD_OP_BOR] = k_bor_##sfx}

/* hvd_scale for float32/float64: widen to double, multiply, round once (a factor
 * that is a float itself: one float multiply, the same bits; see reduce_avx2.c). */
static AVX512 void k_scale_f32(float *p, size_t n, double factor) {
  const __m512d f = _mm512_set1_pd(factor);
  size_t i = 0;
  if ((double)(float)factor == factor) {
    const __m512 ff = _mm512_set1_ps((float)factor);
    for (; i + 16 <= n; i += 16)
      _mm512_storeu_ps(p + i, canon_ps(_mm512_mul_ps(_mm512_loadu_ps(p + i), ff)));
  }
  for (; i + 16 <= n; i += 16) {
    __m512 x = _mm512_loadu_ps(p + i);
    __m256 x_hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1));
    __m256 lo = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(x)), f));
    __m256 hi = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_cvtps_pd(x_hi), f));
    __m512 r = _mm512_castpd_ps(
        _mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(lo)), _mm256_castps_pd(hi), 1));
    _mm512_storeu_ps(p + i, canon_ps(r));
  }
  for (; i < n; i++) p[i] = hvd_scale_f32(p[i], factor);
}

static AVX512 void k_scale_f64(double *p, size_t n, double factor) {
  const __m512d f = _mm512_set1_pd(factor);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm512_storeu_pd(p + i, v_prod_f64(_mm512_loadu_pd(p + i), f));
  for (; i < n; i++) p[i] = hvd_prod_f64(p[i], factor);
}

/* hvd_scale for float16/bfloat16: widened, times the float factor, rounded back. */
#define K_SCALE_HALF_(sfx)                                                              \
  static AVX512 void k_scale_##sfx(uint16_t *p, size_t n, float factor) {               \
    const __m512 f = _mm512_set1_ps(factor);                                            \
    size_t i = 0;                                                                       \
    for (; i + 16 <= n; i += 16) st_##sfx(p + i, v_prod_f32(ld_##sfx(p + i), f));      \
    for (; i < n; i++) p[i] = hvd_scale_##sfx(p[i], factor);                            \
  }
K_SCALE_HALF_(f16)
K_SCALE_HALF_(bf16)

const hvd_reduce_table_t hvd_reduce_table_avx512 = {
    .name = "avx512",
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
