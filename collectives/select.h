/*
 * Algorithm selection as data: a table of (collective, largest message, rank range,
 * topology) -> algorithm, first match wins, with an override per collective
 * (HVD_ALLREDUCE_ALGO etc., parsed by the runtime). The thresholds are measured on
 * the development machine; docs/performance.md records the measurements.
 */
#ifndef HVD_COLLECTIVES_SELECT_H
#define HVD_COLLECTIVES_SELECT_H

#include <stddef.h>

#include "collectives/coll.h"

typedef enum {
  HVD_COLL_ALLREDUCE = 0,
  HVD_COLL_BROADCAST,
  HVD_COLL_ALLGATHER,
  HVD_COLL_REDUCESCATTER,
  HVD_COLL_ALLTOALL,
  HVD_COLL_KIND_COUNT
} hvd_coll_kind_t;

typedef struct hvd_algo_rule {
  hvd_coll_kind_t coll;
  size_t max_bytes; /* rule applies to messages of at most this many bytes per rank */
  int min_ranks, max_ranks;
  int remote;       /* -1 any, 0 all members on one host, 1 some member elsewhere */
  hvd_algo_t algo;
} hvd_algo_rule_t;

/* Parse "ring", "tree", "rd", "auto"; -1 if none. */
int hvd_algo_parse(const char *s);
const char *hvd_algo_name(hvd_algo_t a);

/* The algorithm the table picks (never AUTO). */
hvd_algo_t hvd_algo_select(hvd_coll_kind_t coll, size_t bytes, int ranks, int remote);

/* The allreduce algorithm that will run: AUTO resolved (the shared-memory arena when
 * the communicator has one, else the table), SHM without an arena falls back to ring. */
hvd_algo_t hvd_allreduce_algo(const hvd_comm_t *c, hvd_algo_t algo, size_t bytes, int remote);

/* Allreduce with algo (AUTO = from the table; remote = 0 assumed unless told). */
hvd_status_t hvd_coll_allreduce(hvd_comm_t *c, hvd_algo_t algo, int remote, const void *sendbuf,
                                void *recvbuf, size_t count, hvd_dtype_t dtype, hvd_op_t op);

#endif
