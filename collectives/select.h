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
  size_t max_bytes; /* rule applies to messages of at most this many bytes: the vector
                       for allreduce and broadcast, the gathered total for allgather */
  int min_ranks, max_ranks;
  int remote;       /* -1 any, 0 all members on one host, 1 some member elsewhere */
  hvd_algo_t algo;
} hvd_algo_rule_t;

/* Parse "auto", "ring", "tree", "rd", "shm", "bruck", "scatter_ring" (any case); -1
 * if none. */
int hvd_algo_parse(const char *s);
const char *hvd_algo_name(hvd_algo_t a);

/* The names hvd_algo_supported accepts for each collective, as text: the settings
 * table (runtime/config.c) checks HVD_*_ALGO against them. */
#define HVD_ALLREDUCE_ALGO_CHOICES "auto, ring, tree, rd, shm"
#define HVD_BROADCAST_ALGO_CHOICES "auto, tree, scatter_ring, shm"
#define HVD_ALLGATHER_ALGO_CHOICES "auto, ring, bruck, shm"
#define HVD_REDUCESCATTER_ALGO_CHOICES "auto, ring, shm"

/* Whether algo can run coll (AUTO always can), and the names that can, as text for
 * messages ("auto, ring, bruck"). The runtime rejects an override that cannot. */
int hvd_algo_supported(hvd_coll_kind_t coll, hvd_algo_t algo);
const char *hvd_algo_choices(hvd_coll_kind_t coll);

/* The algorithm the table picks (never AUTO). */
hvd_algo_t hvd_algo_select(hvd_coll_kind_t coll, size_t bytes, int ranks, int remote);

/* The allreduce algorithm that will run: AUTO resolved (the shared-memory arena when
 * the communicator has one, else the table), SHM without an arena falls back to ring. */
hvd_algo_t hvd_allreduce_algo(const hvd_comm_t *c, hvd_algo_t algo, size_t bytes, int remote);

/* Allreduce with algo (AUTO = from the table; remote = 0 assumed unless told). */
hvd_status_t hvd_coll_allreduce(hvd_comm_t *c, hvd_algo_t algo, int remote, const void *sendbuf,
                                void *recvbuf, size_t count, hvd_dtype_t dtype, hvd_op_t op);

/* The allgather algorithm that will run for a gathered total of `bytes`: AUTO is the
 * shared-memory arena when the communicator has one, else (and for an algorithm that
 * cannot allgather, or shm without an arena) the table. Every rank must pass the same
 * algo, so that all of them pick the same. */
hvd_algo_t hvd_allgather_algo(const hvd_comm_t *c, hvd_algo_t algo, size_t bytes, int remote);

/* Allgatherv (coll.h) with algo: ring, bruck or shm; AUTO as above. */
hvd_status_t hvd_coll_allgatherv(hvd_comm_t *c, hvd_algo_t algo, int remote,
                                 const void *sendbuf, void *recvbuf, const size_t *counts,
                                 hvd_dtype_t dtype);

/* The broadcast algorithm that will run for a vector of `bytes`, as above. */
hvd_algo_t hvd_broadcast_algo(const hvd_comm_t *c, hvd_algo_t algo, size_t bytes, int remote);

/* Broadcast (coll.h) with algo: tree (binomial), scatter_ring or shm; AUTO as above. */
hvd_status_t hvd_coll_broadcast(hvd_comm_t *c, hvd_algo_t algo, int remote, void *buf,
                                size_t count, hvd_dtype_t dtype, int root);

/* Barrier: the arena's when the communicator has one, else dissemination. */
hvd_status_t hvd_coll_barrier(hvd_comm_t *c);

/* Reduce-scatter: the arena (shm) when the communicator has one and algo is AUTO or
 * SHM, else the ring. */
hvd_algo_t hvd_reducescatter_algo(const hvd_comm_t *c, hvd_algo_t algo);
hvd_status_t hvd_coll_reducescatter(hvd_comm_t *c, hvd_algo_t algo, const void *sendbuf,
                                    void *recvbuf, const size_t *counts, hvd_dtype_t dtype,
                                    hvd_op_t op);

#endif
