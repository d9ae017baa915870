/*
 * Rendezvous frame codec, shared by the server and the client (see rdv.h for the
 * wire format).
 *
 * Pure functions over memory: no I/O, no allocation except the growable output
 * buffer. Decoding never trusts a length: the header's length is checked against
 * HVD_RDV_MAX_PAYLOAD before anyone buffers the payload, and the reader checks every
 * field against the bytes that are left, so a hostile peer can make a decode fail
 * but never read out of bounds. Errors are sticky (a failed read sets `bad` and every
 * later read fails too), which lets callers parse a whole payload and check once.
 */
#include "transport/rdv.h"

#include <stdlib.h>
#include <string.h>

#include "common/util.h"

static uint32_t load_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t load_u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static void store_u32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}

static void store_u16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}

hvd_status_t hvd_rdv_decode_header(const uint8_t *buf, hvd_rdv_header_t *h, hvd_err_t *err) {
  h->magic = load_u32(buf);
  h->version = load_u16(buf + 4);
  h->type = load_u16(buf + 6);
  h->length = load_u32(buf + 8);
  if (h->magic != HVD_RDV_MAGIC) {
    hvd_err_set(err, "bad magic 0x%08x", (unsigned)h->magic);
    return HVD_ERR_PROTOCOL;
  }
  if (h->version != HVD_RDV_VERSION) {
    hvd_err_set(err, "unsupported version %u (expected %u)", (unsigned)h->version,
                (unsigned)HVD_RDV_VERSION);
    return HVD_ERR_PROTOCOL;
  }
  if (h->type < HVD_RDV_HELLO || h->type >= HVD_RDV_TYPE_MAX) {
    hvd_err_set(err, "bad frame type %u", (unsigned)h->type);
    return HVD_ERR_PROTOCOL;
  }
  if (h->length > HVD_RDV_MAX_PAYLOAD) {
    hvd_err_set(err, "payload length %u exceeds the %u byte limit", (unsigned)h->length,
                (unsigned)HVD_RDV_MAX_PAYLOAD);
    return HVD_ERR_PROTOCOL;
  }
  return HVD_OK;
}

void hvd_rdv_encode_header(uint8_t *buf, uint16_t type, uint32_t length) {
  store_u32(buf, HVD_RDV_MAGIC);
  store_u16(buf + 4, HVD_RDV_VERSION);
  store_u16(buf + 6, type);
  store_u32(buf + 8, length);
}

/* ---- output buffer -------------------------------------------------------------- */

void hvd_rdv_buf_init(hvd_rdv_buf_t *b) { memset(b, 0, sizeof *b); }

void hvd_rdv_buf_free(hvd_rdv_buf_t *b) {
  free(b->data);
  hvd_rdv_buf_init(b);
}

/* Make room for n more bytes; on failure mark the buffer so frame_end reports it
 * (callers then need not check every put). */
static uint8_t *buf_reserve(hvd_rdv_buf_t *b, size_t n) {
  if (b->oom || b->overflow) return NULL;
  if (n > b->cap - b->len) {
    size_t want = b->len + n;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < want) cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (p == NULL) {
      b->oom = 1;
      return NULL;
    }
    b->data = p;
    b->cap = cap;
  }
  uint8_t *at = b->data + b->len;
  b->len += n;
  return at;
}

/* Checks that appending n payload bytes keeps the current frame legal, so a huge
 * string is refused before it is copied. */
static int frame_fits(hvd_rdv_buf_t *b, size_t n) {
  if (b->len < b->start + HVD_RDV_HEADER_SIZE) { /* no hvd_rdv_frame_begin */
    b->overflow = 1;
    return 0;
  }
  size_t used = b->len - b->start - HVD_RDV_HEADER_SIZE;
  if (n > HVD_RDV_MAX_PAYLOAD || used + n > HVD_RDV_MAX_PAYLOAD) {
    b->overflow = 1;
    return 0;
  }
  return 1;
}

void hvd_rdv_frame_begin(hvd_rdv_buf_t *b, uint16_t type) {
  b->overflow = 0;
  b->start = b->len;
  uint8_t *h = buf_reserve(b, HVD_RDV_HEADER_SIZE);
  if (h != NULL) hvd_rdv_encode_header(h, type, 0);
}

void hvd_rdv_put_u32(hvd_rdv_buf_t *b, uint32_t v) {
  if (b->oom || b->overflow || !frame_fits(b, 4)) return;
  uint8_t *p = buf_reserve(b, 4);
  if (p != NULL) store_u32(p, v);
}

void hvd_rdv_put_str(hvd_rdv_buf_t *b, const void *s, size_t len) {
  if (b->oom || b->overflow) return;
  if (len > HVD_RDV_MAX_PAYLOAD) { /* also keeps 4 + len from wrapping */
    b->overflow = 1;
    return;
  }
  if (!frame_fits(b, 4 + len)) return;
  uint8_t *p = buf_reserve(b, 4 + len);
  if (p == NULL) return;
  store_u32(p, (uint32_t)len);
  if (len > 0) memcpy(p + 4, s, len);
}

hvd_status_t hvd_rdv_frame_end(hvd_rdv_buf_t *b) {
  if (b->oom || b->overflow || b->data == NULL || b->len < b->start + HVD_RDV_HEADER_SIZE) {
    /* Drop the partial frame so the buffer holds only complete ones. */
    if (b->len > b->start) b->len = b->start;
    if (b->oom) return HVD_ERR_NO_MEMORY;
    return b->overflow ? HVD_ERR_PROTOCOL : HVD_ERR_INTERNAL;
  }
  size_t payload = b->len - b->start - HVD_RDV_HEADER_SIZE;
  store_u32(b->data + b->start + 8, (uint32_t)payload);
  return HVD_OK;
}

/* ---- reader ---------------------------------------------------------------------- */

void hvd_rdv_reader_init(hvd_rdv_reader_t *r, const uint8_t *payload, size_t len) {
  r->p = payload;
  r->left = payload != NULL ? len : 0;
  r->bad = 0;
}

uint32_t hvd_rdv_get_u32(hvd_rdv_reader_t *r) {
  if (r->bad || r->left < 4) {
    r->bad = 1;
    return 0;
  }
  uint32_t v = load_u32(r->p);
  r->p += 4;
  r->left -= 4;
  return v;
}

const uint8_t *hvd_rdv_get_str(hvd_rdv_reader_t *r, size_t max, size_t *len) {
  *len = 0;
  uint32_t n = hvd_rdv_get_u32(r);
  if (r->bad || n > max || n > r->left) {
    r->bad = 1;
    return NULL;
  }
  const uint8_t *s = r->p;
  r->p += n;
  r->left -= n;
  *len = n;
  return s;
}

hvd_status_t hvd_rdv_reader_done(const hvd_rdv_reader_t *r) {
  return (r->bad || r->left != 0) ? HVD_ERR_PROTOCOL : HVD_OK;
}

/* ---- payloads --------------------------------------------------------------------- */

static const char *msg_name(unsigned t) {
  static const char *const names[] = {"?",          "HELLO", "HELLO_OK", "PUT",   "GET",
                                      "VALUE",      "NOT_FOUND", "BARRIER", "BARRIER_OK",
                                      "BYE",        "ABORT", "ERROR"};
  return t < HVD_ARRAY_SIZE(names) ? names[t] : "?";
}

/* The layout of each type's payload: the first string (and its bound), whether a
 * value string, HELLO's rank and size, or a timeout follow. */
typedef struct msg_layout {
  size_t str_max; /* 0: no string */
  int value, hello, timeout;
} msg_layout_t;

static int msg_layout(unsigned type, msg_layout_t *l) {
  memset(l, 0, sizeof *l);
  switch (type) {
  case HVD_RDV_HELLO: l->str_max = HVD_RDV_MAX_TOKEN_WIRE; l->hello = 1; break;
  case HVD_RDV_PUT: l->str_max = HVD_RDV_MAX_KEY; l->value = 1; break;
  case HVD_RDV_GET: l->str_max = HVD_RDV_MAX_KEY; l->timeout = 1; break;
  case HVD_RDV_VALUE: l->str_max = HVD_RDV_MAX_KEY; l->value = 1; break;
  case HVD_RDV_NOT_FOUND: l->str_max = HVD_RDV_MAX_KEY; break;
  case HVD_RDV_BARRIER: l->str_max = HVD_RDV_MAX_KEY; l->timeout = 1; break;
  case HVD_RDV_BARRIER_OK: l->str_max = HVD_RDV_MAX_KEY; break;
  case HVD_RDV_ABORT: case HVD_RDV_ERROR: l->str_max = HVD_RDV_MAX_PAYLOAD; break;
  case HVD_RDV_HELLO_OK: case HVD_RDV_BYE: break;
  default: return -1;
  }
  return 0;
}

hvd_status_t hvd_rdv_msg_decode(uint16_t type, const uint8_t *payload, size_t len,
                                hvd_rdv_msg_t *m, hvd_err_t *err) {
  msg_layout_t l;
  memset(m, 0, sizeof *m);
  m->type = type;
  if (msg_layout(type, &l) != 0) {
    hvd_err_set(err, "bad frame type %u", (unsigned)type);
    return HVD_ERR_PROTOCOL;
  }
  hvd_rdv_reader_t r;
  hvd_rdv_reader_init(&r, payload, len);
  if (l.str_max > 0) m->str = hvd_rdv_get_str(&r, l.str_max, &m->str_len);
  if (l.value) m->value = hvd_rdv_get_str(&r, HVD_RDV_MAX_PAYLOAD, &m->value_len);
  if (l.hello) {
    m->rank = hvd_rdv_get_u32(&r);
    m->size = hvd_rdv_get_u32(&r);
  }
  if (l.timeout) m->timeout_ms = hvd_rdv_get_u32(&r);
  if (hvd_rdv_reader_done(&r) != HVD_OK) {
    hvd_err_set(err, "malformed %s payload (%zu bytes)", msg_name(type), len);
    memset(m, 0, sizeof *m);
    m->type = type;
    return HVD_ERR_PROTOCOL;
  }
  return HVD_OK;
}

hvd_status_t hvd_rdv_msg_encode(hvd_rdv_buf_t *b, const hvd_rdv_msg_t *m) {
  msg_layout_t l;
  if (msg_layout(m->type, &l) != 0) return HVD_ERR_INVALID_PARAM;
  /* What the decoder would refuse is not sent. */
  if (m->str_len > l.str_max || m->value_len > HVD_RDV_MAX_PAYLOAD) return HVD_ERR_PROTOCOL;
  hvd_rdv_frame_begin(b, m->type);
  if (l.str_max > 0) hvd_rdv_put_str(b, m->str, m->str_len);
  if (l.value) hvd_rdv_put_str(b, m->value, m->value_len);
  if (l.hello) {
    hvd_rdv_put_u32(b, m->rank);
    hvd_rdv_put_u32(b, m->size);
  }
  if (l.timeout) hvd_rdv_put_u32(b, m->timeout_ms);
  return hvd_rdv_frame_end(b);
}

/* ---- job token -------------------------------------------------------------------- */

int hvd_rdv_new_token(char out[HVD_RDV_TOKEN_LEN + 1]) {
  uint8_t raw[HVD_RDV_TOKEN_LEN / 2];
  if (hvd_random_bytes(raw, sizeof raw) != 0) return -1;
  hvd_hex_encode(raw, sizeof raw, out);
  return 0;
}
