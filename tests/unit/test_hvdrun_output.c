/*
 * Tests of hvdrun's line splitter (tools/hvdrun/output.c): the rule that every rank
 * line reaches hvdrun's output whole, prefixed once, with its bytes untouched.
 *
 * The tools are not part of hvd_internal, so the source is included directly. Each
 * emitted unit is recorded separately, which lets the tests check both the bytes
 * and how they were cut (one emit = one write(2) in hvdrun).
 */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#include "tools/hvdrun/output.c"

#define MAX_UNITS 64

typedef struct sink {
  char *unit[MAX_UNITS];
  size_t len[MAX_UNITS];
  int n;
} sink_t;

static void record(void *arg, const char *data, size_t len) {
  sink_t *s = arg;
  cr_assert_lt(s->n, MAX_UNITS, "too many units emitted");
  s->unit[s->n] = malloc(len + 1);
  cr_assert_not_null(s->unit[s->n]);
  memcpy(s->unit[s->n], data, len);
  s->unit[s->n][len] = '\0';
  s->len[s->n] = len;
  s->n++;
}

static void sink_free(sink_t *s) {
  for (int i = 0; i < s->n; i++) free(s->unit[i]);
  s->n = 0;
}

/* Unit i equals the len bytes at want. */
static void expect_unit(const sink_t *s, int i, const void *want, size_t len) {
  cr_assert_lt(i, s->n, "unit %d was not emitted (only %d)", i, s->n);
  cr_assert_eq(s->len[i], len, "unit %d: %zu bytes, expected %zu", i, s->len[i], len);
  cr_assert(memcmp(s->unit[i], want, len) == 0, "unit %d differs: '%s'", i, s->unit[i]);
}

#define EXPECT_STR(s, i, str) expect_unit((s), (i), (str), sizeof(str) - 1)

static void feed_str(hvdrun_linebuf_t *lb, const char *str) {
  hvdrun_linebuf_feed(lb, str, strlen(str));
}

Test(hvdrun_output, whole_lines_in_one_chunk) {
  sink_t s = {0};
  hvdrun_linebuf_t lb;
  cr_assert_eq(hvdrun_linebuf_init(&lb, "[1]<stdout>:", 0, 1, record, &s), 0);
  feed_str(&lb, "hello\nworld\n\n");
  cr_assert_eq(s.n, 3);
  EXPECT_STR(&s, 0, "[1]<stdout>:hello\n");
  EXPECT_STR(&s, 1, "[1]<stdout>:world\n");
  EXPECT_STR(&s, 2, "[1]<stdout>:\n"); /* an empty line is still a line */
  cr_assert_eq(hvdrun_linebuf_pending(&lb), 0);
  hvdrun_linebuf_flush(&lb); /* nothing pending: nothing emitted */
  cr_assert_eq(s.n, 3);
  hvdrun_linebuf_free(&lb);
  sink_free(&s);
}

Test(hvdrun_output, partial_lines_across_chunks) {
  sink_t s = {0};
  hvdrun_linebuf_t lb;
  cr_assert_eq(hvdrun_linebuf_init(&lb, "[0]<stderr>:", 0, 1, record, &s), 0);
  feed_str(&lb, "he");
  feed_str(&lb, "l");
  cr_assert_eq(s.n, 0, "a partial line must not be emitted");
  cr_assert_eq(hvdrun_linebuf_pending(&lb), 3);
  feed_str(&lb, "lo\nwor");
  cr_assert_eq(s.n, 1);
  EXPECT_STR(&s, 0, "[0]<stderr>:hello\n");
  feed_str(&lb, "ld\nnext");
  cr_assert_eq(s.n, 2);
  EXPECT_STR(&s, 1, "[0]<stderr>:world\n");
  feed_str(&lb, "");
  cr_assert_eq(s.n, 2);
  feed_str(&lb, "\n");
  EXPECT_STR(&s, 2, "[0]<stderr>:next\n");
  hvdrun_linebuf_free(&lb);
  sink_free(&s);
}

Test(hvdrun_output, byte_at_a_time) {
  sink_t s = {0};
  hvdrun_linebuf_t lb;
  const char *text = "ab\ncd\n";
  cr_assert_eq(hvdrun_linebuf_init(&lb, "[7]<stdout>:", 0, 1, record, &s), 0);
  for (size_t i = 0; i < strlen(text); i++) hvdrun_linebuf_feed(&lb, text + i, 1);
  cr_assert_eq(s.n, 2);
  EXPECT_STR(&s, 0, "[7]<stdout>:ab\n");
  EXPECT_STR(&s, 1, "[7]<stdout>:cd\n");
  hvdrun_linebuf_free(&lb);
  sink_free(&s);
}

Test(hvdrun_output, carriage_return_stays_inside_the_line) {
  sink_t s = {0};
  hvdrun_linebuf_t lb;
  cr_assert_eq(hvdrun_linebuf_init(&lb, "[2]<stdout>:", 0, 1, record, &s), 0);
  feed_str(&lb, "10%\r50%\r100%\r\n");
  cr_assert_eq(s.n, 1, "\\r must not end a line");
  EXPECT_STR(&s, 0, "[2]<stdout>:10%\r50%\r100%\r\n");
  hvdrun_linebuf_free(&lb);
  sink_free(&s);
}

Test(hvdrun_output, invalid_utf8_and_nul_pass_through) {
  sink_t s = {0};
  hvdrun_linebuf_t lb;
  static const char in[] = "a\0b\xff\xfe\xc3\n\x80\0\n"; /* NUL, bad UTF-8 */
  static const char out0[] = "[3]<stdout>:a\0b\xff\xfe\xc3\n";
  static const char out1[] = "[3]<stdout>:\x80\0\n";
  cr_assert_eq(hvdrun_linebuf_init(&lb, "[3]<stdout>:", 0, 1, record, &s), 0);
  hvdrun_linebuf_feed(&lb, in, 3); /* split in the middle of the bytes, too */
  hvdrun_linebuf_feed(&lb, in + 3, sizeof in - 1 - 3);
  cr_assert_eq(s.n, 2);
  expect_unit(&s, 0, out0, sizeof out0 - 1);
  expect_unit(&s, 1, out1, sizeof out1 - 1);
  hvdrun_linebuf_free(&lb);
  sink_free(&s);
}

Test(hvdrun_output, flush_at_eof_appends_newline) {
  sink_t s = {0};
  hvdrun_linebuf_t lb;
  cr_assert_eq(hvdrun_linebuf_init(&lb, "[5]<stdout>:", 0, 1, record, &s), 0);
  feed_str(&lb, "done\nno newline at the end");
  cr_assert_eq(s.n, 1);
  hvdrun_linebuf_flush(&lb);
  cr_assert_eq(s.n, 2);
  EXPECT_STR(&s, 1, "[5]<stdout>:no newline at the end\n");
  cr_assert_eq(hvdrun_linebuf_pending(&lb), 0);
  hvdrun_linebuf_flush(&lb); /* a second flush has nothing to say */
  cr_assert_eq(s.n, 2);
  hvdrun_linebuf_free(&lb);
  sink_free(&s);
}

Test(hvdrun_output, untagged_output_is_byte_exact) {
  sink_t s = {0};
  hvdrun_linebuf_t lb;
  cr_assert_eq(hvdrun_linebuf_init(&lb, "", 4, 0, record, &s), 0);
  feed_str(&lb, "ab\ncdefgh");
  hvdrun_linebuf_flush(&lb);
  cr_assert_eq(s.n, 3);
  EXPECT_STR(&s, 0, "ab\n");
  EXPECT_STR(&s, 1, "cdef"); /* a long-line piece: no '\n' invented */
  EXPECT_STR(&s, 2, "gh");   /* the remainder at EOF: none either */
  hvdrun_linebuf_free(&lb);
  sink_free(&s);
}

Test(hvdrun_output, long_line_is_split_with_prefix_on_each_piece) {
  sink_t s = {0};
  hvdrun_linebuf_t lb;
  const size_t total = 2 * HVDRUN_MAX_LINE + 100;
  char *line = malloc(total + 1);
  cr_assert_not_null(line);
  for (size_t i = 0; i < total; i++) line[i] = (char)('a' + i % 26);
  line[total] = '\n';

  cr_assert_eq(hvdrun_linebuf_init(&lb, "[4]<stdout>:", 0, 1, record, &s), 0);
  /* Feed in odd-sized chunks so pieces do not line up with them. */
  for (size_t off = 0; off < total + 1;) {
    size_t n = total + 1 - off < 7777 ? total + 1 - off : 7777;
    hvdrun_linebuf_feed(&lb, line + off, n);
    off += n;
  }
  cr_assert_eq(s.n, 3);
  size_t off = 0;
  for (int i = 0; i < 3; i++) {
    size_t body = i < 2 ? HVDRUN_MAX_LINE : 100;
    cr_assert_eq(s.len[i], 12 + body + 1, "piece %d has %zu bytes", i, s.len[i]);
    cr_assert(memcmp(s.unit[i], "[4]<stdout>:", 12) == 0, "piece %d lacks the prefix", i);
    cr_assert(memcmp(s.unit[i] + 12, line + off, body) == 0, "piece %d content", i);
    cr_assert_eq(s.unit[i][12 + body], '\n');
    off += body;
  }
  free(line);
  hvdrun_linebuf_free(&lb);
  sink_free(&s);
}

Test(hvdrun_output, line_of_exactly_max_length_is_one_line) {
  sink_t s = {0};
  hvdrun_linebuf_t lb;
  cr_assert_eq(hvdrun_linebuf_init(&lb, "[0]<stdout>:", 8, 1, record, &s), 0);
  feed_str(&lb, "12345678");
  cr_assert_eq(s.n, 0, "a full line must wait: its newline may be next");
  feed_str(&lb, "\n123456789\n");
  cr_assert_eq(s.n, 3);
  EXPECT_STR(&s, 0, "[0]<stdout>:12345678\n");
  EXPECT_STR(&s, 1, "[0]<stdout>:12345678\n");
  EXPECT_STR(&s, 2, "[0]<stdout>:9\n");
  hvdrun_linebuf_free(&lb);
  sink_free(&s);
}

Test(hvdrun_output, long_line_flushed_at_eof) {
  sink_t s = {0};
  hvdrun_linebuf_t lb;
  cr_assert_eq(hvdrun_linebuf_init(&lb, "[1]<stderr>:", 4, 1, record, &s), 0);
  feed_str(&lb, "abcdefghij");
  cr_assert_eq(s.n, 2);
  hvdrun_linebuf_flush(&lb);
  cr_assert_eq(s.n, 3);
  EXPECT_STR(&s, 0, "[1]<stderr>:abcd\n");
  EXPECT_STR(&s, 1, "[1]<stderr>:efgh\n");
  EXPECT_STR(&s, 2, "[1]<stderr>:ij\n");
  hvdrun_linebuf_free(&lb);
  sink_free(&s);
}

Test(hvdrun_output, prefix_too_long_is_refused) {
  sink_t s = {0};
  hvdrun_linebuf_t lb;
  char prefix[HVDRUN_MAX_PREFIX + 2];
  memset(prefix, 'p', sizeof prefix - 1);
  prefix[sizeof prefix - 1] = '\0';
  cr_assert_eq(hvdrun_linebuf_init(&lb, prefix, 0, 1, record, &s), -1);
}
