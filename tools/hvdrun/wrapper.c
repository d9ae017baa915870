/*
 * The two hidden modes of hvdrun that run between a launcher and the rank's program.
 *
 * hvdrun --hvdrun-exec --ppid=P --bind-to=B --map-by=M -- PROGRAM ARGS...
 *   The exec trampoline of a local rank, spawned by hvdrun (already in the rank's
 *   own session, with the rank's environment). It asks for SIGKILL when hvdrun dies
 *   (PR_SET_PDEATHSIG: a SIGKILLed hvdrun leaves no rank behind; hvd_init lifts it
 *   while its rendezvous connection watches hvdrun instead), checks that hvdrun
 *   did not die before that, binds itself to the rank's CPUs (affinity survives
 *   exec, and no thread of the program exists yet to escape it) and execs PROGRAM.
 *
 * hvdrun --hvdrun-remote --bind-to=B --map-by=M [--verbose] -- PROGRAM ARGS...
 *   The remote wrapper, started by `ssh host` with the ssh session's stdin:
 *     "HVDRUN-REMOTE-1" NUL cwd NUL ("NAME=value" NUL)* NUL, then signal bytes.
 *   The job token arrives there, never on a command line. The wrapper exports the
 *   variables, changes to cwd, and forks the rank into its own process group (stdin
 *   /dev/null, PR_SET_PDEATHSIG, CPU binding, exec). The rank writes straight into
 *   the ssh session's stdout and stderr. The wrapper then relays:
 *     - each byte N (1..64) read from stdin: signal N to the rank's group;
 *     - EOF on stdin (hvdrun closed the session or died, or the connection broke):
 *       SIGTERM to the group, SIGKILL 3 s later;
 *     - SIGTERM/SIGINT/SIGHUP to the wrapper: the same signal to the group.
 *   It is a child subreaper, so processes the rank leaves behind become its children;
 *   once the rank has exited, what is left of its group (and those orphans) gets 1 s
 *   to finish and is then killed, so the ssh session can close. The wrapper exits
 *   with the rank's status, or 128+N if a signal N killed it: ssh carries only an
 *   exit status.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "tools/hvdrun/hvdrun.h"

#define HEADER_MAX (1u << 20)
#define HEADER_TIMEOUT_MS 30000
#define EOF_KILL_DELAY_MS HVDRUN_KILL_DELAY_MS
#define LINGER_MS 1000
#define GIVE_UP_MS 2000 /* after the final SIGKILL, stop waiting */

typedef struct wrap_opts {
  long ppid;
  hvdrun_bind_t bind;
  hvdrun_map_t map;
  int verbose;
  char **argv;
} wrap_opts_t;

static void wsay(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void wsay(const char *fmt, ...) {
  char line[2048];
  int n = snprintf(line, sizeof line, "hvdrun: ");
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
  va_end(ap);
  size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
  if (len > sizeof line - 2) len = sizeof line - 2;
  line[len++] = '\n';
  (void)hvdrun_write_all(STDERR_FILENO, line, len);
}

static int lookup(const char *const *names, const char *s) {
  for (int i = 0; names[i] != NULL; i++)
    if (strcmp(names[i], s) == 0) return i;
  return -1;
}

/* argv[1] is the mode flag. Returns 0 or -1 (bad internal command line). */
static int parse_wrap(int argc, char **argv, wrap_opts_t *o) {
  memset(o, 0, sizeof *o);
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    int v;
    if (strcmp(a, "--") == 0) {
      if (i + 1 >= argc) return -1;
      o->argv = argv + i + 1;
      return 0;
    }
    if (strncmp(a, "--ppid=", 7) == 0) {
      if (hvd_parse_int(a + 7, 1, INT_MAX, &o->ppid) != 0) return -1;
    } else if (strncmp(a, "--bind-to=", 10) == 0 &&
               (v = lookup(hvdrun_bind_names, a + 10)) >= 0) {
      o->bind = (hvdrun_bind_t)v;
    } else if (strncmp(a, "--map-by=", 9) == 0 &&
               (v = lookup(hvdrun_map_names, a + 9)) >= 0) {
      o->map = (hvdrun_map_t)v;
    } else if (strcmp(a, "--verbose") == 0) {
      o->verbose = 1;
    } else {
      return -1;
    }
  }
  return -1;
}

static long env_long(const char *name, long def) {
  const char *v = getenv(name);
  long out;
  if (v == NULL || hvd_parse_int(v, 0, INT_MAX, &out) != 0) return def;
  return out;
}

/* Placement of this rank from HVD_LOCAL_RANK/SIZE. *topo and *set stay NULL when
 * nothing is to be bound and nothing printed. Returns 0, or -1 after a message. */
static int place(const wrap_opts_t *o, struct hwloc_topology **topo, void **set) {
  char desc[512];
  hvd_err_t err = {{0}};
  *topo = NULL;
  *set = NULL;
  if (o->bind == HVDRUN_BIND_NONE && !o->verbose) return 0;
  *topo = hvdrun_topo_load(&err);
  if (*topo == NULL) {
    wsay("rank %s: %s", getenv("HVD_RANK"), err.msg);
    return -1;
  }
  int lr = (int)env_long("HVD_LOCAL_RANK", 0), ls = (int)env_long("HVD_LOCAL_SIZE", 1);
  if (hvdrun_placement(*topo, o->bind, o->map, lr, ls, set, desc, sizeof desc, &err) !=
      0) {
    wsay("rank %s: %s", getenv("HVD_RANK"), err.msg);
    return -1;
  }
  if (o->verbose) {
    const char *host = getenv("HVD_HOSTNAME");
    if (lr == 0) {
      char sum[256];
      hvdrun_topo_summary(*topo, sum, sizeof sum);
      wsay("topology of host %s: %s", host, sum);
    }
    wsay("rank %s (host %s, local rank %d): %s", getenv("HVD_RANK"), host, lr, desc);
  }
  return 0;
}

/* In the process that is about to exec: bind, then exec argv. Returns only on
 * failure, with the exit status to use. */
static int bind_and_exec(struct hwloc_topology *topo, void *set, char **argv) {
  int rc = hvdrun_bind_self(topo, set);
  if (rc != 0) {
    wsay("rank %s: cannot bind to its CPUs: %s", getenv("HVD_RANK"), strerror(-rc));
    return 1;
  }
  execvp(argv[0], argv);
  int e = errno;
  if (e == ENOENT && strchr(argv[0], '/') == NULL)
    wsay("cannot run '%s': command not found in PATH", argv[0]);
  else
    wsay("cannot run '%s': %s", argv[0], strerror(e));
  return e == ENOENT ? 127 : 126;
}

int hvdrun_exec_main(int argc, char **argv) {
  wrap_opts_t o;
  struct hwloc_topology *topo;
  void *set;
  if (parse_wrap(argc, argv, &o) != 0 || o.ppid == 0) {
    wsay("error: %s is for hvdrun's own use", HVDRUN_EXEC_FLAG);
    return HVDRUN_EXIT_USAGE;
  }
  (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != (pid_t)o.ppid) return 1; /* hvdrun died before the line above */
  o.verbose = 0; /* hvdrun itself prints the placement of local ranks */
  if (place(&o, &topo, &set) != 0) return 1;
  return bind_and_exec(topo, set, o.argv);
}

/* ---- remote wrapper -----------------------------------------------------------------
 */

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Read the header from stdin into a malloc'd buffer. Bytes after it (signal bytes
 * sent early) are returned in *extra / *nextra (pointing into the buffer). Returns
 * the buffer, or NULL after a message (or silently on EOF: hvdrun went away). */
static char *read_header(size_t *hlen, char **extra, size_t *nextra) {
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  uint64_t deadline = now_ms() + HEADER_TIMEOUT_MS;
  size_t mlen = sizeof HVDRUN_REMOTE_MAGIC; /* with its NUL */
  if (buf == NULL) return NULL;
  for (;;) {
    /* Complete? magic NUL cwd NUL entries... NUL (an empty string after the cwd). */
    if (len >= mlen) {
      if (memcmp(buf, HVDRUN_REMOTE_MAGIC, mlen) != 0) {
        wsay("error: %s: bad input (is this hvdrun the same version as the "
             "launching one?)",
             HVDRUN_REMOTE_FLAG);
        goto fail;
      }
      size_t p = mlen;
      int nstr = 0;
      while (p < len) {
        char *nul = memchr(buf + p, '\0', len - p);
        if (nul == NULL) break;
        size_t sl = (size_t)(nul - (buf + p));
        nstr++;
        p += sl + 1;
        if (sl == 0 && nstr > 1) { /* the terminator (the cwd is never empty) */
          *hlen = p;
          *extra = buf + p;
          *nextra = len - p;
          return buf;
        }
      }
    }
    if (len == cap) {
      if (cap >= HEADER_MAX) {
        wsay("error: %s: input too long", HVDRUN_REMOTE_FLAG);
        goto fail;
      }
      char *nb = realloc(buf, cap * 2);
      if (nb == NULL) goto fail;
      buf = nb;
      cap *= 2;
    }
    uint64_t now = now_ms();
    if (now >= deadline) {
      wsay("error: %s: no job description on stdin within %d s", HVDRUN_REMOTE_FLAG,
           HEADER_TIMEOUT_MS / 1000);
      goto fail;
    }
    struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
    int pr = poll(&pfd, 1, (int)(deadline - now));
    if (pr < 0 && errno != EINTR) goto fail;
    if (pr <= 0) continue;
    ssize_t n = read(STDIN_FILENO, buf + len, cap - len);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) goto fail; /* EOF: hvdrun gave up on us */
    len += (size_t)n;
  }
fail:
  free(buf);
  return NULL;
}

/* Export the header's variables and change to its directory. Returns 0 or -1. */
static int apply_header(char *buf, size_t hlen) {
  size_t p = sizeof HVDRUN_REMOTE_MAGIC;
  const char *cwd = buf + p;
  p += strlen(cwd) + 1;
  while (p < hlen && buf[p] != '\0') {
    char *entry = buf + p;
    p += strlen(entry) + 1;
    char *eq = strchr(entry, '=');
    if (eq == NULL || eq == entry) continue;
    *eq = '\0';
    if (setenv(entry, eq + 1, 1) != 0) {
      wsay("error: cannot set %s: %s", entry, strerror(errno));
      return -1;
    }
    if (strncmp(entry, "HVD_", 4) == 0) { /* a stale alias must not win */
      char alias[512];
      snprintf(alias, sizeof alias, "HOROVOD_%s", entry + 4);
      unsetenv(alias);
    }
  }
  if (chdir(cwd) != 0) {
    wsay("rank %s: cannot change to directory '%s' on host %s: %s", getenv("HVD_RANK"),
         cwd, getenv("HVD_HOSTNAME"), strerror(errno));
    return -1;
  }
  setenv("PWD", cwd, 1);
  return 0;
}

/* Signal our children other than the rank (orphans reparented to us), or their
 * groups when they lead one. Returns how many there were. */
static int signal_orphans(pid_t rank, int sig) {
  char path[64];
  int pid, n = 0;
  snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
  FILE *f = fopen(path, "re");
  if (f == NULL) return 0;
  while (fscanf(f, "%d", &pid) == 1) {
    if (pid == rank) continue;
    n++;
    if (sig > 0 && (getpgid(pid) != pid || kill(-pid, sig) != 0)) (void)kill(pid, sig);
  }
  fclose(f);
  return n;
}

static void relay(pid_t rank, int sig) {
  (void)kill(-rank, sig);
  (void)signal_orphans(rank, sig);
}

int hvdrun_remote_main(int argc, char **argv) {
  wrap_opts_t o;
  struct hwloc_topology *topo = NULL;
  void *set = NULL;
  char *extra;
  size_t hlen, nextra;
  sigset_t mask, old;

  if (parse_wrap(argc, argv, &o) != 0) {
    wsay("error: %s is for hvdrun's own use", HVDRUN_REMOTE_FLAG);
    return HVDRUN_EXIT_USAGE;
  }
  signal(SIGPIPE, SIG_IGN); /* a broken session must not kill us before the rank */
  char *hdr = read_header(&hlen, &extra, &nextra);
  if (hdr == NULL) return 1;
  if (apply_header(hdr, hlen) != 0 || place(&o, &topo, &set) != 0) return 1;

  (void)prctl(PR_SET_CHILD_SUBREAPER, 1);
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGHUP);
  sigprocmask(SIG_BLOCK, &mask, &old);
  int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) {
    wsay("error: signalfd: %s", strerror(errno));
    return 1;
  }
  pid_t me = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    wsay("error: fork: %s", strerror(errno));
    return 1;
  }
  if (pid == 0) {
    sigprocmask(SIG_SETMASK, &old, NULL);
    signal(SIGPIPE, SIG_DFL);
    setpgid(0, 0);
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull >= 0) {
      dup2(devnull, STDIN_FILENO);
      close(devnull);
    }
    (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != me) _exit(1);
    _exit(bind_and_exec(topo, set, o.argv));
  }
  setpgid(pid, pid); /* also here: no signal may miss the group */
  hvdrun_set_free(set);
  hvdrun_topo_free(topo);

  for (size_t i = 0; i < nextra; i++)
    if (extra[i] >= 1 && extra[i] <= 64) relay(pid, extra[i]);
  free(hdr);

  int stdin_open = 1, exited = 0, status = 0, killed = 0;
  uint64_t kill_at = 0, linger_until = 0, give_up = 0;
  for (;;) {
    uint64_t now = now_ms();
    if (kill_at != 0 && now >= kill_at) {
      relay(pid, SIGKILL);
      kill_at = 0;
    }
    if (exited) {
      int left = kill(-pid, 0) == 0 || signal_orphans(pid, 0) > 0;
      if (!left || (give_up != 0 && now >= give_up)) break;
      if (!killed && now >= linger_until) {
        relay(pid, SIGKILL);
        killed = 1;
        give_up = now + GIVE_UP_MS;
      }
    }
    struct pollfd fds[2] = {{.fd = sfd, .events = POLLIN},
                            {.fd = stdin_open ? STDIN_FILENO : -1, .events = POLLIN}};
    int timeout = exited ? 50 : -1;
    if (kill_at != 0) {
      int t = (int)(kill_at > now ? kill_at - now : 0);
      if (timeout < 0 || t < timeout) timeout = t;
    }
    int pr = poll(fds, 2, timeout);
    if (pr < 0 && errno != EINTR) break;
    if (pr <= 0) continue;
    if (fds[1].revents) {
      unsigned char b[256];
      ssize_t n = read(STDIN_FILENO, b, sizeof b);
      if (n > 0) {
        for (ssize_t i = 0; i < n; i++)
          if (b[i] >= 1 && b[i] <= 64) relay(pid, b[i]);
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        stdin_open = 0; /* hvdrun is gone or done: nothing of the rank may stay */
        if (!exited) {
          relay(pid, SIGTERM);
          kill_at = now_ms() + EOF_KILL_DELAY_MS;
        }
      }
    }
    if (fds[0].revents) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo != SIGCHLD) {
          relay(pid, (int)si.ssi_signo);
          continue;
        }
        int st;
        pid_t w;
        while ((w = waitpid(-1, &st, WNOHANG)) > 0) {
          if (w != pid) continue; /* an orphan of the rank */
          exited = 1;
          status = st;
          linger_until = now_ms() + LINGER_MS;
        }
      }
    }
    if (exited) /* orphans reparented as zombies may not raise SIGCHLD again */
      while (waitpid(-1, NULL, WNOHANG) > 0) {
      }
  }
  if (!exited) return 1;
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WEXITSTATUS(status);
}
