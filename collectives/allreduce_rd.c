/*
 * Recursive-doubling allreduce with the non-power-of-two fold (arithmetic in rd.h).
 *
 *   fold in:  even r < 2*rem sends its vector to r+1, which reduces it
 *   rounds:   for mask = 1, 2, ..., p'/2: exchange the whole vector with new rank
 *             newrank ^ mask and reduce
 *   fold out: odd r < 2*rem sends the result back to r-1
 *
 * Each exchange is one hvd_xchg_run() that sends recvbuf and reduces the partner's
 * vector into recvbuf in place, chunk by chunk. The operands are always ordered
 * lower rank first, so the two partners of a round compute the same bits even if an
 * op were not bitwise commutative, and every rank ends with identical results.
 * Out of place costs no copy: the first exchange of a rank sends from sendbuf and
 * reduces sendbuf with the incoming vector into recvbuf.
 *
 * Tags: fold in = step 0, round k = step 1 + k, fold out = step 63.
 */
#include <string.h>

#include "collectives/coll.h"
#include "collectives/rd.h"
#include "collectives/xchg.h"

#define RD_STEP_FOLD_IN 0u
#define RD_STEP_ROUND0 1u
#define RD_STEP_FOLD_OUT 63u

hvd_status_t hvd_allreduce_rd(hvd_comm_t *c, const void *sendbuf, void *recvbuf,
                              size_t count, hvd_dtype_t dtype, hvd_op_t op) {
  const unsigned seq = c->seq++;
  const int n = c->size, r = c->rank;
  const size_t es = hvd_dtype_size(dtype);
  const char *cur = sendbuf; /* where this rank's partial result is */
  char *rb = recvbuf;

  if (count == 0) return HVD_OK;
  if (n == 1) {
    if (cur != rb) memcpy(rb, cur, count * es);
    return HVD_OK;
  }
  const int pof2 = hvd_rd_pof2(n);
  const int partner = hvd_rd_fold_partner(r, n);

  if (partner >= 0 && r % 2 == 0) {
    /* Folded out: hand the vector to r+1, get the result back at the end. */
    hvd_xchg_t give = {.send_to = partner, .send_buf = cur, .send_count = count,
                       .recv_from = -1};
    HVD_CHECK(hvd_xchg_run(c, hvd_coll_tag(c, seq, RD_STEP_FOLD_IN), &give, dtype, op));
    hvd_xchg_t take = {.send_to = -1, .recv_from = partner, .recv_buf = rb,
                       .recv_count = count};
    return hvd_xchg_run(c, hvd_coll_tag(c, seq, RD_STEP_FOLD_OUT), &take, dtype, op);
  }
  if (partner >= 0) {
    hvd_xchg_t fold = {.send_to = -1, .recv_from = partner, .recv_buf = rb,
                       .recv_count = count, .reduce_with = cur, .incoming_first = 1};
    HVD_CHECK(hvd_xchg_run(c, hvd_coll_tag(c, seq, RD_STEP_FOLD_IN), &fold, dtype, op));
    cur = rb;
  }

  unsigned k = 0;
  for (int mask = 1; mask < pof2; mask *= 2, k++) {
    int peer = hvd_rd_peer(r, n, mask);
    hvd_xchg_t x = {.send_to = peer, .send_buf = cur, .send_count = count,
                    .recv_from = peer, .recv_buf = rb, .recv_count = count,
                    .reduce_with = cur, .incoming_first = peer < r};
    HVD_CHECK(hvd_xchg_run(c, hvd_coll_tag(c, seq, RD_STEP_ROUND0 + k), &x, dtype, op));
    cur = rb;
  }

  if (partner >= 0) {
    hvd_xchg_t back = {.send_to = partner, .send_buf = rb, .send_count = count,
                       .recv_from = -1};
    HVD_CHECK(hvd_xchg_run(c, hvd_coll_tag(c, seq, RD_STEP_FOLD_OUT), &back, dtype, op));
  }
  return HVD_OK;
}
