/*
 * Whole jobs through hvdrun: allreduce for N = 1..5 ranks, counts
 * {0, 1, 7, N-1, 1000003, 16 Mi}, float32/float64/int32/int64, three ways: the default
 * on one host (the shared-memory arena), libfabric shm with the arena off
 * (HVD_SHM_ARENA=0: ring / recursive doubling over messages), and libfabric tcp
 * (HVD_OFI_PROVIDER=tcp). Each rank checks every element against the reference and
 * that all ranks hold identical bytes (progs/allreduce_check.c).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"

#define FULL_COUNTS "0,1,7,N-1,1000003,16777216"
/* HVD_TEST_QUICK (sanitizers): without the 16 Mi count, which costs most of the time
 * there; 1000003 still takes many chunks and pipeline steps. */
#define QUICK_COUNTS "0,1,7,N-1,1000003"
#define DTYPES "float32,float64,int32,int64"

static void job_env(int n, const char *provider, const char *counts, const char *extra,
                    const char *more_env) {
  char cmd[2048];
  if (test_quick() && strcmp(counts, FULL_COUNTS) == 0) counts = QUICK_COUNTS;
  snprintf(cmd, sizeof cmd, "%s -np %d %s --counts %s --dtypes %s %s", bin_path("hvdrun"), n,
           prog_path("allreduce_check"), counts, DTYPES, extra ? extra : "");
  char prov[64];
  snprintf(prov, sizeof prov, "HVD_OFI_PROVIDER=%s", provider);
  char *env[] = {prov, (char *)more_env, NULL};
  run_result_t r = run_sh(cmd, env, 300);
  cr_log_info("%s (provider '%s'): %.1f s", cmd, provider, r.seconds);
  if (!(r.exited && r.status == 0)) cr_log_error("output:\n%s", r.out);
  cr_assert(!r.timed_out, "job timed out");
  cr_assert(r.exited && r.status == 0, "job failed: exited=%d status=%d; last line: %s", r.exited,
            r.status, last_line(&r));
  cr_assert_eq(count_in(&r, "ALL OK"), n, "expected %d ranks to report ALL OK", n);
  run_free(&r);
}

static void job(int n, const char *provider, const char *counts, const char *extra) {
  job_env(n, provider, counts, extra, NULL);
}

#define SHM_AND_TCP(n)                                                                    \
  Test(allreduce_arena, np##n, .timeout = 400) {                                          \
    if (n != 3) QUICK_SKIP("the arena runs at np 3");                                     \
    job(n, "", FULL_COUNTS, NULL);                                                        \
  }                                                                                       \
  Test(allreduce_tcp, np##n, .timeout = 400) {                                            \
    if (n != 2) QUICK_SKIP("tcp runs at np 2, and in place at np 4");                     \
    job(n, "tcp", FULL_COUNTS, NULL);                                                     \
  }

SHM_AND_TCP(1)
SHM_AND_TCP(2)
SHM_AND_TCP(3)
SHM_AND_TCP(4)
SHM_AND_TCP(5)

#define SHM_MESSAGES(n)                                                                   \
  Test(allreduce_shm, np##n, .timeout = 400) {                                            \
    if (n != 3) QUICK_SKIP("messages over shm run at np 3");                              \
    job_env(n, "", FULL_COUNTS, NULL, "HVD_SHM_ARENA=0");                                 \
  }
SHM_MESSAGES(2)
SHM_MESSAGES(3)
SHM_MESSAGES(5)

Test(allreduce_shm, inplace_np3, .timeout = 300) { job(3, "", "0,1,7,N-1,1000003", "--inplace"); }
Test(allreduce_tcp, inplace_np4, .timeout = 300) { job(4, "tcp", "0,1,7,N-1,1000003", "--inplace"); }

/* The transport splits messages over HVD_OFI_MAX_MSG_SIZE into segments. */
Test(allreduce_shm, segmented_np3, .timeout = 300) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "%s -np 3 %s --counts 1,N-1,1000003 --dtypes float64,int32",
           bin_path("hvdrun"), prog_path("allreduce_check"));
  char *env[] = {"HVD_OFI_MAX_MSG_SIZE=4096", "HVD_SHM_ARENA=0", NULL};
  run_result_t r = run_sh(cmd, env, 300);
  if (!(r.exited && r.status == 0)) cr_log_error("output:\n%s", r.out);
  cr_assert(r.exited && r.status == 0, "segmented job failed: %s", last_line(&r));
  cr_assert_eq(count_in(&r, "ALL OK"), 3);
  run_free(&r);
}
