/*
 * A communicator: an ordered group of ranks over one transport. Collectives see only
 * this (and the transport ops table), never libfabric.
 *
 * The runtime fills tp, rank, size, ranks and id, zero-initialises the rest (calloc
 * or a designated initializer) and calls hvd_comm_release() when it is done with the
 * communicator. A communicator is used by one thread at a time (the background
 * thread), one collective at a time.
 */
#ifndef HVD_COLLECTIVES_COMM_H
#define HVD_COLLECTIVES_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "transport/transport.h"

/* Chunks of one stream in flight at once (collectives/xchg.h). */
#define HVD_COLL_SLOTS 4

/* Size classes of the arena's store choice: 64 KiB, 128 KiB, ..., the last one
 * open-ended. */
#define HVD_SHM_STORE_CLASSES 12

typedef struct hvd_comm {
  hvd_transport_t *tp;
  int rank;          /* this rank's index in the communicator */
  int size;          /* members */
  const int *ranks;  /* member index -> transport rank; NULL means identity */
  unsigned id;       /* tag comm field */
  unsigned seq;      /* incremented by every collective on this communicator */

  /* ---- owned by collectives/; zero at creation, freed by hvd_comm_release() ----
   * Memory and transfer slots reused by every collective, so the hot path does not
   * allocate and so that, when a collective fails, the receives it left posted
   * (the transport keeps them until they complete or it is destroyed) still point at
   * live memory. After a failure, run no further collective on this communicator,
   * and destroy the transport before calling hvd_comm_release(). */
  void *scratch;      /* HVD_COLL_SLOTS chunk buffers for incoming data to reduce */
  size_t scratch_size;
  void *work;         /* per-algorithm temporaries (reduce-scatter blocks), grown on demand */
  size_t work_size;
  hvd_xfer_t xfer[2 * HVD_COLL_SLOTS]; /* receives, then sends, of the running stream */
  unsigned char token[2];              /* barrier: byte sent, byte received */

  /* Same-host shared-memory arena (set by the runtime when every member is on this
   * host and the arena could be made; NULL otherwise; not owned), and the number of
   * arena chunks this communicator has run, which every member counts alike. */
  struct hvd_arena *arena;
  uint64_t arena_seq;
  /* Arena allreduce [0] and reduce-scatter [1], per size class: calls made, and the
   * time per byte measured with cached [0] and streaming [1] slot stores
   * (collectives/shm_sync.h, hvd_shm_stores_pick). */
  struct {
    uint64_t calls;
    double cost[2];
  } shm_stores[2][HVD_SHM_STORE_CLASSES];
} hvd_comm_t;

static inline int hvd_comm_peer(const hvd_comm_t *c, int member) {
  return c->ranks ? c->ranks[member] : member;
}

/* Free what collectives/ allocated in c (scratch, work); c itself stays the caller's.
 * Safe on a zeroed or already released communicator. */
void hvd_comm_release(hvd_comm_t *c);

#endif
