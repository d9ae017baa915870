/*
 * Timeline: a Chrome trace-event JSON file of every tensor's life (loads in
 * Perfetto and chrome://tracing), with Horovod's phase names.
 *
 * Producers (the background thread) call the hvd_tl_* functions below; they copy the
 * event into a bounded in-memory ring and return at once: they never wait on the disk
 * and never allocate. A writer thread of the timeline's own formats and writes events;
 * when the ring is full the event is dropped and counted, and the count is written.
 * The file is valid JSON after every flush (the writer keeps a closing "]}" at the end
 * and overwrites it on the next flush), so a killed job leaves a loadable trace.
 * A size cap ends the file with a closing marker event.
 *
 * Layout: one trace "process" per tensor name (its lane, named by a metadata event),
 * with one duration event per phase, one after the other: NEGOTIATE_<OP> (instant
 * marks per rank as it becomes ready, on the coordinator), QUEUE,
 * MEMCPY_IN_FUSION_BUFFER, <OP> (args: algorithm, bytes, fused tensor count),
 * MEMCPY_OUT_FUSION_BUFFER. pid 0 is the rank's own lane: CYCLE_START instants when
 * cycle marking is on, DROPPED_EVENTS, TIMELINE_TRUNCATED, TIMELINE_END. The writer
 * keeps B/E paired per lane (an E whose B is not in the file is left out; spans open
 * at close get an E with "unfinished":true). docs/timeline.md has the details.
 *
 * Every function accepts tl == NULL and then does nothing.
 */
#ifndef HVD_RUNTIME_TIMELINE_H
#define HVD_RUNTIME_TIMELINE_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "hvd.h"

typedef struct hvd_timeline hvd_timeline_t;

typedef struct hvd_timeline_opts {
  const char *path;   /* file to write (created/truncated) */
  int rank;           /* written into the trace metadata */
  int mark_cycles;    /* emit CYCLE_START instants */
  size_t max_bytes;   /* 0 = unlimited; else stop (with a closing marker) at this size */
  size_t ring_events; /* ring capacity in typical events (128 bytes each; records are
                         variable-length, up to ~1.1 KB with a 512-byte name);
                         0 = default (65536, an 8 MiB ring) */
} hvd_timeline_opts_t;

/* Create/truncate the file, write its header and start the writer thread. Any thread.
 * HVD_ERR_INVALID_PARAM (message in err) if the file cannot be created. */
hvd_status_t hvd_timeline_open(const hvd_timeline_opts_t *opts, hvd_timeline_t **out,
                               hvd_err_t *err);
/* Flush everything, write the closing bytes, stop the writer, close, free. Blocks
 * until the writer has drained the ring. Call it after the last producer call. */
void hvd_timeline_close(hvd_timeline_t *tl);

/* Events. ts is hvd_now_ns(). tensor and phase are copied (truncated if very long).
 * args: NULL or a JSON object body without braces, e.g. "\"algorithm\":\"ring\"". */
void hvd_tl_begin(hvd_timeline_t *tl, const char *tensor, const char *phase, uint64_t ts);
void hvd_tl_end(hvd_timeline_t *tl, const char *tensor, const char *phase, uint64_t ts,
                const char *args);
void hvd_tl_instant(hvd_timeline_t *tl, const char *tensor, const char *what, uint64_t ts);
void hvd_tl_cycle(hvd_timeline_t *tl, uint64_t ts);
int hvd_tl_mark_cycles(const hvd_timeline_t *tl);

/* Events dropped so far because the ring was full. */
uint64_t hvd_tl_dropped(const hvd_timeline_t *tl);

#endif
