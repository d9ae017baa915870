/*
 * Pairwise-exchange alltoallv: in step s (1 <= s < n) member r sends its part for
 * r+s and receives the part from r-s, one hvd_xchg_run() each, so every member
 * talks to one peer at a time in both directions (no incast). The own part is a
 * local copy. Zero counts send nothing; both sides agree because sendcounts[j] on i
 * equals recvcounts[i] on j. Tags: step s = step field s.
 */
#include <string.h>

#include "collectives/coll.h"
#include "collectives/xchg.h"

hvd_status_t hvd_alltoallv_pairwise(hvd_comm_t *c, const void *sendbuf,
                                    const size_t *sendcounts, const size_t *sdispls,
                                    void *recvbuf, const size_t *recvcounts,
                                    const size_t *rdispls, hvd_dtype_t dtype) {
  const unsigned seq = c->seq++;
  const int n = c->size, r = c->rank;
  const size_t es = hvd_dtype_size(dtype);
  const char *sb = sendbuf;
  char *rb = recvbuf;

  if (sendcounts[r] > 0) memcpy(rb + rdispls[r] * es, sb + sdispls[r] * es, sendcounts[r] * es);
  for (int s = 1; s < n; s++) {
    int to = (r + s) % n, from = (r - s + n) % n;
    hvd_xchg_t x = {.send_to = to, .send_buf = sb + sdispls[to] * es,
                    .send_count = sendcounts[to], .recv_from = from,
                    .recv_buf = rb + rdispls[from] * es, .recv_count = recvcounts[from]};
    HVD_CHECK(hvd_xchg_run(c, hvd_coll_tag(c, seq, (unsigned)s), &x, dtype, HVD_SUM));
  }
  return HVD_OK;
}
