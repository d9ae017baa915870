/*
 * The runtime's Horovod behaviours, as whole jobs through hvdrun: each case of
 * progs/runtime_check.c at several rank counts (and over tcp for some), checked
 * exactly on every rank.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <unistd.h>

#include "harness.h"

static run_result_t run_case(const char *c, int n, char *const env[], double timeout) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "%s -np %d %s %s", bin_path("hvdrun"), n, prog_path("runtime_check"), c);
  run_result_t r = run_sh(cmd, env, timeout);
  cr_log_info("%s: %.1f s", cmd, r.seconds);
  return r;
}

static void expect_ok(const char *c, int n, char *const env[]) {
  run_result_t r = run_case(c, n, env, 120);
  if (!(r.exited && r.status == 0)) cr_log_error("output:\n%s", r.out);
  cr_assert(!r.timed_out, "case %s at np=%d timed out", c, n);
  cr_assert(r.exited && r.status == 0, "case %s at np=%d failed: %s", c, n, last_line(&r));
  char want[64];
  snprintf(want, sizeof want, "CASE %s: OK", c);
  cr_assert_eq(count_in(&r, want), n, "expected %d ranks to pass case %s", n, c);
  run_free(&r);
}

#define CASE_AT(c, n) Test(runtime_##c, np##n, .timeout = 150) { expect_ok(#c, n, NULL); }
#define CASE_TCP(c, n)                                                                   \
  Test(runtime_##c, tcp_np##n, .timeout = 150) {                                         \
    char *env[] = {"HVD_OFI_PROVIDER=tcp", NULL};                                         \
    expect_ok(#c, n, env);                                                                \
  }
/* The same, skipped under HVD_TEST_QUICK: another rank count of the case runs there. */
#define CASE_AT_FULL(c, n)                                                               \
  Test(runtime_##c, np##n, .timeout = 150) {                                             \
    QUICK_SKIP("another rank count runs case " #c);                                       \
    expect_ok(#c, n, NULL);                                                               \
  }
#define CASE_TCP_FULL(c, n)                                                              \
  Test(runtime_##c, tcp_np##n, .timeout = 150) {                                         \
    QUICK_SKIP("case " #c " runs over shm, and other cases over tcp");                    \
    char *env[] = {"HVD_OFI_PROVIDER=tcp", NULL};                                         \
    expect_ok(#c, n, env);                                                                \
  }

CASE_AT_FULL(ops, 1)
CASE_AT(ops, 2)
CASE_AT_FULL(ops, 5)
CASE_TCP_FULL(ops, 3)
CASE_AT(async_fused, 1) /* one rank: results straight from the inputs, no fusion buffer */
CASE_AT_FULL(async_fused, 2)
CASE_AT(async_fused, 4)
CASE_TCP_FULL(async_fused, 3)
CASE_AT(scale, 1)
CASE_AT(scale, 3)
CASE_AT_FULL(psets, 2)
CASE_AT(psets, 5)
CASE_AT_FULL(mismatch, 2)
CASE_AT(mismatch, 4)
CASE_AT(duplicate, 3)
CASE_AT(grouped, 3)
CASE_AT_FULL(join, 2)
CASE_AT_FULL(join, 3)
CASE_TCP(join, 4)
CASE_AT(barrier, 3)
CASE_AT_FULL(collectives, 1)
CASE_AT_FULL(collectives, 2)
CASE_AT(collectives, 3)
CASE_AT_FULL(collectives, 5)
CASE_TCP(collectives, 4)
CASE_AT(threads, 4)
CASE_AT_FULL(callbacks, 3)
CASE_TCP(callbacks, 4)
CASE_AT(reinit, 3)
CASE_AT(slow_peer, 2)
CASE_AT(busy_compute, 2)
CASE_AT_FULL(slow_peer, 4)
CASE_TCP_FULL(slow_peer, 2)

/* Names that differ between ranks: rank 0 logs the stall naming tensors and ranks,
 * and with a shutdown time the operations fail instead of hanging. */
Test(runtime_stall, names_differ, .timeout = 120) {
  char *env[] = {"HVD_STALL_CHECK_TIME_SECONDS=1", "HVD_STALL_SHUTDOWN_TIME_SECONDS=3", NULL};
  run_result_t r = run_case("stall", 3, env, 100);
  if (r.status != 0) cr_log_error("%s", r.out);
  cr_assert(r.exited && r.status == 0, "stall case failed: %s", last_line(&r));
  cr_assert_eq(count_in(&r, "CASE stall: OK"), 3);
  cr_assert(count_in(&r, "stall: tensor 'stall.only.rank0' has waited") == 1 &&
                count_in(&r, "submitted by ranks [0], missing ranks [1,2]") >= 1,
            "no warning naming the tensor and ranks:\n%s", r.out);
  cr_assert(count_in(&r, "stall: tensor 'stall.only.others' has waited") == 1 &&
                count_in(&r, "submitted by ranks [1,2], missing ranks [0]") >= 1,
            "no warning for the other tensor:\n%s", r.out);
  run_free(&r);
}

/* Without a shutdown time the stall is only reported: the job is still waiting when
 * the test stops it, and the warning has been printed. */
Test(runtime_stall, warning_only, .timeout = 60) {
  QUICK_SKIP("names_differ covers the stall check; this one waits 12 s for hvdrun's kill");
  char *env[] = {"HVD_STALL_CHECK_TIME_SECONDS=1", NULL};
  run_result_t r = run_case("stall", 2, env, 12);
  cr_assert(r.timed_out, "the stalled job should still be waiting");
  cr_assert(count_in(&r, "stall: tensor 'stall.only.rank0' has waited") == 1, "%s", r.out);
  cr_assert(count_in(&r, "missing ranks [1]") >= 1, "%s", r.out);
  run_free(&r);
  /* hvdrun was killed: the ranks notice their rendezvous connection is gone, fail the
   * stalled operation with that cause and exit. */
  int left = 0;
  for (int i = 0; i < 100 && (left = procs_matching("runtime_check stall")) > 0; i++) usleep(100000);
  cr_assert_eq(left, 0, "ranks left running 10 s after hvdrun was killed");
}

/* Bad arguments that depend on the job's size fail on every rank with a log line
 * naming the argument (the single-rank cases are in tests/unit/test_badinput.c). */
Test(runtime_invalid, np2_messages, .timeout = 150) {
  run_result_t r = run_case("invalid", 2, NULL, 120);
  cr_assert(r.exited && r.status == 0 && count_in(&r, "CASE invalid: OK") == 2, "%s", r.out);
  const char *want[] = {
      "broadcast(inv.root): invalid parameter: root 2 is out of range: process_set 0 has 2 ranks",
      "broadcast(inv.root): invalid parameter: root -1 is out of range",
      "hvd_process_set_create: invalid parameter: ranks lists rank 0 more than once",
      "hvd_process_set_create: invalid parameter: ranks[1] = 2 is not a rank of the job [0, 2)",
      "alltoall(inv.a2a): invalid parameter: splits overflow",
      "alltoall(inv.a2a): invalid parameter: count 3 is not divisible by the 2 ranks of the set",
  };
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    cr_expect_eq(count_in(&r, want[i]), 2, "\"%s\" not logged by both ranks:\n%s", want[i], r.out);
  cr_expect_eq(count_in(&r, "allreduce(inv.member): invalid parameter: rank 1 is not a member of "
                            "process_set"), 1, "%s", r.out);
  run_free(&r);
}

/* A setting that does not parse fails init with a message naming it and its range. */
Test(runtime_config, bad_value_fails_init, .timeout = 60) {
  char *env[] = {"HVD_FUSION_THRESHOLD=lots", NULL};
  run_result_t r = run_case("ops", 2, env, 30);
  cr_assert(r.exited && r.status != 0);
  cr_assert(count_in(&r, "HVD_FUSION_THRESHOLD=\"lots\" is not valid") >= 1, "%s", r.out);
  run_free(&r);
}

/* Fusion is visible in the log at debug level, not only in the statistics. */
Test(runtime_async_fused, debug_log_shows_fusion, .timeout = 120) {
  char *env[] = {"HVD_LOG_LEVEL=debug", NULL};
  run_result_t r = run_case("async_fused", 2, env, 100);
  cr_assert(r.exited && r.status == 0, "%s", last_line(&r));
  cr_assert(count_in(&r, "] fused ") >= 2, "no fusion lines at debug level:\n%s", r.out);
  cr_assert(count_in(&r, "tensors ran in") == 2);
  run_free(&r);
}
