/*
 * Bruck allgather arithmetic (collectives/bruck.h), alone: a symbolic run in which
 * each rank's rotated positions hold block ids. Every step's sender must hold what it
 * sends, the receiver must get exactly the blocks its positions stand for into empty
 * positions, both sides must agree on element counts for uneven block sizes, and in
 * the end every rank holds every block once, in rotated order.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "collectives/bruck.h"

#define MAXN 70

Test(bruck, steps_and_peers) {
  for (int n = 1; n <= 300; n++) {
    int k = hvd_bruck_steps(n);
    cr_assert((1L << k) >= n && (k == 0 || (1L << (k - 1)) < n), "n %d: %d steps", n, k);
    for (int s = 0; s < k; s++) {
      int cnt = hvd_bruck_nblocks(n, s);
      cr_assert(cnt >= 1 && cnt <= hvd_bruck_dist(s), "n %d step %d: %d blocks", n, s, cnt);
      for (int r = 0; r < n; r++) {
        int to = hvd_bruck_send_to(r, n, s), from = hvd_bruck_recv_from(r, n, s);
        cr_assert(to >= 0 && to < n && from >= 0 && from < n);
        cr_assert(to != r && from != r, "n %d step %d: rank %d talks to itself", n, s, r);
        cr_assert_eq(hvd_bruck_recv_from(to, n, s), r, "send and receive peers pair up");
      }
    }
  }
}

Test(bruck, symbolic_run_gathers_everything_once) {
  static int pos[MAXN][MAXN], next[MAXN][MAXN];
  size_t counts[MAXN];
  for (int n = 1; n < MAXN; n++) {
    size_t total = 0;
    for (int j = 0; j < n; j++) total += counts[j] = (size_t)((j * 7 + n) % 5); /* zeros too */
    for (int r = 0; r < n; r++) {
      for (int i = 0; i < n; i++) pos[r][i] = -1;
      pos[r][0] = r;
      cr_assert_eq(hvd_bruck_block(r, n, 0), r);
      cr_assert_eq(hvd_bruck_offset(counts, n, r, n), total);
    }
    for (int s = 0; s < hvd_bruck_steps(n); s++) {
      int dist = hvd_bruck_dist(s), cnt = hvd_bruck_nblocks(n, s);
      memcpy(next, pos, sizeof pos);
      for (int r = 0; r < n; r++) {
        int to = hvd_bruck_send_to(r, n, s);
        /* what r sends: positions [0, cnt); where `to` puts it: [dist, dist + cnt) */
        size_t sent = hvd_bruck_offset(counts, n, r, cnt);
        size_t want = hvd_bruck_offset(counts, n, to, dist + cnt) -
                      hvd_bruck_offset(counts, n, to, dist);
        cr_assert_eq(sent, want, "n %d step %d: %d sends %zu elements, %d expects %zu", n, s,
                     r, sent, to, want);
        for (int i = 0; i < cnt; i++) {
          cr_assert(pos[r][i] >= 0, "n %d step %d: rank %d sends position %d it lacks", n, s,
                    r, i);
          cr_assert_eq(next[to][dist + i], -1, "n %d step %d: %d receives twice", n, s, to);
          cr_assert_eq(pos[r][i], hvd_bruck_block(to, n, dist + i),
                       "n %d step %d: block lands in the wrong position", n, s);
          next[to][dist + i] = pos[r][i];
        }
      }
      memcpy(pos, next, sizeof pos);
    }
    for (int r = 0; r < n; r++)
      for (int i = 0; i < n; i++)
        cr_assert_eq(pos[r][i], (r + i) % n, "n %d: rank %d position %d", n, r, i);
  }
}

/* The final rotation in allgatherv_bruck.c: positions [0, n-r) are blocks r..n-1, that
 * is the elements after member r's offset, and the rest are the elements before it. */
Test(bruck, rotation_split) {
  size_t counts[MAXN];
  for (int n = 1; n < MAXN; n++) {
    size_t total = 0;
    for (int j = 0; j < n; j++) total += counts[j] = (size_t)((j * 3 + 1) % 4);
    for (int r = 0; r < n; r++) {
      size_t own = 0;
      for (int j = 0; j < r; j++) own += counts[j];
      cr_assert_eq(hvd_bruck_offset(counts, n, r, n - r), total - own);
      for (int i = 0; i < n; i++) {
        int b = hvd_bruck_block(r, n, i);
        size_t in_order = 0;
        for (int j = 0; j < b; j++) in_order += counts[j];
        size_t rotated = hvd_bruck_offset(counts, n, r, i);
        size_t expect = i < n - r ? own + rotated : rotated - (total - own);
        cr_assert_eq(in_order, expect, "n %d rank %d position %d", n, r, i);
      }
    }
  }
}
