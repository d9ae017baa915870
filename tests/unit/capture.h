/*
 * For unit tests that check what hvd logs: a clean job environment, stderr sent to a
 * file, and a private scratch directory. Header-only (each test file is its own
 * executable); Criterion runs every test in its own process, so the redirection and
 * the environment changes end with the test.
 */
#ifndef HVD_TESTS_UNIT_CAPTURE_H
#define HVD_TESTS_UNIT_CAPTURE_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

static int cap_fd = -1;
static char cap_dir[64];

/* Unset every variable hvd might read: HVD_*, HOROVOD_* and mpirun's and srun's. */
static void cap_clean_env(void) {
  static const char *const prefixes[] = {"HVD_", "HOROVOD_", "OMPI_", "SLURM_", "PMIX_"};
  for (;;) {
    char name[256] = "";
    for (char **e = environ; *e && !name[0]; e++)
      for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
        if (strncmp(*e, prefixes[i], strlen(prefixes[i])) == 0) {
          snprintf(name, sizeof name, "%.*s", (int)strcspn(*e, "="), *e);
          break;
        }
    if (!name[0]) break;
    unsetenv(name);
  }
}

/* Clean environment, a scratch directory in cap_dir, stderr into an unlinked file. */
static void cap_start(void) {
  cap_clean_env();
  snprintf(cap_dir, sizeof cap_dir, "/tmp/hvd-test-XXXXXX");
  cr_assert_not_null(mkdtemp(cap_dir));
  char path[] = "/tmp/hvd-test-log-XXXXXX";
  cap_fd = mkstemp(path);
  cr_assert_geq(cap_fd, 0);
  unlink(path);
  fflush(stderr);
  cr_assert_eq(dup2(cap_fd, 2), 2);
}

static void cap_end(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", cap_dir);
  if (chdir("/") != 0 || system(cmd) != 0) cr_log_warn("could not remove %s", cap_dir);
}

/* Forget what was logged so far. */
static void cap_clear(void) {
  cr_assert_eq(ftruncate(cap_fd, 0), 0);
  lseek(cap_fd, 0, SEEK_SET);
}

/* What was logged since the last cap_clear (static buffer). */
static const char *cap_text(void) {
  static char buf[65536];
  ssize_t n = pread(cap_fd, buf, sizeof buf - 1, 0);
  buf[n > 0 ? n : 0] = '\0';
  return buf;
}

#endif
