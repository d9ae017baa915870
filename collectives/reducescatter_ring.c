/*
 * Ring reduce-scatter with per-member block sizes: member r ends with block r of
 * the reduction of everyone's sendbuf.
 *
 * The allreduce ring's first half, shifted by one so that member r finishes block r
 * (ring.h: hvd_ring_scatter_*): in step s member r sends block r-s-1 and receives
 * block r-s-2, reducing it with its own copy. sendbuf is read-only, so a partial
 * block lives in one of two temporaries in c->work (the one received in step s is
 * sent in step s+1 while step s+1 receives into the other); step 0 sends straight
 * from sendbuf and the last step reduces into recvbuf. Tags: step s = step field s.
 */
#include <string.h>

#include "collectives/coll.h"
#include "collectives/ring.h"
#include "collectives/xchg.h"

hvd_status_t hvd_reducescatter_ring(hvd_comm_t *c, const void *sendbuf, void *recvbuf,
                                    const size_t *counts, hvd_dtype_t dtype, hvd_op_t op) {
  const unsigned seq = c->seq++;
  const int n = c->size, r = c->rank;
  const size_t es = hvd_dtype_size(dtype);
  const char *sb = sendbuf;
  char *tmp[2] = {NULL, NULL};

  if (n == 1) {
    if (counts[0] > 0 && sb != (char *)recvbuf) memcpy(recvbuf, sb, counts[0] * es);
    return HVD_OK;
  }
  if (n > 2) {
    size_t maxc = 0;
    for (int i = 0; i < n; i++)
      if (counts[i] > maxc) maxc = counts[i];
    if (maxc > 0) {
      char *w = hvd_comm_work(c, 2 * maxc * es);
      if (w == NULL) return HVD_ERR_NO_MEMORY;
      tmp[0] = w;
      tmp[1] = w + maxc * es;
    }
  }
  const int next = hvd_ring_next(r, n), prev = hvd_ring_prev(r, n);
  const size_t total = hvd_counts_offset(counts, n);
  size_t soff = hvd_counts_offset(counts, hvd_ring_scatter_send_block(r, n, 0));
  for (int s = 0; s < n - 1; s++) {
    int sblk = hvd_ring_scatter_send_block(r, n, s), rblk = hvd_ring_scatter_recv_block(r, n, s);
    size_t roff = hvd_counts_prev_offset(counts, n, sblk, soff, total);
    hvd_xchg_t x = {
        .send_to = next,
        .send_buf = s == 0 ? sb + soff * es : tmp[(s - 1) % 2],
        .send_count = counts[sblk],
        .recv_from = prev,
        .recv_buf = s == n - 2 ? recvbuf : tmp[s % 2],
        .recv_count = counts[rblk],
        .reduce_with = sb + roff * es,
    };
    HVD_CHECK(hvd_xchg_run(c, hvd_coll_tag(c, seq, (unsigned)s), &x, dtype, op));
    soff = roff;
  }
  return HVD_OK;
}
