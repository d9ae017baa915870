/* See harness.h. */
#include "harness.h"

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

extern char **environ;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static char **merge_env(char *const extra[]) {
  size_t n = 0, m = 0;
  while (environ[n]) n++;
  while (extra && extra[m]) m++;
  char **e = calloc(n + m + 1, sizeof *e);
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    int overridden = 0;
    for (size_t j = 0; j < m; j++) {
      const char *eq = strchr(extra[j], '=');
      size_t kl = eq ? (size_t)(eq - extra[j]) : strlen(extra[j]);
      if (strncmp(environ[i], extra[j], kl) == 0 && environ[i][kl] == '=') overridden = 1;
    }
    if (!overridden) e[k++] = environ[i];
  }
  for (size_t j = 0; j < m; j++) e[k++] = extra[j];
  return e;
}

run_result_t run_cmd(char *const argv[], char *const env[], double timeout_s) {
  run_result_t r = {0};
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) abort();
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
  posix_spawnattr_t at;
  posix_spawnattr_init(&at);
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&at, 0);
  char **e = merge_env(env);
  pid_t pid;
  double t0 = now_s();
  int rc = posix_spawnp(&pid, argv[0], &fa, &at, argv, e);
  free(e);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  close(fds[1]);
  if (rc != 0) {
    close(fds[0]);
    r.out = strdup("spawn failed");
    r.status = 127;
    r.exited = 1;
    return r;
  }
  size_t cap = 1 << 16;
  r.out = malloc(cap);
  int open_pipe = 1;
  while (open_pipe) {
    double left = t0 + timeout_s - now_s();
    if (left <= 0) {
      r.timed_out = 1;
      kill(-pid, SIGKILL);
      break;
    }
    struct pollfd p = {.fd = fds[0], .events = POLLIN};
    int n = poll(&p, 1, (int)(left * 1000) + 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    if (r.out_len + 65536 + 1 > cap) {
      cap *= 2;
      r.out = realloc(r.out, cap);
    }
    ssize_t got = read(fds[0], r.out + r.out_len, 65536);
    if (got <= 0) open_pipe = 0;
    else r.out_len += (size_t)got;
  }
  close(fds[0]);
  r.out[r.out_len] = '\0';
  int st;
  /* hvdrun may have closed its output but still be exiting; bound that too. */
  for (;;) {
    pid_t w = waitpid(pid, &st, WNOHANG);
    if (w == pid) break;
    if (now_s() > t0 + timeout_s) {
      r.timed_out = 1;
      kill(-pid, SIGKILL);
      waitpid(pid, &st, 0);
      break;
    }
    usleep(10000);
  }
  r.seconds = now_s() - t0;
  if (WIFEXITED(st)) {
    r.exited = 1;
    r.status = WEXITSTATUS(st);
  } else {
    r.status = WTERMSIG(st);
  }
  return r;
}

run_result_t run_sh(const char *cmd, char *const env[], double timeout_s) {
  char *argv[] = {"/bin/sh", "-c", (char *)cmd, NULL};
  return run_cmd(argv, env, timeout_s);
}

void run_free(run_result_t *r) {
  free(r->out);
  r->out = NULL;
}

int count_in(const run_result_t *r, const char *needle) {
  int n = 0;
  for (const char *p = r->out; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
  return n;
}

const char *last_line(const run_result_t *r) {
  static char line[4096];
  size_t end = r->out_len;
  while (end > 0 && (r->out[end - 1] == '\n' || r->out[end - 1] == '\r')) end--;
  size_t start = end;
  while (start > 0 && r->out[start - 1] != '\n') start--;
  size_t n = end - start < sizeof line - 1 ? end - start : sizeof line - 1;
  memcpy(line, r->out + start, n);
  line[n] = '\0';
  return line;
}

const char *bin_path(const char *name) {
  static char buf[8][1024];
  static int k;
  char *b = buf[k++ % 8];
  snprintf(b, 1024, "%s/%s", HVD_BIN_DIR, name);
  return b;
}

const char *prog_path(const char *name) {
  static char buf[8][1024];
  static int k;
  char *b = buf[k++ % 8];
  snprintf(b, 1024, "%s/%s", HVD_TEST_PROG_DIR, name);
  return b;
}

int test_quick(void) {
  const char *q = getenv("HVD_TEST_QUICK");
  return q != NULL && *q != '\0' && strcmp(q, "0") != 0;
}

#include <dirent.h>

int procs_matching(const char *marker) {
  DIR *d = opendir("/proc");
  int n = 0;
  struct dirent *e;
  while (d && (e = readdir(d)) != NULL) {
    char *end;
    long pid = strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid == getpid()) continue;
    char path[64], buf[8192];
    snprintf(path, sizeof path, "/proc/%ld/cmdline", pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) continue;
    ssize_t len = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (len <= 0) continue;
    for (ssize_t i = 0; i < len; i++)
      if (buf[i] == '\0') buf[i] = ' ';
    buf[len] = '\0';
    if (strstr(buf, marker)) n++;
  }
  if (d) closedir(d);
  return n;
}
