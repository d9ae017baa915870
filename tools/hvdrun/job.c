/*
 * The job: one libuv loop runs the rendezvous server, the ranks' processes and
 * output pipes, hvdrun's signal handlers and the timers of the stop sequence.
 *
 * Start-up: random job token, rendezvous server on opts->rdv_bind (ephemeral
 * port), then each rank is spawned with whatever its launcher (local or ssh)
 * prepared, its stdout and stderr on real pipes (pipe2, not the socketpairs libuv
 * would make, so that /dev/stdout and friends keep working in the ranks) whose read
 * ends feed a line splitter each; every complete line goes out with one write(2)
 * (and, with --output-filename, the raw bytes also go to the rank's files). A
 * launcher that asks for it gets a stdin pipe that starts with its bytes and stays
 * open (ssh ranks: the remote wrapper's job description and control channel).
 *
 * Supervision is a small state machine, entered on the first failure (a rank that
 * exits non-zero or by a signal, a rank that fails to start, ranks that do not
 * connect within --start-timeout) or on SIGINT/SIGTERM/SIGHUP to hvdrun:
 *
 *   RUNNING --first cause--> ABORTED: the rendezvous server sends ABORT(cause) to
 *       every rank, so their operations fail naming the real culprit;
 *   after HVDRUN_FAIL_GRACE_MS   --> TERMINATED: SIGTERM to every rank's group;
 *   after HVDRUN_KILL_DELAY_MS   --> KILLED: SIGKILL to every rank's group;
 *   after HVDRUN_DRAIN_MS        --> GIVEN_UP: stop waiting for pipes and exits.
 *
 * A signal to hvdrun jumps to TERMINATED forwarding that signal; a second one jumps
 * to KILLED. Only the first cause is kept: it is hvdrun's last line and decides the
 * exit status. The job ends once every rank is reaped, every pipe has reached EOF
 * and (when stopping) no process of any rank's group is left. A rank whose
 * rendezvous connection drops is not a failure until its exit status says so; but a
 * rank that exits 0 after hvd_init without hvd_shutdown (its connection ended without
 * BYE) is one: the others would wait for it forever. Its exit and its connection's
 * end may be seen in either order, so a rank that exits 0 while still connected is
 * judged when the connection ends (the kernel closes it at exit).
 *
 * hvdrun is a child subreaper (PR_SET_CHILD_SUBREAPER): what a rank started and
 * left behind becomes hvdrun's child when the rank dies, and hvdrun reaps it, so
 * no zombie of the job outlives it even where pid 1 reaps late or never.
 */
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hwloc.h>

#include "common/util.h"
#include "tools/hvdrun/hvdrun.h"

#define START_TIMEOUT_LIST_MAX 400 /* characters of rank list in the timeout message */
/* All ranks exited 0: how long what they left behind may stay before it is stopped. */
#define HVDRUN_LINGER_MS 1000

typedef enum {
  PHASE_RUNNING = 0,
  PHASE_ABORTED,    /* cause known, rendezvous aborted, grace period */
  PHASE_TERMINATED, /* SIGTERM (or hvdrun's signal) sent */
  PHASE_KILLED,     /* SIGKILL sent */
  PHASE_GIVEN_UP    /* not waiting any more */
} stop_phase_t;

struct hvdrun_job {
  uv_loop_t loop;
  const hvdrun_opts_t *opts;
  char token[HVD_RDV_TOKEN_LEN + 1];
  const char *rdv_addr;
  int rdv_port;
  hvd_rdv_server_t *server;

  hvdrun_rank_t *ranks;
  int size;
  int nrunning; /* spawned, not reaped */
  int npipes;   /* output pipes still being read */

  uv_signal_t signals[4];
  int nsignals;
  int *sorted_pids; /* the ranks' pids, sorted: orphans are the other children */
  int nsorted;
  uv_timer_t start_timer; /* --start-timeout */
  uv_timer_t stop_timer;  /* next step of the stop sequence */
  uv_timer_t poll_timer;  /* while stopping: is anything of the ranks left? */
  int timers_init;

  stop_phase_t phase;
  int last_sig; /* last signal sent to the ranks by the stop sequence */
  int have_cause;
  int exit_code;
  char cause[HVD_ERR_MSG_MAX];
  int finished;
  int ssh_killed;           /* the ssh clients of sessions that would not end were killed */
  int nlinebufs;            /* ranks whose line buffers are initialised */
  uint64_t linger_deadline; /* all exited 0: when to stop what they left; 0 = not yet */
  int out_broken[3];        /* writes to fd 1 / 2 failed: drop further output */

  char readbuf[64 * 1024]; /* one read at a time on this loop: shared by all pipes */
};

const hvdrun_opts_t *hvdrun_job_opts(const hvdrun_job_t *job) { return job->opts; }

int hvdrun_job_rank_vars(const hvdrun_job_t *job, const hvdrun_rank_t *r,
                         hvdrun_var_t vars[HVDRUN_NVARS]) {
  int n = 0;
#define VAR(nm, ...)                                                                     \
  do {                                                                                   \
    vars[n].name = (nm);                                                                 \
    snprintf(vars[n].value, sizeof vars[n].value, __VA_ARGS__);                          \
    n++;                                                                                 \
  } while (0)
  VAR("HVD_RANK", "%d", r->rank);
  VAR("HVD_SIZE", "%d", job->size);
  VAR("HVD_LOCAL_RANK", "%d", r->local_rank);
  VAR("HVD_LOCAL_SIZE", "%d", r->local_size);
  VAR("HVD_CROSS_RANK", "%d", r->cross_rank);
  VAR("HVD_CROSS_SIZE", "%d", r->cross_size);
  VAR("HVD_HOSTNAME", "%s", r->host);
  VAR("HVD_RENDEZVOUS_ADDR", "%s", job->rdv_addr);
  if (job->rdv_port > 0)
    VAR("HVD_RENDEZVOUS_PORT", "%d", job->rdv_port);
  else
    VAR("HVD_RENDEZVOUS_PORT", "%s", "(chosen at start)"); /* --dry-run */
  VAR("HVD_JOB_TOKEN", "%s", job->token);
#undef VAR
  return n;
}

/* ---- small helpers --------------------------------------------------------------- */

/* Record the first cause of failure; later ones are ignored. Returns 1 if recorded. */
static int set_cause(hvdrun_job_t *job, int exit_code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int set_cause(hvdrun_job_t *job, int exit_code, const char *fmt, ...) {
  if (job->have_cause) return 0;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(job->cause, sizeof job->cause, fmt, ap);
  va_end(ap);
  job->have_cause = 1;
  job->exit_code = exit_code;
  return 1;
}

/* Append ranks as "0-3,5,7" to buf. */
static void format_rank_list(char *buf, size_t size, const int *list, int n) {
  size_t off = 0;
  buf[0] = '\0';
  for (int i = 0; i < n && off < size; i++) {
    int j = i;
    while (j + 1 < n && list[j + 1] == list[j] + 1) j++;
    int w;
    if (off + 16 > size || off > START_TIMEOUT_LIST_MAX) {
      snprintf(buf + off, size - off, ",...");
      return;
    }
    if (j - i >= 2)
      w = snprintf(buf + off, size - off, "%s%d-%d", i ? "," : "", list[i], list[j]);
    else if (j > i)
      w = snprintf(buf + off, size - off, "%s%d,%d", i ? "," : "", list[i], list[j]);
    else
      w = snprintf(buf + off, size - off, "%s%d", i ? "," : "", list[i]);
    if (w < 0) return;
    off += (size_t)w;
    i = j;
  }
}

/* Shell-quoted command line for --verbose and --dry-run. */
static void format_command(char *buf, size_t size, char *const *argv) {
  size_t off = 0;
  buf[0] = '\0';
  for (int i = 0; argv[i] != NULL && off + 1 < size; i++) {
    if (i > 0) buf[off++] = ' ';
    hvdrun_shell_quote(buf, size, &off, argv[i]);
  }
  if (off >= size) off = size - 1;
  buf[off] = '\0';
}

/* ---- output ---------------------------------------------------------------------- */

static void write_out(hvdrun_job_t *job, int fd, const char *data, size_t len) {
  if (job->out_broken[fd]) return;
  int rc = hvdrun_write_all(fd, data, len);
  if (rc < 0) {
    job->out_broken[fd] = 1;
    if (fd != STDERR_FILENO)
      hvdrun_say("warning: cannot write to %s (%s); discarding the ranks' output to it",
                 fd == STDOUT_FILENO ? "stdout" : "stderr", strerror(-rc));
  }
}

static void emit_stdout(void *arg, const char *data, size_t len) {
  write_out(arg, STDOUT_FILENO, data, len);
}

static void emit_stderr(void *arg, const char *data, size_t len) {
  write_out(arg, STDERR_FILENO, data, len);
}

static void check_done(hvdrun_job_t *job);

static void close_pipe(hvdrun_rank_t *r, int i) {
  if (!r->pipe_open[i]) return;
  hvdrun_linebuf_flush(&r->lines[i]);
  r->pipe_open[i] = 0;
  r->job->npipes--;
  uv_close((uv_handle_t *)&r->pipes[i], NULL);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  hvdrun_rank_t *r = handle->data;
  (void)suggested;
  buf->base = r->job->readbuf;
  buf->len = sizeof r->job->readbuf;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  hvdrun_rank_t *r = stream->data;
  int i = stream == (uv_stream_t *)&r->pipes[0] ? 0 : 1;
  if (nread > 0) {
    if (r->out_fd[i] >= 0 &&
        hvdrun_write_all(r->out_fd[i], buf->base, (size_t)nread) != 0) {
      hvdrun_say("warning: cannot write rank %d's %s file: %s; not writing it any more",
                 r->rank, i ? "stderr" : "stdout", strerror(errno));
      close(r->out_fd[i]);
      r->out_fd[i] = -1;
    }
    hvdrun_linebuf_feed(&r->lines[i], buf->base, (size_t)nread);
    return;
  }
  if (nread == 0) return; /* EAGAIN */
  if (nread != UV_EOF)
    hvdrun_say("warning: reading rank %d's %s: %s", r->rank, i ? "stderr" : "stdout",
               uv_strerror((int)nread));
  close_pipe(r, i);
  check_done(r->job);
}

/* ---- stopping ---------------------------------------------------------------------- */

static int cmp_int(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b;
  return (x > y) - (x < y);
}

/* Our children that are not ranks are orphans of the ranks, reparented to us (we are
 * a subreaper; libuv reaps the ranks themselves, by pid). Reap the dead ones; send
 * sig (if > 0) to the live ones, or to their process group if they lead one (a
 * process that escaped its rank's group with setsid). Returns how many live. */
static int scan_orphans(hvdrun_job_t *job, int sig) {
  DIR *tasks = opendir("/proc/self/task");
  struct dirent *de;
  int live = 0;
  if (tasks == NULL) return 0;
  while ((de = readdir(tasks)) != NULL) {
    char path[300];
    int pid;
    if (!isdigit((unsigned char)de->d_name[0])) continue;
    snprintf(path, sizeof path, "/proc/self/task/%s/children", de->d_name);
    FILE *f = fopen(path, "re");
    if (f == NULL) continue;
    while (fscanf(f, "%d", &pid) == 1) {
      if (bsearch(&pid, job->sorted_pids, (size_t)job->nsorted, sizeof pid, cmp_int) !=
          NULL)
        continue;
      if (waitpid(pid, NULL, WNOHANG) != 0) continue; /* reaped (or not ours any more) */
      live++;
      if (sig > 0 && (getpgid(pid) != pid || kill(-pid, sig) != 0)) (void)kill(pid, sig);
    }
    fclose(f);
  }
  closedir(tasks);
  return live;
}

/* Is any process of any rank left (reaped leaders' groups, orphans)? Refreshes each
 * rank's alive flag. */
static int anything_left(hvdrun_job_t *job) {
  int left = 0;
  if (job->ranks == NULL) return 0;
  hvdrun_local_launcher.poll_alive(job->ranks, job->size);
  hvdrun_ssh_launcher.poll_alive(job->ranks, job->size);
  for (int i = 0; i < job->size; i++)
    if (job->ranks[i].alive) left = 1;
  return left || scan_orphans(job, 0) > 0;
}

static void signal_all(hvdrun_job_t *job, int sig) {
  char name[32];
  int n = 0;
  for (int i = 0; i < job->size; i++) {
    hvdrun_rank_t *r = &job->ranks[i];
    if (r->pid > 0 && r->launcher->signal(r, sig) == 0) n++;
  }
  (void)scan_orphans(job, sig);
  if (job->opts->verbose && n > 0)
    hvdrun_say("sent %s to %d rank%s", hvdrun_signame(sig, name, sizeof name), n,
               n == 1 ? "" : "s");
}

static void on_stop_timer(uv_timer_t *t);

static void schedule_step(hvdrun_job_t *job, uint64_t ms) {
  uv_timer_stop(&job->stop_timer);
  uv_timer_start(&job->stop_timer, on_stop_timer, ms, 0);
}

/* Enter phase, sending sig (0: none) to every rank. */
static void enter_phase(hvdrun_job_t *job, stop_phase_t phase, int sig) {
  job->phase = phase;
  if (sig != 0) {
    job->last_sig = sig;
    signal_all(job, sig);
  }
  switch (phase) {
  case PHASE_TERMINATED:
    schedule_step(job, HVDRUN_KILL_DELAY_MS);
    break;
  case PHASE_KILLED:
    schedule_step(job, HVDRUN_DRAIN_MS);
    break;
  default:
    break;
  }
}

static void on_poll_timer(uv_timer_t *t) { check_done(t->data); }

/* Leave RUNNING: tell the ranks why (reason, or else the cause) and start the
 * sequence that ends with SIGKILL. grace_ms: how long before SIGTERM. */
static void begin_stop(hvdrun_job_t *job, uint64_t grace_ms, const char *reason) {
  if (job->phase != PHASE_RUNNING) return;
  job->phase = PHASE_ABORTED;
  uv_timer_stop(&job->start_timer);
  if (reason == NULL) reason = job->have_cause ? job->cause : "hvdrun stopped the job";
  if (job->server != NULL) hvd_rdv_server_abort(job->server, reason);
  uv_timer_start(&job->poll_timer, on_poll_timer, 100, 100);
  schedule_step(job, grace_ms);
}

/* After the final SIGKILL closed every ssh rank's channel, a session that is still
 * open cannot end: its host is unreachable, and ssh would wait for TCP to give up
 * (many minutes; ServerAliveInterval bounds it too, less tightly). Kill those ssh
 * clients (the second SIGKILL of launch_ssh.c). Returns how many. */
static int kill_stuck_ssh(hvdrun_job_t *job) {
  int n = 0;
  job->ssh_killed = 1;
  for (int i = 0; i < job->size; i++) {
    hvdrun_rank_t *r = &job->ranks[i];
    if (!r->running || r->launcher != &hvdrun_ssh_launcher) continue;
    hvdrun_say("warning: rank %d (host %s): the ssh session did not end %d s after hvdrun "
               "closed it (host unreachable?); killing ssh",
               r->rank, r->host, HVDRUN_DRAIN_MS / 1000);
    r->launcher->signal(r, SIGKILL);
    n++;
  }
  return n;
}

static void on_stop_timer(uv_timer_t *t) {
  hvdrun_job_t *job = t->data;
  char name[32];
  switch (job->phase) {
  case PHASE_ABORTED:
    enter_phase(job, PHASE_TERMINATED, SIGTERM);
    break;
  case PHASE_TERMINATED:
    if (anything_left(job) && job->opts->verbose)
      hvdrun_say("ranks still running %d s after %s; killing them",
                 HVDRUN_KILL_DELAY_MS / 1000,
                 hvdrun_signame(job->last_sig, name, sizeof name));
    enter_phase(job, PHASE_KILLED, SIGKILL);
    break;
  case PHASE_KILLED:
    if (!job->ssh_killed && kill_stuck_ssh(job) > 0) {
      schedule_step(job, HVDRUN_SSH_REAP_MS); /* their exits are reaped meanwhile */
      break;
    }
    job->phase = PHASE_GIVEN_UP;
    for (int i = 0; i < job->size; i++) {
      hvdrun_rank_t *r = &job->ranks[i];
      if (r->running)
        hvdrun_say("warning: rank %d (pid %d) did not exit after SIGKILL", r->rank,
                   r->pid);
      else if (r->pipe_open[0] || r->pipe_open[1])
        hvdrun_say("warning: rank %d's output is still held open by a process outside "
                   "its process group; not waiting for it",
                   r->rank);
      close_pipe(r, 0);
      close_pipe(r, 1);
    }
    check_done(job);
    break;
  default:
    break;
  }
}

static void on_signal(uv_signal_t *h, int signum) {
  hvdrun_job_t *job = h->data;
  char name[32];
  hvdrun_signame(signum, name, sizeof name);
  if (job->finished) return;
  if (job->phase == PHASE_RUNNING || job->phase == PHASE_ABORTED) {
    char reason[96];
    snprintf(reason, sizeof reason, "hvdrun received %s (%d) and is stopping the job",
             name, signum);
    set_cause(job, 128 + signum, "interrupted by %s (%d); stopped the job", name, signum);
    if (job->opts->verbose) hvdrun_say("received %s, forwarding it to the ranks", name);
    begin_stop(job, 0, reason);
    enter_phase(job, PHASE_TERMINATED, signum);
  } else if (job->phase == PHASE_TERMINATED) {
    hvdrun_say("received %s again, killing the ranks", name);
    enter_phase(job, PHASE_KILLED, SIGKILL);
  }
}

static void on_start_timeout(uv_timer_t *t) {
  hvdrun_job_t *job = t->data;
  int *late = malloc((size_t)job->size * sizeof *late);
  char list[START_TIMEOUT_LIST_MAX + 32];
  int n = 0;
  if (late == NULL) return;
  /* A one-rank job has nobody to rendezvous with: hvd_init does not connect. */
  if (job->size == 1) {
    free(late);
    return;
  }
  for (int i = 0; i < job->size; i++) {
    hvdrun_rank_t *r = &job->ranks[i];
    int seen = r->connected || (job->server && hvd_rdv_server_rank_seen(job->server, i));
    if (r->running && !seen) late[n++] = i;
  }
  if (n > 0) {
    format_rank_list(list, sizeof list, late, n);
    set_cause(job, 1, "rank%s %s did not connect within %d s", n == 1 ? "" : "s", list,
              job->opts->start_timeout_s);
    begin_stop(job, 0, NULL);
  }
  free(late);
}

/* ---- ranks ------------------------------------------------------------------------- */

/* Rank r exited 0 and its rendezvous connection is closed: a failure if it never said
 * BYE (it initialised hvd and left without a successful hvd_shutdown). */
static void judge_clean_exit(hvdrun_job_t *job, hvdrun_rank_t *r) {
  r->exit_pending = 0;
  if (job->phase != PHASE_RUNNING || !r->rdv_unclean) return;
  set_cause(job, 1, "rank %d (host %s) exited with status 0 before hvd_shutdown completed",
            r->rank, r->host);
  if (job->opts->verbose) hvdrun_say("%s; stopping the job", job->cause);
  begin_stop(job, HVDRUN_FAIL_GRACE_MS, NULL);
}

static void on_rank_exit(uv_process_t *proc, int64_t exit_status, int term_signal) {
  hvdrun_rank_t *r = proc->data;
  hvdrun_job_t *job = r->job;
  char name[32];

  r->running = 0;
  r->exit_status = exit_status;
  r->term_signal = term_signal;
  job->nrunning--;
  uv_close((uv_handle_t *)proc, NULL);
  if (r->stdin_fd >= 0) {
    close(r->stdin_fd);
    r->stdin_fd = -1;
  }

  if (term_signal != 0) hvdrun_signame(term_signal, name, sizeof name);
  if (job->opts->verbose) {
    if (term_signal != 0)
      hvdrun_say("rank %d was killed by signal %s (%d)", r->rank, name, term_signal);
    else
      hvdrun_say("rank %d exited with status %lld", r->rank, (long long)exit_status);
  }
  if (job->phase == PHASE_RUNNING && (exit_status != 0 || term_signal != 0)) {
    int remote = r->launcher == &hvdrun_ssh_launcher;
    char rname[32];
    if (remote && term_signal != 0)
      set_cause(job, 128 + term_signal,
                "rank %d (host %s): its ssh process was killed by signal %s (%d)",
                r->rank, r->host, name, term_signal);
    else if (remote && exit_status == 255)
      set_cause(job, 255,
                "rank %d (host %s): ssh failed or lost the connection (status 255)",
                r->rank, r->host);
    else if (remote && exit_status > 128 && exit_status <= 128 + 64)
      /* The remote wrapper reports a rank killed by signal N as 128+N. */
      set_cause(
          job, (int)exit_status,
          "rank %d (host %s) was killed by signal %s (%d) (remote exit status %lld)",
          r->rank, r->host, hvdrun_signame((int)exit_status - 128, rname, sizeof rname),
          (int)exit_status - 128, (long long)exit_status);
    else if (term_signal != 0)
      set_cause(job, 128 + term_signal, "rank %d (host %s) was killed by signal %s (%d)",
                r->rank, r->host, name, term_signal);
    else
      set_cause(job, (int)exit_status, "rank %d (host %s) exited with status %lld",
                r->rank, r->host, (long long)exit_status);
    if (job->opts->verbose) hvdrun_say("%s; stopping the job", job->cause);
    begin_stop(job, HVDRUN_FAIL_GRACE_MS, NULL);
  } else if (job->phase == PHASE_RUNNING) {
    if (r->rdv_conns > 0)
      r->exit_pending = 1;
    else
      judge_clean_exit(job, r);
  }
  check_done(job);
}

/* Start rank r. Returns 0, or -1 with the cause recorded. */
static int spawn_rank(hvdrun_job_t *job, hvdrun_rank_t *r) {
  uv_file fds[2][2] = {{-1, -1}, {-1, -1}};
  uv_file in[2] = {-1, -1};
  hvdrun_cmd_t cmd = {0};
  hvd_err_t err = {{0}};
  uv_stdio_container_t stdio[3];
  uv_process_options_t po;
  int rc, i;

  for (i = 0; i < 2; i++) {
    rc = uv_pipe(fds[i], 0, 0);
    if (rc < 0) {
      set_cause(job, 1, "cannot create a pipe for rank %d: %s", r->rank, uv_strerror(rc));
      goto close_fds;
    }
  }
  if (r->launcher->prepare(job, r, &cmd, &err) != 0) {
    set_cause(job, 1, "%s", err.msg);
    goto release;
  }

  memset(&po, 0, sizeof po);
  stdio[0].flags = UV_IGNORE; /* /dev/null */
  if (cmd.stdin_data != NULL) {
    rc = uv_pipe(in, 0, 0);
    if (rc < 0) {
      set_cause(job, 1, "cannot create a pipe for rank %d: %s", r->rank, uv_strerror(rc));
      goto release;
    }
    /* The whole description must fit: ssh may not read it before it has connected. */
    if (cmd.stdin_len > 60000)
      (void)fcntl(in[1], F_SETPIPE_SZ, (int)cmd.stdin_len + 4096);
    stdio[0].flags = UV_INHERIT_FD;
    stdio[0].data.fd = in[0];
  }
  stdio[1].flags = UV_INHERIT_FD;
  stdio[1].data.fd = fds[0][1];
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = fds[1][1];
  po.exit_cb = on_rank_exit;
  po.file = cmd.file;
  po.args = cmd.argv;
  po.env = cmd.env;
  po.flags = cmd.flags;
  po.stdio = stdio;
  po.stdio_count = 3;

  if (job->opts->verbose) {
    char line[1024];
    format_command(line, sizeof line, cmd.argv);
    hvdrun_say("rank %d (host %s, local rank %d): %s", r->rank, r->host, r->local_rank,
               line);
  }

  r->proc.data = r;
  rc = uv_spawn(&job->loop, &r->proc, &po);
  if (rc < 0) {
    uv_close((uv_handle_t *)&r->proc, NULL);
    if (rc == UV_ENOENT && strchr(cmd.file, '/') == NULL)
      set_cause(job, 127, "cannot run '%s': command not found in PATH", cmd.file);
    else if (rc == UV_ENOENT)
      set_cause(job, 127, "cannot run '%s': no such file or directory", cmd.file);
    else if (rc == UV_EACCES)
      set_cause(job, 126, "cannot run '%s': permission denied", cmd.file);
    else
      set_cause(job, 1, "cannot start rank %d ('%s'): %s", r->rank, cmd.file,
                uv_strerror(rc));
    goto release;
  }
  r->spawned = 1;
  r->running = 1;
  r->pid = r->proc.pid;
  job->nrunning++;
  if (in[1] >= 0) {
    (void)close(in[0]);
    in[0] = -1;
    /* EPIPE (SIGPIPE is ignored) means ssh already died: its exit status says why. */
    (void)hvdrun_write_all(in[1], cmd.stdin_data, cmd.stdin_len);
    (void)fcntl(in[1], F_SETFL, fcntl(in[1], F_GETFL) | O_NONBLOCK);
    r->stdin_fd = in[1];
    in[1] = -1;
  }

  for (i = 0; i < 2; i++) {
    (void)close(fds[i][1]); /* the rank has its own copy */
    fds[i][1] = -1;
    uv_pipe_init(&job->loop, &r->pipes[i], 0);
    r->pipes[i].data = r;
    rc = uv_pipe_open(&r->pipes[i], fds[i][0]);
    if (rc == 0) {
      fds[i][0] = -1; /* owned by the handle now */
      rc = uv_read_start((uv_stream_t *)&r->pipes[i], on_alloc, on_read);
    }
    if (rc < 0) { /* not expected for a fresh pipe; the rank's writes will fail */
      hvdrun_say("warning: cannot read rank %d's %s: %s", r->rank,
                 i ? "stderr" : "stdout", uv_strerror(rc));
      uv_close((uv_handle_t *)&r->pipes[i], NULL);
      continue;
    }
    r->pipe_open[i] = 1;
    job->npipes++;
  }
  r->launcher->release(&cmd);
  return 0;

release:
  r->launcher->release(&cmd);
close_fds:
  for (i = 0; i < 2; i++) {
    if (fds[i][0] >= 0) close(fds[i][0]);
    if (fds[i][1] >= 0) close(fds[i][1]);
    if (in[i] >= 0) close(in[i]);
  }
  return -1;
}

/* ---- rendezvous events ---------------------------------------------------------------
 */

static void on_rdv_connected(void *arg, int rank) {
  hvdrun_job_t *job = arg;
  if (rank < 0 || rank >= job->size) return;
  job->ranks[rank].connected = 1;
  job->ranks[rank].rdv_conns++;
  if (job->opts->verbose) hvdrun_say("rank %d connected to the rendezvous server", rank);
}

static void on_rdv_disconnected(void *arg, int rank, int clean) {
  hvdrun_job_t *job = arg;
  if (rank < 0 || rank >= job->size) return;
  hvdrun_rank_t *r = &job->ranks[rank];
  /* Not a failure by itself: the exit status decides. */
  if (job->opts->verbose)
    hvdrun_say("rank %d disconnected from the rendezvous server%s", rank,
               clean ? "" : " without saying BYE");
  r->rdv_conns--;
  r->rdv_unclean = !clean;
  if (r->exit_pending && r->rdv_conns == 0) {
    judge_clean_exit(job, r);
    check_done(job);
  }
}

/* ---- the end ----------------------------------------------------------------------- */

static void finish(hvdrun_job_t *job) {
  job->finished = 1;
  (void)scan_orphans(job, 0); /* the last ones may have died after the last SIGCHLD */
  if (job->ranks == NULL) job->size = 0; /* set-up failed before they existed */
  for (int i = 0; i < job->nsignals; i++) uv_close((uv_handle_t *)&job->signals[i], NULL);
  if (job->timers_init) {
    uv_close((uv_handle_t *)&job->start_timer, NULL);
    uv_close((uv_handle_t *)&job->stop_timer, NULL);
    uv_close((uv_handle_t *)&job->poll_timer, NULL);
  }
  for (int i = 0; i < job->size; i++) {
    hvdrun_rank_t *r = &job->ranks[i];
    close_pipe(r, 0);
    close_pipe(r, 1);
    if (r->stdin_fd >= 0 && !r->running) {
      close(r->stdin_fd);
      r->stdin_fd = -1;
    }
    if (r->running) { /* gave up waiting: it will be reaped by init */
      r->running = 0;
      uv_close((uv_handle_t *)&r->proc, NULL);
    }
  }
  if (anything_left(job)) { /* only when we gave up waiting; never leave them running */
    for (int i = 0; i < job->size; i++)
      if (job->ranks[i].alive) job->ranks[i].launcher->signal(&job->ranks[i], SIGKILL);
    (void)scan_orphans(job, SIGKILL);
  }
  if (job->server != NULL) {
    hvd_rdv_server_close(job->server, NULL, NULL);
    job->server = NULL;
  }
}

/* Called whenever a rank is reaped or a pipe closes, and from the poll timer. Cheap
 * until every rank is reaped and every pipe closed: only then is /proc consulted. */
static void check_done(hvdrun_job_t *job) {
  if (job->finished) return;
  if (job->phase == PHASE_GIVEN_UP) {
    finish(job);
    return;
  }
  if (job->nrunning > 0) return;

  /* Every rank exited 0. What they started may still hold a pipe or run on: give it
   * a moment (the pipes' EOF may simply not have been read yet), then stop it. */
  uint64_t now = uv_now(&job->loop);
  if (job->phase == PHASE_RUNNING && job->linger_deadline == 0) {
    job->linger_deadline = now + HVDRUN_LINGER_MS;
    uv_timer_start(&job->poll_timer, on_poll_timer, 50, 50);
  }
  int expired = job->phase == PHASE_RUNNING && now >= job->linger_deadline;
  if (job->npipes > 0 && !expired) return;
  for (int i = 0; i < job->size && !expired; i++)
    if (job->ranks[i].exit_pending) return; /* its verdict comes with its disconnect */

  int left = anything_left(job); /* also refreshes each rank's alive flag */
  if (job->npipes == 0 && !left) {
    finish(job);
    return;
  }
  if (!expired) return; /* stopping: the stop sequence is on it */

  int orphans = scan_orphans(job, 0);
  for (int i = 0; i < job->size; i++) {
    hvdrun_rank_t *r = &job->ranks[i];
    if (r->pipe_open[0] || r->pipe_open[1] || r->alive)
      hvdrun_say("warning: rank %d exited but left processes running; stopping them",
                 r->rank);
  }
  if (orphans > 0)
    hvdrun_say("warning: %d process%s started by the ranks outlived them; stopping them",
               orphans, orphans == 1 ? "" : "es");
  begin_stop(job, 0, NULL);
}

/* Make sure we may open enough descriptors: two pipes and a rendezvous connection
 * per rank, and room for the connections the rendezvous server holds before they
 * authenticate (it refuses more than 4096), so that a flood of bogus connections
 * meets that bound rather than EMFILE, which would also turn real ranks away. The
 * soft limit is raised as far as that (not beyond: the ranks inherit it). Returns 0,
 * or -1 with the cause recorded. */
static int check_fd_limit(hvdrun_job_t *job) {
  struct rlimit rl;
  rlim_t need = (rlim_t)job->size * 3 + 64;
  rlim_t want = need + 4096 + 64;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want) return 0;
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
    set_cause(job, 1,
              "-np %d needs about %llu open files but the limit is %llu (ulimit -n)",
              job->size, (unsigned long long)need, (unsigned long long)rl.rlim_max);
    return -1;
  }
  rlim_t old = rl.rlim_cur;
  rl.rlim_cur = rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want ? rl.rlim_max : want;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0 && old < need) {
    set_cause(job, 1, "-np %d needs about %llu open files: raising the limit: %s",
              job->size, (unsigned long long)need, strerror(errno));
    return -1;
  }
  return 0;
}

/* mkdir -p path (mode 0755). Returns 0 or -errno. */
static int make_dirs(const char *path) {
  char p[PATH_MAX];
  if (snprintf(p, sizeof p, "%s", path) >= (int)sizeof p) return -ENAMETOOLONG;
  for (char *c = p + 1;; c++) {
    if (*c != '/' && *c != '\0') continue;
    char save = *c;
    *c = '\0';
    if (mkdir(p, 0755) != 0 && errno != EEXIST) return -errno;
    *c = save;
    if (save == '\0') break;
  }
  return 0;
}

/* --output-filename DIR: DIR/rank.N/{stdout,stderr}, N zero-padded to the width of
 * the largest rank (as Horovod does). Returns 0, or -1 with the cause recorded. */
static int open_output_files(hvdrun_job_t *job, hvdrun_rank_t *r) {
  static const char *names[2] = {"stdout", "stderr"};
  char dir[PATH_MAX], path[PATH_MAX + 16];
  int width = snprintf(NULL, 0, "%d", job->size - 1);
  int rc;
  snprintf(dir, sizeof dir, "%s/rank.%0*d", job->opts->output_dir, width, r->rank);
  rc = make_dirs(dir);
  if (rc < 0) {
    set_cause(job, 1, "--output-filename: cannot create %s: %s", dir, strerror(-rc));
    return -1;
  }
  for (int i = 0; i < 2; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    r->out_fd[i] = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (r->out_fd[i] < 0) {
      set_cause(job, 1, "--output-filename: cannot create %s: %s", path, strerror(errno));
      return -1;
    }
  }
  return 0;
}

static int init_ranks(hvdrun_job_t *job) {
  const hvdrun_opts_t *o = job->opts;
  job->ranks = calloc((size_t)job->size, sizeof *job->ranks);
  if (job->ranks == NULL) goto oom;
  for (int i = 0; i < job->size; i++) {
    hvdrun_rank_t *r = &job->ranks[i];
    r->out_fd[0] = r->out_fd[1] = r->stdin_fd = -1;
  }
  for (int i = 0; i < job->size; i++) {
    hvdrun_rank_t *r = &job->ranks[i];
    char prefix[2][48] = {"", ""};
    r->job = job;
    r->rank = i;
    hvdrun_rank_place(o, i, &r->hostp, &r->local_rank, &r->local_size, &r->cross_rank,
                      &r->cross_size);
    r->host = r->hostp->name;
    r->launcher = r->hostp->is_local ? &hvdrun_local_launcher : &hvdrun_ssh_launcher;
    if (o->tag_output) {
      snprintf(prefix[0], sizeof prefix[0], "[%d]<stdout>:", i);
      snprintf(prefix[1], sizeof prefix[1], "[%d]<stderr>:", i);
    }
    /* Untagged output is passed through byte for byte (no '\n' added); still one
     * whole line per write so that ranks do not interleave mid-line. */
    int term = o->tag_output;
    if (hvdrun_linebuf_init(&r->lines[0], prefix[0], 0, term, emit_stdout, job) != 0)
      goto oom;
    if (hvdrun_linebuf_init(&r->lines[1], prefix[1], 0, term, emit_stderr, job) != 0) {
      hvdrun_linebuf_free(&r->lines[0]);
      goto oom;
    }
    job->nlinebufs = i + 1;
  }
  return 0;
oom:
  set_cause(job, 1, "out of memory setting up %d ranks", job->size);
  return -1;
}

static void free_ranks(hvdrun_job_t *job) {
  for (int i = 0; i < job->nlinebufs; i++) {
    hvdrun_linebuf_free(&job->ranks[i].lines[0]);
    hvdrun_linebuf_free(&job->ranks[i].lines[1]);
  }
  if (job->ranks != NULL)
    for (int i = 0; i < job->size; i++)
      for (int k = 0; k < 2; k++)
        if (job->ranks[i].out_fd[k] >= 0) close(job->ranks[i].out_fd[k]);
  free(job->ranks);
}

static int start_rendezvous(hvdrun_job_t *job) {
  hvd_err_t err = {{0}};
  hvd_rdv_server_opts_t so = {
      .bind_addr = job->opts->rdv_bind,
      .port = 0,
      .token = job->token,
      .size = job->size,
      .on_connected = on_rdv_connected,
      .on_disconnected = on_rdv_disconnected,
      .arg = job,
  };
  if (hvd_rdv_new_token(job->token) != 0) {
    set_cause(job, 1, "cannot generate a job token: %s", strerror(errno));
    return -1;
  }
  if (hvd_rdv_server_start(&job->loop, &so, &job->server, &err) != HVD_OK) {
    job->server = NULL;
    set_cause(job, 1, "cannot start the rendezvous server: %s", err.msg);
    return -1;
  }
  job->rdv_addr = job->opts->rdv_addr;
  job->rdv_port = hvd_rdv_server_port(job->server);
  if (job->opts->verbose)
    hvdrun_say("rendezvous server listening on %s:%d for %d rank%s (ranks connect to %s)",
               job->opts->rdv_bind, job->rdv_port, job->size, job->size == 1 ? "" : "s",
               job->rdv_addr);
  return 0;
}

static void on_sigchld(uv_signal_t *h, int signum) {
  (void)signum;
  (void)scan_orphans(h->data, 0);
}

static void sort_rank_pids(hvdrun_job_t *job) {
  job->sorted_pids = malloc((size_t)job->size * sizeof *job->sorted_pids);
  if (job->sorted_pids == NULL) return; /* orphans then wait for pid 1 */
  for (int i = 0; i < job->size; i++)
    if (job->ranks[i].pid > 0) job->sorted_pids[job->nsorted++] = job->ranks[i].pid;
  qsort(job->sorted_pids, (size_t)job->nsorted, sizeof *job->sorted_pids, cmp_int);
}

static int start_signals(hvdrun_job_t *job) {
  static const struct {
    int signum;
    uv_signal_cb cb;
  } handlers[] = {{SIGINT, on_signal},
                  {SIGTERM, on_signal},
                  {SIGHUP, on_signal},
                  {SIGCHLD, on_sigchld}};

  /* A closed stdout must not kill hvdrun before it has stopped the ranks; libuv
   * resets the disposition in the ranks. */
  signal(SIGPIPE, SIG_IGN);
  for (size_t i = 0; i < HVD_ARRAY_SIZE(handlers); i++) {
    uv_signal_t *h = &job->signals[job->nsignals];
    int rc = uv_signal_init(&job->loop, h);
    if (rc < 0) goto fail;
    job->nsignals++;
    h->data = job;
    rc = uv_signal_start(h, handlers[i].cb, handlers[i].signum);
    if (rc < 0) goto fail;
    continue;
  fail:
    set_cause(job, 1, "cannot handle signals: %s", uv_strerror(rc));
    return -1;
  }
  return 0;
}

/* ---- before anything starts ------------------------------------------------------- */

/* Can PROGRAM be executed here (for local ranks)? The PATH searched is the ranks'
 * (-x PATH=... included). Returns 0, or -1 with the cause recorded (127/126, as a
 * shell would). */
static int check_program(hvdrun_job_t *job) {
  const hvdrun_opts_t *o = job->opts;
  const char *prog = o->argv[0];
  const char *path = getenv("PATH");
  char full[PATH_MAX];
  if (strchr(prog, '/') != NULL) {
    if (access(prog, X_OK) == 0) return 0;
    set_cause(job, errno == ENOENT ? 127 : 126, "cannot run '%s': %s", prog,
              errno == ENOENT ? "no such file or directory" : strerror(errno));
    return -1;
  }
  for (int i = o->nx_env - 1; i >= 0; i--)
    if (strncmp(o->x_env[i], "PATH=", 5) == 0) {
      path = o->x_env[i] + 5;
      break;
    }
  if (path == NULL) path = "/usr/local/bin:/usr/bin:/bin";
  int denied = 0;
  for (const char *p = path;; p += strcspn(p, ":") + 1) {
    size_t n = strcspn(p, ":");
    if (n == 0)
      snprintf(full, sizeof full, "./%s", prog);
    else
      snprintf(full, sizeof full, "%.*s/%s", (int)n, p, prog);
    struct stat st;
    if (stat(full, &st) == 0 && S_ISREG(st.st_mode)) {
      if (access(full, X_OK) == 0) return 0;
      denied = 1;
    }
    if (p[n] == '\0') break;
  }
  if (denied)
    set_cause(job, 126, "cannot run '%s': permission denied", prog);
  else
    set_cause(job, 127, "cannot run '%s': command not found in PATH", prog);
  return -1;
}

static int any_local(const hvdrun_job_t *job) {
  for (int i = 0; i < job->size; i++)
    if (job->ranks[i].launcher == &hvdrun_local_launcher) return 1;
  return 0;
}

/* --verbose: hosts, this host's topology and the placement of its ranks. */
static void say_layout(hvdrun_job_t *job) {
  const hvdrun_opts_t *o = job->opts;
  hvd_err_t err = {{0}};
  for (int i = 0; i < o->nhosts; i++) {
    const hvdrun_host_t *h = &o->hosts[i];
    if (h->nranks == 0)
      hvdrun_say("host %s: %d slot%s, unused", h->name, h->slots,
                 h->slots == 1 ? "" : "s");
    else
      hvdrun_say("host %s (%s): ranks %d-%d of %d slot%s", h->name,
                 h->is_local ? "this host" : "ssh", h->first_rank,
                 h->first_rank + h->nranks - 1, h->slots, h->slots == 1 ? "" : "s");
  }
  if (!any_local(job)) return;
  struct hwloc_topology *topo = hvdrun_topo_load(&err);
  if (topo == NULL) {
    hvdrun_say("warning: %s", err.msg);
    return;
  }
  char sum[256], desc[512];
  hvdrun_topo_summary(topo, sum, sizeof sum);
  hvdrun_say("topology of this host: %s (hwloc %s)", sum, HWLOC_VERSION);
  for (int i = 0; i < job->size; i++) {
    const hvdrun_rank_t *r = &job->ranks[i];
    void *set = NULL;
    if (r->launcher != &hvdrun_local_launcher) continue;
    if (hvdrun_placement(topo, o->bind_to, o->map_by, r->local_rank, r->local_size, &set,
                         desc, sizeof desc, &err) != 0)
      snprintf(desc, sizeof desc, "%s", err.msg);
    hvdrun_set_free(set);
    hvdrun_say("rank %d (host %s, local rank %d of %d): %s", r->rank, r->host,
               r->local_rank, r->local_size, desc);
  }
  hvdrun_topo_free(topo);
}

/* --dry-run: say what would run, start nothing. */
static int dry_run(hvdrun_job_t *job) {
  const hvdrun_opts_t *o = job->opts;
  hvd_err_t err = {{0}};
  size_t cap = 1 << 16;
  char *line = malloc(cap);
  if (line == NULL) return 1;
  printf(
      "hvdrun: dry run: %d rank%s on %d host%s, rendezvous server on %s (port chosen at "
      "start); nothing is started\n",
      job->size, job->size == 1 ? "" : "s", o->nused, o->nused == 1 ? "" : "s",
      o->rdv_bind);
  for (int i = 0; i < job->size; i++) {
    hvdrun_rank_t *r = &job->ranks[i];
    int remote = r->launcher == &hvdrun_ssh_launcher;
    printf("rank %d: host %s (%s), local rank %d of %d, cross rank %d of %d\n", r->rank,
           r->host, remote ? "ssh" : "this host", r->local_rank, r->local_size,
           r->cross_rank, r->cross_size);
    if (remote) {
      char *rc = hvdrun_ssh_remote_command(o);
      char **argv = rc ? hvdrun_ssh_argv(o, r->host, 0, rc) : NULL;
      if (argv != NULL) format_command(line, cap, argv);
      printf("  command: %s\n", argv != NULL ? line : "(out of memory)");
      free(argv);
      free(rc);
      printf("  environment (sent on ssh's stdin, added to the remote login's):\n");
    } else {
      format_command(line, cap, o->argv);
      printf("  command: %s\n", line);
      if (o->bind_to != HVDRUN_BIND_NONE)
        printf("  bound with --bind-to %s --map-by %s\n", hvdrun_bind_names[o->bind_to],
               hvdrun_map_names[o->map_by]);
      printf("  environment (hvdrun's own, and):\n");
    }
    size_t n = 0;
    char **env = hvdrun_rank_env(job, r, 1, 0, &n, &err);
    for (size_t k = 0; env != NULL && k < n; k++) {
      size_t off = 0;
      hvdrun_shell_quote(line, cap, &off, env[k]);
      line[off < cap ? off : cap - 1] = '\0';
      printf("    %s\n", line);
    }
    printf("    HVD_JOB_TOKEN is generated at start and not shown\n");
    free(env);
  }
  free(line);
  return fflush(stdout) == 0 ? 0 : 1;
}

int hvdrun_run(const hvdrun_opts_t *opts) {
  hvdrun_job_t *job = calloc(1, sizeof *job);
  int exit_code = 0;
  int rc;

  if (job == NULL) {
    hvdrun_say("error: out of memory");
    return 1;
  }
  job->opts = opts;
  job->size = opts->np;
  job->rdv_addr = opts->rdv_addr;

  if (init_ranks(job) != 0) goto out;
  if (opts->dry_run) {
    exit_code = dry_run(job);
    goto out;
  }
  /* Everything that can be found wrong before a rank starts. */
  if (any_local(job) && check_program(job) != 0) goto out;
  if (opts->output_dir != NULL)
    for (int i = 0; i < job->size; i++)
      if (open_output_files(job, &job->ranks[i]) != 0) goto out;
  if (opts->any_remote) {
    hvd_err_t err = {{0}};
    if (hvdrun_ssh_check(opts, &err) != 0) {
      set_cause(job, 1, "%s", err.msg);
      goto out;
    }
  }
  if (opts->verbose) say_layout(job);

  rc = uv_loop_init(&job->loop);
  if (rc < 0) {
    set_cause(job, 1, "cannot initialise the event loop: %s", uv_strerror(rc));
    goto out;
  }
  if (check_fd_limit(job) != 0) goto close_loop;
  (void)prctl(PR_SET_CHILD_SUBREAPER, 1); /* best effort: see the top of this file */
  uv_timer_init(&job->loop, &job->start_timer);
  uv_timer_init(&job->loop, &job->stop_timer);
  uv_timer_init(&job->loop, &job->poll_timer);
  job->start_timer.data = job->stop_timer.data = job->poll_timer.data = job;
  job->timers_init = 1;

  if (start_signals(job) != 0 || start_rendezvous(job) != 0) {
    begin_stop(job, 0, NULL);
  } else {
    for (int i = 0; i < job->size; i++) {
      if (spawn_rank(job, &job->ranks[i]) != 0) {
        begin_stop(job, 0, NULL);
        break;
      }
    }
    sort_rank_pids(job);
    if (job->phase == PHASE_RUNNING && opts->start_timeout_s > 0)
      uv_timer_start(&job->start_timer, on_start_timeout,
                     (uint64_t)opts->start_timeout_s * 1000, 0);
  }
  check_done(job);
  uv_run(&job->loop, UV_RUN_DEFAULT);

close_loop:
  if (!job->finished) finish(job); /* set-up failed before the loop ran */
  uv_run(&job->loop, UV_RUN_DEFAULT);
  rc = uv_loop_close(&job->loop);
  if (rc != 0) hvdrun_say("warning: event loop not empty at exit: %s", uv_strerror(rc));
out:
  free_ranks(job);
  free(job->sorted_pids);
  if (job->have_cause) {
    hvdrun_say("error: %s", job->cause);
    exit_code = job->exit_code;
  }
  free(job);
  return exit_code;
}
