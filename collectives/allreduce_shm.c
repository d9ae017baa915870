/*
 * Allreduce among ranks of one host through the shared-memory arena
 * (transport/shm_arena.h): no messages, no system calls, and every byte is touched by
 * one plain copy or one reduction pass, so a chunk stays in cache between steps.
 *
 * The vector is processed in chunks of the arena's slot size, alternating the two
 * slots. For chunk g (the communicator's running chunk number, the same on every
 * member), member m:
 *   1. waits until every member has finished chunk g-2 (its slot of that parity is
 *      free again: counter GATHERED >= g-2), copies its input chunk into its slot and
 *      publishes POSTED = g;
 *   2. waits for every member's POSTED >= g and reduces its own sub-slice of the chunk
 *      (the chunk split evenly, collectives/ring.h blocks) from all slots, in place in
 *      its own slot; publishes REDUCED = g;
 *   3. for every member j, waits for REDUCED >= g and copies j's reduced sub-slice into
 *      its output; publishes GATHERED = g.
 * Each sub-slice is computed once, by one member, and copied to all: the result is
 * bit-identical everywhere. Counters are release-stored and acquire-loaded.
 *
 * Small vectors (at most HVD_SHM_DIRECT_BYTES, one chunk) take a shorter way: every
 * member reduces the whole chunk from all slots, in member order, straight into its
 * output, so a round needs one hand-off (POSTED) instead of two (POSTED, REDUCED);
 * the extra reading is cheaper than the second cross-core wait up to a few KiB.
 * Every member computes the same operations in the same order: identical bits.
 *
 * Counters and waiting: collectives/shm_sync.h.
 */
#include <string.h>

#include "collectives/coll.h"
#include "collectives/reduce.h"
#include "collectives/ring.h"
#include "collectives/shm_sync.h"
#include "common/util.h"

/* Largest vector reduced by every member at once (see above); measured in
 * docs/performance.md ("shared-memory arena: small vectors"). */
#define HVD_SHM_DIRECT_BYTES 4096u

static hvd_status_t allreduce_direct(hvd_comm_t *c, const char *in, char *out, size_t len,
                                     hvd_dtype_t dtype, hvd_op_t op) {
  hvd_arena_t *a = c->arena;
  const int n = a->n, me = a->me;
  const size_t es = hvd_dtype_size(dtype);
  const uint64_t g = ++c->arena_seq;
  const int p = (int)(g & 1);
  if (g > 2) HVD_CHECK(hvd_shm_wait_all(c, HVD_SHM_GATHERED, g - 2));
  memcpy(hvd_arena_slot(a, me, p), in, len * es);
  hvd_shm_publish(a, HVD_SHM_POSTED, g);
  for (int j = 0; j < 2; j++)
    if (j != me) HVD_CHECK(hvd_shm_wait(c, j, HVD_SHM_POSTED, g));
  hvd_reduce3(out, hvd_arena_slot(a, 0, p), hvd_arena_slot(a, 1, p), len, dtype, op);
  for (int j = 2; j < n; j++) {
    if (j != me) HVD_CHECK(hvd_shm_wait(c, j, HVD_SHM_POSTED, g));
    hvd_reduce(out, hvd_arena_slot(a, j, p), len, dtype, op);
  }
  hvd_shm_publish(a, HVD_SHM_GATHERED, g);
  return HVD_OK;
}

hvd_status_t hvd_allreduce_shm(hvd_comm_t *c, const void *sendbuf, void *recvbuf, size_t count,
                               hvd_dtype_t dtype, hvd_op_t op) {
  hvd_arena_t *a = c->arena;
  const int n = a->n, me = a->me;
  const size_t es = hvd_dtype_size(dtype);
  const size_t chunk = a->slot_bytes / es;
  const char *in = sendbuf;
  char *out = recvbuf;
  c->seq++;
  if (n > 1 && count > 0 && count * es <= HVD_MIN(HVD_SHM_DIRECT_BYTES, a->slot_bytes))
    return allreduce_direct(c, sendbuf, recvbuf, count, dtype, op);
  for (size_t off = 0; off < count; off += chunk) {
    const size_t len = HVD_MIN(chunk, count - off);
    const uint64_t g = ++c->arena_seq;
    const int p = (int)(g & 1);
    char *slot = hvd_arena_slot(a, me, p);
    hvd_status_t rc;

    if (g > 2 && (rc = hvd_shm_wait_all(c, HVD_SHM_GATHERED, g - 2)) != HVD_OK) return rc;
    memcpy(slot, in + off * es, len * es);
    hvd_shm_publish(a, HVD_SHM_POSTED, g);

    const size_t lo = hvd_block_offset(len, n, me), cnt = hvd_block_count(len, n, me);
    if (cnt > 0) {
      char *dst = slot + lo * es;
      if (me != 0) {
        if ((rc = hvd_shm_wait(c, 0, HVD_SHM_POSTED, g)) != HVD_OK) return rc;
        hvd_reduce3(dst, hvd_arena_slot(a, 0, p) + lo * es, dst, cnt, dtype, op);
      }
      for (int j = 1; j < n; j++) {
        if (j == me) continue;
        if ((rc = hvd_shm_wait(c, j, HVD_SHM_POSTED, g)) != HVD_OK) return rc;
        hvd_reduce(dst, hvd_arena_slot(a, j, p) + lo * es, cnt, dtype, op);
      }
    }
    hvd_shm_publish(a, HVD_SHM_REDUCED, g);

    for (int k = 0; k < n; k++) {
      const int j = (me + k) % n;
      const size_t lj = hvd_block_offset(len, n, j), cj = hvd_block_count(len, n, j);
      if (cj == 0) continue;
      if (j != me && (rc = hvd_shm_wait(c, j, HVD_SHM_REDUCED, g)) != HVD_OK) return rc;
      memcpy(out + (off + lj) * es, hvd_arena_slot(a, j, p) + lj * es, cj * es);
    }
    hvd_shm_publish(a, HVD_SHM_GATHERED, g);
  }
  return HVD_OK;
}
