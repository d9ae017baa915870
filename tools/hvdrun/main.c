/*
 * hvdrun: launch an hvd job of N ranks on this host and supervise it.
 *
 * This file is the command line (flags, --help, --version) and the few helpers every
 * part of hvdrun uses to talk (hvdrun_say, hvdrun_write_all). The job itself is
 * job.c. Parsing is strict and happens before anything starts: a bad flag is one
 * line `hvdrun: error: ...` on stderr and exit status 2. Flags end at the first
 * argument that is not one (or after `--`): that is the program, and everything
 * after it belongs to the program.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "hvd.h"
#include "tools/hvdrun/hvdrun.h"

#define HVDRUN_EXIT_USAGE 2

static const char usage_text[] = "usage: hvdrun -np N [options] PROGRAM [ARGS...]\n";

static const char help_text[] =
    "\n"
    "Start N ranks of PROGRAM on this host as one hvd job, forward their output and\n"
    "supervise them: if any rank fails, the others are told why and stopped.\n"
    "\n"
    "options:\n"
    "  -np N, --num-proc N     number of ranks to start (required, 1..65536)\n"
    "  --start-timeout SECONDS how long ranks may take to connect to the rendezvous\n"
    "                          server before the job is stopped (default 60; 0 waits\n"
    "                          forever; programs that never call hvd_init are stopped\n"
    "                          after this time too)\n"
    "  --tag-output            prefix each output line with [RANK]<stdout>: or\n"
    "                          [RANK]<stderr>: (default)\n"
    "  --no-tag-output         forward output without prefixes (still line by line)\n"
    "  --verbose               print the rendezvous address, each rank's command and\n"
    "                          rank events to stderr\n"
    "  -h, --help              show this help and exit\n"
    "  -v, --version           show the version and exit\n"
    "  --                      end of options: the next argument is PROGRAM\n"
    "\n"
    "Each rank runs in its own process group with hvdrun's environment plus\n"
    "HVD_RANK, HVD_SIZE, HVD_LOCAL_RANK, HVD_LOCAL_SIZE, HVD_CROSS_RANK (0),\n"
    "HVD_CROSS_SIZE (1), HVD_HOSTNAME, HVD_RENDEZVOUS_ADDR, HVD_RENDEZVOUS_PORT and\n"
    "HVD_JOB_TOKEN. Its stdin is /dev/null; its stdout and stderr go to hvdrun's\n"
    "stdout and stderr a whole line at a time.\n"
    "\n"
    "When a rank exits with a non-zero status or is killed by a signal, hvdrun aborts\n"
    "the job on the rendezvous server (the other ranks' operations fail naming that\n"
    "rank), sends SIGTERM to the remaining ranks after 1 s and SIGKILL 3 s later.\n"
    "SIGINT, SIGTERM and SIGHUP sent to hvdrun are forwarded to every rank (a second\n"
    "one sends SIGKILL at once); SIGKILL follows after 3 s. Processes the ranks\n"
    "leave behind (in their process groups, or orphaned) are stopped too.\n"
    "\n"
    "exit status:\n"
    "  0        every rank exited with status 0\n"
    "  S        the first rank to fail exited with status S (128+N: killed by signal N)\n"
    "  128+N    hvdrun was interrupted by signal N\n"
    "  1        a rank did not connect in time, or hvdrun itself failed\n"
    "  2        bad command line\n"
    "  126/127  PROGRAM could not be executed / was not found\n";

/* ---- messages -------------------------------------------------------------------- */

int hvdrun_write_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) { /* inherited O_NONBLOCK */
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        (void)poll(&pfd, 1, -1);
        continue;
      }
      return -errno;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

void hvdrun_say(const char *fmt, ...) {
  char line[2048];
  int n = snprintf(line, sizeof line, "hvdrun: ");
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
  va_end(ap);
  size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
  if (len > sizeof line - 2) len = sizeof line - 2;
  line[len++] = '\n';
  (void)hvdrun_write_all(STDERR_FILENO, line, len);
}

const char *hvdrun_signame(int sig, char *buf, size_t size) {
  const char *abbrev = sigabbrev_np(sig);
  if (abbrev != NULL)
    snprintf(buf, size, "SIG%s", abbrev);
  else
    snprintf(buf, size, "signal %d", sig);
  return buf;
}

/* ---- command line ---------------------------------------------------------------- */

/* If arg is the flag `name`, or `name=value` for a flag that takes a value, return
 * 1 and set *inline_value (NULL when the value is the next argument). */
static int match_flag(const char *arg, const char *name, int takes_value,
                      const char **inline_value) {
  size_t n = strlen(name);
  if (strncmp(arg, name, n) != 0) return 0;
  if (arg[n] == '\0') {
    *inline_value = NULL;
    return 1;
  }
  if (takes_value && arg[n] == '=') {
    *inline_value = arg + n + 1;
    return 1;
  }
  return 0;
}

/* Parse argv into opts. Returns 0 to run the job, 1 when --help or --version was
 * handled (exit 0), -1 with a one-line reason in err. */
static int parse_args(int argc, char **argv, hvdrun_opts_t *opts, hvd_err_t *err) {
  memset(opts, 0, sizeof *opts);
  opts->tag_output = 1;
  opts->start_timeout_s = HVDRUN_DEFAULT_START_TIMEOUT;
  int have_np = 0;
  int i = 1;

  for (; i < argc; i++) {
    const char *arg = argv[i];
    const char *val = NULL;
    long v;

    if (strcmp(arg, "--") == 0) {
      i++;
      break;
    }
    if (arg[0] != '-' || arg[1] == '\0') break; /* PROGRAM ("-" alone too) */

    if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
      printf("%s%s", usage_text, help_text);
      return 1;
    }
    if (strcmp(arg, "-v") == 0 || strcmp(arg, "--version") == 0) {
      printf("hvdrun (hvd) %d.%d.%d\n", HVD_VERSION_MAJOR, HVD_VERSION_MINOR,
             HVD_VERSION_PATCH);
      return 1;
    }
    if (strcmp(arg, "--verbose") == 0) {
      opts->verbose = 1;
      continue;
    }
    if (strcmp(arg, "--tag-output") == 0) {
      opts->tag_output = 1;
      continue;
    }
    if (strcmp(arg, "--no-tag-output") == 0) {
      opts->tag_output = 0;
      continue;
    }

    int is_np = match_flag(arg, "-np", 1, &val) || match_flag(arg, "--num-proc", 1, &val);
    int is_timeout = !is_np && match_flag(arg, "--start-timeout", 1, &val);
    if (is_np || is_timeout) {
      int flen = (int)strcspn(arg, "="); /* the flag's name without "=value" */
      if (val == NULL) {
        if (i + 1 >= argc) {
          hvd_err_set(err, "%.*s needs a value", flen, arg);
          return -1;
        }
        val = argv[++i];
      }
      if (is_np) {
        if (hvd_parse_int(val, 1, HVDRUN_MAX_NP, &v) != 0) {
          hvd_err_set(err, "%.*s: '%s' is not a number of ranks (1..%d)", flen, arg, val,
                      HVDRUN_MAX_NP);
          return -1;
        }
        opts->np = (int)v;
        have_np = 1;
      } else {
        if (hvd_parse_int(val, 0, INT_MAX / 1000, &v) != 0) {
          hvd_err_set(err, "--start-timeout: '%s' is not a number of seconds (0..%d)",
                      val, INT_MAX / 1000);
          return -1;
        }
        opts->start_timeout_s = (int)v;
      }
      continue;
    }

    hvd_err_set(err, "unknown option '%s' (see hvdrun --help)", arg);
    return -1;
  }

  if (!have_np) {
    hvd_err_set(err, "-np N is required (see hvdrun --help)");
    return -1;
  }
  if (i >= argc) {
    hvd_err_set(err,
                "no program given (usage: hvdrun -np N [options] PROGRAM [ARGS...])");
    return -1;
  }
  if (argv[i][0] == '\0') {
    hvd_err_set(err, "the program name is empty");
    return -1;
  }
  opts->argv = argv + i;
  return 0;
}

int main(int argc, char **argv) {
  hvdrun_opts_t opts;
  hvd_err_t err = {{0}};

  int rc = parse_args(argc, argv, &opts, &err);
  if (rc > 0) return fflush(stdout) == 0 ? 0 : 1;
  if (rc < 0) {
    hvdrun_say("error: %s", err.msg);
    return HVDRUN_EXIT_USAGE;
  }
  /* The rendezvous server logs through common/log (HVD_LOG_LEVEL). A bad level is
   * the ranks' to report: hvd_init fails naming it. */
  (void)hvd_log_init_from_env();
  hvd_log_set_prefix("hvdrun");
  return hvdrun_run(&opts, &hvdrun_local_launcher);
}
