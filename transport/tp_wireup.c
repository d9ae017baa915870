/* Connection wire-up in a fixed order; see hvd_transport_wireup in transport.h. */
#include <stdlib.h>

#include "transport/transport.h"

/* Open every connection from one side: tcp;ofi_rxm connects lazily on the first
 * message, and two ranks sending their first messages to each other at once can
 * leave one of them unmatched (the simultaneous-connect race of libfabric 1.x rxm).
 * Rank i sends a hello to each peer j > i; j answers only after it has i's hello, so
 * each pair's connection is made by the lower rank alone. Larger jobs wire only the
 * peers the runtime always talks to (rank 0 and the ring neighbours); their other
 * connections are made by collectives with a fixed sender first. */
hvd_status_t hvd_transport_wireup(hvd_transport_t *tp, uint64_t tag, hvd_err_t *err) {
  int n = tp->size, me = tp->rank;
  int *peers = malloc((size_t)n * sizeof *peers);
  hvd_xfer_t *x = calloc(2 * (size_t)n, sizeof *x); /* a receive and a send per peer */
  hvd_xfer_t **xs = calloc(2 * (size_t)n, sizeof *xs);
  unsigned char *bytes = calloc((size_t)n, 1);
  hvd_status_t rc = HVD_OK;
  if (!peers || !x || !xs || !bytes) {
    rc = HVD_ERR_NO_MEMORY;
    goto out;
  }
  int np = 0;
  for (int j = 0; j < n; j++) {
    if (j == me) continue;
    int near = j == 0 || me == 0 || j == (me + 1) % n || me == (j + 1) % n;
    if (n <= 64 || near) peers[np++] = j;
  }
  /* Hellos from lower ranks first, then ours to higher ranks, then their answers. */
  int k = 0;
  for (int i = 0; i < np; i++)
    if (peers[i] < me) {
      HVD_CHECK_GOTO(tp->ops->irecv(tp, peers[i], &bytes[peers[i]], 1, tag, &x[k]), rc, out);
      xs[k] = &x[k];
      k++;
    }
  HVD_CHECK_GOTO(tp->ops->waitall(tp, xs, k), rc, out);
  int k2 = k;
  for (int i = 0; i < np; i++)
    if (peers[i] < me) { /* answer on the connection the lower rank made */
      HVD_CHECK_GOTO(tp->ops->isend(tp, peers[i], &bytes[me], 1, tag, &x[k2]), rc, out);
      xs[k2] = &x[k2];
      k2++;
    }
  for (int i = 0; i < np; i++)
    if (peers[i] > me) {
      HVD_CHECK_GOTO(tp->ops->isend(tp, peers[i], &bytes[me], 1, tag, &x[k2]), rc, out);
      xs[k2] = &x[k2];
      k2++;
    }
  HVD_CHECK_GOTO(tp->ops->waitall(tp, xs + k, k2 - k), rc, out);
  int k3 = k2;
  for (int i = 0; i < np; i++)
    if (peers[i] > me) {
      HVD_CHECK_GOTO(tp->ops->irecv(tp, peers[i], &bytes[peers[i]], 1, tag, &x[k3]), rc, out);
      xs[k3] = &x[k3];
      k3++;
    }
  HVD_CHECK_GOTO(tp->ops->waitall(tp, xs + k2, k3 - k2), rc, out);
out:
  if (rc != HVD_OK) hvd_err_set(err, "connecting to the other ranks: %s", tp->err.msg);
  free(peers);
  free(x);
  free(xs);
  free(bytes);
  return rc;
}

