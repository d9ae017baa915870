/*
 * A communicator: an ordered group of ranks over one transport. Collectives see only
 * this (and the transport ops table), never libfabric.
 */
#ifndef HVD_COLLECTIVES_COMM_H
#define HVD_COLLECTIVES_COMM_H

#include <stdint.h>

#include "transport/transport.h"

typedef struct hvd_comm {
  hvd_transport_t *tp;
  int rank;          /* this rank's index in the communicator */
  int size;          /* members */
  const int *ranks;  /* member index -> transport rank; NULL means identity */
  unsigned id;       /* tag comm field */
  unsigned seq;      /* incremented by every collective on this communicator */
} hvd_comm_t;

static inline int hvd_comm_peer(const hvd_comm_t *c, int member) {
  return c->ranks ? c->ranks[member] : member;
}

#endif
