/*
 * Failure behaviour of whole jobs: a rank that exits mid-job, and hostile clients
 * on the rendezvous port.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

Test(faults, rank_exits_with_status_3, .timeout = 60) {
  /* Rank 1 exits with 3 after two allreduces; the others keep looping on allreduce,
   * which now has a dead peer: hvdrun must stop them and name rank 1. */
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "%s -np 4 %s --counts 1000,100000 --dtypes float32 --iters 1000000 "
           "--die-rank 1 --die-status 3 --die-after 2 --sleep-before-ms 1",
           bin_path("hvdrun"), prog_path("allreduce_check"));
  run_result_t r = run_sh(cmd, NULL, 30);
  cr_log_info("hvdrun took %.2f s; last line: %s", r.seconds, last_line(&r));
  cr_assert(!r.timed_out, "hvdrun did not exit; output:\n%s", r.out);
  cr_assert(r.exited && r.status != 0, "hvdrun must exit non-zero, got %d", r.status);
  cr_assert_eq(r.status, 3, "hvdrun should exit with the failed rank's status");
  cr_assert_lt(r.seconds, 10.0, "hvdrun took %.1f s to fail", r.seconds);
  const char *last = last_line(&r);
  cr_assert(strstr(last, "rank 1") != NULL && strstr(last, "status 3") != NULL,
            "last line must name rank 1 and status 3: '%s'", last);
  cr_assert_eq(procs_matching("--die-after 2 --sleep-before-ms 1"), 0, "rank processes left running");
  run_free(&r);
}

Test(faults, rank_killed_by_signal, .timeout = 60) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "%s -np 3 sh -c 'if [ \"$HVD_RANK\" = 2 ]; then sleep 0.5; kill -9 $$; fi; "
           "exec %s --counts 1000 --dtypes float32 --iters 1000000 --sleep-before-ms 2'",
           bin_path("hvdrun"), prog_path("allreduce_check"));
  run_result_t r = run_sh(cmd, NULL, 30);
  cr_assert(!r.timed_out);
  cr_assert_eq(r.status, 128 + 9, "exit code should be 128+SIGKILL, got %d", r.status);
  const char *last = last_line(&r);
  cr_assert(strstr(last, "rank 2") && strstr(last, "signal"), "last line: '%s'", last);
  cr_assert_eq(procs_matching("--sleep-before-ms 2"), 0);
  run_free(&r);
}

Test(faults, surviving_ranks_learn_the_cause, .timeout = 60) {
  /* The ranks that were stopped report the first cause (rank 1, status 3), not a
   * secondary "shut down" error. */
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "%s -np 3 %s --counts 100 --dtypes float32 --iters 1000000 --die-rank 1 "
           "--die-status 3 --die-after 5 --sleep-before-ms 3",
           bin_path("hvdrun"), prog_path("allreduce_check"));
  run_result_t r = run_sh(cmd, NULL, 30);
  cr_assert(!r.timed_out);
  cr_assert_eq(r.status, 3);
  cr_assert(count_in(&r, "rank 1") >= 2, "survivors should mention rank 1:\n%s", r.out);
  run_free(&r);
}

Test(faults, hostile_rendezvous_clients, .timeout = 120) {
  /* Rank 0 connects to the rendezvous with a wrong token and sends random bytes
   * before it initialises; both are rejected with a log line and the job completes. */
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "%s -np 3 %s --counts 1,1000003 --dtypes float32,int64 --attack-rendezvous",
           bin_path("hvdrun"), prog_path("allreduce_check"));
  run_result_t r = run_sh(cmd, NULL, 100);
  if (r.status != 0) cr_log_error("%s", r.out);
  cr_assert(r.exited && r.status == 0, "job failed: %s", last_line(&r));
  cr_assert_eq(count_in(&r, "ALL OK"), 3);
  cr_assert(count_in(&r, "wrong job token") >= 1, "no log line for the wrong token:\n%s", r.out);
  cr_assert(count_in(&r, "bad frame") >= 1, "no log line for the random bytes:\n%s", r.out);
  run_free(&r);
}

Test(faults, slow_rank_is_not_a_network_fault, .timeout = 120) {
  /* HVD_TRANSPORT_TIMEOUT_SECONDS=1 and rank 1 submits the third allreduce 2.5 s after
   * the others (over tcp;ofi_rxm, no shared-memory arena): they wait in negotiation,
   * which the transport timeout does not cover, and every allreduce succeeds. */
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "%s -np 3 -x HVD_TRANSPORT_TIMEOUT_SECONDS=1 -x HVD_OFI_PROVIDER=tcp %s --count "
           "4194304 --iters 4 --slow-rank 1 --slow-iter 2 --slow-ms 2500",
           bin_path("hvdrun"), prog_path("netfault_prog"));
  run_result_t r = run_sh(cmd, NULL, 100);
  if (r.status != 0) cr_log_error("%s", r.out);
  cr_assert(r.exited && r.status == 0, "job failed: %s", last_line(&r));
  for (int rank = 0; rank < 3; rank++) {
    char want[64];
    snprintf(want, sizeof want, "rank %d: ALL OK (4 allreduces, longest ", rank);
    const char *p = strstr(r.out, want);
    cr_assert_not_null(p, "no '%s':\n%s", want, r.out);
    double longest = atof(p + strlen(want));
    /* The others really waited longer than the timeout. */
    if (rank != 1) cr_assert_gt(longest, 2.0, "rank %d: longest allreduce %.2f s", rank, longest);
  }
  run_free(&r);
}
