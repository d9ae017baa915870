/*
 * hvd_err_t: a fixed-size message buffer that lower layers fill when they fail, so the
 * caller can decide what to say (the lower layers themselves do not print).
 */
#ifndef HVD_COMMON_ERR_H
#define HVD_COMMON_ERR_H

#include <stdarg.h>
#include <stddef.h>

#define HVD_ERR_MSG_MAX 512

typedef struct hvd_err {
  char msg[HVD_ERR_MSG_MAX];
} hvd_err_t;

/* Format into err (if err is non-NULL). Returns nothing; never fails. */
void hvd_err_set(hvd_err_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prepend "what: " to the message already in err. */
void hvd_err_prefix(hvd_err_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Propagate a failing status: HVD_CHECK(expr) returns it; HVD_CHECK_GOTO jumps. */
#define HVD_CHECK(expr)                                                                \
  do {                                                                                 \
    hvd_status_t hvd_check_rc_ = (expr);                                               \
    if (hvd_check_rc_ < 0) return hvd_check_rc_;                                       \
  } while (0)
#define HVD_CHECK_GOTO(expr, rc, label)                                                \
  do {                                                                                 \
    (rc) = (expr);                                                                     \
    if ((rc) < 0) goto label;                                                          \
  } while (0)

#endif
