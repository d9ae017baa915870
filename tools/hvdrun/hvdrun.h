/*
 * hvdrun internals shared by its files:
 *   main.c          command line, --help, --version, messages
 *   hosts.c         -H / --hostfile, rank placement on hosts, the rendezvous address
 *   job.c           the job: rendezvous server, spawning, output, supervision
 *   rankenv.c       the environment of one rank
 *   launch_local.c  the local rank launcher (exec trampoline, process groups)
 *   launch_ssh.c    the ssh rank launcher and the ssh reachability check
 *   wrapper.c       what runs between the launcher and the program: the exec
 *                   trampoline of local ranks and the remote wrapper of ssh ranks
 *   bind.c          hwloc: topology summary and per-rank CPU placement
 *   output.c        the pure line splitter behind the [rank]<stdout>: prefixes
 *
 * A launcher says how one rank is started and signalled; job.c does the rest
 * (pipes, uv_spawn of what the launcher prepared, exit statuses, escalation). The
 * local launcher runs the exec trampoline (hvdrun itself), which execs PROGRAM; the
 * ssh launcher runs `ssh host hvdrun --hvdrun-remote ...`, feeds it the rank's
 * environment (job token included) on ssh's stdin and signals the rank by writing
 * to that stdin.
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
/* First failure -> SIGTERM to the others. Time for them to report the failure and
 * leave by themselves: their operations fail within milliseconds of the ABORT, a
 * background thread stuck in the transport makes that 0.25 s and hvd_shutdown up to
 * 1 s (runtime/ctx.h), and an application may want to save something. */
#define HVDRUN_FAIL_GRACE_MS 3000
#define HVDRUN_KILL_DELAY_MS 3000 /* SIGTERM -> SIGKILL */
#define HVDRUN_DRAIN_MS 2000      /* SIGKILL -> stop waiting for pipes and exits */
#define HVDRUN_SSH_REAP_MS 500    /* killing stuck ssh clients -> giving up on them */
/* ssh keepalive for rank sessions: a host that stops answering (link down) ends its
 * ssh (status 255) after about INTERVAL x COUNT s, and hvdrun fails the job naming it. */
#define HVDRUN_SSH_ALIVE_INTERVAL 10
#define HVDRUN_SSH_ALIVE_COUNT 3
#define HVDRUN_SSH_CHECK_TIMEOUT 10 /* s: the ssh reachability check, per host */

#define HVDRUN_EXIT_USAGE 2 /* bad command line, too few slots */

/* Hidden first arguments that make hvdrun the trampoline / the remote wrapper. */
#define HVDRUN_EXEC_FLAG "--hvdrun-exec"
#define HVDRUN_REMOTE_FLAG "--hvdrun-remote"
/* First bytes of the remote wrapper's stdin. */
#define HVDRUN_REMOTE_MAGIC "HVDRUN-REMOTE-1"

/* AUTO (the default): an equal share of the host's cores per local rank (all of them
 * for one rank), nothing when ranks outnumber cores; see bind.c. */
typedef enum {
  HVDRUN_BIND_NONE = 0,
  HVDRUN_BIND_CORE,
  HVDRUN_BIND_NUMA,
  HVDRUN_BIND_AUTO
} hvdrun_bind_t;
typedef enum { HVDRUN_MAP_SLOT = 0, HVDRUN_MAP_CORE, HVDRUN_MAP_NUMA } hvdrun_map_t;

extern const char *const hvdrun_bind_names[]; /* "none", "core", "numa", "auto" */
extern const char *const hvdrun_map_names[];  /* "slot", "core", "numa" */

/* One host of -H / --hostfile, and the ranks placed on it. */
typedef struct hvdrun_host {
  char name[HOST_NAME_MAX + 1]; /* as given: HVD_HOSTNAME of its ranks */
  int slots;
  int is_local;   /* spawn without ssh */
  int nranks;     /* ranks placed here (0: unused) */
  int first_rank; /* ranks first_rank .. first_rank + nranks - 1 */
  int index;      /* among the hosts that have ranks */
} hvdrun_host_t;

typedef struct hvdrun_opts {
  int np;
  int verbose;
  int tag_output;
  int dry_run;
  int start_timeout_s;  /* 0: ranks may take forever to connect */
  int start_timeout_given;
  hvdrun_host_t *hosts; /* in -H order; default: this host with np slots */
  int nhosts;
  int nused;            /* hosts with ranks */
  int any_remote;       /* some used host is not this one */
  int ssh_port;         /* 0: ssh's default */
  const char *ssh_identity;
  const char *iface;      /* --network-interface */
  const char *output_dir; /* --output-filename */
  hvdrun_bind_t bind_to;
  hvdrun_map_t map_by;
  /* "NAME=value" the ranks get: settings from flags, and -x (the later entry of a
   * name wins within each list; flags win over -x). */
  char **flag_env;
  int nflag_env;
  char **x_env;
  int nx_env;
  char self_exe[PATH_MAX]; /* this hvdrun, also its path on every remote host */
  char cwd[PATH_MAX];      /* the ranks' working directory */
  char rdv_addr[64];       /* where the ranks reach the rendezvous server */
  char rdv_bind[64];       /* where it listens: rdv_addr, or --rendezvous-bind */
  const char *rdv_bind_flag; /* --rendezvous-bind */
  char **argv;             /* PROGRAM ARGS..., NULL-terminated (points into main's argv) */
} hvdrun_opts_t;

typedef struct hvdrun_job hvdrun_job_t;
typedef struct hvdrun_launcher hvdrun_launcher_t;

/* One rank, owned by the job. */
typedef struct hvdrun_rank {
  hvdrun_job_t *job;
  const hvdrun_launcher_t *launcher;
  const hvdrun_host_t *hostp;
  int rank;
  int local_rank, local_size;
  int cross_rank, cross_size;
  const char *host; /* where it runs (HVD_HOSTNAME) */
  uv_process_t proc;
  uv_pipe_t pipes[2];        /* read ends of its stdout [0] and stderr [1] */
  hvdrun_linebuf_t lines[2]; /* partial lines of each */
  unsigned pipe_open[2];     /* being read; uv_close not yet requested */
  int out_fd[2];             /* --output-filename files, or -1 */
  int stdin_fd;              /* write end of its stdin pipe (ssh ranks), or -1 */
  unsigned spawned : 1;      /* proc is live (needs uv_close) */
  unsigned running : 1;      /* spawned and not reaped */
  unsigned connected : 1;    /* said HELLO to the rendezvous */
  unsigned alive : 1;        /* something of it still runs (launcher->poll_alive) */
  unsigned rdv_unclean : 1;  /* its last rendezvous connection ended without BYE */
  unsigned exit_pending : 1; /* exited 0 while still connected: judged at disconnect */
  int rdv_conns;             /* open rendezvous connections (HELLO done) */
  int pid;                   /* also its process group id */
  int64_t exit_status;
  int term_signal;
} hvdrun_rank_t;

/* What to spawn for one rank. */
typedef struct hvdrun_cmd {
  const char *file; /* looked up in PATH if it has no '/' */
  char **argv;
  char **env;       /* NULL: hvdrun's own environment */
  unsigned flags;   /* uv_process_flags */
  char *stdin_data; /* non-NULL: the rank's stdin is a pipe that starts with these bytes */
  size_t stdin_len;
} hvdrun_cmd_t;

struct hvdrun_launcher {
  const char *name;
  /* Fill cmd for rank r of job. Returns 0, or -1 with err set. */
  int (*prepare)(const hvdrun_job_t *job, const hvdrun_rank_t *r, hvdrun_cmd_t *cmd,
                 hvd_err_t *err);
  /* Free what prepare allocated (cmd may be partly filled). */
  void (*release)(hvdrun_cmd_t *cmd);
  /* Deliver sig to everything rank r runs (it may have exited already). Returns 0
   * if something received it, -1 if nothing of the rank is left. */
  int (*signal)(hvdrun_rank_t *r, int sig);
  /* Set the alive flag of each of ranks[0..n) that uses this launcher (others are
   * left alone): does any process it started still run (zombies waiting for a slow
   * or absent reaper do not count)? */
  void (*poll_alive)(hvdrun_rank_t *ranks, int n);
};

extern const hvdrun_launcher_t hvdrun_local_launcher;
extern const hvdrun_launcher_t hvdrun_ssh_launcher;

/* A variable the job sets for a rank. */
typedef struct hvdrun_var {
  const char *name;
  char value[HOST_NAME_MAX + 1];
} hvdrun_var_t;

#define HVDRUN_NVARS 10

/* Fill the HVD_* variables of rank r (the job token included, last). Returns the
 * count. */
int hvdrun_job_rank_vars(const hvdrun_job_t *job, const hvdrun_rank_t *r,
                         hvdrun_var_t vars[HVDRUN_NVARS]);
const hvdrun_opts_t *hvdrun_job_opts(const hvdrun_job_t *job);

/* rankenv.c: the environment of rank r, as "NAME=value" pointers, NULL-terminated,
 * in one malloc'd block (free() it): the job's variables, the flag settings, the -x
 * variables, then hvdrun's environment (all of it for a local rank; for a remote
 * one only HVD_*, HOROVOD_* and FI_*), each name once. with_token = 0 leaves
 * HVD_JOB_TOKEN out (for printing). *n (if non-NULL) receives the count. Returns
 * NULL with err set when memory is short. */
char **hvdrun_rank_env(const hvdrun_job_t *job, const hvdrun_rank_t *r, int remote,
                       int with_token, size_t *n, hvd_err_t *err);

/* hosts.c */
/* Parse "-H a:2,b:4" (a bare host has 1 slot). Returns 0, or -1 with err. */
int hvdrun_parse_hosts(const char *spec, hvdrun_host_t **hosts, int *nhosts,
                       hvd_err_t *err);
/* Parse a hostfile: "host slots=N" per line, '#' comments. */
int hvdrun_parse_hostfile(const char *path, hvdrun_host_t **hosts, int *nhosts,
                          hvd_err_t *err);
/* Place opts->np ranks on opts->hosts in order, mark local hosts, set nused and
 * any_remote. Returns 0, or -1 with err (too few slots). */
int hvdrun_assign(hvdrun_opts_t *opts, hvd_err_t *err);
/* Fill opts->rdv_addr (see --network-interface) and opts->rdv_bind (the same, unless
 * --rendezvous-bind). Returns 0, or -1 with err. */
int hvdrun_pick_rdv_addr(hvdrun_opts_t *opts, hvd_err_t *err);
/* Local rank, local size, cross rank and cross size of global rank `rank`. */
void hvdrun_rank_place(const hvdrun_opts_t *opts, int rank, const hvdrun_host_t **host,
                       int *local_rank, int *local_size, int *cross_rank,
                       int *cross_size);

/* launch_ssh.c: ssh `test -x <hvdrun>` to every remote host in parallel, each
 * bounded by a timeout. Returns 0, or -1 with one line in err. */
int hvdrun_ssh_check(const hvdrun_opts_t *opts, hvd_err_t *err);
/* The ssh command line for host (argv, NULL-terminated, malloc'd with its strings
 * in one block), running remote_cmd there (NULL: none). */
char **hvdrun_ssh_argv(const hvdrun_opts_t *opts, const char *host, int check_timeout_s,
                       const char *remote_cmd);
/* The remote command of rank r (malloc'd). */
char *hvdrun_ssh_remote_command(const hvdrun_opts_t *opts);

/* wrapper.c: the hidden modes. */
int hvdrun_exec_main(int argc, char **argv);
int hvdrun_remote_main(int argc, char **argv);

/* bind.c */
struct hwloc_topology;
/* Load this host's topology. Returns NULL with err set. */
struct hwloc_topology *hvdrun_topo_load(hvd_err_t *err);
void hvdrun_topo_free(struct hwloc_topology *topo);
/* "1 package, 1 NUMA node, 2 cores, 2 PUs" */
void hvdrun_topo_summary(struct hwloc_topology *topo, char *buf, size_t size);
/* Where local rank lr (of ls on this host) goes: *set receives a new hwloc bitmap
 * (NULL for --bind-to none) and desc a description ("core L#1 (cpus 1)").
 * Returns 0, or -1 with err. */
int hvdrun_placement(struct hwloc_topology *topo, hvdrun_bind_t bind, hvdrun_map_t map,
                     int lr, int ls, void **set, char *desc, size_t size, hvd_err_t *err);
/* Bind the calling (single-threaded) process to set. Returns 0 or -errno. */
int hvdrun_bind_self(struct hwloc_topology *topo, void *set);
void hvdrun_set_free(void *set);

/* Run the whole job; returns hvdrun's exit status. */
int hvdrun_run(const hvdrun_opts_t *opts);

/* "hvdrun: <message>\n" to stderr in one write. */
void hvdrun_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Write all of buf to fd (blocking; retries short writes, EINTR and EAGAIN).
 * Returns 0 or -errno. */
int hvdrun_write_all(int fd, const void *buf, size_t len);
/* "SIGKILL" for 9 (or "signal 9" if the name is unknown), into buf. */
const char *hvdrun_signame(int sig, char *buf, size_t size);
/* Append s to buf (of size, used *off), single-quoted for sh when needed. */
void hvdrun_shell_quote(char *buf, size_t size, size_t *off, const char *s);

#endif
