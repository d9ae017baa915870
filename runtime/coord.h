/*
 * The coordinator of one process set: pure negotiation logic, no I/O.
 *
 * Global rank 0 runs one of these per process set. Members' request lists go in
 * (hvd_coord_add); response lists come out (hvd_coord_build) in one order that every
 * member then executes. Keeping every set's coordinator on global rank 0 gives all
 * collectives of all sets a single total order, so ranks in overlapping sets can
 * never wait on each other in a cycle; the data of a set's collectives still moves
 * only among its members.
 *
 * Response cache: the coordinator assigns cache ids (bits) in its response lists and
 * every member mirrors the assignments, so caches agree. A member with a cached
 * tensor sends just its bit; the ready set is the AND of the members' bit vectors.
 * An id is reused only after every member has acknowledged the list that evicted it,
 * so a bit that was in flight during an eviction is still understood.
 */
#ifndef HVD_RUNTIME_COORD_H
#define HVD_RUNTIME_COORD_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "runtime/message.h"

typedef struct hvd_coord hvd_coord_t;

typedef struct hvd_coord_params {
  int nmembers;
  const int *members;      /* global rank of each member (copied) */
  int cache_capacity;      /* 0 disables the cache */
  size_t fusion_threshold; /* bytes; 0 disables fusion */
  double stall_warning_s;  /* 0 disables the stall check */
  double stall_shutdown_s; /* 0 = warn only */
  double cycle_time_ms;    /* longest a ready tensor is held to fuse with arriving ones */
  /* Optional: a member's request for name arrived (for the timeline). */
  void (*on_ready)(void *arg, const char *name, int global_rank, uint64_t now_ns);
  void *arg;
} hvd_coord_params_t;

/* Statistics, cumulative. */
typedef struct hvd_coord_stats {
  uint64_t responses;     /* executable responses sent (after fusion) */
  uint64_t tensors;       /* tensors covered by them */
  uint64_t cache_hits;    /* tensors that became ready through cache bits */
  uint64_t errors;        /* error responses */
  uint64_t stall_warnings;
} hvd_coord_stats_t;

hvd_coord_t *hvd_coord_new(const hvd_coord_params_t *p);
void hvd_coord_free(hvd_coord_t *c);

/* Take member's request list (its contents are moved out; l is left empty).
 * HVD_ERR_PROTOCOL for a list that cannot be from a correct member. */
hvd_status_t hvd_coord_add(hvd_coord_t *c, int member, hvd_request_list_t *l, uint64_t now_ns,
                           hvd_err_t *err);

/* Build the next response list. Returns 1 when *out must be sent to every member
 * (it has responses, evictions or flags), 0 when there is nothing (out empty). */
int hvd_coord_build(hvd_coord_t *c, uint64_t now_ns, hvd_response_list_t *out);

/* 1 if any tensor is waiting for some member (so the caller keeps checking stalls). */
int hvd_coord_waiting(const hvd_coord_t *c);

void hvd_coord_get_stats(const hvd_coord_t *c, hvd_coord_stats_t *s);

/* Can responses of this type be cached? */
int hvd_msg_cacheable(hvd_msg_type_t t);

#endif
