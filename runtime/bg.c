/*
 * The background thread: negotiation engine and control channel.
 *
 * Every rank is a member of one or more process sets; global rank 0 also runs the
 * coordinator of every set (runtime/coord.c). One loop, no fixed sleep:
 *
 *   1. take new entries off the context's queue and file them per set: a tensor
 *      whose request matches this rank's response cache becomes a bit, anything else
 *      a full request in the set's outgoing request list;
 *   2. send each dirty request list to rank 0 (rank 0 hands its own to the
 *      coordinator directly);
 *   3. rank 0: take request lists that arrived, feed them to the coordinators, and
 *      send every response list the coordinators build to the set's members;
 *   4. members: apply response lists from rank 0 in order: evictions, cache ids,
 *      then execute each response (exec.c);
 *   5. when nothing happened: while this rank has work in flight, poll briefly
 *      (HVD_SPIN_US), then yield; then, or at once when nothing is in flight, sleep
 *      on the queue's condition variable with a growing timeout (capped at 1 ms),
 *      so a waiting rank costs almost no CPU and a newly queued tensor wakes it.
 *      A rank without a CPU to spare (bound to one core, as hvdrun binds ranks when
 *      there are no more ranks than cores) polls only while its application thread
 *      waits (hvd_wait; hvd_test recently): otherwise polling would take the core
 *      from the application's computation (a trainer overlapping backprop with its
 *      gradient allreduces), so it sleeps, and hvd_wait's signal ends the sleep;
 *      its timeout (HVD_POLITE_SLEEP_NS) only bounds how late tensors submitted
 *      meanwhile reach the coordinator (each wake-up preempts the computation).
 *
 * Control messages travel over the transport with HVD_TAG_KIND_CONTROL tags: an
 * inline message, or, for a larger list, a short header carrying the size and the
 * fragment size, followed by the payload in fragments on a second tag. Messages
 * between a pair are matched in order, so no sequence numbers are needed on the wire.
 * No control message on the wire is larger than what the peer provider buffers when
 * no receive is posted (frag_max): the receiver may be inside a collective with no
 * control receive posted, and libfabric's shm provider does not complete a larger
 * (CMA) send until the receiver posts a matching receive — and holds every later send
 * to that peer behind it, the collective's data included: a deadlock (libfabric issue
 * 9853).
 * Injected (and, with ofi_rxm, eager) messages are buffered by the receiving provider
 * instead.
 */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "collectives/tags.h"
#include "common/log.h"
#include "common/util.h"
#include "runtime/ctx.h"

#define CTRL_INLINE (64 * 1024)
#define BIG_MAGIC 0x47494248u /* "HBIG" */
#define BIG_HDR 16                /* magic u32, total length u64, fragment size u32 */
/* Longest sleep of a background thread whose application computes on its core
 * ("polite", idle_wait). 1 ms made the thread preempt a trainer's backward pass about
 * twice per 2 ms step; 5 ms instead: 1-2 % less compute per step (docs/performance.md,
 * "Problems found" 13). */
#define HVD_POLITE_SLEEP_NS 5000000u
#define STEP_INLINE 0
#define STEP_BIG 1

typedef struct ctrl_send {
  struct ctrl_send *next;
  hvd_xfer_t x;
  uint8_t *buf;
} ctrl_send_t;

typedef struct ctrl_rx {
  int peer;
  uint8_t *buf; /* CTRL_INLINE */
  hvd_xfer_t x;
  uint8_t *big; /* payload of a large message being received */
  size_t big_len;  /* its total length */
  size_t big_off;  /* bytes of it received so far */
  size_t big_frag; /* the sender's fragment size */
  hvd_xfer_t bx;
  int state; /* 0 idle, 1 inline posted, 2 big posted */
} ctrl_rx_t;

struct hvd_engine {
  hvd_ctx_t *ctx;
  ctrl_rx_t *rx; /* rank 0: one per other rank (index = rank); others: rx[0] from rank 0 */
  int nrx;
  ctrl_send_t *sends;
  hvd_wbuf_t wb;
  size_t inline_max; /* CTRL_INLINE, or less when the transport segments smaller:
                        a receive may be matched by a shorter message only within
                        one segment */
  uint64_t last_activity_ns;
  uint64_t sleep_ns;
  int polite; /* the last idle_wait slept because the application was not waiting */
};

static uint64_t ctrl_tag(int step) { return hvd_tag_make(HVD_TAG_KIND_CONTROL, 0, 0, (unsigned)step); }

/* Whether this rank has a CPU for each of its two busy threads (application and
 * background): its affinity mask when it is bound (hvdrun binds a rank to a core when
 * ranks <= cores), else its share of the online CPUs. Without one, every cycle the
 * background thread spends polling is taken from the application thread. */
static int spare_core(const hvd_ctx_t *ctx) {
  cpu_set_t set;
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  if (online < 1 || sched_getaffinity(0, sizeof set, &set) != 0) return 0;
  long mine = CPU_COUNT(&set);
  long per_rank = mine < online ? mine : online / HVD_MAX(ctx->id.local_size, 1);
  return per_rank >= 2;
}

hvd_status_t hvd_engine_new(hvd_ctx_t *ctx, hvd_engine_t **out, hvd_err_t *err) {
  hvd_engine_t *eng = calloc(1, sizeof *eng);
  if (eng == NULL) return HVD_ERR_NO_MEMORY;
  eng->ctx = ctx;
  ctx->spare_core = spare_core(ctx);
  eng->inline_max = CTRL_INLINE;
  if (ctx->cfg.ofi_max_msg_size > 0 && (size_t)ctx->cfg.ofi_max_msg_size < eng->inline_max)
    eng->inline_max = HVD_MAX((size_t)ctx->cfg.ofi_max_msg_size, 16);
  int n = ctx->id.rank == 0 ? ctx->id.size : (ctx->id.size > 1 ? 1 : 0);
  eng->nrx = n;
  if (n > 0 && (eng->rx = calloc((size_t)n, sizeof *eng->rx)) == NULL) goto oom;
  for (int i = 0; i < n; i++) {
    eng->rx[i].peer = ctx->id.rank == 0 ? i : 0;
    if (ctx->id.rank == 0 && i == 0) continue; /* rank 0 does not message itself */
    if ((eng->rx[i].buf = malloc(CTRL_INLINE)) == NULL) goto oom;
  }
  *out = eng;
  return HVD_OK;
oom:
  hvd_err_set(err, "out of memory for control buffers");
  hvd_engine_free(eng);
  return HVD_ERR_NO_MEMORY;
}

void hvd_engine_free(hvd_engine_t *eng) {
  if (eng == NULL) return;
  for (int i = 0; i < eng->nrx; i++) {
    free(eng->rx[i].buf);
    free(eng->rx[i].big);
  }
  free(eng->rx);
  for (ctrl_send_t *s = eng->sends, *nx; s; s = nx) {
    nx = s->next;
    free(s->buf);
    free(s);
  }
  hvd_wbuf_free(&eng->wb);
  free(eng);
}

/* ---- sending ------------------------------------------------------------------------- */

static hvd_status_t send_copy(hvd_engine_t *eng, int peer, const void *data, size_t len, int step) {
  hvd_transport_t *tp = eng->ctx->tp;
  ctrl_send_t *s = calloc(1, sizeof *s);
  if (s == NULL) return HVD_ERR_NO_MEMORY;
  s->buf = malloc(len ? len : 1);
  if (s->buf == NULL) {
    free(s);
    return HVD_ERR_NO_MEMORY;
  }
  memcpy(s->buf, data, len);
  hvd_status_t rc = tp->ops->isend(tp, peer, s->buf, len, ctrl_tag(step), &s->x);
  if (rc != HVD_OK) {
    free(s->buf);
    free(s);
    return rc;
  }
  s->next = eng->sends;
  eng->sends = s;
  return HVD_OK;
}

/* Largest control message to peer on the wire: the inline receive's size, and no
 * more than what the provider buffers unexpected (see the top of this file): its
 * inject size (shm: 4 KiB), but at least CTRL_EAGER_MIN, since tcp;ofi_rxm reports an
 * inject size of 64 bytes yet sends up to FI_OFI_RXM_BUFFER_SIZE (~16 KiB) eagerly
 * into buffers it keeps for unexpected messages (man fi_rxm). */
#define CTRL_EAGER_MIN 4096
static size_t frag_max(hvd_engine_t *eng, int peer) {
  hvd_transport_t *tp = eng->ctx->tp;
  size_t inj = tp->ops->inject_size ? tp->ops->inject_size(tp, peer) : 0;
  return inj > 0 ? HVD_MIN(HVD_MAX(inj, (size_t)CTRL_EAGER_MIN), eng->inline_max)
                 : eng->inline_max;
}

static hvd_status_t send_msg(hvd_engine_t *eng, int peer, const uint8_t *data, size_t len) {
  const size_t frag = frag_max(eng, peer);
  if (len <= frag && len != BIG_HDR) return send_copy(eng, peer, data, len, STEP_INLINE);
  uint8_t hdr[BIG_HDR];
  uint32_t magic = BIG_MAGIC, f = (uint32_t)frag;
  uint64_t l = len;
  memcpy(hdr, &magic, 4);
  memcpy(hdr + 4, &l, 8);
  memcpy(hdr + 12, &f, 4);
  HVD_CHECK(send_copy(eng, peer, hdr, sizeof hdr, STEP_INLINE));
  for (size_t off = 0; off < len; off += frag)
    HVD_CHECK(send_copy(eng, peer, data + off, HVD_MIN(frag, len - off), STEP_BIG));
  return HVD_OK;
}

/* Free sends that completed; a failed send is a transport failure. */
static hvd_status_t reap_sends(hvd_engine_t *eng) {
  hvd_status_t rc = HVD_OK;
  for (ctrl_send_t **pp = &eng->sends; *pp;) {
    ctrl_send_t *s = *pp;
    if (s->x.pending > 0) {
      pp = &s->next;
      continue;
    }
    if (s->x.status != HVD_OK) rc = s->x.status;
    *pp = s->next;
    free(s->buf);
    free(s);
  }
  return rc;
}

/* ---- receiving ----------------------------------------------------------------------- */

static hvd_status_t post_rx(hvd_engine_t *eng, ctrl_rx_t *r) {
  hvd_transport_t *tp = eng->ctx->tp;
  r->state = 1;
  return tp->ops->irecv(tp, r->peer, r->buf, eng->inline_max, ctrl_tag(STEP_INLINE), &r->x);
}

/* If a whole message from r's peer arrived, return it in *msg (*len bytes; valid until
 * the next post) and 1; 0 if not yet. */
static int rx_ready(hvd_engine_t *eng, ctrl_rx_t *r, const uint8_t **msg, size_t *len,
                    hvd_status_t *rc) {
  hvd_transport_t *tp = eng->ctx->tp;
  *rc = HVD_OK;
  if (r->state == 1 && r->x.pending == 0) {
    if (r->x.status != HVD_OK) {
      *rc = r->x.status;
      return 0;
    }
    size_t got = r->x.received;
    uint32_t magic = 0;
    if (got == BIG_HDR) memcpy(&magic, r->buf, 4);
    if (magic == BIG_MAGIC) {
      uint64_t l;
      uint32_t f;
      memcpy(&l, r->buf + 4, 8);
      memcpy(&f, r->buf + 12, 4);
      if (l > (1ull << 32) || f == 0 || f > eng->inline_max) {
        *rc = HVD_ERR_PROTOCOL;
        hvd_err_set(&tp->err, "control message of %llu bytes in fragments of %u from rank %d",
                    (unsigned long long)l, f, r->peer);
        return 0;
      }
      free(r->big);
      r->big = malloc(l ? (size_t)l : 1);
      r->big_len = (size_t)l;
      r->big_off = 0;
      r->big_frag = f;
      if (r->big == NULL) {
        *rc = HVD_ERR_NO_MEMORY;
        return 0;
      }
      r->state = 2;
      *rc = tp->ops->irecv(tp, r->peer, r->big, HVD_MIN(r->big_frag, r->big_len),
                           ctrl_tag(STEP_BIG), &r->bx);
      return 0;
    }
    *msg = r->buf;
    *len = got;
    r->state = 0;
    return 1;
  }
  if (r->state == 2 && r->bx.pending == 0) {
    if (r->bx.status != HVD_OK) {
      *rc = r->bx.status;
      return 0;
    }
    /* One fragment in; the sender cut at big_frag, so each but the last is whole. */
    size_t want = HVD_MIN(r->big_frag, r->big_len - r->big_off);
    if (r->bx.received != want) {
      *rc = HVD_ERR_PROTOCOL;
      hvd_err_set(&tp->err, "control message fragment of %zu bytes from rank %d, expected %zu",
                  r->bx.received, r->peer, want);
      return 0;
    }
    r->big_off += want;
    if (r->big_off < r->big_len) {
      *rc = tp->ops->irecv(tp, r->peer, r->big + r->big_off,
                           HVD_MIN(r->big_frag, r->big_len - r->big_off), ctrl_tag(STEP_BIG),
                           &r->bx);
      return 0;
    }
    *msg = r->big;
    *len = r->big_len;
    r->state = 0;
    return 1;
  }
  return 0;
}

/* ---- member side: filing entries, worker cache ---------------------------------------- */

static int same_meta(const hvd_request_t *a, const hvd_request_t *b) {
  return a->type == b->type && a->dtype == b->dtype && a->op == b->op && a->root == b->root &&
         a->count == b->count && a->prescale == b->prescale && a->postscale == b->postscale &&
         a->nsplits == b->nsplits &&
         (a->nsplits == 0 || memcmp(a->splits, b->splits, a->nsplits * sizeof *a->splits) == 0);
}

static hvd_status_t out_push(hvd_pset_t *ps, const hvd_request_t *q) {
  hvd_request_list_t *o = &ps->out;
  if (o->n == ps->out_cap) {
    size_t cap = ps->out_cap ? ps->out_cap * 2 : 32;
    hvd_request_t *v = realloc(o->reqs, cap * sizeof *v);
    if (v == NULL) return HVD_ERR_NO_MEMORY;
    o->reqs = v;
    ps->out_cap = cap;
  }
  HVD_CHECK(hvd_request_copy(&o->reqs[o->n], q));
  o->reqs[o->n].rank = ps->me;
  o->n++;
  ps->out_dirty = 1;
  return HVD_OK;
}

static void out_reset(hvd_pset_t *ps) {
  for (uint32_t i = 0; i < ps->out.n; i++) hvd_request_free(&ps->out.reqs[i]);
  ps->out.n = 0;
  ps->out.flags = 0;
  if (ps->out.bits) memset(ps->out.bits, 0, (size_t)ps->out.nwords * 8);
  ps->out_dirty = 0;
}

static const char *negotiate_phase(hvd_msg_type_t t) {
  static const char *const names[HVD_MSG_TYPE_COUNT] = {
      "NEGOTIATE_ALLREDUCE", "NEGOTIATE_ALLGATHER", "NEGOTIATE_BROADCAST",
      "NEGOTIATE_REDUCESCATTER", "NEGOTIATE_ALLTOALL", "NEGOTIATE_BARRIER", "NEGOTIATE_JOIN",
      "NEGOTIATE_PROCESS_SET", "NEGOTIATE_ERROR"};
  return (unsigned)t < HVD_MSG_TYPE_COUNT ? names[t] : "NEGOTIATE";
}

static void file_entry(hvd_ctx_t *ctx, hvd_entry_t *e) {
  hvd_pset_t *ps = hvd_pset_get(ctx, e->pset);
  hvd_status_t rc = HVD_OK;
  if (ps == NULL || ps->me < 0) {
    hvd_entry_complete(ctx, e, HVD_ERR_INVALID_PARAM, "process set does not exist here");
    return;
  }
  if (ps->shut) {
    hvd_entry_complete(ctx, e, HVD_ERR_SHUTDOWN, "hvd is shutting down");
    return;
  }
  if (e->meta.type == HVD_MSG_JOIN) {
    ps->join_entry = e;
    rc = out_push(ps, &e->meta);
  } else if (ctx->tl != NULL && (hvd_tl_begin(ctx->tl, e->meta.name,
                                              negotiate_phase((hvd_msg_type_t)e->meta.type),
                                              e->enqueue_ns), 0)) {
    /* (NEGOTIATE starts when the application submitted the tensor: time queued for
     * the background thread counts as negotiation.) */
  } else if (hvd_strmap_put(&ps->pending, e->meta.name, e) != 0) {
    rc = HVD_ERR_NO_MEMORY;
  } else {
    int k = -1;
    if (ps->ncache > 0 && hvd_msg_cacheable((hvd_msg_type_t)e->meta.type)) {
      void *v = hvd_strmap_get(&ps->cache_by_name, e->meta.name);
      if (v != NULL) k = (int)((struct wslot *)v - ps->cache);
      if (k >= 0 && (ps->cache[k].own.name == NULL || !same_meta(&ps->cache[k].own, &e->meta))) k = -1;
    }
    if (k >= 0) {
      if (ps->out.bits == NULL) {
        ps->out.nwords = (uint32_t)((ps->ncache + 63) / 64);
        ps->out.bits = calloc(ps->out.nwords, 8);
        if (ps->out.bits == NULL) rc = HVD_ERR_NO_MEMORY;
      }
      if (rc == HVD_OK) {
        ps->out.bits[k >> 6] |= 1ull << (k & 63);
        ps->out_dirty = 1;
        atomic_fetch_add(&ctx->st_cache_hits, 1);
      }
    } else {
      rc = out_push(ps, &e->meta);
    }
    if (rc != HVD_OK) hvd_strmap_del(&ps->pending, e->meta.name);
  }
  if (rc != HVD_OK) hvd_entry_complete(ctx, e, rc, "out of memory queuing the request");
}

static void wcache_evict(hvd_pset_t *ps, int k) {
  if (k < 0 || k >= ps->ncache || ps->cache[k].name == NULL) return;
  hvd_strmap_del(&ps->cache_by_name, ps->cache[k].name);
  free(ps->cache[k].name);
  ps->cache[k].name = NULL;
  hvd_request_free(&ps->cache[k].own);
}

static void wcache_put(hvd_pset_t *ps, int k, const char *name) {
  if (k < 0 || k >= ps->ncache) return;
  wcache_evict(ps, k);
  struct wslot *s = &ps->cache[k];
  if ((s->name = strdup(name)) == NULL) return;
  hvd_entry_t *e = hvd_strmap_get(&ps->pending, name);
  if (e != NULL && hvd_request_copy(&s->own, &e->meta) != HVD_OK) memset(&s->own, 0, sizeof s->own);
  if (hvd_strmap_put(&ps->cache_by_name, s->name, s) != 0) {
    free(s->name);
    s->name = NULL;
    hvd_request_free(&s->own);
  }
}

/* Apply one response list on a member. */
static hvd_status_t apply_list(hvd_ctx_t *ctx, hvd_response_list_t *l, hvd_err_t *err) {
  hvd_pset_t *ps = hvd_pset_get(ctx, (int)l->set);
  if (ps == NULL || ps->me < 0) {
    hvd_err_set(err, "response list for process set %u, which this rank is not in", l->set);
    return HVD_ERR_PROTOCOL;
  }
  if (l->seq != ps->applied + 1) {
    hvd_err_set(err, "response list %llu of set %d arrived after %llu", (unsigned long long)l->seq,
                ps->id, (unsigned long long)ps->applied);
    return HVD_ERR_PROTOCOL;
  }
  uint64_t t_list = hvd_now_ns();
  if (hvd_tl_mark_cycles(ctx->tl)) hvd_tl_cycle(ctx->tl, t_list);
  for (uint32_t i = 0; i < l->nevict; i++) wcache_evict(ps, l->evict[i]);
  for (uint32_t i = 0; i < l->n; i++) {
    const hvd_response_t *r = &l->resps[i];
    if (r->type != HVD_MSG_ERROR)
      for (uint32_t t = 0; t < r->ntensors; t++)
        if (r->cache_ids[t] >= 0) wcache_put(ps, r->cache_ids[t], r->names[t]);
    hvd_req_batch_begin();
    hvd_exec_response(ctx, ps, r, t_list);
    hvd_req_batch_end();
  }
  ps->applied = l->seq;
  atomic_fetch_add(&ctx->st_negotiations, 1);
  if (l->flags & HVD_RESP_FLAG_SHUTDOWN) ps->shut = 1;
  return HVD_OK;
}

/* Fail every entry this rank still holds (queued or negotiating). */
static void fail_all(hvd_ctx_t *ctx, hvd_status_t st, const char *msg) {
  for (int id = 0; id < ctx->npsets; id++) {
    hvd_pset_t *ps = ctx->psets[id];
    if (ps == NULL) continue;
    const char *k;
    void *v;
    for (size_t i = 0; (i = hvd_strmap_next(&ps->pending, i, &k, &v)) != 0;) {
      hvd_strmap_del(&ps->pending, k);
      hvd_entry_complete(ctx, v, st, msg);
    }
    if (ps->join_entry) {
      hvd_entry_t *e = ps->join_entry;
      ps->join_entry = NULL;
      hvd_entry_complete(ctx, e, st, msg);
    }
  }
}

static hvd_entry_t *take_queue(hvd_ctx_t *ctx, int *stopping) {
  pthread_mutex_lock(&ctx->mu);
  hvd_entry_t *h = ctx->head;
  ctx->head = ctx->tail = NULL;
  atomic_store(&ctx->queued, 0);
  *stopping = ctx->stopping;
  pthread_mutex_unlock(&ctx->mu);
  return h;
}

/* Is this rank part of work that can progress without a new submission: its own
 * tensors in flight, control sends not completed, shutdown, or (rank 0) requests in
 * the coordinator of a set this rank is not a member of, where no submission of ours
 * will wake us? */
static int coord_for_others(hvd_engine_t *eng) {
  hvd_ctx_t *ctx = eng->ctx;
  for (int id = 0; id < ctx->npsets; id++) {
    hvd_pset_t *ps = ctx->psets[id];
    if (ps != NULL && ps->me < 0 && ps->coord != NULL && hvd_coord_waiting(ps->coord)) return 1;
  }
  return 0;
}

/* The application computes on the core this thread shares: no spare core, nobody in
 * hvd_wait, no hvd_test within HVD_TEST_POLL_NS (see idle_wait). Lists sent then carry
 * HVD_REQ_FLAG_BUSY. */
static int app_busy(hvd_ctx_t *ctx, int stopping, uint64_t now) {
  return !ctx->spare_core && !stopping && atomic_load(&ctx->waiters) == 0 &&
         now - atomic_load_explicit(&ctx->test_ns, memory_order_relaxed) > HVD_TEST_POLL_NS;
}

static int has_work(hvd_engine_t *eng, int stopping) {
  hvd_ctx_t *ctx = eng->ctx;
  if (stopping || eng->sends != NULL) return 1;
  if (atomic_load(&ctx->st_submitted) != atomic_load(&ctx->st_completed)) return 1;
  return coord_for_others(eng);
}

static void idle_wait(hvd_engine_t *eng, int stopping) {
  hvd_ctx_t *ctx = eng->ctx;
  uint64_t now = hvd_now_ns();
  uint64_t idle = now - eng->last_activity_ns;
  /* Spin (then yield) only while something is in flight. With nothing in flight the
   * next event is a submission, which signals ctx->cv: polling then would only take
   * the core from the application thread, which often shares it (a rank bound to a
   * core), and the scheduler may let a spinning thread finish its time slice before
   * the woken application thread runs (p90 of a small allreduce ~1 ms).
   * Without a spare CPU the application thread shares ours even while something is
   * in flight: then poll only while it is blocked waiting (hvd_wait, or hvd_test
   * within the last HVD_TEST_POLL_NS), and otherwise ("polite") sleep, so a rank
   * computing with tensors in flight keeps its core; hvd_wait signals cv, which ends
   * such a sleep at once. */
  int polite = app_busy(ctx, stopping, now) && eng->sends == NULL &&
               !coord_for_others(eng); /* other ranks wait for that, not our application */
  if (!polite && eng->polite) { /* the application started waiting: poll afresh */
    eng->last_activity_ns = now;
    eng->sleep_ns = 0;
    idle = 0;
  }
  eng->polite = polite;
  const int work = has_work(eng, stopping);
  if (!polite && work) {
    if ((double)idle < ctx->cfg.spin_us * 1e3) {
      __builtin_ia32_pause();
      return;
    }
    if ((double)idle < ctx->cfg.spin_us * 1e3 + 2e6) {
      sched_yield();
      return;
    }
  }
  /* (Polite: hvd_wait, a submission on a spare core, or a timeout ends the sleep; short
   * sleeps would only switch to this thread and back on the application's core. The
   * same with nothing in flight on a shared core, where the application may still
   * count as waiting for a moment, just woken by the completion we signalled: a short
   * timeout would preempt it once it computes again.) */
  const int long_sleep = polite || (!ctx->spare_core && !work);
  eng->sleep_ns = long_sleep ? HVD_POLITE_SLEEP_NS : eng->sleep_ns ? HVD_MIN(eng->sleep_ns * 2, 1000000) : 20000;
  pthread_mutex_lock(&ctx->mu);
  if (ctx->head == NULL && ctx->stopping == stopping && !ctx->tl_cmd && ctx->direct_state != 1 &&
      !atomic_load(&ctx->aborted) && !(polite && atomic_load(&ctx->waiters) > 0)) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ns = (uint64_t)ts.tv_nsec + eng->sleep_ns;
    ts.tv_sec += (time_t)(ns / 1000000000u);
    ts.tv_nsec = (long)(ns % 1000000000u);
    pthread_cond_timedwait(&ctx->cv, &ctx->mu, &ts);
  }
  pthread_mutex_unlock(&ctx->mu);
}

/* Member index of global rank r in ps, or -1. */
static int member_index(const hvd_pset_t *ps, int r) {
  int lo = 0, hi = ps->n - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    if (ps->members[mid] == r) return mid;
    if (ps->members[mid] < r) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

/* One pass of the loop; returns 1 if anything happened. */
static int cycle(hvd_engine_t *eng, int stopping, uint64_t stop_deadline, hvd_err_t *err,
                 hvd_status_t *rc) {
  hvd_ctx_t *ctx = eng->ctx;
  hvd_transport_t *tp = ctx->tp;
  int activity = 0;
  *rc = HVD_OK;

  /* 1. New entries. */
  if (atomic_load(&ctx->queued)) {
    int st;
    hvd_entry_t *e = take_queue(ctx, &st);
    for (hvd_entry_t *nx; e; e = nx) {
      nx = e->next;
      file_entry(ctx, e);
    }
    activity = 1;
  }
  if (stopping) {
    for (int id = 0; id < ctx->npsets; id++) {
      hvd_pset_t *ps = ctx->psets[id];
      if (ps && ps->me >= 0 && !ps->shutdown_sent) {
        ps->shutdown_sent = 1;
        ps->out.flags |= HVD_REQ_FLAG_SHUTDOWN;
        ps->out_dirty = 1;
      }
    }
    (void)stop_deadline;
  }

  /* 2. Request lists to the coordinator, flagged busy while the application computes;
   * when it starts waiting, a set told "busy" last hears otherwise at once (an empty
   * list if need be), which ends the coordinator's hold on our account. */
  const int busy = app_busy(ctx, stopping, hvd_now_ns());
  for (int id = 0; id < ctx->npsets; id++) {
    hvd_pset_t *ps = ctx->psets[id];
    if (ps == NULL) continue;
    if (!busy && ps->sent_busy && ps->me >= 0 && !ps->shut) ps->out_dirty = 1;
    if (!ps->out_dirty) continue;
    ps->out.flags = busy ? ps->out.flags | HVD_REQ_FLAG_BUSY : ps->out.flags & ~HVD_REQ_FLAG_BUSY;
    ps->sent_busy = busy;
    ps->out.set = (uint32_t)id;
    ps->out.ack = ps->applied;
    if (ctx->id.rank == 0) {
      hvd_request_list_t copy = ps->out; /* the coordinator consumes a list */
      uint32_t fl = ps->out.flags;
      copy.bits = ps->out.bits ? malloc((size_t)ps->out.nwords * 8) : NULL;
      if (copy.bits) memcpy(copy.bits, ps->out.bits, (size_t)ps->out.nwords * 8);
      else copy.nwords = 0;
      ps->out.reqs = NULL;
      ps->out.n = 0;
      ps->out_cap = 0;
      *rc = hvd_coord_add(ps->coord, ps->me, &copy, hvd_now_ns(), err);
      ps->out.flags = fl;
      out_reset(ps);
      if (*rc != HVD_OK) return activity;
    } else {
      if ((*rc = hvd_request_list_encode(&ps->out, &eng->wb)) != HVD_OK) return activity;
      if ((*rc = send_msg(eng, 0, eng->wb.data, eng->wb.len)) != HVD_OK) {
        hvd_err_set(err, "sending requests to rank 0: %s", tp->err.msg);
        return activity;
      }
      out_reset(ps);
    }
    activity = 1;
  }

  /* 3./4. Control messages. */
  if (tp != NULL) {
    tp->ops->progress(tp);
    for (int i = 0; i < eng->nrx; i++) {
      ctrl_rx_t *r = &eng->rx[i];
      if (r->buf == NULL) continue;
      if (r->state == 0 && (*rc = post_rx(eng, r)) != HVD_OK) return activity;
      const uint8_t *msg;
      size_t len;
      if (!rx_ready(eng, r, &msg, &len, rc)) {
        if (*rc != HVD_OK) {
          hvd_err_set(err, "control message from rank %d: %s", r->peer, tp->err.msg);
          return activity;
        }
        continue;
      }
      activity = 1;
      uint32_t set = 0;
      hvd_pset_t *lps = hvd_msg_peek_set(msg, len, &set) == 0 ? hvd_pset_get(ctx, (int)set) : NULL;
      if (lps == NULL) {
        hvd_err_set(err, "control message from rank %d for unknown process set %u", r->peer, set);
        *rc = HVD_ERR_PROTOCOL;
        return activity;
      }
      if (ctx->id.rank == 0) {
        hvd_request_list_t l;
        if ((*rc = hvd_request_list_decode(msg, len, lps->n, &l, err)) != HVD_OK) {
          hvd_err_prefix(err, "request list from rank %d", r->peer);
          return activity;
        }
        hvd_pset_t *ps = hvd_pset_get(ctx, (int)l.set);
        int m = ps ? member_index(ps, r->peer) : -1;
        if (m < 0) {
          hvd_request_list_free(&l);
          hvd_err_set(err, "rank %d sent requests for process set %u it is not in", r->peer, l.set);
          *rc = HVD_ERR_PROTOCOL;
          return activity;
        }
        if ((*rc = hvd_coord_add(ps->coord, m, &l, hvd_now_ns(), err)) != HVD_OK) return activity;
      } else {
        hvd_response_list_t l;
        if ((*rc = hvd_response_list_decode(msg, len, lps->n, &l, err)) != HVD_OK) {
          hvd_err_prefix(err, "response list from rank 0");
          return activity;
        }
        *rc = apply_list(ctx, &l, err);
        hvd_response_list_free(&l);
        if (*rc != HVD_OK) return activity;
      }
    }
  }

  /* Rank 0: build and distribute. Sets created while applying are picked up too. */
  if (ctx->id.rank == 0) {
    uint64_t now = hvd_now_ns();
    for (int id = 0; id < ctx->npsets; id++) {
      hvd_pset_t *ps = ctx->psets[id];
      if (ps == NULL || ps->coord == NULL) continue;
      hvd_response_list_t l;
      if (!hvd_coord_build(ps->coord, now, &l)) continue;
      l.set = (uint32_t)id;
      activity = 1;
      if (ps->n > 1 || ps->members[0] != 0) {
        if ((*rc = hvd_response_list_encode(&l, &eng->wb)) != HVD_OK) {
          hvd_response_list_free(&l);
          return activity;
        }
        for (int m = 0; m < ps->n; m++) {
          if (ps->members[m] == 0) continue;
          if ((*rc = send_msg(eng, ps->members[m], eng->wb.data, eng->wb.len)) != HVD_OK) {
            hvd_err_set(err, "sending responses to rank %d: %s", ps->members[m], tp->err.msg);
            hvd_response_list_free(&l);
            return activity;
          }
        }
      }
      if (ps->me >= 0) *rc = apply_list(ctx, &l, err);
      hvd_response_list_free(&l);
      if (*rc != HVD_OK) return activity;
    }
  }
  if (eng->sends && (*rc = reap_sends(eng)) != HVD_OK) {
    hvd_err_set(err, "control send failed: %s", tp->err.msg);
    return activity;
  }
  return activity;
}

hvd_status_t hvd_run_on_bg(hvd_ctx_t *ctx, hvd_status_t (*fn)(hvd_comm_t *world, void *arg),
                           void *arg) {
  pthread_mutex_lock(&ctx->mu);
  while (ctx->direct_state != 0) pthread_cond_wait(&ctx->tl_cv, &ctx->mu);
  if (ctx->bg_exited) {
    pthread_mutex_unlock(&ctx->mu);
    return HVD_ERR_SHUTDOWN;
  }
  ctx->direct_fn = fn;
  ctx->direct_arg = arg;
  ctx->direct_state = 1;
  pthread_cond_broadcast(&ctx->cv);
  while (ctx->direct_state != 2 && !ctx->bg_exited) pthread_cond_wait(&ctx->tl_cv, &ctx->mu);
  hvd_status_t rc = ctx->direct_state == 2 ? ctx->direct_rc : HVD_ERR_SHUTDOWN;
  ctx->direct_state = 0;
  pthread_cond_broadcast(&ctx->tl_cv);
  pthread_mutex_unlock(&ctx->mu);
  return rc;
}

_Thread_local hvd_ctx_t *hvd_bg_self;

void *hvd_bg_main(void *arg) {
  hvd_ctx_t *ctx = arg;
  hvd_bg_self = ctx;
  hvd_engine_t *eng = ctx->eng;
  hvd_err_t err = {{0}};
  uint64_t stop_deadline = 0;
  eng->last_activity_ns = hvd_now_ns();
  for (;;) {
    pthread_mutex_lock(&ctx->mu);
    int stopping = ctx->stopping, tl_cmd = ctx->tl_cmd, direct = ctx->direct_state == 1;
    pthread_mutex_unlock(&ctx->mu);
    if (tl_cmd) hvd_timeline_take_switch(ctx);
    if (direct) {
      hvd_status_t drc = ctx->direct_fn(&ctx->psets[0]->comm, ctx->direct_arg);
      pthread_mutex_lock(&ctx->mu);
      ctx->direct_rc = drc;
      ctx->direct_state = 2;
      pthread_cond_broadcast(&ctx->tl_cv);
      pthread_mutex_unlock(&ctx->mu);
      eng->last_activity_ns = hvd_now_ns();
    }
    if (stopping && stop_deadline == 0)
      stop_deadline = hvd_now_ns() + (uint64_t)(ctx->cfg.shutdown_timeout_s * 1e9);

    if (atomic_load(&ctx->aborted)) {
      int st;
      hvd_entry_t *e = take_queue(ctx, &st);
      for (hvd_entry_t *nx; e; e = nx) {
        nx = e->next;
        hvd_entry_complete(ctx, e, HVD_ERR_ABORTED, ctx->abort_msg);
      }
      fail_all(ctx, HVD_ERR_ABORTED, ctx->abort_msg);
      hvd_release_stranded(ctx); /* this thread holds no entry any more */
      if (stopping) break;
      idle_wait(eng, stopping);
      continue;
    }

    hvd_status_t rc;
    int act = cycle(eng, stopping, stop_deadline, &err, &rc);
    if (rc != HVD_OK) {
      if (rc != HVD_ERR_ABORTED && hvd_ctx_await_abort(ctx))
        HVD_INFO("negotiation failed (%s); the job's failure: %s",
                 err.msg[0] ? err.msg : hvd_status_string(rc), ctx->abort_msg);
      hvd_ctx_abort(ctx, "rank %d: negotiation failed: %s", ctx->id.rank,
                    err.msg[0] ? err.msg : hvd_status_string(rc));
      continue;
    }
    hvd_pset_t *world = ctx->psets[0];
    if (world->shut) {
      /* Everyone asked to stop: deliver what we still send, then leave. */
      if (eng->sends && ctx->tp) {
        for (ctrl_send_t *s = eng->sends; s; s = s->next) {
          hvd_xfer_t *x = &s->x;
          ctx->tp->ops->waitall(ctx->tp, &x, 1);
        }
        reap_sends(eng);
      }
      fail_all(ctx, HVD_ERR_SHUTDOWN, "hvd shut down before this operation completed");
      break;
    }
    if (stopping && hvd_now_ns() > stop_deadline) {
      HVD_WARN("shutdown: not every rank shut down within HVD_SHUTDOWN_TIMEOUT_SECONDS=%g; "
               "leaving anyway", ctx->cfg.shutdown_timeout_s);
      fail_all(ctx, HVD_ERR_SHUTDOWN, "hvd shut down before this operation completed");
      break;
    }
    if (act) {
      eng->last_activity_ns = hvd_now_ns();
      eng->sleep_ns = 0;
    } else {
      idle_wait(eng, stopping);
    }
  }
  hvd_release_stranded(ctx);
  pthread_mutex_lock(&ctx->mu);
  ctx->bg_exited = 1;
  int abandoned = ctx->abandoned;
  pthread_cond_broadcast(&ctx->tl_cv);
  pthread_mutex_unlock(&ctx->mu);
  /* hvd_shutdown stopped waiting for this thread (stuck in the transport after an
   * abort) and left the context to it. */
  if (abandoned) hvd_ctx_free(ctx);
  return NULL;
}
