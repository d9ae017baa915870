/* hvd_status_string(): the text column of HVD_STATUS_MAP (include/hvd.h). */
#include "hvd.h"

HVD_EXPORT const char *hvd_status_string(hvd_status_t status) {
  switch (status) {
#define HVD_STATUS_STR_(name, value, text)                                             \
  case HVD_##name:                                                                     \
    return text;
    HVD_STATUS_MAP(HVD_STATUS_STR_)
#undef HVD_STATUS_STR_
  }
  return "unknown status";
}
