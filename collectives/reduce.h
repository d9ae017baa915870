/*
 * Reduction kernels: dst[i] = dst[i] (op) src[i] for i < count.
 * Ops: sum, min, max, product for every dtype; band/bor (bitwise) for integer types,
 * used internally (bit vectors). float16/bfloat16 are computed in float32 and rounded
 * to nearest even. AVERAGE is not a kernel: it is SUM followed by a scale.
 */
#ifndef HVD_COLLECTIVES_REDUCE_H
#define HVD_COLLECTIVES_REDUCE_H

#include <stddef.h>

#include "hvd.h"

/* Internal ops beyond the public hvd_op_t values. */
#define HVD_OP_BAND ((hvd_op_t)(HVD_OP_COUNT + 0))
#define HVD_OP_BOR ((hvd_op_t)(HVD_OP_COUNT + 1))

/* 1 if the (dtype, op) pair is supported (HVD_AVERAGE counts as supported). */
int hvd_reduce_supported(hvd_dtype_t dtype, hvd_op_t op);
/* dst op= src. Caller guarantees supported(dtype, op) and op != AVERAGE. */
void hvd_reduce(void *dst, const void *src, size_t count, hvd_dtype_t dtype, hvd_op_t op);
/* dst = a op b (out of place; dst may equal a or b). */
void hvd_reduce3(void *dst, const void *a, const void *b, size_t count, hvd_dtype_t dtype,
                 hvd_op_t op);
/* buf[i] *= factor (integers: truncating toward zero after the product in double). */
void hvd_scale(void *buf, size_t count, hvd_dtype_t dtype, double factor);

/* dst <- src, bytes long, with streaming (non-temporal) stores on x86-64 (a plain
 * memcpy elsewhere): the written lines go towards memory without being read first and
 * are dropped from every cache, the other cores' included, so a writer does not wait
 * for lines another core holds, and a reader on another core fetches them from memory
 * instead of from this core's cache (collectives/allreduce_shm.c, "Slot stores").
 * The stores are weakly ordered: call hvd_streaming_fence() before publishing them. */
void hvd_copy_streaming(void *dst, const void *src, size_t bytes);
/* Orders every earlier streaming store before any later store (sfence). */
void hvd_streaming_fence(void);

/* Accepted values of HVD_REDUCE_ISA (read once per process, at the first reduction;
 * the runtime's settings table checks it at init). */
#define HVD_REDUCE_ISA_CHOICES "auto, generic, avx2, avx512"

/* Name of the kernel set picked at run time ("avx512", "avx2", "generic"). */
const char *hvd_reduce_isa(void);

#endif
