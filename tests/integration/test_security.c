/*
 * The rendezvous server under attack while a real job runs, and the job token's
 * secrecy (docs/security.md):
 *   - 500 concurrent bogus connections (silent, random bytes, wrong token, truncated
 *     HELLO, oversized length) while `hvdrun -np 3 allreduce_check` runs: the job
 *     completes (ALL OK on every rank), the bad ones are closed at once, the silent
 *     and truncated ones at the HELLO timeout (10 s), and hvdrun holds no socket for
 *     any of them afterwards;
 *   - the token is 32 random hex characters, new for every job, never in the output
 *     (default log level, and debug with --verbose), never on any process's command
 *     line while the job runs;
 *   - the server listens on 127.0.0.1 for a single-host job (ss -ltnp), on every
 *     interface only with --rendezvous-bind 0.0.0.0; the ranks' data-plane endpoints
 *     of a single-host job listen on loopback only.
 */
#include <criterion/criterion.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "harness.h"
#include "transport/rdv.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- a job in the background ---------------------------------------------------- */

typedef struct bg_job {
  pid_t pid; /* hvdrun itself (sh execs it), also its process group */
  char dir[64];
  char out[128];
} bg_job_t;

/* A fresh directory for a job: its output file, the ranks' files, the stop file. */
static void job_dir(bg_job_t *j) {
  snprintf(j->dir, sizeof j->dir, "/tmp/hvd-sec-XXXXXX");
  cr_assert_not_null(mkdtemp(j->dir));
  snprintf(j->out, sizeof j->out, "%s/out", j->dir);
}

/* Start `hvdrun ARGS` with stdout and stderr in j->out. env: "NAME=value" or NULL. */
static void job_spawn(bg_job_t *j, const char *args, const char *env) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "exec %s %s >%s 2>&1", bin_path("hvdrun"), args, j->out);
  j->pid = fork();
  cr_assert(j->pid >= 0);
  if (j->pid == 0) {
    setpgid(0, 0);
    if (env != NULL) putenv((char *)env);
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
  }
  setpgid(j->pid, j->pid);
}

/* The job's output so far (malloc'd, NUL-terminated). */
static char *job_output(const bg_job_t *j) {
  FILE *f = fopen(j->out, "r");
  if (f == NULL) return strdup("");
  size_t cap = 1 << 16, len = 0;
  char *s = malloc(cap);
  size_t n;
  while ((n = fread(s + len, 1, cap - len - 1, f)) > 0) {
    len += n;
    if (cap - len < 4096) s = realloc(s, cap *= 2);
  }
  fclose(f);
  s[len] = '\0';
  return s;
}

static int count_str(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
  return n;
}

/* Wait until the output holds needle `times` times; 0 on time-out. */
static int job_wait_text(const bg_job_t *j, const char *needle, int times, double timeout_s) {
  double end = now_s() + timeout_s;
  while (now_s() < end) {
    char *s = job_output(j);
    int n = count_str(s, needle);
    free(s);
    if (n >= times) return 1;
    usleep(50 * 1000);
  }
  return 0;
}

/* Tell the ranks to finish (they wait for dir/stop), then wait for hvdrun's exit
 * status; -1 if it had to be killed. */
static int job_finish(bg_job_t *j, double timeout_s) {
  char stop[128];
  snprintf(stop, sizeof stop, "%s/stop", j->dir);
  int fd = open(stop, O_CREAT | O_WRONLY, 0644);
  if (fd >= 0) close(fd);
  double end = now_s() + timeout_s;
  int status;
  while (now_s() < end) {
    if (waitpid(j->pid, &status, WNOHANG) == j->pid)
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    usleep(50 * 1000);
  }
  kill(-j->pid, SIGKILL);
  waitpid(j->pid, &status, 0);
  return -1;
}

static void job_cleanup(bg_job_t *j) {
  char cmd[160];
  snprintf(cmd, sizeof cmd, "rm -rf %s", j->dir);
  if (system(cmd) != 0) cr_log_warn("could not remove %s", j->dir);
}

/* Shell for one rank: run allreduce_check, then wait until the test says stop. */
static void rank_cmd(char *out, size_t n, const bg_job_t *j, const char *before) {
  snprintf(out, n,
           "sh -c '%s%s --counts 1,1000003 --dtypes float32,int64 && "
           "while [ ! -e %s/stop ]; do sleep 0.1; done'",
           before, prog_path("allreduce_check"), j->dir);
}

/* hvdrun's rendezvous port, from its --verbose line. */
static int job_port(const bg_job_t *j) {
  cr_assert(job_wait_text(j, "rendezvous server listening on ", 1, 30), "no listening line");
  char *s = job_output(j);
  const char *p = strstr(s, "rendezvous server listening on ");
  int port = 0;
  const char *colon = p != NULL ? strchr(p + 31, ' ') : NULL;
  while (colon != NULL && colon > p && colon[-1] != ':') colon--;
  if (colon != NULL) port = atoi(colon);
  free(s);
  cr_assert(port > 0 && port < 65536, "no port in the listening line");
  return port;
}

/* Descriptors of process pid that are sockets. */
static int socket_fds(pid_t pid) {
  char path[64], link[128];
  snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
  DIR *d = opendir(path);
  int n = 0;
  struct dirent *e;
  while (d != NULL && (e = readdir(d)) != NULL) {
    char fdp[320];
    snprintf(fdp, sizeof fdp, "%s/%s", path, e->d_name);
    ssize_t k = readlink(fdp, link, sizeof link - 1);
    if (k > 0) {
      link[k] = '\0';
      if (strncmp(link, "socket:", 7) == 0) n++;
    }
  }
  if (d != NULL) closedir(d);
  return n;
}

static int fd_count(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
  DIR *d = opendir(path);
  int n = 0;
  while (d != NULL && readdir(d) != NULL) n++;
  if (d != NULL) closedir(d);
  return n - 2; /* . and .. */
}

/* ---- 500 bogus connections -------------------------------------------------------- */

enum { SILENT, RANDOM_BYTES, WRONG_TOKEN, TRUNCATED, OVERSIZED, NKINDS };
static const char *const kind_name[NKINDS] = {"silent", "random bytes", "wrong token",
                                              "truncated HELLO", "oversized length"};
#define NBOGUS 500

typedef struct bogus {
  int fd;
  int kind;
  uint8_t out[512];
  size_t outlen, sent;
  uint8_t in[512];
  size_t inlen;
  double t_open, t_closed; /* t_closed 0 while open */
} bogus_t;

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)rng;
}

static void bogus_payload(bogus_t *b) {
  hvd_rdv_buf_t w;
  hvd_rdv_buf_init(&w);
  switch (b->kind) {
  case SILENT:
    break;
  case RANDOM_BYTES:
    b->outlen = 16 + rnd() % 400;
    for (size_t i = 0; i < b->outlen; i++) b->out[i] = (uint8_t)rnd();
    b->out[0] = (uint8_t)(b->out[0] == 'H' ? 'h' : b->out[0]); /* never the magic */
    break;
  case WRONG_TOKEN: {
    hvd_rdv_msg_t m = {.type = HVD_RDV_HELLO, .str = (const uint8_t *)"0123456789abcdef0123456789abcdef",
                       .str_len = HVD_RDV_TOKEN_LEN, .rank = 0, .size = 3};
    cr_assert_eq(hvd_rdv_msg_encode(&w, &m), HVD_OK);
    memcpy(b->out, w.data, w.len);
    b->outlen = w.len;
    break;
  }
  case TRUNCATED: /* a HELLO header promising 40 bytes, and 8 of them */
    hvd_rdv_encode_header(b->out, HVD_RDV_HELLO, 40);
    memset(b->out + HVD_RDV_HEADER_SIZE, 'x', 8);
    b->outlen = HVD_RDV_HEADER_SIZE + 8;
    break;
  case OVERSIZED: /* 2 GiB of HELLO: refused before anything is allocated */
    hvd_rdv_encode_header(b->out, HVD_RDV_HELLO, 0x7fffffffu);
    b->outlen = HVD_RDV_HEADER_SIZE;
    break;
  }
  hvd_rdv_buf_free(&w);
}

/* Open all of them at once, feed them, and watch until every one is closed by the
 * server (or deadline). Returns how many are still open. */
static int flood(bogus_t *bs, int port, double deadline) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int i = 0; i < NBOGUS; i++) {
    bogus_t *b = &bs[i];
    memset(b, 0, sizeof *b);
    b->kind = i % NKINDS;
    bogus_payload(b);
    b->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    cr_assert(b->fd >= 0, "socket: %s", strerror(errno));
    int rc = connect(b->fd, (struct sockaddr *)&a, sizeof a);
    cr_assert(rc == 0 || errno == EINPROGRESS, "connect: %s", strerror(errno));
    b->t_open = now_s();
  }
  struct pollfd *p = calloc(NBOGUS, sizeof *p);
  int open_n = NBOGUS;
  while (open_n > 0 && now_s() < deadline) {
    for (int i = 0; i < NBOGUS; i++) {
      p[i].fd = bs[i].t_closed == 0 ? bs[i].fd : -1;
      p[i].events = POLLIN | (bs[i].sent < bs[i].outlen ? POLLOUT : 0);
      p[i].revents = 0;
    }
    if (poll(p, NBOGUS, 100) <= 0) continue;
    for (int i = 0; i < NBOGUS; i++) {
      bogus_t *b = &bs[i];
      if (b->t_closed != 0 || p[i].revents == 0) continue;
      if ((p[i].revents & POLLOUT) && b->sent < b->outlen) {
        ssize_t n = send(b->fd, b->out + b->sent, b->outlen - b->sent, MSG_NOSIGNAL);
        if (n > 0) b->sent += (size_t)n;
      }
      if (p[i].revents & (POLLIN | POLLHUP | POLLERR)) {
        uint8_t tmp[512];
        ssize_t n = recv(b->fd, tmp, sizeof tmp, 0);
        if (n > 0) {
          size_t room = sizeof b->in - b->inlen;
          size_t k = (size_t)n < room ? (size_t)n : room;
          memcpy(b->in + b->inlen, tmp, k);
          b->inlen += k;
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
          b->t_closed = now_s();
          open_n--;
        }
      }
    }
  }
  free(p);
  return open_n;
}

Test(security, flood_of_bogus_connections_while_a_job_runs, .timeout = 180) {
  bg_job_t j;
  char ranks[1024], args[1400];
  job_dir(&j);
  rank_cmd(ranks, sizeof ranks, &j, "");
  snprintf(args, sizeof args, "--verbose -np 3 %s", ranks);
  job_spawn(&j, args, NULL);

  int port = job_port(&j);
  int fds_before = fd_count(j.pid);
  static bogus_t bs[NBOGUS];
  double t0 = now_s();
  int still_open = flood(bs, port, t0 + 40);
  int hvdrun_alive = kill(j.pid, 0) == 0 && waitpid(j.pid, NULL, WNOHANG) == 0;
  cr_assert(hvdrun_alive, "hvdrun exited during the flood:\n%s", job_output(&j));
  cr_assert_eq(still_open, 0, "%d bogus connections are still open after 40 s", still_open);

  /* How long each kind stayed open. */
  double lo[NKINDS], hi[NKINDS];
  int errors = 0;
  for (int k = 0; k < NKINDS; k++) lo[k] = 1e9, hi[k] = 0;
  for (int i = 0; i < NBOGUS; i++) {
    bogus_t *b = &bs[i];
    double life = b->t_closed - b->t_open;
    lo[b->kind] = life < lo[b->kind] ? life : lo[b->kind];
    hi[b->kind] = life > hi[b->kind] ? life : hi[b->kind];
    if (b->kind == WRONG_TOKEN) {
      hvd_rdv_header_t h;
      if (b->inlen >= HVD_RDV_HEADER_SIZE && hvd_rdv_decode_header(b->in, &h, NULL) == HVD_OK &&
          h.type == HVD_RDV_ERROR)
        errors++;
    } else if (b->kind != WRONG_TOKEN) {
      cr_expect_eq(b->inlen, 0, "a %s connection got %zu bytes back", kind_name[b->kind],
                   b->inlen);
    }
    close(b->fd);
  }
  for (int k = 0; k < NKINDS; k++)
    cr_log_info("%s: closed after %.2f .. %.2f s", kind_name[k], lo[k], hi[k]);
  /* Refused at once (generous for a loaded machine) ... */
  cr_expect_lt(hi[RANDOM_BYTES], 5.0);
  cr_expect_lt(hi[WRONG_TOKEN], 5.0);
  cr_expect_lt(hi[OVERSIZED], 5.0);
  cr_expect_eq(errors, NBOGUS / NKINDS, "%d of %d wrong-token connections got ERROR", errors,
               NBOGUS / NKINDS);
  /* ... and those that say nothing useful, at the HELLO timeout (10 s). */
  cr_expect(lo[SILENT] > 9.0 && hi[SILENT] < 20.0, "silent: %.2f .. %.2f s", lo[SILENT],
            hi[SILENT]);
  cr_expect(lo[TRUNCATED] > 9.0 && hi[TRUNCATED] < 20.0, "truncated: %.2f .. %.2f s",
            lo[TRUNCATED], hi[TRUNCATED]);

  /* The job was served meanwhile. */
  cr_assert(job_wait_text(&j, "ALL OK", 3, 60), "the job did not complete:\n%s",
            job_output(&j));
  /* Nothing of the flood is left in hvdrun: once the ranks have closed their own
   * connections (they said BYE and wait in the shell), only the listener remains. */
  int sockets = -1;
  for (double end = now_s() + 10; now_s() < end; usleep(100 * 1000))
    if ((sockets = socket_fds(j.pid)) == 1) break;
  int fds_after = fd_count(j.pid);
  cr_log_info("hvdrun: %d descriptors before the flood, %d after, %d sockets", fds_before,
              fds_after, sockets);
  cr_expect_eq(sockets, 1, "hvdrun holds %d sockets after the flood (listener only expected)",
               sockets);
  cr_expect_leq(fds_after, fds_before + 3 * 2, "descriptors: %d before, %d after", fds_before,
                fds_after);

  int st = job_finish(&j, 60);
  char *out = job_output(&j);
  if (st != 0) cr_log_error("%s", out);
  cr_assert_eq(st, 0, "hvdrun exited %d", st);
  cr_expect_eq(count_str(out, "ALL OK"), 3);
  cr_expect_geq(count_str(out, "wrong job token"), NBOGUS / NKINDS, "wrong-token log lines");
  cr_expect_geq(count_str(out, "no valid HELLO within"), 2 * NBOGUS / NKINDS,
                "HELLO timeout log lines");
  free(out);
  job_cleanup(&j);
}

/* ---- the token -------------------------------------------------------------------- */

typedef struct watch {
  const char *dir;
  atomic_int stop;
  char token[64];
  int scans, found;
  char where[512];
} watch_t;

/* Read the token a rank saw, then look for it on every command line until told to
 * stop. */
static void *watch_cmdlines(void *arg) {
  watch_t *w = arg;
  char path[128];
  snprintf(path, sizeof path, "%s/tok.0", w->dir);
  while (!atomic_load(&w->stop)) {
    if (w->token[0] == '\0') {
      FILE *f = fopen(path, "r");
      if (f != NULL) {
        if (fgets(w->token, sizeof w->token, f) == NULL || strlen(w->token) < 32)
          w->token[0] = '\0';
        fclose(f);
      }
    }
    if (w->token[0] != '\0') {
      DIR *d = opendir("/proc");
      struct dirent *e;
      while (d != NULL && (e = readdir(d)) != NULL) {
        if (!isdigit((unsigned char)e->d_name[0])) continue;
        char p[300], buf[8192];
        snprintf(p, sizeof p, "/proc/%s/cmdline", e->d_name);
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n <= 0) continue;
        for (ssize_t i = 0; i < n; i++)
          if (buf[i] == '\0') buf[i] = ' ';
        buf[n] = '\0';
        if (strstr(buf, w->token) != NULL && !w->found) {
          w->found = 1;
          snprintf(w->where, sizeof w->where, "pid %.16s: %.400s", e->d_name, buf);
        }
      }
      if (d != NULL) closedir(d);
      w->scans++;
    }
    usleep(20 * 1000);
  }
  return NULL;
}

/* Run a 3-rank job whose ranks write the token they got to dir/tok.RANK; check it
 * is nowhere in the output or on a command line. The token is returned in tok. */
static void token_job(const char *flags, const char *env, char tok[64]) {
  bg_job_t j;
  char ranks[1024], args[1400], before[256];
  job_dir(&j);
  snprintf(before, sizeof before, "printf %%s \"$HVD_JOB_TOKEN\" > %s/tok.$HVD_RANK; ", j.dir);
  rank_cmd(ranks, sizeof ranks, &j, before);
  snprintf(args, sizeof args, "%s -np 3 %s", flags, ranks);
  watch_t w = {.dir = j.dir};
  pthread_t th;
  pthread_create(&th, NULL, watch_cmdlines, &w);
  job_spawn(&j, args, env);
  cr_assert(job_wait_text(&j, "ALL OK", 3, 90), "the job did not complete:\n%s", job_output(&j));
  /* Let the watcher look at the whole job standing (hvdrun, wrappers, shells). */
  for (double end = now_s() + 5; now_s() < end && w.scans < 10;) usleep(20 * 1000);
  int st = job_finish(&j, 60);
  atomic_store(&w.stop, 1);
  pthread_join(th, NULL);
  char *out = job_output(&j);
  cr_assert_eq(st, 0, "hvdrun exited %d:\n%s", st, out);
  cr_assert_eq(strlen(w.token), HVD_RDV_TOKEN_LEN, "rank 0 got no %d-character token",
               HVD_RDV_TOKEN_LEN);
  for (size_t i = 0; i < HVD_RDV_TOKEN_LEN; i++)
    cr_assert(isxdigit((unsigned char)w.token[i]), "token is not hex: %s", w.token);
  for (int r = 1; r < 3; r++) {
    char path[160], t[64] = "";
    snprintf(path, sizeof path, "%s/tok.%d", j.dir, r);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    cr_assert_not_null(fgets(t, sizeof t, f));
    fclose(f);
    cr_assert_str_eq(t, w.token, "rank %d got another token", r);
  }
  cr_assert(w.scans > 0, "the command lines were never scanned while the job ran");
  cr_assert(!w.found, "the job token is on a command line: %s", w.where);
  cr_assert_eq(count_str(out, w.token), 0, "the token was printed (%s %s):\n%s", flags,
               env ? env : "", out);
  /* Not a fragment of it either (e.g. a shm segment name). */
  char half[17];
  memcpy(half, w.token, 16);
  half[16] = '\0';
  cr_assert_eq(count_str(out, half), 0, "half of the token was printed:\n%s", out);
  memcpy(tok, w.token, sizeof w.token);
  free(out);
  job_cleanup(&j);
}

Test(security, token_random_per_job_never_logged_never_on_a_command_line, .timeout = 240) {
  char t1[64], t2[64];
  token_job("", NULL, t1);
  token_job("--verbose", "HVD_LOG_LEVEL=debug", t2);
  cr_assert_str_neq(t1, t2, "two jobs got the same token");
}

/* ---- where the server listens --------------------------------------------------- */

/* The local addresses that processes whose ss line contains `who` listen on, from
 * ss -ltnp, space-separated. */
static void listeners(const char *who, char *out, size_t n) {
  FILE *f = popen("ss -ltnpH 2>/dev/null", "r");
  cr_assert_not_null(f);
  char line[1024];
  out[0] = '\0';
  while (fgets(line, sizeof line, f) != NULL) {
    if (strstr(line, who) == NULL) continue;
    char state[32], rq[16], sq[16], local[128];
    if (sscanf(line, "%31s %15s %15s %127s", state, rq, sq, local) == 4) {
      size_t k = strlen(out);
      snprintf(out + k, n - k, "%s%s", k ? " " : "", local);
    }
  }
  pclose(f);
}

/* A 2-rank job that stays initialised: hvdrun must listen on want_prefix:port only,
 * and the ranks' data-plane endpoints on loopback only (a single-host job). */
static void check_listener(const char *flags, const char *want_prefix) {
  bg_job_t j;
  char args[1400];
  job_dir(&j);
  snprintf(args, sizeof args, "--verbose %s -np 2 %s %s/stop", flags, prog_path("init_wait"),
           j.dir);
  job_spawn(&j, args, NULL);
  int port = job_port(&j);
  cr_assert(job_wait_text(&j, ": initialised", 2, 90), "the ranks did not initialise:\n%s",
            job_output(&j));
  char got[512], ranks[1024], want[64], who[32];
  snprintf(who, sizeof who, "pid=%d,", (int)j.pid);
  listeners(who, got, sizeof got);
  listeners("\"init_wait\"", ranks, sizeof ranks);
  snprintf(want, sizeof want, "%s:%d", want_prefix, port);
  int st = job_finish(&j, 60);
  cr_assert_eq(st, 0, "hvdrun exited %d:\n%s", st, job_output(&j));
  cr_assert_str_eq(got, want, "hvdrun %s listens on '%s', expected only %s", flags, got, want);
  cr_log_info("ranks listen on %s", ranks);
  cr_assert(ranks[0] != '\0', "no data-plane listener of the ranks seen");
  for (const char *p = ranks; p != NULL && *p; p = strchr(p, ' ') ? strchr(p, ' ') + 1 : NULL)
    cr_assert(strncmp(p, "127.0.0.1:", 10) == 0, "a rank of a single-host job listens on %s",
              ranks);
  job_cleanup(&j);
}

Test(security, rendezvous_and_data_plane_on_loopback_for_a_local_job, .timeout = 120) {
  check_listener("", "127.0.0.1");
}

Test(security, rendezvous_bind_flag, .timeout = 120) {
  check_listener("--rendezvous-bind 0.0.0.0", "0.0.0.0");
}
