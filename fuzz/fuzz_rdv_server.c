/*
 * libFuzzer harness: the live rendezvous server (transport/rdv_server.c) fed over a
 * real loopback TCP connection.
 *
 * Each input is the byte stream one client sends. A fresh server (2 ranks, token
 * FUZZ_TOKEN, known to the seed corpus so that the fuzzer gets past HELLO) is started
 * on this thread's libuv loop, the input is written to it, our side is shut down for
 * writing, and the loop runs until the server closes the connection; then the server
 * is closed and the loop drained. This reaches what the pure codec harness cannot:
 * the per-connection state machine (headers split across reads, the HELLO-first
 * rule, the pre-allocation length checks), the handlers, parked GETs and barriers
 * with their timers, refusals and shutdowns.
 *
 * Properties checked besides "no crash, no sanitizer report, no leak":
 *   - the server always ends a connection whose peer has stopped sending (it must
 *     never hang: libFuzzer's -timeout catches that);
 *   - everything the server sends back is a well-formed frame of a server-to-client
 *     type, parsed by the same decoder the client uses;
 *   - nothing but ERROR comes back to a peer that never completed HELLO (a peer
 *     without the token learns nothing else).
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <uv.h>

#include "common/log.h"
#include "fuzz_check.h"
#include "transport/rdv.h"

#define FUZZ_TOKEN "0123456789abcdef0123456789abcdef"

static uv_loop_t loop;

/* Replies collected from the server and parsed as they complete. */
typedef struct replies {
  uint8_t *buf;
  size_t len, cap;
  int frames, hello_ok;
} replies_t;

static void replies_parse(replies_t *r) {
  size_t off = 0;
  while (r->len - off >= HVD_RDV_HEADER_SIZE) {
    hvd_rdv_header_t h;
    hvd_err_t e;
    FUZZ_CHECK(hvd_rdv_decode_header(r->buf + off, &h, &e) == HVD_OK, "server sent %s", e.msg);
    if (h.length > r->len - off - HVD_RDV_HEADER_SIZE) break;
    const uint8_t *p = r->buf + off + HVD_RDV_HEADER_SIZE;
    hvd_rdv_msg_t m;
    FUZZ_CHECK(hvd_rdv_msg_decode(h.type, h.length ? p : NULL, h.length, &m, &e) == HVD_OK,
               "server sent %s", e.msg);
    switch (h.type) {
    case HVD_RDV_HELLO_OK:
      r->hello_ok = 1;
      break;
    case HVD_RDV_ERROR:
      break;
    case HVD_RDV_VALUE: case HVD_RDV_NOT_FOUND: case HVD_RDV_BARRIER_OK: case HVD_RDV_ABORT:
      FUZZ_CHECK(r->hello_ok, "type %u sent before HELLO_OK", (unsigned)h.type);
      break;
    default:
      FUZZ_CHECK(0, "server sent a frame of client type %u", (unsigned)h.type);
    }
    r->frames++;
    off += HVD_RDV_HEADER_SIZE + h.length;
  }
  memmove(r->buf, r->buf + off, r->len - off);
  r->len -= off;
}

/* Read what is there; 1 once the server has closed its side. */
static int replies_read(replies_t *r, int fd) {
  for (;;) {
    if (r->cap - r->len < 65536) {
      r->cap = r->cap ? r->cap * 2 : 262144;
      r->buf = realloc(r->buf, r->cap);
      FUZZ_CHECK(r->buf != NULL, "out of memory");
    }
    ssize_t n = recv(fd, r->buf + r->len, r->cap - r->len, 0);
    if (n > 0) {
      r->len += (size_t)n;
      replies_parse(r);
      continue;
    }
    if (n == 0) return 1;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    return 1; /* ECONNRESET: closed too */
  }
}

typedef struct conn_state {
  int fd;
  const uint8_t *data;
  size_t left;
  replies_t *r;
  int closed; /* the server has closed the connection */
  uv_poll_t poll;
} conn_state_t;

/* Send what the socket takes; 1 once everything is sent or the server closed. */
static int send_some(conn_state_t *c) {
  while (c->left > 0) {
    ssize_t n = send(c->fd, c->data, c->left, MSG_NOSIGNAL);
    if (n > 0) {
      c->data += n;
      c->left -= (size_t)n;
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 0;
    c->closed = 1; /* the server closed on a bad frame: the rest is not wanted */
    return 1;
  }
  return 1;
}

/* Our end of the connection, watched on the server's own loop so that one
 * uv_run(UV_RUN_ONCE) waits for whichever side has something to do. */
static void on_client_io(uv_poll_t *p, int status, int events) {
  conn_state_t *c = p->data;
  if (status < 0 || (events & UV_READABLE)) {
    if (replies_read(c->r, c->fd)) c->closed = 1;
  }
  if (!c->closed && (events & UV_WRITABLE) && send_some(c) && !c->closed) {
    shutdown(c->fd, SHUT_WR); /* all sent: the server sees the end of the stream */
    uv_poll_start(&c->poll, UV_READABLE, on_client_io);
  }
  if (c->closed) uv_poll_stop(&c->poll);
}

/* A hang is a failure: the server must end every connection whose peer is done. */
static void on_guard(uv_timer_t *t) {
  int *ticks = t->data;
  FUZZ_CHECK(++*ticks < 50, "the server never finished with the connection");
}

static void on_server_freed(void *arg) { *(int *)arg = 1; }

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  signal(SIGPIPE, SIG_IGN);
  /* Every log line is formatted (so its code is exercised); HVD_LOG_LEVEL=debug shows
   * them when reproducing a crash. */
  if (hvd_log_init_from_env() != 0 || getenv("HVD_LOG_LEVEL") == NULL)
    hvd_log_set_level(HVD_LOG_NONE);
  FUZZ_CHECK(uv_loop_init(&loop) == 0, "uv_loop_init");
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  hvd_rdv_server_t *srv = NULL;
  hvd_err_t e;
  hvd_rdv_server_opts_t o = {.bind_addr = "127.0.0.1", .token = FUZZ_TOKEN, .size = 2,
                             .hello_timeout_ms = 10000};
  FUZZ_CHECK(hvd_rdv_server_start(&loop, &o, &srv, &e) == HVD_OK, "server: %s", e.msg);

  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  FUZZ_CHECK(fd >= 0, "socket: %s", strerror(errno));
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)hvd_rdv_server_port(srv))};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int rc = connect(fd, (struct sockaddr *)&a, sizeof a);
  FUZZ_CHECK(rc == 0 || errno == EINPROGRESS, "connect: %s", strerror(errno));

  replies_t r = {0};
  conn_state_t c = {.fd = fd, .data = data, .left = size, .r = &r};
  int ticks = 0;
  uv_timer_t guard;
  uv_timer_init(&loop, &guard);
  guard.data = &ticks;
  uv_timer_start(&guard, on_guard, 100, 100);
  uv_poll_init_socket(&loop, &c.poll, fd);
  c.poll.data = &c;
  uv_poll_start(&c.poll, UV_READABLE | UV_WRITABLE, on_client_io);
  while (!c.closed) uv_run(&loop, UV_RUN_ONCE);
  /* Bytes left over are a frame cut short: fine, since closing a connection drops
   * the replies still queued for it. */
  uv_close((uv_handle_t *)&c.poll, NULL);
  uv_close((uv_handle_t *)&guard, NULL);
  int freed = 0;
  hvd_rdv_server_close(srv, on_server_freed, &freed);
  while (!freed) uv_run(&loop, UV_RUN_ONCE);
  uv_run(&loop, UV_RUN_NOWAIT); /* our two handles' close callbacks */
  /* A reset instead of TIME_WAIT: a million short connections must not use up ports. */
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(fd);
  free(r.buf);
  return 0;
}
