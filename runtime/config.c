/*
 * The settings table and its parser. To add a setting: add a member to hvd_config_t
 * and one row here; parsing, validation and hvd-info follow from the row.
 */
#include "runtime/config.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "collectives/reduce.h"
#include "collectives/select.h"
#include "common/log.h"
#include "common/util.h"
#include "transport/shm_arena.h"

#define OFF(m) offsetof(hvd_config_t, m)

static const hvd_config_field_t fields[] = {
    {"HVD_LOG_LEVEL", "HOROVOD_LOG_LEVEL", HVD_CFG_LOGLEVEL, "warning", 0, 0, OFF(log_level),
     "log verbosity: trace, debug, info, warning, error, fatal", NULL},
    {"HVD_OFI_PROVIDER", NULL, HVD_CFG_STRING, "", 0, 0, OFF(ofi_provider),
     "libfabric provider for every peer (tcp, shm, verbs;ofi_rxm, efa, ...); empty = shm "
     "for same-host peers and tcp;ofi_rxm for the rest", NULL},
    {"HVD_OFI_IFACE", "HOROVOD_GLOO_IFACE", HVD_CFG_STRING, "", 0, 0, OFF(ofi_iface),
     "network interface or address the network provider binds to; empty = automatic", NULL},
    {"HVD_OFI_MAX_MSG_SIZE", NULL, HVD_CFG_BYTES, "0", 0, 1099511627776.0,
     OFF(ofi_max_msg_size),
     "largest single fabric message, larger ones are segmented; 0 = provider limit", NULL},
    {"HVD_START_TIMEOUT", "HOROVOD_START_TIMEOUT", HVD_CFG_DOUBLE, "60", 0.1, 86400,
     OFF(start_timeout_s), "seconds to wait for every rank to connect at init", NULL},
    {"HVD_SHUTDOWN_TIMEOUT_SECONDS", NULL, HVD_CFG_DOUBLE, "30", 0, 86400,
     OFF(shutdown_timeout_s), "seconds hvd_shutdown waits for the other ranks", NULL},
    {"HVD_TRANSPORT_TIMEOUT_SECONDS", "HOROVOD_GLOO_TIMEOUT_SECONDS", HVD_CFG_DOUBLE, "30", 0,
     86400, OFF(transport_timeout_s),
     "seconds a collective may wait for a peer without any of its transfers progressing "
     "before it fails with HVD_ERR_TIMEOUT (network or peer failure); 0 = never", NULL},
    {"HVD_FUSION_THRESHOLD", "HOROVOD_FUSION_THRESHOLD", HVD_CFG_BYTES, "128M", 0,
     17179869184.0, OFF(fusion_threshold),
     "bytes up to which compatible allreduces are fused into one; 0 disables fusion", NULL},
    {"HVD_CYCLE_TIME", "HOROVOD_CYCLE_TIME", HVD_CFG_DOUBLE, "1", 0, 10000, OFF(cycle_time_ms),
     "milliseconds the coordinator may wait for more tensors to fuse while a batch is "
     "incomplete; a lone tensor never waits", NULL},
    {"HVD_CACHE_CAPACITY", "HOROVOD_CACHE_CAPACITY", HVD_CFG_INT, "1024", 0, 65536,
     OFF(cache_capacity), "response cache entries per process set; 0 disables the cache", NULL},
    {"HVD_STALL_CHECK_TIME_SECONDS", "HOROVOD_STALL_CHECK_TIME_SECONDS", HVD_CFG_DOUBLE, "60", 0,
     86400, OFF(stall_warning_s),
     "seconds after which rank 0 logs tensors that some ranks submitted and others did not", NULL},
    {"HVD_STALL_SHUTDOWN_TIME_SECONDS", "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS", HVD_CFG_DOUBLE,
     "0", 0, 86400, OFF(stall_shutdown_s),
     "seconds after which such stalled operations fail with HVD_ERR_TIMEOUT; 0 = never", NULL},
    {"HVD_STALL_CHECK_DISABLE", "HOROVOD_STALL_CHECK_DISABLE", HVD_CFG_BOOL, "0", 0, 1,
     OFF(stall_check_disable), "disable the stall inspector", NULL},
    {"HVD_SPIN_US", NULL, HVD_CFG_DOUBLE, "200", 0, 1000000, OFF(spin_us),
     "microseconds the background thread polls, while a tensor of this rank is in "
     "flight, before it yields and then sleeps (with nothing in flight it sleeps at once; "
     "on a rank without a CPU to spare it polls only while the application waits)",
     NULL},
    {"HVD_ALLREDUCE_ALGO", NULL, HVD_CFG_STRING, "auto", 0, 0, OFF(allreduce_algo),
     "allreduce algorithm: auto (shm when every rank is on one host, else by size from the "
     "selection table), ring, tree, rd, shm (the same-host shared-memory arena)",
     HVD_ALLREDUCE_ALGO_CHOICES},
    {"HVD_ALLGATHER_ALGO", NULL, HVD_CFG_STRING, "auto", 0, 0, OFF(allgather_algo),
     "allgather algorithm: auto (shm when every rank is on one host, else by gathered size "
     "from the selection table), ring, bruck, shm",
     HVD_ALLGATHER_ALGO_CHOICES},
    {"HVD_BROADCAST_ALGO", NULL, HVD_CFG_STRING, "auto", 0, 0, OFF(broadcast_algo),
     "broadcast algorithm: auto (shm when every rank is on one host, else by size from the "
     "selection table), tree (binomial), scatter_ring (scatter + ring allgather), shm",
     HVD_BROADCAST_ALGO_CHOICES},
    {"HVD_TIMELINE", "HOROVOD_TIMELINE", HVD_CFG_STRING, "", 0, 0, OFF(timeline),
     "write a Chrome trace of every tensor to this file (rank 0; see HVD_TIMELINE_ALL_RANKS)", NULL},
    {"HVD_TIMELINE_MARK_CYCLES", "HOROVOD_TIMELINE_MARK_CYCLES", HVD_CFG_BOOL, "0", 0, 1,
     OFF(timeline_mark_cycles), "mark every negotiation cycle in the timeline", NULL},
    {"HVD_TIMELINE_ALL_RANKS", NULL, HVD_CFG_BOOL, "0", 0, 1, OFF(timeline_all_ranks),
     "every rank writes its own timeline, <file>.<rank>.json", NULL},
    {"HVD_TIMELINE_MAX_MB", NULL, HVD_CFG_DOUBLE, "0", 0, 1048576, OFF(timeline_max_mb),
     "cap on the timeline file size in MiB (the file then ends with a marker); 0 = none", NULL},
    {"HVD_SHM_ARENA", NULL, HVD_CFG_BOOL, "1", 0, 1, OFF(shm_arena),
     "when every rank is on one host, run allreduce, allgather, broadcast and "
     "reduce-scatter through a shared-memory arena (off: always through libfabric)", NULL},
    {"HVD_SHM_CHUNK", NULL, HVD_CFG_BYTES, "256K", 4096, 1073741824.0, OFF(shm_chunk),
     "bytes per shared-memory arena slot (the pipelining chunk)", NULL},
    {"HVD_SHM_STORES", NULL, HVD_CFG_STRING, "auto", 0, 0, OFF(shm_stores),
     "how the arena allreduce and reduce-scatter write their slots from 64 KiB: auto (the "
     "faster of the two, measured per size class while running), cached (plain stores), "
     "streaming (non-temporal stores)",
     HVD_SHM_STORES_CHOICES},
    {"HVD_REDUCE_ISA", NULL, HVD_CFG_STRING, "auto", 0, 0, OFF(reduce_isa),
     "reduction kernels: auto (the widest this CPU runs), generic, avx2, avx512; read once "
     "per process at the first reduction; one the CPU cannot run falls back with a warning",
     HVD_REDUCE_ISA_CHOICES},
    {"HVD_HIERARCHICAL_ALLREDUCE", "HOROVOD_HIERARCHICAL_ALLREDUCE", HVD_CFG_BOOL, "0", 0, 1,
     OFF(hierarchical_allreduce),
     "Horovod's hierarchical allreduce switch (hvdrun --hierarchical-allreduce): checked but "
     "without effect; HVD_ALLREDUCE_ALGO and the selection table choose", NULL},
};

const hvd_config_field_t *hvd_config_fields(size_t *n) {
  *n = sizeof fields / sizeof fields[0];
  return fields;
}

/* A plain decimal number at the start of s (sign, digits, point, exponent: what
 * strtod reads, minus leading space, hex, inf and nan). Returns the end of the number,
 * or NULL if there is none or it is too large for a double. */
static const char *parse_decimal(const char *s, double *out) {
  char *end;
  double v = strtod(s, &end);
  if (end == s || (size_t)(end - s) > strspn(s, "+-.0123456789eE") || !isfinite(v)) return NULL;
  *out = v;
  return end;
}

static int parse_bytes(const char *s, double *out) {
  double v, mult = 1;
  const char *end = parse_decimal(s, &v);
  if (end == NULL) return -1;
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

/* Whether s is one of the ", "-separated words of list, in any case. */
static int is_choice(const char *list, const char *s) {
  size_t n = strlen(s);
  for (const char *p = list; *p != '\0';) {
    size_t w = strcspn(p, ",");
    if (w == n && strncasecmp(p, s, n) == 0) return 1;
    p += w;
    p += strspn(p, ", ");
  }
  return 0;
}

static void range_text(const hvd_config_field_t *f, char *buf, size_t len) {
  switch (f->type) {
  case HVD_CFG_INT: case HVD_CFG_BYTES:
    snprintf(buf, len, "an integer%s in [%.0f, %.0f]", f->type == HVD_CFG_BYTES ? " (K/M/G suffix allowed)" : "",
             f->min, f->max);
    break;
  case HVD_CFG_DOUBLE: snprintf(buf, len, "a number in [%g, %g]", f->min, f->max); break;
  case HVD_CFG_BOOL: snprintf(buf, len, "one of 0, 1, true, false, yes, no, on, off"); break;
  case HVD_CFG_LOGLEVEL: snprintf(buf, len, "one of trace, debug, info, warning, error, fatal, none"); break;
  case HVD_CFG_STRING:
    if (f->choices) snprintf(buf, len, "one of %s", f->choices);
    else snprintf(buf, len, "text shorter than %d bytes", HVD_CFG_STR_MAX);
    break;
  }
}

/* Parse s for field f into cfg (which may be NULL: check only). */
static hvd_status_t set_field(hvd_config_t *cfg, const hvd_config_field_t *f, const char *var,
                              const char *s, hvd_err_t *err) {
  char *p = cfg ? (char *)cfg + f->offset : NULL;
  double d;
  long l;
  switch (f->type) {
  case HVD_CFG_INT:
    if (hvd_parse_int(s, (long)f->min, (long)f->max, &l) != 0) goto bad;
    if (p) *(long *)p = l;
    return HVD_OK;
  case HVD_CFG_BYTES:
    if (parse_bytes(s, &d) != 0 || d < f->min || d > f->max) goto bad;
    if (p) *(long *)p = (long)d;
    return HVD_OK;
  case HVD_CFG_DOUBLE: {
    const char *end = parse_decimal(s, &d);
    if (end == NULL || *end != '\0' || !(d >= f->min && d <= f->max)) goto bad;
    if (p) *(double *)p = d;
    return HVD_OK;
  }
  case HVD_CFG_BOOL:
    if (parse_bool(s, &l) != 0) goto bad;
    if (p) *(long *)p = l;
    return HVD_OK;
  case HVD_CFG_LOGLEVEL:
    l = hvd_log_parse_level(s);
    if (l < 0) goto bad;
    if (p) *(long *)p = l;
    return HVD_OK;
  case HVD_CFG_STRING:
    if (strlen(s) >= HVD_CFG_STR_MAX || (f->choices && !is_choice(f->choices, s))) goto bad;
    if (p) strcpy(p, s);
    return HVD_OK;
  }
bad:;
  char range[160];
  range_text(f, range, sizeof range);
  hvd_err_set(err, "%s=\"%.100s\" is not valid: expected %s", var, s, range);
  return HVD_ERR_INVALID_PARAM;
}

/* The variable that sets f: its name, or the alias when only that is set (non-empty);
 * its value in *value (NULL: unset). */
static const char *source(const hvd_config_field_t *f, const char **value) {
  const char *var = f->name;
  const char *v = getenv(var);
  if ((v == NULL || *v == '\0') && f->alias != NULL) {
    var = f->alias;
    v = getenv(var);
  }
  *value = v != NULL && *v != '\0' ? v : NULL;
  return var;
}

const char *hvd_config_var(const char *name) {
  const char *v;
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
    if (strcmp(fields[i].name, name) == 0) return source(&fields[i], &v);
  return name;
}

hvd_status_t hvd_config_load(hvd_config_t *cfg, hvd_err_t *err) {
  memset(cfg, 0, sizeof *cfg);
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
    const hvd_config_field_t *f = &fields[i];
    hvd_status_t rc = set_field(cfg, f, f->name, f->def, err);
    if (rc != HVD_OK) return HVD_ERR_INTERNAL; /* a default that does not parse is our bug */
    const char *v;
    const char *var = source(f, &v);
    if (v == NULL) continue;
    rc = set_field(cfg, f, var, v, err);
    if (rc != HVD_OK) return rc;
  }
  return HVD_OK;
}

int hvd_config_check(const char *var, const char *value, char *expected, size_t len) {
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
    const hvd_config_field_t *f = &fields[i];
    if (strcmp(var, f->name) != 0 && (f->alias == NULL || strcmp(var, f->alias) != 0)) continue;
    if (*value == '\0' || set_field(NULL, f, var, value, NULL) == HVD_OK) return 1;
    if (expected) range_text(f, expected, len);
    return 0;
  }
  return -1;
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
