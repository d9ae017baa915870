/*
 * Writes the fuzzers' seed corpus with the real encoders:
 *   gen-corpus DIR     -> DIR/<harness>/<seed>
 * fuzz/run.sh --regen-corpus runs it into fuzz/corpus/. Seeds are valid encodings of
 * every message shape plus a few edge cases (limits, truncations, bad headers); the
 * fuzzers mutate from there. Inputs that once crashed a harness are kept beside them
 * under names starting with "crash-" and are never regenerated.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "runtime/message.h"
#include "transport/rdv.h"

#define FUZZ_TOKEN "0123456789abcdef0123456789abcdef" /* fuzz_rdv_server.c's */

static const char *outdir;

static void write_seed(const char *harness, const char *name, const void *p, size_t n) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", outdir, harness);
  if (mkdir(path, 0755) != 0 && errno != EEXIST) {
    perror(path);
    exit(1);
  }
  snprintf(path, sizeof path, "%s/%s/%s", outdir, harness, name);
  FILE *f = fopen(path, "wb");
  if (f == NULL || (n > 0 && fwrite(p, 1, n, f) != n) || fclose(f) != 0) {
    perror(path);
    exit(1);
  }
}

/* ---- rendezvous frames ------------------------------------------------------------ */

static void msg(hvd_rdv_buf_t *b, uint16_t type, const char *str, const char *value,
                uint32_t rank, uint32_t size, uint32_t timeout) {
  hvd_rdv_msg_t m = {.type = type, .rank = rank, .size = size, .timeout_ms = timeout};
  if (str != NULL) {
    m.str = (const uint8_t *)str;
    m.str_len = strlen(str);
  }
  if (value != NULL) {
    m.value = (const uint8_t *)value;
    m.value_len = strlen(value);
  }
  if (hvd_rdv_msg_encode(b, &m) != HVD_OK) {
    fprintf(stderr, "gen-corpus: encoding a type %u frame failed\n", (unsigned)type);
    exit(1);
  }
}

static void seed_buf(const char *harness, const char *name, hvd_rdv_buf_t *b) {
  write_seed(harness, name, b->data, b->len);
  hvd_rdv_buf_free(b);
}

static void rdv_frames(void) {
  static const char *h = "fuzz_rdv_frame";
  hvd_rdv_buf_t b;
  char big[HVD_RDV_MAX_TOKEN_WIRE + 1];

  /* One of every type, each in its own file, then all of them in one stream. */
  hvd_rdv_buf_init(&b); msg(&b, HVD_RDV_HELLO, FUZZ_TOKEN, NULL, 1, 4, 0); seed_buf(h, "hello", &b);
  hvd_rdv_buf_init(&b); msg(&b, HVD_RDV_HELLO_OK, NULL, NULL, 0, 0, 0); seed_buf(h, "hello_ok", &b);
  hvd_rdv_buf_init(&b); msg(&b, HVD_RDV_PUT, "addr.3", "tcp;ofi_rxm:127.0.0.1", 0, 0, 0); seed_buf(h, "put", &b);
  hvd_rdv_buf_init(&b); msg(&b, HVD_RDV_GET, "addr.3", NULL, 0, 0, 30000); seed_buf(h, "get", &b);
  hvd_rdv_buf_init(&b); msg(&b, HVD_RDV_VALUE, "addr.3", "tcp;ofi_rxm:127.0.0.1", 0, 0, 0); seed_buf(h, "value", &b);
  hvd_rdv_buf_init(&b); msg(&b, HVD_RDV_NOT_FOUND, "addr.9", NULL, 0, 0, 0); seed_buf(h, "not_found", &b);
  hvd_rdv_buf_init(&b); msg(&b, HVD_RDV_BARRIER, "init", NULL, 0, 0, 60000); seed_buf(h, "barrier", &b);
  hvd_rdv_buf_init(&b); msg(&b, HVD_RDV_BARRIER_OK, "init", NULL, 0, 0, 0); seed_buf(h, "barrier_ok", &b);
  hvd_rdv_buf_init(&b); msg(&b, HVD_RDV_BYE, NULL, NULL, 0, 0, 0); seed_buf(h, "bye", &b);
  hvd_rdv_buf_init(&b); msg(&b, HVD_RDV_ABORT, "rank 2 exited with status 3", NULL, 0, 0, 0); seed_buf(h, "abort", &b);
  hvd_rdv_buf_init(&b); msg(&b, HVD_RDV_ERROR, "wrong job token", NULL, 0, 0, 0); seed_buf(h, "error", &b);

  hvd_rdv_buf_init(&b);
  msg(&b, HVD_RDV_HELLO, FUZZ_TOKEN, NULL, 0, 2, 0);
  msg(&b, HVD_RDV_HELLO_OK, NULL, NULL, 0, 0, 0);
  msg(&b, HVD_RDV_PUT, "k", "v", 0, 0, 0);
  msg(&b, HVD_RDV_GET, "k", NULL, 0, 0, 0);
  msg(&b, HVD_RDV_VALUE, "k", "v", 0, 0, 0);
  msg(&b, HVD_RDV_NOT_FOUND, "k", NULL, 0, 0, 0);
  msg(&b, HVD_RDV_BARRIER, "b", NULL, 0, 0, 5);
  msg(&b, HVD_RDV_BARRIER_OK, "b", NULL, 0, 0, 0);
  msg(&b, HVD_RDV_ABORT, "x", NULL, 0, 0, 0);
  msg(&b, HVD_RDV_ERROR, "", NULL, 0, 0, 0);
  msg(&b, HVD_RDV_BYE, NULL, NULL, 0, 0, 0);
  seed_buf(h, "all_types_stream", &b);

  /* Limits: the longest token, key and name accepted. */
  memset(big, 'k', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  hvd_rdv_buf_init(&b); msg(&b, HVD_RDV_HELLO, big, NULL, 0xffffffffu, 0xffffffffu, 0); seed_buf(h, "hello_longest_token", &b);
  big[HVD_RDV_MAX_KEY] = '\0';
  hvd_rdv_buf_init(&b); msg(&b, HVD_RDV_PUT, big, "", 0, 0, 0); seed_buf(h, "put_longest_key", &b);
  hvd_rdv_buf_init(&b); msg(&b, HVD_RDV_BARRIER, big, NULL, 0, 0, 0xffffffffu); seed_buf(h, "barrier_longest_name", &b);
  hvd_rdv_buf_init(&b); msg(&b, HVD_RDV_PUT, "", "", 0, 0, 0); seed_buf(h, "put_empty", &b);

  /* Broken frames. */
  uint8_t raw[64];
  hvd_rdv_encode_header(raw, HVD_RDV_GET, 0x00200000u); /* over the payload limit */
  write_seed(h, "edge_oversize_length", raw, HVD_RDV_HEADER_SIZE);
  hvd_rdv_encode_header(raw, HVD_RDV_TYPE_MAX, 0);
  write_seed(h, "edge_bad_type", raw, HVD_RDV_HEADER_SIZE);
  hvd_rdv_encode_header(raw, HVD_RDV_PUT, 8); /* a string longer than its frame */
  memcpy(raw + 12, "\xff\xff\xff\x7f\x00\x00\x00\x00", 8);
  write_seed(h, "edge_string_past_frame", raw, 20);
  hvd_rdv_encode_header(raw, HVD_RDV_BYE, 1); /* BYE with a byte of payload */
  raw[12] = 0;
  write_seed(h, "edge_bye_trailing_byte", raw, 13);
  hvd_rdv_encode_header(raw, HVD_RDV_HELLO, 40); /* header promising more than follows */
  write_seed(h, "edge_truncated_payload", raw, 20);
  write_seed(h, "edge_truncated_header", raw, 7);
}

/* What the server harness sends: two clients' streams, A then B, after a 3-byte
 * prefix (piece size, A's length little-endian). */
static void session(const char *name, uint8_t piece, hvd_rdv_buf_t *a, hvd_rdv_buf_t *b) {
  size_t na = a != NULL ? a->len : 0, nb = b != NULL ? b->len : 0;
  uint8_t *p = malloc(3 + na + nb);
  if (p == NULL) exit(1);
  p[0] = piece;
  p[1] = (uint8_t)na;
  p[2] = (uint8_t)(na >> 8);
  if (na) memcpy(p + 3, a->data, na);
  if (nb) memcpy(p + 3 + na, b->data, nb);
  write_seed("fuzz_rdv_server", name, p, 3 + na + nb);
  free(p);
  if (a != NULL) hvd_rdv_buf_free(a);
  if (b != NULL) hvd_rdv_buf_free(b);
}

static void one(const char *name, uint16_t type, const char *str, uint32_t rank, uint32_t size) {
  hvd_rdv_buf_t b;
  hvd_rdv_buf_init(&b);
  msg(&b, type, str, type == HVD_RDV_PUT || type == HVD_RDV_VALUE ? "v" : NULL, rank, size, 0);
  session(name, 0, &b, NULL);
}

static void rdv_sessions(void) {
  hvd_rdv_buf_t a, b;

  /* Both ranks: keys, a GET answered by the other's PUT, a barrier, BYE. */
  hvd_rdv_buf_init(&a);
  msg(&a, HVD_RDV_HELLO, FUZZ_TOKEN, NULL, 0, 2, 0);
  msg(&a, HVD_RDV_PUT, "addr.0", "tcp;ofi_rxm:127.0.0.1:4242", 0, 0, 0);
  msg(&a, HVD_RDV_GET, "addr.1", NULL, 0, 0, 2000);
  msg(&a, HVD_RDV_BARRIER, "init", NULL, 0, 0, 2000);
  msg(&a, HVD_RDV_GET, "addr.0", NULL, 0, 0, 0);
  msg(&a, HVD_RDV_BYE, NULL, NULL, 0, 0, 0);
  hvd_rdv_buf_init(&b);
  msg(&b, HVD_RDV_HELLO, FUZZ_TOKEN, NULL, 1, 2, 0);
  msg(&b, HVD_RDV_PUT, "addr.1", "tcp;ofi_rxm:127.0.0.1:4343", 0, 0, 0);
  msg(&b, HVD_RDV_BARRIER, "init", NULL, 0, 0, 2000);
  msg(&b, HVD_RDV_GET, "missing", NULL, 0, 0, 0);
  msg(&b, HVD_RDV_GET, "missing", NULL, 0, 0, 3);
  msg(&b, HVD_RDV_BYE, NULL, NULL, 0, 0, 0);
  session("two_ranks", 0, &a, &b);

  /* The same, written a few bytes at a time: headers split across reads. */
  hvd_rdv_buf_init(&a);
  msg(&a, HVD_RDV_HELLO, FUZZ_TOKEN, NULL, 0, 2, 0);
  msg(&a, HVD_RDV_BARRIER, "b", NULL, 0, 0, 1);
  msg(&a, HVD_RDV_PUT, "k", "", 0, 0, 0);
  msg(&a, HVD_RDV_PUT, "k", "again", 0, 0, 0);
  hvd_rdv_buf_init(&b);
  msg(&b, HVD_RDV_HELLO, FUZZ_TOKEN, NULL, 1, 2, 0);
  msg(&b, HVD_RDV_GET, "k", NULL, 0, 0, 1000);
  session("two_ranks_in_pieces_no_bye", 5, &a, &b);

  /* One rank taken twice. */
  hvd_rdv_buf_init(&a);
  msg(&a, HVD_RDV_HELLO, FUZZ_TOKEN, NULL, 0, 2, 0);
  msg(&a, HVD_RDV_BARRIER, "x", NULL, 0, 0, 50);
  hvd_rdv_buf_init(&b);
  msg(&b, HVD_RDV_HELLO, FUZZ_TOKEN, NULL, 0, 2, 0);
  session("rank_taken_twice", 0, &a, &b);

  one("wrong_token", HVD_RDV_HELLO, "fedcba9876543210fedcba9876543210", 0, 2);
  one("short_token", HVD_RDV_HELLO, "short", 0, 2);
  one("size_mismatch", HVD_RDV_HELLO, FUZZ_TOKEN, 0, 3);
  one("rank_out_of_range", HVD_RDV_HELLO, FUZZ_TOKEN, 7, 2);
  one("put_before_hello", HVD_RDV_PUT, "k", 0, 0);
  hvd_rdv_buf_init(&a);
  msg(&a, HVD_RDV_HELLO, FUZZ_TOKEN, NULL, 0, 2, 0);
  msg(&a, HVD_RDV_VALUE, "k", "v", 0, 0, 0); /* a server-to-client type */
  session("server_type_from_client", 0, &a, NULL);

  uint8_t raw[32];
  hvd_rdv_encode_header(raw, HVD_RDV_HELLO, HVD_RDV_MAX_HELLO + 1);
  {
    uint8_t in[3 + 20] = {0, 12, 0};
    memcpy(in + 3, raw, 12);
    write_seed("fuzz_rdv_server", "hello_too_long", in, 15);
    hvd_rdv_encode_header(raw, HVD_RDV_HELLO, 40);
    in[1] = 20;
    memcpy(in + 3, raw, 12);
    memset(in + 15, 'x', 8);
    write_seed("fuzz_rdv_server", "hello_truncated", in, 23);
  }
  write_seed("fuzz_rdv_server", "silent", (const uint8_t[]){0, 0, 0}, 3);
  {
    static const char http[] = "\0\x1b\0GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    write_seed("fuzz_rdv_server", "http_request", http, sizeof http - 1);
  }
}

/* ---- negotiation messages ----------------------------------------------------------- */

static void seed_wbuf(const char *harness, const char *name, int nmembers, hvd_wbuf_t *b) {
  uint8_t *p = malloc(b->len + 1);
  if (p == NULL) exit(1);
  p[0] = (uint8_t)(nmembers - 1); /* the harnesses read 1 + byte % 64 */
  memcpy(p + 1, b->data, b->len);
  write_seed(harness, name, p, b->len + 1);
  free(p);
  hvd_wbuf_free(b);
}

static hvd_request_t req(uint8_t type, int32_t rank, uint64_t count, const char *name) {
  hvd_request_t q = {.type = type, .dtype = HVD_FLOAT32, .op = HVD_SUM, .rank = rank,
                     .count = count, .prescale = 1.0, .postscale = 1.0, .name = (char *)name};
  return q;
}

static void request_lists(void) {
  static const char *h = "fuzz_request_list";
  hvd_wbuf_t b = {0};
  hvd_request_list_t l = {0};

  hvd_request_list_encode(&l, &b);
  seed_wbuf(h, "empty", 2, &b);

  hvd_request_t one = req(HVD_MSG_ALLREDUCE, 1, 1024, "grad/layer1/weights");
  one.postscale = 0.5;
  l.n = 1;
  l.reqs = &one;
  l.ack = 7;
  hvd_request_list_encode(&l, &b);
  seed_wbuf(h, "allreduce", 2, &b);

  uint64_t bits[2] = {0x5, 0x8000000000000000ull};
  hvd_request_t many[6] = {
      req(HVD_MSG_ALLGATHER, 2, 10, "gather"), req(HVD_MSG_BROADCAST, 2, 3, "bcast"),
      req(HVD_MSG_REDUCESCATTER, 2, 99, "rs"), req(HVD_MSG_BARRIER, 2, 0, ""),
      req(HVD_MSG_JOIN, 2, 0, "join"),        req(HVD_MSG_ALLREDUCE, 2, 5, "grouped")};
  many[1].root = 1;
  many[1].dtype = HVD_INT64;
  many[2].op = HVD_MAX;
  many[5].group = 2;
  many[5].dtype = HVD_BFLOAT16;
  l = (hvd_request_list_t){.flags = 0, .set = 3, .ack = 12, .nwords = 2, .bits = bits,
                           .n = 6, .reqs = many};
  hvd_request_list_encode(&l, &b);
  seed_wbuf(h, "every_type_with_cache_bits", 4, &b);

  uint64_t splits[4] = {1, 0, 7, 1u << 20};
  hvd_request_t a2a = req(HVD_MSG_ALLTOALL, 3, 1 + 7 + (1u << 20), "a2a");
  a2a.nsplits = 4;
  a2a.splits = splits;
  uint64_t members[3] = {0, 1, 3};
  hvd_request_t ps = req(HVD_MSG_PROCESS_SET, 0, 0, "process_set");
  ps.nsplits = 3;
  ps.splits = members;
  hvd_request_t two[2] = {a2a, ps};
  l = (hvd_request_list_t){.set = 0, .n = 2, .reqs = two};
  hvd_request_list_encode(&l, &b);
  seed_wbuf(h, "alltoall_and_process_set", 4, &b);

  char longest[HVD_NAME_MAX + 1];
  memset(longest, 'n', HVD_NAME_MAX);
  longest[HVD_NAME_MAX] = '\0';
  one = req(HVD_MSG_ALLREDUCE, 0, 1, longest);
  l = (hvd_request_list_t){.flags = HVD_REQ_FLAG_SHUTDOWN, .n = 1, .reqs = &one};
  hvd_request_list_encode(&l, &b);
  seed_wbuf(h, "longest_name_shutdown", 1, &b);
}

static void response_lists(void) {
  static const char *h = "fuzz_response_list";
  hvd_wbuf_t b = {0};
  hvd_response_list_t l = {0};

  hvd_response_list_encode(&l, &b);
  seed_wbuf(h, "empty", 2, &b);

  char *names[3] = {"a", "bb", "ccc"};
  int32_t ids[3] = {-1, 0, 5};
  uint64_t counts[16] = {4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19};
  hvd_response_t fused = {.type = HVD_MSG_ALLREDUCE, .dtype = HVD_FLOAT32, .op = HVD_AVERAGE,
                          .prescale = 1.0, .postscale = 0.25, .ntensors = 3, .names = names,
                          .cache_ids = ids, .ncounts = 3, .counts = counts, .last_joined = -1};
  int32_t evict[2] = {3, 4};
  l = (hvd_response_list_t){.set = 0, .seq = 1, .n = 1, .resps = &fused, .nevict = 2,
                            .evict = evict};
  hvd_response_list_encode(&l, &b);
  seed_wbuf(h, "fused_allreduce_evictions", 2, &b);

  hvd_response_t r[6];
  memset(r, 0, sizeof r);
  for (int i = 0; i < 6; i++) {
    r[i].names = names;
    r[i].cache_ids = ids;
    r[i].counts = counts;
    r[i].ntensors = 1;
    r[i].last_joined = -1;
    r[i].dtype = HVD_INT32;
  }
  r[0].type = HVD_MSG_ALLGATHER; r[0].ncounts = 4;                 /* 1 tensor x 4 members */
  r[1].type = HVD_MSG_ALLTOALL; r[1].ncounts = 16;                 /* 4 x 4 */
  r[2].type = HVD_MSG_BROADCAST; r[2].ncounts = 1; r[2].root = 3;
  r[3].type = HVD_MSG_REDUCESCATTER; r[3].ncounts = 1; r[3].op = HVD_PRODUCT;
  r[4].type = HVD_MSG_BARRIER;
  r[5].type = HVD_MSG_JOIN; r[5].ntensors = 0; r[5].last_joined = 2;
  l = (hvd_response_list_t){.set = 1, .seq = 42, .n = 6, .resps = r};
  hvd_response_list_encode(&l, &b);
  seed_wbuf(h, "every_type", 4, &b);

  uint64_t members[2] = {1, 2};
  hvd_response_t ps = {.type = HVD_MSG_PROCESS_SET, .ntensors = 1, .names = names,
                       .cache_ids = ids, .ncounts = 2, .counts = members, .last_joined = -1};
  l = (hvd_response_list_t){.set = 0, .seq = 3, .n = 1, .resps = &ps};
  hvd_response_list_encode(&l, &b);
  seed_wbuf(h, "process_set", 3, &b);

  hvd_response_t err = {.type = HVD_MSG_ERROR, .ntensors = 2, .names = names, .cache_ids = ids,
                        .last_joined = -1, .status = HVD_ERR_INVALID_PARAM,
                        .error = "mismatched dtypes for tensor a: rank 0 float32, rank 1 int64"};
  l = (hvd_response_list_t){.flags = HVD_RESP_FLAG_SHUTDOWN, .set = 2, .seq = 9, .n = 1,
                            .resps = &err};
  hvd_response_list_encode(&l, &b);
  seed_wbuf(h, "error_shutdown", 3, &b);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: gen-corpus DIR\n");
    return 2;
  }
  outdir = argv[1];
  if (mkdir(outdir, 0755) != 0 && errno != EEXIST) {
    perror(outdir);
    return 1;
  }
  rdv_frames();
  rdv_sessions();
  request_lists();
  response_lists();
  return 0;
}
