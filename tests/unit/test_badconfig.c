/*
 * Bad configuration through hvd_init: every variable hvd reads, set to garbage,
 * negative, zero, huge, empty, over-long and boundary values. hvd_init must either
 * accept the value (where it is valid) or fail with HVD_ERR_INVALID_PARAM, leave
 * *out NULL and log a message naming the variable.
 *
 * The settings are driven by the table (runtime/config.c): the expected outcome of
 * each value is derived here from the row's declared type, range and choices by a
 * separate, deliberately plain reading of the documented syntax, so a new row is
 * covered without touching this file. The job-identity variables (runtime/env.c) are
 * not settings; they are listed below with the context each needs.
 *
 * Every case runs a real single-rank hvd_init in this process (Criterion gives each
 * test its own process); stderr goes to a file so the log line can be checked.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "capture.h"
#include "common/log.h"
#include "runtime/config.h"
#include "transport/rdv.h"

static void setup(void) {
  cap_start();
  /* HVD_TIMELINE=<anything> writes that file: keep them in the scratch directory */
  cr_assert_eq(chdir(cap_dir), 0);
}

TestSuite(badconfig, .init = setup, .fini = cap_end, .timeout = 240);

/* ---- one case ------------------------------------------------------------------------ */

static int ncases;

/* With var=value set (on top of the current environment), hvd_init must succeed
 * (ok) or fail with a message naming `names` (default var) and, if show_value, the
 * value. Returns whether it behaved. */
static int try_init_msg(const char *var, const char *value, int ok, const char *names,
                        int show_value) {
  ncases++;
  setenv(var, value, 1);
  hvd_log_set_level(HVD_LOG_WARNING); /* a previous init may have changed it */
  cap_clear();
  hvd_ctx_t *ctx = (hvd_ctx_t *)&ncases; /* must come back NULL on failure */
  hvd_status_t rc = hvd_init(&ctx);
  unsetenv(var);
  const char *log = cap_text();
  int good;
  if (ok) {
    good = rc == HVD_OK && ctx != NULL;
    cr_expect(good, "%s=\"%.80s\" should be accepted; hvd_init: %s\n%s", var, value,
              hvd_status_string(rc), log);
  } else {
    char shown[128];
    snprintf(shown, sizeof shown, "%.60s", value); /* messages may cut long values */
    good = rc == HVD_ERR_INVALID_PARAM && ctx == NULL &&
           strstr(log, names ? names : var) != NULL && (!show_value || strstr(log, shown));
    cr_expect(good,
              "%s=\"%.80s\" should fail init with HVD_ERR_INVALID_PARAM and a message naming "
              "%s%s; hvd_init: %s, ctx %p, log:\n%s",
              var, value, names ? names : var, show_value ? " and the value" : "",
              hvd_status_string(rc), (void *)ctx, log);
  }
  if (rc == HVD_OK) hvd_shutdown(ctx);
  return good;
}

/* Settings: the message names the variable and repeats the value. */
static int try_init(const char *var, const char *value, int ok) {
  return try_init_msg(var, value, ok, NULL, 1);
}

/* ---- the documented syntax, read independently of the parser -------------------------- */

static int matches(const char *re, const char *s) {
  regex_t r;
  cr_assert_eq(regcomp(&r, re, REG_EXTENDED | REG_NOSUB), 0, "%s", re);
  int m = regexec(&r, s, 0, NULL, 0) == 0;
  regfree(&r);
  return m;
}

#define DECIMAL "[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?"

static int one_of(const char *s, const char *const *words) {
  for (; *words; words++)
    if (strcasecmp(s, *words) == 0) return 1;
  return 0;
}

/* Whether value is valid for the row: the contract of runtime/config.h and the help. */
static int expect_valid(const hvd_config_field_t *f, const char *v) {
  static const char *const bools[] = {"0", "1", "true", "false", "yes", "no", "on", "off", NULL};
  static const char *const levels[] = {"trace", "debug", "info",  "warning",
                                       "warn",  "error", "fatal", "none", NULL};
  if (*v == '\0') return 1; /* empty = unset = the default */
  double d;
  switch (f->type) {
  case HVD_CFG_INT:
    if (!matches("^[+-]?[0-9]+$", v)) return 0;
    d = strtod(v, NULL);
    return d >= f->min && d <= f->max;
  case HVD_CFG_BYTES: {
    if (!matches("^" DECIMAL "([kKmMgG][iI]?[bB]?)?$", v)) return 0;
    char *end;
    d = strtod(v, &end);
    double mult = *end == '\0' ? 1 : strchr("kK", *end) ? 1024.0 : strchr("mM", *end) ? 1048576.0 : 1073741824.0;
    d = floor(d * mult);
    return isfinite(d) && d >= f->min && d <= f->max;
  }
  case HVD_CFG_DOUBLE:
    if (!matches("^" DECIMAL "$", v)) return 0;
    d = strtod(v, NULL);
    return isfinite(d) && d >= f->min && d <= f->max;
  case HVD_CFG_BOOL:
    return one_of(v, bools);
  case HVD_CFG_LOGLEVEL:
    return one_of(v, levels);
  case HVD_CFG_STRING:
    if (strlen(v) >= HVD_CFG_STR_MAX) return 0;
    if (f->choices == NULL) return 1;
    char list[HVD_CFG_STR_MAX], *save;
    snprintf(list, sizeof list, "%s", f->choices);
    for (char *w = strtok_r(list, ", ", &save); w; w = strtok_r(NULL, ", ", &save))
      if (strcasecmp(w, v) == 0) return 1;
    return 0;
  }
  return 0;
}

/* ---- every row of the settings table --------------------------------------------------- */

static char long_value[HVD_CFG_STR_MAX + 44];

static void try_row(const hvd_config_field_t *f, const char *var, int *valid, int *invalid) {
  char lo[64], hi[64], below[64], above[64];
  snprintf(lo, sizeof lo, "%.17g", f->min);
  snprintf(hi, sizeof hi, "%.17g", f->max);
  snprintf(below, sizeof below, "%.17g", f->min - 1);
  snprintf(above, sizeof above, "%.17g", f->max * 2 + 1);
  const char *values[] = {
      "abc", "1x", "", "-1", "0", "1", "1.5", "1e300", "99999999999999999999", "-99999999999999999999",
      " 1", "1 ", "0x10", "nan", "inf", "-inf", "1K", "64MiB", "1T", "true", "off", "auto",
      "ring", "tree", "generic", "debug", "none", "--", long_value, lo, hi, below, above,
  };
  for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
    int ok = expect_valid(f, values[i]);
    *(ok ? valid : invalid) += 1;
    try_init(var, values[i], ok);
  }
  /* every choice, in any case */
  if (f->choices) {
    char list[HVD_CFG_STR_MAX], *save;
    snprintf(list, sizeof list, "%s", f->choices);
    for (char *w = strtok_r(list, ", ", &save); w; w = strtok_r(NULL, ", ", &save)) {
      try_init(var, w, 1);
      for (char *c = w; *c; c++) *c = (char)(*c >= 'a' && *c <= 'z' ? *c - 32 : *c);
      try_init(var, w, 1);
    }
  }
}

Test(badconfig, every_setting) {
  memset(long_value, '7', sizeof long_value - 1);
  size_t n;
  const hvd_config_field_t *f = hvd_config_fields(&n);
  for (size_t i = 0; i < n; i++) {
    int valid = 0, invalid = 0;
    try_row(&f[i], f[i].name, &valid, &invalid);
    if (f[i].alias) try_row(&f[i], f[i].alias, &valid, &invalid);
    /* every row is exercised both ways (strings without choices accept anything short) */
    cr_expect_gt(valid, 0, "%s: no value was valid", f[i].name);
    cr_expect_gt(invalid, 0, "%s: no value was invalid", f[i].name);
  }
  cr_log_info("%d hvd_init cases over %zu settings", ncases, n);
}

/* A default is valid by its own row's rules (and so is what hvd-info shows). */
Test(badconfig, defaults_are_valid) {
  size_t n;
  const hvd_config_field_t *f = hvd_config_fields(&n);
  for (size_t i = 0; i < n; i++)
    cr_expect(expect_valid(&f[i], f[i].def), "%s default \"%s\"", f[i].name, f[i].def);
}

/* Values that parse but cannot be used at init. */
Test(badconfig, timeline_that_cannot_be_written) {
  try_init("HVD_TIMELINE", "/nonexistent-dir/t.json", 0);
  try_init("HOROVOD_TIMELINE", "/nonexistent-dir/t.json", 0);
  try_init("HVD_TIMELINE", ".", 0); /* a directory */
  try_init("HVD_TIMELINE", "t.json", 1);
  cr_expect_eq(access("t.json", F_OK), 0, "the timeline file was written");
}

/* ---- job identity (runtime/env.c) ------------------------------------------------------- */

typedef struct {
  const char *context; /* "A=1 B=2": set first */
  const char *var;
  const char *value;
  int ok;
  const char *names; /* the variable the message must name, when not var */
} id_case_t;

static void with_context(const char *context, int set) {
  char buf[512];
  snprintf(buf, sizeof buf, "%s", context ? context : "");
  char *save;
  for (char *kv = strtok_r(buf, " ", &save); kv; kv = strtok_r(NULL, " ", &save)) {
    char *eq = strchr(kv, '=');
    *eq = '\0';
    if (set) setenv(kv, eq + 1, 1);
    else unsetenv(kv);
  }
}

#define TOKEN "0123456789abcdef0123456789abcdef"
#define RDV "HVD_RENDEZVOUS_ADDR=127.0.0.1 HVD_RENDEZVOUS_PORT=29999 HVD_JOB_TOKEN=" TOKEN

Test(badconfig, job_identity) {
  char host_max[300], host_long[300];
  memset(host_max, 'h', sizeof host_max);
  host_max[255] = '\0';
  memset(host_long, 'h', sizeof host_long);
  host_long[256] = '\0';
  cr_assert_eq(strlen(TOKEN), HVD_RDV_TOKEN_LEN);
  const id_case_t cases[] = {
      /* what a one-rank job started by hvdrun gets */
      {RDV " HVD_SIZE=1 HVD_LOCAL_RANK=0 HVD_LOCAL_SIZE=1 HVD_CROSS_RANK=0 HVD_CROSS_SIZE=1",
       "HVD_RANK", "0", 1, NULL},
      {NULL, "HVD_SIZE", "abc", 0, NULL},
      {NULL, "HVD_SIZE", "1x", 0, NULL},
      {NULL, "HVD_SIZE", "-1", 0, NULL},
      {NULL, "HVD_SIZE", "0", 0, NULL},
      {NULL, "HVD_SIZE", " 1", 0, NULL},
      {NULL, "HVD_SIZE", "1e300", 0, NULL},
      {NULL, "HVD_SIZE", "99999999999999999999", 0, NULL},
      {NULL, "HVD_SIZE", "2", 0, NULL}, /* without HVD_RANK */
      {"HVD_RANK=1", "HVD_SIZE", "2", 0, NULL}, /* without a rendezvous */
      {NULL, "HVD_SIZE", "1", 1, NULL},
      {NULL, "HVD_SIZE", "", 1, NULL},
      {NULL, "HOROVOD_SIZE", "abc", 0, NULL},
      {NULL, "HVD_RANK", "abc", 0, NULL},
      {NULL, "HVD_RANK", "-1", 0, NULL},
      {NULL, "HVD_RANK", "1", 0, NULL}, /* >= size */
      {NULL, "HVD_RANK", "99999999999999999999", 0, NULL},
      {NULL, "HVD_RANK", "0", 1, NULL},
      {NULL, "HOROVOD_RANK", "x", 0, NULL},
      {"HVD_SIZE=2", "HVD_RANK", "2", 0, NULL},
      {NULL, "HVD_LOCAL_SIZE", "0", 0, NULL},
      {NULL, "HVD_LOCAL_SIZE", "2", 0, NULL}, /* > size */
      {NULL, "HVD_LOCAL_SIZE", "abc", 0, NULL},
      {NULL, "HVD_LOCAL_SIZE", "1", 1, NULL},
      {NULL, "HOROVOD_LOCAL_SIZE", "-1", 0, NULL},
      {NULL, "HVD_LOCAL_RANK", "1", 0, NULL},
      {NULL, "HVD_LOCAL_RANK", "-1", 0, NULL},
      {NULL, "HVD_LOCAL_RANK", "1e300", 0, NULL},
      {NULL, "HVD_LOCAL_RANK", "0", 1, NULL},
      {NULL, "HOROVOD_LOCAL_RANK", "abc", 0, NULL},
      {NULL, "HVD_CROSS_SIZE", "0", 0, NULL},
      {NULL, "HVD_CROSS_SIZE", "2", 0, NULL},
      {NULL, "HVD_CROSS_SIZE", "1", 1, NULL},
      {NULL, "HOROVOD_CROSS_SIZE", "abc", 0, NULL},
      {NULL, "HVD_CROSS_RANK", "1", 0, NULL},
      {NULL, "HVD_CROSS_RANK", "-1", 0, NULL},
      {NULL, "HVD_CROSS_RANK", "0", 1, NULL},
      {NULL, "HOROVOD_CROSS_RANK", "abc", 0, NULL},
      {NULL, "HVD_HOSTNAME", "abc", 1, NULL},
      {NULL, "HVD_HOSTNAME", host_max, 1, NULL},
      {NULL, "HVD_HOSTNAME", host_long, 0, NULL},
      {NULL, "HOROVOD_HOSTNAME", host_long, 0, NULL},
      {NULL, "HVD_RENDEZVOUS_ADDR", "127.0.0.1", 0, NULL}, /* without a port */
      {"HVD_RENDEZVOUS_PORT=29999 HVD_JOB_TOKEN=" TOKEN, "HVD_RENDEZVOUS_ADDR", host_long, 0, NULL},
      {"HVD_RENDEZVOUS_ADDR=127.0.0.1 HVD_JOB_TOKEN=" TOKEN, "HVD_RENDEZVOUS_PORT", "abc", 0, NULL},
      {"HVD_RENDEZVOUS_ADDR=127.0.0.1 HVD_JOB_TOKEN=" TOKEN, "HVD_RENDEZVOUS_PORT", "-1", 0, NULL},
      {"HVD_RENDEZVOUS_ADDR=127.0.0.1 HVD_JOB_TOKEN=" TOKEN, "HVD_RENDEZVOUS_PORT", "0", 0, NULL},
      {"HVD_RENDEZVOUS_ADDR=127.0.0.1 HVD_JOB_TOKEN=" TOKEN, "HVD_RENDEZVOUS_PORT", "65536", 0, NULL},
      {"HVD_RENDEZVOUS_ADDR=127.0.0.1 HVD_JOB_TOKEN=" TOKEN, "HVD_RENDEZVOUS_PORT",
       "99999999999999999999", 0, NULL},
      {"HVD_RENDEZVOUS_ADDR=127.0.0.1 HVD_JOB_TOKEN=" TOKEN, "HVD_RENDEZVOUS_PORT", "65535", 1, NULL},
      {"HVD_RENDEZVOUS_ADDR=127.0.0.1 HVD_JOB_TOKEN=" TOKEN, "HOROVOD_GLOO_RENDEZVOUS_PORT",
       "x", 0, NULL},
      {"HVD_RENDEZVOUS_ADDR=127.0.0.1 HVD_RENDEZVOUS_PORT=29999", "HVD_JOB_TOKEN", "abc", 0, NULL},
      {"HVD_RENDEZVOUS_ADDR=127.0.0.1 HVD_RENDEZVOUS_PORT=29999", "HVD_JOB_TOKEN", TOKEN "0", 0, NULL},
      {"HVD_RENDEZVOUS_ADDR=127.0.0.1 HVD_RENDEZVOUS_PORT=29999", "HVD_JOB_TOKEN", TOKEN, 1, NULL},
      {"HVD_RENDEZVOUS_ADDR=127.0.0.1 HVD_RENDEZVOUS_PORT=29999", "HOROVOD_JOB_TOKEN", "abc", 0, NULL},
      /* mpirun's and srun's variables, where hvdrun's are absent */
      {NULL, "OMPI_COMM_WORLD_RANK", "abc", 0, NULL},
      {NULL, "OMPI_COMM_WORLD_RANK", "-1", 0, NULL},
      {NULL, "OMPI_COMM_WORLD_RANK", "0", 1, NULL},
      {"OMPI_COMM_WORLD_RANK=0", "OMPI_COMM_WORLD_SIZE", "0", 0, NULL},
      {"OMPI_COMM_WORLD_RANK=0", "OMPI_COMM_WORLD_SIZE", "1e300", 0, NULL},
      {"OMPI_COMM_WORLD_RANK=0", "OMPI_COMM_WORLD_LOCAL_SIZE", "2", 0, NULL},
      {"OMPI_COMM_WORLD_RANK=0", "OMPI_COMM_WORLD_LOCAL_RANK", "x", 0, NULL},
      {"OMPI_COMM_WORLD_RANK=1", "OMPI_COMM_WORLD_SIZE", "2", 0, "HVD_RENDEZVOUS_ADDR"},
      {"SLURM_STEP_NUM_TASKS=1", "SLURM_PROCID", "abc", 0, NULL},
      {"SLURM_STEP_NUM_TASKS=1", "SLURM_PROCID", "0", 1, NULL},
      {"SLURM_PROCID=0", "SLURM_STEP_NUM_TASKS", "0", 0, NULL},
      {"SLURM_PROCID=0", "SLURM_STEP_NUM_TASKS", "-5", 0, NULL},
      {"SLURM_PROCID=0 SLURM_STEP_NUM_TASKS=1", "SLURM_STEP_NUM_NODES", "abc", 0, NULL},
      {"SLURM_PROCID=0 SLURM_STEP_NUM_TASKS=1", "SLURM_NODEID", "1", 0, NULL},
      {"SLURM_PROCID=0 SLURM_STEP_NUM_TASKS=1", "SLURM_LOCALID", "1", 0, NULL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    with_context(cases[i].context, 1);
    /* Identity messages need not repeat the value (a job token must not be logged) */
    try_init_msg(cases[i].var, cases[i].value, cases[i].ok, cases[i].names, 0);
    with_context(cases[i].context, 0);
  }
}

/* A rendezvous address that does not resolve: a bootstrap failure, named. */
Test(badconfig, rendezvous_address_that_does_not_resolve) {
  setenv("HVD_SIZE", "2", 1);
  setenv("HVD_RANK", "1", 1);
  setenv("HVD_RENDEZVOUS_ADDR", "no-such-host.invalid", 1);
  setenv("HVD_RENDEZVOUS_PORT", "29999", 1);
  setenv("HVD_JOB_TOKEN", TOKEN, 1);
  setenv("HVD_START_TIMEOUT", "2", 1);
  cap_clear();
  hvd_ctx_t *ctx;
  hvd_status_t rc = hvd_init(&ctx);
  cr_assert_eq(rc, HVD_ERR_BOOTSTRAP, "%s\n%s", hvd_status_string(rc), cap_text());
  cr_assert_null(ctx);
  cr_assert(strstr(cap_text(), "HVD_RENDEZVOUS_ADDR=no-such-host.invalid") != NULL, "%s",
            cap_text());
}
