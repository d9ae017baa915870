/*
 * Bruck allgather(v) arithmetic, pure functions (no I/O), unit-tested alone
 * (tests/unit/test_bruck.c).
 *
 * Each rank r keeps the blocks in rotated order: position i holds block (r + i) mod n,
 * so its own block is at position 0. In step k (dist = 2^k, for dist < n) rank r sends
 * its positions [0, cnt) to r - dist and receives positions [dist, dist + cnt) from
 * r + dist, where cnt = min(dist, n - dist): the sender's positions [0, cnt) are blocks
 * r + dist ... r + dist + cnt - 1, which are exactly the receiver's positions
 * [dist, dist + cnt). After ceil(log2 n) steps every rank holds positions [0, n), and
 * one rotation puts the blocks in member order. Works for every n (no fold), with
 * ceil(log2 n) messages per rank and (n-1)/n of the total received, like the ring.
 */
#ifndef HVD_COLLECTIVES_BRUCK_H
#define HVD_COLLECTIVES_BRUCK_H

#include <stddef.h>

/* Steps: ceil(log2 n); 0 for n == 1. */
static inline int hvd_bruck_steps(int n) {
  int k = 0;
  for (long d = 1; d < n; d *= 2) k++;
  return k;
}

static inline int hvd_bruck_dist(int step) { return 1 << step; }

/* Blocks moved in step `step`: min(dist, n - dist). */
static inline int hvd_bruck_nblocks(int n, int step) {
  int d = hvd_bruck_dist(step);
  return d < n - d ? d : n - d;
}

static inline int hvd_bruck_send_to(int r, int n, int step) {
  return (int)(((long)r - hvd_bruck_dist(step) % n + n) % n);
}
static inline int hvd_bruck_recv_from(int r, int n, int step) {
  return (int)(((long)r + hvd_bruck_dist(step)) % n);
}

/* Block at rotated position i of rank r. */
static inline int hvd_bruck_block(int r, int n, int i) { return (int)(((long)r + i) % n); }

/* Elements before rotated position i of rank r (blocks of sizes counts[0..n)). The
 * receiver of a step writes at its offset of position dist; the element count of a
 * range of positions [a, b) is offset(b) - offset(a). */
static inline size_t hvd_bruck_offset(const size_t *counts, int n, int r, int i) {
  size_t off = 0;
  for (int j = 0; j < i; j++) off += counts[hvd_bruck_block(r, n, j)];
  return off;
}

#endif
