/*
 * A rank program for the network-fault tests: a loop of large float32 SUM
 * allreduces, timed, so that a test can cut a link while one is in flight.
 *
 *   netfault_prog [--count N] [--iters K] [--progress FILE]
 *                 [--slow-rank R --slow-ms MS --slow-iter I]
 *
 * --progress FILE: rank 0 appends "start I T" before and "end I T" after each
 * allreduce (T: CLOCK_MONOTONIC seconds, the same clock on every network namespace
 * of the machine), so a test knows when one is running and how long they take.
 * --slow-rank: that rank sleeps MS ms before submitting allreduce I (default 1)
 * while the others already wait for it (a slow rank, not a fault).
 * Every rank prints "rank R: running" after its first allreduce and "rank R: ALL OK
 * (K allreduces, longest X s)" at the end. When an allreduce fails it prints
 * "rank R: allreduce I failed after X s at T: STATUS: MESSAGE", submits one more
 * (which must fail at once with the same cause: "rank R: next allreduce: STATUS
 * after X ms: MESSAGE") and exits 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hvd.h"

static double mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void note(FILE *f, const char *what, int it) {
  if (f == NULL) return;
  fprintf(f, "%s %d %.6f\n", what, it, mono_s());
  fflush(f);
}

int main(int argc, char **argv) {
  size_t count = 16u << 20;
  long iters = 1000000000L;
  const char *progress = NULL;
  int slow_rank = -1, slow_ms = 0, slow_iter = 1;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--count") && i + 1 < argc) count = strtoull(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atol(argv[++i]);
    else if (!strcmp(argv[i], "--progress") && i + 1 < argc) progress = argv[++i];
    else if (!strcmp(argv[i], "--slow-rank") && i + 1 < argc) slow_rank = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--slow-ms") && i + 1 < argc) slow_ms = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--slow-iter") && i + 1 < argc) slow_iter = atoi(argv[++i]);
    else {
      fprintf(stderr, "netfault_prog: unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  hvd_ctx_t *ctx;
  hvd_status_t rc = hvd_init(&ctx);
  if (rc != HVD_OK) {
    fprintf(stderr, "hvd_init failed: %s\n", hvd_status_string(rc));
    return 1;
  }
  int n = hvd_size(ctx), me = hvd_rank(ctx);
  FILE *pf = NULL;
  if (progress != NULL && me == 0 && (pf = fopen(progress, "a")) == NULL) {
    perror(progress);
    return 1;
  }
  float *in = malloc(count * sizeof *in), *out = malloc(count * sizeof *out);
  if (in == NULL || out == NULL) {
    fprintf(stderr, "rank %d: out of memory for %zu floats\n", me, count);
    return 1;
  }
  for (size_t i = 0; i < count; i++) in[i] = (float)(me + 1);
  const float want = (float)n * (float)(n + 1) / 2;
  double longest = 0;
  for (long it = 0; it < iters; it++) {
    if (me == slow_rank && it == slow_iter) usleep((useconds_t)slow_ms * 1000);
    note(pf, "start", (int)it);
    double t0 = mono_s();
    hvd_req_t *req = NULL;
    rc = hvd_allreduce_async(ctx, "netfault.big", in, out, count, HVD_FLOAT32, HVD_SUM, &req);
    if (rc == HVD_OK) rc = hvd_wait(req);
    double dt = mono_s() - t0;
    if (rc != HVD_OK) {
      printf("rank %d: allreduce %ld failed after %.2f s at %.3f: %s: %s\n", me, it, dt,
             mono_s(), hvd_status_string(rc), req ? hvd_req_error(req) : "");
      fflush(stdout);
      hvd_req_free(req);
      /* The context is aborted now: the next operation fails at once, same cause. */
      t0 = mono_s();
      rc = hvd_allreduce(ctx, "netfault.after", in, out, 1, HVD_FLOAT32, HVD_SUM);
      printf("rank %d: next allreduce: %s after %.0f ms: %s\n", me, hvd_status_string(rc),
             (mono_s() - t0) * 1e3, hvd_ctx_error(ctx));
      fflush(stdout);
      hvd_shutdown(ctx);
      if (pf) fclose(pf);
      free(in);
      free(out);
      return 1;
    }
    hvd_req_free(req);
    note(pf, "end", (int)it);
    if (dt > longest) longest = dt;
    for (size_t i = 0; i < count; i++)
      if (out[i] != want) {
        fprintf(stderr, "rank %d: allreduce %ld: element %zu = %g, expected %g\n", me, it, i,
                (double)out[i], (double)want);
        return 1;
      }
    if (it == 0) {
      printf("rank %d: running\n", me);
      fflush(stdout);
    }
  }
  rc = hvd_shutdown(ctx);
  if (rc != HVD_OK) {
    fprintf(stderr, "rank %d: hvd_shutdown: %s\n", me, hvd_status_string(rc));
    return 1;
  }
  printf("rank %d: ALL OK (%ld allreduces, longest %.2f s)\n", me, iters, longest);
  if (pf) fclose(pf);
  free(in);
  free(out);
  return 0;
}
