/*
 * Binomial tree arithmetic, pure functions (no I/O), unit-tested alone
 * (tests/unit/test_tree.c).
 *
 * Ranks are renumbered relative to the root: v = (r - root) mod n, so the root is 0.
 * The parent of v > 0 is v with its lowest set bit cleared; the children of v are
 * v + m for m = 1, 2, 4, ... below lowbit(v) (below n for the root) with v + m < n.
 * The tree has depth ceil(log2 n). A reduce receives from children in increasing m
 * (smallest subtree first) and then sends to the parent; a broadcast receives from the
 * parent and sends to children in decreasing m (largest subtree first), as in MPICH.
 */
#ifndef HVD_COLLECTIVES_TREE_H
#define HVD_COLLECTIVES_TREE_H

static inline int hvd_binom_rel(int rank, int root, int n) {
  return ((rank - root) % n + n) % n;
}
static inline int hvd_binom_abs(int v, int root, int n) { return (v + root) % n; }

/* Parent of relative rank v, or -1 for the root. */
static inline int hvd_binom_parent(int v) { return v == 0 ? -1 : (v & (v - 1)); }

/* Children of v are v + m for powers of two m < hvd_binom_child_limit(v, n) with
 * v + m < n. */
static inline int hvd_binom_child_limit(int v, int n) {
  if (v != 0) return v & -v; /* lowest set bit */
  int m = 1;
  while (m < n) m *= 2;
  return m;
}

/* Number of children of v. */
static inline int hvd_binom_nchildren(int v, int n) {
  int k = 0, lim = hvd_binom_child_limit(v, n);
  for (int m = 1; m < lim && v + m < n; m *= 2) k++;
  return k;
}

#endif
