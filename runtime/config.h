/*
 * Every HVD_* setting in one declarative table (runtime/config.c): name, Horovod
 * alias, type, default, accepted range and help. The table drives parsing and
 * validation at init and the listing in hvd-info. Job identity (HVD_RANK, HVD_SIZE,
 * ...) is not a setting: runtime/env.c reads it.
 */
#ifndef HVD_RUNTIME_CONFIG_H
#define HVD_RUNTIME_CONFIG_H

#include <stddef.h>

#include "common/err.h"
#include "hvd.h"

typedef enum {
  HVD_CFG_INT,    /* long in [min, max] */
  HVD_CFG_BYTES,  /* size in bytes; suffixes K, M, G accepted */
  HVD_CFG_DOUBLE, /* double in [min, max] */
  HVD_CFG_BOOL,   /* 0/1, true/false, yes/no, on/off */
  HVD_CFG_STRING, /* free text, up to HVD_CFG_STR_MAX-1 bytes */
  HVD_CFG_LOGLEVEL,
} hvd_cfg_type_t;

#define HVD_CFG_STR_MAX 256

typedef struct hvd_config {
  long log_level;
  char ofi_provider[HVD_CFG_STR_MAX];
  char ofi_iface[HVD_CFG_STR_MAX];
  long ofi_max_msg_size;
  double start_timeout_s;
  double shutdown_timeout_s;
  double transport_timeout_s;
  long fusion_threshold;
  double cycle_time_ms;
  long cache_capacity;
  double stall_warning_s;
  double stall_shutdown_s;
  long stall_check_disable;
  double spin_us;
  char allreduce_algo[HVD_CFG_STR_MAX];
  char allgather_algo[HVD_CFG_STR_MAX];
  char broadcast_algo[HVD_CFG_STR_MAX];
  char timeline[HVD_CFG_STR_MAX];
  long timeline_mark_cycles;
  long timeline_all_ranks;
  double timeline_max_mb;
  long shm_arena;
  long shm_chunk;
  char shm_stores[HVD_CFG_STR_MAX];
  char reduce_isa[HVD_CFG_STR_MAX];
  long hierarchical_allreduce;
} hvd_config_t;

typedef struct hvd_config_field {
  const char *name;  /* HVD_... */
  const char *alias; /* HOROVOD_... or NULL */
  hvd_cfg_type_t type;
  const char *def; /* default, as text */
  double min, max; /* range for numbers */
  size_t offset;   /* into hvd_config_t */
  const char *help;
  const char *choices; /* STRING: the accepted values, ", "-separated, any case;
                          NULL: free text */
} hvd_config_field_t;

/* The table and its length. */
const hvd_config_field_t *hvd_config_fields(size_t *n);

/* Fill cfg from defaults, then from the environment. On a value that does not parse
 * or is out of range: HVD_ERR_INVALID_PARAM with a message naming the variable, the
 * value and the accepted range. An empty value means unset (the default). Numbers
 * are plain decimal: no leading space, hex, inf or nan. */
hvd_status_t hvd_config_load(hvd_config_t *cfg, hvd_err_t *err);

/* The variable hvd_config_load reads for the setting called name: name, or its
 * HOROVOD_ alias when only that is set. For messages about a value that parsed but
 * could not be used. */
const char *hvd_config_var(const char *name);

/* Check value for variable var (a table name or alias) as hvd_config_load would, for
 * launchers that set variables: 1 if valid, 0 if not (then expected, if not NULL,
 * says what is accepted, e.g. "a number in [0, 10000]"), -1 if var is not a setting. */
int hvd_config_check(const char *var, const char *value, char *expected, size_t len);

/* Write the current value of field f in cfg as text into buf. */
void hvd_config_format(const hvd_config_t *cfg, const hvd_config_field_t *f, char *buf,
                       size_t len);

#endif
