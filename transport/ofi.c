/*
 * The libfabric transport: creation, provider choice, address exchange, teardown.
 *
 * How it works. hvd_ofi_create() opens up to two independent libfabric stacks
 * (fabric -> domain -> CQ + AV -> RDM endpoint), the oneCCL pattern:
 *   - "shm" for peers on this host. It is opened by name because in libfabric 1.17
 *     it sorts after tcp;ofi_rxm, and it silently vanishes from fi_getinfo when
 *     /dev/shm has less free space than CPUs x 16 MiB. When it cannot be opened the
 *     same-host peers use the network provider and one warning says why.
 *   - "tcp;ofi_rxm" (or the provider HVD_OFI_PROVIDER names) for the other peers.
 *     fi_getinfo returns one entry per interface; we take the one params->iface
 *     names, else the first non-loopback IPv4 one (IPv6, then loopback, as fallback).
 * A forced provider (params->provider) opens only that one and uses it for every
 * peer ("shm" then fails connect() if a peer is on another host).
 *
 * Hints: RDM, FI_TAGGED, msg_order SAS (so equal-tag segments between a pair stay in
 * order), THREAD_DOMAIN (one thread drives a transport), manual data progress, AV
 * TABLE, resource management on, no mode bits (op_context is our hvd_xfer_t), and
 * only RMA-side MR modes (shm/tcp need no local registration: desc is NULL).
 *
 * Address blob (get_address; all integers little-endian):
 *   "HVDO" | version u8 | flags u8 (bit 0: forced provider) |
 *   2 x slot { present u8 | name_len u8 | provider name | max_msg u64 |
 *              addr_len u16 | fi_getname() bytes }            slot 0 = shm, 1 = net
 * connect() decodes every peer's blob and chooses, identically on both sides:
 * same_host && both have shm -> shm, else the network provider (whose names must be
 * equal). The segment size for a peer is the smaller of the two max_msg values, so
 * both sides cut a large message at the same offsets.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_tagged.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "transport/ofi_priv.h"

#define HVD_OFI_BLOB_MAGIC "HVDO"
#define HVD_OFI_BLOB_VERSION 1
#define HVD_OFI_BLOB_FORCED 0x1
/* libfabric 1.17 shm: SMR_MAX_PEERS. */
#define HVD_OFI_SHM_MAX_PEERS 256
/* libfabric 1.17 shm: bytes of /dev/shm reserved per CPU by its getinfo check. */
#define HVD_OFI_SHM_BYTES_PER_CPU (16ull << 20)

static const char *ofi_peer_provider(hvd_transport_t *tp, int peer);

/* ---- provider names ------------------------------------------------------------- */

/* HVD_OFI_PROVIDER spellings -> the name libfabric gives the (layered) provider. */
static void normalize_provider(const char *in, char *out, size_t n) {
  static const struct {
    const char *alias, *name;
  } aliases[] = {
      {"tcp", "tcp;ofi_rxm"},
      {"verbs", "verbs;ofi_rxm"},
      {"udp", "udp;ofi_rxd"},
  };
  for (size_t i = 0; i < HVD_ARRAY_SIZE(aliases); i++) {
    if (strcasecmp(in, aliases[i].alias) == 0) {
      snprintf(out, n, "%s", aliases[i].name);
      return;
    }
  }
  snprintf(out, n, "%s", in);
}

/* ---- choosing an fi_info -------------------------------------------------------- */

static void sockaddr_string(const struct fi_info *fi, char *out, size_t n) {
  out[0] = '\0';
  if (fi->src_addr == NULL) return;
  if (fi->addr_format == FI_SOCKADDR_IN && fi->src_addrlen >= sizeof(struct sockaddr_in)) {
    const struct sockaddr_in *sin = fi->src_addr;
    inet_ntop(AF_INET, &sin->sin_addr, out, (socklen_t)n);
  } else if (fi->addr_format == FI_SOCKADDR_IN6 &&
             fi->src_addrlen >= sizeof(struct sockaddr_in6)) {
    const struct sockaddr_in6 *sin6 = fi->src_addr;
    inet_ntop(AF_INET6, &sin6->sin6_addr, out, (socklen_t)n);
  }
}

static int info_is_loopback(const struct fi_info *fi) {
  if (fi->src_addr == NULL) return 0;
  if (fi->addr_format == FI_SOCKADDR_IN && fi->src_addrlen >= sizeof(struct sockaddr_in)) {
    const struct sockaddr_in *sin = fi->src_addr;
    return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
  }
  if (fi->addr_format == FI_SOCKADDR_IN6 &&
      fi->src_addrlen >= sizeof(struct sockaddr_in6)) {
    const struct sockaddr_in6 *sin6 = fi->src_addr;
    return IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr);
  }
  return 0;
}

/* Preference among entries of one provider: routable IPv4 > global IPv6 > link-local
 * IPv6 (needs a scope id) > loopback. Non-IP providers (verbs, efa) are all equal. */
static int info_score(const struct fi_info *fi) {
  if (info_is_loopback(fi)) return 0;
  if (fi->addr_format == FI_SOCKADDR_IN6 && fi->src_addr != NULL &&
      fi->src_addrlen >= sizeof(struct sockaddr_in6)) {
    const struct sockaddr_in6 *sin6 = fi->src_addr;
    return IN6_IS_ADDR_LINKLOCAL(&sin6->sin6_addr) ? 1 : 2;
  }
  return 3;
}

static int info_matches_iface(const struct fi_info *fi, const char *iface) {
  char ip[INET6_ADDRSTRLEN];
  if (fi->domain_attr && fi->domain_attr->name && strcmp(fi->domain_attr->name, iface) == 0)
    return 1;
  if (fi->fabric_attr && fi->fabric_attr->name && strcmp(fi->fabric_attr->name, iface) == 0)
    return 1;
  sockaddr_string(fi, ip, sizeof ip);
  return ip[0] != '\0' && strcmp(ip, iface) == 0;
}

static struct fi_info *make_hints(const char *prov_name) {
  struct fi_info *hints = fi_allocinfo();
  if (hints == NULL) return NULL;
  hints->caps = FI_TAGGED;
  hints->mode = 0;
  hints->ep_attr->type = FI_EP_RDM;
  hints->domain_attr->threading = FI_THREAD_DOMAIN;
  hints->domain_attr->data_progress = FI_PROGRESS_MANUAL;
  hints->domain_attr->av_type = FI_AV_TABLE;
  hints->domain_attr->resource_mgmt = FI_RM_ENABLED;
  /* RMA-side bits only: we never register memory and pass desc = NULL, which is
   * what shm and tcp;ofi_rxm need. Providers demanding FI_MR_LOCAL are not offered. */
  hints->domain_attr->mr_mode = FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY;
  hints->tx_attr->msg_order = FI_ORDER_SAS;
  hints->rx_attr->msg_order = FI_ORDER_SAS;
  hints->fabric_attr->prov_name = strdup(prov_name);
  if (hints->fabric_attr->prov_name == NULL) {
    fi_freeinfo(hints);
    return NULL;
  }
  return hints;
}

/* fi_getinfo for prov_name and pick one entry (duplicated into *out). On failure
 * returns the negative fi_getinfo code (or -FI_ENODATA when nothing matched iface)
 * with the reason in err. */
static int choose_info(const char *prov_name, const char *iface, struct fi_info **out,
                       hvd_err_t *err) {
  struct fi_info *hints = make_hints(prov_name);
  struct fi_info *list = NULL;
  if (hints == NULL) {
    hvd_err_set(err, "%s: out of memory building fi_getinfo hints", prov_name);
    return -FI_ENOMEM;
  }
  int rc = fi_getinfo(FI_VERSION(1, 17), NULL, NULL, 0, hints, &list);
  fi_freeinfo(hints);
  if (rc != 0) {
    hvd_err_set(err,
                "fi_getinfo(provider \"%s\", RDM, FI_TAGGED, FI_ORDER_SAS, manual progress) "
                "failed: %s (%d)",
                prov_name, fi_strerror(-rc), rc);
    return rc;
  }
  struct fi_info *best = NULL;
  int best_score = -1;
  for (struct fi_info *fi = list; fi != NULL; fi = fi->next) {
    /* prov_name hints also let layered variants through ("net;ofi_rxm" for "net"). */
    if (fi->fabric_attr == NULL || fi->fabric_attr->prov_name == NULL ||
        strcasecmp(fi->fabric_attr->prov_name, prov_name) != 0)
      continue;
    if (iface != NULL && iface[0] != '\0' && !info_matches_iface(fi, iface)) continue;
    int s = info_score(fi);
    if (s > best_score) {
      best = fi;
      best_score = s;
    }
  }
  if (best == NULL) {
    char seen[256] = "";
    size_t used = 0;
    for (struct fi_info *fi = list; fi != NULL && used < sizeof seen - 1; fi = fi->next) {
      char ip[INET6_ADDRSTRLEN];
      sockaddr_string(fi, ip, sizeof ip);
      int w = snprintf(seen + used, sizeof seen - used, "%s%s %s%s%s", used ? ", " : "",
                       fi->fabric_attr ? fi->fabric_attr->prov_name : "?",
                       fi->domain_attr ? fi->domain_attr->name : "?", ip[0] ? "/" : "", ip);
      if (w < 0) break;
      used += (size_t)w;
      if (used >= sizeof seen) used = sizeof seen - 1;
    }
    if (iface != NULL && iface[0] != '\0')
      hvd_err_set(err, "provider \"%s\" has no entry on interface \"%s\" (found: %s)",
                  prov_name, iface, seen[0] ? seen : "none");
    else
      hvd_err_set(err, "fi_getinfo returned no entry named \"%s\" (found: %s)", prov_name,
                  seen[0] ? seen : "none");
    fi_freeinfo(list);
    return -FI_ENODATA;
  }
  *out = fi_dupinfo(best);
  fi_freeinfo(list);
  if (*out == NULL) {
    hvd_err_set(err, "%s: fi_dupinfo: out of memory", prov_name);
    return -FI_ENOMEM;
  }
  return 0;
}

/* ---- opening and closing a slot ------------------------------------------------- */

static void close_fid(struct fid *f, const char *what, const char *prov) {
  if (f == NULL) return;
  int rc = fi_close(f);
  if (rc != 0) HVD_DEBUG("transport: closing %s %s: %s", prov, what, fi_strerror(-rc));
}

static void slot_close(hvd_ofi_prov_t *p) {
  /* Reverse of slot_open: the endpoint holds references to the AV and CQ. */
  close_fid(p->ep ? &p->ep->fid : NULL, "endpoint", p->name);
  close_fid(p->av ? &p->av->fid : NULL, "address vector", p->name);
  close_fid(p->cq ? &p->cq->fid : NULL, "completion queue", p->name);
  close_fid(p->domain ? &p->domain->fid : NULL, "domain", p->name);
  close_fid(p->fabric ? &p->fabric->fid : NULL, "fabric", p->name);
  if (p->info) fi_freeinfo(p->info);
  p->ep = NULL;
  p->av = NULL;
  p->cq = NULL;
  p->domain = NULL;
  p->fabric = NULL;
  p->info = NULL;
  p->defer_head = p->defer_tail = NULL;
}

#define OFI_OPEN_CHECK(call, what)                                                      \
  do {                                                                                 \
    rc = (call);                                                                       \
    if (rc != 0) {                                                                     \
      hvd_err_set(err, "%s: %s failed: %s (%d)", p->name, what, fi_strerror(-rc), rc); \
      goto fail;                                                                       \
    }                                                                                  \
  } while (0)

/* Open fabric, domain, CQ, AV and an enabled endpoint for prov_name. Returns 0 or
 * a negative fi_* code with the reason in err (and everything closed again). */
static int slot_open(hvd_ofi_prov_t *p, const char *prov_name, const char *iface,
                     int size, const hvd_ofi_params_t *params, hvd_err_t *err) {
  int rc;
  snprintf(p->name, sizeof p->name, "%s", prov_name);
  rc = choose_info(prov_name, iface, &p->info, err);
  if (rc != 0) return rc;
  struct fi_info *fi = p->info;

  OFI_OPEN_CHECK(fi_fabric(fi->fabric_attr, &p->fabric, NULL), "fi_fabric");
  OFI_OPEN_CHECK(fi_domain(p->fabric, fi, &p->domain, NULL), "fi_domain");

  struct fi_cq_attr cq_attr = {0};
  cq_attr.format = FI_CQ_FORMAT_TAGGED;
  cq_attr.wait_obj = FI_WAIT_NONE; /* shm cannot wake an fd anyway; we poll */
  /* Room for every operation the endpoint can have outstanding: with resource
   * management on, posting fails with -FI_EAGAIN before the CQ can overrun. */
  cq_attr.size = fi->tx_attr->size + fi->rx_attr->size;
  OFI_OPEN_CHECK(fi_cq_open(p->domain, &cq_attr, &p->cq, NULL), "fi_cq_open");

  struct fi_av_attr av_attr = {0};
  av_attr.type = FI_AV_TABLE;
  av_attr.count = (size_t)size;
  OFI_OPEN_CHECK(fi_av_open(p->domain, &av_attr, &p->av, NULL), "fi_av_open");

  OFI_OPEN_CHECK(fi_endpoint(p->domain, fi, &p->ep, NULL), "fi_endpoint");
  OFI_OPEN_CHECK(fi_ep_bind(p->ep, &p->av->fid, 0), "binding the address vector");
  OFI_OPEN_CHECK(fi_ep_bind(p->ep, &p->cq->fid, FI_TRANSMIT | FI_RECV),
                 "binding the completion queue");
  OFI_OPEN_CHECK(fi_enable(p->ep), "fi_enable");

  p->addrlen = sizeof p->addr;
  OFI_OPEN_CHECK(fi_getname(&p->ep->fid, p->addr, &p->addrlen), "fi_getname");
  if (p->addrlen > sizeof p->addr || p->addrlen > UINT16_MAX) {
    rc = -FI_ETOOSMALL;
    hvd_err_set(err, "%s: endpoint name of %zu bytes is too long", p->name, p->addrlen);
    goto fail;
  }

  p->inject_size = fi->tx_attr->inject_size;
  p->max_msg_size = fi->ep_attr->max_msg_size;
  if (params->max_msg_size != 0 && params->max_msg_size < p->max_msg_size)
    p->max_msg_size = params->max_msg_size;
  if (p->max_msg_size == 0) p->max_msg_size = 1;
  uint64_t fmt = fi->ep_attr->mem_tag_format;
  p->tag_mask = fmt == 0 ? ~0ull : (~0ull >> __builtin_clzll(fmt));
  p->is_loopback = info_is_loopback(fi);
  return 0;

fail:
  slot_close(p);
  return rc;
}

/* Why shm is missing, with the fix, for the one-time warning. */
static void explain_shm_failure(int rc, const hvd_err_t *detail, char *out, size_t n) {
  const char *fp = getenv("FI_PROVIDER");
  if (rc == -FI_ENODATA && fp != NULL && fp[0] != '\0' &&
      (fp[0] == '^' ? strstr(fp, "shm") != NULL : strstr(fp, "shm") == NULL)) {
    snprintf(out, n, "FI_PROVIDER=%s excludes it", fp);
    return;
  }
  struct statvfs sv;
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  if (rc == -FI_ENODATA && cpus > 0 && statvfs("/dev/shm", &sv) == 0) {
    unsigned long long avail = (unsigned long long)sv.f_bavail * sv.f_frsize;
    unsigned long long need = (unsigned long long)cpus * HVD_OFI_SHM_BYTES_PER_CPU;
    if (avail < need) {
      snprintf(out, n,
               "/dev/shm has %llu MiB free but libfabric 1.17 shm needs %ld CPUs x 16 MiB "
               "= %llu MiB, plus 16 MiB per rank on this host; enlarge it, e.g. docker run "
               "--shm-size=%llum",
               avail >> 20, cpus, need >> 20, (need >> 20) + 256);
      return;
    }
  }
  snprintf(out, n, "%s", detail->msg);
}

/* ---- address blob ----------------------------------------------------------------- */

static size_t blob_size(const hvd_ofi_t *o) {
  size_t n = 4 + 1 + 1;
  for (int s = 0; s < HVD_OFI_NSLOTS; s++) {
    const hvd_ofi_prov_t *p = &o->slot[s];
    n += 1;
    if (p->ep) n += 1 + strlen(p->name) + 8 + 2 + p->addrlen;
  }
  return n;
}

static unsigned char *put_u64(unsigned char *b, uint64_t v) {
  for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
  return b + 8;
}

static uint64_t get_u64(const unsigned char *b) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= (uint64_t)b[i] << (8 * i);
  return v;
}

static hvd_status_t ofi_get_address(hvd_transport_t *tp, void *buf, size_t *len) {
  hvd_ofi_t *o = hvd_ofi_of(tp);
  if (len == NULL || (buf == NULL && *len != 0)) {
    hvd_err_set(&tp->err, "get_address: NULL buffer or length");
    return HVD_ERR_INVALID_PARAM;
  }
  size_t need = blob_size(o);
  if (*len < need) {
    hvd_err_set(&tp->err, "get_address: buffer of %zu bytes is too small, need %zu", *len,
                need);
    *len = need;
    return HVD_ERR_INVALID_PARAM;
  }
  unsigned char *b = buf;
  memcpy(b, HVD_OFI_BLOB_MAGIC, 4);
  b += 4;
  *b++ = HVD_OFI_BLOB_VERSION;
  *b++ = o->forced ? HVD_OFI_BLOB_FORCED : 0;
  for (int s = 0; s < HVD_OFI_NSLOTS; s++) {
    const hvd_ofi_prov_t *p = &o->slot[s];
    *b++ = p->ep != NULL;
    if (p->ep == NULL) continue;
    size_t nl = strlen(p->name);
    *b++ = (unsigned char)nl;
    memcpy(b, p->name, nl);
    b += nl;
    b = put_u64(b, p->max_msg_size);
    *b++ = (unsigned char)(p->addrlen & 0xff);
    *b++ = (unsigned char)(p->addrlen >> 8);
    memcpy(b, p->addr, p->addrlen);
    b += p->addrlen;
  }
  *len = need;
  return HVD_OK;
}

typedef struct blob_slot {
  int present;
  const char *name;
  size_t name_len;
  uint64_t max_msg;
  const unsigned char *addr;
  size_t addr_len;
} blob_slot_t;

typedef struct blob_view {
  int forced;
  blob_slot_t slot[HVD_OFI_NSLOTS];
} blob_view_t;

/* Decode with every length checked against the end before it is used. */
static int blob_decode(const void *blob, size_t len, blob_view_t *v) {
  memset(v, 0, sizeof *v);
  if (blob == NULL) return -1;
  const unsigned char *b = blob, *end = b + len;
  if (len < 6 || memcmp(b, HVD_OFI_BLOB_MAGIC, 4) != 0 ||
      b[4] != HVD_OFI_BLOB_VERSION)
    return -1;
  v->forced = (b[5] & HVD_OFI_BLOB_FORCED) != 0;
  b += 6;
  for (int s = 0; s < HVD_OFI_NSLOTS; s++) {
    blob_slot_t *sl = &v->slot[s];
    if (end - b < 1) return -1;
    sl->present = *b++;
    if (!sl->present) continue;
    if (end - b < 1) return -1;
    sl->name_len = *b++;
    if ((size_t)(end - b) < sl->name_len + 8 + 2) return -1;
    sl->name = (const char *)b;
    b += sl->name_len;
    sl->max_msg = get_u64(b);
    b += 8;
    sl->addr_len = (size_t)b[0] | ((size_t)b[1] << 8);
    b += 2;
    if ((size_t)(end - b) < sl->addr_len || sl->addr_len == 0 ||
        sl->addr_len >= HVD_OFI_NAME_MAX || sl->max_msg == 0)
      return -1;
    sl->addr = b;
    b += sl->addr_len;
  }
  return b == end ? 0 : -1;
}

static int name_equal(const hvd_ofi_prov_t *p, const blob_slot_t *sl) {
  return sl->present && strlen(p->name) == sl->name_len &&
         memcmp(p->name, sl->name, sl->name_len) == 0;
}

/* ---- connect ------------------------------------------------------------------- */

static hvd_status_t insert_peer(hvd_ofi_t *o, int r, hvd_ofi_prov_t *p,
                                const blob_slot_t *sl) {
  char name[HVD_OFI_NAME_MAX + 1];
  const void *addr = sl->addr;
  if (p->info->addr_format == FI_ADDR_STR) {
    /* shm 1.17 reads addr as packed NUL-terminated strings (smr_av_insert steps by
     * strlen + 1), not as the char ** the fi_av man page describes: pass the string. */
    memcpy(name, sl->addr, sl->addr_len);
    name[sl->addr_len] = '\0';
    addr = name;
  }
  fi_addr_t fa = FI_ADDR_NOTAVAIL;
  int rc = fi_av_insert(p->av, addr, 1, &fa, 0, NULL);
  if (rc != 1 || fa == FI_ADDR_NOTAVAIL) {
    hvd_err_set(&o->base.err,
                "connect: inserting rank %d's %s address into the address vector failed: "
                "%s (%d)",
                r, p->name, rc < 0 ? fi_strerror(-rc) : "address not available", rc);
    return HVD_ERR_TRANSPORT;
  }
  hvd_ofi_peer_t *pe = &o->peers[r];
  pe->prov = p;
  p->npeers++;
  pe->addr = fa;
  pe->seg_size = HVD_MIN((uint64_t)p->max_msg_size, sl->max_msg);
  return HVD_OK;
}

static hvd_status_t ofi_connect(hvd_transport_t *tp, const void *const *blobs,
                                const size_t *lens, const int *same_host) {
  hvd_ofi_t *o = hvd_ofi_of(tp);
  hvd_ofi_prov_t *local = o->slot[HVD_OFI_LOCAL].ep ? &o->slot[HVD_OFI_LOCAL] : NULL;
  hvd_ofi_prov_t *net = o->slot[HVD_OFI_NET].ep ? &o->slot[HVD_OFI_NET] : NULL;
  hvd_status_t st = HVD_OK;
  blob_view_t v;

  if (blobs == NULL || lens == NULL || same_host == NULL) {
    hvd_err_set(&tp->err, "connect: NULL blobs, lengths or same_host");
    return HVD_ERR_INVALID_PARAM;
  }
  if (o->peers != NULL) {
    hvd_err_set(&tp->err, "connect: already connected");
    return HVD_ERR_INVALID_PARAM;
  }
  o->peers = calloc((size_t)tp->size, sizeof *o->peers);
  if (o->peers == NULL) {
    hvd_err_set(&tp->err, "connect: out of memory for %d peers", tp->size);
    return HVD_ERR_NO_MEMORY;
  }

  /* shm endpoints serve at most 256 peers; everyone on a host counts the same
   * number of shm-capable neighbours, so they all drop shm together. */
  int use_local = local != NULL && !o->forced;
  if (use_local) {
    int n = 0;
    for (int r = 0; r < tp->size; r++) {
      if (r == tp->rank || !same_host[r]) continue;
      if (blob_decode(blobs[r], lens[r], &v) == 0 && v.slot[HVD_OFI_LOCAL].present) n++;
    }
    if (n >= HVD_OFI_SHM_MAX_PEERS) {
      HVD_WARN("transport: %d same-host peers exceed the shm provider's limit of %d; "
               "they will use %s",
               n, HVD_OFI_SHM_MAX_PEERS - 1, net ? net->name : "the network provider");
      use_local = 0;
    }
  }

  for (int r = 0; r < tp->size; r++) {
    if (r == tp->rank) continue;
    if (blob_decode(blobs[r], lens[r], &v) != 0) {
      hvd_err_set(&tp->err, "connect: rank %d's address blob (%zu bytes) is malformed", r,
                  lens[r]);
      st = HVD_ERR_PROTOCOL;
      goto fail;
    }
    if (v.forced != o->forced) {
      hvd_err_set(&tp->err,
                  "connect: rank %d %s HVD_OFI_PROVIDER but this rank %s; set it the same "
                  "way on every rank",
                  r, v.forced ? "sets" : "does not set", o->forced ? "does" : "does not");
      st = HVD_ERR_MISMATCH;
      goto fail;
    }
    if (o->forced && local != NULL) { /* HVD_OFI_PROVIDER=shm */
      if (!same_host[r]) {
        hvd_err_set(&tp->err,
                    "connect: HVD_OFI_PROVIDER=shm, but rank %d is on another host; shm "
                    "only reaches same-host peers (use tcp, or leave it unset)",
                    r);
        st = HVD_ERR_INVALID_PARAM;
        goto fail;
      }
      if (!name_equal(local, &v.slot[HVD_OFI_LOCAL])) {
        hvd_err_set(&tp->err,
                    "connect: HVD_OFI_PROVIDER=shm here, but rank %d has no shm endpoint; "
                    "set it the same way on every rank",
                    r);
        st = HVD_ERR_MISMATCH;
        goto fail;
      }
      HVD_CHECK_GOTO(insert_peer(o, r, local, &v.slot[HVD_OFI_LOCAL]), st, fail);
      continue;
    }
    if (use_local && same_host[r] && v.slot[HVD_OFI_LOCAL].present) {
      if (!name_equal(local, &v.slot[HVD_OFI_LOCAL])) {
        hvd_err_set(&tp->err, "connect: rank %d's local provider is \"%.*s\", not \"%s\"", r,
                    (int)v.slot[HVD_OFI_LOCAL].name_len, v.slot[HVD_OFI_LOCAL].name,
                    local->name);
        st = HVD_ERR_MISMATCH;
        goto fail;
      }
      HVD_CHECK_GOTO(insert_peer(o, r, local, &v.slot[HVD_OFI_LOCAL]), st, fail);
      continue;
    }
    const blob_slot_t *ns = &v.slot[HVD_OFI_NET];
    if (net == NULL) {
      hvd_err_set(&tp->err, "connect: rank %d needs the network provider, which is not open: %s",
                  r, o->net_error[0] ? o->net_error : "(no reason recorded)");
      st = HVD_ERR_TRANSPORT;
      goto fail;
    }
    if (!name_equal(net, ns)) {
      if (ns->present)
        hvd_err_set(&tp->err,
                    "connect: rank %d uses network provider \"%.*s\" but this rank uses \"%s\"; "
                    "ranks must agree (HVD_OFI_PROVIDER)",
                    r, (int)ns->name_len, ns->name, net->name);
      else
        hvd_err_set(&tp->err, "connect: rank %d has no network endpoint (%s needed)", r,
                    net->name);
      st = HVD_ERR_MISMATCH;
      goto fail;
    }
    if (net->is_loopback && !same_host[r]) {
      hvd_err_set(&tp->err,
                  "connect: %s is bound to a loopback address, which cannot reach rank %d on "
                  "another host; name a routable interface (HVD_OFI_IFACE)",
                  net->name, r);
      st = HVD_ERR_INVALID_PARAM;
      goto fail;
    }
    HVD_CHECK_GOTO(insert_peer(o, r, net, ns), st, fail);
  }

  if (hvd_log_get_level() <= HVD_LOG_DEBUG) {
    int n_local = 0, n_net = 0;
    for (int r = 0; r < tp->size; r++) {
      if (o->peers[r].prov == NULL) continue;
      if (o->peers[r].prov == &o->slot[HVD_OFI_LOCAL]) n_local++;
      else n_net++;
    }
    HVD_DEBUG("transport: rank %d connected: %d peers over %s, %d over %s", tp->rank,
              n_local, local ? local->name : "-", n_net, net ? net->name : "-");
  }
  return HVD_OK;

fail:
  free(o->peers);
  o->peers = NULL;
  for (int s = 0; s < HVD_OFI_NSLOTS; s++) o->slot[s].npeers = 0;
  return st;
}

/* ---- the rest of the ops table ----------------------------------------------------- */

static const char *ofi_peer_provider(hvd_transport_t *tp, int peer) {
  hvd_ofi_t *o = hvd_ofi_of(tp);
  if (peer == tp->rank) return "self";
  if (o->peers == NULL || peer < 0 || peer >= tp->size || o->peers[peer].prov == NULL)
    return "none";
  return o->peers[peer].prov->name;
}

static size_t ofi_inject_size(hvd_transport_t *tp, int peer) {
  hvd_ofi_t *o = hvd_ofi_of(tp);
  if (o->peers == NULL || peer < 0 || peer >= tp->size || peer == tp->rank ||
      o->peers[peer].prov == NULL)
    return 0;
  return HVD_MIN(o->peers[peer].prov->inject_size, o->peers[peer].seg_size);
}

static void ofi_destroy(hvd_transport_t *tp) {
  if (tp == NULL) return;
  hvd_ofi_t *o = hvd_ofi_of(tp);
  /* Reverse order of creation: the network slot was opened last. Closing an endpoint
   * drops whatever is still posted; deferred xfers are simply forgotten. */
  for (int s = HVD_OFI_NSLOTS - 1; s >= 0; s--) slot_close(&o->slot[s]);
  free(o->peers);
  free(o);
}

static const hvd_transport_ops_t ofi_ops = {
    .get_address = ofi_get_address,
    .connect = ofi_connect,
    .isend = hvd_ofi_isend,
    .irecv = hvd_ofi_irecv,
    .waitall = hvd_ofi_waitall,
    .progress = hvd_ofi_progress,
    .inject_size = ofi_inject_size,
    .peer_provider = ofi_peer_provider,
    .destroy = ofi_destroy,
};

static void log_slot(const hvd_ofi_prov_t *p, const char *role) {
  char ip[INET6_ADDRSTRLEN], max[32] = "unlimited";
  sockaddr_string(p->info, ip, sizeof ip);
  if (p->max_msg_size != SIZE_MAX) snprintf(max, sizeof max, "%zu bytes", p->max_msg_size);
  HVD_INFO("transport: %s: provider %s, fabric %s, domain %s%s%s, max message %s, "
           "inject %zu bytes",
           role, p->name, p->info->fabric_attr->name ? p->info->fabric_attr->name : "?",
           p->info->domain_attr->name ? p->info->domain_attr->name : "?", ip[0] ? ", " : "",
           ip, max, p->inject_size);
}

hvd_status_t hvd_ofi_create(const hvd_ofi_params_t *params, hvd_transport_t **out,
                            hvd_err_t *err) {
  if (out == NULL || params == NULL) {
    hvd_err_set(err, "hvd_ofi_create: NULL params or out");
    return HVD_ERR_INVALID_PARAM;
  }
  *out = NULL;
  if (params->size < 1 || params->size > HVD_TP_MAX_RANKS || params->rank < 0 ||
      params->rank >= params->size) {
    hvd_err_set(err, "hvd_ofi_create: rank %d / size %d out of range (size 1..%d)",
                params->rank, params->size, HVD_TP_MAX_RANKS);
    return HVD_ERR_INVALID_PARAM;
  }
  hvd_ofi_t *o = calloc(1, sizeof *o);
  if (o == NULL) {
    hvd_err_set(err, "hvd_ofi_create: out of memory");
    return HVD_ERR_NO_MEMORY;
  }
  o->base.ops = &ofi_ops;
  o->base.rank = params->rank;
  o->base.size = params->size;
  if (params->timeout_s > 0) o->timeout_ns = (uint64_t)(params->timeout_s * 1e9);

  hvd_ofi_prov_t *local = &o->slot[HVD_OFI_LOCAL];
  hvd_ofi_prov_t *net = &o->slot[HVD_OFI_NET];
  const char *iface = params->iface;
  hvd_err_t why;
  int rc;

  if (params->provider != NULL && params->provider[0] != '\0' &&
      strcasecmp(params->provider, "auto") != 0) {
    char name[HVD_OFI_PROV_NAME_MAX];
    normalize_provider(params->provider, name, sizeof name);
    o->forced = 1;
    int is_shm = strcasecmp(name, "shm") == 0;
    rc = slot_open(is_shm ? local : net, is_shm ? "shm" : name, is_shm ? NULL : iface,
                   params->size, params, err);
    if (rc != 0) {
      hvd_err_prefix(err, "HVD_OFI_PROVIDER=%s", params->provider);
      free(o);
      return HVD_ERR_TRANSPORT;
    }
    log_slot(is_shm ? local : net, "all peers");
    *out = &o->base;
    return HVD_OK;
  }

  /* Automatic: shm for same-host peers, tcp;ofi_rxm for the rest. */
  int shm_rc = slot_open(local, "shm", NULL, params->size, params, &why);
  char shm_why[HVD_ERR_MSG_MAX] = "";
  if (shm_rc != 0) explain_shm_failure(shm_rc, &why, shm_why, sizeof shm_why);

  rc = slot_open(net, "tcp;ofi_rxm", iface, params->size, params, &why);
  if (rc != 0) {
    snprintf(o->net_error, sizeof o->net_error, "%s", why.msg);
    if (shm_rc != 0 || (iface != NULL && iface[0] != '\0')) {
      if (shm_rc != 0)
        hvd_err_set(err, "no usable libfabric provider: shm: %s; tcp;ofi_rxm: %s", shm_why,
                    o->net_error);
      else
        hvd_err_set(err, "%s", o->net_error);
      slot_close(local);
      free(o);
      return HVD_ERR_TRANSPORT;
    }
    /* Enough for a single-host job; connect() fails if a remote peer needs it. */
    HVD_WARN("transport: tcp;ofi_rxm unavailable (%s); only same-host peers can be "
             "reached",
             o->net_error);
  }
  if (shm_rc != 0)
    HVD_WARN("transport: shm provider unavailable (%s); same-host peers will use %s",
             shm_why, net->name);
  if (local->ep) log_slot(local, "same-host peers");
  if (net->ep) log_slot(net, "other peers");
  *out = &o->base;
  return HVD_OK;
}
