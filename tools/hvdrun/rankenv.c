/*
 * The environment of one rank (see hvdrun_rank_env in hvdrun.h).
 *
 * Precedence, highest first: the job's own variables (HVD_RANK ... HVD_JOB_TOKEN),
 * the settings from flags (--log-level -> HVD_LOG_LEVEL ...), the -x variables, then
 * what hvdrun inherited. A name we set also hides its HOROVOD_* alias from the
 * inherited environment, so that a nested or re-run job cannot pick up a stale value
 * through the alias. Remote ranks inherit only HVD_*, HOROVOD_*, FI_* and the
 * sanitizers' *SAN_OPTIONS from hvdrun: the rest of their environment is the remote
 * login's, plus -x.
 */
#include <stdlib.h>
#include <string.h>

#include "tools/hvdrun/hvdrun.h"

extern char **environ;

static size_t name_len(const char *entry) {
  const char *eq = strchr(entry, '=');
  return eq != NULL ? (size_t)(eq - entry) : strlen(entry);
}

/* Does entry's name equal one already chosen, or is it the HOROVOD_ alias of one? */
static int taken(const char *entry, char *const *chosen, size_t n) {
  size_t len = name_len(entry);
  for (size_t i = 0; i < n; i++) {
    size_t cl = name_len(chosen[i]);
    if (cl == len && memcmp(entry, chosen[i], len) == 0) return 1;
    if (cl > 4 && memcmp(chosen[i], "HVD_", 4) == 0 && len == cl + 4 &&
        memcmp(entry, "HOROVOD_", 8) == 0 &&
        memcmp(entry + 8, chosen[i] + 4, cl - 4) == 0)
      return 1;
  }
  return 0;
}

/* The sanitizers' settings travel too, so that a sanitized job reports (log_path,
 * leak detection, halting) the same way on every host. */
static int forwarded_remote(const char *entry) {
  static const char *const san[] = {"ASAN_OPTIONS=", "UBSAN_OPTIONS=", "LSAN_OPTIONS=",
                                    "TSAN_OPTIONS="};
  for (size_t i = 0; i < sizeof san / sizeof san[0]; i++)
    if (strncmp(entry, san[i], strlen(san[i])) == 0) return 1;
  return strncmp(entry, "HVD_", 4) == 0 || strncmp(entry, "HOROVOD_", 8) == 0 ||
         strncmp(entry, "FI_", 3) == 0;
}

char **hvdrun_rank_env(const hvdrun_job_t *job, const hvdrun_rank_t *r, int remote,
                       int with_token, size_t *n, hvd_err_t *err) {
  const hvdrun_opts_t *o = hvdrun_job_opts(job);
  hvdrun_var_t vars[HVDRUN_NVARS];
  int nvars = hvdrun_job_rank_vars(job, r, vars);
  size_t nenv = 0, strbytes = 0;

  for (char **e = environ; e != NULL && *e != NULL; e++)
    nenv++;
  for (int i = 0; i < nvars; i++)
    strbytes += strlen(vars[i].name) + strlen(vars[i].value) + 2;

  size_t nptr = (size_t)nvars + (size_t)o->nflag_env + (size_t)o->nx_env + nenv + 1;
  char **env = malloc(nptr * sizeof *env + strbytes);
  if (env == NULL) {
    hvd_err_set(err, "out of memory building the environment of rank %d", r->rank);
    return NULL;
  }
  char *s = (char *)(env + nptr);
  size_t k = 0;
  for (int i = 0; i < nvars; i++) {
    size_t nl = strlen(vars[i].name), vl = strlen(vars[i].value);
    memcpy(s, vars[i].name, nl);
    s[nl] = '=';
    memcpy(s + nl + 1, vars[i].value, vl + 1);
    env[k++] = s;
    s += nl + vl + 2;
  }
  for (int i = o->nflag_env - 1; i >= 0; i--) /* the later one of a name wins */
    if (!taken(o->flag_env[i], env, k)) env[k++] = o->flag_env[i];
  for (int i = o->nx_env - 1; i >= 0; i--)
    if (!taken(o->x_env[i], env, k)) env[k++] = o->x_env[i];
  size_t set = k;
  for (size_t i = 0; i < nenv; i++) {
    if (remote && !forwarded_remote(environ[i])) continue;
    if (!taken(environ[i], env, set)) env[k++] = environ[i];
  }
  if (!with_token) { /* the job's variables come first: find it there */
    for (size_t i = 0; i < (size_t)nvars; i++)
      if (strncmp(env[i], "HVD_JOB_TOKEN=", 14) == 0) {
        memmove(&env[i], &env[i + 1], (k - i - 1) * sizeof *env);
        k--;
        break;
      }
  }
  env[k] = NULL;
  if (n != NULL) *n = k;
  return env;
}
