/*
 * A rank program that stays initialised until told to stop, so that a test can
 * look at a running job from outside (which sockets it listens on, what its
 * processes show):
 *
 *   init_wait STOPFILE
 *   -> "init_wait rank R: initialised" once hvd_init returned, then waits (at most
 *      120 s) for STOPFILE to exist, shuts down and prints "init_wait rank R: done".
 */
#include <stdio.h>
#include <unistd.h>

#include "hvd.h"

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: init_wait STOPFILE\n");
    return 2;
  }
  hvd_ctx_t *ctx;
  if (hvd_init(&ctx) != HVD_OK) return 1;
  int rank = hvd_rank(ctx);
  printf("init_wait rank %d: initialised\n", rank);
  fflush(stdout);
  for (int i = 0; i < 1200 && access(argv[1], F_OK) != 0; i++) usleep(100 * 1000);
  if (hvd_shutdown(ctx) != HVD_OK) return 1;
  printf("init_wait rank %d: done\n", rank);
  return 0;
}
