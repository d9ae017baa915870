/*
 * Rendezvous: the job's bootstrap key-value service and liveness channel.
 *
 * Wire protocol (TCP, all integers little-endian):
 *   frame  = header payload
 *   header = magic u32 (HVD_RDV_MAGIC) | version u16 | type u16 | length u32
 *   length <= HVD_RDV_MAX_PAYLOAD, checked before anything is read or allocated.
 * A client's first frame must be HELLO; until it is accepted nothing else is.
 * Any frame that is malformed (bad magic, version, type, length, or payload layout)
 * closes that one connection with a log line; nothing else is affected.
 *
 * Payloads (strings are u32 length + bytes, no NUL on the wire):
 *   HELLO      token(str) rank(u32) size(u32)           client -> server
 *   HELLO_OK   (empty)                                  server -> client
 *   PUT        key(str) value(str)                      client -> server, no reply
 *   GET        key(str) timeout_ms(u32)                 client -> server
 *   VALUE      key(str) value(str)                      reply to GET
 *   NOT_FOUND  key(str)                                 reply to GET after timeout
 *   BARRIER    name(str) timeout_ms(u32)                client -> server; the reply
 *   BARRIER_OK name(str)                                comes when all `size` ranks sent it
 *   BYE        (empty)                                  client is shutting down cleanly
 *   ABORT      reason(str)                              server -> client at any time:
 *                                                       the job is failing; why.
 *   ERROR      reason(str)                              server -> client: a refused
 *                                                       HELLO (then close), or the reply
 *                                                       to a BARRIER that timed out
 *                                                       (connection stays open)
 *
 * The connection stays open for the life of the job: if it drops without BYE the
 * server treats the rank as dead; if the server sends ABORT or the connection drops,
 * the rank fails its pending work with that reason.
 */
#ifndef HVD_TRANSPORT_RDV_H
#define HVD_TRANSPORT_RDV_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "hvd.h"

#define HVD_RDV_MAGIC 0x52445648u /* "HVDR" */
#define HVD_RDV_VERSION 1
#define HVD_RDV_HEADER_SIZE 12
#define HVD_RDV_MAX_PAYLOAD (1u << 20)
#define HVD_RDV_MAX_KEY 256
#define HVD_RDV_TOKEN_LEN 32 /* hex characters */

typedef enum {
  HVD_RDV_HELLO = 1,
  HVD_RDV_HELLO_OK,
  HVD_RDV_PUT,
  HVD_RDV_GET,
  HVD_RDV_VALUE,
  HVD_RDV_NOT_FOUND,
  HVD_RDV_BARRIER,
  HVD_RDV_BARRIER_OK,
  HVD_RDV_BYE,
  HVD_RDV_ABORT,
  HVD_RDV_ERROR,
  HVD_RDV_TYPE_MAX
} hvd_rdv_type_t;

/* ---- frame codec (pure; rdv_proto.c) ------------------------------------------- */

typedef struct hvd_rdv_header {
  uint32_t magic;
  uint16_t version;
  uint16_t type;
  uint32_t length;
} hvd_rdv_header_t;

/* Decode and validate a 12-byte header. HVD_ERR_PROTOCOL with a reason in err when
 * magic/version/type/length is wrong. */
hvd_status_t hvd_rdv_decode_header(const uint8_t *buf, hvd_rdv_header_t *h, hvd_err_t *err);
void hvd_rdv_encode_header(uint8_t *buf, uint16_t type, uint32_t length);

/* Growable output buffer for building frames. */
typedef struct hvd_rdv_buf {
  uint8_t *data;
  size_t len, cap;
  int oom;
  size_t start; /* offset of the frame being built (set by hvd_rdv_frame_begin) */
  int overflow; /* the frame being built would exceed HVD_RDV_MAX_PAYLOAD */
} hvd_rdv_buf_t;
void hvd_rdv_buf_init(hvd_rdv_buf_t *b);
void hvd_rdv_buf_free(hvd_rdv_buf_t *b);
/* Start a frame of the given type (reserves the header); finish fills the length.
 * Frames are appended: several frames may be built back to back in one buffer. */
void hvd_rdv_frame_begin(hvd_rdv_buf_t *b, uint16_t type);
void hvd_rdv_put_u32(hvd_rdv_buf_t *b, uint32_t v);
void hvd_rdv_put_str(hvd_rdv_buf_t *b, const void *s, size_t len);
hvd_status_t hvd_rdv_frame_end(hvd_rdv_buf_t *b); /* HVD_ERR_NO_MEMORY / PROTOCOL if too long */

/* Cursor for parsing a payload; every read is bounds-checked. */
typedef struct hvd_rdv_reader {
  const uint8_t *p;
  size_t left;
  int bad;
} hvd_rdv_reader_t;
void hvd_rdv_reader_init(hvd_rdv_reader_t *r, const uint8_t *payload, size_t len);
uint32_t hvd_rdv_get_u32(hvd_rdv_reader_t *r);
/* Points into the payload (not NUL-terminated); *len = 0 and bad set on error.
 * Strings longer than max are an error. */
const uint8_t *hvd_rdv_get_str(hvd_rdv_reader_t *r, size_t max, size_t *len);
/* HVD_OK if the payload was consumed exactly and nothing was out of bounds. */
hvd_status_t hvd_rdv_reader_done(const hvd_rdv_reader_t *r);

/* ---- payloads (pure; rdv_proto.c) ----------------------------------------------- */

/* A wrong token of any length up to this is reported as a wrong token (rather than
 * a bad frame); the HELLO frame as a whole is bounded accordingly, so a peer that has
 * not authenticated can never make the server buffer more than HVD_RDV_MAX_HELLO. */
#define HVD_RDV_MAX_TOKEN_WIRE 256
#define HVD_RDV_MAX_HELLO (4 + HVD_RDV_MAX_TOKEN_WIRE + 4 + 4)

/* One frame's payload, decoded. Which fields a type uses is in the table at the top
 * of this file; the others are zero. Strings point into the decoded payload (not
 * NUL-terminated), so a message lives no longer than its payload. */
typedef struct hvd_rdv_msg {
  uint16_t type;        /* hvd_rdv_type_t */
  const uint8_t *str;   /* HELLO token, PUT/GET/VALUE/NOT_FOUND key, BARRIER and
                           BARRIER_OK name, ABORT/ERROR reason */
  size_t str_len;
  const uint8_t *value; /* PUT, VALUE */
  size_t value_len;
  uint32_t rank, size;  /* HELLO */
  uint32_t timeout_ms;  /* GET, BARRIER */
} hvd_rdv_msg_t;

/* Parse the payload of a frame of this type: every field present, within its bound
 * (token <= HVD_RDV_MAX_TOKEN_WIRE, key and barrier name <= HVD_RDV_MAX_KEY, value and
 * reason <= HVD_RDV_MAX_PAYLOAD) and nothing left over. HVD_ERR_PROTOCOL with the
 * reason in err (may be NULL) otherwise. Both the server and the client parse every
 * payload through this one function (it is what the fuzzers exercise). */
hvd_status_t hvd_rdv_msg_decode(uint16_t type, const uint8_t *payload, size_t len,
                                hvd_rdv_msg_t *m, hvd_err_t *err);
/* Append m as one complete frame to b (frame_begin ... frame_end). */
hvd_status_t hvd_rdv_msg_encode(hvd_rdv_buf_t *b, const hvd_rdv_msg_t *m);

/* ---- server (libuv; rdv_server.c) ------------------------------------------------ */

typedef struct hvd_rdv_server hvd_rdv_server_t;
struct uv_loop_s;

typedef struct hvd_rdv_server_opts {
  const char *bind_addr; /* IPv4/IPv6 literal; NULL = "127.0.0.1" */
  int port;              /* 0 = ephemeral */
  const char *token;     /* HVD_RDV_TOKEN_LEN hex chars */
  int size;              /* ranks in the job */
  /* Optional notifications, called on the loop thread. */
  void (*on_connected)(void *arg, int rank);
  /* A rank's connection ended. clean = it said BYE first. */
  void (*on_disconnected)(void *arg, int rank, int clean);
  void *arg;
  /* Close a connection that has not completed HELLO within this time; 0 = 10000. */
  int hello_timeout_ms;
  /* When a rank's connection ends without BYE, broadcast
   * ABORT("rank N disconnected without shutting down") after on_disconnected.
   * Off for a launcher (it knows the exit status and aborts with a better reason);
   * hvd_rdv_server_thread_start always turns it on (nobody else would notice). */
  int abort_on_unclean_disconnect;
} hvd_rdv_server_opts_t;

/* Start listening on loop. *out valid until hvd_rdv_server_close's callback.
 * Every function on a server runs on the loop's thread; callbacks run there too and
 * may call hvd_rdv_server_abort / hvd_rdv_server_close. opts (and its strings) are
 * copied. On failure nothing is left listening, but memory of a handle that was
 * already initialised is released only when the loop runs once more.
 * SIGPIPE: libuv writes with write(2), so a reply to a rank that just died raises
 * SIGPIPE. The process must ignore it (hvdrun: signal(SIGPIPE, SIG_IGN)) or block it
 * in the loop's thread; the write then fails with EPIPE and only that connection
 * closes. (The thread variant below blocks every signal in its thread.) */
hvd_status_t hvd_rdv_server_start(struct uv_loop_s *loop, const hvd_rdv_server_opts_t *opts,
                                  hvd_rdv_server_t **out, hvd_err_t *err);
int hvd_rdv_server_port(const hvd_rdv_server_t *s);
/* Number of distinct ranks that have completed HELLO. */
int hvd_rdv_server_connected(const hvd_rdv_server_t *s);
/* 1 if rank has completed HELLO at some point. */
int hvd_rdv_server_rank_seen(const hvd_rdv_server_t *s, int rank);
/* Send ABORT(reason) to every connected rank (first reason wins; later calls no-op). */
void hvd_rdv_server_abort(hvd_rdv_server_t *s, const char *reason);
/* Close the listener and all connections (no on_disconnected calls from here on);
 * frees s, then calls done(arg) if non-NULL, from a later loop iteration. */
void hvd_rdv_server_close(hvd_rdv_server_t *s, void (*done)(void *arg), void *arg);

/* In-process server on its own thread and loop (rank 0 when no launcher runs).
 * opts->abort_on_unclean_disconnect is forced on; the callbacks in opts run on the
 * server thread. *port (if non-NULL) receives the bound port. */
typedef struct hvd_rdv_server_thread hvd_rdv_server_thread_t;
hvd_status_t hvd_rdv_server_thread_start(const hvd_rdv_server_opts_t *opts,
                                         hvd_rdv_server_thread_t **out, int *port,
                                         hvd_err_t *err);
/* hvd_rdv_server_abort from any thread (e.g. rank 0's runtime failing the job).
 * Asynchronous: the ABORT frames go out from the server thread soon after. */
void hvd_rdv_server_thread_abort(hvd_rdv_server_thread_t *t, const char *reason);
/* Close the server, join its thread, free t. Blocks briefly. t may be NULL.
 * Not from inside the server's callbacks (they run on the thread it joins). */
void hvd_rdv_server_thread_stop(hvd_rdv_server_thread_t *t);

/* ---- client (blocking sockets; rdv_client.c) ------------------------------------ */

/* A client is safe to use from several threads (calls are serialised by a lock
 * inside, so a liveness thread's hvd_rdv_read_event waits while another thread's
 * GET/BARRIER is in progress). Every wait is bounded. Once the server has sent ABORT
 * or the connection is lost, every later call (hvd_rdv_bye excepted) fails at once
 * with that same status and message. */
typedef struct hvd_rdv_client hvd_rdv_client_t;

/* Connect (retrying until timeout_ms: the server may not be up yet) and say HELLO.
 * host is a name or address literal. HVD_ERR_AUTH if the server refuses the HELLO
 * (wrong token, rank already connected, size mismatch: the reason is in err);
 * HVD_ERR_TIMEOUT if no connection could be made in time; HVD_ERR_BOOTSTRAP else. */
hvd_status_t hvd_rdv_connect(const char *host, int port, const char *token, int rank,
                             int size, int timeout_ms, hvd_rdv_client_t **out,
                             hvd_err_t *err);
hvd_status_t hvd_rdv_put(hvd_rdv_client_t *c, const char *key, const void *val,
                         size_t len, hvd_err_t *err);
/* Wait up to timeout_ms (0 = just look) for key to exist. *val is malloc'd (caller
 * frees) and NUL-terminated for convenience (the NUL is not counted in *len).
 * HVD_ERR_TIMEOUT if it never appeared; HVD_ERR_ABORTED with the reason if the
 * server aborted the job meanwhile. */
hvd_status_t hvd_rdv_get(hvd_rdv_client_t *c, const char *key, void **val, size_t *len,
                         int timeout_ms, hvd_err_t *err);
/* Returns once all ranks entered the barrier of this name (or timeout/abort).
 * HVD_ERR_TIMEOUT names the ranks that never arrived. A name may be reused once the
 * previous barrier of that name has completed. */
hvd_status_t hvd_rdv_barrier(hvd_rdv_client_t *c, const char *name, int timeout_ms,
                             hvd_err_t *err);
/* The socket, for a liveness thread to poll. */
int hvd_rdv_fd(const hvd_rdv_client_t *c);
/* Read one server-initiated frame (after poll said readable). Returns HVD_ERR_ABORTED
 * with the reason in err for ABORT, HVD_ERR_BOOTSTRAP for EOF ("lost connection to
 * the rendezvous server"), HVD_ERR_PROTOCOL for a bad frame. HVD_OK when there was
 * nothing to report (no data after all, or a late reply to a request that had
 * already timed out, which is discarded). Does not block for long: only to finish a
 * frame whose first bytes have arrived. */
hvd_status_t hvd_rdv_read_event(hvd_rdv_client_t *c, hvd_err_t *err);
/* Tell the server this rank is shutting down cleanly (also after an ABORT). */
hvd_status_t hvd_rdv_bye(hvd_rdv_client_t *c);
/* Close the socket and free c (NULL is a no-op). Without hvd_rdv_bye first, the
 * server treats this rank as having died. */
void hvd_rdv_close(hvd_rdv_client_t *c);

/* Fresh random job token: HVD_RDV_TOKEN_LEN hex chars + NUL. 0 on success. */
int hvd_rdv_new_token(char out[HVD_RDV_TOKEN_LEN + 1]);

#endif
