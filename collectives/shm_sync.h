/*
 * Synchronisation of the same-host shared-memory collectives (allreduce_shm.c,
 * shm_coll.c) through the arena's per-member counters (transport/shm_arena.h).
 *
 * All of them run in rounds numbered by the communicator's arena_seq, which every
 * member advances alike; round g uses the slots of parity g & 1. Each member's
 * counters only grow:
 *   POSTED   = g: this member's slot of round g holds its data for that round;
 *   REDUCED  = g: (allreduce) its reduced sub-slice of round g is in its slot;
 *   GATHERED = g: it has read everything it needs from the others' slots of round g.
 * A member writes its slot for round g only after every other member's GATHERED
 * reached g - 2 (nobody still reads the previous use of that slot), and stores
 * GATHERED = g at the end of every round it takes part in, whether it read anything
 * or not, so that rule holds across algorithms. Stores are release, loads acquire.
 *
 * Waiting: spin first (HVD_SHM_SPIN_NS when every local rank can have a core: a
 * peer's chunk takes tens of µs to copy; only HVD_SHM_SPINS_MIN pauses when ranks
 * outnumber cores, since the peer we wait for may need this very core, and then
 * sched_yield() for up to HVD_SHM_YIELD_NS: the cheapest hand-over to a co-located
 * peer), then block in futex(2) on the counter's word in shared memory. A blocked
 * waiter counts itself in the owner's waiter count for that counter (counter line +
 * HVD_SHM_WAITERS); a publish that sees a waiter wakes them (a seq_cst store and load
 * when nobody waits). Blocking bounds what yielding alone cannot: a yield does
 * not run the peer while the scheduler considers the yielder the only eligible task
 * (EEVDF), which left oversubscribed ranks polling for a time slice (medians of
 * 300 µs in some runs). The futex sleeps time out every HVD_SHM_SLEEP_NS to check the
 * abort flag.
 */
#ifndef HVD_COLLECTIVES_SHM_SYNC_H
#define HVD_COLLECTIVES_SHM_SYNC_H

#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "collectives/comm.h"
#include "common/util.h"
#include "transport/shm_arena.h"
#include "transport/transport.h"

enum { HVD_SHM_POSTED = 0, HVD_SHM_REDUCED = 1, HVD_SHM_GATHERED = 2 };
/* Counter line k + HVD_SHM_WAITERS holds how many members sleep on counter k. */
#define HVD_SHM_WAITERS 4

#define HVD_SHM_SPIN_NS 50000ull
#define HVD_SHM_SPINS_MIN 16u
#define HVD_SHM_YIELD_NS 200000ull
#define HVD_SHM_SLEEP_NS 2000000l

/* The futex word of a counter: its low 32 bits (x86-64 is little-endian). Counters
 * grow by one per round, so the word changes whenever the counter does. */
static inline uint32_t *hvd_shm_word(_Atomic uint64_t *v) { return (uint32_t *)(void *)v; }

static inline void hvd_shm_publish(const hvd_arena_t *a, int counter, uint64_t g) {
  hvd_arena_ctrl_t *me = hvd_arena_ctrl(a, a->me);
  /* seq_cst store and load (not a release store and a fence, which TSan does not
   * model): with the waiter's seq_cst increment and load, either it sees the new
   * value or we see it counted. */
  atomic_store_explicit(&me->c[counter].v, g, memory_order_seq_cst);
  if (atomic_load_explicit(&me->c[counter + HVD_SHM_WAITERS].v, memory_order_seq_cst) != 0)
    syscall(SYS_futex, hvd_shm_word(&me->c[counter].v), FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

static inline int hvd_shm_reached(const hvd_arena_t *a, int j, int counter, uint64_t g) {
  return atomic_load_explicit(&hvd_arena_ctrl(a, j)->c[counter].v, memory_order_acquire) >= g;
}

/* Wait until member j's counter reaches at_least (see above); HVD_ERR_ABORTED when
 * the transport's abort flag is set (a peer died: the launcher told us). */
static inline hvd_status_t hvd_shm_wait(const hvd_comm_t *c, int j, int counter,
                                        uint64_t at_least) {
  const hvd_arena_t *a = c->arena;
  if (hvd_shm_reached(a, j, counter, at_least)) return HVD_OK;
  const uint64_t start = hvd_now_ns();
  for (unsigned spins = 0;; spins++) {
    if (hvd_shm_reached(a, j, counter, at_least)) return HVD_OK;
    if (spins < HVD_SHM_SPINS_MIN ||
        (!a->oversubscribed && ((spins & 63) != 0 || hvd_now_ns() - start < HVD_SHM_SPIN_NS)))
      __builtin_ia32_pause();
    else if (a->oversubscribed && hvd_now_ns() - start < HVD_SHM_YIELD_NS)
      sched_yield();
    else
      break;
  }
  hvd_arena_ctrl_t *owner = hvd_arena_ctrl(a, j);
  _Atomic uint64_t *v = &owner->c[counter].v, *waiters = &owner->c[counter + HVD_SHM_WAITERS].v;
  for (;;) {
    if (c->tp && c->tp->abort && atomic_load(c->tp->abort)) {
      hvd_err_set(&c->tp->err, "aborted while waiting for local rank %d (shared memory)",
                  a->ranks[j]);
      return HVD_ERR_ABORTED;
    }
    atomic_fetch_add(waiters, 1); /* seq_cst: before the counter load below */
    uint64_t cur = atomic_load(v);
    if (cur < at_least) {
      struct timespec ts = {0, HVD_SHM_SLEEP_NS};
      syscall(SYS_futex, hvd_shm_word(v), FUTEX_WAIT, (uint32_t)cur, &ts, NULL, 0);
    }
    atomic_fetch_sub(waiters, 1);
    if (hvd_shm_reached(a, j, counter, at_least)) return HVD_OK;
  }
}

/* Wait for every other member's counter (GATHERED before reusing a slot). */
static inline hvd_status_t hvd_shm_wait_all(const hvd_comm_t *c, int counter, uint64_t at_least) {
  const hvd_arena_t *a = c->arena;
  for (int j = 0; j < a->n; j++)
    if (j != a->me) HVD_CHECK(hvd_shm_wait(c, j, counter, at_least));
  return HVD_OK;
}

/* ---- slot stores: cached or streaming (allreduce_shm.c, "Slot stores") ---------------
 * The allreduce and the reduce-scatter copy into their slots data the other members
 * read; from HVD_SHM_STREAM_MIN bytes they copy with cached or streaming stores, per
 * size class (powers of two from HVD_SHM_STREAM_MIN) the kind that measured cheaper per
 * byte, and every HVD_SHM_STORES_PROBE-th call the other kind. */
#define HVD_SHM_STREAM_MIN (64u * 1024)
#define HVD_SHM_STORES_PROBE 32
/* Which statistics (hvd_comm_t.shm_stores[which]). */
enum { HVD_SHM_STATS_ALLREDUCE = 0, HVD_SHM_STATS_REDUCESCATTER = 1 };

/* The kind of stores for a call moving `bytes`; *cls gets the size class to record the
 * call's time in (hvd_shm_stores_record), -1 when nothing is measured (small, forced,
 * or prescaled: the prescale is applied in the slot, which streaming would evict). */
static inline int hvd_shm_stores_pick(hvd_comm_t *c, int which, size_t bytes, double prescale,
                                      int *cls) {
  *cls = -1;
  if (prescale != 1.0 || bytes < HVD_SHM_STREAM_MIN) return HVD_SHM_STORE_CACHED;
  if (c->arena->stores != HVD_SHM_STORES_AUTO) return c->arena->stores;
  int k = 0;
  for (size_t b = bytes / HVD_SHM_STREAM_MIN; b > 1 && k < HVD_SHM_STORE_CLASSES - 1; b >>= 1)
    k++;
  *cls = k;
  const uint64_t i = c->shm_stores[which][k].calls++;
  if (i < 4) return (int)(i & 1); /* two of each first */
  const double *cost = c->shm_stores[which][k].cost;
  const int best = cost[HVD_SHM_STORE_STREAMING] < cost[HVD_SHM_STORE_CACHED]
                       ? HVD_SHM_STORE_STREAMING
                       : HVD_SHM_STORE_CACHED;
  return i % HVD_SHM_STORES_PROBE == 0 ? 1 - best : best;
}

/* Record a call's time: each kind's cost per byte is the mean of its previous value and
 * the new one, a sample capped at twice the previous value (a late peer is not the
 * stores' doing). */
static inline void hvd_shm_stores_record(hvd_comm_t *c, int which, int cls, int kind, uint64_t ns,
                                         size_t bytes) {
  if (cls < 0) return;
  double *cost = &c->shm_stores[which][cls].cost[kind], t = (double)ns / (double)bytes;
  if (*cost > 0 && t > 2 * *cost) t = 2 * *cost;
  *cost = *cost > 0 ? (*cost + t) / 2 : t;
}

#endif
