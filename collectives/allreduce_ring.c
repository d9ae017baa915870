/*
 * Ring allreduce: a reduce-scatter ring then an allgather ring (bandwidth-optimal:
 * each rank sends and receives 2(n-1)/n of the vector).
 *
 * The vector is cut into n blocks (collectives/ring.h). In reduce-scatter step s
 * rank r sends block r-s to r+1 and receives block r-s-1 from r-1, reducing it with
 * its own contribution; the block it sends in step s is the one it finished reducing
 * in step s-1, so after n-1 steps it holds block r+1 fully reduced. The allgather
 * ring then passes the finished blocks around (step s: send r+1-s, receive r-s)
 * straight into recvbuf. Each step is one hvd_xchg_run(): chunked, several chunks in
 * flight, the reduction of a chunk overlapping the arrival of the next, reducing
 * from the communicator's scratch slots into recvbuf.
 *
 * Out of place costs no copy: step 0 sends block r straight from sendbuf, each
 * received block is reduced as recvbuf = sendbuf op incoming (the first write of
 * that block of recvbuf), and block r of recvbuf is filled by the allgather.
 *
 * Every result element is computed by exactly one rank and copied to the others, so
 * all ranks hold the same bits. Blocks are empty when count < n: both sides of such
 * a step compute the same empty count and send nothing. Tags: step s of the
 * reduce-scatter uses step field s, allgather step s uses n-1+s (see xchg.h for why
 * repeats and wrap-around are harmless).
 */
#include <string.h>

#include "collectives/coll.h"
#include "collectives/ring.h"
#include "collectives/xchg.h"

hvd_status_t hvd_allreduce_ring(hvd_comm_t *c, const void *sendbuf, void *recvbuf,
                                size_t count, hvd_dtype_t dtype, hvd_op_t op) {
  const unsigned seq = c->seq++;
  const int n = c->size, r = c->rank;
  const size_t es = hvd_dtype_size(dtype);
  const char *sb = sendbuf;
  char *rb = recvbuf;

  if (count == 0) return HVD_OK;
  if (n == 1) {
    if (sb != rb) memcpy(rb, sb, count * es);
    return HVD_OK;
  }
  const int next = hvd_ring_next(r, n), prev = hvd_ring_prev(r, n);

  for (int s = 0; s < n - 1; s++) {
    int sblk = hvd_ring_rs_send_block(r, n, s), rblk = hvd_ring_rs_recv_block(r, n, s);
    size_t soff = hvd_block_offset(count, n, sblk) * es;
    size_t roff = hvd_block_offset(count, n, rblk) * es;
    hvd_xchg_t x = {
        .send_to = next,
        .send_buf = (s == 0 ? sb : rb) + soff,
        .send_count = hvd_block_count(count, n, sblk),
        .recv_from = prev,
        .recv_buf = rb + roff,
        .recv_count = hvd_block_count(count, n, rblk),
        .reduce_with = sb + roff,
    };
    HVD_CHECK(hvd_xchg_run(c, hvd_coll_tag(c, seq, (unsigned)s), &x, dtype, op));
  }

  for (int s = 0; s < n - 1; s++) {
    int sblk = hvd_ring_ag_send_block(r, n, s), rblk = hvd_ring_ag_recv_block(r, n, s);
    hvd_xchg_t x = {
        .send_to = next,
        .send_buf = rb + hvd_block_offset(count, n, sblk) * es,
        .send_count = hvd_block_count(count, n, sblk),
        .recv_from = prev,
        .recv_buf = rb + hvd_block_offset(count, n, rblk) * es,
        .recv_count = hvd_block_count(count, n, rblk),
    };
    HVD_CHECK(hvd_xchg_run(c, hvd_coll_tag(c, seq, (unsigned)(n - 1 + s)), &x, dtype, op));
  }
  return HVD_OK;
}
