/* Buffers a communicator owns on behalf of the collectives (see comm.h, xchg.h). */
#include <stdlib.h>

#include "collectives/comm.h"
#include "collectives/xchg.h"

static void *grow(void **buf, size_t *size, size_t bytes) {
  if (*buf != NULL && *size >= bytes) return *buf;
  size_t want = (bytes + 63) & ~(size_t)63; /* aligned_alloc: a multiple of the alignment */
  if (want < bytes) return NULL;
  void *p = aligned_alloc(64, want ? want : 64);
  if (p == NULL) return NULL;
  free(*buf);
  *buf = p;
  *size = want;
  return p;
}

void *hvd_comm_work(hvd_comm_t *c, size_t bytes) { return grow(&c->work, &c->work_size, bytes); }

void *hvd_comm_scratch(hvd_comm_t *c, size_t bytes) {
  return grow(&c->scratch, &c->scratch_size, bytes);
}

void hvd_comm_release(hvd_comm_t *c) {
  if (c == NULL) return;
  free(c->scratch);
  free(c->work);
  c->scratch = c->work = NULL;
  c->scratch_size = c->work_size = 0;
}
