/*
 * Reduction kernels (collectives/reduce*.c) against an independent reference.
 *
 * The reference decodes every element to double, applies the op in double and rounds
 * back with its own converters (frexp/ldexp/nearbyint, nothing shared with the
 * library). Double is wide enough that this is the correctly rounded result for
 * float16, bfloat16 and float32 sums and products, which the library must match bit
 * for bit (its float32 intermediate is also innocuous: 24 >= 2p+2 for p = 8, 11).
 * NaN results must be the canonical quiet NaN; min/max follow IEEE 754-2019
 * minimum/maximum (NaN propagates, -0 < +0). Every kernel set this CPU can run is
 * checked for every dtype and op, lengths 0..67 and one large odd length, at an
 * element offset of 0 and 1 (vector tails, unaligned loads), out of place and in place.
 */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "collectives/reduce.h"
#include "collectives/reduce_impl.h"
#include "collectives/reduce_scalar.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_X86 1
#else
#define HAVE_X86 0
#endif

/* ---- test-local helpers ------------------------------------------------------------ */

#define HVD_ARRAY_SIZE_T(x) (sizeof(x) / sizeof((x)[0]))

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
  uint64_t x = rng_state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return rng_state = x;
}

static float f32_of(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
static uint32_t bits_of_f32(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

/* Independent decoders. */
static double ref_f16_to_double(uint16_t h) {
  int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
  double v;
  if (exp == 31)
    v = mant ? NAN : INFINITY;
  else if (exp == 0)
    v = ldexp(mant, -24);
  else
    v = ldexp(1024 + mant, exp - 25);
  return sign ? -v : v;
}
static double ref_bf16_to_double(uint16_t h) {
  int sign = h >> 15, exp = (h >> 7) & 255, mant = h & 127;
  double v;
  if (exp == 255)
    v = mant ? NAN : INFINITY;
  else if (exp == 0)
    v = ldexp(mant, -133);
  else
    v = ldexp(128 + mant, exp - 134);
  return sign ? -v : v;
}

/* Round a double to a binary format with `mbits` fraction bits and minimum normal
 * exponent emin, ties to even; NaN gives qnan. Returns the encoded bits. */
static uint16_t ref_round(double v, int mbits, int emin, int emax, uint16_t qnan) {
  if (isnan(v)) return qnan;
  uint16_t sign = signbit(v) ? (uint16_t)(1u << (mbits + (emax == 15 ? 5 : 8))) : 0;
  int ebits = emax == 15 ? 5 : 8;
  uint16_t inf = (uint16_t)(((1u << ebits) - 1) << mbits);
  double a = fabs(v);
  if (isinf(a)) return sign | inf;
  int e;
  frexp(a, &e);
  int E = a == 0 ? emin : e - 1;
  if (E < emin) E = emin;
  double q = ldexp(1.0, E - mbits);
  double r = nearbyint(a / q) * q; /* a/q is exact: q is a power of two */
  if (r >= ldexp(1.0, emax + 1)) return sign | inf;
  if (r < ldexp(1.0, emin)) return sign | (uint16_t)(r / ldexp(1.0, emin - mbits));
  double m = frexp(r, &e);
  uint16_t exp = (uint16_t)(e - 1 - emin + 1);
  uint16_t mant = (uint16_t)((m * 2 - 1) * (double)(1u << mbits));
  return sign | (uint16_t)(exp << mbits) | mant;
}
static uint16_t ref_to_f16(double v) { return ref_round(v, 10, -14, 15, 0x7e00); }
static uint16_t ref_to_bf16(double v) { return ref_round(v, 7, -126, 127, 0x7fc0); }

/* The op in double with the library's documented rules. */
static double ref_op(double a, double b, hvd_op_t op) {
  switch (op) {
  case HVD_SUM:
    return a + b;
  case HVD_PRODUCT:
    return a * b;
  case HVD_MIN:
    if (isnan(a) || isnan(b)) return NAN;
    if (a == b) return signbit(a) ? a : b;
    return a < b ? a : b;
  case HVD_MAX:
    if (isnan(a) || isnan(b)) return NAN;
    if (a == b) return signbit(a) ? b : a;
    return a > b ? a : b;
  default:
    cr_assert_fail("bad float op %d", op);
    return 0;
  }
}

static int64_t ref_iop(int64_t a, int64_t b, hvd_op_t op) {
  switch ((int)op) {
  case HVD_SUM:
    return (int64_t)((uint64_t)a + (uint64_t)b);
  case HVD_PRODUCT:
    return (int64_t)((uint64_t)a * (uint64_t)b);
  case HVD_MIN:
    return a < b ? a : b;
  case HVD_MAX:
    return a > b ? a : b;
  case HVD_OP_BAND:
    return a & b;
  case HVD_OP_BOR:
    return a | b;
  default:
    cr_assert_fail("bad int op %d", op);
    return 0;
  }
}

/* out = reference of element i of a op b. */
static void ref_elem(hvd_dtype_t dt, hvd_op_t op, const void *a, const void *b, size_t i,
                     void *out) {
  switch (dt) {
  case HVD_FLOAT16: {
    uint16_t r = ref_to_f16(ref_op(ref_f16_to_double(((const uint16_t *)a)[i]),
                                   ref_f16_to_double(((const uint16_t *)b)[i]), op));
    memcpy(out, &r, 2);
    break;
  }
  case HVD_BFLOAT16: {
    uint16_t r = ref_to_bf16(ref_op(ref_bf16_to_double(((const uint16_t *)a)[i]),
                                    ref_bf16_to_double(((const uint16_t *)b)[i]), op));
    memcpy(out, &r, 2);
    break;
  }
  case HVD_FLOAT32: {
    double r = ref_op(((const float *)a)[i], ((const float *)b)[i], op);
    float f = isnan(r) ? f32_of(0x7fc00000u) : (float)r;
    memcpy(out, &f, 4);
    break;
  }
  case HVD_FLOAT64: {
    double r = ref_op(((const double *)a)[i], ((const double *)b)[i], op);
    uint64_t u;
    memcpy(&u, &r, 8);
    if (isnan(r)) u = 0x7ff8000000000000ull;
    memcpy(out, &u, 8);
    break;
  }
  case HVD_INT8: {
    int8_t r = (int8_t)ref_iop(((const int8_t *)a)[i], ((const int8_t *)b)[i], op);
    memcpy(out, &r, 1);
    break;
  }
  case HVD_UINT8: {
    uint8_t r = (uint8_t)ref_iop(((const uint8_t *)a)[i], ((const uint8_t *)b)[i], op);
    memcpy(out, &r, 1);
    break;
  }
  case HVD_INT32: {
    int32_t r = (int32_t)ref_iop(((const int32_t *)a)[i], ((const int32_t *)b)[i], op);
    memcpy(out, &r, 4);
    break;
  }
  case HVD_INT64: {
    int64_t r = ref_iop(((const int64_t *)a)[i], ((const int64_t *)b)[i], op);
    memcpy(out, &r, 8);
    break;
  }
  default:
    cr_assert_fail("bad dtype");
  }
}

/* Special values, as double; converted exactly to each float type. */
static const double specials[] = {0.0, -0.0, INFINITY, -INFINITY, NAN, -NAN, 1.0, -1.0, 2.0};

static void put_special(hvd_dtype_t dt, void *buf, size_t i, double v) {
  switch (dt) {
  case HVD_FLOAT16:
    ((uint16_t *)buf)[i] = ref_to_f16(v);
    break;
  case HVD_BFLOAT16:
    ((uint16_t *)buf)[i] = ref_to_bf16(v);
    break;
  case HVD_FLOAT32:
    ((float *)buf)[i] = (float)v;
    break;
  default:
    ((double *)buf)[i] = v;
    break;
  }
}

/* Fill with values that exercise rounding and the special cases. */
static void fill(hvd_dtype_t dt, void *buf, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint64_t r = rnd();
    if (dt <= HVD_FLOAT64 && r % 8 == 0) { /* one in eight: +-0, +-inf, NaN, ... */
      put_special(dt, buf, i, specials[(r >> 8) % HVD_ARRAY_SIZE_T(specials)]);
      continue;
    }
    switch (dt) {
    case HVD_FLOAT16:
    case HVD_BFLOAT16: {
      uint16_t v = (uint16_t)r; /* uniform bit patterns: NaN, inf, subnormals, ties */
      if ((r >> 32) % 4 == 0) v = (uint16_t)(v & 0xc3ff) | (uint16_t)((r >> 40) & 0x3c00);
      ((uint16_t *)buf)[i] = v;
      break;
    }
    case HVD_FLOAT32: {
      uint32_t v = (uint32_t)r;
      switch ((r >> 32) % 4) {
      case 0: /* moderate magnitudes: sums round */
        v = (v & 0x807fffffu) | (uint32_t)(120 + (r >> 40) % 16) << 23;
        break;
      case 1: /* tiny: subnormal results */
        v &= 0x80ffffffu;
        break;
      default:
        break;
      }
      ((uint32_t *)buf)[i] = v;
      break;
    }
    case HVD_FLOAT64: {
      uint64_t v = r;
      if ((rnd() % 4) == 0) v = (v & 0x800fffffffffffffull) | (uint64_t)(1020 + r % 8) << 52;
      ((uint64_t *)buf)[i] = v;
      break;
    }
    case HVD_INT8:
    case HVD_UINT8:
      ((uint8_t *)buf)[i] = (uint8_t)r;
      break;
    case HVD_INT32:
      ((uint32_t *)buf)[i] = (r >> 40) % 3 == 0 ? (uint32_t)(r % 7) - 3 : (uint32_t)r;
      break;
    case HVD_INT64:
      ((uint64_t *)buf)[i] = (r >> 40) % 3 == 0 ? (uint64_t)(r % 7) - 3 : r;
      break;
    default:
      break;
    }
  }
}

static const hvd_op_t all_ops[] = {HVD_SUM, HVD_MIN, HVD_MAX, HVD_PRODUCT, HVD_OP_BAND,
                                   HVD_OP_BOR};

static void check(const char *isa, hvd_dtype_t dt, hvd_op_t op, const char *how,
                  const void *a, const void *b, const void *got, size_t n) {
  size_t es = hvd_dtype_size(dt);
  unsigned char want[8];
  for (size_t i = 0; i < n; i++) {
    ref_elem(dt, op, a, b, i, want);
    if (memcmp(want, (const char *)got + i * es, es) != 0) {
      uint64_t ga = 0, gb = 0, gg = 0, gw = 0;
      memcpy(&ga, (const char *)a + i * es, es);
      memcpy(&gb, (const char *)b + i * es, es);
      memcpy(&gg, (const char *)got + i * es, es);
      memcpy(&gw, want, es);
      cr_assert_fail("%s %s op %d (%s) n=%zu i=%zu: a=%#llx b=%#llx got=%#llx want=%#llx",
                     isa, hvd_dtype_name(dt), (int)op, how, n, i, (unsigned long long)ga,
                     (unsigned long long)gb, (unsigned long long)gg,
                     (unsigned long long)gw);
    }
  }
}

/* One kernel set, one dtype, every op, one length, both element offsets, out of place
 * and both in-place forms. */
static void run_case(const hvd_reduce_table_t *t, hvd_dtype_t dt, size_t n) {
  size_t es = hvd_dtype_size(dt);
  size_t bytes = (n + 1) * es;
  unsigned char *a = malloc(bytes + 64), *b = malloc(bytes + 64), *d = malloc(bytes + 64);
  unsigned char *a0 = malloc(bytes), *b0 = malloc(bytes);
  cr_assert(a && b && d && a0 && b0);
  for (size_t oi = 0; oi < HVD_ARRAY_SIZE_T(all_ops); oi++) {
    hvd_op_t op = all_ops[oi];
    hvd_reduce_fn fn = t->fn[dt][op];
    if (!hvd_reduce_supported(dt, op)) {
      cr_assert_null(fn, "%s: %s op %d should have no kernel", t->name, hvd_dtype_name(dt), op);
      continue;
    }
    cr_assert_not_null(fn, "%s: %s op %d has no kernel", t->name, hvd_dtype_name(dt), op);
    for (size_t off = 0; off <= 1; off++) {
      unsigned char *pa = a + off * es, *pb = b + off * es, *pd = d + off * es;
      fill(dt, pa, n);
      fill(dt, pb, n);
      memcpy(a0, pa, n * es);
      memcpy(b0, pb, n * es);
      memset(d, 0xa5, bytes + 64);
      fn(pd, pa, pb, n);
      check(t->name, dt, op, "out of place", a0, b0, pd, n);
      cr_assert(d[(n + off) * es] == 0xa5 && (off == 0 || d[0] == 0xa5),
                "%s wrote outside the buffer", t->name);
      cr_assert(memcmp(pa, a0, n * es) == 0 && memcmp(pb, b0, n * es) == 0,
                "inputs modified");
      fn(pa, pa, pb, n); /* dst == a */
      check(t->name, dt, op, "dst == a", a0, b0, pa, n);
      memcpy(pa, a0, n * es);
      fn(pb, pa, pb, n); /* dst == b */
      check(t->name, dt, op, "dst == b", a0, b0, pb, n);
    }
  }
  free(a);
  free(b);
  free(d);
  free(a0);
  free(b0);
}

static void run_isa(hvd_isa_t isa) {
  const hvd_reduce_table_t *t = hvd_reduce_table(isa);
  if (t == NULL) {
    cr_assert(!hvd_reduce_isa_available(isa));
    cr_skip_test("kernel set %d is not available on this CPU", (int)isa);
  }
  for (int dt = 0; dt < HVD_DTYPE_COUNT; dt++) {
    for (size_t n = 0; n <= 67; n++) run_case(t, (hvd_dtype_t)dt, n);
    run_case(t, (hvd_dtype_t)dt, 100003);
  }
}

Test(reduce, generic_matches_reference) { run_isa(HVD_ISA_GENERIC); }
Test(reduce, avx2_matches_reference) { run_isa(HVD_ISA_AVX2); }
Test(reduce, avx512_matches_reference) { run_isa(HVD_ISA_AVX512); }

/* The public entry points use the selected set; 0 elements never touch the buffers. */
Test(reduce, public_entry_points) {
  float a[37], b[37], d[37];
  for (int i = 0; i < 37; i++) {
    a[i] = (float)i;
    b[i] = (float)(100 - i);
  }
  hvd_reduce3(d, a, b, 37, HVD_FLOAT32, HVD_SUM);
  for (int i = 0; i < 37; i++) cr_assert_eq(d[i], 100.0f);
  hvd_reduce(a, b, 37, HVD_FLOAT32, HVD_MAX);
  for (int i = 0; i < 37; i++) cr_assert_eq(a[i], (float)(i < 50 ? 100 - i : i));
  hvd_reduce(NULL, NULL, 0, HVD_FLOAT32, HVD_SUM);
  hvd_reduce3(NULL, NULL, NULL, 0, HVD_INT8, HVD_PRODUCT);
  const char *isa = hvd_reduce_isa();
  cr_assert(strcmp(isa, "generic") == 0 || strcmp(isa, "avx2") == 0 ||
            strcmp(isa, "avx512") == 0);
}

Test(reduce, isa_env_override_generic) {
  setenv("HVD_REDUCE_ISA", "generic", 1);
  cr_assert_str_eq(hvd_reduce_isa(), "generic");
}

Test(reduce, isa_env_override_avx2) {
  setenv("HVD_REDUCE_ISA", "avx2", 1);
  cr_assert_str_eq(hvd_reduce_isa(), hvd_reduce_isa_available(HVD_ISA_AVX2) ? "avx2" : "generic");
}

Test(reduce, isa_env_override_bad_value_falls_back) {
  setenv("HVD_REDUCE_ISA", "sse9", 1);
  const char *want = hvd_reduce_isa_available(HVD_ISA_AVX512) ? "avx512"
                     : hvd_reduce_isa_available(HVD_ISA_AVX2) ? "avx2"
                                                              : "generic";
  cr_assert_str_eq(hvd_reduce_isa(), want);
}

Test(reduce, supported_pairs) {
  for (int dt = 0; dt < HVD_DTYPE_COUNT; dt++) {
    int is_int = dt >= HVD_INT8;
    for (int op = 0; op < HVD_OP_COUNT; op++) cr_assert(hvd_reduce_supported(dt, op));
    cr_assert_eq(hvd_reduce_supported(dt, HVD_OP_BAND), is_int);
    cr_assert_eq(hvd_reduce_supported(dt, HVD_OP_BOR), is_int);
  }
  cr_assert(!hvd_reduce_supported(HVD_DTYPE_COUNT, HVD_SUM));
  cr_assert(!hvd_reduce_supported((hvd_dtype_t)-1, HVD_SUM));
  cr_assert(!hvd_reduce_supported(HVD_FLOAT32, (hvd_op_t)(HVD_OP_BOR + 1)));
  cr_assert(!hvd_reduce_supported(HVD_FLOAT32, (hvd_op_t)-1));
}

/* ---- conversions --------------------------------------------------------------------- */

static const struct {
  uint32_t f32;
  uint16_t f16;
} f32_to_f16_cases[] = {
    {0x00000000u, 0x0000}, /* +0 */
    {0x80000000u, 0x8000}, /* -0 */
    {0x3f800000u, 0x3c00}, /* 1 */
    {0xc0000000u, 0xc000}, /* -2 */
    {0x477fe000u, 0x7bff}, /* 65504, the largest half */
    {0x477fefffu, 0x7bff}, /* just below the tie with 65536 */
    {0x477ff000u, 0x7c00}, /* 65520: tie, rounds to even = inf */
    {0x7f7fffffu, 0x7c00}, /* FLT_MAX overflows */
    {0x7f800000u, 0x7c00}, /* inf */
    {0xff800000u, 0xfc00}, /* -inf */
    {0x7fc00000u, 0x7e00}, /* canonical NaN */
    {0x7f800001u, 0x7e00}, /* signalling NaN, payload below the half's: quieted */
    {0xffffe000u, 0xffff}, /* -NaN with full half payload */
    {0x33800000u, 0x0001}, /* 2^-24: smallest subnormal */
    {0x33000000u, 0x0000}, /* 2^-25: tie between 0 and 1 -> 0 */
    {0x33000001u, 0x0001}, /* just above the tie */
    {0x32ffffffu, 0x0000}, /* just below */
    {0x33c00000u, 0x0002}, /* 3 * 2^-25: tie between 1 and 2 -> 2 */
    {0x34200000u, 0x0002}, /* 5 * 2^-25: tie between 2 and 3 -> 2 */
    {0x387fc000u, 0x03ff}, /* largest subnormal */
    {0x387fe000u, 0x0400}, /* tie between largest subnormal and 2^-14 -> 2^-14 (even) */
    {0x38800000u, 0x0400}, /* 2^-14 */
    {0x3f801000u, 0x3c00}, /* 1 + 2^-11: tie -> even 0x3c00 */
    {0x3f801001u, 0x3c01}, /* above the tie */
    {0x3f803000u, 0x3c02}, /* 1 + 3 * 2^-11: tie -> even 0x3c02 */
    {0x3f7ff000u, 0x3c00}, /* 1 - 2^-12: tie between 0x3bff and 0x3c00 -> 0x3c00 */
    {0x00000001u, 0x0000}, /* float32 subnormal */
    {0x80000001u, 0x8000},
};

Test(convert, f32_to_f16_table) {
  for (size_t i = 0; i < HVD_ARRAY_SIZE_T(f32_to_f16_cases); i++) {
    uint16_t got = hvd_f32_to_f16(f32_of(f32_to_f16_cases[i].f32));
    cr_assert_eq(got, f32_to_f16_cases[i].f16, "f32 %#x -> %#x, want %#x",
                 f32_to_f16_cases[i].f32, got, f32_to_f16_cases[i].f16);
  }
}

Test(convert, f16_to_f32_table) {
  static const struct {
    uint16_t f16;
    uint32_t f32;
  } c[] = {
      {0x0000, 0x00000000u}, {0x8000, 0x80000000u}, {0x3c00, 0x3f800000u},
      {0x0001, 0x33800000u}, {0x03ff, 0x387fc000u}, {0x0400, 0x38800000u},
      {0x7bff, 0x477fe000u}, {0x7c00, 0x7f800000u}, {0xfc00, 0xff800000u},
      {0x7e00, 0x7fc00000u}, {0x7c01, 0x7fc02000u}, /* sNaN quieted */
      {0xfe01, 0xffc02000u},
  };
  for (size_t i = 0; i < HVD_ARRAY_SIZE_T(c); i++)
    cr_assert_eq(bits_of_f32(hvd_f16_to_f32(c[i].f16)), c[i].f32, "f16 %#x", c[i].f16);
}

/* Every half value: widening is exact and narrowing gives it back. */
Test(convert, f16_roundtrip_all) {
  for (uint32_t h = 0; h < 0x10000; h++) {
    float f = hvd_f16_to_f32((uint16_t)h);
    double want = ref_f16_to_double((uint16_t)h);
    if (isnan(want)) {
      cr_assert(isnan(f));
      cr_assert_eq(hvd_f32_to_f16(f), h | 0x0200, "NaN %#x", h);
    } else {
      cr_assert_eq((double)f, want, "f16 %#x", h);
      cr_assert_eq(!!signbit(f), !!(h & 0x8000));
      cr_assert_eq(hvd_f32_to_f16(f), h, "f16 %#x", h);
    }
  }
}

Test(convert, bf16_table) {
  static const struct {
    uint32_t f32;
    uint16_t bf16;
  } c[] = {
      {0x3f800000u, 0x3f80}, /* 1 */
      {0x3f808000u, 0x3f80}, /* 1 + 2^-8: tie -> even */
      {0x3f818000u, 0x3f82}, /* 1 + 3 * 2^-8: tie -> even (up) */
      {0x3f808001u, 0x3f81}, /* above the tie */
      {0x7f7fffffu, 0x7f80}, /* FLT_MAX rounds to inf */
      {0x7f7f7fffu, 0x7f7f}, /* below the tie with inf */
      {0x7f7f8000u, 0x7f80}, /* tie between 0x7f7f and inf: even = inf */
      {0x7f800000u, 0x7f80}, {0xff800000u, 0xff80},
      {0x7f800001u, 0x7fc0}, /* sNaN with payload only in the low bits: quieted */
      {0xffc00001u, 0xffc0}, {0x7fffffffu, 0x7fff},
      {0x00008000u, 0x0000}, /* subnormal tie between 0 and 1 */
      {0x00018000u, 0x0002}, /* subnormal tie between 1 and 2 -> 2 */
      {0x00010000u, 0x0001}, {0x807fffffu, 0x8080}, /* rounds up to -FLT_MIN */
      {0x80000000u, 0x8000},
  };
  for (size_t i = 0; i < HVD_ARRAY_SIZE_T(c); i++)
    cr_assert_eq(hvd_f32_to_bf16(f32_of(c[i].f32)), c[i].bf16, "f32 %#x -> %#x, want %#x",
                 c[i].f32, hvd_f32_to_bf16(f32_of(c[i].f32)), c[i].bf16);
  for (uint32_t h = 0; h < 0x10000; h++) {
    float f = hvd_bf16_to_f32((uint16_t)h);
    double want = ref_bf16_to_double((uint16_t)h);
    if (isnan(want))
      cr_assert_eq(hvd_f32_to_bf16(f), h | 0x0040);
    else
      cr_assert_eq(hvd_f32_to_bf16(f), h, "bf16 %#x", h);
  }
}

/* Narrowing agrees with the independent reference over a sweep of float32 values. */
Test(convert, narrowing_matches_reference_sweep) {
  for (uint64_t u = 0; u < 0x100000000ull; u += 4099) {
    float f = f32_of((uint32_t)u);
    if (isnan(f)) continue;
    cr_assert_eq(hvd_f32_to_f16(f), ref_to_f16(f), "f32 %#llx", (unsigned long long)u);
    cr_assert_eq(hvd_f32_to_bf16(f), ref_to_bf16(f), "f32 %#llx", (unsigned long long)u);
  }
  /* every finite half-way point and its neighbours (65520 is in the table) */
  for (uint32_t h = 0; h < 0x7bff; h++) {
    double lo = ref_f16_to_double((uint16_t)h), hi = ref_f16_to_double((uint16_t)(h + 1));
    float mid = (float)((lo + hi) / 2); /* exact in float32 */
    for (int d = -1; d <= 1; d++) {
      float f = f32_of(bits_of_f32(mid) + (uint32_t)d);
      cr_assert_eq(hvd_f32_to_f16(f), ref_to_f16(f), "f32 %#x", bits_of_f32(f));
      cr_assert_eq(hvd_f32_to_f16(-f), ref_to_f16(-f), "f32 %#x", bits_of_f32(-f));
    }
  }
}

#if HAVE_X86
__attribute__((target("f16c"))) static void f16c_compare(void) {
  for (uint32_t h = 0; h < 0x10000; h++) {
    float hw = _cvtsh_ss((unsigned short)h);
    cr_assert_eq(bits_of_f32(hvd_f16_to_f32((uint16_t)h)), bits_of_f32(hw), "f16 %#x", h);
  }
  for (uint64_t u = 0; u < 0x100000000ull; u += 997) {
    float f = f32_of((uint32_t)u);
    unsigned short hw = _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
    cr_assert_eq(hvd_f32_to_f16(f), hw, "f32 %#llx", (unsigned long long)u);
  }
}
#endif

/* The scalar conversions agree with the F16C instructions (when the CPU has them). */
Test(convert, f16_matches_f16c) {
#if HAVE_X86
  unsigned a, b, c, d; /* CPUID.1:ECX.F16C (clang's __builtin_cpu_supports lacks "f16c") */
  if (__get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C)) {
    f16c_compare();
    return;
  }
#endif
  cr_skip_test("no F16C on this CPU");
}

/* ---- explicit corner cases ------------------------------------------------------------ */

Test(reduce, integer_wraparound) {
  int8_t a8[] = {127, -128, -128, 100, 16}, b8[] = {1, -1, -1, 100, 16}, d8[5];
  hvd_reduce3(d8, a8, b8, 5, HVD_INT8, HVD_SUM);
  cr_assert(d8[0] == -128 && d8[1] == 127 && d8[3] == -56);
  hvd_reduce3(d8, a8, b8, 5, HVD_INT8, HVD_PRODUCT);
  cr_assert(d8[1] == -128 && d8[3] == 16 && d8[4] == 0);
  uint8_t u8a[] = {255, 200}, u8b[] = {1, 2}, u8d[2];
  hvd_reduce3(u8d, u8a, u8b, 2, HVD_UINT8, HVD_SUM);
  cr_assert(u8d[0] == 0 && u8d[1] == 202);
  hvd_reduce3(u8d, u8a, u8b, 2, HVD_UINT8, HVD_MIN);
  cr_assert(u8d[0] == 1 && u8d[1] == 2);
  int32_t a32[] = {INT32_MAX, INT32_MIN, 65536}, b32[] = {1, -1, 65536}, d32[3];
  hvd_reduce3(d32, a32, b32, 3, HVD_INT32, HVD_SUM);
  cr_assert(d32[0] == INT32_MIN && d32[1] == INT32_MAX);
  hvd_reduce3(d32, a32, b32, 3, HVD_INT32, HVD_PRODUCT);
  cr_assert(d32[2] == 0 && d32[1] == INT32_MIN);
  int64_t a64[] = {INT64_MAX, INT64_MIN, 1ll << 32}, b64[] = {1, -1, (1ll << 32) + 3}, d64[3];
  hvd_reduce3(d64, a64, b64, 3, HVD_INT64, HVD_SUM);
  cr_assert(d64[0] == INT64_MIN && d64[1] == INT64_MAX);
  hvd_reduce3(d64, a64, b64, 3, HVD_INT64, HVD_PRODUCT);
  cr_assert(d64[1] == INT64_MIN && d64[2] == 3ll << 32);
}

Test(reduce, float_nan_and_signed_zero_rules) {
  float nan_neg = f32_of(0xffc00001u), pz = 0.0f, nz = -0.0f;
  float a[] = {nan_neg, 1.0f, pz, nz, INFINITY}, b[] = {1.0f, nan_neg, nz, pz, -INFINITY};
  float d[5];
  hvd_reduce3(d, a, b, 5, HVD_FLOAT32, HVD_MIN);
  cr_assert_eq(bits_of_f32(d[0]), 0x7fc00000u);
  cr_assert_eq(bits_of_f32(d[1]), 0x7fc00000u);
  cr_assert_eq(bits_of_f32(d[2]), 0x80000000u);
  cr_assert_eq(bits_of_f32(d[3]), 0x80000000u);
  hvd_reduce3(d, a, b, 5, HVD_FLOAT32, HVD_MAX);
  cr_assert_eq(bits_of_f32(d[2]), 0x00000000u);
  cr_assert_eq(bits_of_f32(d[3]), 0x00000000u);
  hvd_reduce3(d, a, b, 5, HVD_FLOAT32, HVD_SUM);
  cr_assert_eq(bits_of_f32(d[4]), 0x7fc00000u, "inf + -inf is the canonical NaN");
}

/* ---- scale ----------------------------------------------------------------------------- */

Test(scale, integers_truncate_and_saturate) {
  int32_t i32[] = {7, -7, 1, -1, INT32_MAX, INT32_MIN};
  hvd_scale(i32, 6, HVD_INT32, 0.5);
  cr_assert(i32[0] == 3 && i32[1] == -3 && i32[2] == 0 && i32[3] == 0);
  cr_assert(i32[4] == INT32_MAX / 2 && i32[5] == INT32_MIN / 2);
  int8_t i8[] = {100, -100, 3};
  hvd_scale(i8, 3, HVD_INT8, 2.0);
  cr_assert(i8[0] == 127 && i8[1] == -128 && i8[2] == 6);
  uint8_t u8[] = {200, 3};
  hvd_scale(u8, 2, HVD_UINT8, 2.0);
  cr_assert(u8[0] == 255 && u8[1] == 6);
  hvd_scale(u8, 2, HVD_UINT8, -1.0);
  cr_assert(u8[0] == 0 && u8[1] == 0);
  int64_t i64[] = {INT64_MAX, INT64_MIN, 9, (1ll << 53) + 1};
  hvd_scale(i64, 4, HVD_INT64, 1.0); /* exact no-op */
  cr_assert(i64[0] == INT64_MAX && i64[3] == (1ll << 53) + 1);
  hvd_scale(i64, 4, HVD_INT64, 4.0);
  cr_assert(i64[0] == INT64_MAX && i64[1] == INT64_MIN && i64[2] == 36);
  int32_t z[] = {5};
  hvd_scale(z, 1, HVD_INT32, NAN);
  cr_assert(z[0] == 0);
  hvd_scale(NULL, 0, HVD_INT32, 3.0);
}

Test(scale, floats) {
  float f[] = {3.0f, -1.0f, 1e-45f, INFINITY};
  hvd_scale(f, 4, HVD_FLOAT32, 1.0 / 3.0);
  cr_assert_eq(f[0], (float)(3.0 * (1.0 / 3.0)));
  cr_assert_eq(f[1], (float)(-1.0 / 3.0));
  cr_assert_eq(f[3], INFINITY);
  double g[] = {10.0, INFINITY};
  hvd_scale(g, 2, HVD_FLOAT64, 0.0);
  cr_assert_eq(g[0], 0.0);
  cr_assert_eq(hvd_f64_bits(g[1]), 0x7ff8000000000000ull, "inf * 0 is the canonical NaN");
  uint16_t h[] = {0x4200 /* 3 */, 0x3c00 /* 1 */, 0x0001};
  hvd_scale(h, 3, HVD_FLOAT16, 0.25);
  cr_assert_eq(h[0], 0x3a00); /* 0.75 */
  cr_assert_eq(h[1], 0x3400); /* 0.25 */
  cr_assert_eq(h[2], 0x0000); /* 2^-26: below the half-way point -> 0 */
  uint16_t bh[] = {0x4040 /* 3 */, 0x7f80};
  hvd_scale(bh, 2, HVD_BFLOAT16, 0.5);
  cr_assert_eq(bh[0], 0x3fc0); /* 1.5 */
  cr_assert_eq(bh[1], 0x7f80);
  /* average of 3 ranks on a float16 sum: correctly rounded through float32 */
  uint16_t s[] = {0x4900 /* 10 */};
  hvd_scale(s, 1, HVD_FLOAT16, 1.0 / 3);
  cr_assert_eq(s[0], ref_to_f16(10.0f * (float)(1.0 / 3)));
}

/* Every kernel set's float32/float64 scaling gives the bits of the defining scalar
 * expression ((float)((double)x * factor), canonical NaN; hvd_prod_f64) for factors
 * that are floats themselves (the single-multiply path) and factors that are not,
 * special values and every tail length. */
static float ref_scale_f32(float x, double factor) {
  float r = (float)((double)x * factor);
  return __builtin_isnan(r) ? hvd_qnan_f32() : r;
}

static void scale_isa(hvd_isa_t isa) {
  const hvd_reduce_table_t *t = hvd_reduce_table(isa);
  if (t == NULL) cr_skip_test("kernel set %d is not available on this CPU", (int)isa);
  cr_assert_not_null(t->scale_f32);
  cr_assert_not_null(t->scale_f64);
  const double factors[] = {0.5, 0.25, 1.0 / 3.0, 1.0 / 7.0, -2.0, 3.0, 1e30, 1e-30, 0x1p-140,
                            0.0, -0.0, INFINITY, NAN, 0.1, 1.0000001};
  const float sc_specials[] = {0.0f, -0.0f, 1.0f, -1.0f, 1e-45f, -1e-40f, FLT_MIN, FLT_MAX,
                            -FLT_MAX, INFINITY, -INFINITY, NAN, 3.0f, 0.1f};
  enum { N = 1000 };
  float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
  double *u = malloc(N * sizeof *u), *v = malloc(N * sizeof *v);
  cr_assert(x && y && u && v);
  uint32_t seed = 12345;
  for (size_t i = 0; i < N; i++) {
    seed = seed * 1664525u + 1013904223u;
    if (i % 5 == 0) x[i] = sc_specials[(seed >> 8) % HVD_ARRAY_SIZE_T(sc_specials)];
    else if (i % 5 == 1) { /* any bit pattern, NaN payloads included */
      uint32_t bits = seed;
      memcpy(&x[i], &bits, sizeof bits);
    } else x[i] = (float)((int32_t)seed) * 1e-6f;
    u[i] = i % 7 == 0 ? (double)sc_specials[i % HVD_ARRAY_SIZE_T(sc_specials)]
                      : (double)x[i] * 1.37e5;
  }
  for (size_t fi = 0; fi < HVD_ARRAY_SIZE_T(factors); fi++) {
    const double f = factors[fi];
    for (size_t n = 0; n <= N; n = n < 70 ? n + 1 : N) {
      memcpy(y, x, N * sizeof *y);
      t->scale_f32(y, n, f);
      for (size_t i = 0; i < N; i++) {
        float want = i < n ? ref_scale_f32(x[i], f) : x[i];
        cr_assert(hvd_f32_bits(y[i]) == hvd_f32_bits(want),
                  "%s scale_f32 factor %g n %zu [%zu]: %08x * -> %08x, want %08x", t->name, f, n,
                  i, hvd_f32_bits(x[i]), hvd_f32_bits(y[i]), hvd_f32_bits(want));
      }
      memcpy(v, u, N * sizeof *v);
      t->scale_f64(v, n, f);
      for (size_t i = 0; i < N; i++) {
        double want = i < n ? hvd_prod_f64(u[i], f) : u[i];
        cr_assert(hvd_f64_bits(v[i]) == hvd_f64_bits(want),
                  "%s scale_f64 factor %g n %zu [%zu]", t->name, f, n, i);
      }
      if (n == N) break;
    }
  }
  free(x);
  free(y);
  free(u);
  free(v);
}

/* float16 / bfloat16 scaling: every one of the 65536 values, every tail length up to
 * 40, against the defining scalar expression (hvd_scale_f16 / hvd_scale_bf16). */
static void scale_half_isa(hvd_isa_t isa) {
  const hvd_reduce_table_t *t = hvd_reduce_table(isa);
  if (t == NULL) cr_skip_test("kernel set %d is not available on this CPU", (int)isa);
  cr_assert_not_null(t->scale_f16);
  cr_assert_not_null(t->scale_bf16);
  const float factors[] = {0.5f, 0.25f, 1.0f / 3.0f, -2.0f, 1e5f, 1e-9f, 0.0f, INFINITY, NAN};
  enum { N = 65536 };
  uint16_t *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
  cr_assert(x && y);
  for (size_t i = 0; i < N; i++) x[i] = (uint16_t)(i * 40503u); /* every value, shuffled */
  for (int bf = 0; bf < 2; bf++) {
    hvd_scale_half_fn fn = bf ? t->scale_bf16 : t->scale_f16;
    for (size_t fi = 0; fi < HVD_ARRAY_SIZE_T(factors); fi++) {
      const float f = factors[fi];
      for (size_t n = 0; n <= N; n = n < 40 ? n + 1 : N) {
        memcpy(y, x, N * sizeof *y);
        fn(y, n, f);
        for (size_t i = 0; i < N; i++) {
          uint16_t want = i >= n ? x[i] : bf ? hvd_scale_bf16(x[i], f) : hvd_scale_f16(x[i], f);
          cr_assert(y[i] == want, "%s scale_%s factor %g n %zu [%zu]: %04x -> %04x, want %04x",
                    t->name, bf ? "bf16" : "f16", (double)f, n, i, x[i], y[i], want);
        }
        if (n == N) break;
      }
    }
  }
  free(x);
  free(y);
}

Test(scale, half_generic_matches_scalar) { scale_half_isa(HVD_ISA_GENERIC); }
Test(scale, half_avx2_matches_scalar) { scale_half_isa(HVD_ISA_AVX2); }
Test(scale, half_avx512_matches_scalar) { scale_half_isa(HVD_ISA_AVX512); }

Test(scale, generic_matches_scalar) { scale_isa(HVD_ISA_GENERIC); }
Test(scale, avx2_matches_scalar) { scale_isa(HVD_ISA_AVX2); }
Test(scale, avx512_matches_scalar) { scale_isa(HVD_ISA_AVX512); }
