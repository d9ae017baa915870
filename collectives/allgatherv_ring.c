/*
 * Ring allgatherv: member j contributes counts[j] elements; everyone ends with all
 * contributions packed in member order.
 *
 * This member's part is placed at its offset in recvbuf (no copy when already there).
 * In step s member r sends block r-s to r+1 and receives block r-s-1 from r-1
 * straight into its place (ring.h: hvd_ring_gather_*): the block sent in step s is
 * the one received in step s-1. Empty blocks are skipped by both sides alike (they
 * read the same counts[]). Tags: step s = step field s.
 */
#include <string.h>

#include "collectives/coll.h"
#include "collectives/ring.h"
#include "collectives/xchg.h"

hvd_status_t hvd_allgatherv_ring(hvd_comm_t *c, const void *sendbuf, void *recvbuf,
                                 const size_t *counts, hvd_dtype_t dtype) {
  const unsigned seq = c->seq++;
  const int n = c->size, r = c->rank;
  const size_t es = hvd_dtype_size(dtype);
  char *rb = recvbuf;
  const size_t own = hvd_counts_offset(counts, r);
  char *mine = rb + own * es;

  if (counts[r] > 0 && (const char *)sendbuf != mine) memcpy(mine, sendbuf, counts[r] * es);
  if (n == 1) return HVD_OK;
  const size_t total = own + hvd_counts_offset(counts + r, n - r);
  const int next = hvd_ring_next(r, n), prev = hvd_ring_prev(r, n);
  size_t soff = own; /* offset of the block sent in this step */
  for (int s = 0; s < n - 1; s++) {
    int sblk = hvd_ring_gather_send_block(r, n, s), rblk = hvd_ring_gather_recv_block(r, n, s);
    size_t roff = hvd_counts_prev_offset(counts, n, sblk, soff, total);
    hvd_xchg_t x = {.send_to = next, .send_buf = rb + soff * es, .send_count = counts[sblk],
                    .recv_from = prev, .recv_buf = rb + roff * es, .recv_count = counts[rblk]};
    HVD_CHECK(hvd_xchg_run(c, hvd_coll_tag(c, seq, (unsigned)s), &x, dtype, HVD_SUM));
    soff = roff; /* the block received now is sent next */
  }
  return HVD_OK;
}
