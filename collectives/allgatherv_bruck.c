/*
 * Bruck allgatherv (arithmetic in bruck.h): ceil(log2 n) steps for any n, for small
 * messages where the ring's n-1 latency steps dominate.
 *
 * Why Bruck and not recursive doubling: recursive doubling needs a power of two, and
 * its fold for the other n adds two steps and sends the folded ranks' data twice.
 * Bruck has ceil(log2 n) steps and moves (n-1)/n of the total for every n; the price
 * is keeping the blocks rotated (own block first), which costs one copy in and one
 * rotation out. For the small totals it is chosen for, that copying is far cheaper
 * than the messages it saves.
 *
 * The rotated blocks live in c->work (total elements), except on member 0, whose
 * rotation is the identity: it works in recvbuf directly. Each step is one
 * hvd_xchg_run() that sends positions [0, cnt) to r - dist and receives positions
 * [dist, dist + cnt) from r + dist; the two ranges never overlap (cnt <= dist).
 * Empty ranges are skipped by both sides alike (they read the same counts[]).
 * Tags: step k = step field k.
 */
#include <string.h>

#include "collectives/bruck.h"
#include "collectives/coll.h"
#include "collectives/ring.h"
#include "collectives/xchg.h"

hvd_status_t hvd_allgatherv_bruck(hvd_comm_t *c, const void *sendbuf, void *recvbuf,
                                  const size_t *counts, hvd_dtype_t dtype) {
  const unsigned seq = c->seq++;
  const int n = c->size, r = c->rank;
  const size_t es = hvd_dtype_size(dtype);
  char *rb = recvbuf;
  const size_t own = hvd_counts_offset(counts, r);
  const size_t total = own + hvd_counts_offset(counts + r, n - r);

  if (n == 1 || total == 0) {
    if (counts[r] > 0 && (const char *)sendbuf != rb + own * es)
      memcpy(rb + own * es, sendbuf, counts[r] * es);
    return HVD_OK;
  }
  char *tmp = r == 0 ? rb : hvd_comm_work(c, total * es);
  if (tmp == NULL) return HVD_ERR_NO_MEMORY;
  /* sendbuf may be inside recvbuf (in place); recvbuf is not written before the end. */
  if (counts[r] > 0 && (const char *)sendbuf != tmp) memcpy(tmp, sendbuf, counts[r] * es);

  const int steps = hvd_bruck_steps(n);
  for (int k = 0; k < steps; k++) {
    const int dist = hvd_bruck_dist(k), cnt = hvd_bruck_nblocks(n, k);
    const size_t send_n = hvd_bruck_offset(counts, n, r, cnt);
    const size_t roff = hvd_bruck_offset(counts, n, r, dist);
    const size_t recv_n = hvd_bruck_offset(counts, n, r, dist + cnt) - roff;
    hvd_xchg_t x = {.send_to = hvd_bruck_send_to(r, n, k), .send_buf = tmp,
                    .send_count = send_n, .recv_from = hvd_bruck_recv_from(r, n, k),
                    .recv_buf = tmp + roff * es, .recv_count = recv_n};
    HVD_CHECK(hvd_xchg_run(c, hvd_coll_tag(c, seq, (unsigned)k), &x, dtype, HVD_SUM));
  }

  if (tmp != rb) {
    /* Positions [0, n-r) are blocks r..n-1, positions [n-r, n) are blocks 0..r-1. */
    memcpy(rb + own * es, tmp, (total - own) * es);
    memcpy(rb, tmp + (total - own) * es, own * es);
  }
  return HVD_OK;
}
