/*
 * Levelled logging to stderr. The level comes from HVD_LOG_LEVEL (or HOROVOD_LOG_LEVEL):
 * trace, debug, info, warning (default), error, fatal. Lines look like
 *   [hvd 1][warning] transport: /dev/shm too small for shm, using tcp;ofi_rxm
 * where "1" is the prefix set with hvd_log_set_prefix() (the rank, or a tool name).
 * Logging is process-wide (like FI_LOG_LEVEL): the level and prefix are set once at
 * start-up and only read afterwards, so the macros are thread-safe.
 */
#ifndef HVD_COMMON_LOG_H
#define HVD_COMMON_LOG_H

#include <stdarg.h>

typedef enum {
  HVD_LOG_TRACE = 0,
  HVD_LOG_DEBUG,
  HVD_LOG_INFO,
  HVD_LOG_WARNING,
  HVD_LOG_ERROR,
  HVD_LOG_FATAL,
  HVD_LOG_NONE
} hvd_log_level_t;

/* Parse a level name; returns -1 if it is not one. */
int hvd_log_parse_level(const char *s);
/* Read HVD_LOG_LEVEL / HOROVOD_LOG_LEVEL once; returns -1 (and keeps the old level)
 * if the value does not parse. */
int hvd_log_init_from_env(void);
void hvd_log_set_level(hvd_log_level_t level);
hvd_log_level_t hvd_log_get_level(void);
/* Prefix shown after "hvd" in every line (copied, up to 31 characters). */
void hvd_log_set_prefix(const char *prefix);

void hvd_log_write(hvd_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define HVD_LOG(level, ...)                                                            \
  do {                                                                                 \
    if ((level) >= hvd_log_get_level()) hvd_log_write((level), __VA_ARGS__);           \
  } while (0)
#define HVD_TRACE(...) HVD_LOG(HVD_LOG_TRACE, __VA_ARGS__)
#define HVD_DEBUG(...) HVD_LOG(HVD_LOG_DEBUG, __VA_ARGS__)
#define HVD_INFO(...) HVD_LOG(HVD_LOG_INFO, __VA_ARGS__)
#define HVD_WARN(...) HVD_LOG(HVD_LOG_WARNING, __VA_ARGS__)
#define HVD_ERROR(...) HVD_LOG(HVD_LOG_ERROR, __VA_ARGS__)

#endif
