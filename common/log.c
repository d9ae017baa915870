/* Process-wide levelled logging; see log.h. */
#include "common/log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static _Atomic int g_level = HVD_LOG_WARNING;
static char g_prefix[32];

static const char *const level_names[] = {"trace", "debug", "info", "warning",
                                          "error", "fatal", "none"};

int hvd_log_parse_level(const char *s) {
  if (s == NULL) return -1;
  for (int i = 0; i <= HVD_LOG_NONE; i++)
    if (strcasecmp(s, level_names[i]) == 0) return i;
  if (strcasecmp(s, "warn") == 0) return HVD_LOG_WARNING;
  return -1;
}

int hvd_log_init_from_env(void) {
  const char *v = getenv("HVD_LOG_LEVEL");
  if (v == NULL || *v == '\0') v = getenv("HOROVOD_LOG_LEVEL");
  if (v == NULL || *v == '\0') return (int)hvd_log_get_level();
  int l = hvd_log_parse_level(v);
  if (l < 0) return -1;
  atomic_store(&g_level, l);
  return l;
}

void hvd_log_set_level(hvd_log_level_t level) { atomic_store(&g_level, (int)level); }
hvd_log_level_t hvd_log_get_level(void) { return (hvd_log_level_t)atomic_load(&g_level); }

void hvd_log_set_prefix(const char *prefix) {
  snprintf(g_prefix, sizeof g_prefix, "%s", prefix ? prefix : "");
}

void hvd_log_write(hvd_log_level_t level, const char *fmt, ...) {
  char line[1024];
  int n;
  if (g_prefix[0] != '\0')
    n = snprintf(line, sizeof line, "[hvd %s][%s] ", g_prefix, level_names[level]);
  else
    n = snprintf(line, sizeof line, "[hvd][%s] ", level_names[level]);
  if (n < 0) return;
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
  va_end(ap);
  size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
  if (len > sizeof line - 2) len = sizeof line - 2;
  line[len++] = '\n';
  /* One write keeps concurrent lines whole. */
  fwrite(line, 1, len, stderr);
}
