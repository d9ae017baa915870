/*
 * strmap: a hash map from NUL-terminated strings to pointers (open addressing,
 * linear probing, tombstones, FNV-1a). Keys are not copied: the caller keeps each
 * key alive while it is in the map (usually the key is a field of the value).
 * Not thread-safe.
 */
#ifndef HVD_COMMON_STRMAP_H
#define HVD_COMMON_STRMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct hvd_strmap_slot {
  const char *key; /* NULL = empty; HVD_STRMAP_TOMB = deleted */
  uint64_t hash;
  void *value;
} hvd_strmap_slot_t;

typedef struct hvd_strmap {
  hvd_strmap_slot_t *slots;
  size_t cap;  /* power of two, or 0 */
  size_t used; /* live keys */
  size_t tombs;
} hvd_strmap_t;

uint64_t hvd_strhash(const char *s);
void hvd_strmap_init(hvd_strmap_t *m);
void hvd_strmap_free(hvd_strmap_t *m);
void *hvd_strmap_get(const hvd_strmap_t *m, const char *key);
/* Insert or replace. Returns 0, or -1 when out of memory. */
int hvd_strmap_put(hvd_strmap_t *m, const char *key, void *value);
/* Remove; returns the old value or NULL. */
void *hvd_strmap_del(hvd_strmap_t *m, const char *key);

/* Iterate: for (size_t i = 0; (i = hvd_strmap_next(m, i, &k, &v)) != 0;) ... */
size_t hvd_strmap_next(const hvd_strmap_t *m, size_t i, const char **key, void **value);

#endif
