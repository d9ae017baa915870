/*
 * A timeline file as hvd-timeline sees it: its events, its lanes (trace "processes":
 * one per tensor, pid 0 for the rank itself) and the spans made by pairing B/E events
 * per lane (and X events).
 */
#ifndef HVD_TIMELINE_TRACE_H
#define HVD_TIMELINE_TRACE_H

#include <stddef.h>

#include "json.h"

typedef struct tev {
  char ph;           /* 'B', 'E', 'X', 'i' ('I' and 'n' too), 'M', ... */
  char scope;        /* first character of "s", or 0 */
  double ts, dur;    /* microseconds */
  long long pid, tid;
  const char *name;  /* "" if absent */
  const json_t *args;
  const json_t *obj; /* the whole event */
  size_t order;      /* index in the file */
} tev_t;

typedef struct tlane {
  long long pid;
  const char *name; /* process_name, or NULL */
  long long sort;   /* process_sort_index, or pid */
} tlane_t;

typedef struct tspan {
  size_t lane;      /* index into trace_t.lanes */
  const char *name;
  double t0, t1;
  int depth;
  int closed;       /* 0: still open at the end of the file (t1 = end of the trace) */
  const json_t *args; /* of the E (or X) event */
} tspan_t;

typedef struct tinst {
  size_t lane;
  const char *name;
  double ts;
  int global;
} tinst_t;

typedef struct trace {
  const char *path;
  json_t *root;
  const json_t *other; /* otherData or NULL */
  int rank;            /* otherData.rank, or -1 */
  double epoch_us;     /* otherData.start_time_since_epoch_in_micros, or 0 */
  tev_t *ev;
  size_t nev;
  tlane_t *lanes; /* sorted by sort index, then pid */
  size_t nlanes;
  tspan_t *spans; /* by lane, then start time */
  size_t nspans;
  tinst_t *insts; /* by lane, then time */
  size_t ninsts;
  double tmin, tmax;     /* over all timed events */
  size_t unmatched_ends; /* E events with no open B */
} trace_t;

/* Load and index a file. 0 on success, else -1 with a message in err (and nothing
 * to free). */
int trace_load(trace_t *t, const char *path, char *err, size_t errlen);
void trace_free(trace_t *t);
/* Index of the lane with this pid, or (size_t)-1. */
size_t trace_lane(const trace_t *t, long long pid);

#endif
