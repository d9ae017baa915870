/*
 * Ring arithmetic, pure functions (no I/O), unit-tested alone.
 *
 * A vector of `count` elements is cut into n = ranks blocks as evenly as possible:
 * the first (count % n) blocks get one element more. In reduce-scatter step s
 * (0 <= s < n-1) rank r sends block (r - s) mod n to r+1 and receives block
 * (r - s - 1) mod n from r-1, reducing it into its own copy; afterwards rank r owns
 * the fully reduced block (r + 1) mod n. In allgather step s it sends block
 * (r + 1 - s) mod n and receives block (r - s) mod n.
 */
#ifndef HVD_COLLECTIVES_RING_H
#define HVD_COLLECTIVES_RING_H

#include <stddef.h>

static inline int hvd_ring_next(int rank, int n) { return (rank + 1) % n; }
static inline int hvd_ring_prev(int rank, int n) { return (rank - 1 + n) % n; }
static inline int hvd_mod(int a, int n) { return ((a % n) + n) % n; }

/* First element of block b. */
static inline size_t hvd_block_offset(size_t count, int n, int b) {
  size_t q = count / (size_t)n, r = count % (size_t)n;
  size_t ub = (size_t)b;
  return ub * q + (ub < r ? ub : r);
}
static inline size_t hvd_block_count(size_t count, int n, int b) {
  size_t q = count / (size_t)n, r = count % (size_t)n;
  return q + ((size_t)b < r ? 1 : 0);
}

static inline int hvd_ring_rs_send_block(int rank, int n, int step) {
  return hvd_mod(rank - step, n);
}
static inline int hvd_ring_rs_recv_block(int rank, int n, int step) {
  return hvd_mod(rank - step - 1, n);
}
static inline int hvd_ring_ag_send_block(int rank, int n, int step) {
  return hvd_mod(rank + 1 - step, n);
}
static inline int hvd_ring_ag_recv_block(int rank, int n, int step) {
  return hvd_mod(rank - step, n);
}

/* Allgather(v) where rank r starts with block r (hvd_allgatherv_ring): step s sends
 * block (r - s) and receives block (r - s - 1); after n-1 steps every block is in. */
static inline int hvd_ring_gather_send_block(int rank, int n, int step) {
  return hvd_mod(rank - step, n);
}
static inline int hvd_ring_gather_recv_block(int rank, int n, int step) {
  return hvd_mod(rank - step - 1, n);
}

/* Reduce-scatter that leaves rank r owning block r (hvd_reducescatter_ring): the
 * allreduce pattern shifted by one. Step s sends block (r - s - 1) and receives and
 * reduces block (r - s - 2); the last step (s = n-2) receives block r. */
static inline int hvd_ring_scatter_send_block(int rank, int n, int step) {
  return hvd_mod(rank - step - 1, n);
}
static inline int hvd_ring_scatter_recv_block(int rank, int n, int step) {
  return hvd_mod(rank - step - 2, n);
}

/* Blocks of explicit sizes counts[0..n) packed in order (allgatherv, reduce-scatter):
 * offset of block b, and, walking the ring backwards as those collectives do, the
 * offset of block b-1 (mod n) from the offset of block b, in O(1). */
static inline size_t hvd_counts_offset(const size_t *counts, int b) {
  size_t off = 0;
  for (int i = 0; i < b; i++) off += counts[i];
  return off;
}
static inline size_t hvd_counts_prev_offset(const size_t *counts, int n, int b, size_t off_b,
                                            size_t total) {
  return b == 0 ? total - counts[n - 1] : off_b - counts[b - 1];
}

#endif
