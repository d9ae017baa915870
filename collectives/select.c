/* The selection table and the dispatching entry points; see select.h. */
#include "collectives/select.h"

#include <string.h>
#include <strings.h>

static const char *const names[HVD_ALGO_COUNT] = {"auto", "ring",  "tree",        "rd",
                                                   "shm",  "bruck", "scatter_ring"};

/* Which algorithms implement which collective (AUTO: all). */
static const struct {
  unsigned mask;
  const char *text;
} supported[HVD_COLL_KIND_COUNT] = {
    [HVD_COLL_ALLREDUCE] = {1u << HVD_ALGO_RING | 1u << HVD_ALGO_TREE | 1u << HVD_ALGO_RD |
                                1u << HVD_ALGO_SHM,
                            HVD_ALLREDUCE_ALGO_CHOICES},
    [HVD_COLL_BROADCAST] = {1u << HVD_ALGO_TREE | 1u << HVD_ALGO_SCATTER_RING |
                                1u << HVD_ALGO_SHM,
                            HVD_BROADCAST_ALGO_CHOICES},
    [HVD_COLL_ALLGATHER] = {1u << HVD_ALGO_RING | 1u << HVD_ALGO_BRUCK | 1u << HVD_ALGO_SHM,
                            HVD_ALLGATHER_ALGO_CHOICES},
    [HVD_COLL_REDUCESCATTER] = {1u << HVD_ALGO_RING | 1u << HVD_ALGO_SHM,
                                HVD_REDUCESCATTER_ALGO_CHOICES},
    [HVD_COLL_ALLTOALL] = {0, "auto"},
};

int hvd_algo_parse(const char *s) {
  for (int i = 0; i < HVD_ALGO_COUNT; i++)
    if (strcasecmp(s, names[i]) == 0) return i;
  return -1;
}

const char *hvd_algo_name(hvd_algo_t a) {
  return (unsigned)a < HVD_ALGO_COUNT ? names[a] : "unknown";
}

int hvd_algo_supported(hvd_coll_kind_t coll, hvd_algo_t algo) {
  if ((unsigned)coll >= HVD_COLL_KIND_COUNT || (unsigned)algo >= HVD_ALGO_COUNT) return 0;
  return algo == HVD_ALGO_AUTO || (supported[coll].mask >> algo & 1u);
}

const char *hvd_algo_choices(hvd_coll_kind_t coll) {
  return (unsigned)coll < HVD_COLL_KIND_COUNT ? supported[coll].text : "auto";
}

/* First match wins.
 * Allreduce: the same-host rows (remote = 0) are measured over the libfabric shm
 * transport on the 2-core development VM, ranks pinned one per core, ring/tree/rd
 * interleaved, median of 3 rounds (docs/performance.md, "Algorithm selection"). AUTO
 * prefers the shared-memory arena when there is one, so they apply without it.
 *   np=2: rd fastest at every size up to 2 MiB (one exchange instead of the ring's
 *         two steps, same bytes); 4 MiB a tie; ring from 8 MiB (it reads and writes
 *         2.5 S per rank, rd 3 S, once the vectors leave the cache).
 *   np=3: rd up to 4 MiB (3 steps instead of 4: with 3 ranks on 2 cores each step
 *         costs a context switch), ring from 8 MiB.
 *   np=4: rd up to 1 MiB, ring from 2 MiB (above, rd is 0.97-1.15x ring, within the
 *         noise; ring sends 1.5 S per rank against rd's 2 S).
 * Tree never won consistently and is not selected. Larger or multi-host jobs are not
 * measured: rd up to 16 KiB, then ring (Open MPI's tuned rules use recursive doubling
 * up to 8 KiB for 4-15 ranks; MPICH's classic threshold is 2 KiB). */
static const hvd_algo_rule_t rules[] = {
    {HVD_COLL_ALLREDUCE, 2u << 20, 2, 2, 0, HVD_ALGO_RD},
    {HVD_COLL_ALLREDUCE, 4u << 20, 3, 3, 0, HVD_ALGO_RD},
    {HVD_COLL_ALLREDUCE, 1u << 20, 4, 4, 0, HVD_ALGO_RD},
    {HVD_COLL_ALLREDUCE, 16 * 1024, 1, 1 << 20, -1, HVD_ALGO_RD},
    {HVD_COLL_ALLREDUCE, (size_t)-1, 1, 1 << 20, -1, HVD_ALGO_RING},
    /* Allgather, bytes = the gathered total; ring and bruck interleaved on the 2-core
     * VM, 2-4 runs (docs/performance.md, "Algorithm selection: allgather and
     * broadcast"). np=2: one exchange either way, and the ring copies nothing (even up
     * to 4 KiB, ring up to 1.4x ahead above). np=3: both take 2 steps; bruck 0.81-0.96
     * of ring up to 16 KiB, even at 32-64 KiB, behind from 256 KiB (its copy in and
     * rotation out). np=4,5: bruck ahead up to 1 MiB (26 of 28 runs at 32 KiB-1 MiB),
     * behind from 2-4 MiB. Measured with ranks > cores, which favours fewer rounds;
     * MPICH switches at 80 KiB. */
    {HVD_COLL_ALLGATHER, 16 * 1024, 3, 3, -1, HVD_ALGO_BRUCK},
    {HVD_COLL_ALLGATHER, 1024 * 1024, 4, 1 << 20, -1, HVD_ALGO_BRUCK},
    {HVD_COLL_ALLGATHER, (size_t)-1, 1, 1 << 20, -1, HVD_ALGO_RING},
    /* Broadcast, bytes = the vector: the binomial tree 1.3-3.5x faster up to 1 MiB at
     * np=2..5, still ahead at 2 MiB; scatter_ring 0.72-0.97 of it at 4-16 MiB for
     * np=4,5 (even at 4 MiB, ahead from 8 MiB for np=3). With 2 ranks the tree is one
     * message, and scatter_ring never measurably better. */
    {HVD_COLL_BROADCAST, 2 * 1024 * 1024, 1, 1 << 20, -1, HVD_ALGO_TREE},
    {HVD_COLL_BROADCAST, (size_t)-1, 3, 1 << 20, -1, HVD_ALGO_SCATTER_RING},
    {HVD_COLL_BROADCAST, (size_t)-1, 1, 2, -1, HVD_ALGO_TREE},
};

hvd_algo_t hvd_algo_select(hvd_coll_kind_t coll, size_t bytes, int ranks, int remote) {
  for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
    const hvd_algo_rule_t *r = &rules[i];
    if (r->coll == coll && bytes <= r->max_bytes && ranks >= r->min_ranks &&
        ranks <= r->max_ranks && (r->remote < 0 || r->remote == remote))
      return r->algo;
  }
  return HVD_ALGO_RING;
}

hvd_algo_t hvd_allreduce_algo(const hvd_comm_t *c, hvd_algo_t algo, size_t bytes, int remote) {
  if (algo == HVD_ALGO_AUTO && c->arena != NULL) return HVD_ALGO_SHM;
  if (algo == HVD_ALGO_AUTO) return hvd_algo_select(HVD_COLL_ALLREDUCE, bytes, c->size, remote);
  if (algo == HVD_ALGO_SHM && c->arena == NULL) return HVD_ALGO_RING;
  return algo;
}

hvd_status_t hvd_coll_allreduce(hvd_comm_t *c, hvd_algo_t algo, int remote, const void *sendbuf,
                                void *recvbuf, size_t count, hvd_dtype_t dtype, hvd_op_t op) {
  algo = hvd_allreduce_algo(c, algo, count * hvd_dtype_size(dtype), remote);
  switch (algo) {
  case HVD_ALGO_SHM: return hvd_allreduce_shm(c, sendbuf, recvbuf, count, dtype, op);
  case HVD_ALGO_RD: return hvd_allreduce_rd(c, sendbuf, recvbuf, count, dtype, op);
  case HVD_ALGO_TREE: return hvd_allreduce_tree(c, sendbuf, recvbuf, count, dtype, op);
  default: return hvd_allreduce_ring(c, sendbuf, recvbuf, count, dtype, op);
  }
}

/* AUTO (or shm) on a communicator with an arena -> shm; AUTO, shm without an arena, or
 * an algorithm the collective lacks -> the table. */
static hvd_algo_t resolve(hvd_coll_kind_t coll, const hvd_comm_t *c, hvd_algo_t algo,
                          size_t bytes, int remote) {
  if ((algo == HVD_ALGO_AUTO || algo == HVD_ALGO_SHM) && c->arena != NULL &&
      hvd_algo_supported(coll, HVD_ALGO_SHM))
    return HVD_ALGO_SHM;
  if (!hvd_algo_supported(coll, algo) || algo == HVD_ALGO_AUTO || algo == HVD_ALGO_SHM)
    return hvd_algo_select(coll, bytes, c->size, remote);
  return algo;
}

hvd_algo_t hvd_allgather_algo(const hvd_comm_t *c, hvd_algo_t algo, size_t bytes, int remote) {
  return resolve(HVD_COLL_ALLGATHER, c, algo, bytes, remote);
}

hvd_status_t hvd_coll_allgatherv(hvd_comm_t *c, hvd_algo_t algo, int remote,
                                 const void *sendbuf, void *recvbuf, const size_t *counts,
                                 hvd_dtype_t dtype) {
  size_t total = 0;
  for (int j = 0; j < c->size; j++) total += counts[j];
  algo = hvd_allgather_algo(c, algo, total * hvd_dtype_size(dtype), remote);
  if (algo == HVD_ALGO_SHM) return hvd_allgatherv_shm(c, sendbuf, recvbuf, counts, dtype);
  if (algo == HVD_ALGO_BRUCK) return hvd_allgatherv_bruck(c, sendbuf, recvbuf, counts, dtype);
  return hvd_allgatherv_ring(c, sendbuf, recvbuf, counts, dtype);
}

hvd_algo_t hvd_broadcast_algo(const hvd_comm_t *c, hvd_algo_t algo, size_t bytes, int remote) {
  return resolve(HVD_COLL_BROADCAST, c, algo, bytes, remote);
}

hvd_status_t hvd_coll_broadcast(hvd_comm_t *c, hvd_algo_t algo, int remote, void *buf,
                                size_t count, hvd_dtype_t dtype, int root) {
  algo = hvd_broadcast_algo(c, algo, count * hvd_dtype_size(dtype), remote);
  if (algo == HVD_ALGO_SHM) return hvd_broadcast_shm(c, buf, count, dtype, root);
  if (algo == HVD_ALGO_SCATTER_RING)
    return hvd_broadcast_scatter_ring(c, buf, count, dtype, root);
  return hvd_broadcast_binomial(c, buf, count, dtype, root);
}

hvd_status_t hvd_coll_barrier(hvd_comm_t *c) {
  return c->arena != NULL ? hvd_barrier_shm(c) : hvd_barrier_dissemination(c);
}

hvd_algo_t hvd_reducescatter_algo(const hvd_comm_t *c, hvd_algo_t algo) {
  return resolve(HVD_COLL_REDUCESCATTER, c, algo, 0, 0);
}

hvd_status_t hvd_coll_reducescatter(hvd_comm_t *c, hvd_algo_t algo, const void *sendbuf,
                                    void *recvbuf, const size_t *counts, hvd_dtype_t dtype,
                                    hvd_op_t op) {
  if (hvd_reducescatter_algo(c, algo) == HVD_ALGO_SHM)
    return hvd_reducescatter_shm(c, sendbuf, recvbuf, counts, dtype, op);
  return hvd_reducescatter_ring(c, sendbuf, recvbuf, counts, dtype, op);
}
