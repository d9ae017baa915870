/*
 * Ring arithmetic (collectives/ring.h), alone: block partition, and a symbolic run of
 * the allreduce, allgather and reduce-scatter rings in which every block carries the
 * set of ranks whose contributions it holds. A reduction must combine disjoint sets
 * (nothing counted twice), sender and receiver must agree on the block of every step,
 * and the final state must be complete.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "collectives/ring.h"

#define MAXN 64 /* contribution sets are uint64_t bit masks */

static const size_t counts[] = {0, 1, 2, 3, 5, 7, 8, 63, 64, 65, 100, 1000, 4097, 1000003};

Test(ring, blocks_partition_the_vector) {
  for (size_t ci = 0; ci < sizeof counts / sizeof counts[0]; ci++) {
    size_t count = counts[ci];
    for (int n = 1; n <= 70; n++) {
      size_t next = 0, q = count / (size_t)n;
      for (int b = 0; b < n; b++) {
        size_t off = hvd_block_offset(count, n, b), len = hvd_block_count(count, n, b);
        cr_assert_eq(off, next, "count %zu n %d block %d: offset %zu, want %zu", count, n,
                     b, off, next);
        cr_assert(len == q || len == q + 1, "block sizes differ by more than one");
        cr_assert_eq(len == q + 1, (size_t)b < count % (size_t)n,
                     "the first count %% n blocks are the larger ones");
        next += len;
      }
      cr_assert_eq(next, count, "count %zu n %d: blocks cover %zu", count, n, next);
      cr_assert_eq(hvd_block_offset(count, n, n), count);
    }
  }
}

Test(ring, neighbours_and_mod) {
  for (int n = 1; n <= 70; n++)
    for (int r = 0; r < n; r++) {
      cr_assert_eq(hvd_ring_prev(hvd_ring_next(r, n), n), r);
      cr_assert(hvd_ring_next(r, n) >= 0 && hvd_ring_next(r, n) < n);
    }
  cr_assert_eq(hvd_mod(-1, 5), 4);
  cr_assert_eq(hvd_mod(-11, 5), 4);
  cr_assert_eq(hvd_mod(7, 5), 2);
}

/* held[r][b]: contributions rank r's copy of block b holds. */
static uint64_t held[MAXN][MAXN];

Test(ring, allreduce_reduce_scatter_then_allgather) {
  for (int n = 2; n <= MAXN; n++) {
    for (int r = 0; r < n; r++)
      for (int b = 0; b < n; b++) held[r][b] = 1ull << r;
    int reduced[MAXN][MAXN];
    memset(reduced, 0, sizeof reduced);
    for (int s = 0; s < n - 1; s++) {
      uint64_t in_flight[MAXN];
      for (int r = 0; r < n; r++) {
        int sb = hvd_ring_rs_send_block(r, n, s);
        if (s == 0) cr_assert_eq(sb, r, "step 0 sends the own block");
        else cr_assert_eq(sb, hvd_ring_rs_recv_block(r, n, s - 1),
                          "n %d r %d step %d: sends what it reduced last step", n, r, s);
        /* the next rank receives exactly this block */
        cr_assert_eq(hvd_ring_rs_recv_block(hvd_ring_next(r, n), n, s), sb);
        in_flight[hvd_ring_next(r, n)] = held[r][sb];
      }
      for (int r = 0; r < n; r++) {
        int rb = hvd_ring_rs_recv_block(r, n, s);
        cr_assert_eq(held[r][rb] & in_flight[r], 0, "n %d r %d step %d: counted twice", n, r, s);
        held[r][rb] |= in_flight[r];
        reduced[r][rb]++;
      }
    }
    uint64_t all = n == 64 ? ~0ull : (1ull << n) - 1;
    for (int r = 0; r < n; r++) {
      int owned = (r + 1) % n;
      cr_assert_eq(held[r][owned], all, "n %d: rank %d does not own block %d", n, r, owned);
      for (int b = 0; b < n; b++)
        cr_assert_eq(reduced[r][b], b == r ? 0 : 1, "n %d r %d: block %d reduced %d times", n,
                     r, b, reduced[r][b]);
    }
    for (int s = 0; s < n - 1; s++) {
      uint64_t in_flight[MAXN];
      for (int r = 0; r < n; r++) {
        int sb = hvd_ring_ag_send_block(r, n, s);
        cr_assert_eq(held[r][sb], all, "allgather sends a block that is not finished");
        cr_assert_eq(hvd_ring_ag_recv_block(hvd_ring_next(r, n), n, s), sb);
        in_flight[hvd_ring_next(r, n)] = held[r][sb];
      }
      for (int r = 0; r < n; r++) held[r][hvd_ring_ag_recv_block(r, n, s)] = in_flight[r];
    }
    for (int r = 0; r < n; r++)
      for (int b = 0; b < n; b++) cr_assert_eq(held[r][b], all, "n %d r %d b %d", n, r, b);
  }
}

Test(ring, gather_pattern_collects_every_block) {
  for (int n = 2; n <= MAXN; n++) {
    for (int r = 0; r < n; r++)
      for (int b = 0; b < n; b++) held[r][b] = b == r; /* 1 = present */
    for (int s = 0; s < n - 1; s++) {
      for (int r = 0; r < n; r++) {
        int sb = hvd_ring_gather_send_block(r, n, s);
        cr_assert(held[r][sb], "n %d r %d step %d sends a block it lacks", n, r, s);
        cr_assert_eq(hvd_ring_gather_recv_block(hvd_ring_next(r, n), n, s), sb);
      }
      for (int r = 0; r < n; r++) {
        int rb = hvd_ring_gather_recv_block(r, n, s);
        cr_assert(!held[r][rb], "received twice");
        held[r][rb] = 1;
      }
    }
    for (int r = 0; r < n; r++)
      for (int b = 0; b < n; b++) cr_assert(held[r][b]);
  }
}

Test(ring, scatter_pattern_leaves_rank_r_with_block_r) {
  for (int n = 2; n <= MAXN; n++) {
    for (int r = 0; r < n; r++)
      for (int b = 0; b < n; b++) held[r][b] = 1ull << r;
    for (int s = 0; s < n - 1; s++) {
      uint64_t in_flight[MAXN];
      for (int r = 0; r < n; r++) {
        int sb = hvd_ring_scatter_send_block(r, n, s);
        if (s > 0) cr_assert_eq(sb, hvd_ring_scatter_recv_block(r, n, s - 1));
        cr_assert_neq(sb, r, "never sends its own final block");
        cr_assert_eq(hvd_ring_scatter_recv_block(hvd_ring_next(r, n), n, s), sb);
        in_flight[hvd_ring_next(r, n)] = held[r][sb];
      }
      for (int r = 0; r < n; r++) {
        int rb = hvd_ring_scatter_recv_block(r, n, s);
        cr_assert_eq(held[r][rb] & in_flight[r], 0);
        held[r][rb] |= in_flight[r];
      }
    }
    uint64_t all = n == 64 ? ~0ull : (1ull << n) - 1;
    for (int r = 0; r < n; r++)
      cr_assert_eq(held[r][r], all, "n %d: rank %d block %d incomplete", n, r, r);
    /* the last step receives block r itself */
    for (int r = 0; r < n; r++) cr_assert_eq(hvd_ring_scatter_recv_block(r, n, n - 2), r);
  }
}

/* With count < n some blocks are empty; both ends of a step see the same size. */
Test(ring, empty_blocks_agree_on_both_sides) {
  for (size_t count = 0; count < 10; count++)
    for (int n = 2; n <= 16; n++)
      for (int s = 0; s < n - 1; s++)
        for (int r = 0; r < n; r++) {
          int nx = hvd_ring_next(r, n);
          cr_assert_eq(hvd_block_count(count, n, hvd_ring_rs_send_block(r, n, s)),
                       hvd_block_count(count, n, hvd_ring_rs_recv_block(nx, n, s)));
          cr_assert_eq(hvd_block_count(count, n, hvd_ring_ag_send_block(r, n, s)),
                       hvd_block_count(count, n, hvd_ring_ag_recv_block(nx, n, s)));
        }
}

Test(ring, counts_offsets_walk_backwards) {
  const size_t sizes[] = {3, 0, 5, 1, 0, 0, 7};
  const int n = 7;
  size_t total = hvd_counts_offset(sizes, n);
  cr_assert_eq(total, 16);
  for (int b = 0; b < n; b++) {
    int pb = hvd_mod(b - 1, n);
    cr_assert_eq(hvd_counts_prev_offset(sizes, n, b, hvd_counts_offset(sizes, b), total),
                 hvd_counts_offset(sizes, pb), "block %d", b);
  }
}
