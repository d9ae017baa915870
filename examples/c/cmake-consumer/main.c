/*
 * A program built against an installed hvd with CMake's find_package(hvd): every
 * rank allreduces a vector of rank + 1 and checks each element of the sum.
 *   cmake -S . -B build -DCMAKE_PREFIX_PATH=<hvd prefix> && cmake --build build
 *   hvdrun -np 2 build/consumer
 */
#include <hvd.h>
#include <stdio.h>

int main(void) {
  hvd_ctx_t *ctx;
  if (hvd_init(&ctx) != HVD_OK) return 1;
  int rank = hvd_rank(ctx), size = hvd_size(ctx);
  float v[1000];
  for (int i = 0; i < 1000; i++) v[i] = (float)(rank + 1);
  hvd_status_t st = hvd_allreduce(ctx, "v", v, v, 1000, HVD_FLOAT32, HVD_SUM);
  float want = (float)(size * (size + 1) / 2);
  int wrong = 0;
  for (int i = 0; i < 1000; i++) wrong += v[i] != want;
  if (st != HVD_OK || wrong) {
    fprintf(stderr, "rank %d: allreduce %s, %d wrong elements\n", rank, hvd_status_string(st),
            wrong);
    hvd_shutdown(ctx);
    return 1;
  }
  printf("cmake consumer: rank %d of %d: allreduce OK (sum %g)\n", rank, size, (double)want);
  return hvd_shutdown(ctx) == HVD_OK ? 0 : 1;
}
