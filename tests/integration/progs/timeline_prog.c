/*
 * A rank program for the timeline tests (public API only).
 *
 *   timeline_prog windows DIR
 *     Timeline windows at run time on every rank: tensors pre.* (no timeline), then
 *     hvd_timeline_start(DIR/w1.<rank>.json), w1.*, hvd_timeline_stop; gap.*; start w2,
 *     w2.*, start w3 (a switch without a stop), w3.*, stop; post.*; a start on a path
 *     that cannot be created must fail; start w4, w4.*, and shut down with it running
 *     (shutdown closes it). Prints "TIMELINE_PROG windows: OK on rank R".
 *
 *   timeline_prog bench ITERS TENSORS COUNT
 *     The runtime loop for measuring timeline overhead: ITERS steps, each TENSORS async
 *     float32 allreduces of COUNT elements, then waits for them all. Prints
 *     "bench: ... us/step" (wall) and rank 0's CPU time per step (all its threads,
 *     the timeline writer's included) on rank 0.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "hvd.h"

static hvd_ctx_t *ctx;
static int R, N, failures;

#define FAIL(...)                                                                         \
  do {                                                                                    \
    fprintf(stderr, "rank %d: FAIL line %d: ", R, __LINE__);                              \
    fprintf(stderr, __VA_ARGS__);                                                         \
    fprintf(stderr, "\n");                                                                \
    failures++;                                                                           \
  } while (0)

static double cpu_s(void) { /* this process, all threads: the app, background and writer */
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* k synchronous allreduces named <prefix>.<i>, checked. */
static void ops(const char *prefix, int k) {
  float v[64], out[64];
  for (int i = 0; i < k; i++) {
    for (int j = 0; j < 64; j++) v[j] = (float)(R + j);
    char name[64];
    snprintf(name, sizeof name, "%s.%d", prefix, i);
    hvd_status_t rc = hvd_allreduce(ctx, name, v, out, 64, HVD_FLOAT32, HVD_SUM);
    if (rc != HVD_OK) {
      FAIL("allreduce %s: %s", name, hvd_status_string(rc));
      continue;
    }
    for (int j = 0; j < 64; j++) {
      float want = (float)(N * j + N * (N - 1) / 2);
      if (out[j] != want) {
        FAIL("%s[%d] = %g, want %g", name, j, out[j], want);
        break;
      }
    }
  }
}

static void start(const char *dir, const char *w) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s.%d.json", dir, w, R);
  hvd_status_t rc = hvd_timeline_start(ctx, path);
  if (rc != HVD_OK) FAIL("hvd_timeline_start(%s): %s", path, hvd_status_string(rc));
}

static void stop(void) {
  hvd_status_t rc = hvd_timeline_stop(ctx);
  if (rc != HVD_OK) FAIL("hvd_timeline_stop: %s", hvd_status_string(rc));
}

static void case_windows(const char *dir) {
  ops("pre", 5);
  stop(); /* none running: fine */
  start(dir, "w1");
  ops("w1", 10);
  stop();
  ops("gap", 5);
  start(dir, "w2");
  ops("w2", 10);
  start(dir, "w3");
  ops("w3", 10);
  stop();
  ops("post", 5);
  hvd_status_t rc = hvd_timeline_start(ctx, "/nonexistent-dir/timeline.json");
  if (rc != HVD_ERR_INVALID_PARAM) FAIL("start on a bad path: %s", hvd_status_string(rc));
  if (hvd_timeline_start(NULL, "x") != HVD_ERR_INVALID_PARAM) FAIL("start with NULL ctx");
  if (hvd_timeline_start(ctx, "") != HVD_ERR_INVALID_PARAM) FAIL("start with empty path");
  start(dir, "w4");
  ops("w4", 10);
}

static void case_bench(int iters, int tensors, size_t count) {
  float **bufs = calloc((size_t)tensors, sizeof *bufs);
  hvd_req_t **req = calloc((size_t)tensors, sizeof *req);
  char (*names)[32] = calloc((size_t)tensors, sizeof *names);
  for (int t = 0; t < tensors; t++) {
    bufs[t] = calloc(count, sizeof(float));
    snprintf(names[t], sizeof names[t], "bench.%d", t);
  }
  double t0 = 0, c0 = 0;
  for (int it = -5; it < iters; it++) { /* 5 warm-up steps */
    if (it == 0) {
      t0 = now_s();
      c0 = cpu_s();
    }
    for (int t = 0; t < tensors; t++)
      if (hvd_allreduce_async(ctx, names[t], bufs[t], bufs[t], count, HVD_FLOAT32, HVD_SUM,
                              &req[t]) != HVD_OK) {
        FAIL("allreduce_async %s", names[t]);
        return;
      }
    for (int t = 0; t < tensors; t++) {
      if (hvd_wait(req[t]) != HVD_OK) FAIL("wait %s: %s", names[t], hvd_req_error(req[t]));
      hvd_req_free(req[t]);
    }
  }
  double dt = now_s() - t0, dc = cpu_s() - c0;
  if (R == 0)
    printf("bench: %d steps x %d tensors x %zu floats on %d ranks: %.1f us/step, %.2f us/tensor, "
           "rank 0 cpu %.1f us/step\n",
           iters, tensors, count, N, dt / iters * 1e6, dt / iters / tensors * 1e6, dc / iters * 1e6);
  for (int t = 0; t < tensors; t++) free(bufs[t]);
  free(bufs);
  free(req);
  free(names);
}

int main(int argc, char **argv) {
  if (argc < 2 || (strcmp(argv[1], "windows") == 0 && argc != 3) ||
      (strcmp(argv[1], "bench") == 0 && argc != 5)) {
    fprintf(stderr, "usage: timeline_prog windows DIR | bench ITERS TENSORS COUNT\n");
    return 2;
  }
  hvd_status_t rc = hvd_init(&ctx);
  if (rc != HVD_OK) {
    fprintf(stderr, "hvd_init: %s\n", hvd_status_string(rc));
    return 1;
  }
  R = hvd_rank(ctx);
  N = hvd_size(ctx);
  if (strcmp(argv[1], "windows") == 0) {
    case_windows(argv[2]);
  } else if (strcmp(argv[1], "bench") == 0) {
    case_bench(atoi(argv[2]), atoi(argv[3]), (size_t)atol(argv[4]));
  } else {
    fprintf(stderr, "unknown case %s\n", argv[1]);
    return 2;
  }
  rc = hvd_shutdown(ctx);
  if (rc != HVD_OK) FAIL("shutdown: %s", hvd_status_string(rc));
  if (failures) {
    printf("TIMELINE_PROG %s: FAILED (%d) on rank %d\n", argv[1], failures, R);
    return 1;
  }
  printf("TIMELINE_PROG %s: OK on rank %d\n", argv[1], R);
  return 0;
}
