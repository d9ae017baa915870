/*
 * hvdrun: launch an hvd job of N ranks on this host and others, and supervise it.
 *
 * This file is the command line (flags, --help, --version) and the few helpers every
 * part of hvdrun uses to talk (hvdrun_say, hvdrun_write_all). The job itself is
 * job.c. Parsing is strict and happens before anything starts: a bad flag, a host
 * list with too few slots or an unknown interface is one line `hvdrun: error: ...`
 * on stderr and exit status 2. Flags end at the first argument that is not one (or
 * after `--`): that is the program, and everything after it belongs to the program.
 * Flags that also exist in horovodrun have its names and meanings.
 *
 * Flags that set a runtime setting (--cycle-time-ms -> HVD_CYCLE_TIME ...) are
 * checked against the runtime's own settings table (runtime/config.c), so hvdrun
 * refuses exactly what hvd_init would.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "common/log.h"
#include "common/util.h"
#include "hvd.h"
#include "runtime/config.h"
#include "tools/hvdrun/hvdrun.h"

static const char usage_text[] = "usage: hvdrun -np N [-H HOST:SLOTS,... | --hostfile "
                                 "FILE] [options] PROGRAM [ARGS...]\n";

static const char help_text[] =
    "\n"
    "Start N ranks of PROGRAM as one hvd job, on this host or across hosts (over ssh),\n"
    "forward their output and supervise them: if any rank fails, the others are told\n"
    "why and stopped.\n"
    "\n"
    "ranks and hosts:\n"
    "  -np N, --num-proc N     number of ranks to start (required, 1..65536)\n"
    "  -H, --hosts H:S,...     hosts and their slots, e.g. -H node1:4,node2:4 (a host\n"
    "                          without :S has 1 slot). Ranks fill the hosts in this\n"
    "                          order, each host's ranks consecutive. Default: this host\n"
    "                          with N slots. localhost, this host's name and addresses\n"
    "                          of its interfaces run here; other hosts run over ssh\n"
    "  --hostfile FILE         the hosts from FILE, one 'HOST slots=N' per line ('#'\n"
    "                          starts a comment); not together with -H\n"
    "  -p, --ssh-port PORT     ssh port of the remote hosts\n"
    "  -i, --ssh-identity-file FILE\n"
    "                          ssh private key for the remote hosts\n"
    "  --network-interface IF  the rendezvous server listens on IF's IPv4 address, and\n"
    "                          the ranks' network transport uses IF (HVD_OFI_IFACE).\n"
    "                          Default: the address this host uses to reach the first\n"
    "                          remote host, or 127.0.0.1 when every rank runs here\n"
    "                          (and then HVD_OFI_IFACE=lo: the ranks' network\n"
    "                          endpoints listen on loopback only)\n"
    "  --rendezvous-bind ADDR  the rendezvous server listens on ADDR (an IPv4 or IPv6\n"
    "                          literal) instead; 0.0.0.0 or :: listens on every\n"
    "                          interface (ranks still connect to the address chosen\n"
    "                          above). See docs/security.md\n"
    "  --start-timeout SECONDS how long ranks may take to connect to the rendezvous\n"
    "                          server before the job is stopped, naming them (default\n"
    "                          60; 0 waits forever; also HVD_START_TIMEOUT for "
    "hvd_init)\n"
    "\n"
    "runtime settings (each sets a variable for every rank):\n"
    "  --fusion-threshold-mb MB  fuse allreduces up to MB MiB (HVD_FUSION_THRESHOLD)\n"
    "  --cycle-time-ms MS        coordinator cycle time (HVD_CYCLE_TIME)\n"
    "  --cache-capacity N        response cache entries, 0 disables "
    "(HVD_CACHE_CAPACITY)\n"
    "  --hierarchical-allreduce  HVD_HIERARCHICAL_ALLREDUCE=1 (--no-hierarchical-\n"
    "                            allreduce: =0). The runtime ignores it for now: every\n"
    "                            allreduce is flat\n"
    "  --timeline-filename FILE  rank 0 writes a Chrome trace to FILE (HVD_TIMELINE)\n"
    "  --timeline-mark-cycles    mark negotiation cycles in it "
    "(HVD_TIMELINE_MARK_CYCLES)\n"
    "  --stall-check-warning-time-seconds S\n"
    "                            warn about stalled tensors after S s\n"
    "                            (HVD_STALL_CHECK_TIME_SECONDS)\n"
    "  --stall-check-shutdown-time-seconds S\n"
    "                            fail stalled operations after S s, 0 = never\n"
    "                            (HVD_STALL_SHUTDOWN_TIME_SECONDS)\n"
    "  --no-stall-check          disable the stall check (HVD_STALL_CHECK_DISABLE=1)\n"
    "  --log-level LEVEL         trace, debug, info, warning, error or fatal, for the\n"
    "                            ranks and hvdrun (HVD_LOG_LEVEL)\n"
    "  -x VAR[=VALUE]            give every rank VAR (hvdrun's value, or VALUE);\n"
    "                            repeatable. A flag above wins over -x of its variable\n"
    "\n"
    "placement (hwloc; on each host, for the ranks on it):\n"
    "  --map-by slot|core|numa   local rank i goes to the i-th core (slot, core: the\n"
    "                            same), or round robin over NUMA nodes (numa). Default\n"
    "                            slot\n"
    "  --bind-to auto|none|core|numa\n"
    "                            restrict each rank to its core, to that core's NUMA\n"
    "                            node, or not at all. Default auto: an equal share of\n"
    "                            the host's cores per rank (cores / ranks on it), none\n"
    "                            when ranks outnumber cores. Set before the program\n"
    "                            starts. With core, more ranks than cores share them\n"
    "\n"
    "output:\n"
    "  --tag-output            prefix each output line with [RANK]<stdout>: or\n"
    "                          [RANK]<stderr>: (default)\n"
    "  --no-tag-output         forward output without prefixes (still line by line)\n"
    "  --output-filename DIR   also write each rank's output, untouched, to\n"
    "                          DIR/rank.N/stdout and DIR/rank.N/stderr (N zero-padded\n"
    "                          to the width of the largest rank)\n"
    "  --verbose               print the hosts, this host's hwloc topology (packages,\n"
    "                          NUMA nodes, cores, PUs), each rank's placement (remote\n"
    "                          ranks print theirs), the rendezvous address, each\n"
    "                          rank's command and rank events, to stderr\n"
    "  --dry-run               print what would run for each rank (host, command,\n"
    "                          environment without the job token) and exit 0\n"
    "  -h, --help              show this help and exit\n"
    "  -v, --version           show the version and exit\n"
    "  --                      end of options: the next argument is PROGRAM\n"
    "\n"
    "Each rank runs in its own process group with hvdrun's environment plus\n"
    "HVD_RANK, HVD_SIZE, HVD_LOCAL_RANK, HVD_LOCAL_SIZE (ranks on its host),\n"
    "HVD_CROSS_RANK, HVD_CROSS_SIZE (as Horovod: with equal slots, the host's index\n"
    "and the number of hosts), HVD_HOSTNAME (the host as given in -H),\n"
    "HVD_RENDEZVOUS_ADDR, HVD_RENDEZVOUS_PORT and HVD_JOB_TOKEN. Its stdin is\n"
    "/dev/null; its stdout and stderr go to hvdrun's a whole line at a time.\n"
    "\n"
    "Remote ranks: before anything starts, hvdrun checks every remote host with\n"
    "`ssh -o BatchMode=yes -o ConnectTimeout=10 HOST test -x <this hvdrun>`, all at\n"
    "once (ConnectTimeout is --start-timeout if that is shorter).\n"
    "hvdrun must be installed at the same path on every host. A rank runs as\n"
    "`ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new -o ServerAliveInterval=10\n"
    "-o ServerAliveCountMax=3 [-p] [-i] HOST hvdrun --hvdrun-remote ... -- PROGRAM\n"
    "ARGS`, in the same working directory (a host that stops answering for about\n"
    "40 s ends its ssh, which fails the job naming it). Its\n"
    "environment (the variables above, the settings and -x, hvdrun's HVD_*, HOROVOD_*,\n"
    "FI_* and *SAN_OPTIONS variables) and the job token travel on ssh's stdin, never on\n"
    "a command line. The remote login's environment is the rest. Closing that ssh\n"
    "session stops the rank's whole process group.\n"
    "\n"
    "When a rank exits with a non-zero status or is killed by a signal, hvdrun aborts\n"
    "the job on the rendezvous server (the other ranks' operations fail naming that\n"
    "rank), sends SIGTERM to the remaining ranks after 3 s and SIGKILL 3 s later.\n"
    "SIGINT, SIGTERM and SIGHUP sent to hvdrun are forwarded to every rank, remote\n"
    "ones included (a second one sends SIGKILL at once); SIGKILL follows after 3 s.\n"
    "Processes the ranks leave behind (in their process groups, or orphaned) are\n"
    "stopped too. A rank that exits 0 after hvd_init without hvd_shutdown is a failure\n"
    "too (status 1). If hvdrun itself is killed, the ranks' operations fail (lost\n"
    "connection to the rendezvous server) and each rank ends itself 5 s later;\n"
    "remote ranks are also stopped when their ssh sessions close. See\n"
    "docs/failures.md.\n"
    "\n"
    "exit status:\n"
    "  0        every rank exited with status 0\n"
    "  1        the first rank to fail exited with status 0 before hvd_shutdown\n"
    "           completed\n"
    "  S        the first rank to fail exited with status S (128+N: killed by signal\n"
    "           N; ssh carries only a status, so a remote rank that exits 128+N is\n"
    "           reported as killed by signal N)\n"
    "  128+N    hvdrun was interrupted by signal N\n"
    "  255      ssh to a rank's host failed or the connection was lost\n"
    "  1        a rank did not connect in time, a host was unreachable, or hvdrun\n"
    "           itself failed\n"
    "  2        bad command line, or fewer slots than ranks\n"
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

void hvdrun_shell_quote(char *buf, size_t size, size_t *off, const char *s) {
  size_t o = *off;
  int plain =
      *s != '\0' && strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                              "0123456789_-+=/.,:@%") == strlen(s);
  if (size == 0) return;
  if (plain) {
    for (; *s != '\0' && o + 1 < size; s++)
      buf[o++] = *s;
  } else {
    if (o + 1 < size) buf[o++] = '\'';
    for (; *s != '\0' && o + 5 < size; s++) {
      if (*s == '\'') {
        memcpy(buf + o, "'\\''", 4);
        o += 4;
      } else {
        buf[o++] = *s;
      }
    }
    if (o + 1 < size) buf[o++] = '\'';
  }
  buf[o < size ? o : size - 1] = '\0';
  *off = o;
}

/* ---- command line ---------------------------------------------------------------- */

enum {
  F_NP,
  F_HOSTS,
  F_HOSTFILE,
  F_SSH_PORT,
  F_SSH_ID,
  F_IFACE,
  F_RDV_BIND,
  F_START_TIMEOUT,
  F_FUSION,
  F_CYCLE,
  F_CACHE,
  F_HIER,
  F_NO_HIER,
  F_TIMELINE,
  F_MARK_CYCLES,
  F_STALL_WARN,
  F_STALL_SHUT,
  F_NO_STALL,
  F_LOG_LEVEL,
  F_X,
  F_MAP,
  F_BIND,
  F_TAG,
  F_NO_TAG,
  F_OUTPUT,
  F_VERBOSE,
  F_DRY_RUN,
  F_HELP,
  F_VERSION
};

static const struct flag {
  const char *name;
  int id;
  int takes_value;
} flags[] = {
    {"-np", F_NP, 1},
    {"--num-proc", F_NP, 1},
    {"-H", F_HOSTS, 1},
    {"--hosts", F_HOSTS, 1},
    {"-hostfile", F_HOSTFILE, 1},
    {"--hostfile", F_HOSTFILE, 1},
    {"-p", F_SSH_PORT, 1},
    {"--ssh-port", F_SSH_PORT, 1},
    {"-i", F_SSH_ID, 1},
    {"--ssh-identity-file", F_SSH_ID, 1},
    {"--network-interface", F_IFACE, 1},
    {"--network-interfaces", F_IFACE, 1},
    {"--rendezvous-bind", F_RDV_BIND, 1},
    {"--start-timeout", F_START_TIMEOUT, 1},
    {"--fusion-threshold-mb", F_FUSION, 1},
    {"--cycle-time-ms", F_CYCLE, 1},
    {"--cache-capacity", F_CACHE, 1},
    {"--hierarchical-allreduce", F_HIER, 0},
    {"--no-hierarchical-allreduce", F_NO_HIER, 0},
    {"--timeline-filename", F_TIMELINE, 1},
    {"--timeline-mark-cycles", F_MARK_CYCLES, 0},
    {"--stall-check-warning-time-seconds", F_STALL_WARN, 1},
    {"--stall-check-shutdown-time-seconds", F_STALL_SHUT, 1},
    {"--no-stall-check", F_NO_STALL, 0},
    {"--log-level", F_LOG_LEVEL, 1},
    {"-x", F_X, 1},
    {"--map-by", F_MAP, 1},
    {"--bind-to", F_BIND, 1},
    {"--tag-output", F_TAG, 0},
    {"--no-tag-output", F_NO_TAG, 0},
    {"--output-filename", F_OUTPUT, 1},
    {"--verbose", F_VERBOSE, 0},
    {"--dry-run", F_DRY_RUN, 0},
    {"-h", F_HELP, 0},
    {"--help", F_HELP, 0},
    {"-v", F_VERSION, 0},
    {"--version", F_VERSION, 0},
};

/* The variables hvdrun sets per rank: -x may not set them. */
static const char *const job_var_names[] = {"HVD_RANK",
                                            "HVD_SIZE",
                                            "HVD_LOCAL_RANK",
                                            "HVD_LOCAL_SIZE",
                                            "HVD_CROSS_RANK",
                                            "HVD_CROSS_SIZE",
                                            "HVD_HOSTNAME",
                                            "HVD_RENDEZVOUS_ADDR",
                                            "HVD_RENDEZVOUS_PORT",
                                            "HVD_JOB_TOKEN",
                                            NULL};

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

static int push_env(char ***list, int *n, const char *name, const char *value,
                    hvd_err_t *err) {
  size_t len = strlen(name) + strlen(value) + 2;
  char *e = malloc(len);
  char **nl = realloc(*list, (size_t)(*n + 1) * sizeof *nl);
  if (e == NULL || nl == NULL) {
    free(e);
    if (nl != NULL) *list = nl;
    hvd_err_set(err, "out of memory");
    return -1;
  }
  snprintf(e, len, "%s=%s", name, value);
  *list = nl;
  nl[(*n)++] = e;
  return 0;
}

/* Check value as the ranks' hvd_init will (the runtime's settings table); flag names
 * it in the message. Returns 0 or -1 with err. */
static int check_setting(const char *flag, const char *var, const char *value,
                         hvd_err_t *err) {
  char expected[256];
  if (hvd_config_check(var, value, expected, sizeof expected) != 0) return 0;
  hvd_err_set(err, "%s: '%s' is not valid: expected %s", flag, value, expected);
  return -1;
}

static int set_setting(hvdrun_opts_t *o, const char *flag, const char *var,
                       const char *value, hvd_err_t *err) {
  if (check_setting(flag, var, value, err) != 0) return -1;
  return push_env(&o->flag_env, &o->nflag_env, var, value, err);
}

/* Every rank on this host: the ranks talk over shared memory, but each still opens
 * a network endpoint (also the fallback when shared memory is unavailable), which
 * would listen, unauthenticated, on the first external interface. Put it on loopback
 * unless the interface was chosen (--network-interface, HVD_OFI_IFACE or its alias
 * in hvdrun's environment, -x). See docs/security.md. */
static int loopback_data_plane(hvdrun_opts_t *o, hvd_err_t *err) {
  if (o->any_remote || o->iface != NULL || getenv("HVD_OFI_IFACE") != NULL ||
      getenv("HOROVOD_GLOO_IFACE") != NULL)
    return 0;
  for (int i = 0; i < o->nx_env; i++)
    if (strncmp(o->x_env[i], "HVD_OFI_IFACE=", 14) == 0 ||
        strncmp(o->x_env[i], "HOROVOD_GLOO_IFACE=", 19) == 0)
      return 0;
  return set_setting(o, "single-host job", "HVD_OFI_IFACE", "lo", err);
}

static int add_x(hvdrun_opts_t *o, const char *spec, hvd_err_t *err) {
  size_t n = strcspn(spec, "=");
  char name[256];
  if (n == 0 || n >= sizeof name || isdigit((unsigned char)spec[0]) ||
      strspn(spec, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") !=
          n) {
    hvd_err_set(err, "-x '%s': expected VAR or VAR=VALUE with a variable name", spec);
    return -1;
  }
  memcpy(name, spec, n);
  name[n] = '\0';
  for (int i = 0; job_var_names[i] != NULL; i++)
    if (strcmp(name, job_var_names[i]) == 0) {
      hvd_err_set(err, "-x %s: hvdrun sets %s for each rank", name, name);
      return -1;
    }
  const char *value = spec[n] == '=' ? spec + n + 1 : getenv(name);
  if (value == NULL) {
    hvdrun_say("warning: -x %s: %s is not set in hvdrun's environment; not forwarding it",
               name, name);
    return 0;
  }
  return push_env(&o->x_env, &o->nx_env, name, value, err);
}

static int lookup_name(const char *const *names, const char *s) {
  for (int i = 0; names[i] != NULL; i++)
    if (strcmp(names[i], s) == 0) return i;
  return -1;
}

/* One flag with its value (NULL for flags without). Returns 0, 1 for --help or
 * --version (handled), -1 with err. */
static int apply_flag(hvdrun_opts_t *o, const struct flag *fl, const char *val,
                      const char **hosts_spec, const char **hostfile, hvd_err_t *err) {
  long v;
  char buf[64];
  switch (fl->id) {
  case F_HELP:
    printf("%s%s", usage_text, help_text);
    return 1;
  case F_VERSION:
    printf("hvdrun (hvd) %d.%d.%d\n", HVD_VERSION_MAJOR, HVD_VERSION_MINOR,
           HVD_VERSION_PATCH);
    return 1;
  case F_NP:
    if (hvd_parse_int(val, 1, HVDRUN_MAX_NP, &v) != 0) {
      hvd_err_set(err, "%s: '%s' is not a number of ranks (1..%d)", fl->name, val,
                  HVDRUN_MAX_NP);
      return -1;
    }
    o->np = (int)v;
    return 0;
  case F_HOSTS:
    *hosts_spec = val;
    return 0;
  case F_HOSTFILE:
    *hostfile = val;
    return 0;
  case F_SSH_PORT:
    if (hvd_parse_int(val, 1, 65535, &v) != 0) {
      hvd_err_set(err, "%s: '%s' is not a port number (1..65535)", fl->name, val);
      return -1;
    }
    o->ssh_port = (int)v;
    return 0;
  case F_SSH_ID:
    if (access(val, R_OK) != 0) {
      hvd_err_set(err, "%s %s: %s", fl->name, val, strerror(errno));
      return -1;
    }
    o->ssh_identity = val;
    return 0;
  case F_IFACE:
    if (*val == '\0' || strchr(val, ',') != NULL || strlen(val) >= 16) {
      hvd_err_set(err, "%s: '%s' is not one interface name", fl->name, val);
      return -1;
    }
    o->iface = val;
    return set_setting(o, fl->name, "HVD_OFI_IFACE", val, err);
  case F_RDV_BIND: {
    unsigned char addr[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, val, addr) != 1 && inet_pton(AF_INET6, val, addr) != 1) {
      hvd_err_set(err, "%s: '%s' is not an IPv4 or IPv6 address", fl->name, val);
      return -1;
    }
    o->rdv_bind_flag = val;
    return 0;
  }
  case F_START_TIMEOUT:
    if (hvd_parse_int(val, 0, 86400, &v) != 0) {
      hvd_err_set(err, "--start-timeout: '%s' is not a number of seconds (0..86400)",
                  val);
      return -1;
    }
    o->start_timeout_s = (int)v;
    o->start_timeout_given = 1;
    return 0;
  case F_FUSION:
    if (hvd_parse_int(val, 0, 16384, &v) != 0) {
      hvd_err_set(err,
                  "%s: '%s' is not valid: expected a whole number of MiB from 0 to 16384",
                  fl->name, val);
      return -1;
    }
    snprintf(buf, sizeof buf, "%ld", v * 1024 * 1024);
    return set_setting(o, fl->name, "HVD_FUSION_THRESHOLD", buf, err);
  case F_CYCLE:
    return set_setting(o, fl->name, "HVD_CYCLE_TIME", val, err);
  case F_CACHE:
    return set_setting(o, fl->name, "HVD_CACHE_CAPACITY", val, err);
  case F_HIER:
  case F_NO_HIER:
    return set_setting(o, fl->name, "HVD_HIERARCHICAL_ALLREDUCE",
                       fl->id == F_HIER ? "1" : "0", err);
  case F_TIMELINE:
    return set_setting(o, fl->name, "HVD_TIMELINE", val, err);
  case F_MARK_CYCLES:
    return set_setting(o, fl->name, "HVD_TIMELINE_MARK_CYCLES", "1", err);
  case F_STALL_WARN:
    return set_setting(o, fl->name, "HVD_STALL_CHECK_TIME_SECONDS", val, err);
  case F_STALL_SHUT:
    return set_setting(o, fl->name, "HVD_STALL_SHUTDOWN_TIME_SECONDS", val, err);
  case F_NO_STALL:
    return set_setting(o, fl->name, "HVD_STALL_CHECK_DISABLE", "1", err);
  case F_LOG_LEVEL: {
    int l = hvd_log_parse_level(val);
    if (l < 0 || l == HVD_LOG_NONE) {
      hvd_err_set(
          err,
          "%s: '%s' is not valid: expected trace, debug, info, warning, error or fatal",
          fl->name, val);
      return -1;
    }
    hvd_log_set_level((hvd_log_level_t)l);
    snprintf(buf, sizeof buf, "%s", val);
    for (char *c = buf; *c; c++)
      *c = (char)tolower((unsigned char)*c);
    return set_setting(o, fl->name, "HVD_LOG_LEVEL", buf, err);
  }
  case F_X:
    return add_x(o, val, err);
  case F_MAP:
  case F_BIND: {
    const char *const *names = fl->id == F_MAP ? hvdrun_map_names : hvdrun_bind_names;
    int k = lookup_name(names, val);
    if (k < 0) {
      hvd_err_set(err, "%s: '%s' is not valid: expected %s", fl->name, val,
                  fl->id == F_MAP ? "slot, core or numa" : "none, core or numa");
      return -1;
    }
    if (fl->id == F_MAP)
      o->map_by = (hvdrun_map_t)k;
    else
      o->bind_to = (hvdrun_bind_t)k;
    return 0;
  }
  case F_TAG:
  case F_NO_TAG:
    o->tag_output = fl->id == F_TAG;
    return 0;
  case F_OUTPUT:
    if (*val == '\0') {
      hvd_err_set(err, "--output-filename: empty directory name");
      return -1;
    }
    o->output_dir = val;
    return 0;
  case F_VERBOSE:
    o->verbose = 1;
    return 0;
  case F_DRY_RUN:
    o->dry_run = 1;
    return 0;
  }
  return 0;
}

/* Parse argv into opts. Returns 0 to run the job, 1 when --help or --version was
 * handled (exit 0), -1 with a one-line reason in err. */
static int parse_args(int argc, char **argv, hvdrun_opts_t *opts, hvd_err_t *err) {
  const char *hosts_spec = NULL, *hostfile = NULL;
  int i = 1;

  memset(opts, 0, sizeof *opts);
  opts->tag_output = 1;
  opts->bind_to = HVDRUN_BIND_AUTO;
  opts->start_timeout_s = HVDRUN_DEFAULT_START_TIMEOUT;

  for (; i < argc; i++) {
    const char *arg = argv[i];
    const char *val = NULL;
    const struct flag *fl = NULL;

    if (strcmp(arg, "--") == 0) {
      i++;
      break;
    }
    if (arg[0] != '-' || arg[1] == '\0') break; /* PROGRAM ("-" alone too) */
    for (size_t k = 0; k < HVD_ARRAY_SIZE(flags) && fl == NULL; k++)
      if (match_flag(arg, flags[k].name, flags[k].takes_value, &val)) fl = &flags[k];
    if (fl == NULL) {
      hvd_err_set(err, "unknown option '%s' (see hvdrun --help)", arg);
      return -1;
    }
    if (fl->takes_value && val == NULL) {
      if (i + 1 >= argc) {
        hvd_err_set(err, "%s needs a value", fl->name);
        return -1;
      }
      val = argv[++i];
    }
    int rc = apply_flag(opts, fl, val, &hosts_spec, &hostfile, err);
    if (rc != 0) return rc;
  }

  if (opts->np == 0) {
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

  if (hosts_spec != NULL && hostfile != NULL) {
    hvd_err_set(err, "-H and --hostfile cannot be used together");
    return -1;
  }
  if (hosts_spec != NULL) {
    if (hvdrun_parse_hosts(hosts_spec, &opts->hosts, &opts->nhosts, err) != 0) return -1;
  } else if (hostfile != NULL) {
    if (hvdrun_parse_hostfile(hostfile, &opts->hosts, &opts->nhosts, err) != 0) return -1;
  } else {
    opts->hosts = calloc(1, sizeof *opts->hosts);
    if (opts->hosts == NULL) {
      hvd_err_set(err, "out of memory");
      return -1;
    }
    if (gethostname(opts->hosts[0].name, sizeof opts->hosts[0].name) != 0 ||
        opts->hosts[0].name[0] == '\0')
      snprintf(opts->hosts[0].name, sizeof opts->hosts[0].name, "localhost");
    opts->hosts[0].name[sizeof opts->hosts[0].name - 1] = '\0';
    opts->hosts[0].slots = opts->np;
    opts->nhosts = 1;
  }
  if (hvdrun_assign(opts, err) != 0) return -1;
  if (loopback_data_plane(opts, err) != 0) return -1;
  if (opts->start_timeout_given && opts->start_timeout_s > 0) {
    char buf[16];
    snprintf(buf, sizeof buf, "%d", opts->start_timeout_s);
    if (set_setting(opts, "--start-timeout", "HVD_START_TIMEOUT", buf, err) != 0)
      return -1;
  }
  if (getcwd(opts->cwd, sizeof opts->cwd) == NULL) {
    hvd_err_set(err, "cannot get the working directory: %s", strerror(errno));
    return -1;
  }
  ssize_t n = readlink("/proc/self/exe", opts->self_exe, sizeof opts->self_exe - 1);
  if (n <= 0) {
    hvd_err_set(err, "cannot find hvdrun's own path: %s", strerror(errno));
    return -1;
  }
  opts->self_exe[n] = '\0';
  return hvdrun_pick_rdv_addr(opts, err);
}

static void free_opts(hvdrun_opts_t *o) {
  for (int i = 0; i < o->nflag_env; i++)
    free(o->flag_env[i]);
  for (int i = 0; i < o->nx_env; i++)
    free(o->x_env[i]);
  free(o->flag_env);
  free(o->x_env);
  free(o->hosts);
}

int main(int argc, char **argv) {
  hvdrun_opts_t opts;
  hvd_err_t err = {{0}};

  if (argc > 1 && strcmp(argv[1], HVDRUN_EXEC_FLAG) == 0)
    return hvdrun_exec_main(argc, argv);
  if (argc > 1 && strcmp(argv[1], HVDRUN_REMOTE_FLAG) == 0)
    return hvdrun_remote_main(argc, argv);

  /* The rendezvous server logs through common/log (HVD_LOG_LEVEL; --log-level wins).
   * A bad level is the ranks' to report: hvd_init fails naming it. */
  (void)hvd_log_init_from_env();
  hvd_log_set_prefix("hvdrun");
  int rc = parse_args(argc, argv, &opts, &err);
  if (rc > 0) {
    free_opts(&opts);
    return fflush(stdout) == 0 ? 0 : 1;
  }
  if (rc < 0) {
    hvdrun_say("error: %s", err.msg);
    free_opts(&opts);
    return HVDRUN_EXIT_USAGE;
  }
  rc = hvdrun_run(&opts);
  free_opts(&opts);
  return rc;
}
