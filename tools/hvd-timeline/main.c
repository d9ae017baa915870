/*
 * hvd-timeline: read the timeline files hvd writes (HVD_TIMELINE) and
 *   summary FILE...          time per phase, the slowest tensors, who was last ready
 *   merge -o OUT FILE...     per-rank files (HVD_TIMELINE_ALL_RANKS) into one trace
 *   render -o OUT FILE       a picture: self-contained .html (hover for details) or .svg
 * Written in C like the rest of hvd, with its own small JSON reader (json.c): no
 * interpreter or library to install next to the runtime.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "render.h"
#include "trace.h"

static void usage(FILE *f) {
  fputs("usage: hvd-timeline summary [--top N] FILE...\n"
        "       hvd-timeline merge -o OUT.json FILE...\n"
        "       hvd-timeline render -o OUT.html|OUT.svg [--width PX] [--from MS] [--to MS] FILE\n"
        "\n"
        "FILE is a timeline written by hvd (HVD_TIMELINE=FILE, or hvd_timeline_start()).\n"
        "  summary  time per phase (total and percent), the slowest tensors (NEGOTIATE\n"
        "           start to the end of the op) and, from the coordinator's \"rank N ready\"\n"
        "           marks, how often each rank was the last to become ready.\n"
        "  merge    one trace from per-rank files (HVD_TIMELINE_ALL_RANKS=1): each rank's\n"
        "           lanes get pid RANK*1000000+pid and names \"rank R: <tensor>\"; times\n"
        "           are aligned on each file's start time.\n"
        "  render   one row per tensor, a colored box per phase, legend and time axis.\n"
        "           .html adds hover details; .svg shows them as tooltips. --from/--to:\n"
        "           only that window, in ms after the first event.\n",
        f);
}

/* ---- summary ---------------------------------------------------------------------- */

typedef struct pstat {
  const char *name;
  double total, max;
  size_t count;
} pstat_t;

typedef struct tstat {
  char *name;
  double total, max;
  size_t rounds;
} tstat_t;

typedef struct rstat {
  long long rank;
  size_t last;
  double lag_sum, lag_max;
} rstat_t;

typedef struct mark {
  double ts;
  long long rank;
} mark_t;

static int starts_with(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

static void *grow(void *p, size_t n, size_t *cap, size_t elem) {
  if (n < *cap) return p;
  size_t nc = *cap ? *cap * 2 : 16;
  void *q = realloc(p, nc * elem);
  if (q == NULL) {
    fprintf(stderr, "hvd-timeline: out of memory\n");
    exit(1);
  }
  *cap = nc;
  return q;
}

static pstat_t *phase_stat(pstat_t **ps, size_t *n, size_t *cap, const char *name) {
  for (size_t i = 0; i < *n; i++)
    if (strcmp((*ps)[i].name, name) == 0) return &(*ps)[i];
  *ps = grow(*ps, *n, cap, sizeof **ps);
  (*ps)[*n] = (pstat_t){.name = name};
  return &(*ps)[(*n)++];
}

static rstat_t *rank_stat(rstat_t **rs, size_t *n, size_t *cap, long long rank) {
  for (size_t i = 0; i < *n; i++)
    if ((*rs)[i].rank == rank) return &(*rs)[i];
  *rs = grow(*rs, *n, cap, sizeof **rs);
  (*rs)[*n] = (rstat_t){.rank = rank};
  return &(*rs)[(*n)++];
}

static int cmp_pstat(const void *a, const void *b) {
  const pstat_t *x = a, *y = b;
  return x->total < y->total ? 1 : x->total > y->total ? -1 : strcmp(x->name, y->name);
}
static int cmp_tstat(const void *a, const void *b) {
  const tstat_t *x = a, *y = b;
  return x->total < y->total ? 1 : x->total > y->total ? -1 : strcmp(x->name, y->name);
}
static int cmp_rstat(const void *a, const void *b) {
  const rstat_t *x = a, *y = b;
  return x->rank < y->rank ? -1 : x->rank > y->rank;
}
static int cmp_mark(const void *a, const void *b) {
  const mark_t *x = a, *y = b;
  return x->ts < y->ts ? -1 : x->ts > y->ts;
}

/* A lane that holds a tensor (not the rank's own lane). */
static int is_tensor_lane(const trace_t *t, size_t l) {
  return t->lanes[l].pid % 1000000 != 0;
}

static int cmd_summary(int argc, char **argv) {
  int top = 10;
  int first = 0;
  while (first < argc && argv[first][0] == '-') {
    if (strcmp(argv[first], "--top") == 0 && first + 1 < argc) {
      top = atoi(argv[first + 1]);
      first += 2;
    } else {
      usage(stderr);
      return 2;
    }
  }
  int nf = argc - first;
  if (nf < 1) {
    usage(stderr);
    return 2;
  }
  trace_t *ts = calloc((size_t)nf, sizeof *ts);
  pstat_t *ps = NULL;
  tstat_t *tst = NULL;
  rstat_t *rs = NULL;
  size_t nps = 0, cps = 0, nts = 0, cts = 0, nrs = 0, crs = 0;
  size_t rounds = 0, incomplete = 0, ready_rounds = 0, lanes = 0, ngaps = 0;
  double gaps = 0, gap_max = 0; /* time inside rounds that no phase covers */
  int rc = 0;
  for (int f = 0; f < nf; f++) {
    char err[512];
    trace_t *t = &ts[f];
    if (trace_load(t, argv[first + f], err, sizeof err) != 0) {
      fprintf(stderr, "hvd-timeline: %s\n", err);
      rc = 1;
      goto out;
    }
    const json_t *ranks = json_get(t->other, "ranks"); /* a merged file */
    printf("%s: ", t->path);
    if (t->rank >= 0) {
      printf("rank %d", t->rank);
    } else if (ranks && ranks->type == JSON_ARRAY) {
      printf("merged, ranks");
      for (size_t k = 0; k < ranks->n; k++) printf("%s%.0f", k ? "," : " ", ranks->items[k].num);
    } else {
      printf("file %d", f);
    }
    printf(", %.3f s recorded, %zu events\n", (t->tmax - t->tmin) / 1e6, t->nev);
    for (size_t i = 0; i < t->nev; i++)
      if (strcmp(t->ev[i].name, "TIMELINE_TRUNCATED") == 0)
        printf("  warning: truncated at HVD_TIMELINE_MAX_MB (%.0f bytes): later events are missing\n",
               json_get_num(t->ev[i].args, "max_bytes", 0));
    double dropped = 0; /* each report has the total so far */
    for (size_t i = 0; i < t->nev; i++)
      if (strcmp(t->ev[i].name, "DROPPED_EVENTS") == 0)
        dropped = fmax(dropped, json_get_num(t->ev[i].args, "dropped", 0));
    if (dropped > 0)
      printf("  warning: %.0f events were dropped (the writer's ring was full)\n", dropped);
    if (t->unmatched_ends > 0) printf("  note: %zu end events without a begin\n", t->unmatched_ends);

    /* Phases: every closed span. */
    for (size_t i = 0; i < t->nspans; i++) {
      const tspan_t *s = &t->spans[i];
      if (!s->closed) continue;
      pstat_t *p = phase_stat(&ps, &nps, &cps, s->name);
      double d = s->t1 - s->t0;
      p->total += d;
      p->count++;
      if (d > p->max) p->max = d;
    }
    /* Rounds per tensor lane: from a NEGOTIATE_* span's start to the end of the last
     * span before the next one. */
    size_t i = 0;
    while (i < t->nspans) {
      size_t l = t->spans[i].lane, j = i;
      while (j < t->nspans && t->spans[j].lane == l) j++;
      if (is_tensor_lane(t, l)) {
        lanes++;
        const char *lname = t->lanes[l].name ? t->lanes[l].name : "?";
        char *key;
        if (nf > 1 && t->rank >= 0 && !starts_with(lname, "rank ")) {
          size_t n = strlen(lname) + 32;
          key = malloc(n);
          snprintf(key, n, "rank %d: %s", t->rank, lname);
        } else {
          key = strdup(lname);
        }
        tstat_t *ts_ = NULL;
        for (size_t k = i; k < j;) {
          if (!starts_with(t->spans[k].name, "NEGOTIATE")) {
            k++;
            continue;
          }
          double start = t->spans[k].t0, end = t->spans[k].t1;
          double covered = t->spans[k].depth == 0 ? end - start : 0;
          int closed = t->spans[k].closed;
          size_t m = k + 1;
          for (; m < j && !starts_with(t->spans[m].name, "NEGOTIATE"); m++) {
            if (t->spans[m].t1 > end) end = t->spans[m].t1;
            if (t->spans[m].depth == 0) covered += t->spans[m].t1 - t->spans[m].t0;
            closed &= t->spans[m].closed;
          }
          if (closed && m - k > 1) {
            if (ts_ == NULL) {
              tst = grow(tst, nts, &cts, sizeof *tst);
              ts_ = &tst[nts++];
              *ts_ = (tstat_t){.name = key};
              key = NULL;
            }
            double d = end - start, gap = d - covered;
            if (gap > 0.0005) { /* more than rounding of the microsecond times */
              gaps += gap;
              ngaps++;
              if (gap > gap_max) gap_max = gap;
            }
            ts_->total += d;
            ts_->rounds++;
            if (d > ts_->max) ts_->max = d;
            rounds++;
          } else {
            incomplete++;
          }
          k = m;
        }
        free(key);
      }
      i = j;
    }
    /* Who was last ready: the "rank N ready" marks up to each NEGOTIATE span's end. */
    i = 0;
    size_t ii = 0;
    mark_t *mk = NULL;
    size_t cmk = 0;
    while (i < t->nspans || ii < t->ninsts) {
      size_t l = i < t->nspans ? t->spans[i].lane : t->insts[ii].lane;
      if (ii < t->ninsts && t->insts[ii].lane < l) l = t->insts[ii].lane;
      size_t j = i, jj = ii, nmk = 0;
      while (j < t->nspans && t->spans[j].lane == l) j++;
      while (jj < t->ninsts && t->insts[jj].lane == l) {
        long long r;
        if (sscanf(t->insts[jj].name, "rank %lld ready", &r) == 1) {
          mk = grow(mk, nmk, &cmk, sizeof *mk);
          mk[nmk++] = (mark_t){.ts = t->insts[jj].ts, .rank = r};
        }
        jj++;
      }
      if (nmk > 1) qsort(mk, nmk, sizeof *mk, cmp_mark);
      size_t used = 0;
      for (size_t k = i; k < j && used < nmk; k++) { /* spans are by start; NEGOTIATEs don't overlap */
        const tspan_t *s = &t->spans[k];
        if (!s->closed || !starts_with(s->name, "NEGOTIATE")) continue;
        size_t from = used;
        while (used < nmk && mk[used].ts <= s->t1) used++;
        if (used == from) continue;
        const mark_t *last = &mk[used - 1];
        rstat_t *r = rank_stat(&rs, &nrs, &crs, last->rank);
        double lag = last->ts - mk[from].ts;
        r->last++;
        r->lag_sum += lag;
        if (lag > r->lag_max) r->lag_max = lag;
        ready_rounds++;
      }
      i = j;
      ii = jj;
    }
    free(mk);
  }

  double all = gaps;
  for (size_t k = 0; k < nps; k++) all += ps[k].total;
  if (nps > 1) qsort(ps, nps, sizeof *ps, cmp_pstat);
  printf("\n%zu tensor lanes, %zu complete rounds (NEGOTIATE to end of op)", lanes, rounds);
  if (incomplete) printf(", %zu incomplete (still running when the timeline ended)", incomplete);
  printf("\n\nTime per phase (summed over tensors; a fused op counts once per tensor in it)\n");
  printf("  %-32s %12s %7s %9s %10s %10s\n", "phase", "total ms", "%", "spans", "mean ms", "max ms");
  for (size_t k = 0; k < nps; k++)
    printf("  %-32s %12.3f %6.1f%% %9zu %10.3f %10.3f\n", ps[k].name, ps[k].total / 1e3,
           all > 0 ? 100.0 * ps[k].total / all : 0.0, ps[k].count,
           ps[k].total / 1e3 / (double)ps[k].count, ps[k].max / 1e3);
  if (ngaps > 0)
    printf("  %-32s %12.3f %6.1f%% %9zu %10.3f %10.3f\n", "(gaps: in no phase)", gaps / 1e3,
           all > 0 ? 100.0 * gaps / all : 0.0, ngaps, gaps / 1e3 / (double)ngaps, gap_max / 1e3);
  printf("  %-32s %12.3f %6.1f%%\n", "total", all / 1e3, all > 0 ? 100.0 : 0.0);

  if (nts > 1) qsort(tst, nts, sizeof *tst, cmp_tstat);
  printf("\n%d slowest tensors (NEGOTIATE start to the end of the op, summed over rounds)\n", top);
  printf("  %3s  %-40s %7s %12s %10s %10s\n", "#", "tensor", "rounds", "total ms", "mean ms", "max ms");
  for (size_t k = 0; k < nts && k < (size_t)top; k++)
    printf("  %3zu  %-40s %7zu %12.3f %10.3f %10.3f\n", k + 1, tst[k].name, tst[k].rounds,
           tst[k].total / 1e3, tst[k].total / 1e3 / (double)tst[k].rounds, tst[k].max / 1e3);

  if (nrs > 1) qsort(rs, nrs, sizeof *rs, cmp_rstat);
  printf("\nLast rank to become ready (coordinator's \"rank N ready\" marks; %zu rounds)\n", ready_rounds);
  if (nrs == 0) {
    printf("  no marks: they are on the coordinator's timeline (rank 0)\n");
  } else {
    printf("  %6s %8s %7s %14s %14s\n", "rank", "last", "%", "mean lag ms", "max lag ms");
    for (size_t k = 0; k < nrs; k++)
      printf("  %6lld %8zu %6.1f%% %14.3f %14.3f\n", rs[k].rank, rs[k].last,
             100.0 * (double)rs[k].last / (double)ready_rounds,
             rs[k].lag_sum / 1e3 / (double)rs[k].last, rs[k].lag_max / 1e3);
    printf("  (lag: from the first rank ready to this, the last one)\n");
  }
out:
  for (size_t k = 0; k < nts; k++) free(tst[k].name);
  free(tst);
  free(ps);
  free(rs);
  for (int f = 0; f < nf; f++) trace_free(&ts[f]);
  free(ts);
  return rc;
}

/* ---- merge ------------------------------------------------------------------------ */

#define MERGE_PID_STRIDE 1000000LL

static void write_event(FILE *o, const json_t *ev, int rank, double shift) {
  const char *ph = json_get_str(ev, "ph");
  const char *name = json_get_str(ev, "name");
  long long pid = (long long)json_get_num(ev, "pid", 0);
  int meta = ph && ph[0] == 'M' && name != NULL;
  fputc('{', o);
  for (size_t i = 0; i < ev->n; i++) {
    const char *k = ev->keys[i];
    const json_t *v = &ev->items[i];
    if (i) fputc(',', o);
    json_write_string(o, k, strlen(k));
    fputc(':', o);
    if (strcmp(k, "pid") == 0 && v->type == JSON_NUMBER) {
      fprintf(o, "%lld", (long long)rank * MERGE_PID_STRIDE + pid);
    } else if (strcmp(k, "ts") == 0 && v->type == JSON_NUMBER && shift != 0) {
      fprintf(o, "%.3f", v->num + shift);
    } else if (strcmp(k, "args") == 0 && meta && v->type == JSON_OBJECT &&
               (strcmp(name, "process_name") == 0 || strcmp(name, "process_sort_index") == 0)) {
      fputc('{', o);
      for (size_t j = 0; j < v->n; j++) {
        const char *ak = v->keys[j];
        const json_t *av = &v->items[j];
        if (j) fputc(',', o);
        json_write_string(o, ak, strlen(ak));
        fputc(':', o);
        if (strcmp(name, "process_name") == 0 && strcmp(ak, "name") == 0 &&
            av->type == JSON_STRING && !starts_with(av->str, "hvd rank")) {
          size_t n = av->len + 32;
          char *s = malloc(n);
          int len = snprintf(s, n, "rank %d: %s", rank, av->str);
          json_write_string(o, s, (size_t)len);
          free(s);
        } else if (strcmp(ak, "sort_index") == 0 && av->type == JSON_NUMBER) {
          fprintf(o, "%lld", (long long)rank * MERGE_PID_STRIDE + (long long)av->num);
        } else {
          json_write(o, av);
        }
      }
      fputc('}', o);
    } else {
      json_write(o, v);
    }
  }
  fputc('}', o);
}

static int cmp_trace_rank(const void *a, const void *b) {
  const trace_t *x = a, *y = b;
  return x->rank - y->rank;
}

static int cmd_merge(int argc, char **argv) {
  const char *out = NULL;
  int first = 0;
  if (argc >= 2 && strcmp(argv[0], "-o") == 0) {
    out = argv[1];
    first = 2;
  }
  int nf = argc - first;
  if (out == NULL || nf < 1) {
    usage(stderr);
    return 2;
  }
  trace_t *ts = calloc((size_t)nf, sizeof *ts);
  int rc = 1;
  for (int f = 0; f < nf; f++) {
    char err[512];
    if (trace_load(&ts[f], argv[first + f], err, sizeof err) != 0) {
      fprintf(stderr, "hvd-timeline: %s\n", err);
      goto done;
    }
    if (ts[f].rank < 0) ts[f].rank = f; /* not one of ours: number the files */
    for (size_t l = 0; l < ts[f].nlanes; l++)
      if (ts[f].lanes[l].pid < 0 || ts[f].lanes[l].pid >= MERGE_PID_STRIDE) {
        fprintf(stderr, "hvd-timeline: %s: pid %lld out of range for merging\n", ts[f].path,
                ts[f].lanes[l].pid);
        goto done;
      }
  }
  qsort(ts, (size_t)nf, sizeof *ts, cmp_trace_rank);
  for (int f = 1; f < nf; f++)
    if (ts[f].rank == ts[f - 1].rank) {
      fprintf(stderr, "hvd-timeline: %s and %s are both rank %d\n", ts[f - 1].path, ts[f].path,
              ts[f].rank);
      goto done;
    }
  double epoch = 0;
  int aligned = 1;
  for (int f = 0; f < nf; f++) {
    if (ts[f].epoch_us <= 0) aligned = 0;
    else if (epoch == 0 || ts[f].epoch_us < epoch) epoch = ts[f].epoch_us;
  }
  FILE *o = fopen(out, "w");
  if (o == NULL) {
    perror(out);
    goto done;
  }
  fprintf(o, "{\"otherData\":{\"generator\":\"hvd-timeline merge\",\"format\":1,\"ranks\":[");
  for (int f = 0; f < nf; f++) fprintf(o, "%s%d", f ? "," : "", ts[f].rank);
  fprintf(o, "]");
  if (aligned) fprintf(o, ",\"start_time_since_epoch_in_micros\":%.0f", epoch);
  fprintf(o, "},\"displayTimeUnit\":\"ms\",\n\"traceEvents\":[");
  size_t n = 0;
  for (int f = 0; f < nf; f++) {
    double shift = aligned ? ts[f].epoch_us - epoch : 0;
    for (size_t i = 0; i < ts[f].nev; i++) {
      fputs(n++ ? ",\n" : "\n", o);
      write_event(o, ts[f].ev[i].obj, ts[f].rank, shift);
    }
  }
  fputs("\n]}\n", o);
  if (ferror(o) | fclose(o)) {
    fprintf(stderr, "hvd-timeline: error writing %s\n", out);
    goto done;
  }
  printf("merged %d files (ranks", nf);
  for (int f = 0; f < nf; f++) printf(" %d", ts[f].rank);
  printf(") into %s: %zu events%s\n", out, n, aligned ? "" : " (times not aligned: no start times)");
  rc = 0;
done:
  for (int f = 0; f < nf; f++) trace_free(&ts[f]); /* zeroed ones too: a no-op */
  free(ts);
  return rc;
}

/* ---- render ----------------------------------------------------------------------- */

static int cmd_render(int argc, char **argv) {
  const char *out = NULL, *in = NULL;
  int width = 1200;
  double from = 0, to = -1;
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "-o") == 0 && i + 1 < argc) out = argv[++i];
    else if (strcmp(argv[i], "--width") == 0 && i + 1 < argc) width = atoi(argv[++i]);
    else if (strcmp(argv[i], "--from") == 0 && i + 1 < argc) from = atof(argv[++i]);
    else if (strcmp(argv[i], "--to") == 0 && i + 1 < argc) to = atof(argv[++i]);
    else if (in == NULL && argv[i][0] != '-') in = argv[i];
    else {
      usage(stderr);
      return 2;
    }
  }
  if (out == NULL || in == NULL || width < 300 || from < 0 || (to >= 0 && to <= from)) {
    usage(stderr);
    return 2;
  }
  size_t n = strlen(out);
  int svg = n > 4 && strcmp(out + n - 4, ".svg") == 0;
  if (!svg && !(n > 5 && strcmp(out + n - 5, ".html") == 0) && !(n > 4 && strcmp(out + n - 4, ".htm") == 0)) {
    fprintf(stderr, "hvd-timeline: render: OUT must end in .html or .svg\n");
    return 2;
  }
  trace_t t;
  char err[512];
  if (trace_load(&t, in, err, sizeof err) != 0) {
    fprintf(stderr, "hvd-timeline: %s\n", err);
    return 1;
  }
  int rc = render(&t, out, svg, width, from, to);
  trace_free(&t);
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *c = argv[1];
  if (strcmp(c, "summary") == 0) return cmd_summary(argc - 2, argv + 2);
  if (strcmp(c, "merge") == 0) return cmd_merge(argc - 2, argv + 2);
  if (strcmp(c, "render") == 0) return cmd_render(argc - 2, argv + 2);
  if (strcmp(c, "-h") == 0 || strcmp(c, "--help") == 0 || strcmp(c, "help") == 0) {
    usage(stdout);
    return 0;
  }
  fprintf(stderr, "hvd-timeline: unknown command '%s'\n", c);
  usage(stderr);
  return 2;
}
