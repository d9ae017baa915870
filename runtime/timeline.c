/*
 * The timeline writer: Chrome trace-event JSON of every tensor's life.
 *
 * Producers (the background thread) never block on the disk and never allocate:
 * hvd_tl_* copies the event into a bounded byte ring and returns. A record is a small
 * header and the event's strings (tensor, phase, args), padded to 32 bytes; tensor
 * names may be up to HVD_NAME_MAX long, so records are variable-length rather than
 * sized for the worst case (which would need ~46 MiB for 64K events). A record that
 * does not fit before the end of the ring is preceded by a WRAP record that fills the
 * rest. head/tail are free-running byte counters: producers advance head (serialized
 * by a mutex that only producers take, held for one memcpy, so a second producer
 * thread would be safe too), the writer advances tail; neither waits for the other.
 * When the ring is full the event is dropped and counted.
 *
 * The writer thread (the timeline's own) wakes every TL_FLUSH_MS while events flow
 * (TL_IDLE_MS when there were none), formats what the ring holds and writes it with one pwrite() that ends with the closing "\n]}\n":
 * the next write starts where those closing bytes start, overwriting them. So after
 * every flush the file is valid JSON and a killed job leaves a loadable trace (the
 * only window is a SIGKILL inside a multi-page write(), which the kernel may cut
 * short; writes are at most TL_CHUNK bytes).
 *
 * The writer keeps, per tensor lane, the stack of open B spans, so the file always
 * nests: an E with no open B (the B went to an earlier timeline, or was dropped) is
 * left out; a B of a phase that is already open first closes it (its E was lost);
 * at close, spans still open get an E with "unfinished":true.
 *
 * Layout: {"otherData":{...},"traceEvents":[ ... ]}. pid 0 is the rank's own lane
 * (CYCLE_START, DROPPED_EVENTS, TIMELINE_TRUNCATED, TIMELINE_END); each tensor gets
 * pid 1, 2, ... in order of first appearance, named by a process_name metadata event;
 * tid is always 0. ts is microseconds since the timeline was opened.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "runtime/timeline.h"

#define TL_ALIGN 32u
#define TL_TENSOR_MAX 512u  /* HVD_NAME_MAX */
#define TL_PHASE_MAX 64u
#define TL_ARGS_MAX 512u
#define TL_BYTES_PER_EVENT 128u /* ring bytes per ring_events: a typical record is 64-96 */
#define TL_DEFAULT_EVENTS 65536u
#define TL_DEPTH_MAX 8
#define TL_FLUSH_MS 20 /* while events flow */
#define TL_IDLE_MS 100 /* after a wake-up that found nothing */
#define TL_CHUNK (64u * 1024u)
#define TL_MARKER_RESERVE 256u /* room kept under max_bytes for the closing marker */

static const char tl_tail[] = "\n]}\n";
#define TL_TAIL_LEN (sizeof tl_tail - 1)

enum { REC_WRAP, REC_BEGIN, REC_END, REC_INSTANT, REC_CYCLE };
enum { REC_ARGS_TOO_LONG = 1 };

typedef struct rec {
  uint32_t size; /* whole record with padding, a multiple of TL_ALIGN */
  uint8_t kind;
  uint8_t flags;
  uint16_t tlen, plen, alen; /* strings follow the header in this order, no NULs */
  uint64_t ts;
} rec_t;
_Static_assert(sizeof(rec_t) <= TL_ALIGN, "record header must fit one alignment unit");

typedef struct lane {
  char *name;
  int pid;
  int depth; /* open B spans; beyond TL_DEPTH_MAX they are not tracked */
  char open[TL_DEPTH_MAX][TL_PHASE_MAX];
} lane_t;

struct hvd_timeline {
  /* Shared: producers and the writer. */
  unsigned char *ring;
  uint64_t cap; /* power of two */
  _Atomic uint64_t head, tail, dropped;
  pthread_mutex_t pmu; /* producers only */
  pthread_mutex_t wmu; /* stop flag and wake-up */
  pthread_cond_t wcv;
  int stop;
  int mark_cycles;
  pthread_t thread;

  /* Writer thread only (and open/close around it). */
  int fd;
  int rank;
  uint64_t t0;
  size_t max_bytes;
  uint64_t off;       /* file offset of the closing bytes */
  char *ob;           /* formatted, not yet written */
  size_t oblen, obcap;
  int ob_failed;      /* allocation of ob failed: this flush's events are lost */
  lane_t **lanes;     /* open-addressing table by name */
  size_t nlanes_cap, nlanes;
  uint64_t events, dropped_reported;
  int truncated, failed;
};

/* ---- producers ------------------------------------------------------------------ */

static size_t bounded_len(const char *s, size_t max) { return s ? strnlen(s, max) : 0; }

static void push(hvd_timeline_t *tl, int kind, const char *tensor, const char *phase,
                 const char *args, uint64_t ts) {
  if (tl == NULL) return;
  size_t tlen = bounded_len(tensor, TL_TENSOR_MAX), plen = bounded_len(phase, TL_PHASE_MAX - 1);
  size_t alen = bounded_len(args, TL_ARGS_MAX);
  uint8_t flags = 0;
  if (alen == TL_ARGS_MAX) { /* cutting JSON would make it invalid: leave it out */
    alen = 0;
    flags = REC_ARGS_TOO_LONG;
  }
  uint64_t size = (sizeof(rec_t) + tlen + plen + alen + TL_ALIGN - 1) & ~(uint64_t)(TL_ALIGN - 1);

  pthread_mutex_lock(&tl->pmu);
  uint64_t head = atomic_load_explicit(&tl->head, memory_order_relaxed);
  uint64_t tail = atomic_load_explicit(&tl->tail, memory_order_acquire);
  uint64_t off = head & (tl->cap - 1), contig = tl->cap - off;
  uint64_t need = size <= contig ? size : contig + size;
  if (tl->cap - (head - tail) < need) {
    pthread_mutex_unlock(&tl->pmu);
    atomic_fetch_add_explicit(&tl->dropped, 1, memory_order_relaxed);
    return;
  }
  if (size > contig) { /* fill the rest with a WRAP record; contig is a multiple of 32 */
    rec_t w = {.size = (uint32_t)contig, .kind = REC_WRAP};
    memcpy(tl->ring + off, &w, sizeof w);
    head += contig;
    off = 0;
  }
  rec_t h = {.size = (uint32_t)size, .kind = (uint8_t)kind, .flags = flags,
             .tlen = (uint16_t)tlen, .plen = (uint16_t)plen, .alen = (uint16_t)alen, .ts = ts};
  unsigned char *p = tl->ring + off;
  memcpy(p, &h, sizeof h);
  p += sizeof h;
  if (tlen) memcpy(p, tensor, tlen);
  if (plen) memcpy(p + tlen, phase, plen);
  if (alen) memcpy(p + tlen + plen, args, alen);
  atomic_store_explicit(&tl->head, head + size, memory_order_release);
  pthread_mutex_unlock(&tl->pmu);
}

void hvd_tl_begin(hvd_timeline_t *tl, const char *tensor, const char *phase, uint64_t ts) {
  push(tl, REC_BEGIN, tensor, phase, NULL, ts);
}

void hvd_tl_end(hvd_timeline_t *tl, const char *tensor, const char *phase, uint64_t ts,
                const char *args) {
  push(tl, REC_END, tensor, phase, args, ts);
}

void hvd_tl_instant(hvd_timeline_t *tl, const char *tensor, const char *what, uint64_t ts) {
  push(tl, REC_INSTANT, tensor, what, NULL, ts);
}

void hvd_tl_cycle(hvd_timeline_t *tl, uint64_t ts) {
  if (tl != NULL && tl->mark_cycles) push(tl, REC_CYCLE, NULL, NULL, NULL, ts);
}

int hvd_tl_mark_cycles(const hvd_timeline_t *tl) { return tl != NULL && tl->mark_cycles; }

uint64_t hvd_tl_dropped(const hvd_timeline_t *tl) {
  return tl ? atomic_load_explicit(&((hvd_timeline_t *)tl)->dropped, memory_order_relaxed) : 0;
}

/* ---- output buffer ---------------------------------------------------------------- */

static int ob_reserve(hvd_timeline_t *tl, size_t more) {
  if (tl->oblen + more <= tl->obcap) return 0;
  size_t cap = tl->obcap ? tl->obcap : 4096;
  while (cap < tl->oblen + more) cap *= 2;
  char *p = realloc(tl->ob, cap);
  if (p == NULL) {
    tl->ob_failed = 1;
    return -1;
  }
  tl->ob = p;
  tl->obcap = cap;
  return 0;
}

static void ob_put(hvd_timeline_t *tl, const char *s, size_t n) {
  if (ob_reserve(tl, n) != 0) return;
  memcpy(tl->ob + tl->oblen, s, n);
  tl->oblen += n;
}

static void ob_str(hvd_timeline_t *tl, const char *s) { ob_put(tl, s, strlen(s)); }

__attribute__((format(printf, 2, 3))) static void ob_printf(hvd_timeline_t *tl, const char *fmt, ...) {
  char tmp[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n > 0) ob_put(tl, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Length of the well-formed UTF-8 sequence at s (n bytes left), 0 if ill-formed. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  size_t len;
  unsigned min;
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) len = 2, min = 0x80;
  else if (c >= 0xe0 && c <= 0xef) len = 3, min = 0x800;
  else if (c >= 0xf0 && c <= 0xf4) len = 4, min = 0x10000;
  else return 0;
  if (len > n) return 0;
  unsigned cp = c & (0x3fu >> (len - 1));
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (s[i] & 0x3fu);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return len;
}

/* A JSON string literal: quotes, escapes, control characters as \u00XX, ill-formed
 * UTF-8 (e.g. a name cut in the middle of a character) as U+FFFD. */
static void ob_json_string(hvd_timeline_t *tl, const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  if (ob_reserve(tl, n * 6 + 2) != 0) return;
  char *o = tl->ob + tl->oblen;
  *o++ = '"';
  for (size_t i = 0; i < n;) {
    unsigned c = u[i];
    if (c == '"' || c == '\\') {
      *o++ = '\\';
      *o++ = (char)c;
      i++;
    } else if (c < 0x20) {
      static const char hex[] = "0123456789abcdef";
      memcpy(o, "\\u00", 4);
      o[4] = hex[c >> 4];
      o[5] = hex[c & 15];
      o += 6;
      i++;
    } else {
      size_t k = utf8_seq(u + i, n - i);
      if (k == 0) {
        memcpy(o, "\\ufffd", 6);
        o += 6;
        i++;
      } else {
        memcpy(o, u + i, k);
        o += k;
        i += k;
      }
    }
  }
  *o++ = '"';
  tl->oblen = (size_t)(o - tl->ob);
}

/* ---- a strict validator for the args bodies producers pass ------------------------- */

static const char *js_ws(const char *p, const char *e) {
  while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
  return p;
}

static const char *js_value(const char *p, const char *e, int depth);

static const char *js_string(const char *p, const char *e) {
  if (p >= e || *p != '"') return NULL;
  for (p++; p < e; p++) {
    unsigned char c = (unsigned char)*p;
    if (c == '"') return p + 1;
    if (c < 0x20) return NULL;
    if (c == '\\') {
      if (++p >= e) return NULL;
      if (*p == 'u') {
        for (int i = 0; i < 4; i++)
          if (++p >= e || !strchr("0123456789abcdefABCDEF", *p) || *p == '\0') return NULL;
      } else if (!strchr("\"\\/bfnrt", *p) || *p == '\0') {
        return NULL;
      }
    } else if (c >= 0x80) {
      size_t k = utf8_seq((const unsigned char *)p, (size_t)(e - p));
      if (k == 0) return NULL;
      p += k - 1;
    }
  }
  return NULL;
}

static const char *js_number(const char *p, const char *e) {
  const char *s = p;
  if (p < e && *p == '-') p++;
  if (p < e && *p == '0') p++;
  else if (p < e && *p >= '1' && *p <= '9') while (p < e && *p >= '0' && *p <= '9') p++;
  else return NULL;
  if (p < e && *p == '.') {
    const char *d = ++p;
    while (p < e && *p >= '0' && *p <= '9') p++;
    if (p == d) return NULL;
  }
  if (p < e && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < e && (*p == '+' || *p == '-')) p++;
    const char *d = p;
    while (p < e && *p >= '0' && *p <= '9') p++;
    if (p == d) return NULL;
  }
  return p > s ? p : NULL;
}

/* Members of an object, after '{' up to (not including) the closing '}' or e. */
static const char *js_members(const char *p, const char *e, int depth, char close) {
  p = js_ws(p, e);
  if (p < e && *p == close) return p;
  for (;;) {
    if (close == '}') {
      if ((p = js_string(js_ws(p, e), e)) == NULL) return NULL;
      p = js_ws(p, e);
      if (p >= e || *p++ != ':') return NULL;
    }
    if ((p = js_value(p, e, depth)) == NULL) return NULL;
    p = js_ws(p, e);
    if (p < e && *p == ',') {
      p++;
      continue;
    }
    return p;
  }
}

static const char *js_value(const char *p, const char *e, int depth) {
  p = js_ws(p, e);
  if (p >= e || depth > 16) return NULL;
  if (*p == '{' || *p == '[') {
    char close = *p == '{' ? '}' : ']';
    p = js_members(p + 1, e, depth + 1, close);
    if (p == NULL || p >= e || *p != close) return NULL;
    return p + 1;
  }
  if (*p == '"') return js_string(p, e);
  static const char *const words[] = {"true", "false", "null"};
  for (int i = 0; i < 3; i++) {
    size_t n = strlen(words[i]);
    if ((size_t)(e - p) >= n && memcmp(p, words[i], n) == 0) return p + n;
  }
  return js_number(p, e);
}

/* Is s[0..n) the body of a JSON object (its members, without braces)? */
static int args_valid(const char *s, size_t n) {
  const char *e = s + n;
  const char *p = js_members(s, e, 1, '}');
  return p != NULL && js_ws(p, e) == e;
}

/* ---- lanes ------------------------------------------------------------------------ */

static uint64_t hash_name(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return h;
}

static lane_t **lane_slot(lane_t **tab, size_t cap, const char *name, size_t n) {
  size_t i = (size_t)hash_name(name, n) & (cap - 1);
  while (tab[i] && !(strlen(tab[i]->name) == n && memcmp(tab[i]->name, name, n) == 0))
    i = (i + 1) & (cap - 1);
  return &tab[i];
}

/* The lane of a tensor; *fresh = 1 if it was just made (its metadata is due). NULL if
 * out of memory. */
static lane_t *lane_get(hvd_timeline_t *tl, const char *name, size_t n, int *fresh) {
  *fresh = 0;
  if (tl->nlanes * 2 >= tl->nlanes_cap) {
    size_t cap = tl->nlanes_cap ? tl->nlanes_cap * 2 : 256;
    lane_t **tab = calloc(cap, sizeof *tab);
    if (tab == NULL) return NULL;
    for (size_t i = 0; i < tl->nlanes_cap; i++)
      if (tl->lanes[i])
        *lane_slot(tab, cap, tl->lanes[i]->name, strlen(tl->lanes[i]->name)) = tl->lanes[i];
    free(tl->lanes);
    tl->lanes = tab;
    tl->nlanes_cap = cap;
  }
  lane_t **s = lane_slot(tl->lanes, tl->nlanes_cap, name, n);
  if (*s) return *s;
  lane_t *l = calloc(1, sizeof *l);
  if (l == NULL || (l->name = malloc(n + 1)) == NULL) {
    free(l);
    return NULL;
  }
  memcpy(l->name, name, n);
  l->name[n] = '\0';
  l->pid = (int)++tl->nlanes;
  *s = l;
  *fresh = 1;
  return l;
}

/* ---- formatting ------------------------------------------------------------------- */

/* Decimal digits of v (the writer formats every event: no printf on this path). */
static void ob_u64(hvd_timeline_t *tl, uint64_t v) {
  char b[24];
  size_t i = sizeof b;
  do {
    b[--i] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  ob_put(tl, b + i, sizeof b - i);
}

/* "ts": microseconds since the open, with the nanoseconds as 3 decimals. */
static void ob_ts(hvd_timeline_t *tl, uint64_t ts) {
  int64_t d = (int64_t)(ts - tl->t0); /* negative if an event predates the open */
  uint64_t a = d < 0 ? (uint64_t)-d : (uint64_t)d;
  ob_put(tl, "\"ts\":-", d < 0 ? 6 : 5);
  ob_u64(tl, a / 1000);
  char frac[4] = {'.', (char)('0' + a % 1000 / 100), (char)('0' + a % 100 / 10), (char)('0' + a % 10)};
  ob_put(tl, frac, 4);
}

/* ,\n{"name":<name>,"ph":"<ph>","ts":<ts>,"pid":<pid>,"tid":0   (left open for more) */
static void ob_event(hvd_timeline_t *tl, const char *ph, const char *name, size_t nlen,
                     uint64_t ts, int pid) {
  ob_str(tl, ",\n{\"name\":");
  ob_json_string(tl, name, nlen);
  ob_str(tl, ",\"ph\":\"");
  ob_str(tl, ph);
  ob_str(tl, "\",");
  ob_ts(tl, ts);
  ob_str(tl, ",\"pid\":");
  ob_u64(tl, (uint64_t)pid);
  ob_str(tl, ",\"tid\":0");
  tl->events++;
}

static void lane_meta(hvd_timeline_t *tl, const lane_t *l) {
  ob_str(tl, ",\n{\"name\":\"process_name\",\"ph\":\"M\",");
  ob_printf(tl, "\"pid\":%d,\"tid\":0,\"args\":{\"name\":", l->pid);
  ob_json_string(tl, l->name, strlen(l->name));
  ob_printf(tl, "}},\n{\"name\":\"process_sort_index\",\"ph\":\"M\",\"pid\":%d,\"tid\":0,"
                "\"args\":{\"sort_index\":%d}}",
            l->pid, l->pid);
}

static void end_event(hvd_timeline_t *tl, lane_t *l, uint64_t ts, const char *args, size_t alen) {
  l->depth--;
  if (l->depth < TL_DEPTH_MAX) {
    const char *ph = l->open[l->depth];
    ob_event(tl, "E", ph, strlen(ph), ts, l->pid);
  } else {
    ob_event(tl, "E", "", 0, ts, l->pid);
  }
  if (args != NULL) {
    ob_str(tl, ",\"args\":{");
    ob_put(tl, args, alen);
    ob_str(tl, "}");
  }
  ob_str(tl, "}");
}

static int lane_find_open(const lane_t *l, const char *ph, size_t plen) {
  int top = l->depth < TL_DEPTH_MAX ? l->depth : TL_DEPTH_MAX;
  for (int i = top - 1; i >= 0; i--)
    if (strlen(l->open[i]) == plen && memcmp(l->open[i], ph, plen) == 0) return i;
  return -1;
}

/* Past the cap: what is written and formatted, room for the marker and the closing
 * bytes must stay under max_bytes. */
static int over_cap(const hvd_timeline_t *tl) {
  return tl->max_bytes != 0 &&
         tl->off + tl->oblen + TL_MARKER_RESERVE + TL_TAIL_LEN > tl->max_bytes;
}

static void write_marker(hvd_timeline_t *tl, uint64_t now) {
  ob_event(tl, "i", "TIMELINE_TRUNCATED", strlen("TIMELINE_TRUNCATED"), now, 0);
  ob_printf(tl, ",\"s\":\"g\",\"args\":{\"max_bytes\":%zu,\"dropped\":%llu}}", tl->max_bytes,
            (unsigned long long)atomic_load(&tl->dropped));
  tl->truncated = 1;
}

/* Format one ring record. */
static void format_rec(hvd_timeline_t *tl, const rec_t *h, const char *s) {
  if (tl->truncated || tl->failed) return;
  size_t mark = tl->oblen;
  uint64_t events = tl->events;
  const char *tensor = s, *ph = s + h->tlen, *args = s + h->tlen + h->plen;
  size_t tlen = h->tlen, plen = h->plen, alen = h->alen;

  if (h->kind == REC_CYCLE) {
    ob_event(tl, "i", "CYCLE_START", strlen("CYCLE_START"), h->ts, 0);
    ob_str(tl, ",\"s\":\"g\"}");
  } else {
    int fresh = 0;
    lane_t *l;
    if (h->kind == REC_END) { /* an E never starts a lane: with no lane it has no B */
      l = tl->nlanes_cap ? *lane_slot(tl->lanes, tl->nlanes_cap, tensor, tlen) : NULL;
      if (l == NULL) return;
    } else {
      l = lane_get(tl, tensor, tlen, &fresh);
    }
    if (l == NULL) {
      tl->ob_failed = 1;
      return;
    }
    if (fresh) lane_meta(tl, l);
    if (h->kind == REC_INSTANT) {
      ob_event(tl, "i", ph, plen, h->ts, l->pid);
      ob_str(tl, ",\"s\":\"t\"}");
    } else if (h->kind == REC_BEGIN) {
      int at = lane_find_open(l, ph, plen);
      while (at >= 0 && l->depth > at) /* its E was lost: close it here */
        end_event(tl, l, h->ts, "\"end_lost\":true", strlen("\"end_lost\":true"));
      if (l->depth < TL_DEPTH_MAX) {
        memcpy(l->open[l->depth], ph, plen);
        l->open[l->depth][plen] = '\0';
      }
      l->depth++;
      ob_event(tl, "B", ph, plen, h->ts, l->pid);
      ob_str(tl, "}");
    } else if (h->kind == REC_END) {
      int at = lane_find_open(l, ph, plen);
      if (at < 0 && l->depth > 0 && l->depth > TL_DEPTH_MAX) at = l->depth - 1; /* untracked */
      if (at >= 0) {
        while (l->depth > at + 1) end_event(tl, l, h->ts, "\"end_lost\":true", strlen("\"end_lost\":true"));
        if (h->flags & REC_ARGS_TOO_LONG)
          end_event(tl, l, h->ts, "\"args_too_long\":true", strlen("\"args_too_long\":true"));
        else if (alen > 0 && args_valid(args, alen))
          end_event(tl, l, h->ts, args, alen);
        else if (alen > 0)
          end_event(tl, l, h->ts, "\"args_invalid\":true", strlen("\"args_invalid\":true"));
        else
          end_event(tl, l, h->ts, NULL, 0);
      } /* else: its B is not in this file */
    }
  }
  if (over_cap(tl)) {
    tl->oblen = mark;
    tl->events = events;
    write_marker(tl, h->ts);
  }
}

/* ---- file ------------------------------------------------------------------------- */

static int pwrite_all(int fd, const char *p, size_t n, uint64_t off) {
  while (n > 0) {
    ssize_t w = pwrite(fd, p, n, (off_t)off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
    off += (uint64_t)w;
  }
  return 0;
}

/* Write what is formatted, followed by the closing bytes, over the old closing bytes. */
static void flush_out(hvd_timeline_t *tl) {
  if (tl->ob_failed) { /* a partial record may be in ob: drop the whole batch */
    tl->oblen = 0;
    tl->ob_failed = 0;
    HVD_WARN("timeline: out of memory formatting events; some are missing");
  }
  if (tl->oblen == 0 || tl->failed) return;
  if (ob_reserve(tl, TL_TAIL_LEN) != 0) {
    tl->oblen = 0;
    tl->ob_failed = 0;
    return;
  }
  memcpy(tl->ob + tl->oblen, tl_tail, TL_TAIL_LEN);
  if (pwrite_all(tl->fd, tl->ob, tl->oblen + TL_TAIL_LEN, tl->off) != 0) {
    HVD_WARN("timeline: write failed (%s); the timeline stops here", strerror(errno));
    tl->failed = 1;
  } else {
    tl->off += tl->oblen;
  }
  tl->oblen = 0;
}

static void report_dropped(hvd_timeline_t *tl, uint64_t now) {
  uint64_t d = atomic_load_explicit(&tl->dropped, memory_order_relaxed);
  if (d == tl->dropped_reported || tl->truncated) return;
  size_t mark = tl->oblen;
  ob_event(tl, "i", "DROPPED_EVENTS", strlen("DROPPED_EVENTS"), now, 0);
  ob_printf(tl, ",\"s\":\"g\",\"args\":{\"dropped\":%llu,\"ring_bytes\":%llu}}",
            (unsigned long long)d, (unsigned long long)tl->cap);
  if (over_cap(tl)) {
    tl->oblen = mark;
    write_marker(tl, now);
  }
  tl->dropped_reported = d;
}

/* Format everything in the ring, writing every TL_CHUNK bytes. Returns whether there
 * was anything. */
static int drain(hvd_timeline_t *tl) {
  uint64_t tail = atomic_load_explicit(&tl->tail, memory_order_relaxed);
  uint64_t head = atomic_load_explicit(&tl->head, memory_order_acquire);
  int any = tail != head;
  while (tail != head) {
    const rec_t *h = (const rec_t *)(tl->ring + (tail & (tl->cap - 1)));
    if (h->kind != REC_WRAP) format_rec(tl, h, (const char *)(h + 1));
    tail += h->size;
    atomic_store_explicit(&tl->tail, tail, memory_order_release);
    if (tl->oblen >= TL_CHUNK) flush_out(tl);
    if (tail == head) head = atomic_load_explicit(&tl->head, memory_order_acquire);
  }
  report_dropped(tl, hvd_now_ns());
  return any;
}

static void finish(hvd_timeline_t *tl) {
  uint64_t now = hvd_now_ns();
  drain(tl);
  for (size_t i = 0; i < tl->nlanes_cap && !tl->truncated; i++) {
    lane_t *l = tl->lanes[i];
    while (l && l->depth > 0 && !tl->truncated) {
      size_t mark = tl->oblen;
      end_event(tl, l, now, "\"unfinished\":true", strlen("\"unfinished\":true"));
      if (over_cap(tl)) {
        tl->oblen = mark;
        write_marker(tl, now);
      }
      if (tl->oblen >= TL_CHUNK) flush_out(tl);
    }
  }
  if (!tl->truncated) {
    size_t mark = tl->oblen;
    ob_event(tl, "i", "TIMELINE_END", strlen("TIMELINE_END"), now, 0);
    ob_printf(tl, ",\"s\":\"g\",\"args\":{\"events\":%llu,\"dropped\":%llu}}",
              (unsigned long long)tl->events, (unsigned long long)atomic_load(&tl->dropped));
    if (over_cap(tl)) {
      tl->oblen = mark;
      write_marker(tl, now);
    }
  }
  flush_out(tl);
}

static void *writer_main(void *arg) {
  hvd_timeline_t *tl = arg;
  for (;;) {
    long wait_ms = drain(tl) ? TL_FLUSH_MS : TL_IDLE_MS;
    flush_out(tl);
    pthread_mutex_lock(&tl->wmu);
    if (!tl->stop) {
      struct timespec dl;
      clock_gettime(CLOCK_MONOTONIC, &dl);
      dl.tv_nsec += wait_ms * 1000000L;
      if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
      }
      pthread_cond_timedwait(&tl->wcv, &tl->wmu, &dl);
    }
    int stop = tl->stop;
    pthread_mutex_unlock(&tl->wmu);
    if (stop) break;
  }
  finish(tl);
  return NULL;
}

/* ---- open / close ----------------------------------------------------------------- */

static void tl_free(hvd_timeline_t *tl) {
  for (size_t i = 0; i < tl->nlanes_cap; i++)
    if (tl->lanes[i]) {
      free(tl->lanes[i]->name);
      free(tl->lanes[i]);
    }
  free(tl->lanes);
  free(tl->ob);
  free(tl->ring);
  if (tl->fd >= 0) close(tl->fd);
  pthread_mutex_destroy(&tl->pmu);
  pthread_mutex_destroy(&tl->wmu);
  pthread_cond_destroy(&tl->wcv);
  free(tl);
}

hvd_status_t hvd_timeline_open(const hvd_timeline_opts_t *opts, hvd_timeline_t **out,
                               hvd_err_t *err) {
  *out = NULL;
  if (opts == NULL || opts->path == NULL || opts->path[0] == '\0') {
    hvd_err_set(err, "no timeline file name");
    return HVD_ERR_INVALID_PARAM;
  }
  hvd_timeline_t *tl = calloc(1, sizeof *tl);
  if (tl == NULL) {
    hvd_err_set(err, "out of memory");
    return HVD_ERR_NO_MEMORY;
  }
  tl->fd = -1;
  pthread_mutex_init(&tl->pmu, NULL);
  pthread_mutex_init(&tl->wmu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&tl->wcv, &ca);
  pthread_condattr_destroy(&ca);
  tl->rank = opts->rank;
  tl->mark_cycles = opts->mark_cycles != 0;
  tl->max_bytes = opts->max_bytes;

  size_t events = opts->ring_events ? opts->ring_events : TL_DEFAULT_EVENTS;
  uint64_t want = (uint64_t)events * TL_BYTES_PER_EVENT, cap = 64 * 1024;
  while (cap < want && cap < (1ull << 40)) cap <<= 1;
  tl->cap = cap;
  if ((tl->ring = malloc(cap)) == NULL) {
    hvd_err_set(err, "out of memory for a %llu-byte timeline ring", (unsigned long long)cap);
    tl_free(tl);
    return HVD_ERR_NO_MEMORY;
  }
  memset(tl->ring, 0, cap); /* touch it now rather than while producers run */

  tl->fd = open(opts->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (tl->fd < 0) {
    hvd_err_set(err, "cannot create %.256s%s: %s", opts->path,
                strlen(opts->path) > 256 ? "..." : "", strerror(errno));
    tl_free(tl);
    return HVD_ERR_INVALID_PARAM;
  }
  struct timespec rt;
  clock_gettime(CLOCK_REALTIME, &rt);
  tl->t0 = hvd_now_ns();
  unsigned long long epoch_us =
      (unsigned long long)rt.tv_sec * 1000000ull + (unsigned long long)rt.tv_nsec / 1000ull;
  ob_printf(tl,
            "{\"otherData\":{\"generator\":\"hvd\",\"format\":1,\"rank\":%d,"
            "\"start_time_since_epoch_in_micros\":%llu},\"displayTimeUnit\":\"ms\",\n"
            "\"traceEvents\":[\n",
            tl->rank, epoch_us);
  ob_printf(tl,
            "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":0,\"tid\":0,"
            "\"args\":{\"name\":\"hvd rank %d\",\"start_time_since_epoch_in_micros\":%llu}}",
            tl->rank, epoch_us);
  ob_str(tl, ",\n{\"name\":\"process_sort_index\",\"ph\":\"M\",\"pid\":0,\"tid\":0,"
             "\"args\":{\"sort_index\":0}}");
  flush_out(tl);
  if (tl->failed || tl->ob_failed) {
    hvd_err_set(err, "cannot write %s: %s", opts->path, strerror(errno));
    tl_free(tl);
    return HVD_ERR_INVALID_PARAM;
  }
  if (pthread_create(&tl->thread, NULL, writer_main, tl) != 0) {
    hvd_err_set(err, "cannot start the timeline writer thread");
    tl_free(tl);
    return HVD_ERR_INTERNAL;
  }
  *out = tl;
  return HVD_OK;
}

void hvd_timeline_close(hvd_timeline_t *tl) {
  if (tl == NULL) return;
  pthread_mutex_lock(&tl->wmu);
  tl->stop = 1;
  pthread_cond_signal(&tl->wcv);
  pthread_mutex_unlock(&tl->wmu);
  pthread_join(tl->thread, NULL);
  tl_free(tl);
}
