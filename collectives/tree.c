/*
 * Binomial-tree collectives (arithmetic in tree.h): broadcast, and allreduce as a
 * binomial reduce to member 0 followed by a binomial broadcast from it.
 *
 * Reduce: a member receives each child's partial result in turn (smallest subtree
 * first) and reduces it into recvbuf as mine op child's, then sends its partial
 * result to its parent. A leaf sends straight from sendbuf; the first reduction of
 * an inner member reads sendbuf, so out of place needs no copy. The root's result
 * is then broadcast, so every member ends with the root's bits.
 * Broadcast: receive the whole vector from the parent, then send it to each child,
 * largest subtree first. Each edge is one hvd_xchg_run() (chunked).
 *
 * Tags: reduce round k (mask 2^k) = step k, broadcast round k = step 32 + k.
 */
#include <string.h>

#include "collectives/coll.h"
#include "collectives/tree.h"
#include "collectives/xchg.h"

#define TREE_STEP_BCAST 32u

static unsigned log2u(int m) {
  unsigned k = 0;
  while ((1 << k) < m) k++;
  return k;
}

static hvd_status_t bcast(hvd_comm_t *c, unsigned seq, void *buf, size_t count,
                          hvd_dtype_t dtype, int root) {
  const int n = c->size, v = hvd_binom_rel(c->rank, root, n);
  const int parent = hvd_binom_parent(v);
  if (parent >= 0) {
    hvd_xchg_t x = {.send_to = -1, .recv_from = hvd_binom_abs(parent, root, n),
                    .recv_buf = buf, .recv_count = count};
    unsigned round = log2u(v - parent);
    HVD_CHECK(hvd_xchg_run(c, hvd_coll_tag(c, seq, TREE_STEP_BCAST + round), &x, dtype,
                           HVD_SUM));
  }
  for (int m = hvd_binom_child_limit(v, n) / 2; m >= 1; m /= 2) {
    if (v + m >= n) continue;
    hvd_xchg_t x = {.send_to = hvd_binom_abs(v + m, root, n), .send_buf = buf,
                    .send_count = count, .recv_from = -1};
    HVD_CHECK(hvd_xchg_run(c, hvd_coll_tag(c, seq, TREE_STEP_BCAST + log2u(m)), &x, dtype,
                           HVD_SUM));
  }
  return HVD_OK;
}

hvd_status_t hvd_broadcast_binomial(hvd_comm_t *c, void *buf, size_t count,
                                    hvd_dtype_t dtype, int root) {
  const unsigned seq = c->seq++;
  if (count == 0 || c->size == 1) return HVD_OK;
  return bcast(c, seq, buf, count, dtype, root);
}

hvd_status_t hvd_allreduce_tree(hvd_comm_t *c, const void *sendbuf, void *recvbuf,
                                size_t count, hvd_dtype_t dtype, hvd_op_t op) {
  const unsigned seq = c->seq++;
  const int n = c->size, v = c->rank; /* root 0: relative == absolute */
  const char *cur = sendbuf;
  char *rb = recvbuf;

  if (count == 0) return HVD_OK;
  if (n == 1) {
    if (cur != rb) memcpy(rb, cur, count * hvd_dtype_size(dtype));
    return HVD_OK;
  }
  const int lim = hvd_binom_child_limit(v, n);
  for (int m = 1; m < lim && v + m < n; m *= 2) {
    hvd_xchg_t x = {.send_to = -1, .recv_from = v + m, .recv_buf = rb, .recv_count = count,
                    .reduce_with = cur};
    HVD_CHECK(hvd_xchg_run(c, hvd_coll_tag(c, seq, log2u(m)), &x, dtype, op));
    cur = rb;
  }
  const int parent = hvd_binom_parent(v);
  if (parent >= 0) {
    hvd_xchg_t x = {.send_to = parent, .send_buf = cur, .send_count = count,
                    .recv_from = -1};
    HVD_CHECK(hvd_xchg_run(c, hvd_coll_tag(c, seq, log2u(v - parent)), &x, dtype, op));
  }
  return bcast(c, seq, rb, count, dtype, 0);
}
