/*
 * Collective algorithms over a communicator. Every function blocks the calling
 * (background) thread until its part is done, returns HVD_OK or the transport's
 * error, and bumps comm->seq exactly once. Arguments are assumed valid (the runtime
 * checks them); count may be 0 and may be smaller than comm->size.
 * sendbuf == recvbuf means in place.
 */
#ifndef HVD_COLLECTIVES_COLL_H
#define HVD_COLLECTIVES_COLL_H

#include <stddef.h>

#include "collectives/comm.h"
#include "hvd.h"

typedef enum {
  HVD_ALGO_AUTO = 0,
  HVD_ALGO_RING,
  HVD_ALGO_TREE,
  HVD_ALGO_RD, /* recursive doubling */
  HVD_ALGO_COUNT
} hvd_algo_t;

/* Allreduce with op in {sum, min, max, product, band, bor}; AVERAGE is handled by the
 * runtime (sum + scale). */
hvd_status_t hvd_allreduce_ring(hvd_comm_t *c, const void *sendbuf, void *recvbuf,
                                size_t count, hvd_dtype_t dtype, hvd_op_t op);

#endif
