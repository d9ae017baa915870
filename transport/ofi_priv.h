/*
 * Private state of the libfabric transport (transport/ofi*.c); nothing outside
 * transport/ includes this.
 *
 * A transport owns up to two independent libfabric stacks ("slots"), each a
 * fabric -> domain -> CQ + AV -> RDM endpoint:
 *   HVD_OFI_LOCAL  shm, for peers on this host;
 *   HVD_OFI_NET    tcp;ofi_rxm (or the provider HVD_OFI_PROVIDER names), for the rest.
 * connect() gives every peer one slot and its fi_addr in that slot's AV. An xfer's
 * op_context is the hvd_xfer_t itself (no FI_CONTEXT mode is requested).
 */
#ifndef HVD_TRANSPORT_OFI_PRIV_H
#define HVD_TRANSPORT_OFI_PRIV_H

#include <rdma/fabric.h>

#include <stddef.h>
#include <stdint.h>

#include "transport/transport.h"

/* Largest endpoint name we carry (shm: SMR_NAME_MAX 256; sockaddr_in6: 28 bytes). */
#define HVD_OFI_NAME_MAX 256
#define HVD_OFI_PROV_NAME_MAX 64

enum { HVD_OFI_LOCAL = 0, HVD_OFI_NET = 1, HVD_OFI_NSLOTS = 2 };

typedef struct hvd_ofi_prov {
  char name[HVD_OFI_PROV_NAME_MAX]; /* as libfabric spells it: "shm", "tcp;ofi_rxm" */
  struct fi_info *info;             /* the chosen entry (owned) */
  struct fid_fabric *fabric;
  struct fid_domain *domain;
  struct fid_cq *cq;
  struct fid_av *av;
  struct fid_ep *ep; /* non-NULL once the slot is open and enabled */
  size_t inject_size;
  size_t max_msg_size; /* min(provider limit, params->max_msg_size) */
  uint64_t tag_mask;   /* tag bits the provider can match */
  int is_loopback;     /* bound to 127.0.0.1 / ::1: cannot reach other hosts */
  char addr[HVD_OFI_NAME_MAX]; /* fi_getname() of ep */
  size_t addrlen;
  int npeers; /* peers connect() gave this slot: a slot with none is never polled */
  /* xfers with segments not yet posted (the provider said -FI_EAGAIN), FIFO so that
   * equal-tag messages keep their order. */
  hvd_xfer_t *defer_head, *defer_tail;
} hvd_ofi_prov_t;

typedef struct hvd_ofi_peer {
  hvd_ofi_prov_t *prov; /* NULL for our own rank and before connect() */
  fi_addr_t addr;
  size_t seg_size; /* min of both sides' max_msg_size for this provider */
} hvd_ofi_peer_t;

typedef struct hvd_ofi {
  hvd_transport_t base;
  int forced; /* HVD_OFI_PROVIDER named one provider for every peer */
  hvd_ofi_prov_t slot[HVD_OFI_NSLOTS];
  char net_error[HVD_ERR_MSG_MAX]; /* why the network slot is closed, if it is */
  hvd_ofi_peer_t *peers;           /* size entries, from connect() */
  uint64_t timeout_ns;             /* params->timeout_s; 0 = waits never time out */
} hvd_ofi_t;

static inline hvd_ofi_t *hvd_ofi_of(hvd_transport_t *tp) {
  return (hvd_ofi_t *)(void *)tp; /* base is the first member */
}

/* ofi_msg.c */
hvd_status_t hvd_ofi_isend(hvd_transport_t *tp, int peer, const void *buf, size_t len,
                           uint64_t tag, hvd_xfer_t *x);
hvd_status_t hvd_ofi_irecv(hvd_transport_t *tp, int peer, void *buf, size_t len,
                           uint64_t tag, hvd_xfer_t *x);
/* Post what the slot's deferred queue holds, in order, until the provider pushes
 * back again; *posted grows when anything was posted. Failures go to the xfers. */
void hvd_ofi_post_deferred(hvd_ofi_t *o, hvd_ofi_prov_t *p, int *posted);

/* ofi_progress.c */
hvd_status_t hvd_ofi_progress(hvd_transport_t *tp);
/* One pass over every open slot; *events counts completions and postings. */
hvd_status_t hvd_ofi_progress_pass(hvd_ofi_t *o, int *events);
hvd_status_t hvd_ofi_waitall(hvd_transport_t *tp, hvd_xfer_t *const *xs, int n);

#endif
