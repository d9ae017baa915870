/*
 * Line splitter for rank output (see output.h).
 *
 * The buffer holds the prefix once, at its start, followed by the pending partial
 * line. Bytes are appended after it; when a '\n' arrives the buffer from offset 0
 * (prefix + line + '\n') is exactly the unit to emit, so each line costs one
 * memcpy and reaches the caller as one contiguous buffer. The buffer grows on
 * demand (ranks that print short lines never pay for a 64 KiB buffer) up to
 * prefix + max_line + 1; a line that would outgrow it is emitted in pieces.
 */
#include "tools/hvdrun/output.h"

#include <stdlib.h>
#include <string.h>

#define LINEBUF_INITIAL 256

int hvdrun_linebuf_init(hvdrun_linebuf_t *lb, const char *prefix, size_t max_line,
                        int terminate, hvdrun_emit_fn emit, void *arg) {
  size_t plen = prefix != NULL ? strlen(prefix) : 0;
  if (plen > HVDRUN_MAX_PREFIX) return -1;
  if (max_line == 0) max_line = HVDRUN_MAX_LINE;

  memset(lb, 0, sizeof *lb);
  lb->cap = plen + (max_line < LINEBUF_INITIAL ? max_line : LINEBUF_INITIAL) + 1;
  lb->buf = malloc(lb->cap);
  if (lb->buf == NULL) return -1;
  if (plen > 0) memcpy(lb->buf, prefix, plen);
  lb->prefix_len = plen;
  lb->max_line = max_line;
  lb->terminate = terminate;
  lb->emit = emit;
  lb->arg = arg;
  return 0;
}

void hvdrun_linebuf_free(hvdrun_linebuf_t *lb) {
  free(lb->buf);
  lb->buf = NULL;
  lb->len = lb->cap = 0;
}

size_t hvdrun_linebuf_pending(const hvdrun_linebuf_t *lb) { return lb->len; }

/* Emit prefix + pending bytes, adding '\n' if newline is set; empties the line. */
static void emit_pending(hvdrun_linebuf_t *lb, int newline) {
  size_t n = lb->prefix_len + lb->len;
  if (newline) lb->buf[n++] = '\n';
  lb->emit(lb->arg, lb->buf, n);
  lb->len = 0;
}

/* Room for `want` more content bytes (plus the '\n'), growing if possible. Returns
 * how many of them fit now, which is > 0 unless the pending line must be emitted
 * first to make room. */
static size_t make_room(hvdrun_linebuf_t *lb, size_t want) {
  size_t used = lb->prefix_len + lb->len + 1; /* +1: room for the '\n' */
  if (used + want > lb->cap) {
    size_t limit = lb->prefix_len + lb->max_line + 1;
    size_t ncap = lb->cap * 2;
    if (ncap < used + want) ncap = used + want;
    if (ncap > limit) ncap = limit;
    if (ncap > lb->cap) {
      char *nbuf = realloc(lb->buf, ncap);
      if (nbuf != NULL) {
        lb->buf = nbuf;
        lb->cap = ncap;
      }
      /* On failure keep the smaller buffer: the line goes out in smaller pieces. */
    }
  }
  return lb->cap - used < want ? lb->cap - used : want;
}

/* Append [p, p + n), which holds no '\n', to the pending line. */
static void append(hvdrun_linebuf_t *lb, const char *p, size_t n) {
  while (n > 0) {
    if (lb->len == lb->max_line) { /* full and the line goes on: emit a piece */
      emit_pending(lb, lb->terminate);
      continue;
    }
    size_t want = lb->max_line - lb->len;
    if (want > n) want = n;
    size_t take = make_room(lb, want);
    if (take == 0) { /* out of memory with a full buffer */
      emit_pending(lb, lb->terminate);
      continue;
    }
    memcpy(lb->buf + lb->prefix_len + lb->len, p, take);
    lb->len += take;
    p += take;
    n -= take;
  }
}

void hvdrun_linebuf_feed(hvdrun_linebuf_t *lb, const void *data, size_t n) {
  const char *p = data;
  const char *end = p + n;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *stop = nl != NULL ? nl : end;
    append(lb, p, (size_t)(stop - p));
    if (nl == NULL) break;
    emit_pending(lb, 1); /* the room for '\n' is always reserved */
    p = nl + 1;
  }
}

void hvdrun_linebuf_flush(hvdrun_linebuf_t *lb) {
  if (lb->len > 0) emit_pending(lb, lb->terminate);
}
