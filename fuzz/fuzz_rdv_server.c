/*
 * libFuzzer harness: the live rendezvous server (transport/rdv_server.c) fed over a
 * real loopback TCP connection.
 *
 * Each input is what two clients send: byte 0 is the size of the pieces each stream
 * is written in (0: as much as the socket takes), bytes 1-2 (little-endian) how many
 * of the bytes after them go to client A (the rest go to client B). A fresh server (2 ranks,
 * token FUZZ_TOKEN, known to the seed corpus so that the fuzzer gets past HELLO) is
 * started on this thread's libuv loop, both streams are written to it piece by piece,
 * each client's side is shut down for writing when its stream is out, and the loop
 * runs until the server has closed both connections; then the server is closed and
 * the loop drained. Two clients reach what one cannot: a barrier that both ranks
 * enter, a GET answered by the other rank's PUT, a rank taken twice. This reaches what the pure codec harness cannot:
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
#include <netinet/tcp.h>
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
  size_t piece; /* bytes per send; 0 = no limit */
  replies_t *r;
  int sent;   /* all of its stream is out */
  int closed; /* the server has closed the connection */
  uv_poll_t poll;
} conn_state_t;

/* Both clients, so that each can see whether the other is done. */
static conn_state_t clients[2];

/* Once both streams are out, both clients shut down their sending side together: a
 * request one rank has parked (a GET, a barrier) can still be answered by what the
 * other sends, before the end of the stream closes its connection. */
static void maybe_shutdown(void) {
  for (int i = 0; i < 2; i++)
    if (!clients[i].sent && !clients[i].closed) return;
  for (int i = 0; i < 2; i++)
    if (!clients[i].closed) shutdown(clients[i].fd, SHUT_WR);
}

/* Send what the socket takes; 1 once everything is sent or the server closed. */
static int send_some(conn_state_t *c) {
  while (c->left > 0) {
    size_t want = c->piece > 0 && c->piece < c->left ? c->piece : c->left;
    ssize_t n = send(c->fd, c->data, want, MSG_NOSIGNAL);
    if (n > 0) {
      c->data += n;
      c->left -= (size_t)n;
      if (c->piece > 0) return c->left == 0; /* the next piece on the next round */
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
  if (!c->closed && !c->sent && (events & UV_WRITABLE) && send_some(c) && !c->closed) {
    c->sent = 1;
    uv_poll_start(&c->poll, UV_READABLE, on_client_io);
    maybe_shutdown();
  }
  if (c->closed) {
    uv_poll_stop(&c->poll);
    maybe_shutdown();
  }
}

/* A hang is a failure: the server must end every connection whose peer is done. */
static void on_guard(uv_timer_t *t) {
  int *ticks = t->data;
  FUZZ_CHECK(++*ticks < 80, "the server never finished with the connection");
}

static void on_server_freed(void *arg) { *(int *)arg = 1; }

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  signal(SIGPIPE, SIG_IGN);
  /* Quiet unless HVD_LOG_LEVEL says otherwise (HVD_LOG_LEVEL=debug when reproducing a
   * crash shows what the server made of the input). */
  if (hvd_log_init_from_env() < 0 || getenv("HVD_LOG_LEVEL") == NULL)
    hvd_log_set_level(HVD_LOG_NONE);
  FUZZ_CHECK(uv_loop_init(&loop) == 0, "uv_loop_init");
  return 0;
}

static int client_open(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  FUZZ_CHECK(fd >= 0, "socket: %s", strerror(errno));
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int rc = connect(fd, (struct sockaddr *)&a, sizeof a);
  FUZZ_CHECK(rc == 0 || errno == EINPROGRESS, "connect: %s", strerror(errno));
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* pieces stay pieces */
  return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3) return 0;
  size_t piece = data[0];
  size_t k = (size_t)(data[1] | data[2] << 8);
  data += 3;
  size -= 3;
  if (k > size) k = size;

  hvd_rdv_server_t *srv = NULL;
  hvd_err_t e;
  hvd_rdv_server_opts_t o = {.bind_addr = "127.0.0.1", .token = FUZZ_TOKEN, .size = 2,
                             .hello_timeout_ms = 10000};
  FUZZ_CHECK(hvd_rdv_server_start(&loop, &o, &srv, &e) == HVD_OK, "server: %s", e.msg);
  int port = hvd_rdv_server_port(srv);

  replies_t r[2] = {{0}};
  conn_state_t *c = clients;
  c[0] = (conn_state_t){.fd = client_open(port), .data = data, .left = k, .piece = piece,
                        .r = &r[0]};
  c[1] = (conn_state_t){.fd = client_open(port), .data = data + k, .left = size - k,
                        .piece = piece, .r = &r[1]};
  int ticks = 0;
  uv_timer_t guard;
  uv_timer_init(&loop, &guard);
  guard.data = &ticks;
  uv_timer_start(&guard, on_guard, 100, 100);
  for (int i = 0; i < 2; i++) {
    uv_poll_init_socket(&loop, &c[i].poll, c[i].fd);
    c[i].poll.data = &c[i];
    uv_poll_start(&c[i].poll, UV_READABLE | UV_WRITABLE, on_client_io);
  }
  while (!c[0].closed || !c[1].closed) uv_run(&loop, UV_RUN_ONCE);
  /* Bytes left over are a frame cut short: fine, since closing a connection drops
   * the replies still queued for it. */
  for (int i = 0; i < 2; i++) uv_close((uv_handle_t *)&c[i].poll, NULL);
  uv_close((uv_handle_t *)&guard, NULL);
  int freed = 0;
  hvd_rdv_server_close(srv, on_server_freed, &freed);
  while (!freed) uv_run(&loop, UV_RUN_ONCE);
  uv_run(&loop, UV_RUN_NOWAIT); /* our handles' close callbacks */
  for (int i = 0; i < 2; i++) {
    /* A reset instead of TIME_WAIT: a million short connections must not use up
     * ports. */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c[i].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(c[i].fd);
    free(r[i].buf);
  }
  return 0;
}
