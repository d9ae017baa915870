/*
 * Helpers for integration tests: run a whole command (usually hvdrun ...) with a
 * deadline, capture its output, and find things in it.
 */
#ifndef HVD_TEST_HARNESS_H
#define HVD_TEST_HARNESS_H

#include <stddef.h>

typedef struct run_result {
  int exited;      /* 1 if it exited normally */
  int status;      /* exit status, or the signal number if !exited */
  int timed_out;   /* killed by the harness at the deadline */
  double seconds;  /* wall time */
  char *out;       /* stdout followed by stderr... interleaved as written (NUL-terminated) */
  size_t out_len;
} run_result_t;

/* Run argv (argv[0] looked up in PATH if it has no '/') with extra environment
 * assignments env ("NAME=value", NULL-terminated, may be NULL), stdout and stderr
 * merged into one captured buffer. Kills the process group at timeout_s. */
run_result_t run_cmd(char *const argv[], char *const env[], double timeout_s);
/* sh -c cmd, same otherwise. */
run_result_t run_sh(const char *cmd, char *const env[], double timeout_s);
void run_free(run_result_t *r);

/* Number of occurrences of needle in r->out. */
int count_in(const run_result_t *r, const char *needle);
/* The last non-empty line of the output (static buffer). */
const char *last_line(const run_result_t *r);

/* Paths of built binaries. */
const char *bin_path(const char *name);  /* in the build dir: hvdrun, hvd-demo */
const char *prog_path(const char *name); /* tests/integration/progs */


/* Number of live processes (other than this one) whose command line, arguments
 * joined by spaces, contains marker. */
int procs_matching(const char *marker);

/* 1 when HVD_TEST_QUICK is set to a non-zero value. scripts/test.sh sets it for the
 * integration suites under ASan+UBSan: there each suite runs a reduced but still
 * meaningful configuration (fewer rank counts and sizes, the heaviest cases skipped)
 * so that the whole run fits the CI budget. The normal build runs everything. */
int test_quick(void);
/* In quick mode, skip the calling test, saying why (what else covers it). */
#define QUICK_SKIP(why)                                                                   \
  do {                                                                                    \
    if (test_quick()) cr_skip_test("HVD_TEST_QUICK: %s", why);                            \
  } while (0)

#endif
