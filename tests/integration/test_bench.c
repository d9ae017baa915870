/*
 * hvd-bench as a whole job: every collective at np = 2 and 3 over a small size range
 * with --check 1 reports #wrong = 0 on every result line and prints the nccl-tests
 * columns; the runtime cases run and check; bad arguments give one clear error line
 * and a non-zero exit status.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define COLUMNS "size count type redop root time(us) algbw busbw #wrong memeff algo iters"

/* The output without hvdrun's "[R]<stdout>:" prefixes is requested with
 * --no-tag-output; result lines are those not starting with '#'. Returns the number
 * of result lines; fails the test on any line whose #wrong (9th field) is not 0 or
 * that has fewer fields than the header. */
static int check_lines(const run_result_t *r, int wrong_field, int min_fields) {
  char *copy = strdup(r->out), *save = NULL;
  int lines = 0;
  for (char *ln = strtok_r(copy, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
    while (*ln == ' ') ln++;
    if (*ln == '\0' || *ln == '#' || *ln == '[') continue;
    if (strncmp(ln, "hvd-bench", 9) == 0 || strncmp(ln, "hvdrun", 6) == 0) continue;
    char *f[32], *s2 = NULL;
    int nf = 0;
    for (char *tok = strtok_r(ln, " \t", &s2); tok && nf < 32; tok = strtok_r(NULL, " \t", &s2))
      f[nf++] = tok;
    cr_assert_geq(nf, min_fields, "result line with %d fields (want >= %d)", nf, min_fields);
    cr_assert_str_eq(f[wrong_field], "0", "#wrong is %s on a result line (size %s)",
                     f[wrong_field], f[0]);
    lines++;
  }
  free(copy);
  return lines;
}

static void bench_job(int np, const char *args, int want_lines) {
  char cmd[1024];
  /* HVD_TEST_QUICK (sanitizers): each collective at np 3; the allreduce algorithm
   * variants are left to the collective matrix. */
  if (np == 2) QUICK_SKIP("np 3 runs every collective");
  if (strstr(args, "-c allreduce -a ") != NULL) QUICK_SKIP("test_collectives runs every algorithm");
  snprintf(cmd, sizeof cmd, "%s -np %d --no-tag-output %s --bmem 10 -n 5 -w 2 --check 1 %s",
           bin_path("hvdrun"), np, bin_path("hvd-bench"), args);
  run_result_t r = run_sh(cmd, NULL, 120);
  cr_log_info("%s: %.1f s", cmd, r.seconds);
  if (!(r.exited && r.status == 0)) cr_log_error("output:\n%s", r.out);
  cr_assert(!r.timed_out, "hvd-bench timed out");
  cr_assert(r.exited && r.status == 0, "hvd-bench failed (status %d): %s", r.status,
            last_line(&r));
  /* The column header, in nccl-tests order. */
  const char *cols[] = {"size", "count", "type", "redop", "root", "time(us)", "algbw",
                        "busbw", "#wrong", "memeff", "algo", "iters"};
  for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++)
    cr_assert(strstr(r.out, cols[i]) != NULL, "column %s missing from the header", cols[i]);
  cr_assert_eq(count_in(&r, "# Out of bounds values : 0 OK"), 1, "no OK footer");
  int lines = check_lines(&r, 8, 14);
  cr_assert_eq(lines, want_lines, "%d result lines, expected %d", lines, want_lines);
  run_free(&r);
}

/* -b 64 -e 64K -f 4: 64, 256, 1K, 4K, 16K, 64K = 6 sizes; every collective has at
 * least one element per rank at 64 B with np <= 3 (float32: 64/(3*4) = 5). */
#define SIZES "-b 64 -e 64K -f 4"
#define EACH(np)                                                                         \
  Test(bench, allreduce_np##np, .timeout = 150) { bench_job(np, "-c allreduce " SIZES, 6); } \
  Test(bench, allreduce_ring_np##np, .timeout = 150) {                                   \
    bench_job(np, "-c allreduce -a ring -d float64 -o max " SIZES, 6);                   \
  }                                                                                      \
  Test(bench, allreduce_tree_np##np, .timeout = 150) {                                   \
    bench_job(np, "-c allreduce -a tree -d bfloat16 " SIZES, 6);                         \
  }                                                                                      \
  Test(bench, allreduce_rd_np##np, .timeout = 150) {                                     \
    bench_job(np, "-c allreduce -a rd -d int32 -o prod " SIZES, 6);                      \
  }                                                                                      \
  Test(bench, allgather_np##np, .timeout = 150) { bench_job(np, "-c allgather " SIZES, 6); } \
  Test(bench, allgather_bruck_np##np, .timeout = 150) {                                  \
    bench_job(np, "-c allgather -a bruck -d int64 " SIZES, 6);                           \
  }                                                                                      \
  Test(bench, allreduce_shm_np##np, .timeout = 150) {                                    \
    bench_job(np, "-c allreduce -a shm -o min -d float16 " SIZES, 6);                    \
  }                                                                                      \
  Test(bench, broadcast_scatter_np##np, .timeout = 150) {                                \
    bench_job(np, "-c broadcast -a scatter_ring -r 0 -d uint8 " SIZES, 6);               \
  }                                                                                      \
  Test(bench, broadcast_np##np, .timeout = 150) {                                        \
    bench_job(np, "-c broadcast -r 1 " SIZES, 6);                                        \
  }                                                                                      \
  Test(bench, reducescatter_np##np, .timeout = 150) {                                    \
    bench_job(np, "-c reducescatter -d float16 " SIZES, 6);                              \
  }                                                                                      \
  Test(bench, alltoall_np##np, .timeout = 150) { bench_job(np, "-c alltoall " SIZES, 6); }

EACH(2)
EACH(3)

Test(bench, csv_np2, .timeout = 120) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "%s -np 2 --no-tag-output %s --csv -b 1K -e 4K -n 3 -w 1 --bmem 10",
           bin_path("hvdrun"), bin_path("hvd-bench"));
  run_result_t r = run_sh(cmd, NULL, 100);
  cr_assert(r.exited && r.status == 0, "hvd-bench --csv failed: %s", last_line(&r));
  cr_assert_eq(count_in(&r, "#size,count,type,redop,root,time_us,algbw_gbs,busbw_gbs,wrong"), 1);
  cr_assert_eq(count_in(&r, ",float32,sum,-1,"), 3, "expected 3 csv lines:\n%s", r.out);
  run_free(&r);
}

Test(bench, runtime_small_np2, .timeout = 150) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "%s -np 2 --no-tag-output %s --mode runtime --runtime-case small "
           "-b 8 -e 4K -f 8 -n 20 -w 2 --bmem 10", bin_path("hvdrun"), bin_path("hvd-bench"));
  run_result_t r = run_sh(cmd, NULL, 120);
  if (!(r.exited && r.status == 0)) cr_log_error("output:\n%s", r.out);
  cr_assert(r.exited && r.status == 0, "runtime small failed: %s", last_line(&r));
  cr_assert_eq(check_lines(&r, 10, 12), 4); /* 8, 64, 512, 4096 */
  cr_assert_eq(count_in(&r, "# Out of bounds values : 0 OK"), 1);
  run_free(&r);
}

Test(bench, runtime_mixed_np3, .timeout = 200) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "%s -np 3 --no-tag-output %s --mode runtime --runtime-case mixed "
           "-e 1M -n 5 -w 1 --bmem 10", bin_path("hvdrun"), bin_path("hvd-bench"));
  run_result_t r = run_sh(cmd, NULL, 180);
  if (!(r.exited && r.status == 0)) cr_log_error("output:\n%s", r.out);
  cr_assert(r.exited && r.status == 0, "runtime mixed failed: %s", last_line(&r));
  cr_assert_eq(count_in(&r, "# ratio mixed/raw:"), 1);
  cr_assert_eq(count_in(&r, "# Out of bounds values : 0 OK"), 1);
  run_free(&r);
}

/* Bad arguments: parsed before hvd_init, so no job is needed. */
static void bad_args(const char *args, const char *needle) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "%s %s", bin_path("hvd-bench"), args);
  run_result_t r = run_sh(cmd, NULL, 30);
  cr_assert(r.exited, "hvd-bench %s did not exit", args);
  cr_assert_eq(r.status, 2, "hvd-bench %s: status %d, want 2", args, r.status);
  cr_assert_eq(count_in(&r, "hvd-bench: error:"), 1, "no error line for '%s':\n%s", args, r.out);
  cr_assert(strstr(r.out, needle) != NULL, "error for '%s' does not mention '%s':\n%s", args,
            needle, r.out);
  cr_assert(strstr(r.out, "usage:") != NULL);
  run_free(&r);
}

Test(bench, bad_arguments, .timeout = 60) {
  bad_args("-c allfoo", "allfoo");
  bad_args("-b 1X", "1X");
  bad_args("-b 1M -e 1K", "-b is larger than -e");
  bad_args("-d float128", "float128");
  bad_args("-o xor", "xor");
  bad_args("-a butterfly", "butterfly");
  bad_args("-c allgather -a rd", "-a rd cannot run allgather");
  bad_args("-c alltoall -a ring", "-a ring cannot run alltoall");
  bad_args("-n 0", "-n");
  bad_args("-f 1", "-f");
  bad_args("-o avg", "runtime");
  bad_args("--mode fast", "fast");
  bad_args("--mode runtime -c broadcast", "allreduce only");
  bad_args("--check", "needs a value");
  bad_args("--frobnicate", "--frobnicate");
}

Test(bench, root_out_of_range, .timeout = 60) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "%s -np 2 --no-tag-output %s -c broadcast -r 5 -e 64", bin_path("hvdrun"),
           bin_path("hvd-bench"));
  run_result_t r = run_sh(cmd, NULL, 50);
  cr_assert(r.exited && r.status != 0, "a root outside the job must fail");
  cr_assert(strstr(r.out, "-r 5 is not a rank") != NULL, "output:\n%s", r.out);
  run_free(&r);
}
