/*
 * Loading a trace: events out of the JSON tree, lanes from the metadata events, and
 * spans by pairing B with E per (pid, tid) in time order (file order for equal
 * times), the way trace viewers do. Accepts the JSON Object format
 * ({"traceEvents":[...]}) and the bare JSON Array format.
 */
#include "trace.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static long long num_of(const json_t *o, const char *key) {
  const json_t *v = json_get(o, key);
  if (v == NULL) return 0;
  if (v->type == JSON_NUMBER) return (long long)v->num;
  if (v->type == JSON_STRING) return strtoll(v->str, NULL, 10);
  return 0;
}

static const trace_t *sort_trace; /* qsort has no context argument */

static int cmp_ev(const void *a, const void *b) {
  const tev_t *x = &sort_trace->ev[*(const size_t *)a], *y = &sort_trace->ev[*(const size_t *)b];
  if (x->pid != y->pid) return x->pid < y->pid ? -1 : 1;
  if (x->tid != y->tid) return x->tid < y->tid ? -1 : 1;
  if (x->ts != y->ts) return x->ts < y->ts ? -1 : 1;
  return x->order < y->order ? -1 : x->order > y->order;
}

static int cmp_lane(const void *a, const void *b) {
  const tlane_t *x = a, *y = b;
  if (x->sort != y->sort) return x->sort < y->sort ? -1 : 1;
  return x->pid < y->pid ? -1 : x->pid > y->pid;
}

static int cmp_lane_pid(const void *a, const void *b) {
  const tlane_t *x = a, *y = b;
  return x->pid < y->pid ? -1 : x->pid > y->pid;
}

static int cmp_span(const void *a, const void *b) {
  const tspan_t *x = a, *y = b;
  if (x->lane != y->lane) return x->lane < y->lane ? -1 : 1;
  if (x->t0 != y->t0) return x->t0 < y->t0 ? -1 : 1;
  return x->depth - y->depth;
}

static int cmp_inst(const void *a, const void *b) {
  const tinst_t *x = a, *y = b;
  if (x->lane != y->lane) return x->lane < y->lane ? -1 : 1;
  return x->ts < y->ts ? -1 : x->ts > y->ts;
}

size_t trace_lane(const trace_t *t, long long pid) {
  for (size_t i = 0; i < t->nlanes; i++) /* lanes are few compared to events */
    if (t->lanes[i].pid == pid) return i;
  return (size_t)-1;
}

/* pid -> lane index through a sorted copy, for the many lookups while pairing. */
typedef struct pidx {
  long long pid;
  size_t lane;
} pidx_t;
static int cmp_pidx(const void *a, const void *b) {
  const pidx_t *x = a, *y = b;
  return x->pid < y->pid ? -1 : x->pid > y->pid;
}
static size_t lane_of(const pidx_t *ix, size_t n, long long pid) {
  pidx_t key = {.pid = pid};
  const pidx_t *f = bsearch(&key, ix, n, sizeof *ix, cmp_pidx);
  return f ? f->lane : (size_t)-1;
}

static int cmp_ll(const void *a, const void *b) {
  long long x = *(const long long *)a, y = *(const long long *)b;
  return x < y ? -1 : x > y;
}

int trace_load(trace_t *t, const char *path, char *err, size_t errlen) {
  memset(t, 0, sizeof *t);
  t->path = path;
  t->rank = -1;
  if ((t->root = json_parse_file(path, err, errlen)) == NULL) goto fail;
  const json_t *arr = t->root;
  if (t->root->type == JSON_OBJECT) {
    arr = json_get(t->root, "traceEvents");
    t->other = json_get(t->root, "otherData");
    const json_t *r = json_get(t->other, "rank");
    if (r && r->type == JSON_NUMBER) t->rank = (int)r->num;
    t->epoch_us = json_get_num(t->other, "start_time_since_epoch_in_micros", 0);
  }
  if (arr == NULL || arr->type != JSON_ARRAY) {
    snprintf(err, errlen, "%s: no traceEvents array: not a trace file", path);
    goto fail;
  }
  t->ev = calloc(arr->n ? arr->n : 1, sizeof *t->ev);
  if (t->ev == NULL) goto oom;
  t->tmin = INFINITY;
  t->tmax = -INFINITY;
  for (size_t i = 0; i < arr->n; i++) {
    const json_t *o = &arr->items[i];
    if (o->type != JSON_OBJECT) continue;
    tev_t *e = &t->ev[t->nev];
    const char *ph = json_get_str(o, "ph");
    const char *s = json_get_str(o, "s");
    const char *name = json_get_str(o, "name");
    e->ph = ph && ph[0] ? ph[0] : '?';
    e->scope = s && s[0] ? s[0] : 0;
    e->ts = json_get_num(o, "ts", 0);
    e->dur = json_get_num(o, "dur", 0);
    e->pid = num_of(o, "pid");
    e->tid = num_of(o, "tid");
    e->name = name ? name : "";
    e->args = json_get(o, "args");
    e->obj = o;
    e->order = t->nev++;
    if (e->ph != 'M') {
      if (e->ts < t->tmin) t->tmin = e->ts;
      double end = e->ph == 'X' ? e->ts + e->dur : e->ts;
      if (end > t->tmax) t->tmax = end;
    }
  }
  if (t->tmin > t->tmax) t->tmin = t->tmax = 0;
  /* Lanes: the distinct pids, then their names and sort indices. */
  long long *pids = malloc((t->nev ? t->nev : 1) * sizeof *pids);
  if (pids == NULL) goto oom;
  for (size_t i = 0; i < t->nev; i++) pids[i] = t->ev[i].pid;
  qsort(pids, t->nev, sizeof *pids, cmp_ll);
  t->lanes = malloc((t->nev ? t->nev : 1) * sizeof *t->lanes);
  if (t->lanes == NULL) {
    free(pids);
    goto oom;
  }
  for (size_t i = 0; i < t->nev; i++)
    if (i == 0 || pids[i] != pids[i - 1])
      t->lanes[t->nlanes++] = (tlane_t){.pid = pids[i], .sort = pids[i]};
  free(pids);
  for (size_t i = 0; i < t->nev; i++) {
    const tev_t *e = &t->ev[i];
    if (e->ph != 'M') continue;
    tlane_t key = {.pid = e->pid};
    tlane_t *l = bsearch(&key, t->lanes, t->nlanes, sizeof key, cmp_lane_pid);
    if (strcmp(e->name, "process_name") == 0) {
      const char *n = json_get_str(e->args, "name");
      if (n) l->name = n;
    } else if (strcmp(e->name, "process_sort_index") == 0) {
      const json_t *v = json_get(e->args, "sort_index");
      if (v && v->type == JSON_NUMBER) l->sort = (long long)v->num;
    }
  }
  qsort(t->lanes, t->nlanes, sizeof *t->lanes, cmp_lane);
  pidx_t *ix = malloc((t->nlanes ? t->nlanes : 1) * sizeof *ix);
  size_t *order = malloc((t->nev ? t->nev : 1) * sizeof *order);
  t->spans = malloc((t->nev ? t->nev : 1) * sizeof *t->spans);
  t->insts = malloc((t->nev ? t->nev : 1) * sizeof *t->insts);
  size_t *stack = malloc((t->nev ? t->nev : 1) * sizeof *stack);
  if (!ix || !order || !t->spans || !t->insts || !stack) {
    free(ix);
    free(order);
    free(stack);
    goto oom;
  }
  for (size_t i = 0; i < t->nlanes; i++) ix[i] = (pidx_t){.pid = t->lanes[i].pid, .lane = i};
  qsort(ix, t->nlanes, sizeof *ix, cmp_pidx);
  size_t n = 0;
  for (size_t i = 0; i < t->nev; i++)
    if (t->ev[i].ph != 'M') order[n++] = i;
  sort_trace = t;
  qsort(order, n, sizeof *order, cmp_ev);

  /* Pair B/E per (pid, tid); stack holds indices of open spans. */
  size_t depth = 0;
  for (size_t k = 0; k < n; k++) {
    const tev_t *e = &t->ev[order[k]];
    if (k > 0) {
      const tev_t *p = &t->ev[order[k - 1]];
      if (p->pid != e->pid || p->tid != e->tid) depth = 0; /* still-open spans stay open */
    }
    size_t lane = lane_of(ix, t->nlanes, e->pid);
    if (e->ph == 'B') {
      tspan_t *s = &t->spans[t->nspans];
      *s = (tspan_t){.lane = lane, .name = e->name, .t0 = e->ts, .t1 = t->tmax,
                     .depth = (int)depth};
      stack[depth++] = t->nspans++;
    } else if (e->ph == 'E') {
      if (depth == 0) {
        t->unmatched_ends++;
        continue;
      }
      size_t at = depth - 1;
      if (e->name[0] != '\0') /* a named E closes the innermost span of that name */
        for (size_t j = depth; j-- > 0;)
          if (strcmp(t->spans[stack[j]].name, e->name) == 0) {
            at = j;
            break;
          }
      while (depth > at) {
        tspan_t *s = &t->spans[stack[--depth]];
        s->t1 = e->ts;
        s->closed = 1;
        if (depth == at) s->args = e->args;
      }
    } else if (e->ph == 'X') {
      t->spans[t->nspans++] = (tspan_t){.lane = lane, .name = e->name, .t0 = e->ts,
                                        .t1 = e->ts + e->dur, .depth = (int)depth,
                                        .closed = 1, .args = e->args};
    } else if (e->ph == 'i' || e->ph == 'I' || e->ph == 'n') {
      t->insts[t->ninsts++] = (tinst_t){.lane = lane, .name = e->name, .ts = e->ts,
                                        .global = e->scope == 'g'};
    }
  }
  free(stack);
  free(order);
  free(ix);
  qsort(t->spans, t->nspans, sizeof *t->spans, cmp_span);
  qsort(t->insts, t->ninsts, sizeof *t->insts, cmp_inst);
  return 0;
oom:
  snprintf(err, errlen, "%s: out of memory", path);
fail:
  trace_free(t);
  t->path = path;
  return -1;
}

void trace_free(trace_t *t) {
  json_free(t->root);
  free(t->ev);
  free(t->lanes);
  free(t->spans);
  free(t->insts);
  memset(t, 0, sizeof *t);
}
