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
 * Waiting spins briefly, then yields (several ranks may share a core), then sleeps
 * with a growing interval up to 1 ms, and gives up with HVD_ERR_ABORTED when the
 * transport's abort flag is set (a peer died: the launcher told us).
 */
#include <sched.h>
#include <string.h>
#include <time.h>

#include "collectives/coll.h"
#include "collectives/reduce.h"
#include "collectives/ring.h"
#include "common/util.h"
#include "transport/shm_arena.h"

enum { POSTED = 0, REDUCED = 1, GATHERED = 2 };

static hvd_status_t wait_for(const hvd_comm_t *c, const hvd_arena_t *a, int j, int counter,
                             uint64_t at_least) {
  _Atomic uint64_t *v = &hvd_arena_ctrl(a, j)->c[counter].v;
  if (atomic_load_explicit(v, memory_order_acquire) >= at_least) return HVD_OK;
  uint64_t start = hvd_now_ns();
  long sleep_ns = 1000;
  for (unsigned spins = 0;; spins++) {
    if (atomic_load_explicit(v, memory_order_acquire) >= at_least) return HVD_OK;
    if (spins < 256) {
      __builtin_ia32_pause();
      continue;
    }
    if ((spins & 63) == 0 && c->tp && c->tp->abort && atomic_load(c->tp->abort)) {
      hvd_err_set(&c->tp->err, "aborted while waiting for local rank %d (shared memory)",
                  a->ranks[j]);
      return HVD_ERR_ABORTED;
    }
    uint64_t waited = hvd_now_ns() - start;
    if (waited < 5000000ull) {
      sched_yield();
    } else {
      struct timespec ts = {0, sleep_ns};
      nanosleep(&ts, NULL);
      if (sleep_ns < 1000000) sleep_ns *= 2;
    }
  }
}

hvd_status_t hvd_allreduce_shm(hvd_comm_t *c, const void *sendbuf, void *recvbuf, size_t count,
                               hvd_dtype_t dtype, hvd_op_t op) {
  hvd_arena_t *a = c->arena;
  const int n = a->n, me = a->me;
  const size_t es = hvd_dtype_size(dtype);
  const size_t chunk = a->slot_bytes / es;
  const char *in = sendbuf;
  char *out = recvbuf;
  hvd_arena_ctrl_t *mine = hvd_arena_ctrl(a, me);
  c->seq++;
  for (size_t off = 0; off < count; off += chunk) {
    const size_t len = HVD_MIN(chunk, count - off);
    const uint64_t g = ++c->arena_seq;
    const int p = (int)(g & 1);
    char *slot = hvd_arena_slot(a, me, p);
    hvd_status_t rc;

    if (g > 2)
      for (int j = 0; j < n; j++)
        if (j != me && (rc = wait_for(c, a, j, GATHERED, g - 2)) != HVD_OK) return rc;
    memcpy(slot, in + off * es, len * es);
    atomic_store_explicit(&mine->c[POSTED].v, g, memory_order_release);

    const size_t lo = hvd_block_offset(len, n, me), cnt = hvd_block_count(len, n, me);
    if (cnt > 0) {
      char *dst = slot + lo * es;
      if (me != 0) {
        if ((rc = wait_for(c, a, 0, POSTED, g)) != HVD_OK) return rc;
        hvd_reduce3(dst, hvd_arena_slot(a, 0, p) + lo * es, dst, cnt, dtype, op);
      }
      for (int j = 1; j < n; j++) {
        if (j == me) continue;
        if ((rc = wait_for(c, a, j, POSTED, g)) != HVD_OK) return rc;
        hvd_reduce(dst, hvd_arena_slot(a, j, p) + lo * es, cnt, dtype, op);
      }
    }
    atomic_store_explicit(&mine->c[REDUCED].v, g, memory_order_release);

    for (int k = 0; k < n; k++) {
      const int j = (me + k) % n;
      const size_t lj = hvd_block_offset(len, n, j), cj = hvd_block_count(len, n, j);
      if (cj == 0) continue;
      if (j != me && (rc = wait_for(c, a, j, REDUCED, g)) != HVD_OK) return rc;
      memcpy(out + (off + lj) * es, hvd_arena_slot(a, j, p) + lj * es, cj * es);
    }
    atomic_store_explicit(&mine->c[GATHERED].v, g, memory_order_release);
  }
  return HVD_OK;
}
