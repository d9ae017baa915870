/*
 * Scatter + ring allgather broadcast arithmetic (collectives/scatter.h), alone:
 * subtree extents match the binomial tree, and a symbolic run of the scatter and the
 * ring (with its skipped receives) from every root leaves every member with every
 * block, each sent block held by its sender, no block received twice, both sides
 * agreeing on every skip, and the root receiving nothing.
 */
#include <criterion/criterion.h>
#include <stdint.h>

#include "collectives/scatter.h"

#define MAXN 64

static uint64_t range(int a, int b) { /* bits [a, b) */
  uint64_t hi = b >= 64 ? ~0ull : (1ull << b) - 1;
  return hi & ~((1ull << a) - 1);
}

Test(scatter, extent_is_the_subtree) {
  for (int n = 1; n <= MAXN; n++)
    for (int v = 0; v < n; v++) {
      uint64_t sub = 0;
      for (int u = 0; u < n; u++)
        for (int w = u; w >= 0; w = hvd_binom_parent(w))
          if (w == v) sub |= 1ull << u;
      int e = hvd_scatter_extent(v, n);
      cr_assert_eq(sub, range(v, v + e), "n %d: subtree of %d is not [%d, %d)", n, v, v,
                   v + e);
      for (int b = 0; b < n; b++)
        cr_assert_eq(hvd_scatter_holds(v, n, b), (int)(sub >> b & 1));
    }
}

Test(scatter, symbolic_broadcast) {
  for (int n = 1; n <= MAXN; n++) {
    uint64_t all = range(0, n);
    uint64_t hold[MAXN] = {0};
    int received_blocks = 0;
    /* scatter: parents come before children in increasing v */
    hold[0] = all;
    for (int v = 1; v < n; v++) {
      int p = hvd_binom_parent(v);
      uint64_t want = range(v, v + hvd_scatter_extent(v, n));
      cr_assert_eq(hold[p] & want, want, "n %d: parent %d lacks %d's subtree", n, p, v);
      hold[v] = want;
    }
    /* ring */
    for (int s = 0; s < n - 1; s++) {
      uint64_t next[MAXN];
      for (int v = 0; v < n; v++) next[v] = hold[v];
      for (int v = 0; v < n; v++) {
        int to = hvd_ring_next(v, n);
        int sb = hvd_scatter_ring_send_block(v, n, s);
        int rb = hvd_scatter_ring_recv_block(to, n, s);
        cr_assert_eq(sb, rb, "n %d step %d: %d sends %d, %d expects %d", n, s, v, sb, to, rb);
        if (sb < 0) continue;
        cr_assert(hold[v] >> sb & 1, "n %d step %d: %d sends block %d it lacks", n, s, v, sb);
        cr_assert(!(hold[to] >> sb & 1), "n %d step %d: %d gets %d twice", n, s, to, sb);
        next[to] |= 1ull << sb;
        received_blocks++;
        cr_assert_neq(to, 0, "the root receives nothing");
      }
      for (int v = 0; v < n; v++) hold[v] = next[v];
    }
    for (int v = 0; v < n; v++) cr_assert_eq(hold[v], all, "n %d: member %d incomplete", n, v);
    /* exactly the blocks each member lacked after the scatter */
    int lacked = 0;
    for (int v = 0; v < n; v++) lacked += n - hvd_scatter_extent(v, n);
    cr_assert_eq(received_blocks, lacked, "n %d", n);
  }
}

Test(scatter, blocks_cover_the_vector) {
  for (int n = 1; n <= 20; n++)
    for (size_t count = 0; count < 50; count++)
      for (int v = 0; v < n; v++) {
        int e = hvd_scatter_extent(v, n);
        size_t span = hvd_block_offset(count, n, v + e) - hvd_block_offset(count, n, v);
        size_t sum = 0;
        for (int b = v; b < v + e; b++) sum += hvd_block_count(count, n, b);
        cr_assert_eq(span, sum, "n %d count %zu v %d", n, count, v);
      }
}
