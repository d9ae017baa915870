/*
 * hvdrun internals shared by its files:
 *   main.c          command line, --help, --version, messages
 *   job.c           the job: rendezvous server, spawning, output, supervision
 *   launch_local.c  the local rank launcher (environment, process groups)
 *   output.c        the pure line splitter behind the [rank]<stdout>: prefixes
 *
 * A launcher says how one rank is started and signalled; job.c does the rest
 * (pipes, uv_spawn of what the launcher prepared, exit statuses, escalation). The
 * local launcher runs PROGRAM itself; an ssh launcher will prepare `ssh host ...`
 * instead and signal that process, with job.c unchanged.
 */
#ifndef HVDRUN_HVDRUN_H
#define HVDRUN_HVDRUN_H

#include <limits.h>
#include <stdint.h>
#include <uv.h>

#include "common/err.h"
#include "tools/hvdrun/output.h"
#include "transport/rdv.h"

#define HVDRUN_DEFAULT_START_TIMEOUT 60 /* s */
#define HVDRUN_MAX_NP 65536
#define HVDRUN_FAIL_GRACE_MS 1000 /* first failure -> SIGTERM to the others */
#define HVDRUN_KILL_DELAY_MS 3000 /* SIGTERM -> SIGKILL */
#define HVDRUN_DRAIN_MS 2000      /* SIGKILL -> stop waiting for pipes and exits */

typedef struct hvdrun_opts {
  int np;
  int verbose;
  int tag_output;
  int start_timeout_s; /* 0: ranks may take forever to connect */
  char **argv;         /* PROGRAM ARGS..., NULL-terminated (points into main's argv) */
} hvdrun_opts_t;

typedef struct hvdrun_job hvdrun_job_t;

/* One rank, owned by the job. */
typedef struct hvdrun_rank {
  hvdrun_job_t *job;
  int rank;
  int local_rank;
  const char *host; /* where it runs (HVD_HOSTNAME) */
  uv_process_t proc;
  uv_pipe_t pipes[2];        /* read ends of its stdout [0] and stderr [1] */
  hvdrun_linebuf_t lines[2]; /* partial lines of each */
  unsigned pipe_open[2];     /* being read; uv_close not yet requested */
  unsigned spawned : 1;      /* proc is live (needs uv_close) */
  unsigned running : 1;      /* spawned and not reaped */
  unsigned connected : 1;    /* said HELLO to the rendezvous */
  unsigned alive : 1;        /* something of it still runs (launcher->poll_alive) */
  int pid;                   /* also its process group id */
  int64_t exit_status;
  int term_signal;
} hvdrun_rank_t;

/* What to spawn for one rank. */
typedef struct hvdrun_cmd {
  const char *file; /* looked up in PATH if it has no '/' */
  char **argv;
  char **env;
  unsigned flags; /* uv_process_flags */
} hvdrun_cmd_t;

typedef struct hvdrun_launcher {
  const char *name;
  /* Fill cmd for rank r of job. Returns 0, or -1 with err set. */
  int (*prepare)(const hvdrun_job_t *job, const hvdrun_rank_t *r, hvdrun_cmd_t *cmd,
                 hvd_err_t *err);
  /* Free what prepare allocated (cmd may be partly filled). */
  void (*release)(hvdrun_cmd_t *cmd);
  /* Deliver sig to everything rank r runs (it may have exited already). Returns 0
   * if something received it, -1 if nothing of the rank is left. */
  int (*signal)(const hvdrun_rank_t *r, int sig);
  /* Set each rank's alive flag: does any process it started still run (zombies
   * waiting for a slow or absent reaper do not count)? */
  void (*poll_alive)(hvdrun_rank_t *ranks, int n);
} hvdrun_launcher_t;

extern const hvdrun_launcher_t hvdrun_local_launcher;

/* A variable the job sets for a rank. */
typedef struct hvdrun_var {
  const char *name;
  char value[HOST_NAME_MAX + 1];
} hvdrun_var_t;

#define HVDRUN_NVARS 10

/* Fill the HVD_* variables of rank r (the job token included). Returns the count. */
int hvdrun_job_rank_vars(const hvdrun_job_t *job, const hvdrun_rank_t *r,
                         hvdrun_var_t vars[HVDRUN_NVARS]);
const hvdrun_opts_t *hvdrun_job_opts(const hvdrun_job_t *job);

/* Run the whole job; returns hvdrun's exit status. */
int hvdrun_run(const hvdrun_opts_t *opts, const hvdrun_launcher_t *launcher);

/* "hvdrun: <message>\n" to stderr in one write. */
void hvdrun_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Write all of buf to fd (blocking; retries short writes, EINTR and EAGAIN).
 * Returns 0 or -errno. */
int hvdrun_write_all(int fd, const void *buf, size_t len);
/* "SIGKILL" for 9 (or "signal 9" if the name is unknown), into buf. */
const char *hvdrun_signame(int sig, char *buf, size_t size);

#endif
