/*
 * The transport ops table: the only way collectives/ move bytes between ranks.
 *
 * A transport connects this rank to every rank of the job (global ranks 0..size-1).
 * It offers non-blocking tagged point-to-point messages and a wait that drives
 * progress. It knows nothing about tensors or collectives.
 *
 * Tags. Callers build 64-bit tags with the layout in collectives/tags.h and must
 * leave the low HVD_TP_SRC_BITS bits zero: the transport ORs in the sender's rank on
 * send and the expected peer's rank on receive, so a receive matches only its own
 * peer's message even on providers without directed receive. Matching is exact
 * (ignore = 0). Messages with equal tags between one pair of ranks are matched in
 * the order they were posted (FI_ORDER_SAS), which lets the transport segment large
 * messages.
 *
 * Threads: one thread at a time per transport (the rank's background thread).
 * Unimplemented slots point at stubs returning HVD_ERR_NOT_SUPPORTED, never NULL.
 */
#ifndef HVD_TRANSPORT_H
#define HVD_TRANSPORT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "hvd.h"

#define HVD_TP_SRC_BITS 20
#define HVD_TP_MAX_RANKS (1 << HVD_TP_SRC_BITS)

typedef struct hvd_transport hvd_transport_t;

/*
 * One posted send or receive. Owned by the caller (usually on the collective's stack
 * or in its state), which must keep it alive and in place until it completes.
 * The transport may split it into several fabric operations (segments).
 */
typedef struct hvd_xfer {
  hvd_transport_t *tp;
  int pending;         /* fabric operations not yet completed (0 = done) */
  hvd_status_t status; /* HVD_OK, or the first error of any segment */
  int peer;
  int is_recv;
  size_t received; /* receives: bytes that arrived (may be < len, see irecv) */
  /* Private to the transport: segments not yet posted (after -FI_EAGAIN). */
  char *next_buf;
  size_t remaining;
  size_t len;
  uint64_t tag;
  void *prov;             /* which endpoint it goes through */
  struct hvd_xfer *next; /* in the endpoint's queue of xfers waiting to be posted */
} hvd_xfer_t;

typedef struct hvd_transport_ops {
  /* Serialized local address blob for the rendezvous. *len in: buffer size; out:
   * bytes used (HVD_ERR_INVALID_PARAM with the needed size if too small). */
  hvd_status_t (*get_address)(hvd_transport_t *tp, void *buf, size_t *len);
  /* Learn every rank's blob (blobs[r], lens[r]; blobs[rank] is our own) and whether
   * it is on this host (same_host[r]). Picks the provider for each peer the same way
   * on both sides. Must be followed by a job-wide barrier before the first message
   * (libfabric shm connects lazily). */
  hvd_status_t (*connect)(hvd_transport_t *tp, const void *const *blobs,
                          const size_t *lens, const int *same_host);
  /* Post a send / receive of len bytes (0 allowed; buf may then be NULL) to / from
   * peer (never self). Never blocks: what the provider cannot take yet is posted by
   * later progress. Returns HVD_OK once queued (x then completes through waitall /
   * progress); HVD_ERR_INVALID_PARAM with nothing in flight for a bad argument;
   * HVD_ERR_TRANSPORT if posting failed, with x possibly still partly in flight (as
   * after a waitall error). A receive may be matched by a shorter message only if it
   * fits in one segment (x->received says how much came); segmented messages must
   * have equal lengths on both sides. */
  hvd_status_t (*isend)(hvd_transport_t *tp, int peer, const void *buf, size_t len,
                        uint64_t tag, hvd_xfer_t *x);
  hvd_status_t (*irecv)(hvd_transport_t *tp, int peer, void *buf, size_t len,
                        uint64_t tag, hvd_xfer_t *x);
  /* Drive progress until every xfer in xs[0..n) completed (NULL entries skipped).
   * Spins briefly, then yields, then sleeps with back-off so a waiting rank does
   * not burn a core. Returns HVD_OK, the first xfer error, or HVD_ERR_ABORTED as
   * soon as the abort flag (hvd_transport_set_abort) becomes non-zero.
   * HVD_ERR_TIMEOUT when the transport has a timeout (hvd_ofi_params_t timeout_s)
   * and that long passes without any of xs[] progressing (a completion):
   * the clock starts when waitall is called and restarts at each completion, so it
   * measures how long the caller's operation has been stuck, not how old an xfer is;
   * tp->err names the peer (and its host, see hvd_transport_set_hosts). After an
   * error return, xfers still pending stay in use by the transport: keep them and
   * their buffers alive until they complete or the transport is destroyed. */
  hvd_status_t (*waitall)(hvd_transport_t *tp, hvd_xfer_t *const *xs, int n);
  /* One non-blocking progress pass. */
  hvd_status_t (*progress)(hvd_transport_t *tp);
  /* Largest send to peer that the provider buffers at the receiver even before a
   * receive is posted (its inject size, capped by the segment size); 0 if none. */
  size_t (*inject_size)(hvd_transport_t *tp, int peer);
  /* Human-readable description of the provider used for peer ("shm", "tcp;ofi_rxm"). */
  const char *(*peer_provider)(hvd_transport_t *tp, int peer);
  void (*destroy)(hvd_transport_t *tp);
} hvd_transport_ops_t;

struct hvd_transport {
  const hvd_transport_ops_t *ops;
  int rank;
  int size;
  /* Set by the owner; when *abort != 0 waits return HVD_ERR_ABORTED. May be NULL. */
  const atomic_int *abort;
  /* Set by the owner: hosts[r] is rank r's host name, for error messages. May be
   * NULL; the strings are the owner's and must outlive the transport. */
  const char *const *hosts;
  hvd_err_t err; /* detail of the last failure */
};

static inline void hvd_transport_set_abort(hvd_transport_t *tp, const atomic_int *flag) {
  tp->abort = flag;
}

static inline void hvd_transport_set_hosts(hvd_transport_t *tp, const char *const *hosts) {
  tp->hosts = hosts;
}

/* Parameters for the libfabric transport. */
typedef struct hvd_ofi_params {
  int rank;
  int size;
  /* NULL or "" = automatic (shm for same-host peers, tcp;ofi_rxm for the rest);
   * otherwise the provider used for every peer, e.g. "tcp" (means tcp;ofi_rxm),
   * "shm", "verbs;ofi_rxm", "efa". From HVD_OFI_PROVIDER. */
  const char *provider;
  /* Network interface or address to bind the network provider to (NULL = any). */
  const char *iface;
  /* Largest single fabric message; larger ones are segmented. 0 = provider limit.
   * From HVD_OFI_MAX_MSG_SIZE (tests use it to exercise segmentation). */
  size_t max_msg_size;
  /* Seconds a waitall may go without any of its xfers progressing before it fails
   * with HVD_ERR_TIMEOUT (tcp;ofi_rxm would report a dead link only after minutes
   * of TCP retransmission). 0 = never. From HVD_TRANSPORT_TIMEOUT_SECONDS. */
  double timeout_s;
} hvd_ofi_params_t;

/* Open the libfabric transport (endpoints, CQs, AVs); no peers yet. */
hvd_status_t hvd_ofi_create(const hvd_ofi_params_t *params, hvd_transport_t **out,
                            hvd_err_t *err);

/* After connect and a job-wide barrier: exchange one byte with each peer so that
 * every connection is opened by the lower rank first (tcp;ofi_rxm connects lazily,
 * and two ranks making their first sends to each other at the same moment can lose a
 * message). All peers for jobs of up to 64 ranks, else rank 0 and ring neighbours.
 * tag: the caller's tag for this exchange (low HVD_TP_SRC_BITS zero). Blocks. */
hvd_status_t hvd_transport_wireup(hvd_transport_t *tp, uint64_t tag, hvd_err_t *err);

/* Stub for unimplemented slots. */
hvd_status_t hvd_tp_not_supported(void);

#endif
