/*
 * Binomial tree arithmetic (collectives/tree.h), alone: parent/child consistency,
 * depth, and symbolic runs of the reduce (every contribution reaches the root exactly
 * once, a member sends only after all its children arrived) and of the broadcast.
 */
#include <criterion/criterion.h>
#include <stdint.h>

#include "collectives/tree.h"

#define MAXN 64

static int is_child(int v, int c, int n) {
  int lim = hvd_binom_child_limit(v, n);
  for (int m = 1; m < lim && v + m < n; m *= 2)
    if (v + m == c) return 1;
  return 0;
}

Test(tree, parents_and_children_agree) {
  for (int n = 1; n <= 200; n++) {
    int edges = 0, depth_max = 0, log2n = 0;
    while ((1 << log2n) < n) log2n++;
    cr_assert_eq(hvd_binom_parent(0), -1);
    for (int v = 0; v < n; v++) {
      edges += hvd_binom_nchildren(v, n);
      if (v > 0) {
        int p = hvd_binom_parent(v);
        cr_assert(p >= 0 && p < v, "n %d: parent of %d is %d", n, v, p);
        cr_assert(is_child(p, v, n), "n %d: %d is not a child of its parent %d", n, v, p);
      }
      for (int c = 0; c < n; c++)
        if (is_child(v, c, n)) cr_assert_eq(hvd_binom_parent(c), v);
      int d = 0;
      for (int u = v; u > 0; u = hvd_binom_parent(u)) d++;
      if (d > depth_max) depth_max = d;
    }
    cr_assert_eq(edges, n - 1, "n %d: a tree has n-1 edges", n);
    cr_assert(depth_max <= log2n, "n %d: depth %d", n, depth_max);
  }
}

Test(tree, relative_ranks_round_trip) {
  for (int n = 1; n <= 20; n++)
    for (int root = 0; root < n; root++) {
      cr_assert_eq(hvd_binom_rel(root, root, n), 0);
      for (int r = 0; r < n; r++)
        cr_assert_eq(hvd_binom_abs(hvd_binom_rel(r, root, n), root, n), r);
    }
}

/* Reduce: members act when all their children have delivered; the root ends with
 * everything, nothing counted twice. */
Test(tree, reduce_then_broadcast) {
  for (int n = 1; n <= MAXN; n++) {
    uint64_t val[MAXN];
    int sent[MAXN] = {0}, got[MAXN] = {0};
    for (int v = 0; v < n; v++) val[v] = 1ull << v;
    int progress = 1, done = 0;
    while (progress) {
      progress = 0;
      for (int v = n - 1; v > 0; v--) {
        if (sent[v] || got[v] != hvd_binom_nchildren(v, n)) continue;
        int p = hvd_binom_parent(v);
        cr_assert_eq(val[p] & val[v], 0, "n %d: %d -> %d counted twice", n, v, p);
        val[p] |= val[v];
        got[p]++;
        sent[v] = 1;
        progress = 1;
        done++;
      }
    }
    cr_assert_eq(done, n - 1, "n %d: reduce stalled", n);
    uint64_t all = n == 64 ? ~0ull : (1ull << n) - 1;
    cr_assert_eq(val[0], all);
    int has[MAXN] = {1};
    for (int pass = 0; pass < n; pass++)
      for (int v = 0; v < n; v++) {
        if (!has[v]) continue;
        int lim = hvd_binom_child_limit(v, n);
        for (int m = lim / 2; m >= 1; m /= 2)
          if (v + m < n) has[v + m] = 1;
      }
    for (int v = 0; v < n; v++) cr_assert(has[v], "n %d: %d never receives the broadcast", n, v);
  }
}
