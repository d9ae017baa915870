/*
 * The settings table and its parser. To add a setting: add a member to hvd_config_t
 * and one row here; parsing, validation and hvd-info follow from the row.
 */
#include "runtime/config.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"

#define OFF(m) offsetof(hvd_config_t, m)

static const hvd_config_field_t fields[] = {
    {"HVD_LOG_LEVEL", "HOROVOD_LOG_LEVEL", HVD_CFG_LOGLEVEL, "warning", 0, 0, OFF(log_level),
     "log verbosity: trace, debug, info, warning, error, fatal"},
    {"HVD_OFI_PROVIDER", NULL, HVD_CFG_STRING, "", 0, 0, OFF(ofi_provider),
     "libfabric provider for every peer (tcp, shm, verbs;ofi_rxm, efa, ...); empty = shm "
     "for same-host peers and tcp;ofi_rxm for the rest"},
    {"HVD_OFI_IFACE", "HOROVOD_GLOO_IFACE", HVD_CFG_STRING, "", 0, 0, OFF(ofi_iface),
     "network interface or address the network provider binds to; empty = automatic"},
    {"HVD_OFI_MAX_MSG_SIZE", NULL, HVD_CFG_BYTES, "0", 0, 1099511627776.0,
     OFF(ofi_max_msg_size),
     "largest single fabric message, larger ones are segmented; 0 = provider limit"},
    {"HVD_START_TIMEOUT", "HOROVOD_START_TIMEOUT", HVD_CFG_DOUBLE, "60", 0.1, 86400,
     OFF(start_timeout_s), "seconds to wait for every rank to connect at init"},
    {"HVD_SHUTDOWN_TIMEOUT_SECONDS", NULL, HVD_CFG_DOUBLE, "30", 0, 86400,
     OFF(shutdown_timeout_s), "seconds hvd_shutdown waits for the other ranks"},
    {"HVD_FUSION_THRESHOLD", "HOROVOD_FUSION_THRESHOLD", HVD_CFG_BYTES, "128M", 0,
     17179869184.0, OFF(fusion_threshold),
     "bytes up to which compatible allreduces are fused into one; 0 disables fusion"},
    {"HVD_CYCLE_TIME", "HOROVOD_CYCLE_TIME", HVD_CFG_DOUBLE, "1", 0, 10000, OFF(cycle_time_ms),
     "milliseconds the coordinator may wait for more tensors to fuse while a batch is "
     "incomplete; a lone tensor never waits"},
    {"HVD_CACHE_CAPACITY", "HOROVOD_CACHE_CAPACITY", HVD_CFG_INT, "1024", 0, 65536,
     OFF(cache_capacity), "response cache entries per process set; 0 disables the cache"},
    {"HVD_STALL_CHECK_TIME_SECONDS", "HOROVOD_STALL_CHECK_TIME_SECONDS", HVD_CFG_DOUBLE, "60", 0,
     86400, OFF(stall_warning_s),
     "seconds after which rank 0 logs tensors that some ranks submitted and others did not"},
    {"HVD_STALL_SHUTDOWN_TIME_SECONDS", "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS", HVD_CFG_DOUBLE,
     "0", 0, 86400, OFF(stall_shutdown_s),
     "seconds after which such stalled operations fail with HVD_ERR_TIMEOUT; 0 = never"},
    {"HVD_STALL_CHECK_DISABLE", "HOROVOD_STALL_CHECK_DISABLE", HVD_CFG_BOOL, "0", 0, 1,
     OFF(stall_check_disable), "disable the stall inspector"},
    {"HVD_SPIN_US", NULL, HVD_CFG_DOUBLE, "200", 0, 1000000, OFF(spin_us),
     "microseconds an idle background thread polls before it starts to sleep"},
    {"HVD_ALLREDUCE_ALGO", NULL, HVD_CFG_STRING, "auto", 0, 0, OFF(allreduce_algo),
     "allreduce algorithm: auto (by size, from the selection table), ring, tree, rd"},
    {"HVD_ALLGATHER_ALGO", NULL, HVD_CFG_STRING, "auto", 0, 0, OFF(allgather_algo),
     "allgather algorithm: auto (by gathered size, from the selection table), ring, bruck"},
    {"HVD_BROADCAST_ALGO", NULL, HVD_CFG_STRING, "auto", 0, 0, OFF(broadcast_algo),
     "broadcast algorithm: auto (by size, from the selection table), tree (binomial), "
     "scatter_ring (scatter + ring allgather)"},
    {"HVD_TIMELINE", "HOROVOD_TIMELINE", HVD_CFG_STRING, "", 0, 0, OFF(timeline),
     "write a Chrome trace of every tensor to this file (rank 0; see HVD_TIMELINE_ALL_RANKS)"},
    {"HVD_TIMELINE_MARK_CYCLES", "HOROVOD_TIMELINE_MARK_CYCLES", HVD_CFG_BOOL, "0", 0, 1,
     OFF(timeline_mark_cycles), "mark every negotiation cycle in the timeline"},
    {"HVD_TIMELINE_ALL_RANKS", NULL, HVD_CFG_BOOL, "0", 0, 1, OFF(timeline_all_ranks),
     "every rank writes its own timeline, <file>.<rank>.json"},
    {"HVD_TIMELINE_MAX_MB", NULL, HVD_CFG_DOUBLE, "0", 0, 1048576, OFF(timeline_max_mb),
     "cap on the timeline file size in MiB (the file then ends with a marker); 0 = none"},
    {"HVD_SHM_ARENA", NULL, HVD_CFG_BOOL, "1", 0, 1, OFF(shm_arena),
     "when every rank is on one host, reduce through a shared-memory arena (off: always "
     "through libfabric)"},
    {"HVD_SHM_CHUNK", NULL, HVD_CFG_BYTES, "256K", 4096, 1073741824.0, OFF(shm_chunk),
     "bytes per shared-memory arena slot (the pipelining chunk)"},
};

const hvd_config_field_t *hvd_config_fields(size_t *n) {
  *n = sizeof fields / sizeof fields[0];
  return fields;
}

static int parse_bytes(const char *s, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno != 0 || end == s || !isfinite(v)) return -1;
  double mult = 1;
  if (*end != '\0') {
    switch (*end) {
    case 'k': case 'K': mult = 1024.0; break;
    case 'm': case 'M': mult = 1024.0 * 1024; break;
    case 'g': case 'G': mult = 1024.0 * 1024 * 1024; break;
    default: return -1;
    }
    end++;
    if (*end == 'i' || *end == 'I') end++;
    if (*end == 'b' || *end == 'B') end++;
    if (*end != '\0') return -1;
  }
  *out = floor(v * mult);
  return 0;
}

static int parse_bool(const char *s, long *out) {
  static const char *yes[] = {"1", "true", "yes", "on"}, *no[] = {"0", "false", "no", "off"};
  for (size_t i = 0; i < 4; i++) {
    if (strcasecmp(s, yes[i]) == 0) { *out = 1; return 0; }
    if (strcasecmp(s, no[i]) == 0) { *out = 0; return 0; }
  }
  return -1;
}

static void range_text(const hvd_config_field_t *f, char *buf, size_t len) {
  switch (f->type) {
  case HVD_CFG_INT: case HVD_CFG_BYTES:
    snprintf(buf, len, "an integer%s in [%.0f, %.0f]", f->type == HVD_CFG_BYTES ? " (K/M/G suffix allowed)" : "",
             f->min, f->max);
    break;
  case HVD_CFG_DOUBLE: snprintf(buf, len, "a number in [%g, %g]", f->min, f->max); break;
  case HVD_CFG_BOOL: snprintf(buf, len, "one of 0, 1, true, false, yes, no, on, off"); break;
  case HVD_CFG_LOGLEVEL: snprintf(buf, len, "one of trace, debug, info, warning, error, fatal"); break;
  case HVD_CFG_STRING: snprintf(buf, len, "text shorter than %d bytes", HVD_CFG_STR_MAX); break;
  }
}

static hvd_status_t set_field(hvd_config_t *cfg, const hvd_config_field_t *f, const char *var,
                              const char *s, hvd_err_t *err) {
  char *p = (char *)cfg + f->offset;
  double d;
  long l;
  char *end;
  switch (f->type) {
  case HVD_CFG_INT:
    errno = 0;
    l = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || l < f->min || l > f->max) goto bad;
    *(long *)p = l;
    return HVD_OK;
  case HVD_CFG_BYTES:
    if (parse_bytes(s, &d) != 0 || d < f->min || d > f->max) goto bad;
    *(long *)p = (long)d;
    return HVD_OK;
  case HVD_CFG_DOUBLE:
    errno = 0;
    d = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(d >= f->min && d <= f->max)) goto bad;
    *(double *)p = d;
    return HVD_OK;
  case HVD_CFG_BOOL:
    if (parse_bool(s, &l) != 0) goto bad;
    *(long *)p = l;
    return HVD_OK;
  case HVD_CFG_LOGLEVEL:
    l = hvd_log_parse_level(s);
    if (l < 0) goto bad;
    *(long *)p = l;
    return HVD_OK;
  case HVD_CFG_STRING:
    if (strlen(s) >= HVD_CFG_STR_MAX) goto bad;
    strcpy(p, s);
    return HVD_OK;
  }
bad:;
  char range[128];
  range_text(f, range, sizeof range);
  hvd_err_set(err, "%s=\"%.100s\" is not valid: expected %s", var, s, range);
  return HVD_ERR_INVALID_PARAM;
}

hvd_status_t hvd_config_load(hvd_config_t *cfg, hvd_err_t *err) {
  memset(cfg, 0, sizeof *cfg);
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
    const hvd_config_field_t *f = &fields[i];
    hvd_status_t rc = set_field(cfg, f, f->name, f->def, err);
    if (rc != HVD_OK) return HVD_ERR_INTERNAL; /* a default that does not parse is our bug */
    const char *var = f->name;
    const char *v = getenv(var);
    if ((v == NULL || *v == '\0') && f->alias != NULL) {
      var = f->alias;
      v = getenv(var);
    }
    if (v == NULL || *v == '\0') continue;
    rc = set_field(cfg, f, var, v, err);
    if (rc != HVD_OK) return rc;
  }
  return HVD_OK;
}

void hvd_config_format(const hvd_config_t *cfg, const hvd_config_field_t *f, char *buf,
                       size_t len) {
  const char *p = (const char *)cfg + f->offset;
  static const char *levels[] = {"trace", "debug", "info", "warning", "error", "fatal", "none"};
  switch (f->type) {
  case HVD_CFG_INT: case HVD_CFG_BYTES: snprintf(buf, len, "%ld", *(const long *)p); break;
  case HVD_CFG_BOOL: snprintf(buf, len, "%s", *(const long *)p ? "1" : "0"); break;
  case HVD_CFG_DOUBLE: snprintf(buf, len, "%g", *(const double *)p); break;
  case HVD_CFG_LOGLEVEL: snprintf(buf, len, "%s", levels[*(const long *)p]); break;
  case HVD_CFG_STRING: snprintf(buf, len, "%s", p); break;
  }
}
