/*
 * Progress and waiting for the libfabric transport.
 *
 * How it works. Both providers run with manual data progress: bytes move (and
 * tcp;ofi_rxm even sets up connections) only while we read their CQs. A progress
 * pass reads, in batches, every open CQ that some peer uses (an unused tcp;ofi_rxm
 * CQ would cost a poll() per pass) (op_context is the hvd_xfer_t; each entry
 * takes one off x->pending), turns error entries (-FI_EAVAIL -> fi_cq_readerr) into
 * HVD_ERR_TRANSPORT on the xfer with the provider's explanation in tp->err, and then
 * posts whatever segments were deferred by -FI_EAGAIN.
 *
 * waitall repeats passes until its xfers are done, an xfer failed, or the abort
 * flag is set. Between passes that found nothing it waits ever more politely:
 *   spin      (cpu pause)   for the first HVD_OFI_SPIN_NS   - a reply is often that close
 *   sched_yield             until HVD_OFI_YIELD_NS, longer  - lets a co-located rank run
 *                           for large transfers (see below)
 *   nanosleep 1 us, doubling to HVD_OFI_SLEEP_MAX_NS (1 ms) - a rank stuck on a slow
 *     (timer slack makes the short ones ~55 us)                 peer costs 1-2% of a core
 * Any completion or posting restarts the sequence. We poll rather than block on a
 * wait object because shm (1.17) never signals one: a peer's write would not wake us.
 *
 * No-progress timeout (o->timeout_ns, HVD_TRANSPORT_TIMEOUT_SECONDS). tcp;ofi_rxm
 * reports a dead link only when TCP gives up retransmitting, many minutes later, so
 * the timer is ours: waitall fails with HVD_ERR_TIMEOUT once that long passed with
 * no completion of any of its own xfers. The clock starts at the call and restarts
 * whenever one of them progresses; a collective calls waitall again right after
 * each step, so what is timed is how long the operation has been stuck, never how
 * long an xfer has been posted (a pipelined receive may legitimately wait behind
 * earlier chunks). Other traffic (another peer's control messages) does not count:
 * it says nothing about the peer this operation waits for.
 */
#include <rdma/fi_eq.h>
#include <rdma/fi_errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/util.h"
#include "transport/ofi_priv.h"

#define HVD_OFI_CQ_BATCH 32
#define HVD_OFI_CQ_MAX_BATCHES 8 /* per CQ per pass: one busy CQ cannot starve the other */
#define HVD_OFI_SPIN_NS 10000ull
#define HVD_OFI_YIELD_NS 100000ull
/* Large transfers legitimately go quiet for about their copy time (shm CMA copies a
 * whole message in one progress call of the receiver; the sender hears nothing until
 * then): stay in the yield phase ~1 ns per outstanding byte (1 GB/s), at most 20 ms,
 * so we notice the end promptly instead of up to a sleep cap later. */
#define HVD_OFI_YIELD_NS_PER_BYTE 1ull
#define HVD_OFI_YIELD_BYTES_MAX_NS 20000000ull
#define HVD_OFI_SLEEP_MIN_NS 1000l
#define HVD_OFI_SLEEP_MAX_NS 1000000l

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

static const char *xfer_what(const hvd_xfer_t *x) { return x->is_recv ? "receive" : "send"; }

static void complete_one(hvd_ofi_t *o, hvd_xfer_t *x, size_t len) {
  if (x->is_recv) x->received += len;
  if (--x->pending != 0 || !x->is_recv || x->received == x->len) return;
  /* A short message is fine in one segment (x->received tells); in several, the two
   * sides cut differently and the rest would have gone to later receives. */
  if (x->len > o->peers[x->peer].seg_size && x->status == HVD_OK) {
    x->status = HVD_ERR_TRANSPORT;
    hvd_err_set(&o->base.err,
                "segmented receive from rank %d (tag 0x%016llx): %zu of %zu bytes arrived; "
                "the ranks disagree on the message size",
                x->peer, (unsigned long long)x->tag, x->received, x->len);
  }
}

static hvd_status_t read_error(hvd_ofi_t *o, hvd_ofi_prov_t *p) {
  struct fi_cq_err_entry e;
  char data[256];
  memset(&e, 0, sizeof e);
  e.err_data = data; /* our own buffer: no provider-owned pointer to outlive */
  e.err_data_size = sizeof data;
  ssize_t rc = fi_cq_readerr(p->cq, &e, 0);
  if (rc == -FI_EAGAIN) return HVD_OK;
  if (rc < 0) {
    hvd_err_set(&o->base.err, "%s: fi_cq_readerr failed: %s (%zd)", p->name,
                fi_strerror((int)-rc), rc);
    return HVD_ERR_TRANSPORT;
  }
  const char *detail = fi_cq_strerror(p->cq, e.prov_errno, e.err_data, NULL, 0);
  char extra[96] = "";
  if (e.err == FI_ETRUNC)
    snprintf(extra, sizeof extra, "; the message was %zu bytes longer than the receive",
             e.olen);
  hvd_xfer_t *x = e.op_context;
  if (x == NULL) { /* e.g. a failed fi_tinject: nobody to hand it to */
    hvd_err_set(&o->base.err, "%s: operation failed: %s (provider: %s)%s", p->name,
                fi_strerror(e.err), detail ? detail : "-", extra);
    return HVD_ERR_TRANSPORT;
  }
  if (x->status == HVD_OK) x->status = HVD_ERR_TRANSPORT;
  hvd_err_set(&o->base.err, "%s of %zu bytes %s rank %d over %s (tag 0x%016llx) failed: %s "
              "(provider: %s)%s",
              xfer_what(x), x->len, x->is_recv ? "from" : "to", x->peer, p->name,
              (unsigned long long)x->tag, fi_strerror(e.err), detail ? detail : "-", extra);
  complete_one(o, x, 0);
  return HVD_OK;
}

static hvd_status_t read_cq(hvd_ofi_t *o, hvd_ofi_prov_t *p, int *events) {
  struct fi_cq_tagged_entry ent[HVD_OFI_CQ_BATCH];
  for (int b = 0; b < HVD_OFI_CQ_MAX_BATCHES; b++) {
    ssize_t n = fi_cq_read(p->cq, ent, HVD_OFI_CQ_BATCH);
    if (n == -FI_EAGAIN) return HVD_OK;
    if (n == -FI_EAVAIL) {
      HVD_CHECK(read_error(o, p));
      (*events)++;
      continue;
    }
    if (n < 0) {
      hvd_err_set(&o->base.err, "%s: fi_cq_read failed: %s (%zd)", p->name,
                  fi_strerror((int)-n), n);
      return HVD_ERR_TRANSPORT;
    }
    for (ssize_t i = 0; i < n; i++)
      if (ent[i].op_context != NULL) complete_one(o, ent[i].op_context, ent[i].len);
    *events += (int)n;
    if (n < HVD_OFI_CQ_BATCH) return HVD_OK;
  }
  return HVD_OK;
}

hvd_status_t hvd_ofi_progress_pass(hvd_ofi_t *o, int *events) {
  for (int s = 0; s < HVD_OFI_NSLOTS; s++) {
    hvd_ofi_prov_t *p = &o->slot[s];
    /* A connected slot no peer uses has nothing to complete; reading tcp;ofi_rxm's
     * CQ costs a poll() system call, which doubled a same-host message's latency. */
    if (p->ep == NULL || (o->peers != NULL && p->npeers == 0)) continue;
    HVD_CHECK(read_cq(o, p, events));
    if (p->defer_head != NULL) hvd_ofi_post_deferred(o, p, events);
  }
  return HVD_OK;
}

hvd_status_t hvd_ofi_progress(hvd_transport_t *tp) {
  int events = 0;
  return hvd_ofi_progress_pass(hvd_ofi_of(tp), &events);
}

/* " (host NAME)" for peer, or "" when the owner gave no host names. */
static const char *host_of(const hvd_ofi_t *o, int peer, char *buf, size_t n) {
  const char *const *hosts = o->base.hosts;
  buf[0] = '\0';
  if (hosts != NULL && hosts[peer] != NULL) snprintf(buf, n, " (host %s)", hosts[peer]);
  return buf;
}

/* None of xs[0..n) progressed for the timeout: name the peer waited for. A peer
 * behind the network provider goes first: a same-host (shm) peer that is stuck is
 * usually waiting for the same dead link; the others are listed after it. */
static hvd_status_t no_progress(hvd_ofi_t *o, hvd_xfer_t *const *xs, int n) {
  const hvd_xfer_t *x = NULL;
  for (int net_only = 1; net_only >= 0 && x == NULL; net_only--)
    for (int i = 0; i < n && x == NULL; i++)
      if (xs[i] != NULL && xs[i]->pending > 0 &&
          (!net_only || xs[i]->prov == &o->slot[HVD_OFI_NET]))
        x = xs[i];
  char host[HVD_OFI_NAME_MAX], also[160] = "";
  size_t off = 0;
  for (int i = 0; i < n; i++) {
    if (xs[i] == NULL || xs[i]->pending == 0 || xs[i]->peer == x->peer) continue;
    int seen = 0;
    for (int j = 0; j < i; j++)
      seen |= xs[j] != NULL && xs[j]->pending > 0 && xs[j]->peer == xs[i]->peer;
    if (seen || off >= sizeof also - 1) continue;
    int w = snprintf(also + off, sizeof also - off, "%s rank %d%s", off ? "," : "; also for",
                     xs[i]->peer, host_of(o, xs[i]->peer, host, sizeof host));
    if (w > 0) off += (size_t)w;
  }
  char xhost[HVD_OFI_NAME_MAX];
  hvd_err_set(&o->base.err,
              "no progress from rank %d%s for %.1f s (HVD_TRANSPORT_TIMEOUT_SECONDS): network "
              "or peer failure (waiting for a %zu-byte %s over %s%s)",
              x->peer, host_of(o, x->peer, xhost, sizeof xhost), (double)o->timeout_ns * 1e-9,
              x->len, xfer_what(x), ((const hvd_ofi_prov_t *)x->prov)->name, also);
  return HVD_ERR_TIMEOUT;
}

hvd_status_t hvd_ofi_waitall(hvd_transport_t *tp, hvd_xfer_t *const *xs, int n) {
  hvd_ofi_t *o = hvd_ofi_of(tp);
  if (n < 0 || (xs == NULL && n > 0)) {
    hvd_err_set(&tp->err, "waitall: bad xfer array (%d entries)", n);
    return HVD_ERR_INVALID_PARAM;
  }
  uint64_t idle_since = hvd_now_ns();
  uint64_t stuck_since = idle_since; /* last progress of xs: the no-progress clock */
  long pending_before = -1;
  long sleep_ns = HVD_OFI_SLEEP_MIN_NS;
  for (;;) {
    int events = 0;
    HVD_CHECK(hvd_ofi_progress_pass(o, &events));

    const hvd_xfer_t *busy = NULL;
    int nbusy = 0;
    uint64_t busy_bytes = 0;
    long pending = 0;
    for (int i = 0; i < n; i++) {
      const hvd_xfer_t *x = xs[i];
      if (x == NULL) continue;
      if (x->status < 0) return x->status; /* detail already in tp->err */
      if (x->pending > 0) {
        if (busy == NULL) busy = x;
        nbusy++;
        busy_bytes += x->len;
        pending += x->pending;
      }
    }
    if (busy == NULL) return HVD_OK;
    if (tp->abort != NULL && atomic_load(tp->abort) != 0) {
      hvd_err_set(&tp->err, "aborted while waiting for %d transfer(s), e.g. a %s of %zu bytes "
                  "%s rank %d",
                  nbusy, xfer_what(busy), busy->len, busy->is_recv ? "from" : "to",
                  busy->peer);
      return HVD_ERR_ABORTED;
    }

    uint64_t now = hvd_now_ns();
    if (pending != pending_before) { /* one of ours completed (or this is the first pass) */
      pending_before = pending;
      stuck_since = now;
    } else if (o->timeout_ns != 0 && now - stuck_since >= o->timeout_ns) {
      return no_progress(o, xs, n);
    }
    if (events > 0) {
      idle_since = now;
      sleep_ns = HVD_OFI_SLEEP_MIN_NS;
      continue;
    }
    uint64_t idle = now - idle_since;
    if (idle < HVD_OFI_SPIN_NS) {
      for (int k = 0; k < 16; k++) cpu_relax();
    } else if (idle < HVD_OFI_YIELD_NS + HVD_MIN(busy_bytes * HVD_OFI_YIELD_NS_PER_BYTE,
                                                  HVD_OFI_YIELD_BYTES_MAX_NS)) {
      sched_yield();
    } else {
      struct timespec ts = {0, sleep_ns};
      nanosleep(&ts, NULL);
      sleep_ns = HVD_MIN(sleep_ns * 2, HVD_OFI_SLEEP_MAX_NS);
    }
  }
}
