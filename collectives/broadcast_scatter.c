/*
 * Broadcast for large vectors: binomial scatter from the root, then a ring allgather
 * (van de Geijn; MPICH's scatter_ring_allgather). Arithmetic in scatter.h.
 *
 * The binomial broadcast (tree.c) makes the root send the whole vector ceil(log2 n)
 * times, one child after the other. Here every member sends and receives about
 * 2(n-1)/n of the vector in all, and in the ring phase every link carries data at
 * once. It costs ceil(log2 n) + n - 1 latency steps, so it is for large vectors.
 * Receives of blocks a member already got in the scatter are skipped (scatter.h), so
 * the root receives nothing and interior members of the scatter tree receive less.
 *
 * Scatter: receive the subtree's blocks from the parent, then send each child its
 * subtree's blocks, largest subtree first (one hvd_xchg_run() per edge, chunked).
 * Allgather: n - 1 steps, each one hvd_xchg_run() sending a block to the successor
 * and receiving one from the predecessor, straight into place. Empty blocks (count <
 * n) are skipped by both sides alike.
 *
 * Tags: scatter round k (child distance 2^k) = step k; ring step s = step 32 + s.
 */
#include "collectives/coll.h"
#include "collectives/scatter.h"
#include "collectives/xchg.h"

#define SCATTER_STEP_RING 32u

static unsigned log2u(int m) {
  unsigned k = 0;
  while ((1 << k) < m) k++;
  return k;
}

hvd_status_t hvd_broadcast_scatter_ring(hvd_comm_t *c, void *buf, size_t count,
                                        hvd_dtype_t dtype, int root) {
  const unsigned seq = c->seq++;
  const int n = c->size, r = c->rank;
  if (count == 0 || n == 1) return HVD_OK;
  const int v = hvd_binom_rel(r, root, n);
  const size_t es = hvd_dtype_size(dtype);
  char *b = buf;
#define BLK(j) (b + hvd_block_offset(count, n, (j)) * es)
#define SPAN(j, k) (hvd_block_offset(count, n, (j) + (k)) - hvd_block_offset(count, n, (j)))

  const int parent = hvd_binom_parent(v);
  if (parent >= 0) {
    const int ext = hvd_scatter_extent(v, n);
    hvd_xchg_t x = {.send_to = -1, .recv_from = hvd_binom_abs(parent, root, n),
                    .recv_buf = BLK(v), .recv_count = SPAN(v, ext)};
    HVD_CHECK(hvd_xchg_run(c, hvd_coll_tag(c, seq, log2u(v - parent)), &x, dtype, HVD_SUM));
  }
  for (int m = hvd_binom_child_limit(v, n) / 2; m >= 1; m /= 2) {
    const int child = v + m;
    if (child >= n) continue;
    const int ext = hvd_scatter_extent(child, n);
    hvd_xchg_t x = {.send_to = hvd_binom_abs(child, root, n), .send_buf = BLK(child),
                    .send_count = SPAN(child, ext), .recv_from = -1};
    HVD_CHECK(hvd_xchg_run(c, hvd_coll_tag(c, seq, log2u(m)), &x, dtype, HVD_SUM));
  }

  const int next = hvd_ring_next(r, n), prev = hvd_ring_prev(r, n);
  for (int s = 0; s < n - 1; s++) {
    const int sblk = hvd_scatter_ring_send_block(v, n, s);
    const int rblk = hvd_scatter_ring_recv_block(v, n, s);
    hvd_xchg_t x = {.send_to = sblk >= 0 ? next : -1,
                    .send_buf = sblk >= 0 ? BLK(sblk) : NULL,
                    .send_count = sblk >= 0 ? hvd_block_count(count, n, sblk) : 0,
                    .recv_from = rblk >= 0 ? prev : -1,
                    .recv_buf = rblk >= 0 ? BLK(rblk) : NULL,
                    .recv_count = rblk >= 0 ? hvd_block_count(count, n, rblk) : 0};
    HVD_CHECK(hvd_xchg_run(c, hvd_coll_tag(c, seq, SCATTER_STEP_RING + (unsigned)s), &x,
                           dtype, HVD_SUM));
  }
#undef BLK
#undef SPAN
  return HVD_OK;
}
