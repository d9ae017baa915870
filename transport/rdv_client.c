/*
 * Rendezvous client: what a rank uses to reach the job's rendezvous server.
 *
 * Plain sockets, no event loop: the rank's runtime calls these from its own threads.
 * The socket is non-blocking and every wait goes through poll() with a deadline, so
 * no call can hang: connect retries (with backoff) until its timeout because the
 * server may start after the rank; a request waits for its reply a little longer
 * than the timeout it gave the server (which answers at that timeout itself), and
 * writing, or finishing a frame that has started to arrive, has its own bound.
 *
 * Frames are read exactly (header, then `length` bytes), never ahead, so whatever the
 * server sends next stays in the kernel's buffer and a liveness thread polling
 * hvd_rdv_fd() sees it. Replies are matched to requests by key/name; a reply that
 * matches nothing is a late answer to a request that already timed out here and is
 * dropped. An ABORT may arrive at any point: whatever call reads it fails with
 * HVD_ERR_ABORTED and the reason, and so does every later call (sticky failure), as
 * after a lost connection or a malformed frame (after which the stream cannot be
 * trusted). A mutex serialises calls, so one thread may wait in hvd_rdv_read_event
 * while another uses the client.
 */
#include "transport/rdv.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

/* How much longer than the server's own timeout we wait for its answer. */
#define RDV_REPLY_GRACE_MS 5000
/* Bound for a write, and for the rest of a frame once its first bytes arrived. */
#define RDV_IO_TIMEOUT_MS 30000
#define RDV_BACKOFF_MAX_MS 500
/* The connection is idle for most of a job. A dead link or host would never show on
 * an idle TCP connection, so the kernel probes it: after 10 s of silence, every 5 s;
 * unanswered for 30 s (TCP_USER_TIMEOUT, which also bounds data left unacknowledged)
 * the socket fails and the liveness thread aborts the rank ("lost connection to the
 * rendezvous server ... (Connection timed out)"), e.g. a rank cut off from hvdrun by
 * a network fault, which could not be told to stop. */
#define RDV_KEEPALIVE_IDLE_S 10
#define RDV_KEEPALIVE_INTERVAL_S 5
#define RDV_KEEPALIVE_COUNT 6
#define RDV_USER_TIMEOUT_MS 30000

struct hvd_rdv_client {
  int fd;
  int rank;
  pthread_mutex_t mu;
  hvd_status_t failed; /* sticky: HVD_ERR_ABORTED, _BOOTSTRAP or _PROTOCOL; 0 = fine */
  char failed_msg[HVD_ERR_MSG_MAX];
  char server[280]; /* "host:port", for messages */
};

typedef struct rdv_frame {
  hvd_rdv_header_t h;
  uint8_t *payload;
  hvd_rdv_msg_t m; /* the payload decoded (points into it) */
} rdv_frame_t;

static uint64_t now_ms(void) { return hvd_now_ns() / 1000000u; }

static int ms_left(uint64_t deadline) {
  uint64_t n = now_ms();
  return n >= deadline ? 0 : (int)HVD_MIN(deadline - n, (uint64_t)INT_MAX);
}

static void sleep_ms(int ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* 1 when fd is ready (or has an error to report), 0 at the deadline, -1 on error. */
static int wait_fd(int fd, short events, uint64_t deadline) {
  for (;;) {
    struct pollfd p = {.fd = fd, .events = events};
    int rc = poll(&p, 1, ms_left(deadline));
    if (rc > 0) return 1;
    if (rc == 0) return 0;
    if (errno != EINTR) return -1;
  }
}

/* Record a failure that makes the connection unusable; every later call repeats it. */
static hvd_status_t client_fail(hvd_rdv_client_t *c, hvd_status_t st, hvd_err_t *err,
                                const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static hvd_status_t client_fail(hvd_rdv_client_t *c, hvd_status_t st, hvd_err_t *err,
                                const char *fmt, ...) {
  if (c->failed == HVD_OK) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->failed_msg, sizeof c->failed_msg, fmt, ap);
    va_end(ap);
    c->failed = st;
  }
  hvd_err_set(err, "%s", c->failed_msg);
  return c->failed;
}

static hvd_status_t client_failed(hvd_rdv_client_t *c, hvd_err_t *err) {
  if (c->failed != HVD_OK) hvd_err_set(err, "%s", c->failed_msg);
  return c->failed;
}

static hvd_status_t send_all(hvd_rdv_client_t *c, const uint8_t *p, size_t n, hvd_err_t *err) {
  uint64_t deadline = now_ms() + RDV_IO_TIMEOUT_MS;
  while (n > 0) {
    ssize_t k = send(c->fd, p, n, MSG_NOSIGNAL);
    if (k > 0) {
      p += k;
      n -= (size_t)k;
      continue;
    }
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      int w = wait_fd(c->fd, POLLOUT, deadline);
      if (w > 0) continue;
      if (w == 0)
        return client_fail(c, HVD_ERR_BOOTSTRAP, err,
                           "the rendezvous server at %s stopped reading (no progress in %d ms)",
                           c->server, RDV_IO_TIMEOUT_MS);
    }
    return client_fail(c, HVD_ERR_BOOTSTRAP, err,
                       "lost connection to the rendezvous server at %s (%s)", c->server,
                       strerror(errno));
  }
  return HVD_OK;
}

/* Send the frame in b (built by the caller) and free it. */
static hvd_status_t send_frame(hvd_rdv_client_t *c, hvd_rdv_buf_t *b, hvd_err_t *err) {
  hvd_status_t st = hvd_rdv_frame_end(b);
  if (st != HVD_OK) {
    hvd_err_set(err, "rendezvous: %s", st == HVD_ERR_NO_MEMORY ? "out of memory"
                                                               : "request too large");
  } else {
    st = send_all(c, b->data, b->len, err);
  }
  hvd_rdv_buf_free(b);
  return st;
}

static hvd_status_t read_full(hvd_rdv_client_t *c, uint8_t *buf, size_t n, uint64_t deadline,
                              hvd_err_t *err) {
  while (n > 0) {
    ssize_t k = recv(c->fd, buf, n, 0);
    if (k > 0) {
      buf += k;
      n -= (size_t)k;
      continue;
    }
    if (k == 0)
      return client_fail(c, HVD_ERR_BOOTSTRAP, err,
                         "lost connection to the rendezvous server at %s", c->server);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      int w = wait_fd(c->fd, POLLIN, deadline);
      if (w > 0) continue;
      if (w == 0)
        return client_fail(c, HVD_ERR_BOOTSTRAP, err,
                           "the rendezvous server at %s stalled in the middle of a message",
                           c->server);
    }
    return client_fail(c, HVD_ERR_BOOTSTRAP, err,
                       "lost connection to the rendezvous server at %s (%s)", c->server,
                       strerror(errno));
  }
  return HVD_OK;
}

static void frame_free(rdv_frame_t *f) {
  free(f->payload);
  f->payload = NULL;
}

/* Wait until deadline for the next frame to start (HVD_ERR_TIMEOUT, with the stream
 * still in step, if none did), then read all of it and decode its payload. */
static hvd_status_t recv_frame(hvd_rdv_client_t *c, uint64_t deadline, rdv_frame_t *f,
                               hvd_err_t *err) {
  uint8_t hb[HVD_RDV_HEADER_SIZE];
  hvd_err_t e;
  f->payload = NULL;
  int w = wait_fd(c->fd, POLLIN, deadline);
  if (w == 0) return HVD_ERR_TIMEOUT;
  if (w < 0)
    return client_fail(c, HVD_ERR_BOOTSTRAP, err, "rendezvous: poll failed: %s",
                       strerror(errno));
  uint64_t frame_deadline = now_ms() + RDV_IO_TIMEOUT_MS;
  hvd_status_t st = read_full(c, hb, sizeof hb, frame_deadline, err);
  if (st != HVD_OK) return st;
  if (hvd_rdv_decode_header(hb, &f->h, &e) != HVD_OK)
    return client_fail(c, HVD_ERR_PROTOCOL, err,
                       "bad frame from the rendezvous server at %s: %s", c->server, e.msg);
  switch (f->h.type) {
  case HVD_RDV_HELLO_OK:
  case HVD_RDV_VALUE:
  case HVD_RDV_NOT_FOUND:
  case HVD_RDV_BARRIER_OK:
  case HVD_RDV_ABORT:
  case HVD_RDV_ERROR:
    break;
  default:
    return client_fail(c, HVD_ERR_PROTOCOL, err,
                       "bad frame from the rendezvous server at %s: type %u is not a reply",
                       c->server, (unsigned)f->h.type);
  }
  f->payload = malloc(f->h.length > 0 ? f->h.length : 1);
  if (f->payload == NULL)
    return client_fail(c, HVD_ERR_NO_MEMORY, err, "rendezvous: out of memory for a %u byte reply",
                       (unsigned)f->h.length);
  st = read_full(c, f->payload, f->h.length, frame_deadline, err);
  if (st != HVD_OK) {
    frame_free(f);
    return st;
  }
  if (hvd_rdv_msg_decode(f->h.type, f->payload, f->h.length, &f->m, &e) != HVD_OK) {
    frame_free(f);
    return client_fail(c, HVD_ERR_PROTOCOL, err,
                       "bad frame from the rendezvous server at %s: %s", c->server, e.msg);
  }
  return HVD_OK;
}

/* The reason an ABORT or ERROR carries (not NUL-terminated on the wire). */
static int frame_reason_len(const rdv_frame_t *f) {
  return (int)HVD_MIN(f->m.str_len, (size_t)HVD_ERR_MSG_MAX);
}

static hvd_status_t take_abort(hvd_rdv_client_t *c, const rdv_frame_t *f, hvd_err_t *err) {
  return client_fail(c, HVD_ERR_ABORTED, err, "%.*s", frame_reason_len(f),
                     (const char *)f->m.str);
}

/* The key or name of a reply equals key (VALUE, NOT_FOUND, BARRIER_OK). */
static int frame_key_is(const rdv_frame_t *f, const char *key, size_t klen) {
  return f->m.str_len == klen && (klen == 0 || memcmp(f->m.str, key, klen) == 0);
}

enum { WANT_HELLO, WANT_GET, WANT_BARRIER };

/* Read frames until the reply to the current request: HELLO_OK/ERROR for HELLO,
 * VALUE/NOT_FOUND for a GET of key, BARRIER_OK/ERROR for a barrier named key.
 * ABORT ends the wait with HVD_ERR_ABORTED; anything else is a late reply to an
 * earlier request that timed out here, and is dropped. */
static hvd_status_t await_reply(hvd_rdv_client_t *c, int want, const char *key, size_t klen,
                                uint64_t deadline, rdv_frame_t *f, hvd_err_t *err) {
  for (;;) {
    hvd_status_t st = recv_frame(c, deadline, f, err);
    if (st != HVD_OK) return st;
    unsigned t = f->h.type;
    if (t == HVD_RDV_ABORT) {
      st = take_abort(c, f, err);
      frame_free(f);
      return st;
    }
    int mine = 0;
    switch (want) {
    case WANT_HELLO:
      mine = t == HVD_RDV_HELLO_OK || t == HVD_RDV_ERROR;
      break;
    case WANT_GET:
      mine = (t == HVD_RDV_VALUE || t == HVD_RDV_NOT_FOUND) && frame_key_is(f, key, klen);
      break;
    default:
      mine = (t == HVD_RDV_BARRIER_OK && frame_key_is(f, key, klen)) || t == HVD_RDV_ERROR;
      break;
    }
    if (mine) return HVD_OK;
    frame_free(f);
    if (t == HVD_RDV_HELLO_OK)
      return client_fail(c, HVD_ERR_PROTOCOL, err,
                         "bad frame from the rendezvous server at %s: unexpected HELLO_OK",
                         c->server);
    HVD_DEBUG("rendezvous: dropped a late reply (type %u) from the server", t);
  }
}

/* ---- connect ------------------------------------------------------------------------ */

/* One non-blocking connect attempt; the socket, or -1 with the reason in why. */
static int try_connect(const struct addrinfo *ai, uint64_t deadline, char *why, size_t n) {
  int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
  if (fd < 0) {
    snprintf(why, n, "socket: %s", strerror(errno));
    return -1;
  }
  if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) return fd;
  if (errno != EINPROGRESS) {
    snprintf(why, n, "%s", strerror(errno));
    goto fail;
  }
  int w = wait_fd(fd, POLLOUT, deadline);
  if (w <= 0) {
    snprintf(why, n, "%s", w == 0 ? "connection attempt timed out" : strerror(errno));
    goto fail;
  }
  int soerr = 0;
  socklen_t len = sizeof soerr;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0) soerr = errno;
  if (soerr != 0) {
    snprintf(why, n, "%s", strerror(soerr));
    goto fail;
  }
  return fd;
fail:
  close(fd);
  return -1;
}

static hvd_status_t connect_retry(hvd_rdv_client_t *c, const char *host, int port,
                                  int timeout_ms, uint64_t deadline, hvd_err_t *err) {
  char portstr[16], why[256] = "no address";
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  snprintf(portstr, sizeof portstr, "%d", port);
  int backoff = 10;
  for (;;) {
    struct addrinfo *res = NULL;
    int g = getaddrinfo(host, portstr, &hints, &res);
    if (g == 0) {
      for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        c->fd = try_connect(ai, deadline, why, sizeof why);
        if (c->fd >= 0) break;
      }
      freeaddrinfo(res);
      if (c->fd >= 0) return HVD_OK;
    } else if (g == EAI_AGAIN) { /* DNS may come up late too */
      snprintf(why, sizeof why, "%s", gai_strerror(g));
    } else {
      hvd_err_set(err, "rendezvous: cannot resolve '%s': %s", host,
                  g == EAI_SYSTEM ? strerror(errno) : gai_strerror(g));
      return HVD_ERR_BOOTSTRAP;
    }
    int left = ms_left(deadline);
    if (left == 0) {
      hvd_err_set(err, "rendezvous: could not connect to the server at %s within %d ms: %s",
                  c->server, timeout_ms, why);
      return HVD_ERR_TIMEOUT;
    }
    sleep_ms(HVD_MIN(backoff, left));
    backoff = HVD_MIN(backoff * 2, RDV_BACKOFF_MAX_MS);
  }
}

hvd_status_t hvd_rdv_connect(const char *host, int port, const char *token, int rank,
                             int size, int timeout_ms, hvd_rdv_client_t **out,
                             hvd_err_t *err) {
  hvd_status_t st;
  rdv_frame_t f = {.payload = NULL};
  if (out != NULL) *out = NULL;
  if (out == NULL || host == NULL || token == NULL || port <= 0 || port > 65535 || size < 1 ||
      rank < 0 || rank >= size || timeout_ms < 0 || strlen(token) > 1024) {
    hvd_err_set(err, "rendezvous: bad argument to hvd_rdv_connect (host %s, port %d, rank %d, "
                     "size %d, timeout %d ms)",
                host ? host : "(null)", port, rank, size, timeout_ms);
    return HVD_ERR_INVALID_PARAM;
  }
  hvd_rdv_client_t *c = calloc(1, sizeof *c);
  if (c == NULL) {
    hvd_err_set(err, "rendezvous: out of memory");
    return HVD_ERR_NO_MEMORY;
  }
  c->fd = -1;
  c->rank = rank;
  pthread_mutex_init(&c->mu, NULL);
  if (strchr(host, ':') != NULL) /* IPv6 literal */
    snprintf(c->server, sizeof c->server, "[%.256s]:%d", host, port);
  else
    snprintf(c->server, sizeof c->server, "%.256s:%d", host, port);

  uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
  st = connect_retry(c, host, port, timeout_ms, deadline, err);
  if (st != HVD_OK) goto fail;
  int one = 1;
  /* Small request/reply frames: do not let Nagle hold them back. */
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int idle = RDV_KEEPALIVE_IDLE_S, intvl = RDV_KEEPALIVE_INTERVAL_S, cnt = RDV_KEEPALIVE_COUNT;
  unsigned user_timeout = RDV_USER_TIMEOUT_MS;
  setsockopt(c->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
  setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
  setsockopt(c->fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout);

  hvd_rdv_buf_t b;
  hvd_rdv_buf_init(&b);
  hvd_rdv_frame_begin(&b, HVD_RDV_HELLO);
  hvd_rdv_put_str(&b, token, strlen(token));
  hvd_rdv_put_u32(&b, (uint32_t)rank);
  hvd_rdv_put_u32(&b, (uint32_t)size);
  st = send_frame(c, &b, err);
  if (st != HVD_OK) goto fail;

  /* Connecting may have used most of the time; the answer still deserves a moment. */
  uint64_t reply_deadline = HVD_MAX(deadline, now_ms() + RDV_REPLY_GRACE_MS);
  st = await_reply(c, WANT_HELLO, NULL, 0, reply_deadline, &f, err);
  if (st == HVD_ERR_TIMEOUT) {
    hvd_err_set(err, "rendezvous: no answer to HELLO from the server at %s", c->server);
    goto fail;
  }
  if (st != HVD_OK) {
    hvd_err_prefix(err, "rendezvous: HELLO to %s", c->server);
    goto fail;
  }
  if (f.h.type == HVD_RDV_ERROR) {
    hvd_err_set(err, "rendezvous: the server at %s refused rank %d: %.*s", c->server, rank,
                frame_reason_len(&f), (const char *)f.m.str);
    st = HVD_ERR_AUTH;
    goto fail_frame;
  }
  frame_free(&f);
  *out = c;
  return HVD_OK;

fail_frame:
  frame_free(&f);
fail:
  if (c->fd >= 0) close(c->fd);
  pthread_mutex_destroy(&c->mu);
  free(c);
  return st;
}

/* ---- requests ------------------------------------------------------------------------ */

hvd_status_t hvd_rdv_put(hvd_rdv_client_t *c, const char *key, const void *val, size_t len,
                         hvd_err_t *err) {
  if (c == NULL || key == NULL || (val == NULL && len > 0)) {
    hvd_err_set(err, "rendezvous: NULL argument to hvd_rdv_put");
    return HVD_ERR_INVALID_PARAM;
  }
  size_t klen = strlen(key);
  if (klen > HVD_RDV_MAX_KEY || len > HVD_RDV_MAX_PAYLOAD - 8 - klen) {
    hvd_err_set(err, "rendezvous: PUT of key '%.64s' (%zu bytes) with a %zu byte value is too "
                     "large (keys <= %d bytes, key + value <= %u bytes)",
                key, klen, len, HVD_RDV_MAX_KEY, (unsigned)HVD_RDV_MAX_PAYLOAD - 8);
    return HVD_ERR_INVALID_PARAM;
  }
  pthread_mutex_lock(&c->mu);
  hvd_status_t st = client_failed(c, err);
  if (st == HVD_OK) {
    hvd_rdv_buf_t b;
    hvd_rdv_buf_init(&b);
    hvd_rdv_frame_begin(&b, HVD_RDV_PUT);
    hvd_rdv_put_str(&b, key, klen);
    hvd_rdv_put_str(&b, val, len);
    st = send_frame(c, &b, err);
  }
  pthread_mutex_unlock(&c->mu);
  return st;
}

static hvd_status_t get_locked(hvd_rdv_client_t *c, const char *key, size_t klen, void **val,
                               size_t *len, int timeout_ms, hvd_err_t *err) {
  rdv_frame_t f;
  hvd_status_t st = client_failed(c, err);
  if (st != HVD_OK) return st;
  hvd_rdv_buf_t b;
  hvd_rdv_buf_init(&b);
  hvd_rdv_frame_begin(&b, HVD_RDV_GET);
  hvd_rdv_put_str(&b, key, klen);
  hvd_rdv_put_u32(&b, (uint32_t)timeout_ms);
  st = send_frame(c, &b, err);
  if (st != HVD_OK) return st;

  uint64_t deadline = now_ms() + (uint64_t)timeout_ms + RDV_REPLY_GRACE_MS;
  st = await_reply(c, WANT_GET, key, klen, deadline, &f, err);
  if (st == HVD_ERR_TIMEOUT) {
    hvd_err_set(err, "rendezvous: no answer from the server at %s to GET '%s'", c->server, key);
    return st;
  }
  if (st != HVD_OK) return st;
  if (f.h.type == HVD_RDV_NOT_FOUND) {
    frame_free(&f);
    hvd_err_set(err, "rendezvous: key '%s' did not appear within %d ms", key, timeout_ms);
    return HVD_ERR_TIMEOUT;
  }
  const uint8_t *v = f.m.value;
  size_t vn = f.m.value_len;
  uint8_t *copy = malloc(vn + 1);
  if (copy == NULL) {
    frame_free(&f);
    hvd_err_set(err, "rendezvous: out of memory for the %zu byte value of '%s'", vn, key);
    return HVD_ERR_NO_MEMORY;
  }
  if (vn > 0) memcpy(copy, v, vn);
  copy[vn] = '\0';
  frame_free(&f);
  *val = copy;
  *len = vn;
  return HVD_OK;
}

hvd_status_t hvd_rdv_get(hvd_rdv_client_t *c, const char *key, void **val, size_t *len,
                         int timeout_ms, hvd_err_t *err) {
  if (c == NULL || key == NULL || val == NULL || len == NULL || timeout_ms < 0 ||
      strlen(key) > HVD_RDV_MAX_KEY) {
    hvd_err_set(err, "rendezvous: bad argument to hvd_rdv_get");
    return HVD_ERR_INVALID_PARAM;
  }
  pthread_mutex_lock(&c->mu);
  hvd_status_t st = get_locked(c, key, strlen(key), val, len, timeout_ms, err);
  pthread_mutex_unlock(&c->mu);
  return st;
}

static hvd_status_t barrier_locked(hvd_rdv_client_t *c, const char *name, size_t nlen,
                                   int timeout_ms, hvd_err_t *err) {
  rdv_frame_t f;
  hvd_status_t st = client_failed(c, err);
  if (st != HVD_OK) return st;
  hvd_rdv_buf_t b;
  hvd_rdv_buf_init(&b);
  hvd_rdv_frame_begin(&b, HVD_RDV_BARRIER);
  hvd_rdv_put_str(&b, name, nlen);
  hvd_rdv_put_u32(&b, (uint32_t)timeout_ms);
  st = send_frame(c, &b, err);
  if (st != HVD_OK) return st;

  uint64_t deadline = now_ms() + (uint64_t)timeout_ms + RDV_REPLY_GRACE_MS;
  st = await_reply(c, WANT_BARRIER, name, nlen, deadline, &f, err);
  if (st == HVD_ERR_TIMEOUT) {
    hvd_err_set(err, "rendezvous: no answer from the server at %s to barrier '%s'", c->server,
                name);
    return st;
  }
  if (st != HVD_OK) return st;
  if (f.h.type == HVD_RDV_ERROR) {
    /* The server's barrier timeout: its message names the missing ranks. */
    hvd_err_set(err, "rendezvous: %.*s", frame_reason_len(&f), (const char *)f.m.str);
    frame_free(&f);
    return HVD_ERR_TIMEOUT;
  }
  frame_free(&f);
  return HVD_OK;
}

hvd_status_t hvd_rdv_barrier(hvd_rdv_client_t *c, const char *name, int timeout_ms,
                             hvd_err_t *err) {
  if (c == NULL || name == NULL || timeout_ms < 0 || strlen(name) > HVD_RDV_MAX_KEY) {
    hvd_err_set(err, "rendezvous: bad argument to hvd_rdv_barrier");
    return HVD_ERR_INVALID_PARAM;
  }
  pthread_mutex_lock(&c->mu);
  hvd_status_t st = barrier_locked(c, name, strlen(name), timeout_ms, err);
  pthread_mutex_unlock(&c->mu);
  return st;
}

int hvd_rdv_fd(const hvd_rdv_client_t *c) { return c != NULL ? c->fd : -1; }

hvd_status_t hvd_rdv_read_event(hvd_rdv_client_t *c, hvd_err_t *err) {
  if (c == NULL) return HVD_ERR_INVALID_PARAM;
  rdv_frame_t f;
  pthread_mutex_lock(&c->mu);
  hvd_status_t st = client_failed(c, err);
  if (st != HVD_OK) goto out;
  /* Another thread may have consumed what made the fd readable: do not wait. */
  st = recv_frame(c, now_ms(), &f, err);
  if (st == HVD_ERR_TIMEOUT) {
    st = HVD_OK;
    goto out;
  }
  if (st != HVD_OK) goto out;
  switch (f.h.type) {
  case HVD_RDV_ABORT:
    st = take_abort(c, &f, err);
    break;
  case HVD_RDV_HELLO_OK:
    st = client_fail(c, HVD_ERR_PROTOCOL, err,
                     "bad frame from the rendezvous server at %s: unexpected HELLO_OK",
                     c->server);
    break;
  default:
    /* Late replies; an ERROR outside a request is followed by the server closing,
     * which the next call reports. */
    HVD_DEBUG("rendezvous: dropped a late reply (type %u) from the server",
              (unsigned)f.h.type);
    break;
  }
  frame_free(&f);
out:
  pthread_mutex_unlock(&c->mu);
  return st;
}

hvd_status_t hvd_rdv_bye(hvd_rdv_client_t *c) {
  if (c == NULL) return HVD_ERR_INVALID_PARAM;
  pthread_mutex_lock(&c->mu);
  hvd_status_t st;
  /* After an ABORT the connection still works, and a clean exit is worth reporting. */
  if (c->failed != HVD_OK && c->failed != HVD_ERR_ABORTED) {
    st = c->failed;
  } else {
    hvd_rdv_buf_t b;
    hvd_rdv_buf_init(&b);
    hvd_rdv_frame_begin(&b, HVD_RDV_BYE);
    st = send_frame(c, &b, NULL);
    if (st != HVD_OK) st = HVD_ERR_BOOTSTRAP; /* not the earlier ABORT: this send failed */
  }
  pthread_mutex_unlock(&c->mu);
  return st;
}

void hvd_rdv_close(hvd_rdv_client_t *c) {
  if (c == NULL) return;
  if (c->fd >= 0) close(c->fd);
  pthread_mutex_destroy(&c->mu);
  free(c);
}
