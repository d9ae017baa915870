/*
 * hvdrun as people use it across hosts, and its command line.
 *
 * Test hosts are network namespaces on this machine: a bridge in the root namespace
 * (198.18.K.1/24, K from this process's pid so that runs do not collide) and one
 * namespace per host (198.18.K.2, .3) joined to it by a veth pair, each running a
 * real sshd (its own config, a throwaway host key, authorized_keys for a throwaway
 * client key, all in a temporary directory). hvdrun reaches them through `ssh`
 * found first in PATH: a two-line wrapper that adds `-F <our ssh_config>`, so that
 * known_hosts lives in the temporary directory and /root/.ssh is never touched.
 * The namespaces share this machine's file system and /dev/shm, so the ranks find
 * the same binaries and working directory; each namespace is a separate host
 * because its ranks have their own HVD_HOSTNAME. Everything is torn down after
 * each test (and leftovers of a run that was killed are removed by the next one).
 * Without root, `ip` or sshd the tests are skipped, saying why.
 *
 * Traffic goes only to loopback and the 198.18.K.x addresses made here.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hwloc.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "hvd.h"

#define MAX_HOSTS 3
#define NS_PREFIX "hvdmh"

extern char **environ;

typedef struct testnet {
  int up;
  int pid; /* of the test process: in every name */
  int octet;
  char dir[256];
  char bridge[16];
  int nhosts;
  char ns[MAX_HOSTS][32];
  char addr[MAX_HOSTS][32];
  pid_t sshd[MAX_HOSTS];
  int made_run_sshd;
  int root_ssh_existed;
  char path_env[8192]; /* PATH=<dir>/bin:... for hvdrun */
  char key[300];
} testnet_t;

static testnet_t net;

/* ---- small helpers ----------------------------------------------------------------- */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Run a shell command quietly; returns its exit status (-1 on timeout). */
static int sh_quiet(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh_quiet(const char *fmt, ...) {
  char cmd[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  run_result_t r = run_sh(cmd, NULL, 30);
  int st = r.timed_out ? -1 : (r.exited ? r.status : 128 + r.status);
  if (st != 0) cr_log_info("`%s` -> %d: %s", cmd, st, r.out);
  run_free(&r);
  return st;
}

static int write_file(const char *path, const char *text, mode_t mode) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return -1;
  size_t n = strlen(text);
  int ok = write(fd, text, n) == (ssize_t)n;
  close(fd);
  return ok ? 0 : -1;
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) return NULL;
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap + 1);
  size_t got;
  while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
    n += got;
    if (n == cap) {
      cap *= 2;
      buf = realloc(buf, cap + 1);
    }
  }
  fclose(f);
  buf[n] = '\0';
  if (len) *len = n;
  return buf;
}

/* Pids of the processes in namespace ns. */
static int ns_pids(const char *ns, int *pids, int max) {
  char cmd[128];
  int n = 0, p;
  snprintf(cmd, sizeof cmd, "ip netns pids %s 2>/dev/null", ns);
  FILE *f = popen(cmd, "r");
  if (f == NULL) return 0;
  while (n < max && fscanf(f, "%d", &p) == 1)
    pids[n++] = p;
  pclose(f);
  return n;
}

static void proc_cmdline(int pid, char *buf, size_t size) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
  buf[0] = '\0';
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ssize_t n = read(fd, buf, size - 1);
  close(fd);
  if (n <= 0) return;
  for (ssize_t i = 0; i < n; i++)
    if (buf[i] == '\0') buf[i] = ' ';
  buf[n] = '\0';
}

static int proc_comm_is(int pid, const char *comm) {
  char path[64], buf[64];
  snprintf(path, sizeof path, "/proc/%d/comm", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  buf[strcspn(buf, "\n")] = '\0';
  return strcmp(buf, comm) == 0;
}

/* Processes in host h's namespace other than its listening sshd, as text ("" if
 * none), waiting up to wait_s for them to go. */
static void leftovers(int h, double wait_s, char *out, size_t size) {
  double end = now_s() + wait_s;
  for (;;) {
    int pids[256];
    int n = ns_pids(net.ns[h], pids, 256);
    size_t off = 0;
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
      char cl[512];
      proc_cmdline(pids[i], cl, sizeof cl);
      if (pids[i] == net.sshd[h] || strstr(cl, "[listener]") != NULL || cl[0] == '\0')
        continue;
      off += (size_t)snprintf(out + off, off < size ? size - off : 0, "%d: %s; ", pids[i],
                              cl);
      if (off >= size) off = size - 1;
    }
    if (out[0] == '\0' || now_s() > end) return;
    usleep(100 * 1000);
  }
}

/* A cpuset as env_report prints it: "0,1,2". */
static void cpu_list(hwloc_const_bitmap_t set, char *out, size_t size) {
  unsigned id;
  size_t off = 0;
  out[0] = '\0';
  hwloc_bitmap_foreach_begin(id, set) {
    if (off < size)
      off += (size_t)snprintf(out + off, size - off, "%s%u", off ? "," : "", id);
  }
  hwloc_bitmap_foreach_end();
}

/* What --bind-to core gives local rank lr: the allowed PUs of core lr. */
static void core_cpus(hwloc_topology_t topo, int lr, char *list, size_t lsize, char *ours,
                      size_t osize) {
  int ncores = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE);
  hwloc_obj_t core = hwloc_get_obj_by_type(topo, HWLOC_OBJ_CORE, (unsigned)(lr % ncores));
  cr_assert_not_null(core);
  hwloc_bitmap_t s = hwloc_bitmap_dup(core->cpuset);
  hwloc_bitmap_and(s, s, hwloc_topology_get_allowed_cpuset(topo));
  if (list != NULL) hwloc_bitmap_list_snprintf(list, lsize, s);
  cpu_list(s, ours, osize);
  hwloc_bitmap_free(s);
}

/* ---- test hosts -------------------------------------------------------------------- */

static void teardown_set(int pid) {
  char ns[32];
  for (int h = 0; h < MAX_HOSTS; h++) {
    snprintf(ns, sizeof ns, NS_PREFIX "%d%c", pid, 'a' + h);
    char path[64];
    snprintf(path, sizeof path, "/run/netns/%s", ns);
    if (access(path, F_OK) != 0) continue;
    int pids[512];
    int n = ns_pids(ns, pids, 512);
    for (int i = 0; i < n; i++)
      kill(pids[i], SIGKILL);
    for (int tries = 0; tries < 50 && ns_pids(ns, pids, 512) > 0; tries++)
      usleep(20000);
    sh_quiet("ip netns del %s", ns);
  }
  sh_quiet("ip link del " NS_PREFIX "b%d 2>/dev/null; true", pid);
}

/* Remove what a killed earlier run left behind (its pid is gone). */
static void remove_stale_sets(void) {
  DIR *d = opendir("/run/netns");
  struct dirent *e;
  int stale[64], n = 0;
  while (d != NULL && (e = readdir(d)) != NULL && n < 64) {
    int pid;
    char h;
    if (sscanf(e->d_name, NS_PREFIX "%d%c", &pid, &h) != 2 || pid == getpid()) continue;
    if (kill(pid, 0) == 0 || errno != ESRCH) continue;
    int dup = 0;
    for (int i = 0; i < n; i++)
      dup |= stale[i] == pid;
    if (!dup) stale[n++] = pid;
  }
  if (d != NULL) closedir(d);
  for (int i = 0; i < n; i++) {
    cr_log_info("removing test hosts left by process %d", stale[i]);
    teardown_set(stale[i]);
  }
}

static void net_down(void) {
  if (!net.up) return;
  teardown_set(net.pid);
  for (int h = 0; h < net.nhosts; h++)
    if (net.sshd[h] > 0) {
      kill(net.sshd[h], SIGKILL);
      waitpid(net.sshd[h], NULL, 0);
    }
  if (net.dir[0] != '\0') sh_quiet("rm -rf '%s'", net.dir);
  if (net.made_run_sshd) rmdir("/run/sshd");
  net.up = 0;
}

static int tcp_port_open(const char *addr, int port) {
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, addr, &sa.sin_addr);
  int ok = s >= 0 && connect(s, (struct sockaddr *)&sa, sizeof sa) == 0;
  if (s >= 0) close(s);
  return ok;
}

static pid_t start_sshd(int h) {
  char cfg[300], listen[64], log[300];
  snprintf(cfg, sizeof cfg, "%s/sshd_config", net.dir);
  snprintf(listen, sizeof listen, "ListenAddress=%s", net.addr[h]);
  snprintf(log, sizeof log, "%s/sshd.%d.log", net.dir, h);
  char *argv[] = {"ip", "netns", "exec", net.ns[h], "/usr/sbin/sshd", "-D",
                  "-e", "-f",    cfg,    "-o",      listen,           NULL};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = -1;
  if (posix_spawnp(&pid, "ip", &fa, NULL, argv, environ) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&fa);
  return pid;
}

/* Bring up nhosts test hosts with sshd, or skip the test saying why. */
static void net_up(int nhosts) {
  char why[512] = "";
  memset(&net, 0, sizeof net);
  net.pid = (int)getpid();
  net.octet = net.pid % 200 + 20;
  net.nhosts = nhosts;
  struct stat st;
  net.root_ssh_existed = stat("/root/.ssh", &st) == 0;

  if (geteuid() != 0)
    snprintf(why, sizeof why, "needs root to create network namespaces");
  else if (access("/usr/sbin/sshd", X_OK) != 0)
    snprintf(why, sizeof why, "no /usr/sbin/sshd (install openssh-server)");
  else if (sh_quiet("command -v ip && command -v ssh && command -v ssh-keygen") != 0)
    snprintf(why, sizeof why, "needs ip (iproute2), ssh and ssh-keygen (openssh-client)");
  if (why[0] != '\0') cr_skip_test("%s", why);

  remove_stale_sets();
  snprintf(net.dir, sizeof net.dir, "/tmp/hvd-multihost-%d-XXXXXX", net.pid);
  if (mkdtemp(net.dir) == NULL) cr_skip_test("mkdtemp: %s", strerror(errno));
  net.up = 1;
  snprintf(net.bridge, sizeof net.bridge, NS_PREFIX "b%d", net.pid);
  snprintf(net.key, sizeof net.key, "%s/id_client", net.dir);

  /* Keys and configurations. */
  if (sh_quiet("cd '%s' && ssh-keygen -q -t ed25519 -N '' -f host_key && "
               "ssh-keygen -q -t ed25519 -N '' -f id_client && cp id_client.pub "
               "authorized_keys && "
               "mkdir bin",
               net.dir) != 0) {
    net_down();
    cr_skip_test("ssh-keygen failed");
  }
  char path[400], text[4096];
  snprintf(path, sizeof path, "%s/sshd_config", net.dir);
  snprintf(text, sizeof text,
           "HostKey %s/host_key\nAuthorizedKeysFile %s/authorized_keys\nStrictModes no\n"
           "PasswordAuthentication no\nKbdInteractiveAuthentication "
           "no\nPubkeyAuthentication yes\n"
           "PermitRootLogin prohibit-password\nUsePAM no\nUseDNS no\nPidFile none\n"
           "MaxStartups 64\nLogLevel ERROR\n",
           net.dir, net.dir);
  cr_assert_eq(write_file(path, text, 0600), 0);
  snprintf(path, sizeof path, "%s/ssh_config", net.dir);
  snprintf(
      text, sizeof text,
      "Host *\n  UserKnownHostsFile %s/known_hosts\n  GlobalKnownHostsFile /dev/null\n"
      "  IdentitiesOnly yes\n  LogLevel ERROR\n",
      net.dir);
  cr_assert_eq(write_file(path, text, 0600), 0);
  snprintf(path, sizeof path, "%s/bin/ssh", net.dir);
  snprintf(text, sizeof text, "#!/bin/sh\nexec /usr/bin/ssh -F %s/ssh_config \"$@\"\n",
           net.dir);
  cr_assert_eq(write_file(path, text, 0755), 0);
  const char *old_path = getenv("PATH");
  snprintf(net.path_env, sizeof net.path_env, "PATH=%s/bin:%s", net.dir,
           old_path ? old_path : "/usr/bin:/bin");
  if (access("/run/sshd", F_OK) != 0) { /* sshd's privilege separation directory */
    if (mkdir("/run/sshd", 0755) == 0) net.made_run_sshd = 1;
  }

  /* Network: a bridge here, a namespace per host. */
  if (sh_quiet("ip link add %s type bridge && ip addr add 198.18.%d.1/24 dev %s && "
               "ip link set %s up",
               net.bridge, net.octet, net.bridge, net.bridge) != 0) {
    net_down();
    cr_skip_test("cannot create a bridge (ip link add ... type bridge)");
  }
  for (int h = 0; h < nhosts; h++) {
    snprintf(net.ns[h], sizeof net.ns[h], NS_PREFIX "%d%c", net.pid, 'a' + h);
    snprintf(net.addr[h], sizeof net.addr[h], "198.18.%d.%d", net.octet, h + 2);
    if (sh_quiet("ip netns add %s", net.ns[h]) != 0) {
      net_down();
      cr_skip_test("cannot create network namespaces (ip netns add)");
    }
    if (sh_quiet(
            "ip link add " NS_PREFIX "v%d%c type veth peer name eth0 netns %s && "
            "ip link set " NS_PREFIX "v%d%c master %s up && "
            "ip netns exec %s ip addr add %s/24 dev eth0 && "
            "ip netns exec %s ip link set eth0 up && ip netns exec %s ip link set lo up",
            net.pid, 'a' + h, net.ns[h], net.pid, 'a' + h, net.bridge, net.ns[h],
            net.addr[h], net.ns[h], net.ns[h]) != 0) {
      net_down();
      cr_skip_test("cannot create veth pairs into the namespaces");
    }
    net.sshd[h] = start_sshd(h);
    cr_assert_gt(net.sshd[h], 0, "cannot start sshd");
  }
  for (int h = 0; h < nhosts; h++) {
    double end = now_s() + 10;
    while (!tcp_port_open(net.addr[h], 22)) {
      if (now_s() > end) {
        char log[400];
        snprintf(log, sizeof log, "%s/sshd.%d.log", net.dir, h);
        char *txt = read_file(log, NULL);
        cr_log_error("sshd log: %s", txt ? txt : "");
        free(txt);
        cr_assert_fail("sshd on %s (%s) did not start listening", net.ns[h], net.addr[h]);
      }
      usleep(50 * 1000);
    }
  }
}

static void net_fini(void) {
  net_down();
  struct stat st;
  if (!net.root_ssh_existed && net.pid != 0 && stat("/root/.ssh", &st) == 0)
    cr_log_error("/root/.ssh appeared during the test");
}

/* hvdrun with the test hosts' ssh, as a shell command. */
static run_result_t hvdrun_sh(const char *args, double timeout) {
  char cmd[8192];
  snprintf(cmd, sizeof cmd, "%s %s", bin_path("hvdrun"), args);
  char *env[] = {net.path_env, NULL};
  run_result_t r = run_sh(cmd, net.path_env[0] ? env : NULL, timeout);
  cr_log_info("%s -> %s %d in %.1f s", cmd, r.exited ? "status" : "signal", r.status,
              r.seconds);
  return r;
}

static void assert_no_leftovers(void) {
  for (int h = 0; h < net.nhosts; h++) {
    char left[4096];
    leftovers(h, 10, left, sizeof left);
    cr_assert_str_empty(left, "processes left in %s (host %s): %s", net.ns[h],
                        net.addr[h], left);
  }
  double end = now_s() + 5;
  while (procs_matching("--hvdrun-remote") > 0 && now_s() < end)
    usleep(100 * 1000);
  char list[4096] = "";
  size_t off = 0;
  DIR *d = opendir("/proc");
  struct dirent *e;
  while (d != NULL && (e = readdir(d)) != NULL) {
    int pid = atoi(e->d_name);
    char cl[1024];
    if (pid <= 0 || pid == getpid()) continue;
    proc_cmdline(pid, cl, sizeof cl);
    if (strstr(cl, "--hvdrun-remote") != NULL && off < sizeof list)
      off += (size_t)snprintf(list + off, sizeof list - off, "%d: %s; ", pid, cl);
  }
  if (d != NULL) closedir(d);
  cr_assert_str_empty(list, "remote wrappers (or their ssh) left running: %s", list);
}

/* The line of the output that starts with prefix (static copy), or NULL. */
static const char *line_starting(const run_result_t *r, const char *prefix) {
  static char line[8192];
  for (const char *p = r->out; p != NULL && *p != '\0';) {
    const char *nl = strchr(p, '\n');
    size_t n = nl ? (size_t)(nl - p) : strlen(p);
    if (strncmp(p, prefix, strlen(prefix)) == 0) {
      if (n >= sizeof line) n = sizeof line - 1;
      memcpy(line, p, n);
      line[n] = '\0';
      return line;
    }
    p = nl ? nl + 1 : NULL;
  }
  return NULL;
}

/* ---- jobs across hosts ---------------------------------------------------------- */

TestSuite(multihost, .fini = net_fini);

Test(multihost, allreduce_4_ranks_on_2_hosts, .timeout = 240) {
  net_up(2);
  char args[2048];
  snprintf(
      args, sizeof args,
      "-np 4 -H %s:2,%s:2 -i %s --log-level debug %s --counts 0,1,7,N+1,1000,1000003 "
      "--dtypes float32,float64,int32,int64 --ops sum,max",
      net.addr[0], net.addr[1], net.key, prog_path("allreduce_check"));
  run_result_t r = hvdrun_sh(args, 180);
  if (r.status != 0) cr_log_error("%s", r.out);
  cr_assert(!r.timed_out && r.exited && r.status == 0, "job failed: %s", last_line(&r));
  for (int rank = 0; rank < 4; rank++) {
    char want[64];
    snprintf(want, sizeof want, "[%d]<stdout>:rank %d: ALL OK", rank, rank);
    cr_assert_eq(count_in(&r, want), 1, "no '%s'", want);
    /* shm to the other rank on its host, tcp to the two on the other host */
    snprintf(want, sizeof want, "rank %d connected: 1 peers over shm, 2 over tcp", rank);
    cr_assert_eq(count_in(&r, want), 1,
                 "rank %d did not use shm within and tcp between hosts", rank);
  }
  run_free(&r);
  assert_no_leftovers();
}

Test(multihost, rank_environment_binding_and_x, .timeout = 240) {
  QUICK_SKIP("allreduce_4_ranks_on_2_hosts starts remote ranks");
  net_up(2);
  char args[4096];
  /* Run from a directory of our own: remote ranks must start in it too. */
  snprintf(
      args, sizeof args,
      "cd %s && XFROMENV=fromenv %s -np 4 -H %s:2,%s:2 -i %s --bind-to core "
      "--cycle-time-ms 2.5 --fusion-threshold-mb 3 --cache-capacity 7 "
      "--hierarchical-allreduce --timeline-filename tl.json --timeline-mark-cycles "
      "--stall-check-warning-time-seconds 11 --stall-check-shutdown-time-seconds 22 "
      "--log-level info -x XSET=hello -x XFROMENV -x 'XSPACE=a b' %s --init "
      "HVD_CYCLE_TIME HVD_FUSION_THRESHOLD HVD_CACHE_CAPACITY HVD_HIERARCHICAL_ALLREDUCE "
      "HVD_TIMELINE HVD_TIMELINE_MARK_CYCLES HVD_STALL_CHECK_TIME_SECONDS "
      "HVD_STALL_SHUTDOWN_TIME_SECONDS HVD_LOG_LEVEL XSET XFROMENV XSPACE",
      net.dir, bin_path("hvdrun"), net.addr[0], net.addr[1], net.key,
      prog_path("env_report"));
  char *env[] = {net.path_env, NULL};
  run_result_t r = run_sh(args, env, 180);
  if (r.status != 0) cr_log_error("%s", r.out);
  cr_assert(!r.timed_out && r.exited && r.status == 0, "job failed: %s", last_line(&r));

  hwloc_topology_t topo;
  hwloc_topology_init(&topo);
  hwloc_topology_load(topo);
  for (int rank = 0; rank < 4; rank++) {
    char prefix[32], want[2048], cpus[256] = "";
    int lr = rank % 2;
    snprintf(prefix, sizeof prefix, "[%d]<stdout>:report ", rank);
    const char *line = line_starting(&r, prefix);
    cr_assert_not_null(line, "no report from rank %d:\n%s", rank, r.out);
    core_cpus(topo, lr, NULL, 0, cpus, sizeof cpus);
    snprintf(
        want, sizeof want,
        "%srank=%d size=4 local_rank=%d local_size=2 cross_rank=%d cross_size=2 host=%s "
        "cpus=%s cwd=%s HVD_CYCLE_TIME=2.5 HVD_FUSION_THRESHOLD=3145728 "
        "HVD_CACHE_CAPACITY=7 HVD_HIERARCHICAL_ALLREDUCE=1 HVD_TIMELINE=tl.json "
        "HVD_TIMELINE_MARK_CYCLES=1 HVD_STALL_CHECK_TIME_SECONDS=11 "
        "HVD_STALL_SHUTDOWN_TIME_SECONDS=22 HVD_LOG_LEVEL=info XSET=hello "
        "XFROMENV=fromenv XSPACE=a b init=ok end",
        prefix, rank, lr, rank / 2, net.addr[rank / 2], cpus, net.dir);
    cr_assert_str_eq(line, want);
  }
  hwloc_topology_destroy(topo);
  run_free(&r);
  assert_no_leftovers();
}

typedef struct token_watch {
  char dir[256];
  int found_on_cmdline;
  int checked;
  char token[64];
  char where[512];
} token_watch_t;

/* While the job runs: read the token a rank saw, then look for it in every command
 * line of every process (the namespaces share this pid namespace: that is `ps` on
 * every host). */
static void *watch_token(void *arg) {
  token_watch_t *w = arg;
  char path[400];
  snprintf(path, sizeof path, "%s/token.2", w->dir);
  double end = now_s() + 60;
  while (now_s() < end) {
    size_t n = 0;
    char *t = read_file(path, &n);
    if (t != NULL && n == 32) {
      snprintf(w->token, sizeof w->token, "%s", t);
      free(t);
      break;
    }
    free(t);
    usleep(50 * 1000);
  }
  if (w->token[0] == '\0') return NULL;
  for (int round = 0; round < 5; round++) {
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
      int pid = atoi(e->d_name);
      if (pid <= 0) continue;
      char cl[8192];
      proc_cmdline(pid, cl, sizeof cl);
      if (strstr(cl, w->token) != NULL) {
        w->found_on_cmdline = 1;
        snprintf(w->where, sizeof w->where, "pid %d: %.400s", pid, cl);
      }
      w->checked++;
    }
    if (d != NULL) closedir(d);
    usleep(200 * 1000);
  }
  return NULL;
}

Test(multihost, token_never_on_a_command_line, .timeout = 240) {
  net_up(2);
  token_watch_t w = {0};
  snprintf(w.dir, sizeof w.dir, "%s", net.dir);
  pthread_t th;
  pthread_create(&th, NULL, watch_token, &w);
  /* A local rank and one on each test host; each writes the token it got. */
  char args[2048];
  snprintf(args, sizeof args,
           "-np 3 -H localhost:1,%s:1,%s:1 -i %s sh -c "
           "'printf %%s \"$HVD_JOB_TOKEN\" > %s/token.$HVD_RANK; sleep 3'",
           net.addr[0], net.addr[1], net.key, net.dir);
  run_result_t r = hvdrun_sh(args, 120);
  pthread_join(th, NULL);
  if (r.status != 0) cr_log_error("%s", r.out);
  cr_assert(r.exited && r.status == 0, "job failed: %s", last_line(&r));
  cr_assert_eq(strlen(w.token), 32, "the remote rank got no 32-character token");
  for (int rank = 0; rank < 3; rank++) {
    char path[400];
    snprintf(path, sizeof path, "%s/token.%d", net.dir, rank);
    char *t = read_file(path, NULL);
    cr_assert_not_null(t);
    cr_assert_str_eq(t, w.token, "rank %d got another token", rank);
    free(t);
  }
  cr_assert_gt(w.checked, 0);
  cr_assert(!w.found_on_cmdline, "the job token is on a command line: %s", w.where);
  cr_assert_eq(count_in(&r, w.token), 0, "the token was printed");
  run_free(&r);
  assert_no_leftovers();
}

typedef struct killer {
  int host; /* namespace to kill a rank in */
  double killed_at;
  int pid;
  char what[512];
} killer_t;

static void *kill_remote_rank(void *arg) {
  killer_t *k = arg;
  double end = now_s() + 90;
  while (now_s() < end) {
    int pids[256], n = ns_pids(net.ns[k->host], pids, 256), found = 0;
    for (int i = 0; i < n; i++)
      if (proc_comm_is(pids[i], "allreduce_check")) found++;
    if (found == 2) break;
    usleep(50 * 1000);
  }
  sleep(2); /* well into the allreduce loop */
  int pids[256], n = ns_pids(net.ns[k->host], pids, 256);
  for (int i = 0; i < n; i++)
    if (proc_comm_is(pids[i], "allreduce_check")) {
      proc_cmdline(pids[i], k->what, sizeof k->what);
      k->pid = pids[i];
      k->killed_at = now_s();
      kill(pids[i], SIGKILL);
      break;
    }
  return NULL;
}

Test(multihost, remote_rank_killed_fails_fast, .timeout = 240) {
  net_up(2);
  killer_t k = {.host = 1};
  pthread_t th;
  pthread_create(&th, NULL, kill_remote_rank, &k);
  char args[2048];
  snprintf(args, sizeof args,
           "-np 4 -H %s:2,%s:2 -i %s %s --counts 1000,100000 --dtypes float32 --iters "
           "100000000",
           net.addr[0], net.addr[1], net.key, prog_path("allreduce_check"));
  run_result_t r = hvdrun_sh(args, 150);
  double ended = now_s();
  pthread_join(th, NULL);
  cr_assert_gt(k.pid, 0, "found no rank to kill on %s:\n%s", net.addr[1], r.out);
  cr_log_info("killed pid %d (%s); hvdrun ended %.2f s later; last line: %s", k.pid,
              k.what, ended - k.killed_at, last_line(&r));
  cr_assert(!r.timed_out, "hvdrun did not exit:\n%s", r.out);
  cr_assert(r.exited && r.status == 128 + SIGKILL, "exit status %d, want 137:\n%s",
            r.status, r.out);
  cr_assert_lt(ended - k.killed_at, 10.0, "took %.1f s to fail", ended - k.killed_at);
  const char *last = last_line(&r);
  char host[64];
  snprintf(host, sizeof host, "(host %s)", net.addr[1]);
  cr_assert(strncmp(last, "hvdrun: error: rank ", 20) == 0 &&
                strstr(last, host) != NULL && strstr(last, "SIGKILL") != NULL,
            "last line must name the rank, its host and the signal: '%s'", last);
  cr_assert(strstr(last, "rank 2 ") != NULL || strstr(last, "rank 3 ") != NULL,
            "the failed rank is 2 or 3: '%s'", last);
  run_free(&r);
  assert_no_leftovers();
}

Test(multihost, remote_output_whole_lines_and_files, .timeout = 240) {
  QUICK_SKIP("allreduce_4_ranks_on_2_hosts relays remote output");
  net_up(2);
  /* Partial lines written in two pieces, '\r', invalid UTF-8, a 100000-byte line
   * (longer than one piece), and 300 lines from each rank at once. */
  char script[400], args[4096];
  snprintf(script, sizeof script, "%s/print.sh", net.dir);
  cr_assert_eq(
      write_file(
          script,
          "printf 'part1-'; sleep 0.3; printf 'part2\\n'; printf 'cr\\rcr\\n'\n"
          "printf 'bad\\377\\376utf8\\n'; head -c 100000 /dev/zero | tr '\\0' x; echo\n"
          "i=0; while [ $i -lt 300 ]; do\n"
          "  echo \"rank $HVD_RANK line $i abcdefghijklmnopqrstuvwxyz0123456789\"\n"
          "  i=$((i+1))\n"
          "done\n"
          "printf 'to stderr\\n' >&2; printf 'no newline at the end'\n",
          0644),
      0);
  snprintf(args, sizeof args, "-np 4 -H %s:2,%s:2 -i %s --output-filename %s/out sh %s",
           net.addr[0], net.addr[1], net.key, net.dir, script);
  run_result_t r = hvdrun_sh(args, 120);
  if (r.status != 0) cr_log_error("%s", r.out);
  cr_assert(r.exited && r.status == 0, "job failed: %s", last_line(&r));
  for (int rank = 0; rank < 4; rank++) {
    char want[160];
    snprintf(want, sizeof want, "[%d]<stdout>:part1-part2\n", rank);
    cr_assert_eq(count_in(&r, want), 1, "partial line not joined for rank %d", rank);
    snprintf(want, sizeof want, "[%d]<stdout>:cr\rcr\n", rank);
    cr_assert_eq(count_in(&r, want), 1, "\\r line for rank %d", rank);
    snprintf(want, sizeof want, "[%d]<stdout>:bad\377\376utf8\n", rank);
    cr_assert_eq(count_in(&r, want), 1, "invalid UTF-8 line for rank %d", rank);
    snprintf(want, sizeof want, "[%d]<stderr>:to stderr\n", rank);
    cr_assert_eq(count_in(&r, want), 1);
    snprintf(want, sizeof want, "[%d]<stdout>:no newline at the end\n", rank);
    cr_assert_eq(count_in(&r, want), 1, "last partial line of rank %d", rank);
    for (int i = 0; i < 300; i += 37) {
      snprintf(want, sizeof want,
               "[%d]<stdout>:rank %d line %d abcdefghijklmnopqrstuvwxyz0123456789\n",
               rank, rank, i);
      cr_assert_eq(count_in(&r, want), 1, "missing or broken: %s", want);
    }
  }
  /* Every line is whole: it starts with a prefix, and lines of the loop are intact. */
  int lines = 0, xs = 0;
  for (char *p = r.out; *p != '\0';) {
    char *nl = strchr(p, '\n');
    size_t n = nl ? (size_t)(nl - p) : strlen(p);
    int rank;
    char tag[8];
    cr_assert(sscanf(p, "[%d]<%6[a-z]>:", &rank, tag) == 2 ||
                  strncmp(p, "hvdrun:", 7) == 0,
              "line without a prefix: '%.80s'", p);
    const char *body = memchr(p, ':', n);
    if (body != NULL && strncmp(body + 1, "rank ", 5) == 0)
      cr_assert(n > 36 &&
                    memcmp(p + n - 36, "abcdefghijklmnopqrstuvwxyz0123456789", 36) == 0,
                "broken line: '%.*s'", (int)n, p);
    if (body != NULL && body[1] == 'x')
      for (const char *c = body + 1; c < p + n; c++)
        xs += *c == 'x';
    lines++;
    p = nl ? nl + 1 : p + n;
  }
  cr_assert_eq(xs, 4 * 100000, "the long lines lost or gained bytes");
  /* --output-filename: the raw bytes, per rank and stream. */
  for (int rank = 0; rank < 4; rank++) {
    char path[400];
    size_t n = 0;
    snprintf(path, sizeof path, "%s/out/rank.%d/stdout", net.dir, rank);
    char *t = read_file(path, &n);
    cr_assert_not_null(t, "no %s", path);
    static const char head[] = "part1-part2\ncr\rcr\nbad\377\376utf8\nxxx";
    cr_assert(n > sizeof head && memcmp(t, head, sizeof head - 1) == 0, "%s starts wrong",
              path);
    cr_assert(n > 100000 && strcmp(t + n - 21, "no newline at the end") == 0,
              "%s ends wrong", path);
    free(t);
    snprintf(path, sizeof path, "%s/out/rank.%d/stderr", net.dir, rank);
    t = read_file(path, NULL);
    cr_assert_not_null(t);
    cr_assert_str_eq(t, "to stderr\n");
    free(t);
  }
  run_free(&r);
  assert_no_leftovers();
}

Test(multihost, rank_that_never_connects_is_named, .timeout = 240) {
  QUICK_SKIP("remote_rank_killed_fails_fast covers a failing remote rank");
  net_up(2);
  char args[2048];
  snprintf(args, sizeof args,
           "-np 4 -H %s:2,%s:2 -i %s --start-timeout 8 sh -c "
           "'if [ $HVD_RANK = 3 ]; then exec sleep 100; fi; exec %s --counts 10 --dtypes "
           "float32'",
           net.addr[0], net.addr[1], net.key, prog_path("allreduce_check"));
  run_result_t r = hvdrun_sh(args, 120);
  cr_assert(r.exited && r.status == 1, "want status 1, got %d:\n%s", r.status, r.out);
  cr_assert_str_eq(last_line(&r), "hvdrun: error: rank 3 did not connect within 8 s");
  run_free(&r);
  assert_no_leftovers();
}

Test(multihost, unreachable_host_fails_before_anything_starts, .timeout = 120) {
  QUICK_SKIP("no rank process starts");
  net_up(1);
  char args[2048], marker[400];
  snprintf(marker, sizeof marker, "%s/started", net.dir);
  /* .9 is on the test bridge but nobody has it. */
  snprintf(args, sizeof args,
           "-np 2 -H localhost:1,%s:1,198.18.%d.9:1 -i %s --start-timeout 3 "
           "sh -c 'touch %s.$HVD_RANK'",
           net.addr[0], net.octet, net.key, marker);
  run_result_t r = hvdrun_sh(args, 60);
  /* -np 2: the third host gets no rank and is not checked. */
  cr_assert(r.exited && r.status == 0, "%s", r.out);
  run_free(&r);
  unlink(strcat(strcpy(args, marker), ".0"));
  unlink(strcat(strcpy(args, marker), ".1"));

  snprintf(args, sizeof args,
           "-np 3 -H localhost:1,%s:1,198.18.%d.9:1 -i %s --start-timeout 3 "
           "sh -c 'touch %s.$HVD_RANK'",
           net.addr[0], net.octet, net.key, marker);
  r = hvdrun_sh(args, 60);
  cr_assert(r.exited && r.status == 1, "want status 1, got %d: %s", r.status, r.out);
  char want[128];
  snprintf(want, sizeof want,
           "hvdrun: error: cannot reach host '198.18.%d.9' by ssh: ", net.octet);
  cr_assert(strncmp(r.out, want, strlen(want)) == 0, "got: %s", r.out);
  cr_assert_eq(count_in(&r, "\n"), 1, "more than one line: %s", r.out);
  cr_assert_lt(r.seconds, 15.0);
  for (int i = 0; i < 3; i++) {
    char p[420];
    snprintf(p, sizeof p, "%s.%d", marker, i);
    cr_assert_neq(access(p, F_OK), 0, "rank %d started although a host was unreachable",
                  i);
  }
  run_free(&r);
  assert_no_leftovers();
}

/* Start a 3-rank job (one rank here, one on each test host) whose ranks trap SIGINT,
 * wait until all are up, send `sig` to hvdrun, and return what happened. */
static run_result_t signal_hvdrun(const char *sig, const char *marker) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd,
           "%s -np 3 -H localhost:1,%s:1,%s:1 -i %s sh -c "
           "'trap \"echo got INT $HVD_RANK; exit 7\" INT; touch %s/up.$HVD_RANK; "
           "while :; do sleep 0.1; done; echo %s' & p=$!; "
           "i=0; while [ $(ls %s/up.* 2>/dev/null | wc -l) -lt 3 ] && [ $i -lt 600 ]; do "
           "sleep 0.1; i=$((i+1)); done; kill -%s $p; wait $p",
           bin_path("hvdrun"), net.addr[0], net.addr[1], net.key, net.dir, marker,
           net.dir, sig);
  char *env[] = {net.path_env, NULL};
  run_result_t r = run_sh(cmd, env, 120);
  cr_log_info("SIG%s to hvdrun -> status %d in %.1f s", sig, r.status, r.seconds);
  return r;
}

Test(multihost, sigint_reaches_remote_ranks, .timeout = 240) {
  QUICK_SKIP("sigkill_to_hvdrun_leaves_no_rank stops remote ranks");
  net_up(2);
  run_result_t r = signal_hvdrun("INT", "sigint-marker");
  cr_assert(r.exited && r.status == 128 + SIGINT, "want 130, got %d:\n%s", r.status,
            r.out);
  for (int rank = 0; rank < 3; rank++) {
    char want[64];
    snprintf(want, sizeof want, "[%d]<stdout>:got INT %d\n", rank, rank);
    cr_assert_eq(count_in(&r, want), 1, "rank %d did not get SIGINT:\n%s", rank, r.out);
  }
  cr_assert_str_eq(last_line(&r),
                   "hvdrun: error: interrupted by SIGINT (2); stopped the job");
  run_free(&r);
  assert_no_leftovers();
  cr_assert_eq(procs_matching("sigint-marker"), 0);
}

Test(multihost, sigkill_to_hvdrun_leaves_no_rank, .timeout = 240) {
  net_up(2);
  run_result_t r = signal_hvdrun("KILL", "sigkill-marker");
  cr_assert(r.exited && r.status == 128 + SIGKILL, "want 137, got %d:\n%s", r.status,
            r.out);
  run_free(&r);
  /* Local rank: PR_SET_PDEATHSIG; remote ranks: their ssh sessions closed. */
  double end = now_s() + 10;
  while (procs_matching("sigkill-marker") > 0 && now_s() < end)
    usleep(100 * 1000);
  cr_assert_eq(procs_matching("sigkill-marker"), 0, "ranks survived hvdrun");
  assert_no_leftovers();
}

/* ---- network faults ------------------------------------------------------------- */

#define NETFAULT_T 3.0 /* HVD_TRANSPORT_TIMEOUT_SECONDS for these jobs */

typedef struct cutter {
  char progress[400]; /* rank 0's "start I T" / "end I T" lines (netfault_prog) */
  char veth[32];      /* the bridge side of host B's link */
  int idle;           /* cut 1 s after the second allreduce, not during the third */
  double cut_at;      /* CLOCK_MONOTONIC s just before the link went down; 0 = not cut */
  double cut_done;    /* ... and when `ip link set down` had returned */
  int iter;           /* the allreduce in flight then */
  double iter_s;      /* how long the one before it took */
  double b_gone_at;   /* when no rank was left in host B's namespace; 0 = never */
} cutter_t;

/* Last "what I T" line of the progress file: returns I (or -1), *t = T. */
static int last_event(const char *path, const char *what, double *t) {
  char *text = read_file(path, NULL);
  int it = -1;
  for (char *line = text ? strtok(text, "\n") : NULL; line; line = strtok(NULL, "\n")) {
    char w[16];
    int i;
    double ts;
    if (sscanf(line, "%15s %d %lf", w, &i, &ts) == 3 && strcmp(w, what) == 0) {
      it = i;
      *t = ts;
    }
  }
  free(text);
  return it;
}

static int ranks_in(int h, const char *comm) {
  int pids[256], n = ns_pids(net.ns[h], pids, 256), found = 0;
  for (int i = 0; i < n; i++) found += proc_comm_is(pids[i], comm);
  return found;
}

/* Once two allreduces have completed, wait for the next one to start and cut host
 * B's link a third of an allreduce's time into it (well past its negotiation, well
 * before its end); then watch host B's ranks, which nobody can tell to stop. */
static void *cut_link(void *arg) {
  cutter_t *c = arg;
  double end = now_s() + 120, t_end = 0, t_start = 0;
  int done;
  while ((done = last_event(c->progress, "end", &t_end)) < 1 && now_s() < end)
    usleep(20 * 1000);
  if (done < 1) return NULL;
  last_event(c->progress, "start", &t_start);
  c->iter_s = t_end - t_start;
  double at = t_end + 1.0;
  if (!c->idle) {
    while (last_event(c->progress, "start", &t_start) <= done && now_s() < end)
      usleep(2 * 1000);
    at = t_start + c->iter_s / 3;
  }
  while (now_s() < at) usleep(1000);
  c->iter = last_event(c->progress, "start", &t_start);
  c->cut_at = now_s();
  sh_quiet("ip link set %s down", c->veth);
  c->cut_done = now_s();
  while (now_s() < c->cut_at + 90) {
    if (ranks_in(1, "netfault_prog") == 0) {
      c->b_gone_at = now_s();
      break;
    }
    usleep(50 * 1000);
  }
  return NULL;
}

/* Issue 9, network faults: a link taken down in the middle of an allreduce gives an
 * error within HVD_TRANSPORT_TIMEOUT_SECONDS, not a hang; hvdrun ends the job
 * (killing the ssh sessions to the host it can no longer reach) and the ranks behind
 * the dead link end by themselves. */
Test(multihost, link_down_mid_allreduce_fails_within_the_timeout, .timeout = 240) {
  net_up(2);
  cutter_t c = {0};
  snprintf(c.progress, sizeof c.progress, "%s/progress", net.dir);
  snprintf(c.veth, sizeof c.veth, NS_PREFIX "v%d%c", net.pid, 'b');
  pthread_t th;
  pthread_create(&th, NULL, cut_link, &c);
  char args[2048];
  snprintf(args, sizeof args,
           "-np 4 -H %s:2,%s:2 -i %s -x HVD_TRANSPORT_TIMEOUT_SECONDS=%g %s --count 16777216 "
           "--progress %s",
           net.addr[0], net.addr[1], net.key, NETFAULT_T, prog_path("netfault_prog"),
           c.progress);
  run_result_t r = hvdrun_sh(args, 150);
  double ended = now_s();
  pthread_join(th, NULL);
  cr_log_info("allreduces took %.2f s; cut the link %.2f s into allreduce %d (`ip` took "
              "%.2f s); hvdrun ended %.2f s later; host B's ranks were gone after %.2f s; "
              "last line: %s",
              c.iter_s, c.iter_s / 3, c.iter, c.cut_done - c.cut_at, ended - c.cut_at,
              c.b_gone_at > 0 ? c.b_gone_at - c.cut_at : -1.0, last_line(&r));
  cr_assert_gt(c.cut_at, 0, "the job never ran two allreduces:\n%s", r.out);
  cr_assert(!r.timed_out, "hvdrun did not exit:\n%s", r.out);
  cr_assert(r.exited && r.status != 0, "hvdrun exited with %d:\n%s", r.status, r.out);
  cr_assert_lt(ended - c.cut_at, NETFAULT_T + 15, "hvdrun took %.1f s after the cut:\n%s",
               ended - c.cut_at, r.out);
  cr_assert(strncmp(last_line(&r), "hvdrun: error: rank ", 20) == 0, "last line: %s",
            last_line(&r));

  /* The ranks on host A fail within the timeout (not before it: the clock runs from
   * the last progress) naming the peer they waited for; a rank waiting across the
   * link names a rank on host B (one whose stuck transfer was with its same-host peer
   * names that one). Each one's next operation fails at once with the same cause. */
  char host[128], why[440];
  snprintf(host, sizeof host, "(host %s) for 3.0 s (HVD_TRANSPORT_TIMEOUT_SECONDS)",
           net.addr[1]);
  int reported = 0, named_b = 0;
  for (int rank = 0; rank < 2; rank++) {
    char want[64];
    snprintf(want, sizeof want, "[%d]<stdout>:rank %d: allreduce ", rank, rank);
    char line[8192]; /* a copy: line_starting's buffer is reused below */
    const char *l = line_starting(&r, want);
    if (l == NULL || strstr(l, " failed after ") == NULL) continue;
    snprintf(line, sizeof line, "%s", l);
    cr_log_info("%s", line);
    double at = 0;
    const char *p = strstr(line, " at ");
    cr_assert(p != NULL && sscanf(p, " at %lf", &at) == 1, "%s", line);
    char status[96];
    snprintf(status, sizeof status, ": %s: ", hvd_status_string(HVD_ERR_TIMEOUT));
    cr_assert(strstr(line, status) != NULL && strstr(line, "no progress from rank ") != NULL &&
                  strstr(line, " for 3.0 s (HVD_TRANSPORT_TIMEOUT_SECONDS): network or peer "
                               "failure") != NULL,
              "rank %d's error must name a peer and the timeout: %s", rank, line);
    named_b += strstr(line, host) != NULL && (strstr(line, "no progress from rank 2 ") != NULL ||
                                              strstr(line, "no progress from rank 3 ") != NULL);
    cr_assert(at - c.cut_at > NETFAULT_T - 0.1 && at - c.cut_done < NETFAULT_T + 4,
              "rank %d failed %.2f s after the cut (%.2f s after `ip` returned; timeout "
              "%.0f s)",
              rank, at - c.cut_at, at - c.cut_done, NETFAULT_T);
    snprintf(want, sizeof want, "[%d]<stdout>:rank %d: next allreduce: ", rank, rank);
    const char *next = line_starting(&r, want);
    cr_assert_not_null(next, "rank %d did not try a next allreduce:\n%s", rank, r.out);
    cr_log_info("%s", next);
    double ms = 1e9;
    p = strstr(next, " after ");
    cr_assert(p != NULL && sscanf(p, " after %lf ms", &ms) == 1 && ms < 1000 &&
                  strstr(next, hvd_status_string(HVD_ERR_ABORTED)) != NULL &&
                  strstr(next, strstr(line, "no progress from rank ")) != NULL,
              "the next operation must fail at once with the same cause: %s", next);
    reported++;
  }
  cr_assert_gt(reported, 0, "no rank on host A reported the dead link:\n%s", r.out);
  cr_assert_gt(named_b, 0, "no rank on host A named a rank on %s:\n%s", net.addr[1], r.out);
  cr_log_info("output:\n%s", r.out);

  /* Host B's ranks could not be told; their own timer ended them. */
  cr_assert_gt(c.b_gone_at, 0, "ranks still running on host B a minute after the cut");
  cr_assert_lt(c.b_gone_at - c.cut_done, NETFAULT_T + 10,
               "host B's ranks took %.1f s to end", c.b_gone_at - c.cut_done);
  snprintf(why, sizeof why, "--progress %s", c.progress);
  cr_assert_eq(procs_matching(why), 0, "ranks (or their ssh) left running");
  cr_assert_eq(procs_matching("--hvdrun-remote"), 0, "remote wrappers or ssh left running");
  char left[4096];
  leftovers(0, 10, left, sizeof left);
  cr_assert_str_empty(left, "processes left on host A: %s", left);
  /* On host B only sshd's session processes may remain: their clients are gone and
   * the link is down, so they wait for TCP; the teardown removes them. */
  leftovers(1, 0, left, sizeof left);
  for (char *p = left; *p != '\0';) {
    char *semi = strstr(p, "; ");
    size_t n = semi ? (size_t)(semi - p) : strlen(p);
    cr_assert(memmem(p, n, ": sshd: ", 8) != NULL, "process left on host B: %.*s", (int)n, p);
    p += semi ? n + 2 : n;
  }
  run_free(&r);
}

/* The same while no transfer is waiting (rank 0 is busy elsewhere and the others
 * wait for it in negotiation, which no transport timer covers): hvdrun's ssh to the
 * host it cannot reach ends by its keepalive, the ranks it can reach learn that
 * cause, and the ranks behind the dead link end when their rendezvous connection's
 * keepalive fails. */
Test(multihost, link_down_while_idle_ends_the_job, .timeout = 240) {
  net_up(2);
  cutter_t c = {.idle = 1};
  snprintf(c.progress, sizeof c.progress, "%s/progress", net.dir);
  snprintf(c.veth, sizeof c.veth, NS_PREFIX "v%d%c", net.pid, 'b');
  pthread_t th;
  pthread_create(&th, NULL, cut_link, &c);
  char args[2048];
  snprintf(args, sizeof args,
           "-np 4 -H %s:2,%s:2 -i %s -x HVD_TRANSPORT_TIMEOUT_SECONDS=%g %s --count 1048576 "
           "--progress %s --slow-rank 0 --slow-iter 2 --slow-ms 200000",
           net.addr[0], net.addr[1], net.key, NETFAULT_T, prog_path("netfault_prog"),
           c.progress);
  run_result_t r = hvdrun_sh(args, 150);
  double ended = now_s();
  pthread_join(th, NULL);
  cr_log_info("cut the link 1 s after allreduce 1 (`ip` took %.2f s); hvdrun ended %.2f s "
              "later; host B's ranks were gone after %.2f s; output:\n%s",
              c.cut_done - c.cut_at, ended - c.cut_at,
              c.b_gone_at > 0 ? c.b_gone_at - c.cut_at : -1.0, r.out);
  cr_assert_gt(c.cut_at, 0, "the job never ran two allreduces:\n%s", r.out);
  cr_assert(!r.timed_out && r.exited && r.status != 0, "hvdrun: status %d:\n%s", r.status,
            r.out);
  /* ssh keepalive: 3 unanswered probes 10 s apart, then the stop sequence. */
  cr_assert_lt(ended - c.cut_done, 60, "hvdrun took %.1f s after the cut", ended - c.cut_done);
  char host[64];
  snprintf(host, sizeof host, "(host %s): ssh ", net.addr[1]);
  cr_assert(strstr(last_line(&r), host) != NULL, "last line must name host B's ssh: %s",
            last_line(&r));
  const char *line = line_starting(&r, "[1]<stdout>:rank 1: allreduce 2 failed");
  cr_assert(line != NULL && strstr(line, host) != NULL,
            "rank 1 must learn the cause (host B's ssh):\n%s", r.out);
  cr_assert_gt(c.b_gone_at, 0, "ranks still running on host B 90 s after the cut");
  cr_assert_lt(c.b_gone_at - c.cut_done, 60, "host B's ranks took %.1f s to end",
               c.b_gone_at - c.cut_done);
  char why[440];
  snprintf(why, sizeof why, "--progress %s", c.progress);
  cr_assert_eq(procs_matching(why), 0, "ranks (or their ssh) left running");
  cr_assert_eq(procs_matching("--hvdrun-remote"), 0, "remote wrappers or ssh left running");
  run_free(&r);
}

/* ---- the command line (no test hosts needed) ------------------------------------ */

static void expect_usage_error(const char *args, const char *needle) {
  char dir[] = "/tmp/hvd-flags-XXXXXX";
  cr_assert_not_null(mkdtemp(dir));
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "%s %s sh -c 'touch %s/started'", bin_path("hvdrun"), args,
           dir);
  run_result_t r = run_sh(cmd, NULL, 30);
  char marker[64];
  snprintf(marker, sizeof marker, "%s/started", dir);
  int started = access(marker, F_OK) == 0;
  unlink(marker);
  rmdir(dir);
  cr_assert(r.exited && r.status == 2, "`%s`: want status 2, got %d: %s", args, r.status,
            r.out);
  cr_assert(strncmp(r.out, "hvdrun: error: ", 15) == 0 && count_in(&r, "\n") == 1,
            "`%s`: want one 'hvdrun: error:' line, got: %s", args, r.out);
  cr_assert(strstr(r.out, needle) != NULL, "`%s`: '%s' not in: %s", args, needle, r.out);
  cr_assert(!started, "`%s` started a rank", args);
  run_free(&r);
}

Test(hvdrun_cli, bad_flags_fail_before_starting, .timeout = 60) {
  expect_usage_error("-np 2 --no-such-flag", "unknown option '--no-such-flag'");
  expect_usage_error("--bind-to core", "-np N is required");
  expect_usage_error("-np two", "not a number of ranks");
  expect_usage_error("-np 2 --hosts=", "-H: empty host list");
  expect_usage_error("-np 2 -H 'a:2,,b:2'", "is not a host:slots entry");
  expect_usage_error("-np 2 -H a:0", "slots must be a number");
  expect_usage_error("-np 2 -H a:1,a:1", "listed twice");
  expect_usage_error("-np 5 -H localhost:2,127.0.0.2:2",
                     "-np 5 needs 5 slots but the hosts have only 4");
  expect_usage_error("-np 2 --hostfile /nonexistent/hosts",
                     "--hostfile /nonexistent/hosts");
  expect_usage_error("-np 2 -H localhost:2 --hostfile /dev/null",
                     "cannot be used together");
  expect_usage_error("-np 2 --bind-to socket", "--bind-to: 'socket' is not valid");
  expect_usage_error("-np 2 --map-by node", "--map-by: 'node' is not valid");
  expect_usage_error("-np 2 --cycle-time-ms -1", "--cycle-time-ms: '-1' is not valid");
  expect_usage_error("-np 2 --cache-capacity 1.5",
                     "--cache-capacity: '1.5' is not valid");
  expect_usage_error("-np 2 --fusion-threshold-mb lots", "--fusion-threshold-mb");
  expect_usage_error("-np 2 --log-level chatty", "--log-level: 'chatty' is not valid");
  expect_usage_error("-np 2 -x 1BAD=2", "-x '1BAD=2'");
  expect_usage_error("-np 2 -x HVD_RANK=3", "hvdrun sets HVD_RANK");
  expect_usage_error("-np 2 -p 70000", "not a port number");
  expect_usage_error("-np 2 -i /nonexistent/key", "-i /nonexistent/key");
  expect_usage_error("-np 2 --network-interface no-such-if0", "no such interface");
  expect_usage_error("-np 2 --start-timeout -5", "--start-timeout");
}

Test(hvdrun_cli, hostfile, .timeout = 60) {
  char path[] = "/tmp/hvd-hostfile-XXXXXX";
  int fd = mkstemp(path);
  cr_assert_geq(fd, 0);
  const char *text =
      "# two hosts\nlocalhost slots=2   # this one\n\n  127.0.0.2 slots=3\n";
  cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "%s -np 5 --hostfile %s --dry-run true", bin_path("hvdrun"),
           path);
  run_result_t r = run_sh(cmd, NULL, 30);
  cr_assert(r.exited && r.status == 0, "%s", r.out);
  cr_assert(strstr(r.out, "rank 1: host localhost (this host), local rank 1 of 2") !=
                NULL,
            "%s", r.out);
  cr_assert(
      strstr(
          r.out,
          "rank 4: host 127.0.0.2 (this host), local rank 2 of 3, cross rank 0 of 1") !=
          NULL,
      "%s", r.out);
  run_free(&r);
  write_file(path, "localhost slots=two\n", 0600);
  r = run_sh(cmd, NULL, 30);
  cr_assert(r.exited && r.status == 2 && strstr(r.out, "line 1: expected 'HOST slots=N'"),
            "%s", r.out);
  run_free(&r);
  unlink(path);
}

Test(hvdrun_cli, dry_run_prints_and_starts_nothing, .timeout = 60) {
  char dir[] = "/tmp/hvd-dry-XXXXXX";
  cr_assert_not_null(mkdtemp(dir));
  char cmd[2048];
  snprintf(cmd, sizeof cmd,
           "%s --dry-run -np 3 -H localhost:1,198.18.250.2:2 -p 2222 -i /dev/null "
           "--network-interface lo -x FOO=1 --log-level INFO sh -c 'touch %s/started'",
           bin_path("hvdrun"), dir);
  char *env[] = {"TSAN_OPTIONS=history_size=2", NULL}; /* *SAN_OPTIONS go to remote ranks */
  run_result_t r = run_sh(cmd, env, 30);
  cr_assert(r.exited && r.status == 0, "%s", r.out);
  cr_assert_lt(r.seconds, 5.0);
  cr_assert(
      strstr(r.out,
             "rank 0: host localhost (this host), local rank 0 of 1, cross rank 0 of 2"),
      "%s", r.out);
  cr_assert(
      strstr(r.out,
             "rank 2: host 198.18.250.2 (ssh), local rank 1 of 2, cross rank 0 of 1"),
      "%s", r.out);
  cr_assert(strstr(r.out,
                   "  command: ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new "
                   "-o ServerAliveInterval=10 -o ServerAliveCountMax=3 "
                   "-p 2222 -i /dev/null 198.18.250.2 'exec "),
            "%s", r.out);
  cr_assert_eq(count_in(&r, "    HVD_RENDEZVOUS_ADDR=127.0.0.1\n"), 3);
  cr_assert_eq(count_in(&r, "    HVD_OFI_IFACE=lo\n"), 3);
  cr_assert_eq(count_in(&r, "    FOO=1\n"), 3);
  cr_assert_eq(count_in(&r, "    TSAN_OPTIONS=history_size=2\n"), 3, "%s", r.out);
  cr_assert_eq(count_in(&r, "    HVD_LOG_LEVEL=info\n"), 3);
  cr_assert_eq(count_in(&r, "    HVD_RANK=2\n"), 1);
  cr_assert_eq(count_in(&r, "HVD_JOB_TOKEN="), 0, "the token must not be printed");
  char marker[64];
  snprintf(marker, sizeof marker, "%s/started", dir);
  cr_assert_neq(access(marker, F_OK), 0, "--dry-run started a rank");
  rmdir(dir);
  run_free(&r);
}

/* ---- placement, output files, -x on this host --------------------------------- */

Test(hvdrun_local, bind_to_core_and_verbose_placement, .timeout = 60) {
  hwloc_topology_t topo;
  hwloc_topology_init(&topo);
  hwloc_topology_load(topo);
  int ncores = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE);
  int npu = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PU);
  int npkg = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PACKAGE);
  int nnuma = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE);
  cr_assert_gt(ncores, 0);
  int np = ncores < 4 ? ncores : 4;
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "%s -np %d --bind-to core --verbose %s", bin_path("hvdrun"),
           np, prog_path("env_report"));
  run_result_t r = run_sh(cmd, NULL, 30);
  cr_assert(r.exited && r.status == 0, "%s", r.out);
  char want[256];
  snprintf(
      want, sizeof want,
      "hvdrun: topology of this host: %d package%s, %d NUMA node%s, %d core%s, %d PU%s",
      npkg, npkg == 1 ? "" : "s", nnuma, nnuma == 1 ? "" : "s", ncores,
      ncores == 1 ? "" : "s", npu, npu == 1 ? "" : "s");
  cr_assert(strstr(r.out, want) != NULL, "no '%s' in:\n%s", want, r.out);
  for (int rank = 0; rank < np; rank++) {
    char list[128], ours[128] = "";
    core_cpus(topo, rank, list, sizeof list, ours, sizeof ours);
    snprintf(want, sizeof want, "hvdrun: rank %d (host ", rank);
    const char *pl = strstr(r.out, want);
    cr_assert_not_null(pl, "no placement line for rank %d:\n%s", rank, r.out);
    snprintf(want, sizeof want, "local rank %d of %d): core L#%d (cpus %s)", rank, np,
             rank, list);
    cr_assert(strstr(pl, want) != NULL, "placement of rank %d: want '%s' in:\n%s", rank,
              want, r.out);
    snprintf(want, sizeof want, " cpus=%s cwd=", ours);
    char prefix[32];
    snprintf(prefix, sizeof prefix, "[%d]<stdout>:report", rank);
    const char *line = line_starting(&r, prefix);
    cr_assert_not_null(line);
    cr_assert(strstr(line, want) != NULL, "rank %d affinity: want '%s' in '%s'", rank,
              want, line);
  }
  run_free(&r);
  /* The default (auto) gives each rank its own share of the cores. */
  snprintf(cmd, sizeof cmd, "%s -np %d --verbose %s", bin_path("hvdrun"), np,
           prog_path("env_report"));
  r = run_sh(cmd, NULL, 30);
  cr_assert(r.exited && r.status == 0 && count_in(&r, "; auto: ") == np, "%s", r.out);
  char seen[4][128];
  for (int rank = 0; rank < np; rank++) {
    char prefix[32];
    snprintf(prefix, sizeof prefix, "[%d]<stdout>:report", rank);
    const char *line = line_starting(&r, prefix), *c = line ? strstr(line, " cpus=") : NULL;
    cr_assert_not_null(c, "rank %d: no affinity in:\n%s", rank, r.out);
    snprintf(seen[rank], sizeof seen[rank], "%.*s", (int)strcspn(c + 6, " \n"), c + 6);
    for (int q = 0; q < rank; q++)
      cr_assert_str_neq(seen[q], seen[rank], "ranks %d and %d share cpus %s:\n%s", q, rank,
                        seen[q], r.out);
  }
  run_free(&r);
  /* --bind-to none leaves the whole allowed set. */
  snprintf(cmd, sizeof cmd, "%s -np 1 --bind-to none %s", bin_path("hvdrun"),
           prog_path("env_report"));
  r = run_sh(cmd, NULL, 30);
  char all[256] = "";
  cpu_list(hwloc_topology_get_allowed_cpuset(topo), all, sizeof all);
  snprintf(want, sizeof want, " cpus=%s cwd=", all);
  cr_assert(strstr(r.out, want) != NULL, "want '%s' in %s", want, r.out);
  run_free(&r);
  /* numa binding and mapping run too. */
  snprintf(cmd, sizeof cmd, "%s -np 2 --bind-to numa --map-by numa %s",
           bin_path("hvdrun"), prog_path("env_report"));
  r = run_sh(cmd, NULL, 30);
  cr_assert(r.exited && r.status == 0 && count_in(&r, "report rank=") == 2, "%s", r.out);
  run_free(&r);
  hwloc_topology_destroy(topo);
}

Test(hvdrun_local, x_forwarding_and_precedence, .timeout = 60) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "HVD_LOG_LEVEL=error FROMENV=yes %s -np 2 -x A=1 -x A=2 -x FROMENV -x "
           "HVD_LOG_LEVEL=debug "
           "--log-level warning -x UNSET_VAR_FOR_TEST %s A FROMENV HVD_LOG_LEVEL",
           bin_path("hvdrun"), prog_path("env_report"));
  run_result_t r = run_sh(cmd, NULL, 30);
  cr_assert(r.exited && r.status == 0, "%s", r.out);
  cr_assert_eq(count_in(&r, "A=2 FROMENV=yes HVD_LOG_LEVEL=warning end"), 2, "%s", r.out);
  cr_assert_eq(
      count_in(&r,
               "hvdrun: warning: -x UNSET_VAR_FOR_TEST: UNSET_VAR_FOR_TEST is not set"),
      1, "%s", r.out);
  run_free(&r);
}

Test(hvdrun_local, output_filename_padded_per_rank, .timeout = 60) {
  char dir[] = "/tmp/hvd-out-XXXXXX";
  cr_assert_not_null(mkdtemp(dir));
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "%s -np 11 --output-filename %s/logs sh -c 'echo out $HVD_RANK; echo err "
           "$HVD_RANK >&2'",
           bin_path("hvdrun"), dir);
  run_result_t r = run_sh(cmd, NULL, 60);
  cr_assert(r.exited && r.status == 0, "%s", r.out);
  cr_assert_eq(count_in(&r, "<stdout>:out "), 11, "the terminal gets the output too");
  for (int rank = 0; rank < 11; rank++) {
    char path[256], want[32];
    snprintf(path, sizeof path, "%s/logs/rank.%02d/stdout", dir, rank);
    char *t = read_file(path, NULL);
    cr_assert_not_null(t, "no %s", path);
    snprintf(want, sizeof want, "out %d\n", rank);
    cr_assert_str_eq(t, want);
    free(t);
    snprintf(path, sizeof path, "%s/logs/rank.%02d/stderr", dir, rank);
    t = read_file(path, NULL);
    cr_assert_not_null(t, "no %s", path);
    snprintf(want, sizeof want, "err %d\n", rank);
    cr_assert_str_eq(t, want);
    free(t);
  }
  run_free(&r);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  r = run_sh(cmd, NULL, 30);
  run_free(&r);
}

/* ---- jobs started by mpirun or srun ------------------------------------------- */

static int free_port(void) {
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET};
  socklen_t len = sizeof sa;
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  if (s < 0 || bind(s, (struct sockaddr *)&sa, sizeof sa) != 0 ||
      getsockname(s, (struct sockaddr *)&sa, &len) != 0)
    return 29500;
  close(s);
  return ntohs(sa.sin_port);
}

Test(other_launchers, mpirun_two_ranks, .timeout = 120) {
  run_result_t w = run_sh("command -v mpirun", NULL, 10);
  int have = w.exited && w.status == 0;
  run_free(&w);
  if (!have) cr_skip_test("no mpirun (install openmpi-bin)");
  char cmd[1024];
  snprintf(
      cmd, sizeof cmd,
      "mpirun --allow-run-as-root --oversubscribe -np 2 -x HVD_RENDEZVOUS_ADDR=127.0.0.1 "
      "-x HVD_RENDEZVOUS_PORT=%d %s --counts 1,1000,100003 --dtypes float32,int64",
      free_port(), prog_path("allreduce_check"));
  run_result_t r = run_sh(cmd, NULL, 90);
  if (r.status != 0) cr_log_error("%s", r.out);
  cr_assert(r.exited && r.status == 0, "mpirun job failed: %s", last_line(&r));
  cr_assert_eq(count_in(&r, "rank 0: ALL OK (6 checks, 2 ranks)"), 1, "%s", r.out);
  cr_assert_eq(count_in(&r, "rank 1: ALL OK (6 checks, 2 ranks)"), 1, "%s", r.out);
  run_free(&r);
}

Test(other_launchers, srun_environment, .timeout = 120) {
  /* What srun sets for two tasks on one node, without Slurm. */
  char cmd[2048];
  int port = free_port();
  snprintf(
      cmd, sizeof cmd,
      "export SLURM_STEP_NUM_TASKS=2 SLURM_STEP_TASKS_PER_NODE=2 SLURM_NODEID=0 "
      "SLURM_STEP_NUM_NODES=1 SLURM_JOB_ID=42 HVD_RENDEZVOUS_ADDR=127.0.0.1 "
      "HVD_RENDEZVOUS_PORT=%d; "
      "SLURM_PROCID=1 SLURM_LOCALID=1 %s --counts 1000 --dtypes float32 & "
      "SLURM_PROCID=0 SLURM_LOCALID=0 %s --counts 1000 --dtypes float32; a=$?; wait $!; "
      "exit $((a + $?))",
      port, prog_path("allreduce_check"), prog_path("allreduce_check"));
  run_result_t r = run_sh(cmd, NULL, 90);
  cr_assert(r.exited && r.status == 0, "%s", r.out);
  cr_assert_eq(count_in(&r, "ALL OK (1 checks, 2 ranks)"), 2, "%s", r.out);
  run_free(&r);
  /* Across hosts (a non-loopback address) a real token is required. */
  snprintf(cmd, sizeof cmd,
           "env SLURM_STEP_NUM_TASKS=2 SLURM_PROCID=0 SLURM_LOCALID=0 "
           "'SLURM_STEP_TASKS_PER_NODE=1(x2)' "
           "SLURM_NODEID=0 SLURM_STEP_NUM_NODES=2 HVD_RENDEZVOUS_ADDR=198.18.250.1 "
           "HVD_RENDEZVOUS_PORT=%d %s --counts 1 --dtypes float32",
           port, prog_path("allreduce_check"));
  r = run_sh(cmd, NULL, 30);
  cr_assert(r.exited && r.status != 0 &&
                strstr(r.out, "HVD_JOB_TOKEN must be 32 characters"),
            "%s", r.out);
  run_free(&r);
}
