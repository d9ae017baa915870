/*
 * Scatter + ring allgather broadcast (van de Geijn) arithmetic, pure functions (no
 * I/O), unit-tested alone (tests/unit/test_scatter.c).
 *
 * Ranks are renumbered relative to the root, v = (r - root) mod n (tree.h), and the
 * vector is cut into n blocks as evenly as possible (ring.h: hvd_block_offset/count);
 * block j belongs to relative rank j. Blocks stay where they are in the buffer, so
 * the blocks of any range of relative ranks are contiguous.
 *
 * Scatter: along the binomial tree of tree.h, relative rank v's subtree is the range
 * [v, v + extent(v)) (extent = n for the root, else min(lowbit(v), n - v)). Each
 * member receives its subtree's blocks from its parent in one piece and sends each
 * child c = v + m its subtree's blocks [c, c + extent(c)), largest subtree first.
 *
 * Allgather: the ring of hvd_ring_gather_* over relative ranks (relative v + 1 is
 * absolute r + 1): in step s, v sends block v - s to v + 1 and receives block v - s - 1
 * from v - 1. A member already holds its subtree's blocks after the scatter, so a
 * receive of one of those is skipped, by both sides (the sender computes the same
 * predicate for its successor). The block sent in step s was then either held from
 * the scatter or received in step s - 1. The root receives nothing at all.
 */
#ifndef HVD_COLLECTIVES_SCATTER_H
#define HVD_COLLECTIVES_SCATTER_H

#include "collectives/ring.h"
#include "collectives/tree.h"

/* Number of relative ranks (= blocks) in v's binomial subtree. */
static inline int hvd_scatter_extent(int v, int n) {
  if (v == 0) return n;
  int low = v & -v;
  return low < n - v ? low : n - v;
}

/* Whether relative rank v holds block b after the scatter. */
static inline int hvd_scatter_holds(int v, int n, int b) {
  return b >= v && b < v + hvd_scatter_extent(v, n);
}

/* Ring allgather step s: the block v sends to v + 1 (-1: skipped, the successor holds
 * it) and the block v receives from v - 1 (-1: skipped, v holds it). */
static inline int hvd_scatter_ring_send_block(int v, int n, int step) {
  int b = hvd_ring_gather_send_block(v, n, step);
  return hvd_scatter_holds(hvd_ring_next(v, n), n, b) ? -1 : b;
}
static inline int hvd_scatter_ring_recv_block(int v, int n, int step) {
  int b = hvd_ring_gather_recv_block(v, n, step);
  return hvd_scatter_holds(v, n, b) ? -1 : b;
}

#endif
