/* Public names and sizes (collectives/dtype.c) and hvd_status_string (common/status.c). */
#include <criterion/criterion.h>
#include <string.h>

#include "hvd.h"

Test(dtype, sizes_and_names) {
  static const struct {
    hvd_dtype_t dt;
    size_t size;
    const char *name;
  } want[] = {
      {HVD_FLOAT16, 2, "float16"}, {HVD_BFLOAT16, 2, "bfloat16"}, {HVD_FLOAT32, 4, "float32"},
      {HVD_FLOAT64, 8, "float64"}, {HVD_INT8, 1, "int8"},         {HVD_UINT8, 1, "uint8"},
      {HVD_INT32, 4, "int32"},     {HVD_INT64, 8, "int64"},
  };
  cr_assert_eq(sizeof want / sizeof want[0], HVD_DTYPE_COUNT);
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    cr_assert_eq(hvd_dtype_size(want[i].dt), want[i].size);
    cr_assert_str_eq(hvd_dtype_name(want[i].dt), want[i].name);
  }
  cr_assert_eq(hvd_dtype_size(HVD_DTYPE_COUNT), 0);
  cr_assert_eq(hvd_dtype_size((hvd_dtype_t)-1), 0);
  cr_assert_str_eq(hvd_dtype_name(HVD_DTYPE_COUNT), "unknown");
  cr_assert_str_eq(hvd_dtype_name((hvd_dtype_t)-7), "unknown");
}

Test(dtype, op_names) {
  cr_assert_str_eq(hvd_op_name(HVD_SUM), "sum");
  cr_assert_str_eq(hvd_op_name(HVD_AVERAGE), "average");
  cr_assert_str_eq(hvd_op_name(HVD_MIN), "min");
  cr_assert_str_eq(hvd_op_name(HVD_MAX), "max");
  cr_assert_str_eq(hvd_op_name(HVD_PRODUCT), "product");
  cr_assert_str_eq(hvd_op_name(HVD_OP_COUNT), "unknown");
  cr_assert_str_eq(hvd_op_name((hvd_op_t)-1), "unknown");
}

Test(status, strings_come_from_the_map) {
#define CHECK_(name, value, text)                                                       \
  cr_assert_str_eq(hvd_status_string(HVD_##name), text);                               \
  cr_assert_eq((int)HVD_##name, value);
  HVD_STATUS_MAP(CHECK_)
#undef CHECK_
  cr_assert_str_eq(hvd_status_string((hvd_status_t)12345), "unknown status");
  cr_assert_str_eq(hvd_status_string((hvd_status_t)-999), "unknown status");
}
