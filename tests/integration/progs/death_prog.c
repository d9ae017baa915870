/*
 * A rank program for the rank-death tests (test_death.c): one rank (the victim) dies,
 * or kills hvdrun, at a chosen moment, and every other rank reports how its pending
 * operation ended.
 *
 *   death_prog --phase negotiate|ring|idle|stranded --victim K --how kill|exit0|launcher
 *              --report DIR [--count N] [--tag ANY]
 *
 * After two small warm-up allreduces (which also check that the job works):
 *   negotiate  the others submit "neg.survivors", which the victim never submits; the
 *              victim submits "neg.victim" instead, so both sides are negotiating,
 *              and dies 300 ms later;
 *   ring       every rank loops over N-element float32 allreduces "big.<i>" (default
 *              N = 16Mi: 64 MiB); the victim dies part way (a quarter of the time
 *              big.1 took, at most 5 ms) into its third one, "big.2";
 *   idle       the others wait in hvd_wait for "idle.next"; the victim sleeps 300 ms
 *              without submitting anything and dies;
 *   stranded   the others submit "stranded.next" (which the victim never submits),
 *              then "stranded.cb", which every rank submits and whose completion
 *              callback does not return on the others: their background thread is
 *              stuck outside the runtime's reach, as in a transport that does not
 *              return. The victim dies 300 ms after stranded.cb completed; the others
 *              wait for stranded.next, which only the liveness thread can fail. Once
 *              hvd_shutdown has left the stuck thread behind, the callback returns:
 *              the thread's late completions must do nothing and it frees the
 *              context itself (the sanitizers check the memory).
 * How the victim dies: kill = raise(SIGKILL); exit0 = exit(0) from the main thread
 * without hvd_shutdown (background thread still running); launcher = it does not die
 * but SIGKILLs its parent, hvdrun, and then behaves like the others.
 *
 * Just before dying the victim writes "DEATH rank K how=H t=<CLOCK_REALTIME>" to
 * stdout and to DIR/death. Every other rank (every rank with --how launcher) writes
 * "SURVIVOR rank R op=NAME status=STATUS t=<CLOCK_REALTIME when hvd_wait returned>
 * error=<hvd_req_error>" to stdout and to DIR/rank.R, then shuts down, writes
 * "SHUTDOWN rank R status=STATUS t=<CLOCK_REALTIME>" to stdout and exits 1;
 * with --how launcher it instead ignores the error and sleeps (the runtime must end
 * the process). --tag is ignored: it makes the command line unique for pgrep.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hvd.h"

typedef struct opts {
  const char *phase, *how, *report;
  int victim;
  size_t count;
} opts_t;

static double realtime(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double monotonic(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_s(double s) {
  struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* line to stdout (one write, so it reaches hvdrun before anything else happens) and
 * to DIR/file. */
static void report(const opts_t *o, const char *file, const char *line) {
  char path[4096];
  size_t n = strlen(line);
  (void)!write(STDOUT_FILENO, line, n);
  snprintf(path, sizeof path, "%s/%s", o->report, file);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd >= 0) {
    (void)!write(fd, line, n);
    close(fd);
  }
}

/* The victim's moment: die, or kill hvdrun. */
static void victim_acts(const opts_t *o, int rank) {
  char line[256];
  snprintf(line, sizeof line, "DEATH rank %d how=%s t=%.6f\n", rank, o->how, realtime());
  report(o, "death", line);
  if (strcmp(o->how, "kill") == 0) raise(SIGKILL);
  if (strcmp(o->how, "exit0") == 0) exit(0);
  kill(getppid(), SIGKILL); /* launcher */
}

static const char *status_name(hvd_status_t st) {
  switch (st) {
#define NAME_(name, value, text) \
  case HVD_##name:               \
    return "HVD_" #name;
    HVD_STATUS_MAP(NAME_)
#undef NAME_
  }
  return "unknown";
}

/* stranded.cb on a survivor: its callback returns once this is set. */
static hvd_req_t *stranded_cb_req;
static atomic_int stranded_release;

/* A survivor's pending operation ended: say how, then leave. */
static int survivor_reports(hvd_ctx_t *ctx, const opts_t *o, int rank, const char *name,
                            hvd_req_t *req, hvd_status_t st) {
  double t = realtime();
  char line[2048], file[32];
  snprintf(line, sizeof line, "SURVIVOR rank %d op=%s status=%s t=%.6f error=%s\n", rank, name,
           status_name(st), t, req ? hvd_req_error(req) : hvd_ctx_error(ctx));
  snprintf(file, sizeof file, "rank.%d", rank);
  report(o, file, line);
  hvd_req_free(req);
  if (strcmp(o->how, "launcher") == 0)
    for (;;) sleep_s(1); /* ignores the error: the runtime must end this process */
  st = hvd_shutdown(ctx);
  /* This process leaves by itself, before hvdrun's SIGTERM. */
  snprintf(line, sizeof line, "SHUTDOWN rank %d status=%s t=%.6f\n", rank, status_name(st),
           realtime());
  (void)!write(STDOUT_FILENO, line, strlen(line));
  if (stranded_cb_req != NULL) {
    /* Let the abandoned background thread out: it finishes stranded.cb, fails nothing
     * twice, frees the request the liveness thread failed and the context. Its context
     * gone, stranded.cb is only freed once done (hvd_wait on an unfinished request
     * would use the context). */
    atomic_store(&stranded_release, 1);
    sleep_s(0.3);
    hvd_req_free(stranded_cb_req);
  }
  return 1;
}

/* stranded.cb's callback on a survivor: never returns (its background thread is lost). */
static void stuck_callback(hvd_req_t *req, hvd_status_t st, void *arg) {
  (void)req;
  (void)st;
  (void)arg;
  while (!atomic_load(&stranded_release)) sleep_s(0.01);
}

int main(int argc, char **argv) {
  opts_t o = {.phase = "", .how = "kill", .report = ".", .victim = 0, .count = 16u << 20};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (v == NULL) {
      fprintf(stderr, "death_prog: %s needs a value\n", a);
      return 2;
    }
    if (strcmp(a, "--phase") == 0) o.phase = v;
    else if (strcmp(a, "--how") == 0) o.how = v;
    else if (strcmp(a, "--report") == 0) o.report = v;
    else if (strcmp(a, "--victim") == 0) o.victim = atoi(v);
    else if (strcmp(a, "--count") == 0) o.count = (size_t)strtoull(v, NULL, 10);
    else if (strcmp(a, "--tag") != 0) {
      fprintf(stderr, "death_prog: unknown option %s\n", a);
      return 2;
    }
    i++;
  }
  if (strcmp(o.how, "kill") != 0 && strcmp(o.how, "exit0") != 0 &&
      strcmp(o.how, "launcher") != 0) {
    fprintf(stderr, "death_prog: --how must be kill, exit0 or launcher\n");
    return 2;
  }
  /* hvdrun gone means stdout is a pipe nobody reads: carry on like an application that
   * ignores SIGPIPE (Python does) so the report file gets written. */
  if (strcmp(o.how, "launcher") == 0) signal(SIGPIPE, SIG_IGN);

  hvd_ctx_t *ctx;
  if (hvd_init(&ctx) != HVD_OK) return 3;
  int rank = hvd_rank(ctx), size = hvd_size(ctx);
  int victim = rank == o.victim;

  for (int i = 0; i < 2; i++) {
    char name[32];
    float x = (float)(rank + 1);
    snprintf(name, sizeof name, "warm.%d", i);
    if (hvd_allreduce(ctx, name, &x, &x, 1, HVD_FLOAT32, HVD_SUM) != HVD_OK ||
        x != (float)(size * (size + 1) / 2)) {
      fprintf(stderr, "rank %d: warm-up allreduce failed or wrong (%g)\n", rank, (double)x);
      return 4;
    }
  }

  hvd_req_t *req = NULL;
  hvd_status_t st;
  if (strcmp(o.phase, "negotiate") == 0 || strcmp(o.phase, "idle") == 0) {
    int neg = o.phase[0] == 'n';
    const char *name = neg ? "neg.survivors" : "idle.next";
    float x = 1;
    if (victim) {
      /* With --how launcher the victim lives on; its own pending operation is
       * "neg.victim", or "idle.killer", which nobody else submits. */
      name = neg ? "neg.victim" : "idle.killer";
      if (neg && hvd_allreduce_async(ctx, name, &x, &x, 1, HVD_FLOAT32, HVD_SUM, &req) != HVD_OK)
        return 5;
      sleep_s(0.3);
      victim_acts(&o, rank); /* returns only with --how launcher */
      if (!neg) {
        st = hvd_allreduce_async(ctx, name, &x, &x, 1, HVD_FLOAT32, HVD_SUM, &req);
        if (st != HVD_OK) /* the job already failed: refused at once */
          return survivor_reports(ctx, &o, rank, name, NULL, st);
      }
    } else if (hvd_allreduce_async(ctx, name, &x, &x, 1, HVD_FLOAT32, HVD_SUM, &req) != HVD_OK) {
      return 5;
    }
    st = hvd_wait(req);
    return survivor_reports(ctx, &o, rank, name, req, st);
  }

  if (strcmp(o.phase, "stranded") == 0) {
    static hvd_req_t *cb_req;
    static float x[2] = {1, 1};
    hvd_op_args_t a = HVD_OP_ARGS_INIT;
    a.name = "stranded.cb";
    a.sendbuf = a.recvbuf = &x[0];
    a.count = 1;
    a.dtype = HVD_FLOAT32;
    a.op = HVD_SUM;
    if (victim) {
      if (hvd_allreduce_ex(ctx, &a, &cb_req) != HVD_OK || hvd_wait(cb_req) != HVD_OK) return 5;
      sleep_s(0.3);
      victim_acts(&o, rank); /* returns only with --how launcher */
      for (;;) sleep_s(1);
    }
    const char *name = "stranded.next";
    if (hvd_allreduce_async(ctx, name, &x[1], &x[1], 1, HVD_FLOAT32, HVD_SUM, &req) != HVD_OK)
      return 5;
    a.callback = stuck_callback;
    if (hvd_allreduce_ex(ctx, &a, &stranded_cb_req) != HVD_OK) return 5;
    st = hvd_wait(req);
    return survivor_reports(ctx, &o, rank, name, req, st);
  }

  if (strcmp(o.phase, "ring") != 0) {
    fprintf(stderr, "death_prog: --phase must be negotiate, ring, idle or stranded\n");
    return 2;
  }
  /* Kept reachable from a global: the victim exit(0)s and the survivors return from
   * the middle of the loop, and LeakSanitizer must not count that as a leak. */
  static float *buf;
  buf = malloc(o.count * sizeof *buf);
  if (buf == NULL) return 6;
  double step1 = 0;
  for (int i = 0; i < 200; i++) {
    char name[32];
    snprintf(name, sizeof name, "big.%d", i);
    for (size_t j = 0; j < o.count; j++) buf[j] = 1.0f;
    double t0 = monotonic();
    st = hvd_allreduce_async(ctx, name, buf, buf, o.count, HVD_FLOAT32, HVD_SUM, &req);
    /* A slow survivor may submit big.2 only after the death reached it: refused at once. */
    if (st == HVD_ERR_ABORTED && !victim) return survivor_reports(ctx, &o, rank, name, NULL, st);
    if (st != HVD_OK) return 5;
    if (victim && i == 2) {
      /* Steps vary several-fold on a loaded machine: a quarter of big.1's time, but
       * never more than 5 ms (a 64 MiB allreduce takes >= 20 ms here), so the death
       * lands inside big.2 and not after it. */
      sleep_s(0.25 * step1 < 0.005 ? 0.25 * step1 : 0.005);
      victim_acts(&o, rank);
    }
    st = hvd_wait(req);
    if (i == 1) step1 = monotonic() - t0; /* big.0 pays first-touch page faults */
    if (st != HVD_OK) return survivor_reports(ctx, &o, rank, name, req, st);
    if (buf[0] != (float)size || buf[o.count - 1] != (float)size) {
      fprintf(stderr, "rank %d: %s: wrong result %g\n", rank, name, (double)buf[0]);
      return 4;
    }
    hvd_req_free(req);
  }
  /* Nobody died (or the failure never reached this rank): the test fails on this. */
  return survivor_reports(ctx, &o, rank, "none", NULL, HVD_OK);
}
