/*
 * Dissemination barrier (arithmetic in rd.h): in round k every member sends one
 * byte to r + 2^k and waits for one from r - 2^k. After ceil(log2 n) rounds each
 * member has heard, directly or through others, from every member, so none leaves
 * before all arrived. Messages use tag kind HVD_TAG_KIND_BARRIER, step = round; the
 * bytes live in the communicator (c->token) so a failed barrier leaves no receive
 * pointing at a dead stack frame.
 */
#include "collectives/coll.h"
#include "collectives/rd.h"
#include "collectives/xchg.h"

hvd_status_t hvd_barrier_dissemination(hvd_comm_t *c) {
  const unsigned seq = c->seq++;
  const int n = c->size, r = c->rank;
  const int rounds = hvd_dissem_rounds(n);
  for (int k = 0; k < rounds; k++) {
    c->token[0] = (unsigned char)k;
    hvd_xchg_t x = {.send_to = hvd_dissem_to(r, n, k), .send_buf = &c->token[0],
                    .send_count = 1, .recv_from = hvd_dissem_from(r, n, k),
                    .recv_buf = &c->token[1], .recv_count = 1};
    uint64_t tag = hvd_tag_make(HVD_TAG_KIND_BARRIER, c->id, seq, (unsigned)k);
    HVD_CHECK(hvd_xchg_run(c, tag, &x, HVD_UINT8, HVD_SUM));
  }
  return HVD_OK;
}
