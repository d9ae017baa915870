/*
 * Line splitting for rank output: turns the arbitrary chunks read from a rank's
 * stdout or stderr pipe into whole lines, each handed to a callback as one buffer
 * (prefix + line + '\n') so that the caller can write it with a single write.
 *
 * Pure: no I/O, no global state; the only side effects are the emit callback and
 * memory allocation. Unit-tested in tests/unit/test_hvdrun_output.c.
 */
#ifndef HVDRUN_OUTPUT_H
#define HVDRUN_OUTPUT_H

#include <stddef.h>

/* Longest line emitted in one piece (bytes of content, prefix and '\n' excluded). */
#define HVDRUN_MAX_LINE (64 * 1024)
/* Longest prefix accepted by hvdrun_linebuf_init. */
#define HVDRUN_MAX_PREFIX 64

/* Receives one complete output unit: the prefix, the line's bytes, and '\n' (unless
 * the linebuf was made with terminate = 0 and the piece had none). data is only
 * valid during the call. */
typedef void (*hvdrun_emit_fn)(void *arg, const char *data, size_t len);

typedef struct hvdrun_linebuf {
  char *buf;         /* prefix, then the pending partial line, then room for '\n' */
  size_t prefix_len; /* bytes of prefix at the start of buf */
  size_t len;        /* bytes of the pending partial line */
  size_t cap;        /* bytes allocated for buf */
  size_t max_line;   /* longest piece emitted as one line */
  int terminate;     /* append '\n' to pieces that lack one (long lines, EOF) */
  hvdrun_emit_fn emit;
  void *arg;
} hvdrun_linebuf_t;

/* Prepare lb to split lines, prefixing each with prefix ("" for none, at most
 * HVDRUN_MAX_PREFIX bytes). A line longer than max_line bytes (0 means
 * HVDRUN_MAX_LINE) is emitted in pieces of max_line bytes, each with the prefix.
 * terminate = 1: pieces without a newline of their own (long-line pieces, the
 * remainder at EOF) get one appended, so every emitted unit is a whole line;
 * terminate = 0: bytes are emitted exactly as fed (for untagged output).
 * Returns 0, or -1 if prefix is too long or memory is short (lb then needs no free). */
int hvdrun_linebuf_init(hvdrun_linebuf_t *lb, const char *prefix, size_t max_line,
                        int terminate, hvdrun_emit_fn emit, void *arg);

/* Feed n bytes (any bytes: NUL, '\r' and invalid UTF-8 pass through unchanged).
 * Emits every line completed by these bytes, in order; keeps the rest pending.
 * Never fails: if memory runs short, pending bytes are emitted as a piece early. */
void hvdrun_linebuf_feed(hvdrun_linebuf_t *lb, const void *data, size_t n);

/* End of stream: emit the pending partial line, if any. lb stays usable. */
void hvdrun_linebuf_flush(hvdrun_linebuf_t *lb);

/* Bytes fed but not emitted yet. */
size_t hvdrun_linebuf_pending(const hvdrun_linebuf_t *lb);

void hvdrun_linebuf_free(hvdrun_linebuf_t *lb);

#endif
