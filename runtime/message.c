/*
 * Wire codec for negotiation messages (see message.h). Writers append to a growable
 * buffer; readers walk a cursor that checks every length against the bytes left
 * before allocating anything, so a hostile or corrupt message costs at most its own
 * size in memory and fails with HVD_ERR_PROTOCOL.
 */
#include "runtime/message.h"

#include <stdlib.h>
#include <string.h>

#define REQ_MAGIC 0x51525648u  /* "HVRQ" */
#define RESP_MAGIC 0x53525648u /* "HVRS" */

static const char *const type_names[HVD_MSG_TYPE_COUNT] = {
    "ALLREDUCE", "ALLGATHER", "BROADCAST", "REDUCESCATTER", "ALLTOALL", "BARRIER", "JOIN", "PROCESS_SET", "ERROR"};

int hvd_msg_peek_set(const uint8_t *p, size_t len, uint32_t *set) {
  if (len < 12) return -1;
  memcpy(set, p + 8, 4); /* magic, flags, set */
  return 0;
}

const char *hvd_msg_type_name(hvd_msg_type_t t) {
  return (unsigned)t < HVD_MSG_TYPE_COUNT ? type_names[t] : "UNKNOWN";
}

/* ---- writer ------------------------------------------------------------------------ */

void hvd_wbuf_free(hvd_wbuf_t *b) {
  free(b->data);
  memset(b, 0, sizeof *b);
}

static void put(hvd_wbuf_t *b, const void *p, size_t n) {
  if (b->oom) return;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n) cap *= 2;
    uint8_t *d = realloc(b->data, cap);
    if (d == NULL) {
      b->oom = 1;
      return;
    }
    b->data = d;
    b->cap = cap;
  }
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
}
/* x86-64 and every target we build for is little-endian; memcpy keeps it simple. */
static void put_u8(hvd_wbuf_t *b, uint8_t v) { put(b, &v, 1); }
static void put_u32(hvd_wbuf_t *b, uint32_t v) { put(b, &v, 4); }
static void put_i32(hvd_wbuf_t *b, int32_t v) { put(b, &v, 4); }
static void put_u64(hvd_wbuf_t *b, uint64_t v) { put(b, &v, 8); }
static void put_f64(hvd_wbuf_t *b, double v) { put(b, &v, 8); }
static void put_str(hvd_wbuf_t *b, const char *s) {
  uint32_t n = s ? (uint32_t)strlen(s) : 0;
  put_u32(b, n);
  put(b, s, n);
}

/* ---- reader ------------------------------------------------------------------------ */

typedef struct rd {
  const uint8_t *p;
  size_t left;
  int bad;
  hvd_err_t *err;
} rd_t;

static int take(rd_t *r, void *out, size_t n, const char *what) {
  if (r->bad) return -1;
  if (n > r->left) {
    r->bad = 1;
    hvd_err_set(r->err, "truncated message reading %s", what);
    return -1;
  }
  memcpy(out, r->p, n);
  r->p += n;
  r->left -= n;
  return 0;
}
static uint8_t get_u8(rd_t *r, const char *w) { uint8_t v = 0; take(r, &v, 1, w); return v; }
static uint32_t get_u32(rd_t *r, const char *w) { uint32_t v = 0; take(r, &v, 4, w); return v; }
static int32_t get_i32(rd_t *r, const char *w) { int32_t v = 0; take(r, &v, 4, w); return v; }
static uint64_t get_u64(rd_t *r, const char *w) { uint64_t v = 0; take(r, &v, 8, w); return v; }
static double get_f64(rd_t *r, const char *w) { double v = 0; take(r, &v, 8, w); return v; }

static void fail(rd_t *r, const char *fmt, const char *what, unsigned long long v) {
  if (!r->bad) hvd_err_set(r->err, fmt, what, v);
  r->bad = 1;
}

/* Allocate an array of n elements of size s only if that many bytes could follow. */
static void *get_array(rd_t *r, uint64_t n, size_t s, const char *what) {
  if (r->bad) return NULL;
  if (n > r->left / s) {
    fail(r, "%s: %llu elements do not fit in the message", what, (unsigned long long)n);
    return NULL;
  }
  if (n == 0) return NULL;
  void *a = malloc((size_t)n * s);
  if (a == NULL) {
    fail(r, "%s: out of memory for %llu elements", what, (unsigned long long)n);
    return NULL;
  }
  take(r, a, (size_t)n * s, what);
  return a;
}

static char *get_str(rd_t *r, size_t max, int allow_null, const char *what) {
  uint32_t n = get_u32(r, what);
  if (r->bad) return NULL;
  if (n > max || n > r->left) {
    fail(r, "%s: string of %llu bytes is too long", what, n);
    return NULL;
  }
  if (n == 0 && allow_null) return NULL;
  char *s = malloc((size_t)n + 1);
  if (s == NULL) {
    fail(r, "%s: out of memory (%llu)", what, n);
    return NULL;
  }
  take(r, s, n, what);
  s[n] = '\0';
  if (memchr(s, '\0', n) != NULL) {
    free(s);
    fail(r, "%s: embedded NUL (length %llu)", what, n);
    return NULL;
  }
  return s;
}

/* The ranks of a process set being created (PROCESS_SET request splits and response
 * counts). Sets are created on the world set only, so these are 1..nmembers distinct
 * ranks of it, ascending, as hvd_process_set_create sends them; exec.c installs them
 * as transport ranks, so nothing else may pass (found by fuzz/fuzz_request_list). */
static void check_pset_ranks(rd_t *r, uint32_t set, const uint64_t *v, uint32_t n,
                             int nmembers) {
  if (r->bad) return;
  if (set != 0) {
    fail(r, "%s: created on set %llu, not the world", "process set", set);
    return;
  }
  if (n < 1 || n > (uint32_t)nmembers) {
    fail(r, "%s: %llu ranks", "process set", n);
    return;
  }
  for (uint32_t i = 0; i < n; i++) {
    if (v[i] >= (uint64_t)nmembers || (i > 0 && v[i] <= v[i - 1])) {
      fail(r, "%s: rank %llu is out of range or order", "process set", (unsigned long long)v[i]);
      return;
    }
  }
}

/* ---- requests ---------------------------------------------------------------------- */

void hvd_request_free(hvd_request_t *q) {
  free(q->name);
  free(q->splits);
  q->name = NULL;
  q->splits = NULL;
}

hvd_status_t hvd_request_copy(hvd_request_t *dst, const hvd_request_t *src) {
  *dst = *src;
  dst->name = NULL;
  dst->splits = NULL;
  if (src->name && (dst->name = strdup(src->name)) == NULL) goto oom;
  if (src->nsplits) {
    dst->splits = malloc(src->nsplits * sizeof *dst->splits);
    if (dst->splits == NULL) goto oom;
    memcpy(dst->splits, src->splits, src->nsplits * sizeof *dst->splits);
  }
  return HVD_OK;
oom:
  hvd_request_free(dst);
  return HVD_ERR_NO_MEMORY;
}

hvd_status_t hvd_request_list_encode(const hvd_request_list_t *l, hvd_wbuf_t *b) {
  b->len = 0;
  put_u32(b, REQ_MAGIC);
  put_u32(b, l->flags);
  put_u32(b, l->set);
  put_u64(b, l->ack);
  put_u32(b, l->nwords);
  put(b, l->bits, (size_t)l->nwords * 8);
  put_u32(b, l->n);
  for (uint32_t i = 0; i < l->n; i++) {
    const hvd_request_t *q = &l->reqs[i];
    put_u8(b, q->type);
    put_u8(b, q->dtype);
    put_u8(b, q->op);
    put_i32(b, q->rank);
    put_i32(b, q->root);
    put_u64(b, q->count);
    put_f64(b, q->prescale);
    put_f64(b, q->postscale);
    put_u32(b, q->group);
    put_u32(b, q->nsplits);
    put(b, q->splits, (size_t)q->nsplits * 8);
    put_str(b, q->name);
  }
  return b->oom ? HVD_ERR_NO_MEMORY : HVD_OK;
}

void hvd_request_list_free(hvd_request_list_t *l) {
  for (uint32_t i = 0; i < l->n; i++) hvd_request_free(&l->reqs[i]);
  free(l->reqs);
  free(l->bits);
  memset(l, 0, sizeof *l);
}

hvd_status_t hvd_request_list_decode(const uint8_t *p, size_t len, int nmembers,
                                     hvd_request_list_t *l, hvd_err_t *err) {
  rd_t r = {.p = p, .left = len, .err = err};
  memset(l, 0, sizeof *l);
  if (get_u32(&r, "magic") != REQ_MAGIC && !r.bad) fail(&r, "%s: bad magic %llu", "request list", 0);
  l->flags = get_u32(&r, "flags");
  l->set = get_u32(&r, "set");
  l->ack = get_u64(&r, "ack");
  l->nwords = get_u32(&r, "cache words");
  l->bits = get_array(&r, l->nwords, 8, "cache bits");
  uint32_t n = get_u32(&r, "request count");
  if (!r.bad && n > r.left / 40) fail(&r, "%s: %llu requests do not fit", "request list", n);
  if (!r.bad && n) {
    l->reqs = calloc(n, sizeof *l->reqs);
    if (l->reqs == NULL) fail(&r, "%s: out of memory (%llu)", "request list", n);
  }
  for (uint32_t i = 0; i < n && !r.bad; i++) {
    hvd_request_t *q = &l->reqs[i];
    l->n = i + 1;
    q->type = get_u8(&r, "type");
    q->dtype = get_u8(&r, "dtype");
    q->op = get_u8(&r, "op");
    q->rank = get_i32(&r, "rank");
    q->root = get_i32(&r, "root");
    q->count = get_u64(&r, "count");
    q->prescale = get_f64(&r, "prescale");
    q->postscale = get_f64(&r, "postscale");
    q->group = get_u32(&r, "group");
    q->nsplits = get_u32(&r, "splits");
    if (r.bad) break;
    if (q->type >= HVD_MSG_ERROR) fail(&r, "%s: bad type %llu", "request", q->type);
    else if (q->dtype >= HVD_DTYPE_COUNT) fail(&r, "%s: bad dtype %llu", "request", q->dtype);
    else if (q->op >= HVD_OP_COUNT) fail(&r, "%s: bad op %llu", "request", q->op);
    else if (q->rank < 0 || q->rank >= nmembers) fail(&r, "%s: bad rank %llu", "request", (unsigned)q->rank);
    else if (q->type == HVD_MSG_ALLTOALL && q->nsplits != 0 && q->nsplits != (uint32_t)nmembers)
      fail(&r, "%s: %llu splits for the wrong number of ranks", "request", q->nsplits);
    else if (q->type != HVD_MSG_ALLTOALL && q->type != HVD_MSG_PROCESS_SET && q->nsplits != 0)
      fail(&r, "%s: %llu splits on an operation without splits", "request", q->nsplits);
    q->splits = get_array(&r, q->nsplits, 8, "splits");
    if (q->type == HVD_MSG_PROCESS_SET) check_pset_ranks(&r, l->set, q->splits, q->nsplits, nmembers);
    q->name = get_str(&r, HVD_NAME_MAX, 0, "name");
  }
  if (!r.bad && r.left != 0) fail(&r, "%s: %llu trailing bytes", "request list", r.left);
  if (r.bad) {
    hvd_request_list_free(l);
    return HVD_ERR_PROTOCOL;
  }
  return HVD_OK;
}

/* ---- responses --------------------------------------------------------------------- */

void hvd_response_free(hvd_response_t *s) {
  if (s->names)
    for (uint32_t i = 0; i < s->ntensors; i++) free(s->names[i]);
  free(s->names);
  free(s->cache_ids);
  free(s->counts);
  free(s->error);
  memset(s, 0, sizeof *s);
}

void hvd_response_list_free(hvd_response_list_t *l) {
  for (uint32_t i = 0; i < l->n; i++) hvd_response_free(&l->resps[i]);
  free(l->resps);
  free(l->evict);
  memset(l, 0, sizeof *l);
}

hvd_status_t hvd_response_list_encode(const hvd_response_list_t *l, hvd_wbuf_t *b) {
  b->len = 0;
  put_u32(b, RESP_MAGIC);
  put_u32(b, l->flags);
  put_u32(b, l->set);
  put_u64(b, l->seq);
  put_u32(b, l->nevict);
  put(b, l->evict, (size_t)l->nevict * 4);
  put_u32(b, l->n);
  for (uint32_t i = 0; i < l->n; i++) {
    const hvd_response_t *s = &l->resps[i];
    put_u8(b, s->type);
    put_u8(b, s->dtype);
    put_u8(b, s->op);
    put_i32(b, s->root);
    put_f64(b, s->prescale);
    put_f64(b, s->postscale);
    put_u32(b, s->ntensors);
    for (uint32_t t = 0; t < s->ntensors; t++) put_str(b, s->names[t]);
    put(b, s->cache_ids, (size_t)s->ntensors * 4);
    put_u32(b, s->ncounts);
    put(b, s->counts, (size_t)s->ncounts * 8);
    put_i32(b, s->last_joined);
    put_i32(b, s->status);
    put_str(b, s->error);
  }
  return b->oom ? HVD_ERR_NO_MEMORY : HVD_OK;
}

hvd_status_t hvd_response_list_decode(const uint8_t *p, size_t len, int nmembers,
                                      hvd_response_list_t *l, hvd_err_t *err) {
  rd_t r = {.p = p, .left = len, .err = err};
  memset(l, 0, sizeof *l);
  if (get_u32(&r, "magic") != RESP_MAGIC && !r.bad) fail(&r, "%s: bad magic %llu", "response list", 0);
  l->flags = get_u32(&r, "flags");
  l->set = get_u32(&r, "set");
  l->seq = get_u64(&r, "seq");
  l->nevict = get_u32(&r, "evictions");
  l->evict = get_array(&r, l->nevict, 4, "evictions");
  uint32_t n = get_u32(&r, "response count");
  if (!r.bad && n > r.left / 40) fail(&r, "%s: %llu responses do not fit", "response list", n);
  if (!r.bad && n) {
    l->resps = calloc(n, sizeof *l->resps);
    if (l->resps == NULL) fail(&r, "%s: out of memory (%llu)", "response list", n);
  }
  for (uint32_t i = 0; i < n && !r.bad; i++) {
    hvd_response_t *s = &l->resps[i];
    l->n = i + 1;
    s->type = get_u8(&r, "type");
    s->dtype = get_u8(&r, "dtype");
    s->op = get_u8(&r, "op");
    s->root = get_i32(&r, "root");
    s->prescale = get_f64(&r, "prescale");
    s->postscale = get_f64(&r, "postscale");
    uint32_t nt = get_u32(&r, "tensor count");
    if (r.bad) break;
    if (s->type >= HVD_MSG_TYPE_COUNT) fail(&r, "%s: bad type %llu", "response", s->type);
    else if (s->dtype >= HVD_DTYPE_COUNT) fail(&r, "%s: bad dtype %llu", "response", s->dtype);
    else if (s->op >= HVD_OP_COUNT) fail(&r, "%s: bad op %llu", "response", s->op);
    else if (nt > r.left / 8) fail(&r, "%s: %llu tensors do not fit", "response", nt);
    if (r.bad) break;
    if (nt) {
      s->names = calloc(nt, sizeof *s->names);
      if (s->names == NULL) {
        fail(&r, "%s: out of memory (%llu)", "response", nt);
        break;
      }
    }
    s->ntensors = nt;
    for (uint32_t t = 0; t < nt && !r.bad; t++) s->names[t] = get_str(&r, HVD_NAME_MAX, 0, "name");
    s->cache_ids = get_array(&r, nt, 4, "cache ids");
    s->ncounts = get_u32(&r, "counts");
    s->counts = get_array(&r, s->ncounts, 8, "counts");
    s->last_joined = get_i32(&r, "last joined");
    s->status = get_i32(&r, "status");
    s->error = get_str(&r, 1u << 16, 1, "error");
    if (r.bad) break;
    /* Sizes must match what the members will index (exec.c). */
    uint64_t want = 0;
    int sized = 1;
    switch ((hvd_msg_type_t)s->type) {
    case HVD_MSG_ALLREDUCE: case HVD_MSG_BROADCAST: case HVD_MSG_REDUCESCATTER: want = nt; break;
    case HVD_MSG_ALLGATHER: want = (uint64_t)nt * (uint64_t)nmembers; break;
    case HVD_MSG_ALLTOALL: want = (uint64_t)nmembers * (uint64_t)nmembers; break;
    default: sized = 0; break;
    }
    if (sized && s->ncounts != want)
      fail(&r, "%s: %llu counts do not fit the response", hvd_msg_type_name(s->type), s->ncounts);
    else if (s->type != HVD_MSG_JOIN && nt == 0)
      fail(&r, "%s: response without tensors (%llu)", hvd_msg_type_name(s->type), nt);
    else if (s->type == HVD_MSG_BROADCAST && (s->root < 0 || s->root >= nmembers))
      fail(&r, "%s: root %llu outside the set", "broadcast", (unsigned)s->root);
    else if ((s->type == HVD_MSG_ALLGATHER || s->type == HVD_MSG_ALLTOALL) && nt != 1)
      fail(&r, "%s: %llu tensors in one response", hvd_msg_type_name(s->type), nt);
    else if (s->type == HVD_MSG_PROCESS_SET)
      check_pset_ranks(&r, l->set, s->counts, s->ncounts, nmembers);
  }
  if (!r.bad && r.left != 0) fail(&r, "%s: %llu trailing bytes", "response list", r.left);
  if (r.bad) {
    hvd_response_list_free(l);
    return HVD_ERR_PROTOCOL;
  }
  return HVD_OK;
}
