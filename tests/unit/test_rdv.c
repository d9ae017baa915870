/*
 * Rendezvous: the frame codec (round trips, every rejection, a fuzz loop), and the
 * server and client together in one process: the server on its own thread
 * (hvd_rdv_server_thread_start) or, for the launcher's way of using it, on a loop
 * that the test runs itself; ranks are clients on test threads, and raw sockets play
 * hostile peers.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "common/log.h"
#include "common/util.h"
#include "transport/rdv.h"

static const char TOKEN[] = "0123456789abcdef0123456789abcdef";

/* ---- helpers ---------------------------------------------------------------------- */

static uint64_t ms_now(void) { return hvd_now_ns() / 1000000u; }

static void sleep_ms(int ms) { usleep((useconds_t)ms * 1000); }

/* Deterministic PRNG (xorshift64*), state owned by the caller. */
static uint64_t rnd(uint64_t *s) {
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 2685821657736338717ull;
}

typedef struct {
  hvd_rdv_server_thread_t *t;
  int port;
} srv_t;

static srv_t start_server_port(int size, int hello_ms, int port) {
  hvd_rdv_server_opts_t o = {.token = TOKEN, .size = size, .port = port,
                             .hello_timeout_ms = hello_ms};
  srv_t s = {0};
  hvd_err_t err = {{0}};
  hvd_status_t st = hvd_rdv_server_thread_start(&o, &s.t, &s.port, &err);
  cr_assert_eq(st, HVD_OK, "server start: %s", err.msg);
  cr_assert_gt(s.port, 0);
  return s;
}

static srv_t start_server(int size) { return start_server_port(size, 0, 0); }

static hvd_rdv_client_t *connect_rank(int port, int rank, int size) {
  hvd_rdv_client_t *c = NULL;
  hvd_err_t err = {{0}};
  hvd_status_t st = hvd_rdv_connect("127.0.0.1", port, TOKEN, rank, size, 5000, &c, &err);
  cr_assert_eq(st, HVD_OK, "rank %d connect: %d %s", rank, st, err.msg);
  return c;
}

static int raw_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  cr_assert_geq(fd, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0, "%s", strerror(errno));
  return fd;
}

static void raw_send(int fd, const void *p, size_t n) {
  cr_assert_eq(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* 1 once the peer has closed fd (EOF or reset) within ms, draining what it sent. */
static int wait_closed(int fd, int ms) {
  uint64_t end = ms_now() + (uint64_t)ms;
  char buf[4096];
  for (;;) {
    uint64_t now = ms_now();
    if (now >= end) return 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, (int)(end - now)) <= 0) continue;
    ssize_t k = recv(fd, buf, sizeof buf, 0);
    if (k == 0 || (k < 0 && errno == ECONNRESET)) return 1;
  }
}

/* A HELLO frame built by hand, as a raw peer would send it; the reply's type. */
static unsigned raw_hello_try(int fd, const char *token, uint32_t rank, uint32_t size) {
  hvd_rdv_buf_t b;
  hvd_rdv_buf_init(&b);
  hvd_rdv_frame_begin(&b, HVD_RDV_HELLO);
  hvd_rdv_put_str(&b, token, strlen(token));
  hvd_rdv_put_u32(&b, rank);
  hvd_rdv_put_u32(&b, size);
  cr_assert_eq(hvd_rdv_frame_end(&b), HVD_OK);
  raw_send(fd, b.data, b.len);
  hvd_rdv_buf_free(&b);
  uint8_t h[HVD_RDV_HEADER_SIZE];
  if (recv(fd, h, sizeof h, MSG_WAITALL) != (ssize_t)sizeof h) return 0;
  hvd_rdv_header_t hdr;
  cr_assert_eq(hvd_rdv_decode_header(h, &hdr, NULL), HVD_OK);
  return hdr.type;
}

static void raw_hello(int fd, const char *token, uint32_t rank, uint32_t size) {
  cr_assert_eq(raw_hello_try(fd, token, rank, size), HVD_RDV_HELLO_OK);
}

/* Both ranks still served: rank a publishes, rank b reads it back. */
static void check_kv_works(hvd_rdv_client_t *a, hvd_rdv_client_t *b, const char *key) {
  hvd_err_t err = {{0}};
  cr_assert_eq(hvd_rdv_put(a, key, "ok", 2, &err), HVD_OK, "%s", err.msg);
  void *v = NULL;
  size_t n = 0;
  cr_assert_eq(hvd_rdv_get(b, key, &v, &n, 5000, &err), HVD_OK, "%s", err.msg);
  cr_assert_eq(n, 2);
  cr_assert_str_eq(v, "ok");
  free(v);
}

/* Capture our own stderr (each Criterion test is its own process) to check log lines. */
typedef struct {
  int rfd;
  char text[16384];
  size_t len;
} logcap_t;

static void logcap_start(logcap_t *lc) {
  int p[2];
  cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
  cr_assert_geq(dup2(p[1], 2), 0);
  close(p[1]);
  fcntl(p[0], F_SETFL, O_NONBLOCK);
  lc->rfd = p[0];
  lc->len = 0;
  lc->text[0] = '\0';
}

/* 1 if needle was logged (waiting up to ms for it). */
static int logcap_has(logcap_t *lc, const char *needle, int ms) {
  uint64_t end = ms_now() + (uint64_t)ms;
  for (;;) {
    ssize_t k;
    while (lc->len + 1 < sizeof lc->text &&
           (k = read(lc->rfd, lc->text + lc->len, sizeof lc->text - lc->len - 1)) > 0) {
      lc->len += (size_t)k;
      lc->text[lc->len] = '\0';
    }
    if (strstr(lc->text, needle) != NULL) return 1;
    if (ms_now() >= end) return 0;
    sleep_ms(10);
  }
}

/* ---- codec ----------------------------------------------------------------------- */

Test(rdv_codec, header_round_trip, .timeout = 30) {
  uint8_t buf[HVD_RDV_HEADER_SIZE];
  const uint32_t lens[] = {0, 1, 255, 65536, HVD_RDV_MAX_PAYLOAD};
  for (uint16_t t = HVD_RDV_HELLO; t < HVD_RDV_TYPE_MAX; t++) {
    for (size_t i = 0; i < HVD_ARRAY_SIZE(lens); i++) {
      hvd_rdv_encode_header(buf, t, lens[i]);
      hvd_rdv_header_t h;
      hvd_err_t err;
      cr_assert_eq(hvd_rdv_decode_header(buf, &h, &err), HVD_OK, "%s", err.msg);
      cr_assert_eq(h.magic, HVD_RDV_MAGIC);
      cr_assert_eq(h.version, HVD_RDV_VERSION);
      cr_assert_eq(h.type, t);
      cr_assert_eq(h.length, lens[i]);
    }
  }
  /* Little-endian on the wire, whatever the host. */
  hvd_rdv_encode_header(buf, HVD_RDV_PUT, 0x01020304);
  const uint8_t want[] = {0x48, 0x56, 0x44, 0x52, 1, 0, 3, 0, 4, 3, 2, 1};
  cr_assert_arr_eq(buf, want, sizeof want);
}

static hvd_status_t decode_with(uint32_t magic, uint16_t version, uint16_t type,
                                uint32_t length, hvd_err_t *err) {
  uint8_t b[HVD_RDV_HEADER_SIZE];
  hvd_rdv_encode_header(b, type, length);
  for (int i = 0; i < 4; i++) b[i] = (uint8_t)(magic >> (8 * i));
  b[4] = (uint8_t)version;
  b[5] = (uint8_t)(version >> 8);
  hvd_rdv_header_t h;
  memset(err, 0, sizeof *err);
  return hvd_rdv_decode_header(b, &h, err);
}

Test(rdv_codec, header_rejections, .timeout = 30) {
  hvd_err_t err;
  cr_assert_eq(decode_with(0x12345678, HVD_RDV_VERSION, HVD_RDV_PUT, 0, &err), HVD_ERR_PROTOCOL);
  cr_assert(strstr(err.msg, "bad magic 0x12345678") != NULL, "%s", err.msg);
  cr_assert_eq(decode_with(HVD_RDV_MAGIC, 2, HVD_RDV_PUT, 0, &err), HVD_ERR_PROTOCOL);
  cr_assert(strstr(err.msg, "version 2") != NULL, "%s", err.msg);
  cr_assert_eq(decode_with(HVD_RDV_MAGIC, 0, HVD_RDV_PUT, 0, &err), HVD_ERR_PROTOCOL);
  cr_assert_eq(decode_with(HVD_RDV_MAGIC, HVD_RDV_VERSION, 0, 0, &err), HVD_ERR_PROTOCOL);
  cr_assert(strstr(err.msg, "type 0") != NULL, "%s", err.msg);
  cr_assert_eq(decode_with(HVD_RDV_MAGIC, HVD_RDV_VERSION, HVD_RDV_TYPE_MAX, 0, &err),
               HVD_ERR_PROTOCOL);
  cr_assert_eq(decode_with(HVD_RDV_MAGIC, HVD_RDV_VERSION, 0xffff, 0, &err), HVD_ERR_PROTOCOL);
  cr_assert_eq(decode_with(HVD_RDV_MAGIC, HVD_RDV_VERSION, HVD_RDV_PUT, HVD_RDV_MAX_PAYLOAD + 1,
                           &err),
               HVD_ERR_PROTOCOL);
  cr_assert(strstr(err.msg, "exceeds") != NULL, "%s", err.msg);
  cr_assert_eq(decode_with(HVD_RDV_MAGIC, HVD_RDV_VERSION, HVD_RDV_PUT, 0xffffffffu, &err),
               HVD_ERR_PROTOCOL);
  cr_assert_eq(decode_with(HVD_RDV_MAGIC, HVD_RDV_VERSION, HVD_RDV_PUT, HVD_RDV_MAX_PAYLOAD,
                           &err),
               HVD_OK);
  /* err may be NULL. */
  uint8_t b[HVD_RDV_HEADER_SIZE] = {0};
  hvd_rdv_header_t h;
  cr_assert_eq(hvd_rdv_decode_header(b, &h, NULL), HVD_ERR_PROTOCOL);
}

Test(rdv_codec, frame_round_trip, .timeout = 30) {
  hvd_rdv_buf_t b;
  hvd_rdv_buf_init(&b);
  /* Two frames back to back in one buffer. */
  hvd_rdv_frame_begin(&b, HVD_RDV_PUT);
  hvd_rdv_put_str(&b, "key/1", 5);
  hvd_rdv_put_str(&b, "v\0lue", 5);
  cr_assert_eq(hvd_rdv_frame_end(&b), HVD_OK);
  size_t first = b.len;
  hvd_rdv_frame_begin(&b, HVD_RDV_GET);
  hvd_rdv_put_str(&b, "", 0);
  hvd_rdv_put_u32(&b, 0xdeadbeef);
  cr_assert_eq(hvd_rdv_frame_end(&b), HVD_OK);
  cr_assert_eq(first, HVD_RDV_HEADER_SIZE + 4 + 5 + 4 + 5);
  cr_assert_eq(b.len, first + HVD_RDV_HEADER_SIZE + 4 + 4);

  hvd_rdv_header_t h;
  cr_assert_eq(hvd_rdv_decode_header(b.data, &h, NULL), HVD_OK);
  cr_assert_eq(h.type, HVD_RDV_PUT);
  cr_assert_eq(h.length, first - HVD_RDV_HEADER_SIZE);
  hvd_rdv_reader_t r;
  hvd_rdv_reader_init(&r, b.data + HVD_RDV_HEADER_SIZE, h.length);
  size_t n;
  const uint8_t *s = hvd_rdv_get_str(&r, HVD_RDV_MAX_KEY, &n);
  cr_assert_eq(n, 5);
  cr_assert_arr_eq(s, "key/1", 5);
  s = hvd_rdv_get_str(&r, HVD_RDV_MAX_PAYLOAD, &n);
  cr_assert_eq(n, 5);
  cr_assert_arr_eq(s, "v\0lue", 5);
  cr_assert_eq(hvd_rdv_reader_done(&r), HVD_OK);

  cr_assert_eq(hvd_rdv_decode_header(b.data + first, &h, NULL), HVD_OK);
  cr_assert_eq(h.type, HVD_RDV_GET);
  hvd_rdv_reader_init(&r, b.data + first + HVD_RDV_HEADER_SIZE, h.length);
  s = hvd_rdv_get_str(&r, HVD_RDV_MAX_KEY, &n);
  cr_assert_not_null(s);
  cr_assert_eq(n, 0);
  cr_assert_eq(hvd_rdv_get_u32(&r), 0xdeadbeef);
  cr_assert_eq(hvd_rdv_reader_done(&r), HVD_OK);
  hvd_rdv_buf_free(&b);
  cr_assert_null(b.data);

  /* An empty frame. */
  hvd_rdv_frame_begin(&b, HVD_RDV_BYE);
  cr_assert_eq(hvd_rdv_frame_end(&b), HVD_OK);
  cr_assert_eq(b.len, HVD_RDV_HEADER_SIZE);
  hvd_rdv_reader_init(&r, NULL, 0);
  cr_assert_eq(hvd_rdv_reader_done(&r), HVD_OK);
  hvd_rdv_buf_free(&b);
}

/* Every payload type: encode, decode, same fields; a byte more or less, or a field
 * over its bound, is refused with a reason. */
Test(rdv_codec, messages_of_every_type, .timeout = 30) {
  static const uint8_t key[] = "addr.3", val[] = "tcp;ofi_rxm:10.0.0.1:4242";
  for (uint16_t t = HVD_RDV_HELLO; t < HVD_RDV_TYPE_MAX; t++) {
    hvd_rdv_msg_t m = {.type = t};
    int has_str = t != HVD_RDV_HELLO_OK && t != HVD_RDV_BYE;
    int has_val = t == HVD_RDV_PUT || t == HVD_RDV_VALUE;
    if (has_str) {
      m.str = t == HVD_RDV_HELLO ? (const uint8_t *)TOKEN : key;
      m.str_len = t == HVD_RDV_HELLO ? strlen(TOKEN) : sizeof key - 1;
    }
    if (has_val) {
      m.value = val;
      m.value_len = sizeof val - 1;
    }
    if (t == HVD_RDV_HELLO) {
      m.rank = 3;
      m.size = 0xfffffff0u;
    }
    if (t == HVD_RDV_GET || t == HVD_RDV_BARRIER) m.timeout_ms = 123456;
    hvd_rdv_buf_t b;
    hvd_rdv_buf_init(&b);
    cr_assert_eq(hvd_rdv_msg_encode(&b, &m), HVD_OK, "type %u", t);
    hvd_rdv_header_t h;
    cr_assert_eq(hvd_rdv_decode_header(b.data, &h, NULL), HVD_OK);
    cr_assert_eq(h.type, t);
    cr_assert_eq(h.length, b.len - HVD_RDV_HEADER_SIZE);
    const uint8_t *p = b.data + HVD_RDV_HEADER_SIZE;
    hvd_rdv_msg_t d;
    hvd_err_t err = {{0}};
    cr_assert_eq(hvd_rdv_msg_decode(t, h.length ? p : NULL, h.length, &d, &err), HVD_OK,
                 "type %u: %s", t, err.msg);
    cr_assert(d.type == t && d.str_len == m.str_len && d.value_len == m.value_len &&
                  d.rank == m.rank && d.size == m.size && d.timeout_ms == m.timeout_ms,
              "type %u decoded differently", t);
    if (m.str_len) cr_assert_arr_eq(d.str, m.str, m.str_len);
    if (m.value_len) cr_assert_arr_eq(d.value, m.value, m.value_len);
    /* One byte short, one byte more. */
    if (h.length > 0) {
      err.msg[0] = '\0';
      cr_assert_eq(hvd_rdv_msg_decode(t, p, h.length - 1, &d, &err), HVD_ERR_PROTOCOL, "%u", t);
      cr_assert(strstr(err.msg, "malformed") != NULL, "%s", err.msg);
    }
    uint8_t more[1024];
    memcpy(more, p, h.length);
    more[h.length] = 0;
    cr_assert_eq(hvd_rdv_msg_decode(t, more, h.length + 1, &d, NULL), HVD_ERR_PROTOCOL, "%u", t);
    hvd_rdv_buf_free(&b);
  }
  /* Bounds: a key of HVD_RDV_MAX_KEY bytes passes, one more does not, either way. */
  static uint8_t big[HVD_RDV_MAX_TOKEN_WIRE + 1];
  memset(big, 'k', sizeof big);
  hvd_rdv_msg_t m = {.type = HVD_RDV_GET, .str = big, .str_len = HVD_RDV_MAX_KEY};
  hvd_rdv_buf_t b;
  hvd_rdv_buf_init(&b);
  cr_assert_eq(hvd_rdv_msg_encode(&b, &m), HVD_OK);
  hvd_rdv_buf_free(&b);
  m.str_len++;
  cr_assert_eq(hvd_rdv_msg_encode(&b, &m), HVD_ERR_PROTOCOL);
  hvd_rdv_buf_free(&b);
  hvd_rdv_frame_begin(&b, HVD_RDV_GET);
  hvd_rdv_put_str(&b, big, HVD_RDV_MAX_KEY + 1);
  hvd_rdv_put_u32(&b, 0);
  cr_assert_eq(hvd_rdv_frame_end(&b), HVD_OK);
  hvd_rdv_msg_t d;
  cr_assert_eq(hvd_rdv_msg_decode(HVD_RDV_GET, b.data + HVD_RDV_HEADER_SIZE,
                                  b.len - HVD_RDV_HEADER_SIZE, &d, NULL),
               HVD_ERR_PROTOCOL);
  hvd_rdv_buf_free(&b);
  /* A HELLO token up to HVD_RDV_MAX_TOKEN_WIRE parses (and is then a wrong token). */
  m = (hvd_rdv_msg_t){.type = HVD_RDV_HELLO, .str = big, .str_len = HVD_RDV_MAX_TOKEN_WIRE};
  cr_assert_eq(hvd_rdv_msg_encode(&b, &m), HVD_OK);
  cr_assert_eq(b.len, HVD_RDV_HEADER_SIZE + HVD_RDV_MAX_HELLO);
  hvd_rdv_buf_free(&b);
  /* Not a type. */
  cr_assert_eq(hvd_rdv_msg_decode(0, NULL, 0, &d, NULL), HVD_ERR_PROTOCOL);
  cr_assert_eq(hvd_rdv_msg_decode(HVD_RDV_TYPE_MAX, NULL, 0, &d, NULL), HVD_ERR_PROTOCOL);
  m.type = HVD_RDV_TYPE_MAX;
  cr_assert_eq(hvd_rdv_msg_encode(&b, &m), HVD_ERR_INVALID_PARAM);
  hvd_rdv_buf_free(&b);
}

Test(rdv_codec, reader_rejections, .timeout = 30) {
  hvd_rdv_reader_t r;
  size_t n;
  /* Truncated u32. */
  const uint8_t three[3] = {1, 2, 3};
  hvd_rdv_reader_init(&r, three, sizeof three);
  cr_assert_eq(hvd_rdv_get_u32(&r), 0);
  cr_assert(r.bad);
  cr_assert_eq(hvd_rdv_reader_done(&r), HVD_ERR_PROTOCOL);

  /* String whose length runs past the payload. */
  const uint8_t trunc[] = {10, 0, 0, 0, 'a', 'b', 'c', 'd', 'e'};
  hvd_rdv_reader_init(&r, trunc, sizeof trunc);
  cr_assert_null(hvd_rdv_get_str(&r, 100, &n));
  cr_assert_eq(n, 0);
  cr_assert_eq(hvd_rdv_reader_done(&r), HVD_ERR_PROTOCOL);
  /* Errors are sticky: a later, otherwise fine read fails too. */
  cr_assert_eq(hvd_rdv_get_u32(&r), 0);
  cr_assert(r.bad);

  /* A length that would wrap a 32-bit addition. */
  const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff, 'x'};
  hvd_rdv_reader_init(&r, huge, sizeof huge);
  cr_assert_null(hvd_rdv_get_str(&r, SIZE_MAX, &n));
  cr_assert_eq(hvd_rdv_reader_done(&r), HVD_ERR_PROTOCOL);

  /* String longer than the caller's maximum, though present in full. */
  uint8_t longs[4 + HVD_RDV_MAX_KEY + 1];
  memset(longs, 'k', sizeof longs);
  longs[0] = (uint8_t)((HVD_RDV_MAX_KEY + 1) & 0xff);
  longs[1] = (uint8_t)((HVD_RDV_MAX_KEY + 1) >> 8);
  longs[2] = longs[3] = 0;
  hvd_rdv_reader_init(&r, longs, sizeof longs);
  cr_assert_null(hvd_rdv_get_str(&r, HVD_RDV_MAX_KEY, &n));
  cr_assert_eq(hvd_rdv_reader_done(&r), HVD_ERR_PROTOCOL);
  hvd_rdv_reader_init(&r, longs, sizeof longs);
  cr_assert_not_null(hvd_rdv_get_str(&r, HVD_RDV_MAX_KEY + 1, &n));
  cr_assert_eq(hvd_rdv_reader_done(&r), HVD_OK);

  /* Trailing bytes. */
  const uint8_t trailing[] = {1, 0, 0, 0, 'a', 0};
  hvd_rdv_reader_init(&r, trailing, sizeof trailing);
  cr_assert_not_null(hvd_rdv_get_str(&r, 10, &n));
  cr_assert_eq(n, 1);
  cr_assert_eq(hvd_rdv_reader_done(&r), HVD_ERR_PROTOCOL);
}

Test(rdv_codec, oversize_frame, .timeout = 30) {
  hvd_rdv_buf_t b;
  hvd_rdv_buf_init(&b);
  uint8_t *big = calloc(HVD_RDV_MAX_PAYLOAD, 1);
  cr_assert_not_null(big);
  /* Exactly the limit is fine... */
  hvd_rdv_frame_begin(&b, HVD_RDV_ABORT);
  hvd_rdv_put_str(&b, big, HVD_RDV_MAX_PAYLOAD - 4);
  cr_assert_eq(hvd_rdv_frame_end(&b), HVD_OK);
  hvd_rdv_header_t h;
  cr_assert_eq(hvd_rdv_decode_header(b.data, &h, NULL), HVD_OK);
  cr_assert_eq(h.length, HVD_RDV_MAX_PAYLOAD);
  /* ...one byte more is refused, and the next frame in the buffer is unaffected. */
  size_t good = b.len;
  hvd_rdv_frame_begin(&b, HVD_RDV_ABORT);
  hvd_rdv_put_str(&b, big, HVD_RDV_MAX_PAYLOAD - 3);
  cr_assert_eq(hvd_rdv_frame_end(&b), HVD_ERR_PROTOCOL);
  cr_assert_eq(b.len, good, "the failed frame must be dropped from the buffer");
  hvd_rdv_frame_begin(&b, HVD_RDV_BYE);
  hvd_rdv_put_u32(&b, 1);
  cr_assert_eq(hvd_rdv_frame_end(&b), HVD_OK);
  cr_assert_eq(hvd_rdv_decode_header(b.data + good, &h, NULL), HVD_OK);
  cr_assert_eq(h.type, HVD_RDV_BYE);
  cr_assert_eq(h.length, 4);
  /* Overflowing through many small puts too. */
  hvd_rdv_frame_begin(&b, HVD_RDV_PUT);
  for (uint32_t i = 0; i < HVD_RDV_MAX_PAYLOAD / 4 + 1; i++) hvd_rdv_put_u32(&b, i);
  cr_assert_eq(hvd_rdv_frame_end(&b), HVD_ERR_PROTOCOL);
  /* A string too large for the wire is refused without copying it. */
  hvd_rdv_frame_begin(&b, HVD_RDV_PUT);
  hvd_rdv_put_str(&b, big, (size_t)UINT32_MAX + 10);
  cr_assert_eq(hvd_rdv_frame_end(&b), HVD_ERR_PROTOCOL);
  free(big);
  hvd_rdv_buf_free(&b);
}

Test(rdv_codec, token, .timeout = 30) {
  char a[HVD_RDV_TOKEN_LEN + 1], b[HVD_RDV_TOKEN_LEN + 1];
  cr_assert_eq(hvd_rdv_new_token(a), 0);
  cr_assert_eq(hvd_rdv_new_token(b), 0);
  cr_assert_eq(strlen(a), HVD_RDV_TOKEN_LEN);
  cr_assert_eq(strspn(a, "0123456789abcdef"), HVD_RDV_TOKEN_LEN);
  cr_assert_str_neq(a, b);
}

/* Parse a payload the way the server and client do for its type. */
static void parse_as(uint16_t type, const uint8_t *p, size_t n) {
  hvd_rdv_reader_t r;
  size_t len;
  hvd_rdv_reader_init(&r, p, n);
  switch (type) {
  case HVD_RDV_HELLO:
    hvd_rdv_get_str(&r, 256, &len);
    hvd_rdv_get_u32(&r);
    hvd_rdv_get_u32(&r);
    break;
  case HVD_RDV_PUT:
  case HVD_RDV_VALUE:
    hvd_rdv_get_str(&r, HVD_RDV_MAX_KEY, &len);
    hvd_rdv_get_str(&r, HVD_RDV_MAX_PAYLOAD, &len);
    break;
  case HVD_RDV_GET:
  case HVD_RDV_BARRIER:
    hvd_rdv_get_str(&r, HVD_RDV_MAX_KEY, &len);
    hvd_rdv_get_u32(&r);
    break;
  case HVD_RDV_NOT_FOUND:
  case HVD_RDV_BARRIER_OK:
  case HVD_RDV_ABORT:
  case HVD_RDV_ERROR: {
    const uint8_t *s = hvd_rdv_get_str(&r, HVD_RDV_MAX_PAYLOAD, &len);
    volatile uint8_t sink = 0;
    for (size_t i = 0; s != NULL && i < len; i++) sink ^= s[i]; /* touch every byte */
    (void)sink;
    break;
  }
  default:
    break;
  }
  hvd_status_t st = hvd_rdv_reader_done(&r);
  cr_assert(st == HVD_OK || st == HVD_ERR_PROTOCOL);
  if (st == HVD_OK) cr_assert_eq(r.left, 0);
}

Test(rdv_codec, fuzz_decoders, .timeout = 30) {
  uint64_t seed = 0x9e3779b97f4a7c15ull;
  int accepted = 0;
  for (int iter = 0; iter < 10000; iter++) {
    /* Each input is its own exact-size allocation so ASan sees any overread. */
    size_t n;
    uint8_t *in;
    if (iter % 3 == 0) { /* random bytes */
      n = HVD_RDV_HEADER_SIZE + rnd(&seed) % 64;
      in = malloc(n);
      for (size_t i = 0; i < n; i++) in[i] = (uint8_t)rnd(&seed);
    } else { /* a valid frame, mutated */
      hvd_rdv_buf_t b;
      hvd_rdv_buf_init(&b);
      uint16_t type = (uint16_t)(HVD_RDV_HELLO + rnd(&seed) % (HVD_RDV_TYPE_MAX - 1));
      hvd_rdv_frame_begin(&b, type);
      char s[40];
      size_t sl = rnd(&seed) % sizeof s;
      memset(s, 'a' + (int)(rnd(&seed) % 26), sl);
      hvd_rdv_put_str(&b, s, sl);
      hvd_rdv_put_u32(&b, (uint32_t)rnd(&seed));
      if (rnd(&seed) & 1) hvd_rdv_put_str(&b, s, sl / 2);
      cr_assert_eq(hvd_rdv_frame_end(&b), HVD_OK);
      int flips = (int)(rnd(&seed) % 4);
      for (int k = 0; k < flips; k++) b.data[rnd(&seed) % b.len] ^= (uint8_t)(1u << (rnd(&seed) % 8));
      n = b.len;
      switch (rnd(&seed) % 3) { /* truncate, extend, or keep */
      case 0:
        n = HVD_RDV_HEADER_SIZE + rnd(&seed) % (b.len - HVD_RDV_HEADER_SIZE + 1);
        break;
      case 1:
        n = b.len + rnd(&seed) % 8;
        break;
      default:
        break;
      }
      in = malloc(n);
      memcpy(in, b.data, HVD_MIN(n, b.len));
      for (size_t i = b.len; i < n; i++) in[i] = (uint8_t)rnd(&seed);
      hvd_rdv_buf_free(&b);
    }
    cr_assert_not_null(in);
    hvd_rdv_header_t h;
    hvd_err_t err;
    if (hvd_rdv_decode_header(in, &h, &err) == HVD_OK) {
      accepted++;
      cr_assert(h.length <= HVD_RDV_MAX_PAYLOAD);
      size_t avail = n - HVD_RDV_HEADER_SIZE;
      /* The payload as received: what is there, never more than the header says. */
      size_t plen = HVD_MIN(avail, (size_t)h.length);
      uint8_t *payload = malloc(plen ? plen : 1);
      memcpy(payload, in + HVD_RDV_HEADER_SIZE, plen);
      parse_as(h.type, payload, plen);
      free(payload);
    } else {
      cr_assert(strlen(err.msg) > 0);
    }
    /* Random sequences of reads over the raw bytes, with random limits. */
    hvd_rdv_reader_t r;
    hvd_rdv_reader_init(&r, in, n);
    for (int k = 0; k < 6; k++) {
      size_t len;
      if (rnd(&seed) & 1) {
        hvd_rdv_get_u32(&r);
      } else {
        const uint8_t *s = hvd_rdv_get_str(&r, rnd(&seed) % 80, &len);
        if (s != NULL) cr_assert(s >= in && s + len <= in + n);
        else cr_assert_eq(len, 0);
      }
    }
    (void)hvd_rdv_reader_done(&r);
    free(in);
  }
  cr_assert_gt(accepted, 100, "the mutations should leave many frames decodable");
}

/* ---- server + client: key-value ------------------------------------------------- */

Test(rdv_server, put_get, .timeout = 30) {
  srv_t s = start_server(2);
  hvd_rdv_client_t *c0 = connect_rank(s.port, 0, 2);
  hvd_rdv_client_t *c1 = connect_rank(s.port, 1, 2);
  hvd_err_t err = {{0}};
  void *v = NULL;
  size_t n = 0;

  cr_assert_eq(hvd_rdv_put(c0, "addr/0", "hello", 5, &err), HVD_OK, "%s", err.msg);
  cr_assert_eq(hvd_rdv_get(c1, "addr/0", &v, &n, 1000, &err), HVD_OK, "%s", err.msg);
  cr_assert_eq(n, 5);
  cr_assert_str_eq(v, "hello"); /* NUL-terminated for convenience */
  free(v);

  /* Overwrite; binary values with NULs; empty values. */
  const char bin[] = {'a', 0, 'b', 0};
  cr_assert_eq(hvd_rdv_put(c0, "addr/0", bin, sizeof bin, &err), HVD_OK);
  cr_assert_eq(hvd_rdv_get(c0, "addr/0", &v, &n, 0, &err), HVD_OK, "%s", err.msg);
  cr_assert_eq(n, sizeof bin);
  cr_assert_arr_eq(v, bin, sizeof bin);
  free(v);
  cr_assert_eq(hvd_rdv_put(c1, "empty", NULL, 0, &err), HVD_OK);
  cr_assert_eq(hvd_rdv_get(c0, "empty", &v, &n, 1000, &err), HVD_OK, "%s", err.msg);
  cr_assert_eq(n, 0);
  free(v);

  /* A large value, near the frame limit. */
  size_t big = HVD_RDV_MAX_PAYLOAD - 8 - 3;
  char *bv = malloc(big);
  for (size_t i = 0; i < big; i++) bv[i] = (char)(i * 7);
  cr_assert_eq(hvd_rdv_put(c1, "big", bv, big, &err), HVD_OK, "%s", err.msg);
  cr_assert_eq(hvd_rdv_get(c0, "big", &v, &n, 1000, &err), HVD_OK, "%s", err.msg);
  cr_assert_eq(n, big);
  cr_assert_arr_eq(v, bv, big);
  free(v);
  /* One byte more does not fit in a frame: refused locally. */
  cr_assert_eq(hvd_rdv_put(c1, "big", bv, big + 1, &err), HVD_ERR_INVALID_PARAM);
  free(bv);

  /* Many keys (grows the table). */
  for (int i = 0; i < 500; i++) {
    char k[32], val[32];
    snprintf(k, sizeof k, "k%d", i);
    snprintf(val, sizeof val, "v%d", i * 3);
    cr_assert_eq(hvd_rdv_put(c0, k, val, strlen(val), &err), HVD_OK);
  }
  for (int i = 0; i < 500; i++) {
    char k[32], val[32];
    snprintf(k, sizeof k, "k%d", i);
    snprintf(val, sizeof val, "v%d", i * 3);
    cr_assert_eq(hvd_rdv_get(c1, k, &v, &n, 1000, &err), HVD_OK, "%s", err.msg);
    cr_assert_str_eq(v, val);
    free(v);
  }

  /* Argument checks. */
  char longkey[HVD_RDV_MAX_KEY + 2];
  memset(longkey, 'k', sizeof longkey - 1);
  longkey[sizeof longkey - 1] = '\0';
  cr_assert_eq(hvd_rdv_put(c0, longkey, "x", 1, &err), HVD_ERR_INVALID_PARAM);
  cr_assert_eq(hvd_rdv_get(c0, longkey, &v, &n, 0, &err), HVD_ERR_INVALID_PARAM);
  cr_assert_eq(hvd_rdv_get(c0, "x", &v, &n, -1, &err), HVD_ERR_INVALID_PARAM);

  cr_assert_eq(hvd_rdv_bye(c0), HVD_OK);
  cr_assert_eq(hvd_rdv_bye(c1), HVD_OK);
  hvd_rdv_close(c0);
  hvd_rdv_close(c1);
  hvd_rdv_server_thread_stop(s.t);
}

typedef struct {
  int port, rank, size;
  const char *key;
  int timeout_ms;
  int delay_ms;
  hvd_status_t st;
  char value[64];
  char msg[HVD_ERR_MSG_MAX];
  uint64_t elapsed_ms;
  hvd_rdv_client_t *c; /* use this client instead of connecting */
} job_t;

static void *get_job(void *arg) {
  job_t *j = arg;
  hvd_err_t err = {{0}};
  void *v = NULL;
  size_t n = 0;
  uint64_t t0 = ms_now();
  j->st = hvd_rdv_get(j->c, j->key, &v, &n, j->timeout_ms, &err);
  j->elapsed_ms = ms_now() - t0;
  if (j->st == HVD_OK) {
    snprintf(j->value, sizeof j->value, "%s", (char *)v);
    free(v);
  }
  snprintf(j->msg, sizeof j->msg, "%s", err.msg);
  return NULL;
}

Test(rdv_server, get_waits_for_later_put, .timeout = 30) {
  srv_t s = start_server(2);
  hvd_rdv_client_t *c0 = connect_rank(s.port, 0, 2);
  hvd_rdv_client_t *c1 = connect_rank(s.port, 1, 2);
  job_t j = {.key = "late", .timeout_ms = 10000, .c = c1};
  pthread_t th;
  pthread_create(&th, NULL, get_job, &j);
  sleep_ms(300);
  hvd_err_t err = {{0}};
  cr_assert_eq(hvd_rdv_put(c0, "late", "here", 4, &err), HVD_OK, "%s", err.msg);
  pthread_join(th, NULL);
  cr_assert_eq(j.st, HVD_OK, "%s", j.msg);
  cr_assert_str_eq(j.value, "here");
  cr_assert_geq(j.elapsed_ms, 250);
  cr_assert_lt(j.elapsed_ms, 5000);
  hvd_rdv_bye(c0);
  hvd_rdv_bye(c1);
  hvd_rdv_close(c0);
  hvd_rdv_close(c1);
  hvd_rdv_server_thread_stop(s.t);
}

Test(rdv_server, get_timeout, .timeout = 30) {
  srv_t s = start_server(1);
  hvd_rdv_client_t *c = connect_rank(s.port, 0, 1);
  hvd_err_t err = {{0}};
  void *v = NULL;
  size_t n = 0;
  uint64_t t0 = ms_now();
  cr_assert_eq(hvd_rdv_get(c, "never", &v, &n, 300, &err), HVD_ERR_TIMEOUT);
  uint64_t dt = ms_now() - t0;
  cr_assert_geq(dt, 250);
  cr_assert_lt(dt, 3000);
  cr_assert(strstr(err.msg, "never") != NULL, "%s", err.msg);
  cr_assert_null(v);
  /* Zero timeout: just look. */
  t0 = ms_now();
  cr_assert_eq(hvd_rdv_get(c, "never", &v, &n, 0, &err), HVD_ERR_TIMEOUT);
  cr_assert_lt(ms_now() - t0, 1000);
  /* The connection is still fine. */
  check_kv_works(c, c, "after");
  hvd_rdv_bye(c);
  hvd_rdv_close(c);
  hvd_rdv_server_thread_stop(s.t);
}

/* Several GETs of one key parked at once, from different ranks, all answered. */
Test(rdv_server, many_waiters_one_put, .timeout = 30) {
  enum { N = 6 };
  srv_t s = start_server(N);
  hvd_rdv_client_t *c[N];
  for (int r = 0; r < N; r++) c[r] = connect_rank(s.port, r, N);
  job_t j[N];
  pthread_t th[N];
  for (int r = 1; r < N; r++) {
    j[r] = (job_t){.key = "root", .timeout_ms = 10000, .c = c[r]};
    pthread_create(&th[r], NULL, get_job, &j[r]);
  }
  sleep_ms(200);
  hvd_err_t err = {{0}};
  cr_assert_eq(hvd_rdv_put(c[0], "root", "r0", 2, &err), HVD_OK);
  for (int r = 1; r < N; r++) {
    pthread_join(th[r], NULL);
    cr_assert_eq(j[r].st, HVD_OK, "%s", j[r].msg);
    cr_assert_str_eq(j[r].value, "r0");
  }
  for (int r = 0; r < N; r++) {
    hvd_rdv_bye(c[r]);
    hvd_rdv_close(c[r]);
  }
  hvd_rdv_server_thread_stop(s.t);
}

/* ---- barrier -------------------------------------------------------------------------- */

static void *barrier_job(void *arg) {
  job_t *j = arg;
  hvd_err_t err = {{0}};
  hvd_rdv_client_t *c = j->c;
  if (c == NULL) {
    j->st = hvd_rdv_connect("127.0.0.1", j->port, TOKEN, j->rank, j->size, 5000, &c, &err);
    if (j->st != HVD_OK) goto out;
  }
  if (j->delay_ms) sleep_ms(j->delay_ms);
  uint64_t t0 = ms_now();
  j->st = hvd_rdv_barrier(c, j->key, j->timeout_ms, &err);
  j->elapsed_ms = ms_now() - t0;
  /* The same name again: a new barrier once the first one completed. */
  if (j->st == HVD_OK) j->st = hvd_rdv_barrier(c, j->key, j->timeout_ms, &err);
  if (j->c == NULL) {
    hvd_rdv_bye(c);
    hvd_rdv_close(c);
  }
out:
  snprintf(j->msg, sizeof j->msg, "%s", err.msg);
  return NULL;
}

Test(rdv_server, barrier, .timeout = 30) {
  enum { N = 5 };
  srv_t s = start_server(N);
  job_t j[N];
  pthread_t th[N];
  for (int r = 0; r < N; r++) {
    j[r] = (job_t){.port = s.port, .rank = r, .size = N, .key = "init", .timeout_ms = 10000,
                   .delay_ms = r == N - 1 ? 600 : 0};
    pthread_create(&th[r], NULL, barrier_job, &j[r]);
  }
  for (int r = 0; r < N; r++) pthread_join(th[r], NULL);
  for (int r = 0; r < N; r++) {
    cr_assert_eq(j[r].st, HVD_OK, "rank %d: %s", r, j[r].msg);
    /* Nobody got through before the late rank arrived. */
    if (r < N - 1) cr_assert_geq(j[r].elapsed_ms, 300, "rank %d left early", r);
  }
  hvd_rdv_server_thread_stop(s.t);
}

Test(rdv_server, barrier_timeout_names_missing_ranks, .timeout = 30) {
  srv_t s = start_server(4);
  hvd_rdv_client_t *c[4];
  for (int r = 0; r < 4; r++) c[r] = connect_rank(s.port, r, 4);
  job_t j[2];
  pthread_t th[2];
  for (int r = 0; r < 2; r++) {
    j[r] = (job_t){.key = "ready", .timeout_ms = 300, .c = c[r]};
    pthread_create(&th[r], NULL, barrier_job, &j[r]);
  }
  for (int r = 0; r < 2; r++) {
    pthread_join(th[r], NULL);
    cr_assert_eq(j[r].st, HVD_ERR_TIMEOUT, "rank %d: %s", r, j[r].msg);
    cr_assert(strstr(j[r].msg, "barrier ready timed out") != NULL, "%s", j[r].msg);
    cr_assert(strstr(j[r].msg, "never arrived: 2,3") != NULL, "%s", j[r].msg);
    cr_assert_lt(j[r].elapsed_ms, 3000);
  }
  /* The connections survive a failed barrier. */
  check_kv_works(c[0], c[3], "still");
  for (int r = 0; r < 4; r++) {
    hvd_rdv_bye(c[r]);
    hvd_rdv_close(c[r]);
  }
  hvd_rdv_server_thread_stop(s.t);
}

/* ---- authentication and hostile peers --------------------------------------------- */

Test(rdv_server, wrong_token, .timeout = 30) {
  logcap_t lc;
  logcap_start(&lc);
  srv_t s = start_server(2);
  hvd_rdv_client_t *c0 = connect_rank(s.port, 0, 2);
  hvd_rdv_client_t *bad = NULL;
  hvd_err_t err = {{0}};
  hvd_status_t st = hvd_rdv_connect("127.0.0.1", s.port, "ffffffffffffffffffffffffffffffff", 1,
                                    2, 5000, &bad, &err);
  cr_assert_eq(st, HVD_ERR_AUTH, "%d %s", st, err.msg);
  cr_assert_null(bad);
  cr_assert(strstr(err.msg, "wrong job token") != NULL, "%s", err.msg);
  cr_assert(logcap_has(&lc, "rendezvous: rejected connection from 127.0.0.1:", 2000), "%s",
            lc.text);
  cr_assert(logcap_has(&lc, ": wrong job token", 0), "%s", lc.text);
  /* A token of the wrong length, too. */
  st = hvd_rdv_connect("127.0.0.1", s.port, "short", 1, 2, 5000, &bad, &err);
  cr_assert_eq(st, HVD_ERR_AUTH, "%d %s", st, err.msg);
  /* The rank that failed can still come in with the right token; others unaffected. */
  hvd_rdv_client_t *c1 = connect_rank(s.port, 1, 2);
  check_kv_works(c0, c1, "k");
  hvd_rdv_bye(c0);
  hvd_rdv_bye(c1);
  hvd_rdv_close(c0);
  hvd_rdv_close(c1);
  hvd_rdv_server_thread_stop(s.t);
}

Test(rdv_server, hello_refusals, .timeout = 30) {
  srv_t s = start_server(2);
  hvd_rdv_client_t *c0 = connect_rank(s.port, 0, 2);
  hvd_rdv_client_t *x = NULL;
  hvd_err_t err = {{0}};
  /* The same rank twice. */
  cr_assert_eq(hvd_rdv_connect("127.0.0.1", s.port, TOKEN, 0, 2, 5000, &x, &err), HVD_ERR_AUTH);
  cr_assert(strstr(err.msg, "already connected") != NULL, "%s", err.msg);
  /* A different job size. */
  cr_assert_eq(hvd_rdv_connect("127.0.0.1", s.port, TOKEN, 1, 3, 5000, &x, &err), HVD_ERR_AUTH);
  cr_assert(strstr(err.msg, "size") != NULL, "%s", err.msg);
  /* Rank out of range, caught by the server (the client checks rank < size only). */
  int fd = raw_connect(s.port);
  hvd_rdv_buf_t b;
  hvd_rdv_buf_init(&b);
  hvd_rdv_frame_begin(&b, HVD_RDV_HELLO);
  hvd_rdv_put_str(&b, TOKEN, HVD_RDV_TOKEN_LEN);
  hvd_rdv_put_u32(&b, 7);
  hvd_rdv_put_u32(&b, 2);
  cr_assert_eq(hvd_rdv_frame_end(&b), HVD_OK);
  raw_send(fd, b.data, b.len);
  hvd_rdv_buf_free(&b);
  uint8_t h[HVD_RDV_HEADER_SIZE];
  cr_assert_eq(recv(fd, h, sizeof h, MSG_WAITALL), (ssize_t)sizeof h);
  hvd_rdv_header_t hdr;
  cr_assert_eq(hvd_rdv_decode_header(h, &hdr, NULL), HVD_OK);
  cr_assert_eq(hdr.type, HVD_RDV_ERROR);
  cr_assert(wait_closed(fd, 3000));
  close(fd);
  /* A refused HELLO followed at once by a good one, in the same segment: the server
   * must answer ERROR and never look at the second. */
  fd = raw_connect(s.port);
  hvd_rdv_buf_init(&b);
  hvd_rdv_frame_begin(&b, HVD_RDV_HELLO);
  hvd_rdv_put_str(&b, "ffffffffffffffffffffffffffffffff", HVD_RDV_TOKEN_LEN);
  hvd_rdv_put_u32(&b, 1);
  hvd_rdv_put_u32(&b, 2);
  cr_assert_eq(hvd_rdv_frame_end(&b), HVD_OK);
  hvd_rdv_frame_begin(&b, HVD_RDV_HELLO);
  hvd_rdv_put_str(&b, TOKEN, HVD_RDV_TOKEN_LEN);
  hvd_rdv_put_u32(&b, 1);
  hvd_rdv_put_u32(&b, 2);
  cr_assert_eq(hvd_rdv_frame_end(&b), HVD_OK);
  raw_send(fd, b.data, b.len);
  hvd_rdv_buf_free(&b);
  cr_assert_eq(recv(fd, h, sizeof h, MSG_WAITALL), (ssize_t)sizeof h);
  cr_assert_eq(hvd_rdv_decode_header(h, &hdr, NULL), HVD_OK);
  cr_assert_eq(hdr.type, HVD_RDV_ERROR);
  uint8_t rest[256];
  cr_assert_eq(recv(fd, rest, hdr.length, MSG_WAITALL), (ssize_t)hdr.length);
  cr_assert_eq(recv(fd, rest, sizeof rest, MSG_WAITALL), 0, "nothing may follow the ERROR");
  close(fd);
  /* Rank 1 with everything right still gets in. */
  hvd_rdv_client_t *c1 = connect_rank(s.port, 1, 2);
  check_kv_works(c1, c0, "k");
  hvd_rdv_bye(c0);
  hvd_rdv_bye(c1);
  hvd_rdv_close(c0);
  hvd_rdv_close(c1);
  hvd_rdv_server_thread_stop(s.t);
}

Test(rdv_server, random_bytes_close_only_that_connection, .timeout = 30) {
  logcap_t lc;
  logcap_start(&lc);
  srv_t s = start_server(2);
  hvd_rdv_client_t *c0 = connect_rank(s.port, 0, 2);
  uint64_t seed = 12345;
  for (int round = 0; round < 20; round++) {
    int fd = raw_connect(s.port);
    uint8_t junk[300];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)rnd(&seed);
    junk[0] = 0x11; /* never the magic */
    raw_send(fd, junk, sizeof junk);
    cr_assert(wait_closed(fd, 3000), "round %d: the server kept a junk connection", round);
    close(fd);
  }
  cr_assert(logcap_has(&lc, "rendezvous: closed connection from 127.0.0.1:", 2000), "%s",
            lc.text);
  cr_assert(logcap_has(&lc, ": bad frame (bad magic 0x", 0), "%s", lc.text);
  /* Correct header, wrong type before HELLO. */
  int fd = raw_connect(s.port);
  uint8_t h[HVD_RDV_HEADER_SIZE];
  hvd_rdv_encode_header(h, HVD_RDV_PUT, 0);
  raw_send(fd, h, sizeof h);
  cr_assert(wait_closed(fd, 3000));
  close(fd);
  /* The legitimate job is untouched. */
  hvd_rdv_client_t *c1 = connect_rank(s.port, 1, 2);
  check_kv_works(c0, c1, "k");
  hvd_rdv_bye(c0);
  hvd_rdv_bye(c1);
  hvd_rdv_close(c0);
  hvd_rdv_close(c1);
  hvd_rdv_server_thread_stop(s.t);
}

Test(rdv_server, oversize_lengths_close, .timeout = 30) {
  logcap_t lc;
  logcap_start(&lc);
  srv_t s = start_server(2);
  hvd_rdv_client_t *c0 = connect_rank(s.port, 0, 2);
  /* Before HELLO: over the protocol limit, and legal but too long for a HELLO. */
  const uint32_t lens[] = {HVD_RDV_MAX_PAYLOAD + 1, 0xffffffffu, 100000};
  for (size_t i = 0; i < HVD_ARRAY_SIZE(lens); i++) {
    int fd = raw_connect(s.port);
    uint8_t h[HVD_RDV_HEADER_SIZE];
    hvd_rdv_encode_header(h, HVD_RDV_HELLO, lens[i]);
    raw_send(fd, h, sizeof h);
    cr_assert(wait_closed(fd, 3000), "length %u", (unsigned)lens[i]);
    close(fd);
  }
  cr_assert(logcap_has(&lc, "exceeds the", 2000), "%s", lc.text);
  cr_assert(logcap_has(&lc, "too long", 2000), "%s", lc.text);
  /* After HELLO too. This rank then counts as gone without BYE: the thread variant
   * aborts the job, and rank 0 hears why. */
  int fd = raw_connect(s.port);
  raw_hello(fd, TOKEN, 1, 2);
  uint8_t h[HVD_RDV_HEADER_SIZE];
  hvd_rdv_encode_header(h, HVD_RDV_PUT, HVD_RDV_MAX_PAYLOAD + 1);
  raw_send(fd, h, sizeof h);
  cr_assert(wait_closed(fd, 3000));
  close(fd);
  cr_assert(logcap_has(&lc, "closed connection from rank 1", 2000), "%s", lc.text);
  struct pollfd p = {.fd = hvd_rdv_fd(c0), .events = POLLIN};
  cr_assert_eq(poll(&p, 1, 5000), 1);
  hvd_err_t err = {{0}};
  cr_assert_eq(hvd_rdv_read_event(c0, &err), HVD_ERR_ABORTED);
  cr_assert_str_eq(err.msg, "rank 1 disconnected without shutting down");
  hvd_rdv_close(c0);
  hvd_rdv_server_thread_stop(s.t);
}

Test(rdv_server, hello_timeout, .timeout = 30) {
  logcap_t lc;
  logcap_start(&lc);
  srv_t s = start_server_port(1, 300, 0);
  uint64_t t0 = ms_now();
  int quiet = raw_connect(s.port);
  int partial = raw_connect(s.port);
  uint8_t h[HVD_RDV_HEADER_SIZE];
  hvd_rdv_encode_header(h, HVD_RDV_HELLO, 44);
  raw_send(partial, h, 5); /* half a header, then silence */
  cr_assert(wait_closed(quiet, 5000));
  cr_assert(wait_closed(partial, 5000));
  cr_assert_geq(ms_now() - t0, 200);
  cr_assert(logcap_has(&lc, "no valid HELLO within 300 ms", 2000), "%s", lc.text);
  close(quiet);
  close(partial);
  /* A real rank is not subject to it once in. */
  hvd_rdv_client_t *c = connect_rank(s.port, 0, 1);
  sleep_ms(500);
  check_kv_works(c, c, "k");
  hvd_rdv_bye(c);
  hvd_rdv_close(c);
  hvd_rdv_server_thread_stop(s.t);
}

/* Ranks that vanish right after asking for something: the server's replies then hit
 * closed sockets (EPIPE, and SIGPIPE unless blocked). The in-process variant runs
 * inside a rank's program, so it must never let that signal kill the process. */
Test(rdv_server, thread_variant_survives_vanished_peers, .timeout = 30) {
  srv_t s = start_server(2);
  hvd_rdv_client_t *c0 = connect_rank(s.port, 0, 2);
  hvd_err_t err = {{0}};
  char big[60000];
  memset(big, 'x', sizeof big);
  cr_assert_eq(hvd_rdv_put(c0, "big", big, sizeof big, &err), HVD_OK);
  for (int round = 0; round < 40; round++) {
    int fd = raw_connect(s.port);
    if (raw_hello_try(fd, TOKEN, 1, 2) != HVD_RDV_HELLO_OK) { /* previous one not gone yet */
      close(fd);
      sleep_ms(5);
      continue;
    }
    hvd_rdv_buf_t b;
    hvd_rdv_buf_init(&b);
    for (int k = 0; k < 8; k++) {
      hvd_rdv_frame_begin(&b, HVD_RDV_GET);
      hvd_rdv_put_str(&b, "big", 3);
      hvd_rdv_put_u32(&b, 0);
      cr_assert_eq(hvd_rdv_frame_end(&b), HVD_OK);
    }
    hvd_rdv_frame_begin(&b, HVD_RDV_BYE); /* clean, so the job is not aborted */
    cr_assert_eq(hvd_rdv_frame_end(&b), HVD_OK);
    raw_send(fd, b.data, b.len);
    hvd_rdv_buf_free(&b);
    close(fd); /* without reading ~480 KB of replies */
  }
  sleep_ms(200);
  check_kv_works(c0, c0, "alive");
  hvd_rdv_bye(c0);
  hvd_rdv_close(c0);
  hvd_rdv_server_thread_stop(s.t);
}

/* ---- abort and liveness ------------------------------------------------------------- */

typedef struct {
  hvd_rdv_client_t *c;
  int wait_ms;
  hvd_status_t st;
  char msg[HVD_ERR_MSG_MAX];
} watch_t;

/* What a rank's liveness thread does: poll the fd, read events until one is fatal. */
static void *watch_job(void *arg) {
  watch_t *w = arg;
  uint64_t end = ms_now() + (uint64_t)w->wait_ms;
  hvd_err_t err = {{0}};
  w->st = HVD_OK;
  while (ms_now() < end) {
    struct pollfd p = {.fd = hvd_rdv_fd(w->c), .events = POLLIN};
    if (poll(&p, 1, 50) <= 0) continue;
    w->st = hvd_rdv_read_event(w->c, &err);
    if (w->st != HVD_OK) break;
  }
  snprintf(w->msg, sizeof w->msg, "%s", err.msg);
  return NULL;
}

Test(rdv_server, abort_reaches_waiters_and_read_event, .timeout = 30) {
  srv_t s = start_server(4);
  hvd_rdv_client_t *c[4];
  for (int r = 0; r < 3; r++) c[r] = connect_rank(s.port, r, 4);
  job_t get = {.key = "never", .timeout_ms = 20000, .c = c[0]};
  job_t bar = {.key = "b", .timeout_ms = 20000, .c = c[1]};
  watch_t w = {.c = c[2], .wait_ms = 10000};
  pthread_t tg, tb, tw;
  pthread_create(&tg, NULL, get_job, &get);
  pthread_create(&tb, NULL, barrier_job, &bar);
  pthread_create(&tw, NULL, watch_job, &w);
  sleep_ms(300);
  hvd_rdv_server_thread_abort(s.t, "rank 3 (host a) exited with status 3");
  hvd_rdv_server_thread_abort(s.t, "a later reason that must lose");
  pthread_join(tg, NULL);
  pthread_join(tb, NULL);
  pthread_join(tw, NULL);
  const char *why = "rank 3 (host a) exited with status 3";
  cr_assert_eq(get.st, HVD_ERR_ABORTED, "%d %s", get.st, get.msg);
  cr_assert_str_eq(get.msg, why);
  cr_assert_lt(get.elapsed_ms, 5000);
  cr_assert_eq(bar.st, HVD_ERR_ABORTED, "%d %s", bar.st, bar.msg);
  cr_assert_str_eq(bar.msg, why);
  cr_assert_eq(w.st, HVD_ERR_ABORTED, "%d %s", w.st, w.msg);
  cr_assert_str_eq(w.msg, why);

  /* Sticky: every later call on those clients says the same. */
  hvd_err_t err = {{0}};
  cr_assert_eq(hvd_rdv_put(c[0], "x", "y", 1, &err), HVD_ERR_ABORTED);
  cr_assert_str_eq(err.msg, why);
  cr_assert_eq(hvd_rdv_read_event(c[2], &err), HVD_ERR_ABORTED);
  /* A rank that connects afterwards is told at once. */
  c[3] = connect_rank(s.port, 3, 4);
  struct pollfd p = {.fd = hvd_rdv_fd(c[3]), .events = POLLIN};
  cr_assert_eq(poll(&p, 1, 5000), 1);
  cr_assert_eq(hvd_rdv_read_event(c[3], &err), HVD_ERR_ABORTED);
  cr_assert_str_eq(err.msg, why);
  /* BYE still works after an abort. */
  for (int r = 0; r < 4; r++) {
    cr_assert_eq(hvd_rdv_bye(c[r]), HVD_OK);
    hvd_rdv_close(c[r]);
  }
  hvd_rdv_server_thread_stop(s.t);
}

Test(rdv_server, disconnect_without_bye_aborts_thread_variant, .timeout = 30) {
  srv_t s = start_server(3);
  hvd_rdv_client_t *c0 = connect_rank(s.port, 0, 3);
  hvd_rdv_client_t *c1 = connect_rank(s.port, 1, 3);
  hvd_rdv_client_t *c2 = connect_rank(s.port, 2, 3);
  watch_t w = {.c = c0, .wait_ms = 10000};
  pthread_t tw;
  pthread_create(&tw, NULL, watch_job, &w);
  job_t get = {.key = "never", .timeout_ms = 20000, .c = c1};
  pthread_t tg;
  pthread_create(&tg, NULL, get_job, &get);
  sleep_ms(200);
  hvd_rdv_close(c2); /* "crash": no BYE */
  pthread_join(tw, NULL);
  pthread_join(tg, NULL);
  cr_assert_eq(w.st, HVD_ERR_ABORTED, "%d %s", w.st, w.msg);
  cr_assert_str_eq(w.msg, "rank 2 disconnected without shutting down");
  cr_assert_eq(get.st, HVD_ERR_ABORTED, "%d %s", get.st, get.msg);
  cr_assert_str_eq(get.msg, "rank 2 disconnected without shutting down");
  hvd_rdv_bye(c0);
  hvd_rdv_bye(c1);
  hvd_rdv_close(c0);
  hvd_rdv_close(c1);
  hvd_rdv_server_thread_stop(s.t);
}

Test(rdv_server, bye_then_close_is_clean, .timeout = 30) {
  srv_t s = start_server(2);
  hvd_rdv_client_t *c0 = connect_rank(s.port, 0, 2);
  hvd_rdv_client_t *c1 = connect_rank(s.port, 1, 2);
  cr_assert_eq(hvd_rdv_bye(c1), HVD_OK);
  hvd_rdv_close(c1);
  watch_t w = {.c = c0, .wait_ms = 700};
  watch_job(&w);
  cr_assert_eq(w.st, HVD_OK, "%d %s", w.st, w.msg);
  check_kv_works(c0, c0, "k");
  hvd_rdv_bye(c0);
  hvd_rdv_close(c0);
  hvd_rdv_server_thread_stop(s.t);
}

Test(rdv_server, server_gone_is_lost_connection, .timeout = 30) {
  srv_t s = start_server(1);
  hvd_rdv_client_t *c = connect_rank(s.port, 0, 1);
  hvd_rdv_server_thread_stop(s.t);
  watch_t w = {.c = c, .wait_ms = 5000};
  watch_job(&w);
  cr_assert_eq(w.st, HVD_ERR_BOOTSTRAP, "%d %s", w.st, w.msg);
  cr_assert(strstr(w.msg, "lost connection to the rendezvous server") != NULL, "%s", w.msg);
  hvd_err_t err = {{0}};
  void *v;
  size_t n;
  cr_assert_eq(hvd_rdv_get(c, "k", &v, &n, 100, &err), HVD_ERR_BOOTSTRAP);
  hvd_rdv_close(c);
}

/* ---- connecting --------------------------------------------------------------------- */

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  socklen_t len = sizeof a;
  getsockname(fd, (struct sockaddr *)&a, &len);
  close(fd);
  return ntohs(a.sin_port);
}

static void *connect_job(void *arg) {
  job_t *j = arg;
  hvd_err_t err = {{0}};
  uint64_t t0 = ms_now();
  j->st = hvd_rdv_connect("localhost", j->port, TOKEN, j->rank, j->size, j->timeout_ms, &j->c,
                          &err);
  j->elapsed_ms = ms_now() - t0;
  snprintf(j->msg, sizeof j->msg, "%s", err.msg);
  return NULL;
}

Test(rdv_client, connect_waits_for_a_late_server, .timeout = 30) {
  int port = free_port();
  job_t j = {.port = port, .rank = 0, .size = 1, .timeout_ms = 10000};
  pthread_t th;
  pthread_create(&th, NULL, connect_job, &j);
  sleep_ms(400);
  srv_t s = start_server_port(1, 0, port);
  pthread_join(th, NULL);
  cr_assert_eq(j.st, HVD_OK, "%s", j.msg);
  cr_assert_geq(j.elapsed_ms, 300);
  check_kv_works(j.c, j.c, "k");
  hvd_rdv_bye(j.c);
  hvd_rdv_close(j.c);
  hvd_rdv_server_thread_stop(s.t);
}

Test(rdv_client, connect_timeout_and_bad_arguments, .timeout = 30) {
  int port = free_port();
  job_t j = {.port = port, .rank = 0, .size = 1, .timeout_ms = 300};
  connect_job(&j);
  cr_assert_eq(j.st, HVD_ERR_TIMEOUT, "%s", j.msg);
  cr_assert_null(j.c);
  cr_assert_lt(j.elapsed_ms, 3000);
  cr_assert(strstr(j.msg, "could not connect") != NULL, "%s", j.msg);

  hvd_rdv_client_t *c = NULL;
  hvd_err_t err = {{0}};
  cr_assert_eq(hvd_rdv_connect("127.0.0.1", port, TOKEN, 2, 2, 100, &c, &err),
               HVD_ERR_INVALID_PARAM);
  cr_assert_eq(hvd_rdv_connect("127.0.0.1", 0, TOKEN, 0, 2, 100, &c, &err),
               HVD_ERR_INVALID_PARAM);
  cr_assert_eq(hvd_rdv_connect("no-such-host.invalid", port, TOKEN, 0, 1, 100, &c, &err) < 0, 1);
  cr_assert_null(c);
}

Test(rdv_client, server_start_errors, .timeout = 30) {
  hvd_rdv_server_thread_t *t = NULL;
  hvd_err_t err = {{0}};
  hvd_rdv_server_opts_t o = {.token = "short", .size = 2};
  cr_assert_eq(hvd_rdv_server_thread_start(&o, &t, NULL, &err), HVD_ERR_INVALID_PARAM);
  o.token = TOKEN;
  o.bind_addr = "not-an-address";
  cr_assert_eq(hvd_rdv_server_thread_start(&o, &t, NULL, &err), HVD_ERR_INVALID_PARAM);
  /* A port already in use. */
  srv_t s = start_server(2);
  o.bind_addr = NULL;
  o.port = s.port;
  cr_assert_eq(hvd_rdv_server_thread_start(&o, &t, NULL, &err), HVD_ERR_BOOTSTRAP);
  cr_assert(strstr(err.msg, "cannot listen") != NULL, "%s", err.msg);
  cr_assert_null(t);
  hvd_rdv_server_thread_stop(s.t);
  /* IPv6 loopback, where available. */
  o.port = 0;
  o.bind_addr = "::1";
  int port = 0;
  if (hvd_rdv_server_thread_start(&o, &t, &port, &err) == HVD_OK) {
    hvd_rdv_client_t *c = NULL;
    cr_assert_eq(hvd_rdv_connect("::1", port, TOKEN, 0, 2, 2000, &c, &err), HVD_OK, "%s",
                 err.msg);
    hvd_rdv_bye(c);
    hvd_rdv_close(c);
    hvd_rdv_server_thread_stop(t);
  }
}

/* ---- the launcher's way: server on a loop we run, callbacks, no automatic abort ---- */

typedef struct {
  uv_loop_t loop;
  uv_async_t cmd;
  hvd_rdv_server_t *srv;
  pthread_mutex_t mu;
  int want_abort, want_stop; /* under mu */
  int connected[8], disconnected[8], clean[8]; /* written on the loop thread, under mu */
  int n_connected_at_stop, seen_at_stop[4];
  int closed;
} launcher_t;

static void l_on_connected(void *arg, int rank) {
  launcher_t *l = arg;
  pthread_mutex_lock(&l->mu);
  l->connected[rank]++;
  pthread_mutex_unlock(&l->mu);
}

static void l_on_disconnected(void *arg, int rank, int clean) {
  launcher_t *l = arg;
  pthread_mutex_lock(&l->mu);
  l->disconnected[rank]++;
  l->clean[rank] = clean;
  pthread_mutex_unlock(&l->mu);
}

static void l_closed(void *arg) { ((launcher_t *)arg)->closed = 1; }

static void l_cmd(uv_async_t *a) {
  launcher_t *l = a->data;
  pthread_mutex_lock(&l->mu);
  int ab = l->want_abort, stop = l->want_stop;
  l->want_abort = 0;
  pthread_mutex_unlock(&l->mu);
  if (ab) hvd_rdv_server_abort(l->srv, "rank 1 (host b) was killed by signal 9");
  if (stop) {
    l->n_connected_at_stop = hvd_rdv_server_connected(l->srv);
    for (int r = 0; r < 4; r++) l->seen_at_stop[r] = hvd_rdv_server_rank_seen(l->srv, r);
    hvd_rdv_server_close(l->srv, l_closed, l);
    uv_close((uv_handle_t *)&l->cmd, NULL);
  }
}

static void *l_run(void *arg) {
  launcher_t *l = arg;
  /* libuv writes with write(2): a peer that already left means SIGPIPE. hvdrun ignores
   * it process-wide; here, block it in the loop's thread (the write gets EPIPE). */
  sigset_t pipe_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, NULL);
  uv_run(&l->loop, UV_RUN_DEFAULT);
  return NULL;
}

static void l_send(launcher_t *l, int abort_, int stop) {
  pthread_mutex_lock(&l->mu);
  l->want_abort |= abort_;
  l->want_stop |= stop;
  uv_async_send(&l->cmd);
  pthread_mutex_unlock(&l->mu);
}

/* Start a server the way hvdrun does: on a loop of ours, run here on a thread. */
static int launcher_start(launcher_t *l, int size, pthread_t *th) {
  memset(l, 0, sizeof *l);
  pthread_mutex_init(&l->mu, NULL);
  cr_assert_eq(uv_loop_init(&l->loop), 0);
  hvd_rdv_server_opts_t o = {.token = TOKEN, .size = size, .on_connected = l_on_connected,
                             .on_disconnected = l_on_disconnected, .arg = l};
  hvd_err_t err = {{0}};
  cr_assert_eq(hvd_rdv_server_start(&l->loop, &o, &l->srv, &err), HVD_OK, "%s", err.msg);
  cr_assert_eq(uv_async_init(&l->loop, &l->cmd, l_cmd), 0);
  l->cmd.data = l;
  pthread_create(th, NULL, l_run, l);
  return hvd_rdv_server_port(l->srv);
}

static void launcher_stop(launcher_t *l, pthread_t th) {
  l_send(l, 0, 1);
  pthread_join(th, NULL);
  cr_assert(l->closed);
  cr_assert_eq(uv_loop_close(&l->loop), 0, "the server left handles open");
}

Test(rdv_server, launcher_callbacks_and_abort, .timeout = 30) {
  static launcher_t l; /* one per test process */
  pthread_t th;
  int port = launcher_start(&l, 3, &th);

  hvd_rdv_client_t *c0 = connect_rank(port, 0, 3);
  hvd_rdv_client_t *c1 = connect_rank(port, 1, 3);
  hvd_rdv_client_t *c2 = connect_rank(port, 2, 3);
  cr_assert_eq(hvd_rdv_bye(c0), HVD_OK);
  hvd_rdv_close(c0);
  hvd_rdv_close(c1); /* without BYE: reported, but the launcher decides */
  watch_t w = {.c = c2, .wait_ms = 700};
  watch_job(&w);
  cr_assert_eq(w.st, HVD_OK, "no automatic abort expected: %s", w.msg);

  l_send(&l, 1, 0);
  w.wait_ms = 5000;
  watch_job(&w);
  cr_assert_eq(w.st, HVD_ERR_ABORTED, "%d %s", w.st, w.msg);
  cr_assert_str_eq(w.msg, "rank 1 (host b) was killed by signal 9");
  hvd_rdv_bye(c2);
  hvd_rdv_close(c2);
  sleep_ms(200);

  launcher_stop(&l, th);
  for (int r = 0; r < 3; r++) cr_assert_eq(l.connected[r], 1, "rank %d", r);
  cr_assert_eq(l.disconnected[0], 1);
  cr_assert_eq(l.clean[0], 1);
  cr_assert_eq(l.disconnected[1], 1);
  cr_assert_eq(l.clean[1], 0);
  cr_assert_eq(l.disconnected[2], 1);
  cr_assert_eq(l.clean[2], 1);
  cr_assert_eq(l.n_connected_at_stop, 3);
  cr_assert(l.seen_at_stop[0] && l.seen_at_stop[1] && l.seen_at_stop[2]);
  cr_assert(!l.seen_at_stop[3]);
  pthread_mutex_destroy(&l.mu);
}

/* Closing the server with ranks connected, GETs parked and a barrier open frees
 * everything (ASan checks) and the ranks see the connection drop. */
Test(rdv_server, close_with_work_pending, .timeout = 30) {
  srv_t s = start_server(3);
  hvd_rdv_client_t *c0 = connect_rank(s.port, 0, 3);
  hvd_rdv_client_t *c1 = connect_rank(s.port, 1, 3);
  hvd_err_t err = {{0}};
  cr_assert_eq(hvd_rdv_put(c0, "k", "v", 1, &err), HVD_OK);
  job_t get = {.key = "never", .timeout_ms = 20000, .c = c0};
  job_t bar = {.key = "b", .timeout_ms = 20000, .c = c1};
  pthread_t tg, tb;
  pthread_create(&tg, NULL, get_job, &get);
  pthread_create(&tb, NULL, barrier_job, &bar);
  int half = raw_connect(s.port); /* and a connection mid-frame */
  uint8_t h[HVD_RDV_HEADER_SIZE];
  hvd_rdv_encode_header(h, HVD_RDV_HELLO, 44);
  raw_send(half, h, sizeof h);
  sleep_ms(300);
  hvd_rdv_server_thread_stop(s.t);
  pthread_join(tg, NULL);
  pthread_join(tb, NULL);
  cr_assert_eq(get.st, HVD_ERR_BOOTSTRAP, "%d %s", get.st, get.msg);
  cr_assert_eq(bar.st, HVD_ERR_BOOTSTRAP, "%d %s", bar.st, bar.msg);
  cr_assert(wait_closed(half, 3000));
  close(half);
  hvd_rdv_close(c0);
  hvd_rdv_close(c1);
}

/* Mutated frames from unauthenticated and authenticated peers against a live server
 * (launcher style, so a rank that dies does not abort the job): the server must
 * survive all of it (ASan/UBSan watch) and still serve a real rank afterwards. */
Test(rdv_server, fuzz_live_server, .timeout = 30) {
  static launcher_t l;
  pthread_t th;
  hvd_log_set_level(HVD_LOG_ERROR); /* hundreds of expected "bad frame" warnings */
  int port = launcher_start(&l, 8, &th);
  uint64_t seed = 0x5eed;
  const char *keys[] = {"a", "b", "addr/1", ""};
  for (int iter = 0; iter < 300; iter++) {
    int fd = raw_connect(port);
    if (rnd(&seed) % 4 != 0) {
      uint32_t rank = 1 + (uint32_t)(rnd(&seed) % 7);
      if (raw_hello_try(fd, TOKEN, rank, 8) != HVD_RDV_HELLO_OK) {
        close(fd); /* still connected from an earlier round: fine */
        continue;
      }
    }
    hvd_rdv_buf_t b;
    hvd_rdv_buf_init(&b);
    int frames = 1 + (int)(rnd(&seed) % 4);
    for (int k = 0; k < frames; k++) {
      size_t start = b.len;
      uint16_t type = (uint16_t)(HVD_RDV_HELLO + rnd(&seed) % (HVD_RDV_TYPE_MAX - 1));
      const char *key = keys[rnd(&seed) % HVD_ARRAY_SIZE(keys)];
      hvd_rdv_frame_begin(&b, type);
      hvd_rdv_put_str(&b, key, strlen(key));
      if (type == HVD_RDV_PUT) hvd_rdv_put_str(&b, "value", 5);
      else if (rnd(&seed) & 1) hvd_rdv_put_u32(&b, (uint32_t)(rnd(&seed) % 200));
      cr_assert_eq(hvd_rdv_frame_end(&b), HVD_OK);
      if (rnd(&seed) % 3 == 0) /* flip a bit of this frame */
        b.data[start + rnd(&seed) % (b.len - start)] ^= (uint8_t)(1u << (rnd(&seed) % 8));
    }
    size_t n = b.len;
    if (rnd(&seed) % 4 == 0) n = rnd(&seed) % (b.len + 1); /* cut short */
    if (n > 0) send(fd, b.data, n, MSG_NOSIGNAL);
    hvd_rdv_buf_free(&b);
    if (rnd(&seed) % 8 == 0) sleep_ms(5);
    close(fd);
  }
  /* A real rank still gets in and is served. */
  hvd_rdv_client_t *c0 = connect_rank(port, 0, 8);
  check_kv_works(c0, c0, "after-fuzz");
  hvd_rdv_bye(c0);
  hvd_rdv_close(c0);
  launcher_stop(&l, th);
}
