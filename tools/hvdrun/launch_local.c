/*
 * The local launcher: ranks run on this host as children of hvdrun.
 *
 * A rank gets hvdrun's environment with the job's HVD_* variables set (stale values
 * of the same names, and their HOROVOD_* aliases, are dropped so that a nested or
 * re-run job cannot pick them up) and runs in a new session (UV_PROCESS_DETACHED:
 * setsid), so its pid is also its process group id and signalling -pid reaches
 * everything it started that stayed in its group. The job token travels only in
 * the environment, never on a command line.
 *
 * Whether anything of a rank is left is read from /proc (a process group member
 * that is not a zombie), not from kill(-pgid, 0): the latter also counts zombies,
 * and orphans killed by us are reparented to an init that may reap them late (or,
 * in a container whose pid 1 is not a real init, never).
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools/hvdrun/hvdrun.h"

extern char **environ;

/* Is entry ("NAME=value") one of the names the job sets, or its HOROVOD_ alias? */
static int is_job_var(const char *entry, const hvdrun_var_t *vars, int nvars) {
  const char *eq = strchr(entry, '=');
  size_t n = eq != NULL ? (size_t)(eq - entry) : strlen(entry);
  for (int i = 0; i < nvars; i++) {
    const char *name = vars[i].name;
    size_t len = strlen(name);
    if (n == len && memcmp(entry, name, n) == 0) return 1;
    /* HVD_X -> HOROVOD_X */
    if (strncmp(name, "HVD_", 4) == 0 && n == len + 4 &&
        memcmp(entry, "HOROVOD_", 8) == 0 && memcmp(entry + 8, name + 4, len - 4) == 0)
      return 1;
  }
  return 0;
}

static int local_prepare(const hvdrun_job_t *job, const hvdrun_rank_t *r,
                         hvdrun_cmd_t *cmd, hvd_err_t *err) {
  hvdrun_var_t vars[HVDRUN_NVARS];
  int nvars = hvdrun_job_rank_vars(job, r, vars);
  size_t nenv = 0;
  size_t strbytes = 0;

  for (char **e = environ; e != NULL && *e != NULL; e++) nenv++;
  for (int i = 0; i < nvars; i++)
    strbytes += strlen(vars[i].name) + strlen(vars[i].value) + 2;

  /* One block: the pointer array, then our "NAME=value" strings; release frees it. */
  size_t nptr = (size_t)nvars + nenv + 1;
  char **env = malloc(nptr * sizeof *env + strbytes);
  if (env == NULL) {
    hvd_err_set(err, "out of memory building the environment of rank %d", r->rank);
    return -1;
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
  for (size_t i = 0; i < nenv; i++)
    if (!is_job_var(environ[i], vars, nvars)) env[k++] = environ[i];
  env[k] = NULL;

  const hvdrun_opts_t *opts = hvdrun_job_opts(job);
  cmd->file = opts->argv[0];
  cmd->argv = opts->argv;
  cmd->env = env;
  cmd->flags = UV_PROCESS_DETACHED;
  return 0;
}

static void local_release(hvdrun_cmd_t *cmd) {
  free(cmd->env);
  cmd->env = NULL;
}

static int local_signal(const hvdrun_rank_t *r, int sig) {
  if (r->pid <= 0) return -1;
  /* The group outlives its leader while anything the rank started is still in it. */
  if (kill(-r->pid, sig) == 0) return 0;
  if (errno == ESRCH && r->running && kill(r->pid, sig) == 0)
    return 0; /* left its group */
  return -1;
}

static int cmp_pid(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b;
  return (x > y) - (x < y);
}

/* State and process group of /proc/<name>/stat; 0 on success. */
static int read_stat(const char *name, char *state, int *pgrp) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%s/stat", name);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = '\0';
  /* "pid (comm) S ppid pgrp ...": comm may hold anything, so parse after the last ')'. */
  const char *p = strrchr(buf, ')');
  int ppid;
  if (p == NULL || sscanf(p + 1, " %c %d %d", state, &ppid, pgrp) != 3) return -1;
  return 0;
}

static void poll_alive_kill(hvdrun_rank_t *ranks, int n) {
  for (int i = 0; i < n; i++)
    ranks[i].alive =
        ranks[i].running || (ranks[i].pid > 0 && kill(-ranks[i].pid, 0) == 0);
}

static void local_poll_alive(hvdrun_rank_t *ranks, int n) {
  int *pgids = malloc((size_t)(n > 0 ? n : 1) * sizeof *pgids);
  int *live = calloc((size_t)(n > 0 ? n : 1), sizeof *live);
  DIR *dir = opendir("/proc");
  struct dirent *de;
  int npg = 0;

  if (pgids == NULL || live == NULL || dir == NULL) {
    poll_alive_kill(ranks, n);
    goto out;
  }
  for (int i = 0; i < n; i++)
    if (ranks[i].pid > 0) pgids[npg++] = ranks[i].pid;
  qsort(pgids, (size_t)npg, sizeof *pgids, cmp_pid);
  while ((de = readdir(dir)) != NULL) {
    char state;
    int pgrp;
    if (!isdigit((unsigned char)de->d_name[0])) continue;
    if (read_stat(de->d_name, &state, &pgrp) != 0 || state == 'Z' || state == 'X')
      continue;
    int *hit = bsearch(&pgrp, pgids, (size_t)npg, sizeof *pgids, cmp_pid);
    if (hit != NULL) live[hit - pgids] = 1;
  }
  for (int i = 0; i < n; i++) {
    int *hit = ranks[i].pid > 0
                   ? bsearch(&ranks[i].pid, pgids, (size_t)npg, sizeof *pgids, cmp_pid)
                   : NULL;
    ranks[i].alive = ranks[i].running || (hit != NULL && live[hit - pgids]);
  }
out:
  if (dir != NULL) closedir(dir);
  free(live);
  free(pgids);
}

const hvdrun_launcher_t hvdrun_local_launcher = {
    .name = "local",
    .prepare = local_prepare,
    .release = local_release,
    .signal = local_signal,
    .poll_alive = local_poll_alive,
};
