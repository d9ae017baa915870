/*
 * Collective algorithms over a communicator. Every function blocks the calling
 * (background) thread until its part is done, returns HVD_OK or the transport's
 * error, and bumps comm->seq exactly once. Arguments are assumed valid (the runtime
 * checks them) and identical on every rank where the comment says so; counts may be
 * 0 and may be smaller than comm->size. sendbuf == recvbuf means in place.
 * Counts and displacements are in elements of dtype; buffers need element alignment.
 *
 * Results are bit-identical on every rank: each reduced element is either computed
 * once and copied (ring, tree) or computed by every rank from the same operands in
 * the same order (recursive doubling orders operands by rank).
 *
 * After an error the communicator must not run further collectives (see comm.h).
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
  HVD_ALGO_RD,  /* recursive doubling */
  HVD_ALGO_SHM, /* same-host shared-memory arena (collectives/allreduce_shm.c) */
  HVD_ALGO_BRUCK,        /* allgather: Bruck (collectives/allgatherv_bruck.c) */
  HVD_ALGO_SCATTER_RING, /* broadcast: scatter + ring allgather (broadcast_scatter.c) */
  HVD_ALGO_COUNT
} hvd_algo_t;

/* ---- allreduce: op in {sum, min, max, product, band, bor}; AVERAGE is handled by
 * the runtime (sum + hvd_scale). count, dtype and op equal on every rank. ---------- */

/* Reduce-scatter ring + allgather ring, pipelined in chunks. Bandwidth-optimal
 * (2(n-1)/n of the vector sent per rank); 2(n-1) latency steps. For large vectors. */
hvd_status_t hvd_allreduce_ring(hvd_comm_t *c, const void *sendbuf, void *recvbuf,
                                size_t count, hvd_dtype_t dtype, hvd_op_t op);

/* Recursive doubling with the non-power-of-two fold: ceil(log2 n) (+2) steps, the
 * whole vector each step. For small vectors. */
hvd_status_t hvd_allreduce_rd(hvd_comm_t *c, const void *sendbuf, void *recvbuf,
                              size_t count, hvd_dtype_t dtype, hvd_op_t op);

/* Binomial reduce to member 0, then binomial broadcast: 2 ceil(log2 n) steps, the
 * whole vector each step. For small vectors. */
hvd_status_t hvd_allreduce_tree(hvd_comm_t *c, const void *sendbuf, void *recvbuf,
                                size_t count, hvd_dtype_t dtype, hvd_op_t op);

/* Every member on one host, reading each other's arena slots directly (no messages):
 * per chunk, each member copies its input into its slot, reduces its own sub-slice
 * from all slots, and gathers the others' reduced sub-slices. Needs c->arena, whose
 * local ranks must be the communicator's members in order. */
hvd_status_t hvd_allreduce_shm(hvd_comm_t *c, const void *sendbuf, void *recvbuf, size_t count,
                               hvd_dtype_t dtype, hvd_op_t op);

/* One tensor of a fused arena allreduce: count elements read from in (NULL: zeros)
 * and written to out (NULL: the result is dropped); in == out is fine. */
typedef struct hvd_shm_part {
  const void *in;
  void *out;
  size_t count;
} hvd_shm_part_t;

/* hvd_allreduce_shm of the concatenation of parts[] without a fusion buffer: inputs are
 * copied straight into the arena (then multiplied by prescale) and results straight
 * into the outputs (then multiplied by postscale, while still in cache). The scales
 * are hvd_scale()'s, applied to this rank's contribution and to its result. */
hvd_status_t hvd_allreduce_shm_parts(hvd_comm_t *c, const hvd_shm_part_t *parts, size_t nparts,
                                     hvd_dtype_t dtype, hvd_op_t op, double prescale,
                                     double postscale);

/* ---- other collectives ------------------------------------------------------------ */

/* Broadcast, allgatherv and reduce-scatter (contracts below) among members of one host
 * through the shared-memory arena (collectives/shm_coll.c): one copy in and one copy
 * (or reduction) out per round, no messages. Need c->arena, as hvd_allreduce_shm. */
hvd_status_t hvd_broadcast_shm(hvd_comm_t *c, void *buf, size_t count, hvd_dtype_t dtype,
                               int root);
hvd_status_t hvd_allgatherv_shm(hvd_comm_t *c, const void *sendbuf, void *recvbuf,
                                const size_t *counts, hvd_dtype_t dtype);
hvd_status_t hvd_reducescatter_shm(hvd_comm_t *c, const void *sendbuf, void *recvbuf,
                                   const size_t *counts, hvd_dtype_t dtype, hvd_op_t op);
/* Barrier through the arena: one round of counters, no data. */
hvd_status_t hvd_barrier_shm(hvd_comm_t *c);

/* Broadcast count elements of buf from member root to every member (in place).
 * count, dtype, root equal on every rank. Binomial tree: ceil(log2 n) steps, the
 * whole vector each step (each edge itself chunked). For small vectors. */
hvd_status_t hvd_broadcast_binomial(hvd_comm_t *c, void *buf, size_t count,
                                    hvd_dtype_t dtype, int root);

/* The same broadcast as a binomial scatter of n blocks followed by a ring allgather
 * (van de Geijn): ceil(log2 n) + n - 1 steps, about 2(n-1)/n of the vector sent and
 * received per member instead of up to ceil(log2 n) times the whole vector from the
 * root. For large vectors. */
hvd_status_t hvd_broadcast_scatter_ring(hvd_comm_t *c, void *buf, size_t count,
                                        hvd_dtype_t dtype, int root);

/* Allgatherv: member j contributes counts[j] elements (sendbuf on member j);
 * recvbuf receives all contributions packed in member order (member j's at offset
 * counts[0] + ... + counts[j-1]). counts[] equal on every rank. In place when sendbuf
 * is already at this member's offset in recvbuf. Ring: n-1 steps. */
hvd_status_t hvd_allgatherv_ring(hvd_comm_t *c, const void *sendbuf, void *recvbuf,
                                 const size_t *counts, hvd_dtype_t dtype);

/* The same allgatherv by Bruck's algorithm: ceil(log2 n) steps for any n, the same
 * (n-1)/n of the total received as the ring. Blocks are kept rotated in c->work
 * (total elements; member 0 works in recvbuf) and put in order at the end. For
 * small totals. */
hvd_status_t hvd_allgatherv_bruck(hvd_comm_t *c, const void *sendbuf, void *recvbuf,
                                  const size_t *counts, hvd_dtype_t dtype);

/* Reduce-scatter: sendbuf holds counts[0] + ... + counts[n-1] elements on every
 * member; member r receives in recvbuf the counts[r] elements of block r (at offset
 * counts[0] + ... + counts[r-1]) reduced over all members. counts[], dtype, op equal
 * on every rank. In place when recvbuf is sendbuf + that offset. Ring: n-1 steps;
 * uses 2 * max(counts) elements of c->work. */
hvd_status_t hvd_reducescatter_ring(hvd_comm_t *c, const void *sendbuf, void *recvbuf,
                                    const size_t *counts, hvd_dtype_t dtype, hvd_op_t op);

/* Alltoallv: member r sends sendcounts[j] elements from sendbuf + sdispls[j] to
 * member j and receives recvcounts[j] elements from member j into recvbuf +
 * rdispls[j]. sendcounts[j] on member i must equal recvcounts[i] on member j.
 * sendbuf and recvbuf must not overlap. Pairwise exchange: n-1 steps. */
hvd_status_t hvd_alltoallv_pairwise(hvd_comm_t *c, const void *sendbuf,
                                    const size_t *sendcounts, const size_t *sdispls,
                                    void *recvbuf, const size_t *recvcounts,
                                    const size_t *rdispls, hvd_dtype_t dtype);

/* Returns once every member has entered it. Dissemination: ceil(log2 n) rounds of
 * one-byte messages. */
hvd_status_t hvd_barrier_dissemination(hvd_comm_t *c);

#endif
