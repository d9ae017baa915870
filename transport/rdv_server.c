/*
 * Rendezvous server: the job's bootstrap key-value store and liveness hub, on libuv.
 *
 * One uv_tcp_t listener; one rdv_conn_t per accepted connection. Bytes are read into
 * a server-owned scratch buffer (libuv calls alloc_cb and read_cb back to back on the
 * loop thread, so one buffer serves every connection) and fed to a small per
 * connection state machine: collect the 12 header bytes, validate the header (magic,
 * version, type allowed in this state, length against the limit) before allocating
 * anything, then collect exactly `length` payload bytes and dispatch. Anything
 * malformed closes that connection alone, with a log line.
 *
 * A connection must authenticate with HELLO (job token compared in constant time)
 * within hello_timeout_ms; until then only a HELLO of bounded size is accepted, so an
 * unauthenticated peer can never make the server buffer much. Authenticated ranks may
 * PUT, GET (parked with a uv_timer_t until the key appears or the timeout fires),
 * enter named BARRIERs (released when all `size` ranks arrived; one timer per barrier
 * armed for the earliest deadline of the ranks inside, on expiry every waiting rank
 * gets ERROR naming the missing ranks) and say BYE.
 *
 * ABORT: the first reason wins; it is sent to every authenticated connection (and to
 * every rank that authenticates later, or asks for anything later), and parked GETs
 * and barriers are dropped since their ranks have just been told.
 *
 * Memory: every outgoing frame is a malloc'd buffer owned by its uv_write request and
 * freed in the write callback. Objects holding uv handles (connections, parked GETs,
 * barriers) are freed from their close callbacks; the server counts its open handles
 * and frees itself when the last one of them has closed after hvd_rdv_server_close.
 *
 * hvd_rdv_server_thread_* wrap the same server in a private loop on a pthread, woken
 * with a uv_async_t for stop and abort requests from other threads.
 */
#include "transport/rdv.h"

#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <uv.h>

#include "common/log.h"
#include "common/util.h"

#define RDV_DEFAULT_HELLO_MS 10000
#define RDV_READ_CHUNK (64 * 1024)
/* A client that lets this much of our output pile up is not reading: drop it. */
#define RDV_MAX_WRITE_QUEUE ((size_t)64 << 20)
/* Connections that have not authenticated yet, beyond which new ones are refused. */
#define RDV_MAX_PENDING_CONNS 4096
#define RDV_PEER_LEN 64
/* Same bound as the transport's rank field. */
#define RDV_MAX_RANKS (1 << 20)

/* ---- intrusive list ---------------------------------------------------------------- */

typedef struct rdv_link {
  struct rdv_link *prev, *next;
} rdv_link_t;

static void link_init(rdv_link_t *h) { h->prev = h->next = h; }

static void link_add_tail(rdv_link_t *h, rdv_link_t *n) {
  n->prev = h->prev;
  n->next = h;
  h->prev->next = n;
  h->prev = n;
}

static void link_del(rdv_link_t *n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->prev = n->next = n;
}

/* ---- objects ------------------------------------------------------------------------ */

typedef struct rdv_conn {
  uv_tcp_t tcp;
  uv_timer_t hello_timer;
  rdv_link_t link; /* in server->conns until both handles have closed */
  hvd_rdv_server_t *s;
  int open_handles;
  int closing;
  int refused; /* HELLO refused: ERROR being flushed, no more input is looked at */
  int rank;    /* -1 until HELLO is accepted */
  int clean; /* BYE received */
  char peer[RDV_PEER_LEN];
  /* Frame being received. */
  uint8_t hdr_bytes[HVD_RDV_HEADER_SIZE];
  size_t hdr_have;
  hvd_rdv_header_t hdr;
  uint8_t *payload;
  size_t payload_have;
} rdv_conn_t;

/* A GET waiting for its key. */
typedef struct rdv_waiter {
  uv_timer_t timer;
  rdv_link_t link; /* in server->waiters while parked */
  hvd_rdv_server_t *s;
  rdv_conn_t *conn;
  size_t keylen;
  uint8_t key[];
} rdv_waiter_t;

typedef struct rdv_barrier {
  uv_timer_t timer;
  rdv_link_t link; /* in server->barriers while open */
  hvd_rdv_server_t *s;
  uint8_t *here; /* per rank: entered */
  int arrived;
  int armed;
  uint64_t armed_for; /* uv_now() ms the timer fires at: earliest deadline inside */
  size_t namelen;
  uint8_t name[];
} rdv_barrier_t;

typedef struct rdv_kv {
  struct rdv_kv *next;
  uint64_t hash;
  uint8_t *val;
  size_t vallen;
  size_t keylen;
  uint8_t key[];
} rdv_kv_t;

typedef struct rdv_write {
  uv_write_t req;
  uint8_t *data;
} rdv_write_t;

struct hvd_rdv_server {
  uv_loop_t *loop;
  uv_tcp_t listener;
  int port;
  char token[HVD_RDV_TOKEN_LEN];
  int size;
  int hello_timeout_ms;
  int abort_on_unclean;
  void (*on_connected)(void *arg, int rank);
  void (*on_disconnected)(void *arg, int rank, int clean);
  void *arg;

  rdv_link_t conns, waiters, barriers;
  int npending;          /* connections not yet past HELLO */
  rdv_conn_t **by_rank;  /* authenticated, open connection of each rank */
  uint8_t *seen;         /* rank completed HELLO at some point */
  int nseen;

  rdv_kv_t **buckets;
  size_t nbuckets, nkeys;

  int aborted;
  char abort_reason[HVD_ERR_MSG_MAX];

  int closing;
  int live_handles; /* uv handles not yet through their close callback */
  void (*done)(void *arg);
  void *done_arg;

  uint8_t readbuf[RDV_READ_CHUNK];
};

static const char *type_name(unsigned t) {
  static const char *const names[] = {"?",     "HELLO",      "HELLO_OK",  "PUT",
                                      "GET",   "VALUE",      "NOT_FOUND", "BARRIER",
                                      "BARRIER_OK", "BYE",   "ABORT",     "ERROR"};
  return t < HVD_ARRAY_SIZE(names) ? names[t] : "?";
}

/* Keys and names are arbitrary bytes: make them safe to print. */
static void printable(const uint8_t *in, size_t n, char *out, size_t outsz) {
  size_t j = 0;
  for (size_t i = 0; i < n && j + 1 < outsz; i++)
    out[j++] = (in[i] >= 0x20 && in[i] < 0x7f) ? (char)in[i] : '?';
  out[j] = '\0';
}

/* "rank 3 (127.0.0.1:4242)" once authenticated, else just the address. */
static const char *conn_who(const rdv_conn_t *c, char *buf, size_t n) {
  if (c->rank >= 0)
    snprintf(buf, n, "rank %d (%s)", c->rank, c->peer);
  else
    snprintf(buf, n, "%s", c->peer);
  return buf;
}

/* ---- lifetime ------------------------------------------------------------------------ */

static void kv_free_all(hvd_rdv_server_t *s);

static void server_handle_closed(hvd_rdv_server_t *s) {
  s->live_handles--;
  if (!s->closing || s->live_handles > 0) return;
  void (*done)(void *) = s->done;
  void *done_arg = s->done_arg;
  kv_free_all(s);
  free(s->by_rank);
  free(s->seen);
  free(s);
  if (done != NULL) done(done_arg);
}

static void listener_closed(uv_handle_t *h) { server_handle_closed(h->data); }

static void waiter_closed(uv_handle_t *h) {
  rdv_waiter_t *w = h->data;
  hvd_rdv_server_t *s = w->s;
  free(w);
  server_handle_closed(s);
}

static void waiter_free(rdv_waiter_t *w) {
  link_del(&w->link);
  uv_close((uv_handle_t *)&w->timer, waiter_closed);
}

static void barrier_closed(uv_handle_t *h) {
  rdv_barrier_t *b = h->data;
  hvd_rdv_server_t *s = b->s;
  free(b->here);
  free(b);
  server_handle_closed(s);
}

static void barrier_free(rdv_barrier_t *b) {
  link_del(&b->link);
  uv_close((uv_handle_t *)&b->timer, barrier_closed);
}

static void conn_handle_closed(uv_handle_t *h) {
  rdv_conn_t *c = h->data;
  hvd_rdv_server_t *s = c->s;
  if (--c->open_handles == 0) {
    link_del(&c->link);
    free(c->payload);
    free(c);
  }
  server_handle_closed(s);
}

/* Start closing c. Idempotent. Tells the owner about an authenticated rank leaving,
 * unless the whole server is closing. */
static void conn_close(rdv_conn_t *c) {
  if (c->closing) return;
  c->closing = 1;
  hvd_rdv_server_t *s = c->s;

  for (rdv_link_t *l = s->waiters.next, *next; l != &s->waiters; l = next) {
    next = l->next;
    rdv_waiter_t *w = hvd_container_of(l, rdv_waiter_t, link);
    if (w->conn == c) waiter_free(w);
  }
  uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
  uv_close((uv_handle_t *)&c->hello_timer, conn_handle_closed);

  if (c->rank < 0) {
    s->npending--;
    return;
  }
  int rank = c->rank;
  s->by_rank[rank] = NULL;
  if (s->closing) return;
  if (s->on_disconnected != NULL) s->on_disconnected(s->arg, rank, c->clean);
  if (!c->clean && s->abort_on_unclean) {
    char reason[96];
    snprintf(reason, sizeof reason, "rank %d disconnected without shutting down", rank);
    hvd_rdv_server_abort(s, reason);
  }
}

static void conn_bad_frame(rdv_conn_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void conn_bad_frame(rdv_conn_t *c, const char *fmt, ...) {
  char why[256], who[RDV_PEER_LEN + 32];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  HVD_WARN("rendezvous: closed connection from %s: bad frame (%s)",
           conn_who(c, who, sizeof who), why);
  conn_close(c);
}

/* ---- output -------------------------------------------------------------------------- */

static void on_write_done(uv_write_t *req, int status) {
  rdv_write_t *w = hvd_container_of(req, rdv_write_t, req);
  if (status < 0 && status != UV_ECANCELED) {
    /* The handle outlives its write callbacks, so data is still valid here. */
    rdv_conn_t *c = req->handle->data;
    char who[RDV_PEER_LEN + 32];
    HVD_INFO("rendezvous: write to %s failed: %s", conn_who(c, who, sizeof who),
             uv_strerror(status));
    conn_close(c);
  }
  free(w->data);
  free(w);
}

/* Finish the frame in b and queue it on c. Takes b's memory in every case. */
static void conn_send(rdv_conn_t *c, hvd_rdv_buf_t *b) {
  char who[RDV_PEER_LEN + 32];
  hvd_status_t st = hvd_rdv_frame_end(b);
  if (c->closing || st != HVD_OK) {
    if (!c->closing) {
      HVD_ERROR("rendezvous: cannot build a reply for %s (%s)", conn_who(c, who, sizeof who),
                st == HVD_ERR_NO_MEMORY ? "out of memory" : "frame too large");
      conn_close(c);
    }
    hvd_rdv_buf_free(b);
    return;
  }
  if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > RDV_MAX_WRITE_QUEUE) {
    HVD_WARN("rendezvous: closed connection from %s: it does not read its replies",
             conn_who(c, who, sizeof who));
    hvd_rdv_buf_free(b);
    conn_close(c);
    return;
  }
  rdv_write_t *w = malloc(sizeof *w);
  if (w == NULL) {
    HVD_ERROR("rendezvous: out of memory replying to %s", conn_who(c, who, sizeof who));
    hvd_rdv_buf_free(b);
    conn_close(c);
    return;
  }
  w->data = b->data;
  uv_buf_t ub = uv_buf_init((char *)b->data, (unsigned)b->len);
  int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &ub, 1, on_write_done);
  if (rc != 0) {
    HVD_INFO("rendezvous: write to %s failed: %s", conn_who(c, who, sizeof who),
             uv_strerror(rc));
    free(w->data);
    free(w);
    conn_close(c);
  }
}

static void send_empty(rdv_conn_t *c, uint16_t type) {
  hvd_rdv_buf_t b;
  hvd_rdv_buf_init(&b);
  hvd_rdv_frame_begin(&b, type);
  conn_send(c, &b);
}

static void send_str(rdv_conn_t *c, uint16_t type, const void *str, size_t len) {
  hvd_rdv_buf_t b;
  hvd_rdv_buf_init(&b);
  hvd_rdv_frame_begin(&b, type);
  hvd_rdv_put_str(&b, str, len);
  conn_send(c, &b);
}

static void send_value(rdv_conn_t *c, const rdv_kv_t *kv) {
  hvd_rdv_buf_t b;
  hvd_rdv_buf_init(&b);
  hvd_rdv_frame_begin(&b, HVD_RDV_VALUE);
  hvd_rdv_put_str(&b, kv->key, kv->keylen);
  hvd_rdv_put_str(&b, kv->val, kv->vallen);
  conn_send(c, &b);
}

static void send_abort(rdv_conn_t *c) {
  hvd_rdv_server_t *s = c->s;
  send_str(c, HVD_RDV_ABORT, s->abort_reason, strlen(s->abort_reason));
}

static void on_shutdown_done(uv_shutdown_t *req, int status) {
  (void)status; /* closing either way */
  rdv_conn_t *c = req->handle->data;
  free(req);
  conn_close(c);
}

/* Refuse a HELLO: log, send ERROR(reason), and close once it is on the wire. The
 * shutdown (FIN after our data) matters: closing at once could reset the connection
 * and lose the ERROR before the client reads it. */
static void conn_reject(rdv_conn_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void conn_reject(rdv_conn_t *c, const char *fmt, ...) {
  char why[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  HVD_WARN("rendezvous: rejected connection from %s: %s", c->peer, why);
  /* Bytes after the refused HELLO (even in the same read) must never be parsed. */
  c->refused = 1;
  send_str(c, HVD_RDV_ERROR, why, strlen(why));
  if (c->closing) return;
  uv_read_stop((uv_stream_t *)&c->tcp);
  uv_shutdown_t *req = malloc(sizeof *req);
  if (req == NULL || uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown_done) != 0) {
    free(req);
    conn_close(c);
  }
  /* Until the shutdown completes, the hello timer still bounds how long this takes. */
}

/* ---- key-value store -------------------------------------------------------------- */

static uint64_t kv_hash(const uint8_t *k, size_t n) {
  uint64_t h = 14695981039346656037ull; /* FNV-1a */
  for (size_t i = 0; i < n; i++) {
    h ^= k[i];
    h *= 1099511628211ull;
  }
  return h;
}

static rdv_kv_t *kv_find(const hvd_rdv_server_t *s, const uint8_t *k, size_t n) {
  uint64_t h = kv_hash(k, n);
  for (rdv_kv_t *e = s->buckets[h & (s->nbuckets - 1)]; e != NULL; e = e->next)
    if (e->hash == h && e->keylen == n && memcmp(e->key, k, n) == 0) return e;
  return NULL;
}

static void kv_grow(hvd_rdv_server_t *s) {
  size_t nb = s->nbuckets * 2;
  rdv_kv_t **b = calloc(nb, sizeof *b);
  if (b == NULL) return; /* keep the longer chains; still correct */
  for (size_t i = 0; i < s->nbuckets; i++) {
    for (rdv_kv_t *e = s->buckets[i], *next; e != NULL; e = next) {
      next = e->next;
      e->next = b[e->hash & (nb - 1)];
      b[e->hash & (nb - 1)] = e;
    }
  }
  free(s->buckets);
  s->buckets = b;
  s->nbuckets = nb;
}

/* Store a copy of (k, v), replacing an older value. */
static rdv_kv_t *kv_put(hvd_rdv_server_t *s, const uint8_t *k, size_t n, const uint8_t *v,
                        size_t vn) {
  uint8_t *copy = malloc(vn > 0 ? vn : 1);
  if (copy == NULL) return NULL;
  if (vn > 0) memcpy(copy, v, vn);
  rdv_kv_t *e = kv_find(s, k, n);
  if (e != NULL) {
    free(e->val);
    e->val = copy;
    e->vallen = vn;
    return e;
  }
  e = malloc(sizeof *e + n);
  if (e == NULL) {
    free(copy);
    return NULL;
  }
  e->hash = kv_hash(k, n);
  e->keylen = n;
  if (n > 0) memcpy(e->key, k, n);
  e->val = copy;
  e->vallen = vn;
  size_t i = e->hash & (s->nbuckets - 1);
  e->next = s->buckets[i];
  s->buckets[i] = e;
  if (++s->nkeys > 2 * s->nbuckets) kv_grow(s);
  return e;
}

static void kv_free_all(hvd_rdv_server_t *s) {
  for (size_t i = 0; s->buckets != NULL && i < s->nbuckets; i++) {
    for (rdv_kv_t *e = s->buckets[i], *next; e != NULL; e = next) {
      next = e->next;
      free(e->val);
      free(e);
    }
  }
  free(s->buckets);
  s->buckets = NULL;
}

/* ---- requests ------------------------------------------------------------------------ */

static void handle_hello(rdv_conn_t *c, const hvd_rdv_msg_t *m) {
  hvd_rdv_server_t *s = c->s;
  uint32_t rank = m->rank, size = m->size;
  if (m->str_len != HVD_RDV_TOKEN_LEN ||
      !hvd_consttime_equal(m->str, s->token, HVD_RDV_TOKEN_LEN)) {
    conn_reject(c, "wrong job token");
    return;
  }
  if (size != (uint32_t)s->size) {
    conn_reject(c, "job size mismatch: the client says %u ranks, the job has %d", size,
                s->size);
    return;
  }
  if (rank >= (uint32_t)s->size) {
    conn_reject(c, "rank %u out of range [0, %d)", rank, s->size);
    return;
  }
  if (s->by_rank[rank] != NULL) {
    conn_reject(c, "rank %u is already connected (from %s)", rank, s->by_rank[rank]->peer);
    return;
  }
  c->rank = (int)rank;
  s->npending--;
  s->by_rank[rank] = c;
  if (!s->seen[rank]) {
    s->seen[rank] = 1;
    s->nseen++;
  }
  uv_timer_stop(&c->hello_timer);
  HVD_DEBUG("rendezvous: rank %u connected from %s", rank, c->peer);
  send_empty(c, HVD_RDV_HELLO_OK);
  if (s->on_connected != NULL && !s->closing) s->on_connected(s->arg, (int)rank);
  /* A rank that arrives after the job failed must learn so too. */
  if (s->aborted && !c->closing) send_abort(c);
}

static void handle_put(rdv_conn_t *c, const hvd_rdv_msg_t *m) {
  hvd_rdv_server_t *s = c->s;
  rdv_kv_t *kv = kv_put(s, m->str, m->str_len, m->value, m->value_len);
  if (kv == NULL) {
    /* PUT has no reply, so the only way to tell the rank is to drop it. */
    HVD_ERROR("rendezvous: out of memory storing a key for rank %d; closing it", c->rank);
    conn_close(c);
    return;
  }
  /* Answer one waiter at a time, looking again from the head: a failed send closes
   * its connection, which can drop any other waiter (or all of them, on abort). */
  for (;;) {
    rdv_waiter_t *w = NULL;
    for (rdv_link_t *l = s->waiters.next; l != &s->waiters; l = l->next) {
      rdv_waiter_t *x = hvd_container_of(l, rdv_waiter_t, link);
      if (x->keylen == kv->keylen && memcmp(x->key, kv->key, kv->keylen) == 0) {
        w = x;
        break;
      }
    }
    if (w == NULL) break;
    rdv_conn_t *wc = w->conn;
    waiter_free(w);
    send_value(wc, kv);
  }
}

static void waiter_timeout(uv_timer_t *t) {
  rdv_waiter_t *w = t->data;
  rdv_conn_t *c = w->conn;
  hvd_rdv_buf_t b;
  hvd_rdv_buf_init(&b);
  hvd_rdv_frame_begin(&b, HVD_RDV_NOT_FOUND);
  hvd_rdv_put_str(&b, w->key, w->keylen);
  waiter_free(w);
  conn_send(c, &b);
}

static void handle_get(rdv_conn_t *c, const hvd_rdv_msg_t *m) {
  hvd_rdv_server_t *s = c->s;
  size_t klen = m->str_len;
  const uint8_t *key = m->str;
  uint32_t timeout_ms = m->timeout_ms;
  rdv_kv_t *kv = kv_find(s, key, klen);
  if (kv != NULL) {
    send_value(c, kv);
    return;
  }
  if (s->aborted) {
    send_abort(c);
    return;
  }
  if (timeout_ms == 0) {
    send_str(c, HVD_RDV_NOT_FOUND, key, klen);
    return;
  }
  rdv_waiter_t *w = malloc(sizeof *w + klen);
  if (w == NULL) {
    HVD_ERROR("rendezvous: out of memory parking a GET for rank %d", c->rank);
    send_str(c, HVD_RDV_NOT_FOUND, key, klen);
    return;
  }
  w->s = s;
  w->conn = c;
  w->keylen = klen;
  if (klen > 0) memcpy(w->key, key, klen);
  uv_timer_init(s->loop, &w->timer);
  w->timer.data = w;
  s->live_handles++;
  link_add_tail(&s->waiters, &w->link);
  uv_timer_start(&w->timer, waiter_timeout, timeout_ms, 0);
}

static void barrier_release(rdv_barrier_t *b) {
  hvd_rdv_server_t *s = b->s;
  /* Unlink first: a send may close a connection, whose callbacks must not find b.
   * b itself stays allocated until its timer's close callback, on a later tick. */
  barrier_free(b);
  for (int r = 0; r < s->size; r++) {
    rdv_conn_t *c = s->by_rank[r];
    if (b->here[r] && c != NULL) send_str(c, HVD_RDV_BARRIER_OK, b->name, b->namelen);
  }
}

static void barrier_timeout(uv_timer_t *t) {
  rdv_barrier_t *b = t->data;
  hvd_rdv_server_t *s = b->s;
  char name[128], missing[256], msg[HVD_ERR_MSG_MAX];
  printable(b->name, b->namelen, name, sizeof name);
  size_t n = 0;
  int nmissing = 0;
  missing[0] = '\0';
  for (int r = 0; r < s->size; r++) {
    if (b->here[r]) continue;
    nmissing++;
    if (n < sizeof missing - 16) {
      int k = snprintf(missing + n, sizeof missing - n, "%s%d", n ? "," : "", r);
      n += (size_t)k;
    } else if (n < sizeof missing - 4) {
      snprintf(missing + n, sizeof missing - n, ",...");
      n += 4;
    }
  }
  snprintf(msg, sizeof msg, "barrier %s timed out: %d of %d ranks never arrived: %s", name,
           nmissing, s->size, missing);
  HVD_WARN("rendezvous: %s", msg);
  barrier_free(b);
  for (int r = 0; r < s->size; r++) {
    rdv_conn_t *c = s->by_rank[r];
    if (b->here[r] && c != NULL) send_str(c, HVD_RDV_ERROR, msg, strlen(msg));
  }
}

static void handle_barrier(rdv_conn_t *c, const hvd_rdv_msg_t *m) {
  hvd_rdv_server_t *s = c->s;
  size_t nlen = m->str_len;
  const uint8_t *name = m->str;
  uint32_t timeout_ms = m->timeout_ms;
  if (s->aborted) {
    send_abort(c);
    return;
  }
  rdv_barrier_t *b = NULL;
  for (rdv_link_t *l = s->barriers.next; l != &s->barriers; l = l->next) {
    rdv_barrier_t *x = hvd_container_of(l, rdv_barrier_t, link);
    if (x->namelen == nlen && memcmp(x->name, name, nlen) == 0) {
      b = x;
      break;
    }
  }
  if (b == NULL) {
    b = calloc(1, sizeof *b + nlen);
    uint8_t *here = b != NULL ? calloc((size_t)s->size, 1) : NULL;
    if (here == NULL) {
      free(b);
      HVD_ERROR("rendezvous: out of memory for a barrier of rank %d", c->rank);
      const char *why = "rendezvous server out of memory";
      send_str(c, HVD_RDV_ERROR, why, strlen(why));
      return;
    }
    b->s = s;
    b->here = here;
    b->namelen = nlen;
    if (nlen > 0) memcpy(b->name, name, nlen);
    uv_timer_init(s->loop, &b->timer);
    b->timer.data = b;
    s->live_handles++;
    link_add_tail(&s->barriers, &b->link);
  }
  if (!b->here[c->rank]) {
    b->here[c->rank] = 1;
    b->arrived++;
  }
  uint64_t deadline = uv_now(s->loop) + timeout_ms;
  if (b->arrived == s->size) {
    barrier_release(b);
    return;
  }
  /* The barrier fails for everyone at the earliest deadline of those inside, so that
   * every rank hears back before its own client-side wait ends. */
  if (!b->armed || deadline < b->armed_for) {
    b->armed = 1;
    b->armed_for = deadline;
    uv_timer_start(&b->timer, barrier_timeout, timeout_ms, 0);
  }
}

static void conn_dispatch(rdv_conn_t *c, const uint8_t *payload, size_t len) {
  hvd_rdv_msg_t m;
  hvd_err_t e;
  if (hvd_rdv_msg_decode(c->hdr.type, payload, len, &m, &e) != HVD_OK) {
    conn_bad_frame(c, "%s", e.msg);
    return;
  }
  switch (c->hdr.type) {
  case HVD_RDV_HELLO:
    handle_hello(c, &m);
    break;
  case HVD_RDV_PUT:
    handle_put(c, &m);
    break;
  case HVD_RDV_GET:
    handle_get(c, &m);
    break;
  case HVD_RDV_BARRIER:
    handle_barrier(c, &m);
    break;
  case HVD_RDV_BYE:
    c->clean = 1;
    HVD_DEBUG("rendezvous: rank %d said BYE", c->rank);
    break;
  default: /* conn_check_header let nothing else through */
    conn_bad_frame(c, "unexpected %s frame", type_name(c->hdr.type));
    break;
  }
}

/* Validate a complete header before anything of its payload is buffered. */
static int conn_check_header(rdv_conn_t *c) {
  hvd_err_t e;
  if (hvd_rdv_decode_header(c->hdr_bytes, &c->hdr, &e) != HVD_OK) {
    conn_bad_frame(c, "%s", e.msg);
    return 0;
  }
  unsigned t = c->hdr.type;
  if (c->rank < 0) {
    if (t != HVD_RDV_HELLO) {
      conn_bad_frame(c, "expected HELLO, got %s", type_name(t));
      return 0;
    }
    if (c->hdr.length > HVD_RDV_MAX_HELLO) {
      conn_bad_frame(c, "HELLO of %u bytes is too long", (unsigned)c->hdr.length);
      return 0;
    }
  } else if (t != HVD_RDV_PUT && t != HVD_RDV_GET && t != HVD_RDV_BARRIER && t != HVD_RDV_BYE) {
    conn_bad_frame(c, "unexpected %s frame from a client", type_name(t));
    return 0;
  }
  return 1;
}

static void conn_frame_reset(rdv_conn_t *c) {
  free(c->payload);
  c->payload = NULL;
  c->payload_have = 0;
  c->hdr_have = 0;
}

static void conn_feed(rdv_conn_t *c, const uint8_t *p, size_t n) {
  while (n > 0 && !c->closing && !c->refused) {
    if (c->hdr_have < HVD_RDV_HEADER_SIZE) {
      size_t k = HVD_MIN(HVD_RDV_HEADER_SIZE - c->hdr_have, n);
      memcpy(c->hdr_bytes + c->hdr_have, p, k);
      c->hdr_have += k;
      p += k;
      n -= k;
      if (c->hdr_have < HVD_RDV_HEADER_SIZE) return;
      if (!conn_check_header(c)) return;
      if (c->hdr.length == 0) {
        conn_dispatch(c, NULL, 0);
        conn_frame_reset(c);
        continue;
      }
      c->payload = malloc(c->hdr.length);
      if (c->payload == NULL) {
        HVD_ERROR("rendezvous: out of memory for a %u byte frame; closing %s",
                  (unsigned)c->hdr.length, c->peer);
        conn_close(c);
        return;
      }
      continue;
    }
    size_t k = HVD_MIN(c->hdr.length - c->payload_have, n);
    memcpy(c->payload + c->payload_have, p, k);
    c->payload_have += k;
    p += k;
    n -= k;
    if (c->payload_have == c->hdr.length) {
      conn_dispatch(c, c->payload, c->hdr.length);
      conn_frame_reset(c);
    }
  }
}

/* ---- libuv callbacks --------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested; /* every read goes to the one scratch buffer */
  rdv_conn_t *c = h->data;
  *buf = uv_buf_init((char *)c->s->readbuf, sizeof c->s->readbuf);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  rdv_conn_t *c = stream->data;
  if (nread == 0 || c->closing || c->refused) return;
  if (nread < 0) {
    char who[RDV_PEER_LEN + 32];
    conn_who(c, who, sizeof who);
    if (c->rank < 0)
      HVD_DEBUG("rendezvous: connection from %s ended before HELLO", who);
    else if (!c->clean)
      HVD_INFO("rendezvous: %s disconnected without BYE (%s)", who,
               nread == UV_EOF ? "end of stream" : uv_strerror((int)nread));
    conn_close(c);
    return;
  }
  conn_feed(c, (const uint8_t *)buf->base, (size_t)nread);
}

static void on_hello_timeout(uv_timer_t *t) {
  rdv_conn_t *c = t->data;
  HVD_WARN("rendezvous: closed connection from %s: no valid HELLO within %d ms", c->peer,
           c->s->hello_timeout_ms);
  conn_close(c);
}

static void peer_name(uv_tcp_t *tcp, char *out, size_t n) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  char ip[INET6_ADDRSTRLEN];
  snprintf(out, n, "unknown peer");
  if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &len) != 0) return;
  if (ss.ss_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
    if (uv_ip4_name(a, ip, sizeof ip) == 0) snprintf(out, n, "%s:%u", ip, ntohs(a->sin_port));
  } else if (ss.ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
    if (uv_ip6_name(a, ip, sizeof ip) == 0)
      snprintf(out, n, "[%s]:%u", ip, ntohs(a->sin6_port));
  }
}

static void on_connection(uv_stream_t *listener, int status) {
  hvd_rdv_server_t *s = listener->data;
  if (status < 0) {
    HVD_WARN("rendezvous: accepting a connection failed: %s", uv_strerror(status));
    return;
  }
  if (s->closing) return;
  rdv_conn_t *c = calloc(1, sizeof *c);
  if (c == NULL) {
    HVD_ERROR("rendezvous: out of memory accepting a connection");
    return;
  }
  c->s = s;
  c->rank = -1;
  uv_tcp_init(s->loop, &c->tcp);
  uv_timer_init(s->loop, &c->hello_timer);
  c->tcp.data = c;
  c->hello_timer.data = c;
  c->open_handles = 2;
  s->live_handles += 2;
  s->npending++;
  link_add_tail(&s->conns, &c->link);
  snprintf(c->peer, sizeof c->peer, "unknown peer");

  int rc = uv_accept(listener, (uv_stream_t *)&c->tcp);
  if (rc != 0) {
    HVD_WARN("rendezvous: accepting a connection failed: %s", uv_strerror(rc));
    conn_close(c);
    return;
  }
  peer_name(&c->tcp, c->peer, sizeof c->peer);
  if (s->npending > RDV_MAX_PENDING_CONNS) {
    HVD_WARN("rendezvous: closed connection from %s: too many connections without HELLO",
             c->peer);
    conn_close(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_timer_start(&c->hello_timer, on_hello_timeout, (uint64_t)s->hello_timeout_ms, 0);
  rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  if (rc != 0) {
    HVD_WARN("rendezvous: cannot read from %s: %s", c->peer, uv_strerror(rc));
    conn_close(c);
  }
}

/* ---- public: server on a caller's loop ---------------------------------------------- */

hvd_status_t hvd_rdv_server_start(struct uv_loop_s *loop, const hvd_rdv_server_opts_t *opts,
                                  hvd_rdv_server_t **out, hvd_err_t *err) {
  hvd_status_t st;
  int rc;
  if (out != NULL) *out = NULL;
  if (loop == NULL || opts == NULL || out == NULL) {
    hvd_err_set(err, "rendezvous: NULL argument to hvd_rdv_server_start");
    return HVD_ERR_INVALID_PARAM;
  }
  if (opts->token == NULL || strnlen(opts->token, HVD_RDV_TOKEN_LEN + 1) != HVD_RDV_TOKEN_LEN) {
    hvd_err_set(err, "rendezvous: the job token must be %d characters", HVD_RDV_TOKEN_LEN);
    return HVD_ERR_INVALID_PARAM;
  }
  if (opts->size < 1 || opts->size > RDV_MAX_RANKS) {
    hvd_err_set(err, "rendezvous: bad job size %d", opts->size);
    return HVD_ERR_INVALID_PARAM;
  }
  if (opts->port < 0 || opts->port > 65535 || opts->hello_timeout_ms < 0) {
    hvd_err_set(err, "rendezvous: bad port %d or hello timeout %d", opts->port,
                opts->hello_timeout_ms);
    return HVD_ERR_INVALID_PARAM;
  }
  const char *host = opts->bind_addr != NULL ? opts->bind_addr : "127.0.0.1";
  struct sockaddr_storage addr;
  if (uv_ip4_addr(host, opts->port, (struct sockaddr_in *)&addr) != 0 &&
      uv_ip6_addr(host, opts->port, (struct sockaddr_in6 *)&addr) != 0) {
    hvd_err_set(err, "rendezvous: bind address '%s' is not an IPv4 or IPv6 literal", host);
    return HVD_ERR_INVALID_PARAM;
  }

  hvd_rdv_server_t *s = calloc(1, sizeof *s);
  if (s == NULL) goto fail_oom;
  s->by_rank = calloc((size_t)opts->size, sizeof *s->by_rank);
  if (s->by_rank == NULL) goto fail_free;
  s->seen = calloc((size_t)opts->size, 1);
  if (s->seen == NULL) goto fail_free;
  s->nbuckets = 64;
  s->buckets = calloc(s->nbuckets, sizeof *s->buckets);
  if (s->buckets == NULL) goto fail_free;

  s->loop = loop;
  memcpy(s->token, opts->token, HVD_RDV_TOKEN_LEN);
  s->size = opts->size;
  s->hello_timeout_ms = opts->hello_timeout_ms > 0 ? opts->hello_timeout_ms : RDV_DEFAULT_HELLO_MS;
  s->abort_on_unclean = opts->abort_on_unclean_disconnect;
  s->on_connected = opts->on_connected;
  s->on_disconnected = opts->on_disconnected;
  s->arg = opts->arg;
  link_init(&s->conns);
  link_init(&s->waiters);
  link_init(&s->barriers);

  rc = uv_tcp_init(loop, &s->listener);
  if (rc != 0) {
    hvd_err_set(err, "rendezvous: uv_tcp_init: %s", uv_strerror(rc));
    st = HVD_ERR_BOOTSTRAP;
    goto fail_free_st;
  }
  s->listener.data = s;
  s->live_handles = 1;
  /* libuv reports most bind errors (EADDRINUSE) from uv_listen. */
  rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&s->listener, SOMAXCONN, on_connection);
  if (rc != 0) {
    hvd_err_set(err, "rendezvous: cannot listen on %s port %d: %s", host, opts->port,
                uv_strerror(rc));
    goto fail_close;
  }
  struct sockaddr_storage bound;
  int blen = sizeof bound;
  rc = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &blen);
  if (rc != 0) {
    hvd_err_set(err, "rendezvous: getsockname: %s", uv_strerror(rc));
    goto fail_close;
  }
  s->port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                        : ntohs(((struct sockaddr_in *)&bound)->sin_port);
  HVD_DEBUG("rendezvous: listening on %s port %d for %d ranks", host, s->port, s->size);
  *out = s;
  return HVD_OK;

fail_close:
  /* The handle is known to the loop now: it is freed from its close callback. */
  s->closing = 1;
  uv_close((uv_handle_t *)&s->listener, listener_closed);
  return HVD_ERR_BOOTSTRAP;
fail_free:
  hvd_err_set(err, "rendezvous: out of memory");
  st = HVD_ERR_NO_MEMORY;
fail_free_st:
  free(s->buckets);
  free(s->seen);
  free(s->by_rank);
  free(s);
  return st;
fail_oom:
  hvd_err_set(err, "rendezvous: out of memory");
  return HVD_ERR_NO_MEMORY;
}

int hvd_rdv_server_port(const hvd_rdv_server_t *s) { return s != NULL ? s->port : -1; }

int hvd_rdv_server_connected(const hvd_rdv_server_t *s) { return s != NULL ? s->nseen : 0; }

int hvd_rdv_server_rank_seen(const hvd_rdv_server_t *s, int rank) {
  return s != NULL && rank >= 0 && rank < s->size && s->seen[rank];
}

void hvd_rdv_server_abort(hvd_rdv_server_t *s, const char *reason) {
  if (s == NULL || s->closing || s->aborted) return;
  /* Record first: sending may close connections, whose callbacks may abort again. */
  s->aborted = 1;
  snprintf(s->abort_reason, sizeof s->abort_reason, "%s",
           reason != NULL && *reason ? reason : "the job was aborted");
  HVD_INFO("rendezvous: aborting the job: %s", s->abort_reason);
  /* The ranks of parked requests are about to be told; nothing else will answer. */
  while (s->waiters.next != &s->waiters)
    waiter_free(hvd_container_of(s->waiters.next, rdv_waiter_t, link));
  while (s->barriers.next != &s->barriers)
    barrier_free(hvd_container_of(s->barriers.next, rdv_barrier_t, link));
  for (rdv_link_t *l = s->conns.next; l != &s->conns; l = l->next) {
    rdv_conn_t *c = hvd_container_of(l, rdv_conn_t, link);
    if (!c->closing && c->rank >= 0) send_abort(c);
  }
}

void hvd_rdv_server_close(hvd_rdv_server_t *s, void (*done)(void *arg), void *arg) {
  if (s == NULL) {
    if (done != NULL) done(arg);
    return;
  }
  if (s->closing) return;
  s->closing = 1;
  s->done = done;
  s->done_arg = arg;
  uv_close((uv_handle_t *)&s->listener, listener_closed);
  for (rdv_link_t *l = s->conns.next; l != &s->conns; l = l->next)
    conn_close(hvd_container_of(l, rdv_conn_t, link));
  while (s->waiters.next != &s->waiters)
    waiter_free(hvd_container_of(s->waiters.next, rdv_waiter_t, link));
  while (s->barriers.next != &s->barriers)
    barrier_free(hvd_container_of(s->barriers.next, rdv_barrier_t, link));
}

/* ---- public: server on its own thread ---------------------------------------------- */

struct hvd_rdv_server_thread {
  uv_loop_t loop;
  uv_async_t wake;
  pthread_t thread;
  hvd_rdv_server_t *srv;
  pthread_mutex_t mu; /* guards the requests below */
  int stop;
  int abort_pending;
  char abort_reason[HVD_ERR_MSG_MAX];
};

static void thread_wake(uv_async_t *a) {
  hvd_rdv_server_thread_t *t = a->data;
  char reason[HVD_ERR_MSG_MAX];
  pthread_mutex_lock(&t->mu);
  int stop = t->stop, do_abort = t->abort_pending;
  t->abort_pending = 0;
  memcpy(reason, t->abort_reason, sizeof reason);
  pthread_mutex_unlock(&t->mu);
  if (do_abort) hvd_rdv_server_abort(t->srv, reason);
  if (stop) {
    hvd_rdv_server_close(t->srv, NULL, NULL);
    t->srv = NULL;
    uv_close((uv_handle_t *)&t->wake, NULL);
  }
}

static void *thread_main(void *arg) {
  hvd_rdv_server_thread_t *t = arg;
  uv_run(&t->loop, UV_RUN_DEFAULT);
  return NULL;
}

hvd_status_t hvd_rdv_server_thread_start(const hvd_rdv_server_opts_t *opts,
                                         hvd_rdv_server_thread_t **out, int *port,
                                         hvd_err_t *err) {
  hvd_status_t st;
  int rc;
  if (out != NULL) *out = NULL;
  if (opts == NULL || out == NULL) {
    hvd_err_set(err, "rendezvous: NULL argument to hvd_rdv_server_thread_start");
    return HVD_ERR_INVALID_PARAM;
  }
  hvd_rdv_server_thread_t *t = calloc(1, sizeof *t);
  if (t == NULL) {
    hvd_err_set(err, "rendezvous: out of memory");
    return HVD_ERR_NO_MEMORY;
  }
  rc = uv_loop_init(&t->loop);
  if (rc != 0) {
    hvd_err_set(err, "rendezvous: uv_loop_init: %s", uv_strerror(rc));
    st = HVD_ERR_BOOTSTRAP;
    goto fail_free;
  }
  pthread_mutex_init(&t->mu, NULL);
  hvd_rdv_server_opts_t o = *opts;
  o.abort_on_unclean_disconnect = 1;
  st = hvd_rdv_server_start(&t->loop, &o, &t->srv, err);
  if (st != HVD_OK) goto fail_loop;
  rc = uv_async_init(&t->loop, &t->wake, thread_wake);
  if (rc != 0) {
    hvd_err_set(err, "rendezvous: uv_async_init: %s", uv_strerror(rc));
    st = HVD_ERR_BOOTSTRAP;
    goto fail_server;
  }
  t->wake.data = t;
  int bound_port = hvd_rdv_server_port(t->srv);

  /* Signals belong to the application's threads, not to ours. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  rc = pthread_create(&t->thread, NULL, thread_main, t);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    hvd_err_set(err, "rendezvous: cannot start the server thread: %s", strerror(rc));
    st = HVD_ERR_BOOTSTRAP;
    uv_close((uv_handle_t *)&t->wake, NULL);
    goto fail_server;
  }
  if (port != NULL) *port = bound_port;
  *out = t;
  return HVD_OK;

fail_server:
  hvd_rdv_server_close(t->srv, NULL, NULL);
fail_loop:
  uv_run(&t->loop, UV_RUN_DEFAULT); /* runs the close callbacks, which free */
  uv_loop_close(&t->loop);
  pthread_mutex_destroy(&t->mu);
fail_free:
  free(t);
  return st;
}

void hvd_rdv_server_thread_abort(hvd_rdv_server_thread_t *t, const char *reason) {
  if (t == NULL) return;
  pthread_mutex_lock(&t->mu);
  /* After stop the async handle may be closed: it must not be signalled then. */
  if (!t->stop && !t->abort_pending) {
    t->abort_pending = 1;
    snprintf(t->abort_reason, sizeof t->abort_reason, "%s",
             reason != NULL && *reason ? reason : "the job was aborted");
    uv_async_send(&t->wake);
  }
  pthread_mutex_unlock(&t->mu);
}

void hvd_rdv_server_thread_stop(hvd_rdv_server_thread_t *t) {
  if (t == NULL) return;
  pthread_mutex_lock(&t->mu);
  t->stop = 1;
  uv_async_send(&t->wake);
  pthread_mutex_unlock(&t->mu);
  pthread_join(t->thread, NULL);
  int rc = uv_loop_close(&t->loop);
  if (rc != 0) HVD_ERROR("rendezvous: server loop still busy at stop: %s", uv_strerror(rc));
  pthread_mutex_destroy(&t->mu);
  free(t);
}
