/*
 * Recursive-descent JSON reader into a tree of json_t, and a compact writer. Numbers
 * keep their text so that merge copies args through unchanged.
 */
#include "json.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define JSON_DEPTH_MAX 256

typedef struct parser {
  const char *s, *p, *e;
  char *err;
  size_t errlen;
  int failed;
} parser_t;

__attribute__((format(printf, 2, 3))) static void fail(parser_t *ps, const char *fmt, ...) {
  if (ps->failed) return;
  ps->failed = 1;
  size_t line = 1, col = 1;
  for (const char *q = ps->s; q < ps->p && q < ps->e; q++) {
    if (*q == '\n') {
      line++;
      col = 1;
    } else {
      col++;
    }
  }
  char what[200];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  if (ps->err) snprintf(ps->err, ps->errlen, "line %zu col %zu: %s", line, col, what);
}

static void ws(parser_t *ps) {
  while (ps->p < ps->e && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
    ps->p++;
}

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

static size_t put_utf8(char *o, unsigned cp) {
  if (cp < 0x80) {
    o[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (char)(0xc0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (char)(0xe0 | (cp >> 12));
    o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
  }
  o[0] = (char)(0xf0 | (cp >> 18));
  o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
  o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
  o[3] = (char)(0x80 | (cp & 0x3f));
  return 4;
}

static int hex4(parser_t *ps, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    if (ps->p >= ps->e) return -1;
    char c = *ps->p++;
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
    else return -1;
  }
  *out = v;
  return 0;
}

/* A string literal at ps->p (the opening quote); decoded into a new buffer. */
static char *parse_string(parser_t *ps, size_t *len) {
  ps->p++;
  const char *start = ps->p;
  /* The decoded text is never longer than the literal. */
  const char *q = start;
  while (q < ps->e && *q != '"') q += (*q == '\\' && q + 1 < ps->e) ? 2 : 1;
  char *out = malloc((size_t)(q - start) + 1), *o = out;
  if (out == NULL) {
    fail(ps, "out of memory");
    return NULL;
  }
  for (;;) {
    if (ps->p >= ps->e) {
      fail(ps, "unterminated string");
      goto bad;
    }
    unsigned char c = (unsigned char)*ps->p;
    if (c == '"') {
      ps->p++;
      break;
    }
    if (c < 0x20) {
      fail(ps, "control character in a string");
      goto bad;
    }
    if (c == '\\') {
      ps->p++;
      if (ps->p >= ps->e) {
        fail(ps, "unterminated string");
        goto bad;
      }
      char x = *ps->p++;
      switch (x) {
      case '"': *o++ = '"'; break;
      case '\\': *o++ = '\\'; break;
      case '/': *o++ = '/'; break;
      case 'b': *o++ = '\b'; break;
      case 'f': *o++ = '\f'; break;
      case 'n': *o++ = '\n'; break;
      case 'r': *o++ = '\r'; break;
      case 't': *o++ = '\t'; break;
      case 'u': {
        unsigned cp;
        if (hex4(ps, &cp) != 0) {
          fail(ps, "bad \\u escape");
          goto bad;
        }
        if (cp >= 0xd800 && cp <= 0xdbff && ps->e - ps->p >= 6 && ps->p[0] == '\\' &&
            ps->p[1] == 'u') {
          const char *save = ps->p;
          unsigned lo;
          ps->p += 2;
          if (hex4(ps, &lo) == 0 && lo >= 0xdc00 && lo <= 0xdfff)
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          else
            ps->p = save;
        }
        if (cp >= 0xd800 && cp <= 0xdfff) cp = 0xfffd; /* lone surrogate */
        o += put_utf8(o, cp);
        break;
      }
      default: fail(ps, "bad escape \\%c", x); goto bad;
      }
      continue;
    }
    size_t k = utf8_seq((const unsigned char *)ps->p, (size_t)(ps->e - ps->p));
    if (k == 0) {
      fail(ps, "invalid UTF-8");
      goto bad;
    }
    memcpy(o, ps->p, k);
    o += k;
    ps->p += k;
  }
  *o = '\0';
  *len = (size_t)(o - out);
  return out;
bad:
  free(out);
  return NULL;
}

static int parse_value(parser_t *ps, json_t *v, int depth);

static int push_item(parser_t *ps, json_t *v, size_t *cap) {
  if (v->n < *cap) return 0;
  size_t nc = *cap ? *cap * 2 : 4;
  json_t *items = realloc(v->items, nc * sizeof *items);
  if (items == NULL) {
    fail(ps, "out of memory");
    return -1;
  }
  v->items = items;
  if (v->type == JSON_OBJECT) {
    char **keys = realloc(v->keys, nc * sizeof *keys);
    if (keys == NULL) {
      fail(ps, "out of memory");
      return -1;
    }
    v->keys = keys;
  }
  *cap = nc;
  return 0;
}

static int parse_container(parser_t *ps, json_t *v, int depth) {
  int obj = *ps->p == '{';
  char close = obj ? '}' : ']';
  v->type = obj ? JSON_OBJECT : JSON_ARRAY;
  size_t cap = 0;
  ps->p++;
  ws(ps);
  if (ps->p < ps->e && *ps->p == close) {
    ps->p++;
    return 0;
  }
  for (;;) {
    if (push_item(ps, v, &cap) != 0) return -1;
    json_t *it = &v->items[v->n];
    memset(it, 0, sizeof *it);
    if (obj) {
      ws(ps);
      if (ps->p >= ps->e || *ps->p != '"') {
        fail(ps, "expected a member name");
        return -1;
      }
      size_t kl;
      char *k = parse_string(ps, &kl);
      if (k == NULL) return -1;
      v->keys[v->n] = k;
      ws(ps);
      if (ps->p >= ps->e || *ps->p != ':') {
        v->n++; /* so the key is freed */
        fail(ps, "expected ':'");
        return -1;
      }
      ps->p++;
    }
    v->n++;
    if (parse_value(ps, it, depth + 1) != 0) return -1;
    ws(ps);
    if (ps->p < ps->e && *ps->p == ',') {
      ps->p++;
      continue;
    }
    if (ps->p < ps->e && *ps->p == close) {
      ps->p++;
      return 0;
    }
    fail(ps, "expected ',' or '%c'", close);
    return -1;
  }
}

static int parse_number(parser_t *ps, json_t *v) {
  const char *s = ps->p, *p = ps->p, *e = ps->e;
  if (p < e && *p == '-') p++;
  if (p < e && *p == '0') {
    p++;
  } else if (p < e && *p >= '1' && *p <= '9') {
    while (p < e && *p >= '0' && *p <= '9') p++;
  } else {
    fail(ps, "unexpected character");
    return -1;
  }
  if (p < e && *p == '.') {
    const char *d = ++p;
    while (p < e && *p >= '0' && *p <= '9') p++;
    if (p == d) {
      ps->p = p;
      fail(ps, "digits expected after '.'");
      return -1;
    }
  }
  if (p < e && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < e && (*p == '+' || *p == '-')) p++;
    const char *d = p;
    while (p < e && *p >= '0' && *p <= '9') p++;
    if (p == d) {
      ps->p = p;
      fail(ps, "digits expected in the exponent");
      return -1;
    }
  }
  size_t n = (size_t)(p - s);
  v->type = JSON_NUMBER;
  v->str = malloc(n + 1);
  if (v->str == NULL) {
    fail(ps, "out of memory");
    return -1;
  }
  memcpy(v->str, s, n);
  v->str[n] = '\0';
  v->len = n;
  v->num = strtod(v->str, NULL);
  ps->p = p;
  return 0;
}

static int parse_value(parser_t *ps, json_t *v, int depth) {
  ws(ps);
  if (depth > JSON_DEPTH_MAX) {
    fail(ps, "nested too deeply");
    return -1;
  }
  if (ps->p >= ps->e) {
    fail(ps, "unexpected end of input");
    return -1;
  }
  char c = *ps->p;
  if (c == '{' || c == '[') return parse_container(ps, v, depth);
  if (c == '"') {
    v->type = JSON_STRING;
    v->str = parse_string(ps, &v->len);
    return v->str ? 0 : -1;
  }
  static const struct {
    const char *w;
    json_type_t t;
  } words[] = {{"true", JSON_TRUE}, {"false", JSON_FALSE}, {"null", JSON_NULL}};
  for (size_t i = 0; i < 3; i++) {
    size_t n = strlen(words[i].w);
    if ((size_t)(ps->e - ps->p) >= n && memcmp(ps->p, words[i].w, n) == 0) {
      v->type = words[i].t;
      ps->p += n;
      return 0;
    }
  }
  return parse_number(ps, v);
}

static void free_inner(json_t *v) {
  for (size_t i = 0; i < v->n; i++) {
    free_inner(&v->items[i]);
    if (v->keys) free(v->keys[i]);
  }
  free(v->items);
  free(v->keys);
  free(v->str);
}

void json_free(json_t *v) {
  if (v == NULL) return;
  free_inner(v);
  free(v);
}

json_t *json_parse(const char *text, size_t len, char *err, size_t errlen) {
  parser_t ps = {.s = text, .p = text, .e = text + len, .err = err, .errlen = errlen};
  json_t *v = calloc(1, sizeof *v);
  if (v == NULL) {
    if (err) snprintf(err, errlen, "out of memory");
    return NULL;
  }
  if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) ps.p += 3; /* BOM */
  if (parse_value(&ps, v, 0) == 0) {
    ws(&ps);
    if (ps.p != ps.e) fail(&ps, "data after the end of the document");
  }
  if (ps.failed) {
    json_free(v);
    return NULL;
  }
  return v;
}

json_t *json_parse_file(const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return NULL;
  }
  size_t cap = 1 << 20, n = 0;
  char *buf = malloc(cap);
  for (;;) {
    if (buf == NULL) break;
    if (n == cap) {
      char *nb = realloc(buf, cap * 2);
      if (nb == NULL) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = nb;
      cap *= 2;
    }
    size_t r = fread(buf + n, 1, cap - n, f);
    n += r;
    if (r == 0) break;
  }
  int rerr = ferror(f);
  fclose(f);
  if (buf == NULL || rerr) {
    snprintf(err, errlen, "%s: %s", path, buf ? "read error" : "out of memory");
    free(buf);
    return NULL;
  }
  char msg[256];
  json_t *v = json_parse(buf, n, msg, sizeof msg);
  free(buf);
  if (v == NULL) snprintf(err, errlen, "%s: not valid JSON: %s", path, msg);
  return v;
}

const json_t *json_get(const json_t *v, const char *key) {
  if (v == NULL || v->type != JSON_OBJECT) return NULL;
  for (size_t i = 0; i < v->n; i++)
    if (strcmp(v->keys[i], key) == 0) return &v->items[i];
  return NULL;
}

const char *json_get_str(const json_t *v, const char *key) {
  const json_t *m = json_get(v, key);
  return m && m->type == JSON_STRING ? m->str : NULL;
}

double json_get_num(const json_t *v, const char *key, double dflt) {
  const json_t *m = json_get(v, key);
  return m && m->type == JSON_NUMBER ? m->num : dflt;
}

void json_write_string(FILE *f, const char *s, size_t n) {
  fputc('"', f);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      fputc('\\', f);
      fputc(c, f);
    } else if (c < 0x20) {
      fprintf(f, "\\u%04x", c);
    } else {
      fputc(c, f); /* the text came from a parsed document: valid UTF-8 */
    }
  }
  fputc('"', f);
}

void json_write(FILE *f, const json_t *v) {
  switch (v->type) {
  case JSON_NULL: fputs("null", f); break;
  case JSON_FALSE: fputs("false", f); break;
  case JSON_TRUE: fputs("true", f); break;
  case JSON_NUMBER: fputs(v->str, f); break;
  case JSON_STRING: json_write_string(f, v->str, v->len); break;
  case JSON_ARRAY:
  case JSON_OBJECT:
    fputc(v->type == JSON_ARRAY ? '[' : '{', f);
    for (size_t i = 0; i < v->n; i++) {
      if (i) fputc(',', f);
      if (v->type == JSON_OBJECT) {
        json_write_string(f, v->keys[i], strlen(v->keys[i]));
        fputc(':', f);
      }
      json_write(f, &v->items[i]);
    }
    fputc(v->type == JSON_ARRAY ? ']' : '}', f);
    break;
  }
}
