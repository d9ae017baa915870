/*
 * Hosts: -H and --hostfile parsing, placing ranks on hosts, and the address the
 * rendezvous server listens on.
 *
 * Placement is Horovod's (runner/common/util/hosts.py): hosts are filled in the
 * order given, each with as many ranks as it has slots, so a host's ranks are
 * consecutive. local rank = index on the host, local size = ranks on the host; the
 * cross communicator groups the ranks with the same local rank: cross rank = order
 * of the host among the hosts that have that local rank, cross size = how many such
 * hosts (with equal slots: the host's index and the number of hosts).
 *
 * A host is this one (spawned without ssh) when it is "localhost", this machine's
 * host name (full or short), a 127.x.x.x / ::1 literal, or an address of one of
 * this machine's interfaces.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "tools/hvdrun/hvdrun.h"

#define HOSTFILE_LINE_MAX 4096

static int valid_host_name(const char *s, size_t n) {
  if (n == 0 || n > HOST_NAME_MAX) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!isalnum(c) && c != '.' && c != '-' && c != '_') return 0;
  }
  return s[0] != '-'; /* would read as an ssh option */
}

/* Append host name[0..n) with slots to the list; refuses duplicates. */
static int add_host(hvdrun_host_t **hosts, int *nhosts, const char *name, size_t n,
                    long slots, const char *where, hvd_err_t *err) {
  for (int i = 0; i < *nhosts; i++)
    if (strlen((*hosts)[i].name) == n && memcmp((*hosts)[i].name, name, n) == 0) {
      hvd_err_set(err, "%s: host '%.*s' is listed twice", where, (int)n, name);
      return -1;
    }
  hvdrun_host_t *nh = realloc(*hosts, (size_t)(*nhosts + 1) * sizeof *nh);
  if (nh == NULL) {
    hvd_err_set(err, "out of memory");
    return -1;
  }
  *hosts = nh;
  hvdrun_host_t *h = &nh[(*nhosts)++];
  memset(h, 0, sizeof *h);
  memcpy(h->name, name, n);
  h->name[n] = '\0';
  h->slots = (int)slots;
  return 0;
}

int hvdrun_parse_hosts(const char *spec, hvdrun_host_t **hosts, int *nhosts,
                       hvd_err_t *err) {
  const char *p = spec;
  *hosts = NULL;
  *nhosts = 0;
  if (*spec == '\0') {
    hvd_err_set(err, "-H: empty host list (expected host:slots,host:slots,...)");
    return -1;
  }
  while (*p != '\0') {
    size_t len = strcspn(p, ",");
    const char *colon = memchr(p, ':', len);
    size_t nlen = colon != NULL ? (size_t)(colon - p) : len;
    long slots = 1;
    if (!valid_host_name(p, nlen)) {
      hvd_err_set(
          err,
          "-H: '%.*s' is not a host:slots entry (expected e.g. worker-0:2,worker-1:2)",
          (int)len, p);
      goto fail;
    }
    if (colon != NULL) {
      char num[16];
      size_t sl = len - nlen - 1;
      if (sl == 0 || sl >= sizeof num) goto bad_slots;
      memcpy(num, colon + 1, sl);
      num[sl] = '\0';
      if (hvd_parse_int(num, 1, HVDRUN_MAX_NP, &slots) != 0) goto bad_slots;
    }
    if (add_host(hosts, nhosts, p, nlen, slots, "-H", err) != 0) goto fail;
    p += len;
    if (*p == ',') {
      p++;
      if (*p == '\0') {
        hvd_err_set(err, "-H: trailing ',' in '%s'", spec);
        goto fail;
      }
    }
    continue;
  bad_slots:
    hvd_err_set(err, "-H: '%.*s': slots must be a number from 1 to %d", (int)len, p,
                HVDRUN_MAX_NP);
    goto fail;
  }
  return 0;
fail:
  free(*hosts);
  *hosts = NULL;
  *nhosts = 0;
  return -1;
}

int hvdrun_parse_hostfile(const char *path, hvdrun_host_t **hosts, int *nhosts,
                          hvd_err_t *err) {
  FILE *f = fopen(path, "re");
  char line[HOSTFILE_LINE_MAX];
  int lineno = 0;
  *hosts = NULL;
  *nhosts = 0;
  if (f == NULL) {
    hvd_err_set(err, "--hostfile %s: %s", path, strerror(errno));
    return -1;
  }
  while (fgets(line, sizeof line, f) != NULL) {
    char where[PATH_MAX + 32];
    lineno++;
    snprintf(where, sizeof where, "--hostfile %s line %d", path, lineno);
    char *hash = strchr(line, '#');
    if (hash != NULL) *hash = '\0';
    char *tok[3];
    int ntok = 0;
    for (char *save = NULL, *t = strtok_r(line, " \t\r\n", &save); t != NULL;
         t = strtok_r(NULL, " \t\r\n", &save)) {
      if (ntok == 2) {
        ntok = 3;
        break;
      }
      tok[ntok++] = t;
    }
    if (ntok == 0) continue;
    long slots = 1;
    if (ntok == 3 || !valid_host_name(tok[0], strlen(tok[0]))) goto bad;
    if (ntok == 2 && (strncmp(tok[1], "slots=", 6) != 0 ||
                      hvd_parse_int(tok[1] + 6, 1, HVDRUN_MAX_NP, &slots) != 0))
      goto bad;
    if (add_host(hosts, nhosts, tok[0], strlen(tok[0]), slots, where, err) != 0)
      goto fail;
    continue;
  bad:
    hvd_err_set(err, "%s: expected 'HOST slots=N' (N from 1 to %d)", where,
                HVDRUN_MAX_NP);
    goto fail;
  }
  if (ferror(f)) {
    hvd_err_set(err, "--hostfile %s: %s", path, strerror(errno));
    goto fail;
  }
  fclose(f);
  if (*nhosts == 0) {
    hvd_err_set(err, "--hostfile %s: no hosts in it", path);
    return -1;
  }
  return 0;
fail:
  fclose(f);
  free(*hosts);
  *hosts = NULL;
  *nhosts = 0;
  return -1;
}

/* Is the address literal s assigned to one of this machine's interfaces? */
static int is_local_address(const char *s) {
  struct in_addr a4;
  struct in6_addr a6;
  int fam;
  if (inet_pton(AF_INET, s, &a4) == 1) {
    if ((ntohl(a4.s_addr) >> 24) == 127) return 1;
    fam = AF_INET;
  } else if (inet_pton(AF_INET6, s, &a6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&a6)) return 1;
    fam = AF_INET6;
  } else {
    return 0;
  }
  struct ifaddrs *ifs, *i;
  int found = 0;
  if (getifaddrs(&ifs) != 0) return 0;
  for (i = ifs; i != NULL && !found; i = i->ifa_next) {
    if (i->ifa_addr == NULL || i->ifa_addr->sa_family != fam) continue;
    if (fam == AF_INET)
      found = ((struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr == a4.s_addr;
    else
      found =
          memcmp(&((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr, &a6, sizeof a6) == 0;
  }
  freeifaddrs(ifs);
  return found;
}

static int is_local_host(const char *name) {
  char me[HOST_NAME_MAX + 1];
  if (strcmp(name, "localhost") == 0 || strcmp(name, "localhost.localdomain") == 0)
    return 1;
  if (gethostname(me, sizeof me) == 0) {
    me[sizeof me - 1] = '\0';
    if (strcmp(name, me) == 0) return 1;
    size_t shortlen = strcspn(me, ".");
    if (strlen(name) == shortlen && strncmp(name, me, shortlen) == 0) return 1;
  }
  return is_local_address(name);
}

int hvdrun_assign(hvdrun_opts_t *opts, hvd_err_t *err) {
  long total = 0;
  int left = opts->np;
  for (int i = 0; i < opts->nhosts; i++)
    total += opts->hosts[i].slots;
  if (total < opts->np) {
    hvd_err_set(err, "-np %d needs %d slots but the hosts have only %ld", opts->np,
                opts->np, total);
    return -1;
  }
  opts->nused = 0;
  opts->any_remote = 0;
  for (int i = 0; i < opts->nhosts; i++) {
    hvdrun_host_t *h = &opts->hosts[i];
    h->is_local = is_local_host(h->name);
    h->first_rank = opts->np - left;
    h->nranks = left < h->slots ? left : h->slots;
    h->index = h->nranks > 0 ? opts->nused : -1;
    left -= h->nranks;
    if (h->nranks > 0) {
      opts->nused++;
      if (!h->is_local) opts->any_remote = 1;
    }
  }
  return 0;
}

void hvdrun_rank_place(const hvdrun_opts_t *opts, int rank, const hvdrun_host_t **host,
                       int *local_rank, int *local_size, int *cross_rank,
                       int *cross_size) {
  const hvdrun_host_t *h = NULL;
  for (int i = 0; i < opts->nhosts; i++) {
    const hvdrun_host_t *c = &opts->hosts[i];
    if (c->nranks > 0 && rank >= c->first_rank && rank < c->first_rank + c->nranks) {
      h = c;
      break;
    }
  }
  /* hvdrun_assign placed every rank, so h is found. */
  int lr = rank - h->first_rank;
  int crank = 0, csize = 0;
  for (int i = 0; i < opts->nhosts; i++) {
    const hvdrun_host_t *c = &opts->hosts[i];
    if (c->nranks <= lr) continue; /* no rank with this local rank there */
    if (c == h) crank = csize;
    csize++;
  }
  *host = h;
  *local_rank = lr;
  *local_size = h->nranks;
  *cross_rank = crank;
  *cross_size = csize;
}

/* IPv4 address of interface iface. */
static int iface_address(const char *iface, char *out, size_t size, hvd_err_t *err) {
  struct ifaddrs *ifs, *i;
  char seen[512] = "";
  size_t used = 0;
  int found = 0, exists = 0;
  if (getifaddrs(&ifs) != 0) {
    hvd_err_set(err, "--network-interface: getifaddrs: %s", strerror(errno));
    return -1;
  }
  for (i = ifs; i != NULL; i = i->ifa_next) {
    if (i->ifa_addr == NULL || i->ifa_addr->sa_family != AF_INET) {
      if (strcmp(i->ifa_name, iface) == 0) exists = 1;
      continue;
    }
    char a[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, a, sizeof a);
    if (strcmp(i->ifa_name, iface) == 0 && !found) {
      snprintf(out, size, "%s", a);
      found = 1;
    }
    if (used < sizeof seen - 1) {
      int w = snprintf(seen + used, sizeof seen - used, "%s%s %s", used ? ", " : "",
                       i->ifa_name, a);
      if (w > 0) used += (size_t)w;
      if (used > sizeof seen - 1) used = sizeof seen - 1;
    }
  }
  freeifaddrs(ifs);
  if (found) return 0;
  hvd_err_set(err, "--network-interface %s: %s (interfaces with IPv4 addresses: %s)",
              iface, exists ? "it has no IPv4 address" : "no such interface",
              seen[0] ? seen : "none");
  return -1;
}

/* The source address the kernel would use towards host: connect() a UDP socket (no
 * packet is sent) and read its local address. */
static int route_source(const char *host, char *out, size_t size, hvd_err_t *err) {
  struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_DGRAM};
  struct addrinfo *res = NULL;
  int rc = getaddrinfo(host, "9", &hints, &res);
  if (rc != 0) {
    hvd_err_set(err,
                "cannot resolve host '%s' to choose the rendezvous address: %s (name the "
                "interface with --network-interface)",
                host, gai_strerror(rc));
    return -1;
  }
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in me;
  socklen_t len = sizeof me;
  if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) != 0 ||
      getsockname(fd, (struct sockaddr *)&me, &len) != 0) {
    hvd_err_set(err,
                "no route to host '%s' to choose the rendezvous address: %s (name the "
                "interface with --network-interface)",
                host, strerror(errno));
    if (fd >= 0) close(fd);
    freeaddrinfo(res);
    return -1;
  }
  close(fd);
  freeaddrinfo(res);
  inet_ntop(AF_INET, &me.sin_addr, out, (socklen_t)size);
  return 0;
}

/* The address ranks connect to: --network-interface's, else the one this host uses
 * towards the first remote host, else loopback. */
static int pick_connect_addr(hvdrun_opts_t *opts, hvd_err_t *err) {
  if (opts->iface != NULL)
    return iface_address(opts->iface, opts->rdv_addr, sizeof opts->rdv_addr, err);
  for (int i = 0; i < opts->nhosts; i++) {
    const hvdrun_host_t *h = &opts->hosts[i];
    if (h->nranks > 0 && !h->is_local)
      return route_source(h->name, opts->rdv_addr, sizeof opts->rdv_addr, err);
  }
  snprintf(opts->rdv_addr, sizeof opts->rdv_addr, "127.0.0.1");
  return 0;
}

/* The server listens on that one address, so that only the network the ranks use
 * can reach it (loopback for a single-host job). --rendezvous-bind ADDR listens on
 * ADDR instead; a specific ADDR is then also what the ranks connect to, a wildcard
 * (0.0.0.0, ::) leaves them the address chosen above. */
int hvdrun_pick_rdv_addr(hvdrun_opts_t *opts, hvd_err_t *err) {
  if (pick_connect_addr(opts, err) != 0) return -1;
  const char *bind = opts->rdv_bind_flag;
  if (bind == NULL) {
    snprintf(opts->rdv_bind, sizeof opts->rdv_bind, "%s", opts->rdv_addr);
    return 0;
  }
  snprintf(opts->rdv_bind, sizeof opts->rdv_bind, "%s", bind);
  struct in6_addr a6;
  struct in_addr a4;
  int any = (inet_pton(AF_INET, bind, &a4) == 1 && a4.s_addr == htonl(INADDR_ANY)) ||
            (inet_pton(AF_INET6, bind, &a6) == 1 && IN6_IS_ADDR_UNSPECIFIED(&a6));
  if (!any) snprintf(opts->rdv_addr, sizeof opts->rdv_addr, "%s", bind);
  return 0;
}
