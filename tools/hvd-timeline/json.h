/*
 * A small JSON reader (whole document into a tree) and string writer for
 * hvd-timeline. Strict RFC 8259: a file that this accepts is one that Perfetto and
 * chrome://tracing accept as JSON.
 */
#ifndef HVD_TIMELINE_JSON_H
#define HVD_TIMELINE_JSON_H

#include <stddef.h>
#include <stdio.h>

typedef enum { JSON_NULL, JSON_FALSE, JSON_TRUE, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_type_t;

typedef struct json json_t;
struct json {
  json_type_t type;
  double num;    /* JSON_NUMBER */
  char *str;     /* JSON_STRING: decoded UTF-8, NUL-terminated (len excludes it);
                    JSON_NUMBER: the number's text as written */
  size_t len;
  size_t n;      /* JSON_ARRAY / JSON_OBJECT: items */
  json_t *items; /* n values */
  char **keys;   /* JSON_OBJECT: n keys (NUL-terminated, decoded) */
};

/* Parse text[0..len). NULL on error, with "line L col C: what" in err. */
json_t *json_parse(const char *text, size_t len, char *err, size_t errlen);
/* Read and parse a whole file. NULL on error (message in err, naming the file). */
json_t *json_parse_file(const char *path, char *err, size_t errlen);
void json_free(json_t *v);

/* Member of an object by key, or NULL (also when v is not an object). */
const json_t *json_get(const json_t *v, const char *key);
/* The string of a JSON_STRING member, or NULL. */
const char *json_get_str(const json_t *v, const char *key);
/* The value of a number member; dflt if absent or not a number. */
double json_get_num(const json_t *v, const char *key, double dflt);

/* Write s (n bytes) as a JSON string literal. */
void json_write_string(FILE *f, const char *s, size_t n);
/* Write v compactly. */
void json_write(FILE *f, const json_t *v);

#endif
