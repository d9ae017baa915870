#include "common/strmap.h"

#include <stdlib.h>
#include <string.h>

static const char tomb_marker;
#define TOMB (&tomb_marker)

uint64_t hvd_strhash(const char *s) {
  uint64_t h = 14695981039346656037ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

void hvd_strmap_init(hvd_strmap_t *m) { memset(m, 0, sizeof *m); }
void hvd_strmap_free(hvd_strmap_t *m) {
  free(m->slots);
  memset(m, 0, sizeof *m);
}

static hvd_strmap_slot_t *find(const hvd_strmap_t *m, const char *key, uint64_t h) {
  if (m->cap == 0) return NULL;
  size_t mask = m->cap - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    hvd_strmap_slot_t *s = &m->slots[i];
    if (s->key == NULL) return NULL;
    if (s->key != TOMB && s->hash == h && strcmp(s->key, key) == 0) return s;
  }
}

void *hvd_strmap_get(const hvd_strmap_t *m, const char *key) {
  hvd_strmap_slot_t *s = find(m, key, hvd_strhash(key));
  return s ? s->value : NULL;
}

static int grow(hvd_strmap_t *m, size_t cap) {
  hvd_strmap_slot_t *old = m->slots;
  size_t oldcap = m->cap;
  hvd_strmap_slot_t *slots = calloc(cap, sizeof *slots);
  if (slots == NULL) return -1;
  m->slots = slots;
  m->cap = cap;
  m->used = 0;
  m->tombs = 0;
  for (size_t i = 0; i < oldcap; i++)
    if (old[i].key != NULL && old[i].key != TOMB) {
      size_t j = old[i].hash & (cap - 1);
      while (slots[j].key != NULL) j = (j + 1) & (cap - 1);
      slots[j] = old[i];
      m->used++;
    }
  free(old);
  return 0;
}

int hvd_strmap_put(hvd_strmap_t *m, const char *key, void *value) {
  uint64_t h = hvd_strhash(key);
  hvd_strmap_slot_t *s = find(m, key, h);
  if (s) {
    s->value = value;
    return 0;
  }
  if ((m->used + m->tombs + 1) * 4 > m->cap * 3) {
    size_t cap = m->cap ? m->cap : 16;
    while ((m->used + 1) * 2 > cap) cap *= 2;
    if (grow(m, cap) != 0) return -1;
  }
  size_t mask = m->cap - 1;
  size_t i = h & mask;
  while (m->slots[i].key != NULL && m->slots[i].key != TOMB) i = (i + 1) & mask;
  if (m->slots[i].key == TOMB) m->tombs--;
  m->slots[i] = (hvd_strmap_slot_t){.key = key, .hash = h, .value = value};
  m->used++;
  return 0;
}

void *hvd_strmap_del(hvd_strmap_t *m, const char *key) {
  hvd_strmap_slot_t *s = find(m, key, hvd_strhash(key));
  if (s == NULL) return NULL;
  void *v = s->value;
  s->key = TOMB;
  s->value = NULL;
  m->used--;
  m->tombs++;
  return v;
}

size_t hvd_strmap_next(const hvd_strmap_t *m, size_t i, const char **key, void **value) {
  for (; i < m->cap; i++) {
    const hvd_strmap_slot_t *s = &m->slots[i];
    if (s->key != NULL && s->key != TOMB) {
      *key = s->key;
      *value = s->value;
      return i + 1;
    }
  }
  return 0;
}
