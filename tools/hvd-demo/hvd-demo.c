/*
 * hvd-demo: a short job that shows hvd working, in words a person reads.
 * Every rank allreduces a vector whose expected sum it knows, checks every element,
 * and says what it did. Run it with: hvdrun -np 2 hvd-demo
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hvd.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  size_t count = 1u << 20;
  int rounds = 10;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--count") && i + 1 < argc) count = strtoull(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: hvd-demo [--count N] [--rounds K]\n");
      return 2;
    }
  }
  hvd_ctx_t *ctx;
  hvd_status_t rc = hvd_init(&ctx);
  if (rc != HVD_OK) {
    fprintf(stderr, "hvd-demo: hvd_init failed: %s\n", hvd_status_string(rc));
    return 1;
  }
  int rank = hvd_rank(ctx), size = hvd_size(ctx);
  printf("rank %d of %d is up (local rank %d of %d)\n", rank, size, hvd_local_rank(ctx),
         hvd_local_size(ctx));

  float *x = malloc(count * sizeof *x);
  /* Rank r contributes r+1 at every position, so each sum must be size*(size+1)/2. */
  const float want = (float)size * (float)(size + 1) / 2.0f;
  size_t wrong = 0;
  double t0 = 0, best = 1e30;
  for (int k = 0; k < rounds; k++) {
    for (size_t i = 0; i < count; i++) x[i] = (float)(rank + 1);
    t0 = now_s();
    rc = hvd_allreduce(ctx, "demo", x, x, count, HVD_FLOAT32, HVD_SUM);
    double dt = now_s() - t0;
    if (rc != HVD_OK) {
      fprintf(stderr, "rank %d: allreduce failed: %s (%s)\n", rank, hvd_status_string(rc),
              hvd_ctx_error(ctx));
      hvd_shutdown(ctx);
      return 1;
    }
    if (dt < best) best = dt;
    for (size_t i = 0; i < count; i++) wrong += x[i] != want;
  }
  double mb = (double)(count * sizeof(float)) / 1e6;
  if (wrong == 0)
    printf("rank %d: summed %zu float32 values (%.1f MB) across %d ranks %d times; best "
           "time %.2f ms; every element equals %.0f as expected\n",
           rank, count, mb, size, rounds, best * 1e3, want);
  else
    printf("rank %d: %zu elements were wrong!\n", rank, wrong);
  free(x);
  rc = hvd_shutdown(ctx);
  if (rank == 0 && wrong == 0 && rc == HVD_OK)
    printf("demo finished: all %d ranks agreed on the sums\n", size);
  return wrong != 0 || rc != HVD_OK;
}
