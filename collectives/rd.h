/*
 * Recursive doubling and dissemination arithmetic, pure functions (no I/O),
 * unit-tested alone (tests/unit/test_rd.c).
 *
 * Recursive doubling needs a power of two p' = 2^floor(log2 n) of participants. The
 * rem = n - p' extra ranks are folded in first: among ranks 0..2*rem-1, each even
 * rank r sends its whole vector to r+1 and sits out; odd rank r reduces it and takes
 * part as "new rank" r/2. Ranks >= 2*rem take part as new rank r - rem. In round k
 * (mask = 2^k) new rank v exchanges with new rank v ^ mask. At the end each odd rank
 * r < 2*rem sends the result back to r-1.
 *
 * Dissemination (barrier): in round k rank r signals r + 2^k and waits for r - 2^k
 * (mod n); after ceil(log2 n) rounds every rank has heard, transitively, from all.
 */
#ifndef HVD_COLLECTIVES_RD_H
#define HVD_COLLECTIVES_RD_H

/* Largest power of two <= n (n >= 1). */
static inline int hvd_rd_pof2(int n) {
  int p = 1;
  while (p <= n / 2) p *= 2;
  return p;
}

/* Ranks folded into a partner: n - pof2. */
static inline int hvd_rd_rem(int n) { return n - hvd_rd_pof2(n); }

/* New rank of rank r in the power-of-two phase, or -1 if r sits it out. */
static inline int hvd_rd_newrank(int r, int n) {
  int rem = hvd_rd_rem(n);
  if (r < 2 * rem) return (r % 2) ? r / 2 : -1;
  return r - rem;
}

/* Real rank of new rank v. */
static inline int hvd_rd_oldrank(int v, int n) {
  int rem = hvd_rd_rem(n);
  return v < rem ? 2 * v + 1 : v + rem;
}

/* Partner in the fold-in / fold-out steps: r+1 for an even r < 2*rem (it sends),
 * r-1 for an odd r < 2*rem (it receives), -1 for ranks that are not folded. */
static inline int hvd_rd_fold_partner(int r, int n) {
  if (r >= 2 * hvd_rd_rem(n)) return -1;
  return (r % 2) ? r - 1 : r + 1;
}

/* Real rank of r's partner in the round with the given mask (r must take part). */
static inline int hvd_rd_peer(int r, int n, int mask) {
  return hvd_rd_oldrank(hvd_rd_newrank(r, n) ^ mask, n);
}

/* Rounds of the dissemination barrier: ceil(log2 n); 0 for n == 1. */
static inline int hvd_dissem_rounds(int n) {
  int k = 0;
  for (long d = 1; d < n; d *= 2) k++;
  return k;
}
static inline int hvd_dissem_to(int r, int n, int round) {
  return (int)(((long)r + (1L << round)) % n);
}
static inline int hvd_dissem_from(int r, int n, int round) {
  long d = (1L << round) % n;
  return (int)(((long)r - d + n) % n);
}

#endif
