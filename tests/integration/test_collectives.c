/*
 * The collective matrix (progs/coll_matrix.c) as whole jobs: every collective and
 * allreduce algorithm (ring, tree, recursive doubling, shared-memory arena) x every
 * dtype x sum/min/max/product x counts {0, 1, N-1, N, N+1, 99991, 2^22+3}, for
 * N in {1, 2, 3, 4, 5, 7, 8}, over libfabric shm and over tcp. Large counts are
 * sampled (one combination in K, rotating with the seed) to keep the run time sane;
 * every small case runs. Exact against a double reference and bit-identical on every
 * rank.
 */
#include <criterion/criterion.h>
#include <stdio.h>

#include "harness.h"

static void matrix(int n, const char *provider, int sample, int seed) {
  char cmd[1024];
  /* HVD_TEST_QUICK (sanitizers): every small case still runs, large ones 8x sparser;
   * np 1-5 over shm (7 and 8 oversubscribe two cores the most), np 3 over tcp. */
  if (test_quick()) {
    if (n > 5) cr_skip_test("HVD_TEST_QUICK: np 1 to 5 cover the algorithms");
    if (provider[0] != '\0' && n != 3) cr_skip_test("HVD_TEST_QUICK: tcp runs at np 3");
    sample *= 8;
  }
  snprintf(cmd, sizeof cmd, "%s -np %d %s --sample %d --seed %d", bin_path("hvdrun"), n,
           prog_path("coll_matrix"), sample, seed);
  char prov[64];
  snprintf(prov, sizeof prov, "HVD_OFI_PROVIDER=%s", provider);
  char *env[] = {prov, NULL};
  run_result_t r = run_sh(cmd, env, 600);
  cr_log_info("%s (provider '%s'): %.1f s", cmd, provider, r.seconds);
  if (!(r.exited && r.status == 0)) cr_log_error("output:\n%s", r.out);
  cr_assert(!r.timed_out, "matrix job timed out");
  cr_assert(r.exited && r.status == 0, "matrix failed: %s", last_line(&r));
  cr_assert_eq(count_in(&r, "MATRIX OK"), n);
  run_free(&r);
}

#define M(n, sample)                                                                      \
  Test(collectives_shm, np##n, .timeout = 700) { matrix(n, "", sample, n); }              \
  Test(collectives_tcp, np##n, .timeout = 700) { matrix(n, "tcp", sample * 2, n + 100); }

M(1, 8)
M(2, 8)
M(3, 8)
M(4, 12)
M(5, 12)
M(7, 24)
M(8, 24)
