/*
 * Coordinator logic (see coord.h).
 *
 * State per process set:
 *  - the message table: name -> the requests received so far, one slot per member,
 *    kept in a list in order of first arrival (that order becomes execution order);
 *  - the cache: slots indexed by cache id, each FREE, LIVE (a response template that
 *    members may refer to by bit) or LIMBO (evicted, kept until every member has
 *    acknowledged the eviction);
 *  - one bit vector per member: the LIVE ids it has ready;
 *  - join and shutdown flags per member.
 *
 * build(): cached tensors whose bit every (non-joined) member set, then table entries
 * that every member submitted (checked for consistency, else an ERROR response),
 * then stall / shutdown failures, then JOIN once everyone joined; new cacheable
 * responses get ids; compatible allreduces are fused up to the threshold.
 */
#include "runtime/coord.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collectives/reduce.h"
#include "common/log.h"
#include "common/strmap.h"

enum { SLOT_FREE = 0, SLOT_LIVE, SLOT_LIMBO };

typedef struct cslot {
  int state;
  hvd_response_t tmpl; /* single tensor; tmpl.names[0] is the key */
  uint64_t inserted_at, evicted_at;
  uint64_t lru;
  uint64_t first_pending_ns; /* 0: no member has the bit set */
  int warned;
} cslot_t;

typedef struct mentry {
  char *name;
  hvd_request_t *reqs; /* nmembers; reqs[m].name != NULL means present */
  int npresent;
  uint64_t first_ns;
  int warned;
  struct mentry *prev, *next; /* arrival order */
} mentry_t;

struct hvd_coord {
  hvd_coord_params_t p;
  int *members;
  int n;
  int words; /* 64-bit words per bit vector */

  hvd_strmap_t table; /* name -> mentry */
  mentry_t *head, *tail;

  cslot_t *slots;
  hvd_strmap_t by_name; /* name -> cslot (LIVE only) */
  uint64_t **bits;      /* [member][word] */
  uint64_t lru_clock;

  uint64_t *ack;
  uint64_t seq; /* last list built */
  int32_t *evict;
  uint32_t nevict, evict_cap;

  int *joined, njoined, last_joined;
  int *shut, nshut;
  int *busy, nbusy; /* members whose last list had HVD_REQ_FLAG_BUSY */
  uint64_t last_stall_check_ns;
  uint64_t hold_since_ns; /* ready tensors held back to fuse with arriving ones */
  hvd_coord_stats_t stats;
};

int hvd_msg_cacheable(hvd_msg_type_t t) {
  return t == HVD_MSG_ALLREDUCE || t == HVD_MSG_ALLGATHER || t == HVD_MSG_BROADCAST ||
         t == HVD_MSG_REDUCESCATTER || t == HVD_MSG_ALLTOALL;
}

/* ---- construction --------------------------------------------------------------- */

hvd_coord_t *hvd_coord_new(const hvd_coord_params_t *p) {
  hvd_coord_t *c = calloc(1, sizeof *c);
  if (c == NULL) return NULL;
  c->p = *p;
  c->n = p->nmembers;
  c->members = malloc((size_t)c->n * sizeof *c->members);
  c->ack = calloc((size_t)c->n, sizeof *c->ack);
  c->joined = calloc((size_t)c->n, sizeof *c->joined);
  c->shut = calloc((size_t)c->n, sizeof *c->shut);
  c->busy = calloc((size_t)c->n, sizeof *c->busy);
  c->bits = calloc((size_t)c->n, sizeof *c->bits);
  c->words = (p->cache_capacity + 63) / 64;
  if (p->cache_capacity > 0) c->slots = calloc((size_t)p->cache_capacity, sizeof *c->slots);
  if (!c->members || !c->ack || !c->joined || !c->shut || !c->busy || !c->bits ||
      (p->cache_capacity > 0 && !c->slots))
    goto fail;
  memcpy(c->members, p->members, (size_t)c->n * sizeof *c->members);
  c->p.members = c->members;
  for (int m = 0; m < c->n; m++)
    if (c->words && (c->bits[m] = calloc((size_t)c->words, 8)) == NULL) goto fail;
  hvd_strmap_init(&c->table);
  hvd_strmap_init(&c->by_name);
  c->last_joined = -1;
  return c;
fail:
  hvd_coord_free(c);
  return NULL;
}

static void mentry_free(hvd_coord_t *c, mentry_t *e) {
  for (int m = 0; m < c->n; m++) hvd_request_free(&e->reqs[m]);
  free(e->reqs);
  free(e->name);
  free(e);
}

void hvd_coord_free(hvd_coord_t *c) {
  if (c == NULL) return;
  for (mentry_t *e = c->head, *nx; e; e = nx) {
    nx = e->next;
    mentry_free(c, e);
  }
  for (int i = 0; i < c->p.cache_capacity && c->slots; i++) hvd_response_free(&c->slots[i].tmpl);
  if (c->bits)
    for (int m = 0; m < c->n; m++) free(c->bits[m]);
  free(c->bits);
  free(c->slots);
  free(c->members);
  free(c->ack);
  free(c->joined);
  free(c->shut);
  free(c->busy);
  free(c->evict);
  hvd_strmap_free(&c->table);
  hvd_strmap_free(&c->by_name);
  free(c);
}

void hvd_coord_get_stats(const hvd_coord_t *c, hvd_coord_stats_t *s) { *s = c->stats; }

/* ---- message table --------------------------------------------------------------- */

static void unlink_entry(hvd_coord_t *c, mentry_t *e) {
  if (e->prev) e->prev->next = e->next;
  else c->head = e->next;
  if (e->next) e->next->prev = e->prev;
  else c->tail = e->prev;
  hvd_strmap_del(&c->table, e->name);
}

/* Store q (moved) as member m's request for its name. */
static hvd_status_t table_add(hvd_coord_t *c, int m, hvd_request_t *q, uint64_t now,
                              hvd_err_t *err) {
  mentry_t *e = hvd_strmap_get(&c->table, q->name);
  if (e == NULL) {
    e = calloc(1, sizeof *e);
    if (e == NULL) return HVD_ERR_NO_MEMORY;
    e->reqs = calloc((size_t)c->n, sizeof *e->reqs);
    e->name = strdup(q->name);
    if (e->reqs == NULL || e->name == NULL || hvd_strmap_put(&c->table, e->name, e) != 0) {
      free(e->reqs);
      free(e->name);
      free(e);
      return HVD_ERR_NO_MEMORY;
    }
    e->first_ns = now;
    e->prev = c->tail;
    if (c->tail) c->tail->next = e;
    else c->head = e;
    c->tail = e;
  }
  if (e->reqs[m].name != NULL) {
    hvd_err_set(err, "rank %d submitted '%s' twice", c->members[m], q->name);
    hvd_request_free(q);
    return HVD_ERR_PROTOCOL;
  }
  e->reqs[m] = *q;
  e->reqs[m].rank = m;
  memset(q, 0, sizeof *q);
  e->npresent++;
  return HVD_OK;
}

/* ---- cache ----------------------------------------------------------------------- */

static int bit_test(const uint64_t *v, int k) { return (int)((v[k >> 6] >> (k & 63)) & 1u); }
static void bit_set(uint64_t *v, int k) { v[k >> 6] |= 1ull << (k & 63); }
static void bit_clear(uint64_t *v, int k) { v[k >> 6] &= ~(1ull << (k & 63)); }

/* Member m's request as the cached template describes it. */
static hvd_status_t tmpl_to_request(const hvd_coord_t *c, const cslot_t *s, int m,
                                    hvd_request_t *q) {
  const hvd_response_t *t = &s->tmpl;
  memset(q, 0, sizeof *q);
  q->type = t->type;
  q->dtype = t->dtype;
  q->op = t->op;
  q->root = t->root;
  q->rank = m;
  q->prescale = t->prescale;
  q->postscale = t->postscale;
  switch ((hvd_msg_type_t)t->type) {
  case HVD_MSG_ALLGATHER: q->count = t->counts[m]; break;
  case HVD_MSG_ALLTOALL:
    q->nsplits = (uint32_t)c->n;
    q->splits = malloc((size_t)c->n * sizeof *q->splits);
    if (q->splits == NULL) return HVD_ERR_NO_MEMORY;
    for (int j = 0; j < c->n; j++) {
      q->splits[j] = t->counts[(size_t)m * (size_t)c->n + (size_t)j];
      q->count += q->splits[j];
    }
    break;
  default: q->count = t->counts[0]; break;
  }
  q->name = strdup(t->names[0]);
  return q->name ? HVD_OK : HVD_ERR_NO_MEMORY;
}

static hvd_status_t push_evict(hvd_coord_t *c, int k) {
  if (c->nevict == c->evict_cap) {
    uint32_t cap = c->evict_cap ? c->evict_cap * 2 : 16;
    int32_t *e = realloc(c->evict, cap * sizeof *e);
    if (e == NULL) return HVD_ERR_NO_MEMORY;
    c->evict = e;
    c->evict_cap = cap;
  }
  c->evict[c->nevict++] = k;
  return HVD_OK;
}

/* Evict LIVE slot k in the list being built next: members that had its bit set now
 * wait in the message table instead. */
static hvd_status_t evict_slot(hvd_coord_t *c, int k, uint64_t now, hvd_err_t *err) {
  cslot_t *s = &c->slots[k];
  hvd_strmap_del(&c->by_name, s->tmpl.names[0]);
  s->state = SLOT_LIMBO;
  s->evicted_at = c->seq + 1;
  s->first_pending_ns = 0;
  HVD_CHECK(push_evict(c, k));
  for (int m = 0; m < c->n; m++) {
    if (!bit_test(c->bits[m], k)) continue;
    bit_clear(c->bits[m], k);
    hvd_request_t q;
    HVD_CHECK(tmpl_to_request(c, s, m, &q));
    HVD_CHECK(table_add(c, m, &q, now, err));
  }
  return HVD_OK;
}

static void release_limbo(hvd_coord_t *c) {
  uint64_t min_ack = UINT64_MAX;
  for (int m = 0; m < c->n; m++) min_ack = c->ack[m] < min_ack ? c->ack[m] : min_ack;
  for (int k = 0; k < c->p.cache_capacity; k++) {
    cslot_t *s = &c->slots[k];
    if (s->state == SLOT_LIMBO && s->evicted_at <= min_ack) {
      hvd_response_free(&s->tmpl);
      s->state = SLOT_FREE;
    }
  }
}

/* ---- add ------------------------------------------------------------------------- */

hvd_status_t hvd_coord_add(hvd_coord_t *c, int m, hvd_request_list_t *l, uint64_t now,
                           hvd_err_t *err) {
  hvd_status_t rc = HVD_OK;
  if (m < 0 || m >= c->n) {
    hvd_err_set(err, "request list from member %d of a set of %d", m, c->n);
    rc = HVD_ERR_PROTOCOL;
    goto out;
  }
  if (l->ack > c->seq) {
    hvd_err_set(err, "rank %d acknowledged response list %llu, only %llu exist", c->members[m],
                (unsigned long long)l->ack, (unsigned long long)c->seq);
    rc = HVD_ERR_PROTOCOL;
    goto out;
  }
  if (l->ack > c->ack[m]) {
    c->ack[m] = l->ack;
    if (c->p.cache_capacity > 0) release_limbo(c);
  }
  int busy = (l->flags & HVD_REQ_FLAG_BUSY) != 0;
  if (busy != c->busy[m]) {
    c->busy[m] = busy;
    c->nbusy += busy ? 1 : -1;
  }
  if (l->flags & HVD_REQ_FLAG_SHUTDOWN && !c->shut[m]) {
    c->shut[m] = 1;
    c->nshut++;
  }
  if (l->nwords > (uint32_t)c->words) {
    hvd_err_set(err, "rank %d sent %u cache words, capacity is %d", c->members[m], l->nwords,
                c->p.cache_capacity);
    rc = HVD_ERR_PROTOCOL;
    goto out;
  }
  for (uint32_t w = 0; w < l->nwords; w++) {
    for (uint64_t word = l->bits[w]; word; word &= word - 1) {
      int k = (int)(w * 64 + (uint32_t)__builtin_ctzll(word));
      if (k >= c->p.cache_capacity) {
        hvd_err_set(err, "rank %d sent cache bit %d beyond the capacity %d", c->members[m], k,
                    c->p.cache_capacity);
        rc = HVD_ERR_PROTOCOL;
        goto out;
      }
      cslot_t *s = &c->slots[k];
      if (s->state == SLOT_LIVE && s->inserted_at <= l->ack) {
        bit_set(c->bits[m], k);
        if (c->p.on_ready) c->p.on_ready(c->p.arg, s->tmpl.names[0], c->members[m], now);
        if (s->first_pending_ns == 0) s->first_pending_ns = now;
      } else if (s->state == SLOT_LIMBO && s->evicted_at > l->ack) {
        hvd_request_t q;
        if ((rc = tmpl_to_request(c, s, m, &q)) != HVD_OK) goto out;
        if ((rc = table_add(c, m, &q, now, err)) != HVD_OK) goto out;
      } else {
        hvd_err_set(err, "rank %d sent cache bit %d which it cannot know", c->members[m], k);
        rc = HVD_ERR_PROTOCOL;
        goto out;
      }
    }
  }
  for (uint32_t i = 0; i < l->n; i++) {
    hvd_request_t *q = &l->reqs[i];
    if (q->type == HVD_MSG_JOIN) {
      if (!c->joined[m]) {
        c->joined[m] = 1;
        c->njoined++;
      }
      c->last_joined = c->members[m];
      continue;
    }
    cslot_t *s = c->p.cache_capacity > 0 ? hvd_strmap_get(&c->by_name, q->name) : NULL;
    if (s != NULL && (rc = evict_slot(c, (int)(s - c->slots), now, err)) != HVD_OK) goto out;
    if (c->p.on_ready) c->p.on_ready(c->p.arg, q->name, c->members[m], now);
    if ((rc = table_add(c, m, q, now, err)) != HVD_OK) goto out;
  }
out:
  hvd_request_list_free(l);
  return rc;
}

/* ---- response construction -------------------------------------------------------- */

typedef struct rvec {
  hvd_response_t *v;
  uint32_t n, cap;
} rvec_t;

static hvd_response_t *rvec_push(rvec_t *r) {
  if (r->n == r->cap) {
    uint32_t cap = r->cap ? r->cap * 2 : 16;
    hvd_response_t *v = realloc(r->v, cap * sizeof *v);
    if (v == NULL) return NULL;
    r->v = v;
    r->cap = cap;
  }
  hvd_response_t *s = &r->v[r->n++];
  memset(s, 0, sizeof *s);
  s->last_joined = -1;
  return s;
}

static int set_one_name(hvd_response_t *s, const char *name) {
  s->ntensors = 1;
  s->names = calloc(1, sizeof *s->names);
  s->cache_ids = malloc(sizeof *s->cache_ids);
  if (!s->names || !s->cache_ids || !(s->names[0] = strdup(name))) return -1;
  s->cache_ids[0] = -1;
  return 0;
}

static int make_error(hvd_coord_t *c, hvd_response_t *s, const char *name, hvd_status_t st,
                      const char *msg) {
  s->type = HVD_MSG_ERROR;
  s->status = st;
  c->stats.errors++;
  if (set_one_name(s, name) != 0 || !(s->error = strdup(msg))) return -1;
  return 0;
}

/* Describe which ranks sent which value of one field: "ranks 0,2 sent 10; rank 1 sent 12". */
typedef int (*field_eq_t)(const hvd_request_t *, const hvd_request_t *);
typedef void (*field_fmt_t)(const hvd_request_t *, char *, size_t);

static int differs(const mentry_t *e, int n, field_eq_t eq) {
  const hvd_request_t *first = NULL;
  for (int m = 0; m < n; m++) {
    if (e->reqs[m].name == NULL) continue;
    if (first == NULL) first = &e->reqs[m];
    else if (!eq(first, &e->reqs[m])) return 1;
  }
  return 0;
}

static void describe(const hvd_coord_t *c, const mentry_t *e, const char *what, field_eq_t eq,
                     field_fmt_t fmt, char *out, size_t len) {
  int *done = calloc((size_t)c->n, sizeof *done);
  size_t o = (size_t)snprintf(out, len, "mismatched %s for tensor '%s': ", what, e->name);
  int groups = 0;
  for (int m = 0; m < c->n && o < len; m++) {
    if (e->reqs[m].name == NULL || (done && done[m])) continue;
    char val[128], ranks[256];
    fmt(&e->reqs[m], val, sizeof val);
    size_t ro = 0;
    int cnt = 0;
    for (int j = m; j < c->n; j++) {
      if (e->reqs[j].name == NULL || (done && done[j]) || !eq(&e->reqs[m], &e->reqs[j])) continue;
      if (done) done[j] = 1;
      if (ro < sizeof ranks)
        ro += (size_t)snprintf(ranks + ro, sizeof ranks - ro, "%s%d", cnt ? "," : "", c->members[j]);
      cnt++;
    }
    o += (size_t)snprintf(out + o, len - o, "%s%s %s sent %s", groups ? "; " : "",
                          cnt > 1 ? "ranks" : "rank", ranks, val);
    groups++;
  }
  free(done);
}

static int eq_type(const hvd_request_t *a, const hvd_request_t *b) { return a->type == b->type; }
static void fmt_type(const hvd_request_t *a, char *o, size_t l) { snprintf(o, l, "%s", hvd_msg_type_name(a->type)); }
static int eq_dtype(const hvd_request_t *a, const hvd_request_t *b) { return a->dtype == b->dtype; }
static void fmt_dtype(const hvd_request_t *a, char *o, size_t l) { snprintf(o, l, "%s", hvd_dtype_name(a->dtype)); }
static int eq_count(const hvd_request_t *a, const hvd_request_t *b) { return a->count == b->count; }
static void fmt_count(const hvd_request_t *a, char *o, size_t l) { snprintf(o, l, "%llu", (unsigned long long)a->count); }
static int eq_op(const hvd_request_t *a, const hvd_request_t *b) { return a->op == b->op; }
static void fmt_op(const hvd_request_t *a, char *o, size_t l) { snprintf(o, l, "%s", hvd_op_name(a->op)); }
static int eq_scale(const hvd_request_t *a, const hvd_request_t *b) {
  return a->prescale == b->prescale && a->postscale == b->postscale;
}
static void fmt_scale(const hvd_request_t *a, char *o, size_t l) {
  snprintf(o, l, "(%g, %g)", a->prescale, a->postscale);
}
static int eq_root(const hvd_request_t *a, const hvd_request_t *b) { return a->root == b->root; }
static void fmt_root(const hvd_request_t *a, char *o, size_t l) { snprintf(o, l, "%d", a->root); }
static int eq_splits(const hvd_request_t *a, const hvd_request_t *b) {
  return a->nsplits == b->nsplits &&
         (a->nsplits == 0 || memcmp(a->splits, b->splits, a->nsplits * sizeof *a->splits) == 0);
}
static void fmt_splits(const hvd_request_t *a, char *o, size_t l) {
  size_t k = (size_t)snprintf(o, l, "[");
  for (uint32_t i = 0; i < a->nsplits && k < l; i++)
    k += (size_t)snprintf(o + k, l - k, "%s%llu", i ? "," : "", (unsigned long long)a->splits[i]);
  if (k < l) snprintf(o + k, l - k, "]");
}

/* Build the response for a table entry every member is ready for. */
static int construct(hvd_coord_t *c, const mentry_t *e, hvd_response_t *s) {
  char msg[1024];
  const hvd_request_t *q0 = NULL;
  for (int m = 0; m < c->n && q0 == NULL; m++)
    if (e->reqs[m].name) q0 = &e->reqs[m];
  if (q0 == NULL) return make_error(c, s, e->name, HVD_ERR_INTERNAL, "no request");
  struct {
    const char *what;
    field_eq_t eq;
    field_fmt_t fmt;
    int applies;
  } checks[] = {
      {"operations", eq_type, fmt_type, 1},
      {"data types", eq_dtype, fmt_dtype, 1},
      {"element counts", eq_count, fmt_count,
       q0->type == HVD_MSG_ALLREDUCE || q0->type == HVD_MSG_BROADCAST || q0->type == HVD_MSG_REDUCESCATTER},
      {"reduction operations", eq_op, fmt_op, q0->type == HVD_MSG_ALLREDUCE || q0->type == HVD_MSG_REDUCESCATTER},
      {"prescale/postscale factors", eq_scale, fmt_scale,
       q0->type == HVD_MSG_ALLREDUCE || q0->type == HVD_MSG_REDUCESCATTER},
      {"broadcast root ranks", eq_root, fmt_root, q0->type == HVD_MSG_BROADCAST},
      {"process set ranks", eq_splits, fmt_splits, q0->type == HVD_MSG_PROCESS_SET},
  };
  for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++) {
    /* Fields only make sense to compare once the operation types agree. */
    if (i > 0 && differs(e, c->n, eq_type)) break;
    if (checks[i].applies && differs(e, c->n, checks[i].eq)) {
      describe(c, e, checks[i].what, checks[i].eq, checks[i].fmt, msg, sizeof msg);
      return make_error(c, s, e->name, HVD_ERR_MISMATCH, msg);
    }
  }
  if (c->njoined > 0 && q0->type != HVD_MSG_ALLREDUCE && q0->type != HVD_MSG_BARRIER) {
    snprintf(msg, sizeof msg, "%s of tensor '%s' is not supported while a rank has joined "
             "(rank %d joined)", hvd_msg_type_name(q0->type), e->name, c->last_joined);
    return make_error(c, s, e->name, HVD_ERR_NOT_SUPPORTED, msg);
  }
  if (q0->type == HVD_MSG_BROADCAST && (q0->root < 0 || q0->root >= c->n)) {
    snprintf(msg, sizeof msg, "broadcast of tensor '%s': root %d is not a rank of the process set "
             "(size %d)", e->name, q0->root, c->n);
    return make_error(c, s, e->name, HVD_ERR_INVALID_PARAM, msg);
  }
  if (q0->type == HVD_MSG_ALLTOALL) {
    /* Column sums are what each member receives; rows must be present for all. */
    for (int m = 0; m < c->n; m++)
      if (e->reqs[m].name && e->reqs[m].nsplits != (uint32_t)c->n) {
        snprintf(msg, sizeof msg, "alltoall of tensor '%s': rank %d sent %u splits for %d ranks",
                 e->name, c->members[m], e->reqs[m].nsplits, c->n);
        return make_error(c, s, e->name, HVD_ERR_INVALID_PARAM, msg);
      }
  }
  s->type = q0->type;
  s->dtype = q0->dtype;
  s->op = q0->op;
  s->root = q0->root;
  s->prescale = q0->prescale;
  s->postscale = q0->postscale;
  if (set_one_name(s, e->name) != 0) return -1;
  switch ((hvd_msg_type_t)q0->type) {
  case HVD_MSG_ALLREDUCE: case HVD_MSG_BROADCAST: case HVD_MSG_REDUCESCATTER:
    s->ncounts = 1;
    s->counts = malloc(sizeof *s->counts);
    if (!s->counts) return -1;
    s->counts[0] = q0->count;
    break;
  case HVD_MSG_ALLGATHER:
    s->ncounts = (uint32_t)c->n;
    s->counts = calloc((size_t)c->n, sizeof *s->counts);
    if (!s->counts) return -1;
    for (int m = 0; m < c->n; m++) s->counts[m] = e->reqs[m].count;
    break;
  case HVD_MSG_ALLTOALL:
    s->ncounts = (uint32_t)(c->n * c->n);
    s->counts = calloc((size_t)s->ncounts, sizeof *s->counts);
    if (!s->counts) return -1;
    for (int m = 0; m < c->n; m++)
      memcpy(s->counts + (size_t)m * (size_t)c->n, e->reqs[m].splits, (size_t)c->n * sizeof *s->counts);
    break;
  case HVD_MSG_PROCESS_SET:
    s->ncounts = q0->nsplits;
    s->counts = calloc(q0->nsplits ? q0->nsplits : 1, sizeof *s->counts);
    if (!s->counts) return -1;
    memcpy(s->counts, q0->splits, q0->nsplits * sizeof *s->counts);
    break;
  default: break;
  }
  return 0;
}

static int copy_response(hvd_response_t *dst, const hvd_response_t *src) {
  *dst = *src;
  dst->names = NULL;
  dst->cache_ids = NULL;
  dst->counts = NULL;
  dst->error = NULL;
  dst->names = calloc(src->ntensors, sizeof *dst->names);
  dst->cache_ids = malloc(src->ntensors * sizeof *dst->cache_ids);
  dst->counts = malloc((src->ncounts ? src->ncounts : 1) * sizeof *dst->counts);
  if (!dst->names || !dst->cache_ids || !dst->counts) return -1;
  for (uint32_t i = 0; i < src->ntensors; i++)
    if (!(dst->names[i] = strdup(src->names[i]))) return -1;
  memcpy(dst->cache_ids, src->cache_ids, src->ntensors * sizeof *dst->cache_ids);
  memcpy(dst->counts, src->counts, src->ncounts * sizeof *dst->counts);
  if (src->error && !(dst->error = strdup(src->error))) return -1;
  return 0;
}

/* Give a new cacheable response an id, evicting the least recently used idle entry
 * if the cache is full. No id (-1) if nothing can be evicted now. */
static void assign_cache_id(hvd_coord_t *c, hvd_response_t *s, uint64_t list_seq,
                            uint64_t build_clock) {
  int best = -1;
  for (int k = 0; k < c->p.cache_capacity; k++) {
    cslot_t *sl = &c->slots[k];
    if (sl->state == SLOT_FREE) {
      best = k;
      break;
    }
    /* Not an entry this very list uses (its response carries the id: members would
     * store it again after the eviction). */
    if (sl->state == SLOT_LIVE && sl->first_pending_ns == 0 && sl->inserted_at < list_seq &&
        sl->lru <= build_clock && (best < 0 || sl->lru < c->slots[best].lru))
      best = k;
  }
  if (best < 0) return;
  cslot_t *sl = &c->slots[best];
  if (sl->state == SLOT_LIVE) {
    static const char note[] = "response cache full: evicting entries (raise HVD_CACHE_CAPACITY)";
    if (c->stats.cache_hits == 0 || (c->lru_clock & 1023) == 0) HVD_DEBUG("%s", note);
    hvd_strmap_del(&c->by_name, sl->tmpl.names[0]);
    sl->state = SLOT_LIMBO;
    sl->evicted_at = list_seq;
    if (push_evict(c, best) != HVD_OK) return;
    /* LIMBO until everyone acknowledged list_seq: cannot reuse it in this list. */
    return;
  }
  hvd_response_t t;
  if (copy_response(&t, s) != 0) {
    hvd_response_free(&t);
    return;
  }
  t.cache_ids[0] = best;
  if (hvd_strmap_put(&c->by_name, t.names[0], sl) != 0) {
    hvd_response_free(&t);
    return;
  }
  sl->tmpl = t;
  sl->state = SLOT_LIVE;
  sl->inserted_at = list_seq;
  sl->lru = ++c->lru_clock;
  sl->first_pending_ns = 0;
  sl->warned = 0;
  s->cache_ids[0] = best;
}

/* ---- fusion ------------------------------------------------------------------------ */

static size_t resp_bytes(const hvd_response_t *s) {
  return (size_t)s->counts[0] * hvd_dtype_size((hvd_dtype_t)s->dtype);
}

static int fusable(const hvd_response_t *a, const hvd_response_t *b) {
  return a->type == HVD_MSG_ALLREDUCE && b->type == HVD_MSG_ALLREDUCE && a->dtype == b->dtype &&
         a->op == b->op && a->prescale == b->prescale && a->postscale == b->postscale;
}

/* Append response b's tensors to a (both ALLREDUCE with one count per tensor). */
static int absorb(hvd_response_t *a, hvd_response_t *b) {
  uint32_t n = a->ntensors + b->ntensors;
  char **names = realloc(a->names, n * sizeof *names);
  if (names) a->names = names;
  int32_t *ids = realloc(a->cache_ids, n * sizeof *ids);
  if (ids) a->cache_ids = ids;
  uint64_t *counts = realloc(a->counts, n * sizeof *counts);
  if (counts) a->counts = counts;
  if (!names || !ids || !counts) return -1;
  memcpy(a->names + a->ntensors, b->names, b->ntensors * sizeof *names);
  memcpy(a->cache_ids + a->ntensors, b->cache_ids, b->ntensors * sizeof *ids);
  memcpy(a->counts + a->ntensors, b->counts, b->ntensors * sizeof *counts);
  a->ntensors = n;
  a->ncounts = n;
  free(b->names);
  b->names = NULL;
  b->ntensors = 0;
  hvd_response_free(b);
  return 0;
}

/* Fuse in place: for each allreduce, pull in later compatible ones while the bytes fit
 * the threshold, skipping incompatible ones as long as the skipped bytes fit too
 * (mixed-precision models interleave dtypes). Order of the rest is kept. */
static void fuse(hvd_coord_t *c, rvec_t *r) {
  if (c->p.fusion_threshold == 0) return;
  uint32_t out = 0;
  char *taken = calloc(r->n ? r->n : 1, 1);
  if (taken == NULL) return;
  for (uint32_t i = 0; i < r->n; i++) {
    if (taken[i]) continue;
    hvd_response_t cur = r->v[i];
    taken[i] = 1;
    if (cur.type == HVD_MSG_ALLREDUCE) {
      size_t bytes = resp_bytes(&cur), skipped = 0;
      for (uint32_t j = i + 1; j < r->n && bytes < c->p.fusion_threshold; j++) {
        if (taken[j]) continue;
        hvd_response_t *b = &r->v[j];
        size_t bb = b->type == HVD_MSG_ALLREDUCE ? resp_bytes(b) : 0;
        if (fusable(&cur, b) && bytes + bb <= c->p.fusion_threshold) {
          if (absorb(&cur, b) != 0) break;
          taken[j] = 1;
          bytes += bb;
        } else {
          skipped += bb;
          if (bytes + skipped > c->p.fusion_threshold) break;
        }
      }
    }
    r->v[out++] = cur;
  }
  r->n = out;
  free(taken);
}

/* ---- stall inspector ------------------------------------------------------------------ */

static void list_ranks(const hvd_coord_t *c, const int *have, int want, char *o, size_t l) {
  size_t k = 0;
  int cnt = 0;
  o[0] = '\0';
  for (int m = 0; m < c->n && k < l; m++)
    if (!!have[m] == want) k += (size_t)snprintf(o + k, l - k, "%s%d", cnt++ ? "," : "", c->members[m]);
}

static void stall_check(hvd_coord_t *c, uint64_t now, rvec_t *r) {
  double warn = c->p.stall_warning_s, kill = c->p.stall_shutdown_s;
  if (warn <= 0 || now - c->last_stall_check_ns < (uint64_t)(warn * 1e9 / 4)) return;
  c->last_stall_check_ns = now;
  int *have = calloc((size_t)c->n, sizeof *have);
  if (have == NULL) return;
  char sub[512], miss[512], msg[1400];
  for (mentry_t *e = c->head, *nx; e; e = nx) {
    nx = e->next;
    double age = (double)(now - e->first_ns) * 1e-9;
    if (age < warn) continue;
    int ready = 0;
    for (int m = 0; m < c->n; m++) ready += (have[m] = e->reqs[m].name != NULL || c->joined[m]);
    if (ready == c->n) continue; /* complete, only held back for fusion */
    list_ranks(c, have, 1, sub, sizeof sub);
    list_ranks(c, have, 0, miss, sizeof miss);
    if (kill > 0 && age >= kill) {
      snprintf(msg, sizeof msg, "tensor '%s' stalled for %.0f s: submitted by ranks [%s], never by "
               "ranks [%s]; giving up after HVD_STALL_SHUTDOWN_TIME_SECONDS=%g", e->name, age, sub,
               miss, kill);
      HVD_ERROR("stall: %s", msg);
      hvd_response_t *s = rvec_push(r);
      if (s) make_error(c, s, e->name, HVD_ERR_TIMEOUT, msg);
      unlink_entry(c, e);
      mentry_free(c, e);
    } else if (!e->warned) {
      e->warned = 1;
      c->stats.stall_warnings++;
      HVD_WARN("stall: tensor '%s' has waited %.0f s: submitted by ranks [%s], missing ranks [%s]. "
               "Different ranks may be submitting different tensor names, or only some ranks "
               "submit it, which would deadlock.", e->name, age, sub, miss);
    }
  }
  for (int k = 0; k < c->p.cache_capacity; k++) {
    cslot_t *sl = &c->slots[k];
    if (sl->state != SLOT_LIVE || sl->first_pending_ns == 0) continue;
    double age = (double)(now - sl->first_pending_ns) * 1e-9;
    if (age < warn) continue;
    int ready = 0;
    for (int m = 0; m < c->n; m++) ready += (have[m] = bit_test(c->bits[m], k) || c->joined[m]);
    if (ready == c->n) continue;
    list_ranks(c, have, 1, sub, sizeof sub);
    list_ranks(c, have, 0, miss, sizeof miss);
    if (kill > 0 && age >= kill) {
      snprintf(msg, sizeof msg, "tensor '%s' stalled for %.0f s: submitted by ranks [%s], never by "
               "ranks [%s]; giving up after HVD_STALL_SHUTDOWN_TIME_SECONDS=%g",
               sl->tmpl.names[0], age, sub, miss, kill);
      HVD_ERROR("stall: %s", msg);
      hvd_response_t *s = rvec_push(r);
      if (s) make_error(c, s, sl->tmpl.names[0], HVD_ERR_TIMEOUT, msg);
      for (int m = 0; m < c->n; m++) bit_clear(c->bits[m], k);
      sl->first_pending_ns = 0;
    } else if (!sl->warned) {
      sl->warned = 1;
      c->stats.stall_warnings++;
      HVD_WARN("stall: tensor '%s' has waited %.0f s: submitted by ranks [%s], missing ranks [%s]. "
               "Different ranks may be submitting different tensor names, or only some ranks "
               "submit it, which would deadlock.", sl->tmpl.names[0], age, sub, miss);
    }
  }
  free(have);
}

/* ---- build ------------------------------------------------------------------------- */

int hvd_coord_waiting(const hvd_coord_t *c) {
  if (c->head) return 1;
  for (int k = 0; k < c->p.cache_capacity; k++)
    if (c->slots[k].state == SLOT_LIVE && c->slots[k].first_pending_ns) return 1;
  return c->njoined > 0;
}

/* Is something ready, and is something else partly submitted? */
static void readiness(const hvd_coord_t *c, int *any_ready, int *any_partial) {
  *any_ready = *any_partial = 0;
  for (int w = 0; w < c->words; w++) {
    uint64_t all = ~0ull, any = 0;
    for (int m = 0; m < c->n; m++) {
      any |= c->bits[m][w];
      if (!c->joined[m]) all &= c->bits[m][w];
    }
    if (all & any) *any_ready = 1;
    if (any & ~all) *any_partial = 1;
  }
  for (const mentry_t *e = c->head; e; e = e->next) {
    int ready = e->npresent;
    for (int m = 0; m < c->n; m++)
      if (c->joined[m] && e->reqs[m].name == NULL) ready++;
    if (ready >= c->n) *any_ready = 1;
    else *any_partial = 1;
  }
}

int hvd_coord_build(hvd_coord_t *c, uint64_t now, hvd_response_list_t *out) {
  rvec_t r = {0};
  uint64_t list_seq = c->seq + 1;
  memset(out, 0, sizeof *out);

  /* Hold ready tensors for up to the cycle time while others are still arriving, so
   * they can be fused, or while a member is busy (its application computing: it would
   * join the collective only later, and its next list usually brings more tensors);
   * a lone tensor (nothing else arriving, nobody busy) goes at once. */
  if (c->p.cycle_time_ms > 0 && c->nevict == 0 && c->nshut < c->n && c->njoined < c->n) {
    int any_ready, any_partial;
    readiness(c, &any_ready, &any_partial);
    if (any_ready && (any_partial || c->nbusy > 0)) {
      if (c->hold_since_ns == 0) c->hold_since_ns = now;
      if ((double)(now - c->hold_since_ns) < c->p.cycle_time_ms * 1e6) {
        stall_check(c, now, &r);
        if (r.n == 0) {
          free(r.v);
          return 0;
        }
      }
    }
  }
  c->hold_since_ns = 0;
  const uint64_t build_clock = c->lru_clock; /* slots used from here on are this list's */

  /* 1. Cached tensors every member has ready: AND of the bit vectors. */
  for (int w = 0; w < c->words; w++) {
    uint64_t all = ~0ull, any = 0;
    for (int m = 0; m < c->n; m++) {
      any |= c->bits[m][w];
      if (!c->joined[m]) all &= c->bits[m][w];
    }
    if (!any) continue;
    for (uint64_t word = all & any; word; word &= word - 1) {
      int k = w * 64 + __builtin_ctzll(word);
      cslot_t *sl = &c->slots[k];
      for (int m = 0; m < c->n; m++) bit_clear(c->bits[m], k);
      sl->first_pending_ns = 0;
      sl->warned = 0;
      sl->lru = ++c->lru_clock;
      hvd_response_t *s = rvec_push(&r);
      if (s == NULL) break;
      if (c->njoined > 0 && sl->tmpl.type != HVD_MSG_ALLREDUCE) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s of tensor '%s' is not supported while a rank has joined",
                 hvd_msg_type_name(sl->tmpl.type), sl->tmpl.names[0]);
        make_error(c, s, sl->tmpl.names[0], HVD_ERR_NOT_SUPPORTED, msg);
        continue;
      }
      if (copy_response(s, &sl->tmpl) != 0) {
        r.n--;
        hvd_response_free(s);
        break;
      }
      c->stats.cache_hits++;
    }
  }

  /* 2. Table entries every member submitted (joined members count as ready). */
  int ready_needed = c->n;
  for (mentry_t *e = c->head, *nx; e; e = nx) {
    nx = e->next;
    int ready = e->npresent;
    for (int m = 0; m < c->n; m++)
      if (c->joined[m] && e->reqs[m].name == NULL) ready++;
    if (ready < ready_needed) {
      /* A member that has shut down will never submit it. */
      for (int m = 0; m < c->n; m++) {
        if (!c->shut[m] || e->reqs[m].name != NULL || c->joined[m]) continue;
        char msg[512];
        snprintf(msg, sizeof msg, "tensor '%s' can never complete: rank %d has shut down without "
                 "submitting it", e->name, c->members[m]);
        hvd_response_t *s = rvec_push(&r);
        if (s) make_error(c, s, e->name, HVD_ERR_SHUTDOWN, msg);
        unlink_entry(c, e);
        mentry_free(c, e);
        break;
      }
      continue;
    }
    hvd_response_t *s = rvec_push(&r);
    if (s == NULL) break;
    if (construct(c, e, s) != 0) HVD_ERROR("coordinator: out of memory building '%s'", e->name);
    if (s->type != HVD_MSG_ERROR && hvd_msg_cacheable((hvd_msg_type_t)s->type) &&
        c->p.cache_capacity > 0)
      assign_cache_id(c, s, list_seq, build_clock);
    unlink_entry(c, e);
    mentry_free(c, e);
  }

  /* A member that has shut down will never send the bit of a cached tensor either. */
  if (c->nshut > 0)
    for (int k = 0; k < c->p.cache_capacity; k++) {
      cslot_t *sl = &c->slots[k];
      if (sl->state != SLOT_LIVE || sl->first_pending_ns == 0) continue;
      for (int m = 0; m < c->n; m++) {
        if (!c->shut[m] || c->joined[m] || bit_test(c->bits[m], k)) continue;
        char msg[512];
        snprintf(msg, sizeof msg, "tensor '%s' can never complete: rank %d has shut down without "
                 "submitting it", sl->tmpl.names[0], c->members[m]);
        hvd_response_t *s = rvec_push(&r);
        if (s) make_error(c, s, sl->tmpl.names[0], HVD_ERR_SHUTDOWN, msg);
        for (int q = 0; q < c->n; q++) bit_clear(c->bits[q], k);
        sl->first_pending_ns = 0;
        break;
      }
    }

  /* 3. Stalls. */
  stall_check(c, now, &r);

  /* 4. Everyone joined: JOIN carries the last rank to join. */
  if (c->njoined == c->n) {
    hvd_response_t *s = rvec_push(&r);
    if (s) {
      s->type = HVD_MSG_JOIN;
      s->last_joined = c->last_joined;
    }
    memset(c->joined, 0, (size_t)c->n * sizeof *c->joined);
    c->njoined = 0;
    c->last_joined = -1;
  }

  fuse(c, &r);
  for (uint32_t i = 0; i < r.n; i++)
    if (r.v[i].type != HVD_MSG_ERROR) {
      c->stats.responses++;
      c->stats.tensors += r.v[i].ntensors;
    }

  if (c->nshut == c->n) out->flags |= HVD_RESP_FLAG_SHUTDOWN;
  if (r.n == 0 && c->nevict == 0 && out->flags == 0) {
    free(r.v);
    return 0;
  }
  out->resps = r.v;
  out->n = r.n;
  out->evict = c->evict;
  out->nevict = c->nevict;
  c->evict = NULL;
  c->nevict = c->evict_cap = 0;
  out->seq = c->seq = list_seq;
  return 1;
}
