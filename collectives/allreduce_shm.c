/*
 * Allreduce among ranks of one host through the shared-memory arena
 * (transport/shm_arena.h): no messages, no system calls, and every byte is touched by
 * one plain copy or one reduction pass, so a chunk stays in cache between steps.
 *
 * The vector is processed in chunks of the arena's slot size, alternating the two
 * slots. For chunk g (the communicator's running chunk number, the same on every
 * member), member m:
 *   1. waits until every member has finished chunk g-2 (its slot of that parity is
 *      free again: counter GATHERED >= g-2), copies into its slot the parts of its
 *      input chunk that the others reduce, and publishes POSTED = g;
 *   2. waits for every member's POSTED >= g and reduces its own sub-slice of the chunk
 *      (the chunk split evenly, collectives/ring.h blocks) from its input and the
 *      others' slots into its own slot, and applies the postscale factor to it;
 *      publishes REDUCED = g;
 *   3. for every member j, waits for REDUCED >= g and copies j's reduced sub-slice into
 *      its output; publishes GATHERED = g.
 * Each sub-slice is computed once, by one member, and copied to all: the result is
 * bit-identical everywhere. Counters are release-stored and acquire-loaded.
 * Copying only what the others read (not the member's own sub-slice, which it reads
 * from its input) saves a copy of 1/n of the vector, and at np = 2 it halves the
 * writes into slot lines the peer has cached, whose invalidation is most of the
 * copy's cost when the two cores do not share a cache (docs/performance.md). With a
 * prescale factor the whole chunk is copied and scaled as before.
 *
 * Slot stores. A member's slot lines are read by the others and rewritten two chunks
 * later. With plain (cached) stores, rewriting a line first takes it back from the
 * caches of the cores that read it, and a reader pulls every line from the writer's
 * cache: cheap when the cores share a cache, most of the time when they do not (this
 * VM's "two speeds", docs/performance.md: 1 MiB took 105-145 us in the fast speed and
 * 320-430 us in the slow one). Streaming stores (hvd_copy_streaming) send the lines
 * towards memory without taking them back first, and the readers load them from
 * memory: 220-270 us in either speed. Neither is better in both speeds, and the speed
 * changes every few seconds, so from HVD_SHM_STREAM_MIN bytes on the allreduce
 * measures: per size class (powers of two) it keeps each kind's time per byte (the
 * mean of the previous value and the new call's), uses the cheaper kind, and every
 * HVD_SHM_STORES_PROBE-th call the other one, to notice when the machine changed.
 * Members count the same calls, so they try the other kind together. Streaming, the
 * others' parts are streamed into the slot, and the own sub-slice is reduced in
 * blocks of HVD_SHM_STREAM_BLOCK bytes into a buffer on the stack (the same
 * operations in the same order as the cached way, so the same bits), scaled there,
 * streamed into the slot and copied to the member's output from there. A prescaled
 * allreduce keeps cached stores; HVD_SHM_STORES (hvd_arena_t.stores) forces a kind.
 * The choice and its statistics are shared with the reduce-scatter (shm_sync.h).
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
 * docs/performance.md ("Same-host arena: thresholds"). */
#define HVD_SHM_DIRECT_BYTES 4096u
/* Slot stores (above; the choice itself: shm_sync.h): the block of the own sub-slice
 * reduced on the stack when streaming (well inside L1). */
#define HVD_SHM_STREAM_BLOCK (16u * 1024)

/* Walks the concatenation of parts[] (offsets in elements): moves bytes between a
 * virtual range and a contiguous buffer. `at` caches the part holding offset `base`,
 * so consecutive ranges cost no search from the start. */
typedef struct cursor {
  const hvd_shm_part_t *parts;
  size_t nparts, es;
  size_t at, base; /* parts[at] starts at element offset base */
} cursor_t;

static void seek(cursor_t *k, size_t off) {
  if (off < k->base) k->at = 0, k->base = 0;
  while (k->at < k->nparts && k->base + k->parts[k->at].count <= off)
    k->base += k->parts[k->at++].count;
}

/* slot <- inputs of [off, off+len) (zeros for parts without input), times pre; copied
 * with the stores of `kind` (pre must be 1 when streaming). */
static void gather_in(cursor_t *k, size_t off, size_t len, char *slot, hvd_dtype_t dt,
                      double pre, int kind) {
  seek(k, off);
  size_t at = k->at, base = k->base, done = 0;
  while (done < len) {
    const hvd_shm_part_t *q = &k->parts[at];
    size_t skip = off + done - base, n = HVD_MIN(q->count - skip, len - done);
    char *d = slot + done * k->es;
    const char *src = (const char *)q->in + skip * k->es;
    if (q->in == NULL) memset(d, 0, n * k->es);
    else if (kind == HVD_SHM_STORE_STREAMING) hvd_copy_streaming(d, src, n * k->es);
    else memcpy(d, src, n * k->es);
    done += n;
    base += q->count;
    at++;
  }
  if (pre != 1.0) hvd_scale(slot, len, dt, pre);
}

/* dst[0, len) <- (x op inputs of [off, off+len)) if x_first, else (inputs op x): a
 * member's own sub-slice reduced straight from its input with one other member's
 * slot data x, member order kept (member 0's data first). Parts without input count
 * as zeros. */
static void reduce_own(cursor_t *k, size_t off, size_t len, char *dst, const char *x,
                       int x_first, hvd_dtype_t dt, hvd_op_t op) {
  seek(k, off);
  size_t at = k->at, base = k->base, done = 0;
  while (done < len) {
    const hvd_shm_part_t *q = &k->parts[at];
    size_t skip = off + done - base, n = HVD_MIN(q->count - skip, len - done);
    char *d = dst + done * k->es;
    const char *in = (const char *)q->in + skip * k->es;
    if (q->in == NULL) {
      memset(d, 0, n * k->es);
      in = d;
    }
    if (x_first) hvd_reduce3(d, x + done * k->es, in, n, dt, op);
    else hvd_reduce3(d, in, x + done * k->es, n, dt, op);
    done += n;
    base += q->count;
    at++;
  }
}

/* outputs of [off, off+len) <- src, times post (parts without output skipped). */
static void scatter_out(cursor_t *k, size_t off, size_t len, const char *src, hvd_dtype_t dt,
                        double post) {
  seek(k, off);
  size_t at = k->at, base = k->base, done = 0;
  while (done < len) {
    const hvd_shm_part_t *q = &k->parts[at];
    size_t skip = off + done - base, n = HVD_MIN(q->count - skip, len - done);
    if (q->out != NULL) {
      char *dst = (char *)q->out + skip * k->es;
      if (dst != src + done * k->es) memcpy(dst, src + done * k->es, n * k->es);
      hvd_scale(dst, n, dt, post); /* in cache: just written */
    }
    done += n;
    base += q->count;
    at++;
  }
}

/* Step 2, once every other member posted: dst[0, m) <- elements [so, so+m) of this
 * member's sub-slice (slot offset so, vector offset base), from the others' slots and,
 * when own, this member's input; otherwise dst already holds its (prescaled) data.
 * Member 0's data comes first. */
static void reduce_sub(hvd_arena_t *a, cursor_t *in, size_t base, size_t so, size_t m, char *dst,
                       int own, int p, hvd_dtype_t dtype, hvd_op_t op) {
  int first = 1; /* dst does not hold the own data yet (own) */
  for (int j = 0; j < a->n; j++) {
    if (j == a->me) continue;
    const char *x = hvd_arena_slot(a, j, p) + so * in->es;
    if (own && first) reduce_own(in, base, m, dst, x, j < a->me, dtype, op);
    else if (j == 0) hvd_reduce3(dst, x, dst, m, dtype, op);
    else hvd_reduce(dst, x, m, dtype, op);
    first = 0;
  }
}

static hvd_status_t allreduce_direct(hvd_comm_t *c, cursor_t *k, size_t len, hvd_dtype_t dtype,
                                     hvd_op_t op, double pre, double post) {
  hvd_arena_t *a = c->arena;
  const int n = a->n, me = a->me;
  const uint64_t g = ++c->arena_seq;
  const int p = (int)(g & 1);
  _Alignas(64) char tmp[HVD_SHM_DIRECT_BYTES];
  /* One output: reduce straight into it. */
  char *out = k->nparts == 1 && k->parts[0].out != NULL ? k->parts[0].out : tmp;
  if (g > 2) HVD_CHECK(hvd_shm_wait_all(c, HVD_SHM_GATHERED, g - 2));
  gather_in(k, 0, len, hvd_arena_slot(a, me, p), dtype, pre, HVD_SHM_STORE_CACHED);
  hvd_shm_publish(a, HVD_SHM_POSTED, g);
  for (int j = 0; j < 2; j++)
    if (j != me) HVD_CHECK(hvd_shm_wait(c, j, HVD_SHM_POSTED, g));
  hvd_reduce3(out, hvd_arena_slot(a, 0, p), hvd_arena_slot(a, 1, p), len, dtype, op);
  for (int j = 2; j < n; j++) {
    if (j != me) HVD_CHECK(hvd_shm_wait(c, j, HVD_SHM_POSTED, g));
    hvd_reduce(out, hvd_arena_slot(a, j, p), len, dtype, op);
  }
  hvd_shm_publish(a, HVD_SHM_GATHERED, g);
  scatter_out(k, 0, len, out, dtype, post);
  return HVD_OK;
}

hvd_status_t hvd_allreduce_shm_parts(hvd_comm_t *c, const hvd_shm_part_t *parts, size_t nparts,
                                     hvd_dtype_t dtype, hvd_op_t op, double prescale,
                                     double postscale) {
  hvd_arena_t *a = c->arena;
  const int n = a->n, me = a->me;
  const size_t es = hvd_dtype_size(dtype);
  const size_t chunk = a->slot_bytes / es;
  size_t count = 0;
  for (size_t i = 0; i < nparts; i++) count += parts[i].count;
  cursor_t in = {.parts = parts, .nparts = nparts, .es = es}, out = in;
  c->seq++;
  if (n > 1 && count > 0 && count * es <= HVD_MIN(HVD_SHM_DIRECT_BYTES, a->slot_bytes))
    return allreduce_direct(c, &in, count, dtype, op, prescale, postscale);
  int cls;
  const int kind = hvd_shm_stores_pick(c, HVD_SHM_STATS_ALLREDUCE, count * es, prescale, &cls);
  const uint64_t t0 = cls >= 0 ? hvd_now_ns() : 0;
  for (size_t off = 0; off < count; off += chunk) {
    const size_t len = HVD_MIN(chunk, count - off);
    const uint64_t g = ++c->arena_seq;
    const int p = (int)(g & 1);
    char *slot = hvd_arena_slot(a, me, p);
    hvd_status_t rc;

    const size_t lo = hvd_block_offset(len, n, me), cnt = hvd_block_count(len, n, me);
    const int own = prescale == 1.0 && cnt > 0; /* own sub-slice read from the input */
    if (g > 2 && (rc = hvd_shm_wait_all(c, HVD_SHM_GATHERED, g - 2)) != HVD_OK) return rc;
    if (!own) {
      gather_in(&in, off, len, slot, dtype, prescale, kind);
    } else {
      gather_in(&in, off, lo, slot, dtype, 1.0, kind);
      gather_in(&in, off + lo + cnt, len - lo - cnt, slot + (lo + cnt) * es, dtype, 1.0, kind);
    }
    if (kind == HVD_SHM_STORE_STREAMING) hvd_streaming_fence();
    hvd_shm_publish(a, HVD_SHM_POSTED, g);

    if (cnt > 0) {
      for (int j = 0; j < n; j++)
        if (j != me && (rc = hvd_shm_wait(c, j, HVD_SHM_POSTED, g)) != HVD_OK) return rc;
    }
    if (cnt > 0 && kind == HVD_SHM_STORE_STREAMING) {
      /* block by block on the stack, scaled there, streamed into the slot and copied
       * to this member's outputs (the slot's lines are no longer cached) */
      _Alignas(64) char tmp[HVD_SHM_STREAM_BLOCK];
      for (size_t o = 0, blk = sizeof tmp / es; o < cnt; o += blk) {
        const size_t m = HVD_MIN(blk, cnt - o);
        reduce_sub(a, &in, off + lo + o, lo + o, m, tmp, own, p, dtype, op);
        hvd_scale(tmp, m, dtype, postscale);
        hvd_copy_streaming(slot + (lo + o) * es, tmp, m * es);
        scatter_out(&out, off + lo + o, m, tmp, dtype, 1.0);
      }
      hvd_streaming_fence();
    } else if (cnt > 0) {
      char *dst = slot + lo * es;
      reduce_sub(a, &in, off + lo, lo, cnt, dst, own, p, dtype, op);
      /* postscale once per element, by its reducer, while the sub-slice is in cache:
       * 1/n of the vector per member instead of a pass over the whole output */
      hvd_scale(dst, cnt, dtype, postscale);
    }
    hvd_shm_publish(a, HVD_SHM_REDUCED, g);

    for (int k = 0; k < n; k++) {
      const int j = (me + k) % n;
      const size_t lj = hvd_block_offset(len, n, j), cj = hvd_block_count(len, n, j);
      if (cj == 0 || (j == me && kind == HVD_SHM_STORE_STREAMING)) continue; /* own: written */
      if (j != me && (rc = hvd_shm_wait(c, j, HVD_SHM_REDUCED, g)) != HVD_OK) return rc;
      scatter_out(&out, off + lj, cj, hvd_arena_slot(a, j, p) + lj * es, dtype, 1.0);
    }
    hvd_shm_publish(a, HVD_SHM_GATHERED, g);
  }
  hvd_shm_stores_record(c, HVD_SHM_STATS_ALLREDUCE, cls, kind, hvd_now_ns() - t0, count * es);
  return HVD_OK;
}

hvd_status_t hvd_allreduce_shm(hvd_comm_t *c, const void *sendbuf, void *recvbuf, size_t count,
                               hvd_dtype_t dtype, hvd_op_t op) {
  const hvd_shm_part_t part = {.in = sendbuf, .out = recvbuf, .count = count};
  return hvd_allreduce_shm_parts(c, &part, 1, dtype, op, 1.0, 1.0);
}
