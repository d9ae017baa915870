#include "common/err.h"

#include <stdio.h>
#include <string.h>

void hvd_err_set(hvd_err_t *err, const char *fmt, ...) {
  if (err == NULL) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err->msg, sizeof err->msg, fmt, ap);
  va_end(ap);
}

void hvd_err_prefix(hvd_err_t *err, const char *fmt, ...) {
  if (err == NULL) return;
  char head[HVD_ERR_MSG_MAX];
  char old[HVD_ERR_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(head, sizeof head, fmt, ap);
  va_end(ap);
  memcpy(old, err->msg, sizeof old);
  /* Truncation is fine here: the message is for people. */
  size_t h = strnlen(head, sizeof head - 1);
  if (h > sizeof err->msg - 3) h = sizeof err->msg - 3;
  memcpy(err->msg, head, h);
  memcpy(err->msg + h, ": ", 2);
  size_t room = sizeof err->msg - h - 3;
  size_t o = strnlen(old, room);
  memcpy(err->msg + h + 2, old, o);
  err->msg[h + 2 + o] = '\0';
}
