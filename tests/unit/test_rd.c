/*
 * Recursive-doubling and dissemination arithmetic (collectives/rd.h), alone: a
 * symbolic run of the allreduce with the non-power-of-two fold in which each rank's
 * value is the set of ranks it has combined (reductions must join disjoint sets and
 * end complete everywhere), and of the dissemination barrier's knowledge.
 */
#include <criterion/criterion.h>
#include <stdint.h>

#include "collectives/rd.h"

#define MAXN 64

Test(rd, pof2_and_rank_maps) {
  for (int n = 1; n <= 300; n++) {
    int p = hvd_rd_pof2(n);
    cr_assert(p >= 1 && (p & (p - 1)) == 0 && p <= n && n < 2 * p, "n %d: pof2 %d", n, p);
    cr_assert_eq(hvd_rd_rem(n), n - p);
    int seen[300] = {0}, parts = 0;
    for (int r = 0; r < n; r++) {
      int v = hvd_rd_newrank(r, n);
      int f = hvd_rd_fold_partner(r, n);
      if (f >= 0) cr_assert_eq(hvd_rd_fold_partner(f, n), r, "fold partners pair up");
      if (v < 0) {
        cr_assert(f == r + 1, "n %d: rank %d sits out but has no partner above", n, r);
        continue;
      }
      cr_assert(v < p && !seen[v], "n %d: new rank %d of %d", n, v, r);
      seen[v] = 1;
      parts++;
      cr_assert_eq(hvd_rd_oldrank(v, n), r);
    }
    cr_assert_eq(parts, p);
  }
}

Test(rd, allreduce_schedule_combines_everything_once) {
  for (int n = 1; n <= MAXN; n++) {
    uint64_t val[MAXN];
    for (int r = 0; r < n; r++) val[r] = 1ull << r;
    /* fold in */
    for (int r = 0; r < n; r++) {
      int f = hvd_rd_fold_partner(r, n);
      if (f >= 0 && r % 2 == 1) {
        cr_assert_eq(val[r] & val[f], 0);
        val[r] |= val[f];
      }
    }
    int p = hvd_rd_pof2(n);
    for (int mask = 1; mask < p; mask *= 2) {
      uint64_t next[MAXN];
      for (int r = 0; r < n; r++) next[r] = val[r];
      for (int r = 0; r < n; r++) {
        if (hvd_rd_newrank(r, n) < 0) continue;
        int q = hvd_rd_peer(r, n, mask);
        cr_assert(q != r && q >= 0 && q < n);
        cr_assert_eq(hvd_rd_peer(q, n, mask), r, "n %d mask %d: %d -> %d not mutual", n, mask,
                     r, q);
        cr_assert(hvd_rd_newrank(q, n) >= 0, "partner sits out");
        cr_assert_eq(val[r] & val[q], 0, "n %d mask %d: counted twice", n, mask);
        next[r] = val[r] | val[q];
      }
      for (int r = 0; r < n; r++) val[r] = next[r];
    }
    /* fold out */
    for (int r = 0; r < n; r++) {
      int f = hvd_rd_fold_partner(r, n);
      if (f >= 0 && r % 2 == 0) val[r] = val[f];
    }
    uint64_t all = n == 64 ? ~0ull : (1ull << n) - 1;
    for (int r = 0; r < n; r++) cr_assert_eq(val[r], all, "n %d rank %d", n, r);
  }
}

Test(rd, dissemination_reaches_everyone) {
  for (int n = 1; n <= MAXN; n++) {
    int rounds = hvd_dissem_rounds(n);
    cr_assert((1L << rounds) >= n && (rounds == 0 || (1L << (rounds - 1)) < n), "n %d", n);
    uint64_t knows[MAXN];
    for (int r = 0; r < n; r++) knows[r] = 1ull << r;
    for (int k = 0; k < rounds; k++) {
      uint64_t next[MAXN];
      for (int r = 0; r < n; r++) {
        int to = hvd_dissem_to(r, n, k), from = hvd_dissem_from(r, n, k);
        cr_assert(to != r && from != r, "n %d round %d: rank %d talks to itself", n, k, r);
        cr_assert_eq(hvd_dissem_from(to, n, k), r, "to/from disagree");
        next[r] = knows[r] | knows[from];
      }
      for (int r = 0; r < n; r++) knows[r] = next[r];
    }
    uint64_t all = n == 64 ? ~0ull : (1ull << n) - 1;
    for (int r = 0; r < n; r++) cr_assert_eq(knows[r], all, "n %d rank %d", n, r);
  }
}
