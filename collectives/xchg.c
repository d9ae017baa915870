/*
 * hvd_xchg_run(): one pipelined send/receive(/reduce) step; the contract is in
 * xchg.h.
 *
 * Schedule, with S = HVD_COLL_SLOTS slots per direction and chunk k using slot k % S:
 *
 *   post receives 0..S-1, then sends 0..S-1
 *   for k = 0, 1, ...:
 *     wait for receive k and send k
 *     (reducing) recv_buf[chunk k] = reduce_with[chunk k] op scratch[slot]
 *     post receive k+S into the slot just freed, post send k+S
 *
 * so while chunk k is being reduced, chunks k+1..k+S-1 are still arriving. Waiting
 * for send k before touching chunk k is what makes send_buf == recv_buf safe when
 * reducing (recursive doubling exchanges and reduces one buffer in place).
 */
#include <string.h>

#include "collectives/reduce.h"
#include "collectives/xchg.h"

static size_t chunk_len(size_t count, size_t per, size_t k) {
  size_t off = k * per;
  return count - off < per ? count - off : per;
}

hvd_status_t hvd_xchg_run(hvd_comm_t *c, uint64_t tag, const hvd_xchg_t *x,
                          hvd_dtype_t dtype, hvd_op_t op) {
  hvd_transport_t *tp = c->tp;
  const hvd_transport_ops_t *ops = tp->ops;
  const size_t es = hvd_dtype_size(dtype);
  const size_t per = HVD_COLL_CHUNK_BYTES / es; /* elements per chunk */
  const size_t nsend = x->send_to >= 0 ? (x->send_count + per - 1) / per : 0;
  const size_t nrecv = x->recv_from >= 0 ? (x->recv_count + per - 1) / per : 0;
  const int reducing = x->reduce_with != NULL;
  const int to = nsend ? hvd_comm_peer(c, x->send_to) : -1;
  const int from = nrecv ? hvd_comm_peer(c, x->recv_from) : -1;
  hvd_xfer_t *rx = c->xfer, *sx = c->xfer + HVD_COLL_SLOTS;
  char *scratch = NULL;
  hvd_status_t rc;

  if (nsend == 0 && nrecv == 0) return HVD_OK;
  if (reducing && nrecv > 0) {
    scratch = hvd_comm_scratch(c, (size_t)HVD_COLL_SLOTS * HVD_COLL_CHUNK_BYTES);
    if (scratch == NULL) return HVD_ERR_NO_MEMORY;
  }

#define POST_RECV(k)                                                                    \
  do {                                                                                  \
    size_t k_ = (k), slot_ = k_ % HVD_COLL_SLOTS;                                       \
    char *dst_ = reducing ? scratch + slot_ * HVD_COLL_CHUNK_BYTES                      \
                          : (char *)x->recv_buf + k_ * per * es;                        \
    rc = ops->irecv(tp, from, dst_, chunk_len(x->recv_count, per, k_) * es, tag,        \
                    &rx[slot_]);                                                        \
    if (rc < 0) return rc;                                                              \
  } while (0)
#define POST_SEND(k)                                                                    \
  do {                                                                                  \
    size_t k_ = (k);                                                                    \
    rc = ops->isend(tp, to, (const char *)x->send_buf + k_ * per * es,                  \
                    chunk_len(x->send_count, per, k_) * es, tag,                        \
                    &sx[k_ % HVD_COLL_SLOTS]);                                          \
    if (rc < 0) return rc;                                                              \
  } while (0)

  for (size_t k = 0; k < nrecv && k < HVD_COLL_SLOTS; k++) POST_RECV(k);
  for (size_t k = 0; k < nsend && k < HVD_COLL_SLOTS; k++) POST_SEND(k);

  const size_t steps = nsend > nrecv ? nsend : nrecv;
  for (size_t k = 0; k < steps; k++) {
    hvd_xfer_t *wait[2];
    int nw = 0;
    if (k < nrecv) wait[nw++] = &rx[k % HVD_COLL_SLOTS];
    if (k < nsend) wait[nw++] = &sx[k % HVD_COLL_SLOTS];
    rc = ops->waitall(tp, wait, nw);
    if (rc < 0) return rc;
    if (k < nrecv) {
      if (reducing) {
        size_t off = k * per * es, len = chunk_len(x->recv_count, per, k);
        const char *in = scratch + (k % HVD_COLL_SLOTS) * HVD_COLL_CHUNK_BYTES;
        const char *mine = (const char *)x->reduce_with + off;
        char *dst = (char *)x->recv_buf + off;
        if (x->incoming_first)
          hvd_reduce3(dst, in, mine, len, dtype, op);
        else
          hvd_reduce3(dst, mine, in, len, dtype, op);
      }
      if (k + HVD_COLL_SLOTS < nrecv) POST_RECV(k + HVD_COLL_SLOTS);
    }
    if (k + HVD_COLL_SLOTS < nsend) POST_SEND(k + HVD_COLL_SLOTS);
  }
#undef POST_RECV
#undef POST_SEND
  return HVD_OK;
}
