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
 */
#ifndef HVD_COLLECTIVES_SHM_SYNC_H
#define HVD_COLLECTIVES_SHM_SYNC_H

#include <sched.h>
#include <stdatomic.h>
#include <time.h>

#include "collectives/comm.h"
#include "common/util.h"
#include "transport/shm_arena.h"
#include "transport/transport.h"

enum { HVD_SHM_POSTED = 0, HVD_SHM_REDUCED = 1, HVD_SHM_GATHERED = 2 };

/* How long a waiting member spins before it yields: HVD_SHM_SPIN_NS when every local
 * rank can have a core (a peer's chunk takes tens of µs to copy, and on a busy host a
 * yield hands the core to another process for a whole time slice), only
 * HVD_SHM_SPINS_MIN pauses (~10-30 ns each) when ranks outnumber cores (the peer we
 * wait for may need this very core). */
#define HVD_SHM_SPIN_NS 50000ull
#define HVD_SHM_SPINS_MIN 16u
/* After this long, yielding turns into sleeps growing to 1 ms. */
#define HVD_SHM_YIELD_NS 5000000ull

static inline void hvd_shm_publish(const hvd_arena_t *a, int counter, uint64_t g) {
  atomic_store_explicit(&hvd_arena_ctrl(a, a->me)->c[counter].v, g, memory_order_release);
}

static inline int hvd_shm_reached(const hvd_arena_t *a, int j, int counter, uint64_t g) {
  return atomic_load_explicit(&hvd_arena_ctrl(a, j)->c[counter].v, memory_order_acquire) >= g;
}

/* Wait until member j's counter reaches at_least. Spins (see above), then yields
 * (several ranks may share a core), then sleeps with a growing interval up to 1 ms;
 * gives up with HVD_ERR_ABORTED when the transport's abort flag is set (a peer died:
 * the launcher told us). */
static inline hvd_status_t hvd_shm_wait(const hvd_comm_t *c, int j, int counter,
                                        uint64_t at_least) {
  const hvd_arena_t *a = c->arena;
  if (hvd_shm_reached(a, j, counter, at_least)) return HVD_OK;
  const uint64_t start = hvd_now_ns();
  long sleep_ns = 1000;
  int spinning = 1;
  for (unsigned spins = 0;; spins++) {
    if (hvd_shm_reached(a, j, counter, at_least)) return HVD_OK;
    if (spinning) {
      if (spins < HVD_SHM_SPINS_MIN ||
          (!a->oversubscribed && ((spins & 63) != 0 || hvd_now_ns() - start < HVD_SHM_SPIN_NS))) {
        __builtin_ia32_pause();
        continue;
      }
      spinning = 0;
    }
    if ((spins & 63) == 0 && c->tp && c->tp->abort && atomic_load(c->tp->abort)) {
      hvd_err_set(&c->tp->err, "aborted while waiting for local rank %d (shared memory)",
                  a->ranks[j]);
      return HVD_ERR_ABORTED;
    }
    uint64_t waited = hvd_now_ns() - start;
    if (waited < HVD_SHM_YIELD_NS) {
      sched_yield();
    } else {
      struct timespec ts = {0, sleep_ns};
      nanosleep(&ts, NULL);
      if (sleep_ns < 1000000) sleep_ns *= 2;
    }
  }
}

/* Wait for every other member's counter (GATHERED before reusing a slot). */
static inline hvd_status_t hvd_shm_wait_all(const hvd_comm_t *c, int counter, uint64_t at_least) {
  const hvd_arena_t *a = c->arena;
  for (int j = 0; j < a->n; j++)
    if (j != a->me) HVD_CHECK(hvd_shm_wait(c, j, counter, at_least));
  return HVD_OK;
}

#endif
