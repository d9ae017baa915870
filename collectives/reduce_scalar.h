/*
 * Scalar element operations shared by every kernel set (private to collectives/).
 *
 * These functions *define* the results of the reduction kernels: the generic kernels
 * are loops over them and the AVX2 / AVX-512 kernels must produce the same bits for
 * every input (their tails call these very functions). The rules:
 *
 *  - Floating point sum/product: IEEE 754 in the element's own precision
 *    (float16/bfloat16: widened exactly to float32, computed, rounded back to nearest
 *    even; float32 keeps 24 >= 2*11+2 bits, so for one operation the double rounding
 *    is harmless and the result is the correctly rounded half-precision value).
 *  - Any NaN result is the canonical quiet NaN (+, payload 0): 0x7e00, 0x7fc0,
 *    0x7fc00000, 0x7ff8000000000000. Hardware NaN payload and sign rules differ between
 *    scalar and vector instructions and between CPUs (x86's "default NaN" is negative),
 *    so without this the same sum could differ in its NaN bits between ranks.
 *  - min/max: NaN propagates (either operand NaN -> canonical NaN); min(-0, +0) = -0
 *    and max(-0, +0) = +0 (IEEE 754-2019 minimum/maximum). With these rules every op is
 *    commutative bit for bit, so a op b == b op a on every rank and every ISA.
 *  - Integers wrap (two's complement); they are computed in the unsigned type of the
 *    same width so overflow is defined. min/max compare signed, except uint8.
 *  - Results depend on the thread's MXCSR like any SSE code (FTZ/DAZ set by an
 *    application built with -ffast-math flush float32/float64 subnormals, on the
 *    scalar and vector paths alike).
 */
#ifndef HVD_COLLECTIVES_REDUCE_SCALAR_H
#define HVD_COLLECTIVES_REDUCE_SCALAR_H

#include <stdint.h>
#include <string.h>

#define HVD_F16_QNAN 0x7e00u
#define HVD_BF16_QNAN 0x7fc0u
#define HVD_F32_QNAN_BITS 0x7fc00000u
#define HVD_F64_QNAN_BITS 0x7ff8000000000000ull

static inline uint32_t hvd_f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}
static inline float hvd_f32_from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}
static inline uint64_t hvd_f64_bits(double d) {
  uint64_t u;
  memcpy(&u, &d, sizeof u);
  return u;
}
static inline double hvd_f64_from_bits(uint64_t u) {
  double d;
  memcpy(&d, &u, sizeof d);
  return d;
}

/* ---- half-precision conversions -------------------------------------------------- */

/* Exact. NaNs keep sign and payload and are quieted (as F16C's VCVTPH2PS does). */
static inline float hvd_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) /* inf / NaN */
    return hvd_f32_from_bits(sign | 0x7f800000u | (mant << 13) | (mant ? 0x00400000u : 0));
  if (exp == 0) /* zero / subnormal: mant * 2^-24, exact in float32 */
    return hvd_f32_from_bits(sign | hvd_f32_bits((float)mant * 0x1p-24f));
  return hvd_f32_from_bits(sign | ((exp + 112u) << 23) | (mant << 13));
}

/* Round to nearest, ties to even; overflow gives infinity; subnormal results are kept.
 * NaNs keep sign and the top payload bits and are quieted (as VCVTPS2PH does). */
static inline uint16_t hvd_f32_to_f16(float f) {
  uint32_t x = hvd_f32_bits(f);
  uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  if (x > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((x >> 13) & 0x3ffu));
  if (x >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520: rounds to inf */
  if (x >= 0x38800000u) {                                  /* normal half: >= 2^-14 */
    x -= 0x38000000u;                                      /* rebias exponent 127 -> 15 */
    x += 0xfffu + ((x >> 13) & 1u);                        /* RNE on the 13 dropped bits */
    return (uint16_t)(sign | (x >> 13));                   /* carry may bump the exponent */
  }
  /* Subnormal half (or zero): the value in units of 2^-24 is m * 2^(e-126). */
  uint32_t e = x >> 23;
  if (e < 102) return (uint16_t)sign; /* < 2^-25: rounds to zero (2^-25 itself is a tie) */
  uint32_t m = (x & 0x7fffffu) | 0x800000u;
  uint32_t shift = 126 - e; /* 14 .. 24 */
  uint32_t q = m >> shift;
  uint32_t rem = m & ((1u << shift) - 1);
  uint32_t half = 1u << (shift - 1);
  if (rem > half || (rem == half && (q & 1u))) q++; /* q == 0x400 is the smallest normal */
  return (uint16_t)(sign | q);
}

static inline float hvd_bf16_to_f32(uint16_t h) { return hvd_f32_from_bits((uint32_t)h << 16); }

/* Round to nearest, ties to even; NaNs keep sign and top payload bits, quieted. */
static inline uint16_t hvd_f32_to_bf16(float f) {
  uint32_t x = hvd_f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x0040u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return (uint16_t)(x >> 16);
}

/* ---- float32 / float64 element ops ------------------------------------------------ */

#define HVD_DEF_FLOAT_OPS_(T, sfx, QBITS, BITS, FROM, UT)                              \
  static inline T hvd_qnan_##sfx(void) { return FROM(QBITS); }                        \
  static inline T hvd_sum_##sfx(T a, T b) {                                           \
    T r = a + b;                                                                       \
    return __builtin_isnan(r) ? hvd_qnan_##sfx() : r;                                 \
  }                                                                                    \
  static inline T hvd_prod_##sfx(T a, T b) {                                          \
    T r = a * b;                                                                       \
    return __builtin_isnan(r) ? hvd_qnan_##sfx() : r;                                 \
  }                                                                                    \
  static inline T hvd_min_##sfx(T a, T b) {                                           \
    if (__builtin_isnan(a) || __builtin_isnan(b)) return hvd_qnan_##sfx();            \
    if (a < b) return a;                                                               \
    if (b < a) return b;                                                               \
    return FROM((UT)(BITS(a) | BITS(b))); /* equal: same bits, or -0 vs +0 -> -0 */  \
  }                                                                                    \
  static inline T hvd_max_##sfx(T a, T b) {                                           \
    if (__builtin_isnan(a) || __builtin_isnan(b)) return hvd_qnan_##sfx();            \
    if (a > b) return a;                                                               \
    if (b > a) return b;                                                               \
    return FROM((UT)(BITS(a) & BITS(b))); /* equal: same bits, or -0 vs +0 -> +0 */  \
  }

HVD_DEF_FLOAT_OPS_(float, f32, HVD_F32_QNAN_BITS, hvd_f32_bits, hvd_f32_from_bits, uint32_t)
HVD_DEF_FLOAT_OPS_(double, f64, HVD_F64_QNAN_BITS, hvd_f64_bits, hvd_f64_from_bits, uint64_t)
#undef HVD_DEF_FLOAT_OPS_

/* hvd_scale's float32 element: the product in double precision, rounded once, NaN
 * canonical (float64's is hvd_prod_f64). */
static inline float hvd_scale_f32(float x, double factor) {
  float r = (float)((double)x * factor);
  return __builtin_isnan(r) ? hvd_qnan_f32() : r;
}

/* ---- float16 / bfloat16: through float32 ------------------------------------------ */

#define HVD_DEF_HALF_OPS_(sfx, TO32, FROM32)                                            \
  static inline uint16_t hvd_sum_##sfx(uint16_t a, uint16_t b) {                       \
    return FROM32(hvd_sum_f32(TO32(a), TO32(b)));                                      \
  }                                                                                    \
  static inline uint16_t hvd_prod_##sfx(uint16_t a, uint16_t b) {                      \
    return FROM32(hvd_prod_f32(TO32(a), TO32(b)));                                     \
  }                                                                                    \
  static inline uint16_t hvd_min_##sfx(uint16_t a, uint16_t b) {                       \
    return FROM32(hvd_min_f32(TO32(a), TO32(b)));                                      \
  }                                                                                    \
  static inline uint16_t hvd_max_##sfx(uint16_t a, uint16_t b) {                       \
    return FROM32(hvd_max_f32(TO32(a), TO32(b)));                                      \
  }                                                                                    \
  /* hvd_scale's element: times the factor rounded to float32 */                       \
  static inline uint16_t hvd_scale_##sfx(uint16_t x, float factor) {                   \
    return FROM32(hvd_prod_f32(TO32(x), factor));                                      \
  }

HVD_DEF_HALF_OPS_(f16, hvd_f16_to_f32, hvd_f32_to_f16)
HVD_DEF_HALF_OPS_(bf16, hvd_bf16_to_f32, hvd_f32_to_bf16)
#undef HVD_DEF_HALF_OPS_

/* ---- integers: wrap-around arithmetic in the unsigned type of the same width ------ */

#define HVD_DEF_INT_OPS_(T, UT, sfx)                                                    \
  static inline T hvd_sum_##sfx(T a, T b) { return (T)(UT)((UT)a + (UT)b); }            \
  static inline T hvd_prod_##sfx(T a, T b) { return (T)(UT)((UT)a * (UT)b); }           \
  static inline T hvd_min_##sfx(T a, T b) { return b < a ? b : a; }                     \
  static inline T hvd_max_##sfx(T a, T b) { return b > a ? b : a; }                     \
  static inline T hvd_band_##sfx(T a, T b) { return (T)(a & b); }                       \
  static inline T hvd_bor_##sfx(T a, T b) { return (T)(a | b); }

/* uint8_t * uint8_t promotes to int; the products fit (255*255), so no UB. The cast to
 * the signed type of a value out of its range is implementation-defined in C11 and
 * modular in gcc/clang, which is what we want. */
HVD_DEF_INT_OPS_(int8_t, uint8_t, i8)
HVD_DEF_INT_OPS_(uint8_t, uint8_t, u8)
HVD_DEF_INT_OPS_(int32_t, uint32_t, i32)
HVD_DEF_INT_OPS_(int64_t, uint64_t, i64)
#undef HVD_DEF_INT_OPS_

#endif
