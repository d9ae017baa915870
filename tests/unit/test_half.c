/*
 * hvd-train's float16 conversions (tools/hvd-train/half.c, --fp16-allreduce): the F16C
 * path and the portable path give the same bits for every float16 and for a dense
 * sample of float32 bit patterns, float16 -> float32 -> float16 is the identity, and
 * hand-checked values (ties to even, overflow, subnormals) come out right.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "train.h"

static float f_of(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}
static uint32_t bits_of(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

Test(half, every_half_both_paths_and_round_trip) {
  static uint16_t h[65536], back[65536];
  static float fast[65536], slow[65536];
  for (uint32_t i = 0; i < 65536; i++) h[i] = (uint16_t)i;
  half_to_float(fast, h, 65536, 0);
  half_to_float(slow, h, 65536, 1);
  for (uint32_t i = 0; i < 65536; i++)
    cr_assert_eq(bits_of(fast[i]), bits_of(slow[i]), "half %04x: F16C %08x, portable %08x", i,
                 bits_of(fast[i]), bits_of(slow[i]));
  half_from_float(back, fast, 65536, 0);
  for (uint32_t i = 0; i < 65536; i++) {
    const int nan = (i & 0x7c00u) == 0x7c00u && (i & 0x3ffu) != 0;
    if (nan)
      cr_assert(isnan(fast[i]) && (back[i] & 0x7e00u) == 0x7e00u, "NaN %04x -> %04x", i, back[i]);
    else
      cr_assert_eq(back[i], h[i], "half %04x -> %a -> %04x", i, (double)fast[i], back[i]);
  }
}

Test(half, float_sample_both_paths) {
  enum { N = 1 << 16 };
  static float src[N];
  static uint16_t fast[N], slow[N];
  /* 4099 (a prime) apart: every exponent, about a million patterns, 16 batches */
  uint64_t u = 0;
  for (int batch = 0; u < (1ull << 32); batch++) {
    size_t n = 0;
    for (; n < N && u < (1ull << 32); n++, u += 4099) src[n] = f_of((uint32_t)u);
    half_from_float(fast, src, n, 0);
    half_from_float(slow, src, n, 1);
    for (size_t i = 0; i < n; i++)
      cr_assert_eq(fast[i], slow[i], "float %08x: F16C %04x, portable %04x", bits_of(src[i]),
                   fast[i], slow[i]);
  }
}

Test(half, known_values) {
  const struct {
    float f;
    uint16_t h;
  } cases[] = {
      {1.0f, 0x3c00},
      {-2.0f, 0xc000},
      {0.0f, 0x0000},
      {-0.0f, 0x8000},
      {65504.0f, 0x7bff},           /* largest half */
      {65519.99f, 0x7bff},          /* just under the rounding point */
      {65520.0f, 0x7c00},           /* rounds to infinity */
      {INFINITY, 0x7c00},
      {0x1p-14f, 0x0400},           /* smallest normal */
      {0x1p-24f, 0x0001},           /* smallest subnormal */
      {0x1p-25f, 0x0000},           /* a tie: to even, zero */
      {0x1.8p-25f, 0x0001},         /* above the tie */
      {1.0f + 0x1p-11f, 0x3c00},    /* tie between 0x3c00 and 0x3c01: even */
      {1.0f + 0x1.8p-10f, 0x3c02},  /* tie between 0x3c01 and 0x3c02: even */
      {0x1.ffcp-15f, 0x0400},       /* the largest subnormal's tie upwards: to the normal */
  };
  enum { K = sizeof cases / sizeof cases[0] };
  float f[K];
  for (size_t k = 0; k < K; k++) f[k] = cases[k].f;
  for (int portable = 0; portable < 2; portable++) {
    uint16_t h[K]; /* all at once: the first 8 (F16C) and the tail */
    half_from_float(h, f, K, portable);
    for (size_t k = 0; k < K; k++)
      cr_assert_eq(h[k], cases[k].h, "%a (portable %d): got %04x want %04x", (double)f[k],
                   portable, h[k], cases[k].h);
  }
  /* 8 at a time and the tail: 11 values through both loops */
  float v[11];
  uint16_t h[11];
  for (int i = 0; i < 11; i++) v[i] = (float)i - 5.5f;
  half_from_float(h, v, 11, 0);
  float w[11];
  half_to_float(w, h, 11, 0);
  for (int i = 0; i < 11; i++)
    cr_assert_eq(w[i], v[i], "%d: %g -> %g", i, (double)v[i], (double)w[i]);
}
