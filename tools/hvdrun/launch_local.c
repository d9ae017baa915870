/*
 * The local launcher: ranks run on this host as children of hvdrun.
 *
 * A rank gets the environment of hvdrun_rank_env (hvdrun's own, with the job's
 * HVD_* variables, the flag settings and -x on top) and runs in a new session
 * (UV_PROCESS_DETACHED: setsid), so its pid is also its process group id and
 * signalling -pid reaches everything it started that stayed in its group. What is
 * spawned is hvdrun's exec trampoline (wrapper.c), which binds the CPUs, arranges to
 * be killed with hvdrun, and execs the program in the same process. The job token
 * travels only in the environment, never on a command line.
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

/* argv of the trampoline: exe, flag, --ppid, --bind-to, --map-by, --, PROGRAM ARGS. */
#define TRAMPOLINE_ARGS 6

typedef struct local_block {
  char **env;
  char args[3][64];
  char *argv[]; /* TRAMPOLINE_ARGS + the program's + NULL */
} local_block_t;

static int local_prepare(const hvdrun_job_t *job, const hvdrun_rank_t *r,
                         hvdrun_cmd_t *cmd, hvd_err_t *err) {
  const hvdrun_opts_t *opts = hvdrun_job_opts(job);
  size_t nargs = 0;
  while (opts->argv[nargs] != NULL) nargs++;
  local_block_t *b = calloc(1, sizeof *b + (TRAMPOLINE_ARGS + nargs + 1) * sizeof(char *));
  if (b == NULL) {
    hvd_err_set(err, "out of memory preparing rank %d", r->rank);
    return -1;
  }
  b->env = hvdrun_rank_env(job, r, 0, 1, NULL, err);
  if (b->env == NULL) {
    free(b);
    return -1;
  }
  snprintf(b->args[0], sizeof b->args[0], "--ppid=%d", (int)getpid());
  snprintf(b->args[1], sizeof b->args[1], "--bind-to=%s", hvdrun_bind_names[opts->bind_to]);
  snprintf(b->args[2], sizeof b->args[2], "--map-by=%s", hvdrun_map_names[opts->map_by]);
  size_t k = 0;
  b->argv[k++] = (char *)opts->self_exe;
  b->argv[k++] = HVDRUN_EXEC_FLAG;
  for (int i = 0; i < 3; i++) b->argv[k++] = b->args[i];
  b->argv[k++] = "--";
  for (size_t i = 0; i < nargs; i++) b->argv[k++] = opts->argv[i];
  b->argv[k] = NULL;

  cmd->file = opts->self_exe;
  cmd->argv = b->argv;
  cmd->env = b->env;
  cmd->flags = UV_PROCESS_DETACHED;
  return 0;
}

static void local_release(hvdrun_cmd_t *cmd) {
  if (cmd->argv != NULL) {
    local_block_t *b =
        (local_block_t *)((char *)cmd->argv - offsetof(local_block_t, argv));
    free(b->env);
    free(b);
  }
  cmd->argv = NULL;
  cmd->env = NULL;
}

static int local_signal(hvdrun_rank_t *r, int sig) {
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

#define MINE(r) ((r)->launcher == &hvdrun_local_launcher)

static void poll_alive_kill(hvdrun_rank_t *ranks, int n) {
  for (int i = 0; i < n; i++)
    if (MINE(&ranks[i]))
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
    if (MINE(&ranks[i]) && ranks[i].pid > 0) pgids[npg++] = ranks[i].pid;
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
    if (!MINE(&ranks[i])) continue;
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
