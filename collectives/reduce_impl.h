/*
 * Kernel tables behind collectives/reduce.h (private to collectives/ and its tests).
 *
 * A kernel computes dst[i] = a[i] op b[i] for i < n; dst may be a or b (exactly, not
 * partially overlapping). Buffers need only element alignment. Each ISA has one
 * constant table indexed [dtype][op] (op: an hvd_op_t or HVD_OP_BAND / HVD_OP_BOR;
 * unsupported pairs and HVD_AVERAGE are NULL). reduce.c picks one table once.
 */
#ifndef HVD_COLLECTIVES_REDUCE_IMPL_H
#define HVD_COLLECTIVES_REDUCE_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "collectives/reduce.h"

typedef void (*hvd_reduce_fn)(void *dst, const void *a, const void *b, size_t n);

#define HVD_REDUCE_OPS ((int)HVD_OP_COUNT + 2) /* public ops + band + bor */

/* p[i] = p[i] * factor for i < n, the product taken in double precision and rounded
 * once to the element type, NaN canonical (hvd_scale's float32 and float64 rules). */
typedef void (*hvd_scale_f32_fn)(float *p, size_t n, double factor);
typedef void (*hvd_scale_f64_fn)(double *p, size_t n, double factor);
/* The same for float16 / bfloat16: widened to float32, times the factor (a float),
 * NaN canonical, rounded back to nearest even (hvd_scale_f16 / hvd_scale_bf16). */
typedef void (*hvd_scale_half_fn)(uint16_t *p, size_t n, float factor);

typedef struct hvd_reduce_table {
  const char *name;
  hvd_reduce_fn fn[HVD_DTYPE_COUNT][HVD_REDUCE_OPS];
  hvd_scale_f32_fn scale_f32;
  hvd_scale_f64_fn scale_f64;
  hvd_scale_half_fn scale_f16, scale_bf16;
} hvd_reduce_table_t;

typedef enum {
  HVD_ISA_GENERIC = 0,
  HVD_ISA_AVX2,   /* AVX2 + F16C */
  HVD_ISA_AVX512, /* AVX-512 F + BW */
  HVD_ISA_COUNT
} hvd_isa_t;

extern const hvd_reduce_table_t hvd_reduce_table_generic;
/* Defined only on x86-64 with GCC-compatible compilers; use them only after checking
 * hvd_reduce_isa_available(). */
extern const hvd_reduce_table_t hvd_reduce_table_avx2;
extern const hvd_reduce_table_t hvd_reduce_table_avx512;

/* 1 if this CPU (and OS) can run the kernel set. */
int hvd_reduce_isa_available(hvd_isa_t isa);
/* The table of one kernel set, or NULL if it is not available here. */
const hvd_reduce_table_t *hvd_reduce_table(hvd_isa_t isa);

#endif
