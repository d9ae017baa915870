/*
 * Posting tagged sends and receives on the libfabric transport.
 *
 * How it works. isend/irecv check the arguments, OR the source rank into the tag
 * (ours on send, the peer's on receive; see transport.h) and cut the message into
 * segments of the peer's seg_size (the smaller of both sides' max message size, so
 * sender and receiver cut at the same offsets). The segments of one message carry
 * the same tag; FI_ORDER_SAS and in-order matching of equal tags keep them paired.
 * x->pending starts at the number of segments and drops by one per completion, so
 * an xfer is done when it reaches zero. Sends no larger than the provider's inject
 * size go through fi_tinject, which completes on return (no CQ entry).
 *
 * When the provider answers -FI_EAGAIN (queue full, or tcp;ofi_rxm still setting up
 * the connection, which only CQ reads advance) the xfer keeps its unposted rest in
 * next_buf/remaining and joins its endpoint's FIFO of deferred xfers; every progress
 * pass posts from that FIFO in order. Later xfers on the same endpoint queue behind
 * it, so messages with equal tags never overtake each other. isend/irecv never block.
 */
#include <limits.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_tagged.h>

#include "common/util.h"
#include "transport/ofi_priv.h"

static hvd_status_t check_args(hvd_ofi_t *o, int peer, const void *buf, size_t len,
                               uint64_t tag, hvd_xfer_t *x, const char *what) {
  hvd_transport_t *tp = &o->base;
  if (x == NULL) {
    hvd_err_set(&tp->err, "%s: NULL xfer", what);
    return HVD_ERR_INVALID_PARAM;
  }
  if (peer < 0 || peer >= tp->size || peer == tp->rank) {
    hvd_err_set(&tp->err, "%s: peer %d is not another rank of 0..%d (this is rank %d)", what,
                peer, tp->size - 1, tp->rank);
    return HVD_ERR_INVALID_PARAM;
  }
  if (o->peers == NULL || o->peers[peer].prov == NULL) {
    hvd_err_set(&tp->err, "%s: rank %d is not connected (call connect first)", what, peer);
    return HVD_ERR_INVALID_PARAM;
  }
  if (tag & (HVD_TP_MAX_RANKS - 1)) {
    hvd_err_set(&tp->err, "%s: tag 0x%016llx has bits in the low %d source-rank bits", what,
                (unsigned long long)tag, HVD_TP_SRC_BITS);
    return HVD_ERR_INVALID_PARAM;
  }
  if ((tag & ~o->peers[peer].prov->tag_mask) != 0) {
    hvd_err_set(&tp->err, "%s: tag 0x%016llx uses bits %s cannot match (mask 0x%016llx)",
                what, (unsigned long long)tag, o->peers[peer].prov->name,
                (unsigned long long)o->peers[peer].prov->tag_mask);
    return HVD_ERR_INVALID_PARAM;
  }
  if (buf == NULL && len != 0) {
    hvd_err_set(&tp->err, "%s: NULL buffer for %zu bytes", what, len);
    return HVD_ERR_INVALID_PARAM;
  }
  return HVD_OK;
}

static size_t segment_count(size_t len, size_t seg) {
  return len == 0 ? 1 : len / seg + (len % seg != 0);
}

/* Post segments of x until all are posted (0) or the provider refuses (-FI_E*). */
static ssize_t post_segments(hvd_ofi_t *o, hvd_xfer_t *x) {
  const hvd_ofi_peer_t *pe = &o->peers[x->peer];
  hvd_ofi_prov_t *p = pe->prov;
  do {
    size_t n = HVD_MIN(x->remaining, pe->seg_size);
    ssize_t rc;
    if (x->is_recv) {
      rc = fi_trecv(p->ep, x->next_buf, n, NULL, pe->addr, x->tag, 0, x);
    } else if (n <= p->inject_size) {
      rc = fi_tinject(p->ep, x->next_buf, n, pe->addr, x->tag);
      if (rc == 0) x->pending--; /* no completion will come */
    } else {
      rc = fi_tsend(p->ep, x->next_buf, n, NULL, pe->addr, x->tag, x);
    }
    if (rc != 0) return rc;
    if (n != 0) x->next_buf += n;
    x->remaining -= n;
  } while (x->remaining > 0);
  return 0;
}

/* A posting failed for good: the unposted segments will never complete. */
static void fail_unposted(hvd_ofi_t *o, hvd_xfer_t *x, ssize_t rc) {
  const hvd_ofi_peer_t *pe = &o->peers[x->peer];
  size_t left = segment_count(x->remaining, pe->seg_size);
  x->pending -= (int)left;
  if (x->status == HVD_OK) x->status = HVD_ERR_TRANSPORT;
  hvd_err_set(&o->base.err, "%s %zu bytes %s rank %d over %s (tag 0x%016llx): %s (%zd)",
              x->is_recv ? "posting a receive of" : "posting a send of", x->len,
              x->is_recv ? "from" : "to", x->peer, pe->prov->name,
              (unsigned long long)x->tag, fi_strerror((int)-rc), rc);
}

static void defer_push(hvd_ofi_prov_t *p, hvd_xfer_t *x) {
  x->next = NULL;
  if (p->defer_tail) p->defer_tail->next = x;
  else p->defer_head = x;
  p->defer_tail = x;
}

void hvd_ofi_post_deferred(hvd_ofi_t *o, hvd_ofi_prov_t *p, int *posted) {
  while (p->defer_head != NULL) {
    hvd_xfer_t *x = p->defer_head;
    size_t before = x->remaining;
    ssize_t rc = post_segments(o, x);
    if (rc == -FI_EAGAIN) {
      if (x->remaining != before) (*posted)++;
      return;
    }
    (*posted)++;
    p->defer_head = x->next;
    if (p->defer_head == NULL) p->defer_tail = NULL;
    x->next = NULL;
    if (rc != 0) fail_unposted(o, x, rc); /* reported through x->status */
  }
}

static hvd_status_t post(hvd_ofi_t *o, int peer, void *buf, size_t len, uint64_t tag,
                         hvd_xfer_t *x, int is_recv) {
  const hvd_ofi_peer_t *pe = &o->peers[peer];
  size_t nseg = segment_count(len, pe->seg_size);
  if (nseg > (size_t)INT_MAX) {
    hvd_err_set(&o->base.err, "%s of %zu bytes needs %zu segments of %zu bytes (max %d)",
                is_recv ? "receive" : "send", len, nseg, pe->seg_size, INT_MAX);
    x->pending = 0;
    x->status = HVD_ERR_INVALID_PARAM;
    return HVD_ERR_INVALID_PARAM;
  }
  x->tp = &o->base;
  x->pending = (int)nseg;
  x->status = HVD_OK;
  x->peer = peer;
  x->is_recv = is_recv;
  x->received = 0;
  x->next_buf = buf;
  x->remaining = len;
  x->len = len;
  x->tag = tag | (uint64_t)(is_recv ? peer : o->base.rank);
  x->prov = pe->prov;
  x->next = NULL;

  if (pe->prov->defer_head == NULL) {
    ssize_t rc = post_segments(o, x);
    if (rc == 0) return HVD_OK;
    if (rc != -FI_EAGAIN) {
      fail_unposted(o, x, rc);
      return HVD_ERR_TRANSPORT;
    }
  }
  /* The provider pushed back (or others wait before us): queue the rest and let a
   * progress pass drain completions and retry right away. */
  defer_push(pe->prov, x);
  return hvd_ofi_progress(&o->base);
}

hvd_status_t hvd_ofi_isend(hvd_transport_t *tp, int peer, const void *buf, size_t len,
                           uint64_t tag, hvd_xfer_t *x) {
  hvd_ofi_t *o = hvd_ofi_of(tp);
  hvd_status_t st = check_args(o, peer, buf, len, tag, x, "isend");
  if (st != HVD_OK) {
    if (x != NULL) {
      x->pending = 0;
      x->status = st;
    }
    return st;
  }
  /* Sends never write through next_buf; the cast only shares the xfer field. */
  return post(o, peer, (void *)(uintptr_t)buf, len, tag, x, 0);
}

hvd_status_t hvd_ofi_irecv(hvd_transport_t *tp, int peer, void *buf, size_t len,
                           uint64_t tag, hvd_xfer_t *x) {
  hvd_ofi_t *o = hvd_ofi_of(tp);
  hvd_status_t st = check_args(o, peer, buf, len, tag, x, "irecv");
  if (st != HVD_OK) {
    if (x != NULL) {
      x->pending = 0;
      x->status = st;
    }
    return st;
  }
  return post(o, peer, buf, len, tag, x, 1);
}
