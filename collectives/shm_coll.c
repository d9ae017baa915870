/*
 * Broadcast, allgatherv and reduce-scatter among ranks of one host through the
 * shared-memory arena (transport/shm_arena.h), like allreduce_shm.c: no messages and
 * no system calls, one synchronisation (a POSTED counter) per round instead of a
 * libfabric rendezvous per chunk. Rounds, counters and waiting: collectives/shm_sync.h.
 *
 * Broadcast: per chunk (a quarter of the vector, 4 KiB to a quarter slot), the root
 *   copies the chunk into its slot and publishes POSTED; every other member copies it
 *   out, while the root already fills the next chunk. From HVD_SHM_CMA_BYTES to below
 *   HVD_SHM_BCAST_CMA_MAX, with cross-memory access, one copy instead: the others
 *   read the head of the root's buffer with process_vm_readv while the root writes
 *   the tail (1/n of it, unless ranks outnumber cores) into each of theirs with
 *   process_vm_writev, and the root returns once all have read: the pipelined copies
 *   need the data to move between the cores' caches twice, which costs 2-3x when
 *   this VM's two vCPUs sit far apart (docs/performance.md); from 8 MiB (128 KiB
 *   oversubscribed) the pipeline is as fast or faster.
 * Allgatherv: round k carries the k-th slot-sized chunk of every member's block: each
 *   member with data left copies its chunk into its slot, and everyone copies the
 *   others' chunks to their places in recvbuf (its own block straight from sendbuf).
 *   With cross-memory reads (arena->cma) and blocks of HVD_SHM_CMA_BYTES or more,
 *   one round instead: each member publishes its send buffer's address, reads every
 *   other block straight from its owner with process_vm_readv (one copy, not two),
 *   and returns only when everyone has read its own block (GATHERED of all).
 * Reduce-scatter: the slot is cut into n equal pieces; round k carries the k-th piece
 *   of every member's block (piece j of the slot = block j), so all members reduce
 *   at once. Member r reduces its piece from the other n-1 slots and its own sendbuf
 *   (the slot copy of its own piece is skipped unless the output overlaps it), in
 *   member order, straight into recvbuf. From HVD_SHM_STREAM_MIN bytes the copies
 *   into the slot use cached or streaming stores, whichever measured cheaper
 *   (shm_sync.h; allreduce_shm.c, "Slot stores").
 * Barrier: one round with no data: publish POSTED, wait for everyone's.
 * Every member runs the same rounds (the counts are equal everywhere), including
 * those in which it has nothing to copy, and ends each with GATHERED.
 */
#include <string.h>

#include "collectives/coll.h"
#include "collectives/reduce.h"
#include "collectives/ring.h"
#include "collectives/shm_sync.h"
#include "common/util.h"

/* Smallest block (bytes) an allgatherv, and vector a broadcast, reads with
 * process_vm_readv rather than through the slots; measured in docs/performance.md
 * ("Same-host arena: thresholds"). */
#define HVD_SHM_CMA_BYTES (8u * 1024)
/* Broadcasts from this size go through the slots even with cross-memory access: with
 * the root writing 1/n while the others read the rest, below 8 MiB; when ranks
 * outnumber cores (the others read it all, each waiting for a core), below 128 KiB:
 * np = 4 on 2 cores, the pipeline was 1.5-2x faster at 256 KiB-1 MiB. */
#define HVD_SHM_BCAST_CMA_MAX (8u * 1024 * 1024)
#define HVD_SHM_BCAST_CMA_MAX_OVERSUB (128u * 1024)

static size_t piece(size_t count, size_t per, size_t k) {
  size_t off = k * per;
  return off >= count ? 0 : HVD_MIN(per, count - off);
}

/* Every member posts its arrival (POSTED = g). With a core each, every member then
 * waits for all the arrivals: one cross-core hop. Oversubscribed, member 0 alone waits
 * for them and then releases the others (its GATHERED = g), so member 0 leaves first
 * and the others as they get a core. (With the all-to-all form, whichever member
 * arrived last left first; a broadcast from member 0 right after the barrier, as in
 * hvd-bench's timed loop, then waited for member 0 to be scheduled again: ~7 µs
 * instead of ~0.2 at 8 B with 4 ranks on 2 cores, docs/performance.md.) */
hvd_status_t hvd_barrier_shm(hvd_comm_t *c) {
  hvd_arena_t *a = c->arena;
  c->seq++;
  const uint64_t g = ++c->arena_seq;
  hvd_shm_publish(a, HVD_SHM_POSTED, g);
  if (!a->oversubscribed || a->me == 0)
    HVD_CHECK(hvd_shm_wait_all(c, HVD_SHM_POSTED, g));
  else
    HVD_CHECK(hvd_shm_wait(c, 0, HVD_SHM_GATHERED, g));
  hvd_shm_publish(a, HVD_SHM_GATHERED, g);
  return HVD_OK;
}

hvd_status_t hvd_broadcast_shm(hvd_comm_t *c, void *buf, size_t count, hvd_dtype_t dtype,
                               int root) {
  hvd_arena_t *a = c->arena;
  const int me = a->me;
  const size_t es = hvd_dtype_size(dtype);
  char *b = buf;
  c->seq++;
  const size_t cma_max = a->oversubscribed ? HVD_SHM_BCAST_CMA_MAX_OVERSUB : HVD_SHM_BCAST_CMA_MAX;
  if (a->cma && count * es >= HVD_SHM_CMA_BYTES && count * es < cma_max) {
    /* The others read the head of root's buffer while the root writes the tail into
     * each of theirs: 1/n of the vector per member, so that with n = 2 both cores copy
     * half at once. Not when ranks outnumber cores: the root would wait for each
     * member to be scheduled (8-32 KiB at np = 3, 4 on 2 cores: 2x slower); then the
     * others read it all. */
    const uint64_t g = ++c->arena_seq;
    const size_t bytes = count * es;
    const size_t tail = a->oversubscribed ? 0 : bytes / (size_t)a->n / es * es, head = bytes - tail;
    hvd_err_t *err = c->tp ? &c->tp->err : &(hvd_err_t){0};
    hvd_arena_ctrl(a, me)->buf = (uint64_t)(uintptr_t)buf;
    hvd_shm_publish(a, HVD_SHM_POSTED, g);
    if (me == root) {
      for (int i = 1; i < a->n && tail > 0; i++) {
        const int j = (me + i) % a->n;
        HVD_CHECK(hvd_shm_wait(c, j, HVD_SHM_POSTED, g));
        HVD_CHECK(hvd_arena_write(a, j, hvd_arena_ctrl(a, j)->buf + head, b + head, tail, err));
      }
      hvd_shm_publish(a, HVD_SHM_REDUCED, g); /* every tail written */
      hvd_shm_publish(a, HVD_SHM_GATHERED, g);
      return hvd_shm_wait_all(c, HVD_SHM_GATHERED, g); /* everyone has read the head */
    }
    HVD_CHECK(hvd_shm_wait(c, root, HVD_SHM_POSTED, g));
    HVD_CHECK(hvd_arena_read(a, root, buf, hvd_arena_ctrl(a, root)->buf, head, err));
    HVD_CHECK(hvd_shm_wait(c, root, HVD_SHM_REDUCED, g));
    hvd_shm_publish(a, HVD_SHM_GATHERED, g);
    return HVD_OK;
  }
  /* At least four chunks (of 4 KiB to a quarter slot), so that the root fills the next
   * one while the others copy this one out: two cores copying at once. */
  const size_t chunk =
      HVD_MAX(HVD_MIN(a->slot_bytes / 4, HVD_MAX(count * es / 4, (size_t)4096)) / es, 1);
  for (size_t off = 0; off < count; off += chunk) {
    const size_t len = HVD_MIN(chunk, count - off);
    const uint64_t g = ++c->arena_seq;
    const int p = (int)(g & 1);
    if (me == root) {
      if (g > 2) HVD_CHECK(hvd_shm_wait_all(c, HVD_SHM_GATHERED, g - 2));
      memcpy(hvd_arena_slot(a, me, p), b + off * es, len * es);
      hvd_shm_publish(a, HVD_SHM_POSTED, g);
    } else {
      HVD_CHECK(hvd_shm_wait(c, root, HVD_SHM_POSTED, g));
      memcpy(b + off * es, hvd_arena_slot(a, root, p), len * es);
    }
    hvd_shm_publish(a, HVD_SHM_GATHERED, g);
  }
  return HVD_OK;
}

hvd_status_t hvd_allgatherv_shm(hvd_comm_t *c, const void *sendbuf, void *recvbuf,
                                const size_t *counts, hvd_dtype_t dtype) {
  hvd_arena_t *a = c->arena;
  const int n = a->n, me = a->me;
  const size_t es = hvd_dtype_size(dtype), chunk = a->slot_bytes / es;
  char *rb = recvbuf;
  const char *sb = sendbuf;
  size_t most = 0;
  c->seq++;
  for (int j = 0; j < n; j++) most = HVD_MAX(most, counts[j]);
  const size_t own = hvd_counts_offset(counts, me);
  if (a->cma && most * es >= HVD_SHM_CMA_BYTES) {
    const uint64_t g = ++c->arena_seq;
    hvd_arena_ctrl(a, me)->buf = (uint64_t)(uintptr_t)sb;
    hvd_shm_publish(a, HVD_SHM_POSTED, g);
    if (counts[me] > 0 && sb != rb + own * es) memcpy(rb + own * es, sb, counts[me] * es);
    size_t off = own + counts[me];
    for (int i = 1; i < n; i++) {
      const int j = (me + i) % n;
      if (j == 0) off = 0;
      if (counts[j] > 0) {
        HVD_CHECK(hvd_shm_wait(c, j, HVD_SHM_POSTED, g));
        hvd_status_t rc = hvd_arena_read(a, j, rb + off * es, hvd_arena_ctrl(a, j)->buf,
                                         counts[j] * es, c->tp ? &c->tp->err : &(hvd_err_t){0});
        if (rc != HVD_OK) return rc;
      }
      off += counts[j];
    }
    hvd_shm_publish(a, HVD_SHM_GATHERED, g);
    return hvd_shm_wait_all(c, HVD_SHM_GATHERED, g); /* nobody reads sendbuf any more */
  }
  if (counts[me] > 0 && sb != rb + own * es) memcpy(rb + own * es, sb, counts[me] * es);
  for (size_t k = 0; k * chunk < most; k++) {
    const uint64_t g = ++c->arena_seq;
    const int p = (int)(g & 1);
    const size_t mine = piece(counts[me], chunk, k);
    if (mine > 0) {
      if (g > 2) HVD_CHECK(hvd_shm_wait_all(c, HVD_SHM_GATHERED, g - 2));
      memcpy(hvd_arena_slot(a, me, p), sb + k * chunk * es, mine * es);
      hvd_shm_publish(a, HVD_SHM_POSTED, g);
    }
    size_t off = own + counts[me]; /* block j's offset, walking j = me+1, me+2, ... */
    for (int i = 1; i < n; i++) {
      const int j = (me + i) % n;
      if (j == 0) off = 0;
      const size_t len = piece(counts[j], chunk, k);
      if (len > 0) {
        HVD_CHECK(hvd_shm_wait(c, j, HVD_SHM_POSTED, g));
        memcpy(rb + (off + k * chunk) * es, hvd_arena_slot(a, j, p), len * es);
      }
      off += counts[j];
    }
    hvd_shm_publish(a, HVD_SHM_GATHERED, g);
  }
  return HVD_OK;
}

hvd_status_t hvd_reducescatter_shm(hvd_comm_t *c, const void *sendbuf, void *recvbuf,
                                   const size_t *counts, hvd_dtype_t dtype, hvd_op_t op) {
  hvd_arena_t *a = c->arena;
  const int n = a->n, me = a->me;
  const size_t es = hvd_dtype_size(dtype);
  /* Piece length in elements: the slot split n ways, kept to whole cache lines so that
   * members writing neighbouring pieces never share one. */
  size_t per = a->slot_bytes / (size_t)n / HVD_ARENA_LINE * HVD_ARENA_LINE / es;
  if (per == 0) per = a->slot_bytes / (size_t)n / es; /* >= 2: slots >= 4 KiB, n <= 256 */
  const char *sb = sendbuf;
  char *rb = recvbuf;
  size_t most = 0;
  c->seq++;
  if (n == 1) {
    if (counts[0] > 0 && sb != rb) memcpy(rb, sb, counts[0] * es);
    return HVD_OK;
  }
  size_t total = 0, own = 0;
  for (int j = 0; j < n; j++) {
    most = HVD_MAX(most, counts[j]);
    if (j == me) own = total;
    total += counts[j];
  }
  /* Our own piece is reduced straight from sendbuf, not copied into the slot (nobody
   * else reads it), unless the output overlaps our block of the input: then writing
   * dst could change an operand before it is read, except when the two are the same
   * memory and our piece is one of the first two operands (member order: 0, 1, ...),
   * which hvd_reduce3 reads before it writes. */
  const char *mine0 = sb + own * es;
  const size_t nb = counts[me] * es;
  const int overlap = nb > 0 && rb < mine0 + nb && mine0 < rb + nb;
  const int own_in_slot = overlap && (me >= 2 || rb != mine0);
  int cls;
  const int kind = hvd_shm_stores_pick(c, HVD_SHM_STATS_REDUCESCATTER, total * es, 1.0, &cls);
  const uint64_t t0 = cls >= 0 ? hvd_now_ns() : 0;
  for (size_t k = 0; k * per < most; k++) {
    const uint64_t g = ++c->arena_seq;
    const int p = (int)(g & 1);
    char *slot = hvd_arena_slot(a, me, p);
    if (g > 2) HVD_CHECK(hvd_shm_wait_all(c, HVD_SHM_GATHERED, g - 2));
    size_t off = 0;
    for (int j = 0; j < n; j++) { /* the pieces the others reduce (ours: from sendbuf) */
      const size_t len = piece(counts[j], per, k);
      char *d = slot + (size_t)j * per * es;
      const char *s = sb + (off + k * per) * es;
      if (len > 0 && (j != me || own_in_slot)) {
        if (kind == HVD_SHM_STORE_STREAMING) hvd_copy_streaming(d, s, len * es);
        else memcpy(d, s, len * es);
      }
      off += counts[j];
    }
    if (kind == HVD_SHM_STORE_STREAMING) hvd_streaming_fence();
    hvd_shm_publish(a, HVD_SHM_POSTED, g);
    const size_t len = piece(counts[me], per, k);
    if (len > 0) {
      char *dst = rb + k * per * es;
      const size_t at = (size_t)me * per * es;
      const char *mine = own_in_slot ? hvd_arena_slot(a, me, p) + at : mine0 + k * per * es;
#define RS_SRC(j) ((j) == me ? mine : hvd_arena_slot(a, (j), p) + at)
      for (int j = 0; j < 2; j++)
        if (j != me) HVD_CHECK(hvd_shm_wait(c, j, HVD_SHM_POSTED, g));
      hvd_reduce3(dst, RS_SRC(0), RS_SRC(1), len, dtype, op);
      for (int j = 2; j < n; j++) {
        if (j != me) HVD_CHECK(hvd_shm_wait(c, j, HVD_SHM_POSTED, g));
        hvd_reduce(dst, RS_SRC(j), len, dtype, op);
      }
#undef RS_SRC
    }
    hvd_shm_publish(a, HVD_SHM_GATHERED, g);
  }
  hvd_shm_stores_record(c, HVD_SHM_STATS_REDUCESCATTER, cls, kind, hvd_now_ns() - t0, total * es);
  return HVD_OK;
}
