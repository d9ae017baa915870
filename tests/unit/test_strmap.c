/*
 * common/strmap: the string -> pointer hash map, checked against a plain array
 * reference under long random sequences of put / replace / get / del, plus iteration,
 * tombstone reuse (churn must not grow the table), growth to many keys, and the
 * documented details (keys are not copied, FNV-1a hash values).
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/strmap.h"

static uint64_t rng = 0x243f6a8885a308d3ull;
static uint64_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

/* Reference: keys[i] is present iff ref[i] != NULL (values are never NULL here). */
typedef struct {
  int n;
  char (*keys)[24];
  void **ref;
} model_t;

static void model_init(model_t *md, int n, const char *fmt) {
  md->n = n;
  md->keys = calloc((size_t)n, sizeof *md->keys);
  md->ref = calloc((size_t)n, sizeof *md->ref);
  cr_assert(md->keys && md->ref);
  for (int i = 0; i < n; i++) snprintf(md->keys[i], sizeof md->keys[i], fmt, i);
}

static void model_free(model_t *md) {
  free(md->keys);
  free(md->ref);
}

static size_t model_count(const model_t *md) {
  size_t k = 0;
  for (int i = 0; i < md->n; i++) k += md->ref[i] != NULL;
  return k;
}

static int model_index(const model_t *md, const char *key) {
  /* keys are "<prefix><number>"; find by scanning (the reference is deliberately dumb) */
  for (int i = 0; i < md->n; i++)
    if (strcmp(md->keys[i], key) == 0) return i;
  return -1;
}

/* Full comparison: every key's lookup, the count, and one iteration pass. */
static void check_all(const hvd_strmap_t *m, const model_t *md) {
  size_t live = model_count(md);
  cr_assert_eq(m->used, live, "used %zu, reference %zu", m->used, live);
  cr_assert(m->cap == 0 || (m->cap & (m->cap - 1)) == 0, "cap %zu not a power of two", m->cap);
  cr_assert((m->used + m->tombs) * 4 <= m->cap * 3 || m->cap == 0, "load factor: used %zu tombs %zu cap %zu",
            m->used, m->tombs, m->cap);
  /* every occupied slot is a live key or a counted tombstone */
  size_t occupied = 0;
  for (size_t i = 0; i < m->cap; i++) occupied += m->slots[i].key != NULL;
  cr_assert_eq(occupied, m->used + m->tombs, "occupied %zu, used %zu + tombs %zu", occupied, m->used, m->tombs);
  for (int i = 0; i < md->n; i++) cr_assert_eq(hvd_strmap_get(m, md->keys[i]), md->ref[i], "key %s", md->keys[i]);
  char *seen = calloc((size_t)md->n, 1);
  size_t it = 0;
  const char *k;
  void *v;
  for (size_t i = 0; (i = hvd_strmap_next(m, i, &k, &v)) != 0;) {
    int x = model_index(md, k);
    cr_assert(x >= 0, "iteration yields unknown key %s", k);
    cr_assert(!seen[x], "iteration yields %s twice", k);
    seen[x] = 1;
    cr_assert_eq(k, (const char *)md->keys[x], "the stored key pointer is the caller's");
    cr_assert_eq(v, md->ref[x]);
    it++;
  }
  cr_assert_eq(it, live, "iteration visited %zu of %zu", it, live);
  free(seen);
}

Test(strmap, empty_map) {
  hvd_strmap_t m;
  hvd_strmap_init(&m);
  cr_assert_null(hvd_strmap_get(&m, "x"));
  cr_assert_null(hvd_strmap_del(&m, "x"));
  const char *k;
  void *v;
  cr_assert_eq(hvd_strmap_next(&m, 0, &k, &v), 0);
  hvd_strmap_free(&m);
  hvd_strmap_free(&m); /* free leaves an empty map: freeing again is harmless */
  cr_assert_eq(m.cap, 0);
}

Test(strmap, put_get_replace_del) {
  hvd_strmap_t m;
  hvd_strmap_init(&m);
  int a = 1, b = 2, c = 3;
  cr_assert_eq(hvd_strmap_put(&m, "alpha", &a), 0);
  cr_assert_eq(hvd_strmap_put(&m, "beta", &b), 0);
  cr_assert_eq(hvd_strmap_put(&m, "", &c), 0); /* the empty string is a key */
  cr_assert_eq(m.used, 3);
  cr_assert_eq(hvd_strmap_get(&m, "alpha"), &a);
  cr_assert_eq(hvd_strmap_get(&m, "beta"), &b);
  cr_assert_eq(hvd_strmap_get(&m, ""), &c);
  cr_assert_null(hvd_strmap_get(&m, "alph"));
  cr_assert_null(hvd_strmap_get(&m, "alphaa"));
  /* lookup by content, not pointer */
  char buf[8];
  strcpy(buf, "alpha");
  cr_assert_eq(hvd_strmap_get(&m, buf), &a);
  /* replace keeps one entry */
  cr_assert_eq(hvd_strmap_put(&m, "alpha", &c), 0);
  cr_assert_eq(m.used, 3);
  cr_assert_eq(hvd_strmap_get(&m, "alpha"), &c);
  cr_assert_eq(hvd_strmap_del(&m, "alpha"), &c);
  cr_assert_null(hvd_strmap_get(&m, "alpha"));
  cr_assert_null(hvd_strmap_del(&m, "alpha"), "second delete finds nothing");
  cr_assert_eq(m.used, 2);
  cr_assert_eq(hvd_strmap_get(&m, "beta"), &b);
  /* re-insert after delete */
  cr_assert_eq(hvd_strmap_put(&m, "alpha", &a), 0);
  cr_assert_eq(hvd_strmap_get(&m, "alpha"), &a);
  cr_assert_eq(m.used, 3);
  /* a NULL value is stored (and iterated) like any other */
  cr_assert_eq(hvd_strmap_put(&m, "nul", NULL), 0);
  cr_assert_eq(m.used, 4);
  int n = 0;
  const char *k;
  void *v;
  for (size_t i = 0; (i = hvd_strmap_next(&m, i, &k, &v)) != 0;) n++;
  cr_assert_eq(n, 4);
  hvd_strmap_free(&m);
}

Test(strmap, hash_is_deterministic_and_spreads) {
  cr_assert_eq(hvd_strhash("layer1.weight"), hvd_strhash("layer1.weight"));
  /* every one-character change of a key changes the hash, and its low bits (the
   * table index) take many values */
  char key[] = "grad/layer.00.weight";
  uint64_t base = hvd_strhash(key);
  int low[64] = {0}, distinct = 0;
  for (size_t i = 0; i < sizeof key - 1; i++) {
    char save = key[i];
    key[i] ^= 1;
    uint64_t h = hvd_strhash(key);
    cr_assert_neq(h, base, "flipping byte %zu did not change the hash", i);
    if (!low[h & 63]++) distinct++;
    key[i] = save;
  }
  cr_assert_geq(distinct, 8);
}

/* strmap.h documents FNV-1a. (This test found the offset basis missing its last
 * digit, 1469598103934665603 instead of 14695981039346656037; fixed in 13a766a.) */
Test(strmap, fnv1a_hash_values) {
  /* FNV-1a 64-bit reference values */
  cr_assert_eq(hvd_strhash(""), 0xcbf29ce484222325ull);
  cr_assert_eq(hvd_strhash("a"), 0xaf63dc4c8601ec8cull);
  cr_assert_eq(hvd_strhash("foobar"), 0x85944171f73967e8ull);
  /* bytes >= 0x80 are hashed as unsigned */
  cr_assert_eq(hvd_strhash("\xff"), (0xcbf29ce484222325ull ^ 0xffull) * 0x100000001b3ull);
}

Test(strmap, random_operations_match_reference, .timeout = 60) {
  enum { NKEYS = 700, OPS = 200000 };
  model_t md;
  model_init(&md, NKEYS, "key/%d");
  hvd_strmap_t m;
  hvd_strmap_init(&m);
  rng = 0x1234;
  for (int op = 0; op < OPS; op++) {
    int i = (int)(rnd() % NKEYS);
    /* phases: mostly inserts, then balanced, then mostly deletes, repeated */
    int phase = (op / 20000) % 3;
    int r = (int)(rnd() % 10);
    int do_put = phase == 0 ? r < 7 : phase == 1 ? r < 5 : r < 3;
    if (do_put) {
      void *val = (void *)(uintptr_t)(op + 1);
      cr_assert_eq(hvd_strmap_put(&m, md.keys[i], val), 0);
      md.ref[i] = val;
    } else {
      void *got = hvd_strmap_del(&m, md.keys[i]);
      cr_assert_eq(got, md.ref[i], "del %s returned %p, want %p", md.keys[i], got, md.ref[i]);
      md.ref[i] = NULL;
    }
    cr_assert_eq(hvd_strmap_get(&m, md.keys[i]), md.ref[i]);
    cr_assert_eq(m.used, model_count(&md));
    if (op % 5000 == 0) check_all(&m, &md);
  }
  check_all(&m, &md);
  /* delete everything: an empty but allocated map */
  for (int i = 0; i < NKEYS; i++) {
    cr_assert_eq(hvd_strmap_del(&m, md.keys[i]), md.ref[i]);
    md.ref[i] = NULL;
  }
  check_all(&m, &md);
  hvd_strmap_free(&m);
  model_free(&md);
}

Test(strmap, tombstones_are_reused_and_churn_does_not_grow) {
  enum { LIVE = 12, ROUNDS = 100000 };
  model_t md;
  model_init(&md, ROUNDS + LIVE, "churn-%d");
  hvd_strmap_t m;
  hvd_strmap_init(&m);
  /* a sliding window: insert key i, delete key i - LIVE */
  size_t maxcap = 0;
  for (int i = 0; i < ROUNDS + LIVE; i++) {
    cr_assert_eq(hvd_strmap_put(&m, md.keys[i], md.keys[i]), 0);
    md.ref[i] = md.keys[i];
    if (i >= LIVE) {
      cr_assert_eq(hvd_strmap_del(&m, md.keys[i - LIVE]), md.keys[i - LIVE]);
      md.ref[i - LIVE] = NULL;
    }
    cr_assert_eq(m.used, (size_t)(i >= LIVE ? LIVE : i + 1));
    if (m.cap > maxcap) maxcap = m.cap;
    /* probe chains end: a lookup of an absent key terminates (no table full of tombs) */
    cr_assert(m.used + m.tombs < m.cap);
  }
  cr_assert_leq(maxcap, 64, "12 live keys but the table grew to %zu slots", maxcap);
  for (int i = ROUNDS; i < ROUNDS + LIVE; i++) cr_assert_eq(hvd_strmap_get(&m, md.keys[i]), md.keys[i]);
  for (int i = 0; i < ROUNDS; i += 997) cr_assert_null(hvd_strmap_get(&m, md.keys[i]));
  hvd_strmap_free(&m);
  model_free(&md);

  /* delete then re-put the same key: the tombstone is reused in place */
  hvd_strmap_init(&m);
  int x = 7, y = 8;
  cr_assert_eq(hvd_strmap_put(&m, "keep", &y), 0);
  cr_assert_eq(hvd_strmap_put(&m, "same", &x), 0);
  size_t at = 0;
  for (size_t i = 0; i < m.cap; i++)
    if (m.slots[i].key != NULL && strcmp(m.slots[i].key, "same") == 0) at = i + 1;
  cr_assert(at);
  cr_assert_eq(hvd_strmap_del(&m, "same"), &x);
  cr_assert_eq(m.tombs, 1);
  cr_assert_eq(m.used, 1);
  cr_assert_eq(hvd_strmap_put(&m, "same", &x), 0);
  cr_assert_eq(m.tombs, 0, "tombstone not reused");
  cr_assert_eq(m.slots[at - 1].value, &x, "re-put landed in another slot");
  cr_assert_eq(hvd_strmap_del(&m, "same"), &x);
  for (int i = 0; i < 10000; i++) {
    cr_assert_eq(hvd_strmap_put(&m, "same", &x), 0);
    cr_assert_eq(hvd_strmap_del(&m, "same"), &x);
  }
  cr_assert_leq(m.cap, 16);
  cr_assert_eq(m.used, 1);
  cr_assert_eq(hvd_strmap_get(&m, "keep"), &y);
  hvd_strmap_free(&m);
}

Test(strmap, growth_to_many_keys, .timeout = 60) {
  enum { N = 100000 };
  model_t md;
  model_init(&md, N, "grow.%d");
  hvd_strmap_t m;
  hvd_strmap_init(&m);
  for (int i = 0; i < N; i++) {
    cr_assert_eq(hvd_strmap_put(&m, md.keys[i], md.keys[i]), 0);
    md.ref[i] = md.keys[i];
    if ((i & (i - 1)) == 0) /* at powers of two: everything so far still there */
      for (int j = 0; j <= i; j += 1 + i / 64) cr_assert_eq(hvd_strmap_get(&m, md.keys[j]), md.keys[j]);
  }
  cr_assert_eq(m.used, N);
  cr_assert(m.cap >= N && (m.cap & (m.cap - 1)) == 0);
  for (int i = 0; i < N; i++) cr_assert_eq(hvd_strmap_get(&m, md.keys[i]), md.keys[i]);
  /* iteration: each key once */
  char *seen = calloc(N, 1);
  size_t it = 0;
  const char *k;
  void *v;
  for (size_t i = 0; (i = hvd_strmap_next(&m, i, &k, &v)) != 0;) {
    int x = atoi(k + 5);
    cr_assert(x >= 0 && x < N && !seen[x] && v == md.keys[x]);
    seen[x] = 1;
    it++;
  }
  cr_assert_eq(it, N);
  free(seen);
  /* delete the odd ones, the even ones remain */
  for (int i = 1; i < N; i += 2) cr_assert_eq(hvd_strmap_del(&m, md.keys[i]), md.keys[i]);
  for (int i = 0; i < N; i++) cr_assert_eq(hvd_strmap_get(&m, md.keys[i]), i % 2 ? NULL : md.keys[i]);
  cr_assert_eq(m.used, N / 2);
  hvd_strmap_free(&m);
  model_free(&md);
}

Test(strmap, delete_while_iterating) {
  /* deleting the entry just returned does not disturb the rest of the walk */
  model_t md;
  model_init(&md, 500, "it%d");
  hvd_strmap_t m;
  hvd_strmap_init(&m);
  for (int i = 0; i < 500; i++) {
    hvd_strmap_put(&m, md.keys[i], md.keys[i]);
    md.ref[i] = md.keys[i];
  }
  int visited = 0;
  const char *k;
  void *v;
  for (size_t i = 0; (i = hvd_strmap_next(&m, i, &k, &v)) != 0;) {
    visited++;
    if (visited % 2) {
      int x = model_index(&md, k);
      cr_assert_eq(hvd_strmap_del(&m, k), md.keys[x]);
      md.ref[x] = NULL;
    }
  }
  cr_assert_eq(visited, 500);
  check_all(&m, &md);
  hvd_strmap_free(&m);
  model_free(&md);
}
