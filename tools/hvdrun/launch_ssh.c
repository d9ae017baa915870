/*
 * The ssh launcher: a rank on another host is
 *
 *   ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new -o ServerAliveInterval=10 \
 *       -o ServerAliveCountMax=3 [-p PORT] [-i KEY] HOST \
 *       "exec '/path/of/hvdrun' --hvdrun-remote --bind-to=B --map-by=M -- 'PROGRAM'
 * 'ARG'..."
 *
 * hvdrun must be installed at the same path on every host (like mpirun's orted).
 * The command line carries no secret: the rank's working directory and environment,
 * the job token included, are the first bytes written to ssh's stdin, which stays
 * open for the life of the rank as its control channel: one byte N asks the remote
 * wrapper (wrapper.c) to send signal N to the rank's process group, and EOF (hvdrun
 * is done, or died, or the connection broke) makes it stop the rank. ssh runs in
 * its own session, so a ^C at the terminal reaches hvdrun only, which forwards it.
 *
 * Before anything starts, hvdrun_ssh_check runs `ssh ... HOST test -x <hvdrun>` on
 * every remote host at once, each bounded by ConnectTimeout and a deadline, so an
 * unreachable host (or one without hvdrun) fails the job with one line up front.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tools/hvdrun/hvdrun.h"

extern char **environ;

#define SSH_MAX_ARGS 20
#define CHECK_ERR_TAIL 400

char **hvdrun_ssh_argv(const hvdrun_opts_t *opts, const char *host, int check_timeout_s,
                       const char *remote_cmd) {
  char port[16], timeout[48], alive[48], alive_count[48];
  const char *a[SSH_MAX_ARGS];
  int n = 0;
  a[n++] = "ssh";
  a[n++] = "-o";
  a[n++] = "BatchMode=yes";
  a[n++] = "-o";
  a[n++] = "StrictHostKeyChecking=accept-new";
  /* A dead link or host ends the session (status 255) instead of leaving ssh waiting
   * for TCP to give up: hvdrun then fails the job naming that rank and host. */
  snprintf(alive, sizeof alive, "ServerAliveInterval=%d", HVDRUN_SSH_ALIVE_INTERVAL);
  snprintf(alive_count, sizeof alive_count, "ServerAliveCountMax=%d", HVDRUN_SSH_ALIVE_COUNT);
  a[n++] = "-o";
  a[n++] = alive;
  a[n++] = "-o";
  a[n++] = alive_count;
  if (check_timeout_s > 0) {
    snprintf(timeout, sizeof timeout, "ConnectTimeout=%d", check_timeout_s);
    a[n++] = "-o";
    a[n++] = timeout;
  }
  if (opts->ssh_port > 0) {
    snprintf(port, sizeof port, "%d", opts->ssh_port);
    a[n++] = "-p";
    a[n++] = port;
  }
  if (opts->ssh_identity != NULL) {
    a[n++] = "-i";
    a[n++] = opts->ssh_identity;
  }
  a[n++] = host;
  if (remote_cmd != NULL) a[n++] = remote_cmd;

  size_t bytes = 0;
  for (int i = 0; i < n; i++)
    bytes += strlen(a[i]) + 1;
  char **argv = malloc((size_t)(n + 1) * sizeof *argv + bytes);
  if (argv == NULL) return NULL;
  char *s = (char *)(argv + n + 1);
  for (int i = 0; i < n; i++) {
    size_t l = strlen(a[i]) + 1;
    memcpy(s, a[i], l);
    argv[i] = s;
    s += l;
  }
  argv[n] = NULL;
  return argv;
}

char *hvdrun_ssh_remote_command(const hvdrun_opts_t *opts) {
  size_t size = 256 + 4 * strlen(opts->self_exe);
  for (char **a = opts->argv; *a != NULL; a++)
    size += 4 * strlen(*a) + 3;
  char *cmd = malloc(size);
  size_t off = 0;
  if (cmd == NULL) return NULL;
  off += (size_t)snprintf(cmd, size, "exec ");
  hvdrun_shell_quote(cmd, size, &off, opts->self_exe);
  off +=
      (size_t)snprintf(cmd + off, size - off, " %s --bind-to=%s --map-by=%s%s --",
                       HVDRUN_REMOTE_FLAG, hvdrun_bind_names[opts->bind_to],
                       hvdrun_map_names[opts->map_by], opts->verbose ? " --verbose" : "");
  for (char **a = opts->argv; *a != NULL; a++) {
    cmd[off++] = ' ';
    hvdrun_shell_quote(cmd, size, &off, *a);
  }
  cmd[off] = '\0';
  return cmd;
}

typedef struct ssh_block {
  char **argv;
  char *remote_cmd;
} ssh_block_t;

static int ssh_prepare(const hvdrun_job_t *job, const hvdrun_rank_t *r, hvdrun_cmd_t *cmd,
                       hvd_err_t *err) {
  const hvdrun_opts_t *opts = hvdrun_job_opts(job);
  size_t n = 0;
  char *remote_cmd = hvdrun_ssh_remote_command(opts);
  char **argv = remote_cmd ? hvdrun_ssh_argv(opts, r->host, 0, remote_cmd) : NULL;
  char **env = argv ? hvdrun_rank_env(job, r, 1, 1, &n, err) : NULL;
  if (env == NULL) {
    if (argv == NULL) hvd_err_set(err, "out of memory preparing rank %d", r->rank);
    goto fail;
  }
  /* stdin: magic NUL cwd NUL (entry NUL)* NUL */
  size_t len = sizeof HVDRUN_REMOTE_MAGIC + strlen(opts->cwd) + 2;
  for (size_t i = 0; i < n; i++)
    len += strlen(env[i]) + 1;
  char *data = malloc(len);
  if (data == NULL) {
    hvd_err_set(err, "out of memory preparing rank %d", r->rank);
    goto fail;
  }
  size_t off = 0;
  memcpy(data, HVDRUN_REMOTE_MAGIC, sizeof HVDRUN_REMOTE_MAGIC);
  off += sizeof HVDRUN_REMOTE_MAGIC;
  memcpy(data + off, opts->cwd, strlen(opts->cwd) + 1);
  off += strlen(opts->cwd) + 1;
  for (size_t i = 0; i < n; i++) {
    memcpy(data + off, env[i], strlen(env[i]) + 1);
    off += strlen(env[i]) + 1;
  }
  data[off++] = '\0';
  free(env);
  free(remote_cmd);
  cmd->file = "ssh";
  cmd->argv = argv;
  cmd->env = NULL;
  cmd->flags = UV_PROCESS_DETACHED;
  cmd->stdin_data = data;
  cmd->stdin_len = off;
  return 0;
fail:
  free(env);
  free(argv);
  free(remote_cmd);
  return -1;
}

static void ssh_release(hvdrun_cmd_t *cmd) {
  free(cmd->argv);
  cmd->argv = NULL;
  if (cmd->stdin_data != NULL) {
    /* It held the job token. */
    memset(cmd->stdin_data, 0, cmd->stdin_len);
    free(cmd->stdin_data);
    cmd->stdin_data = NULL;
  }
}

/* Relayed by the remote wrapper. SIGKILL also closes the channel (EOF stops the
 * rank even if the byte is lost); a second SIGKILL, once the channel is closed,
 * kills the local ssh process, which ends the session. */
static int ssh_signal(hvdrun_rank_t *r, int sig) {
  if (!r->running) return -1;
  if (r->stdin_fd >= 0) {
    unsigned char b = (unsigned char)sig;
    (void)!write(r->stdin_fd, &b, 1); /* non-blocking; EOF covers a full pipe */
    if (sig == SIGKILL) {
      close(r->stdin_fd);
      r->stdin_fd = -1;
    }
    return 0;
  }
  if (sig == SIGKILL && r->pid > 0) (void)kill(-r->pid, SIGKILL);
  return 0;
}

static void ssh_poll_alive(hvdrun_rank_t *ranks, int n) {
  for (int i = 0; i < n; i++)
    if (ranks[i].launcher == &hvdrun_ssh_launcher) ranks[i].alive = ranks[i].running;
}

const hvdrun_launcher_t hvdrun_ssh_launcher = {
    .name = "ssh",
    .prepare = ssh_prepare,
    .release = ssh_release,
    .signal = ssh_signal,
    .poll_alive = ssh_poll_alive,
};

/* ---- reachability check ------------------------------------------------------------ */

typedef struct check {
  const hvdrun_host_t *host;
  pid_t pid;
  int fd; /* its stderr */
  int status;
  int done;
  char tail[CHECK_ERR_TAIL + 1];
  size_t tail_len;
} check_t;

static double mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The last non-empty line of what ssh said. */
static const char *last_words(check_t *c) {
  char *t = c->tail;
  size_t n = c->tail_len;
  while (n > 0 && (t[n - 1] == '\n' || t[n - 1] == '\r'))
    n--;
  t[n] = '\0';
  char *nl = strrchr(t, '\n');
  return nl != NULL ? nl + 1 : t;
}

static void keep_tail(check_t *c, const char *buf, size_t n) {
  if (n >= CHECK_ERR_TAIL) {
    memcpy(c->tail, buf + n - CHECK_ERR_TAIL, CHECK_ERR_TAIL);
    c->tail_len = CHECK_ERR_TAIL;
    return;
  }
  if (c->tail_len + n > CHECK_ERR_TAIL) {
    size_t drop = c->tail_len + n - CHECK_ERR_TAIL;
    memmove(c->tail, c->tail + drop, c->tail_len - drop);
    c->tail_len -= drop;
  }
  memcpy(c->tail + c->tail_len, buf, n);
  c->tail_len += n;
}

static int spawn_check(const hvdrun_opts_t *opts, check_t *c, int timeout_s,
                       hvd_err_t *err) {
  char test[PATH_MAX * 4 + 16];
  size_t off = (size_t)snprintf(test, sizeof test, "test -x ");
  hvdrun_shell_quote(test, sizeof test, &off, opts->self_exe);
  test[off] = '\0';
  char **argv = hvdrun_ssh_argv(opts, c->host->name, timeout_s, test);
  int fds[2];
  if (argv == NULL || pipe2(fds, O_CLOEXEC) != 0) {
    hvd_err_set(err, "cannot check host '%s': %s", c->host->name,
                argv == NULL ? "out of memory" : strerror(errno));
    free(argv);
    return -1;
  }
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, fds[1], STDERR_FILENO);
  posix_spawnattr_init(&at);
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&at, 0);
  int rc = posix_spawnp(&c->pid, argv[0], &fa, &at, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  free(argv);
  close(fds[1]);
  if (rc != 0) {
    close(fds[0]);
    hvd_err_set(err, "cannot run ssh to reach host '%s': %s", c->host->name,
                strerror(rc));
    return -1;
  }
  c->fd = fds[0];
  return 0;
}

int hvdrun_ssh_check(const hvdrun_opts_t *opts, hvd_err_t *err) {
  int n = 0, rc = 0;
  int timeout_s = HVDRUN_SSH_CHECK_TIMEOUT;
  if (opts->start_timeout_s > 0 && opts->start_timeout_s < timeout_s)
    timeout_s = opts->start_timeout_s;
  check_t *checks = calloc((size_t)opts->nhosts + 1, sizeof *checks);
  if (checks == NULL) {
    hvd_err_set(err, "out of memory");
    return -1;
  }
  for (int i = 0; i < opts->nhosts; i++) {
    const hvdrun_host_t *h = &opts->hosts[i];
    if (h->nranks == 0 || h->is_local) continue;
    checks[n].host = h;
    checks[n].fd = -1;
    if (spawn_check(opts, &checks[n], timeout_s, err) != 0) {
      rc = -1;
      break;
    }
    n++;
  }
  /* ConnectTimeout bounds the connection; the deadline bounds the rest (a host that
   * accepts but never answers). */
  double deadline = mono_s() + timeout_s + 5;
  int open_fds = n;
  struct pollfd *pfd = calloc((size_t)opts->nhosts + 1, sizeof *pfd);
  if (pfd == NULL && rc == 0) {
    hvd_err_set(err, "out of memory");
    rc = -1;
  }
  while (rc == 0 && open_fds > 0) {
    for (int i = 0; i < n; i++)
      pfd[i] = (struct pollfd){.fd = checks[i].fd, .events = POLLIN};
    double left = deadline - mono_s();
    if (left <= 0) break;
    int pr = poll(pfd, (nfds_t)n, (int)(left * 1000) + 1);
    if (pr < 0 && errno != EINTR) break;
    for (int i = 0; i < n && pr > 0; i++) {
      if (pfd[i].revents == 0) continue;
      char buf[512];
      ssize_t got = read(checks[i].fd, buf, sizeof buf);
      if (got > 0) {
        keep_tail(&checks[i], buf, (size_t)got);
      } else if (got == 0 || errno != EINTR) {
        close(checks[i].fd);
        checks[i].fd = -1;
        open_fds--;
      }
    }
  }
  for (int i = 0; i < n; i++) {
    check_t *c = &checks[i];
    int st;
    if (c->fd >= 0) { /* still talking at the deadline, or we are failing anyway */
      kill(-c->pid, SIGKILL);
      close(c->fd);
      c->fd = -1;
      c->status = -1;
    }
    while (waitpid(c->pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (c->status != -1) c->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  for (int i = 0; i < n && rc == 0; i++) {
    check_t *c = &checks[i];
    const char *why = last_words(c);
    if (c->status == 0) continue;
    rc = -1;
    if (c->status == -1)
      hvd_err_set(err, "cannot reach host '%s' by ssh: no answer within %d s",
                  c->host->name, timeout_s + 5);
    else if (c->status == 255)
      hvd_err_set(err, "cannot reach host '%s' by ssh: %s", c->host->name,
                  why[0] ? why : "ssh failed (status 255)");
    else if (c->status == 1)
      hvd_err_set(err,
                  "host '%s' has no executable %s (hvdrun must be installed at the same "
                  "path on every host)",
                  c->host->name, opts->self_exe);
    else
      hvd_err_set(err, "host '%s': the ssh check exited with status %d%s%s",
                  c->host->name, c->status, why[0] ? ": " : "", why);
  }
  free(pfd);
  free(checks);
  return rc;
}
