/* Names and sizes of the public element types and reduction ops (include/hvd.h). */
#include <stdint.h>

#include "hvd.h"

static const struct {
  const char *name;
  size_t size;
} dtype_info[HVD_DTYPE_COUNT] = {
    [HVD_FLOAT16] = {"float16", 2}, [HVD_BFLOAT16] = {"bfloat16", 2},
    [HVD_FLOAT32] = {"float32", 4}, [HVD_FLOAT64] = {"float64", 8},
    [HVD_INT8] = {"int8", 1},       [HVD_UINT8] = {"uint8", 1},
    [HVD_INT32] = {"int32", 4},     [HVD_INT64] = {"int64", 8},
};

static const char *const op_names[HVD_OP_COUNT] = {
    [HVD_SUM] = "sum", [HVD_AVERAGE] = "average", [HVD_MIN] = "min",
    [HVD_MAX] = "max", [HVD_PRODUCT] = "product",
};

/* The enums are unsigned or int depending on the compiler: compare as unsigned so a
 * negative value is out of range too. */
HVD_EXPORT size_t hvd_dtype_size(hvd_dtype_t dtype) {
  return (unsigned)dtype < HVD_DTYPE_COUNT ? dtype_info[dtype].size : 0;
}

HVD_EXPORT const char *hvd_dtype_name(hvd_dtype_t dtype) {
  return (unsigned)dtype < HVD_DTYPE_COUNT ? dtype_info[dtype].name : "unknown";
}

HVD_EXPORT const char *hvd_op_name(hvd_op_t op) {
  return (unsigned)op < HVD_OP_COUNT ? op_names[op] : "unknown";
}
