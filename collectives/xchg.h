/*
 * One pipelined exchange step, the building block of every collective here
 * (private to collectives/).
 *
 * A step sends send_count elements to one member and receives recv_count elements
 * from another (either may be absent, or the same member), cut into chunks of
 * HVD_COLL_CHUNK_BYTES. Up to HVD_COLL_SLOTS chunks of each direction are in flight;
 * receives are posted before sends. Received data either lands in recv_buf directly
 * or, when reduce_with is set, lands in one of the communicator's scratch slots and
 * is reduced from there into recv_buf (recv_buf = reduce_with op incoming, or
 * incoming op reduce_with), chunk by chunk, while the next chunks are arriving.
 *
 * Matching. Every chunk of a step carries the same tag. That is enough: between one
 * pair of ranks, both sides post the step's chunks (and the steps of a collective)
 * in the same order, with the same lengths, and the transport matches equal tags in
 * post order. The tag's step field only keeps different steps apart (and helps when
 * reading a trace); it may wrap at 4096 steps without harm for the same reason.
 * Sender and receiver must compute the same counts: both derive them from arguments
 * every rank agrees on.
 *
 * Aliasing: reduce_with may equal recv_buf. send_buf may equal recv_buf only when
 * reducing with send_count == recv_count (chunk k is overwritten only after its own
 * send completed); otherwise the buffers must not overlap.
 */
#ifndef HVD_COLLECTIVES_XCHG_H
#define HVD_COLLECTIVES_XCHG_H

#include <stddef.h>
#include <stdint.h>

#include "collectives/comm.h"
#include "collectives/tags.h"
#include "hvd.h"

/* Bytes per chunk: large enough to amortise per-message cost, small enough that the
 * reduction of one chunk overlaps the arrival of the next (and stays in L2). */
#ifndef HVD_COLL_CHUNK_BYTES
#define HVD_COLL_CHUNK_BYTES (256u * 1024u)
#endif

typedef struct hvd_xchg {
  int send_to;             /* member index, or -1: nothing to send */
  const void *send_buf;
  size_t send_count;       /* elements */
  int recv_from;           /* member index, or -1: nothing to receive */
  void *recv_buf;
  size_t recv_count;       /* elements */
  const void *reduce_with; /* NULL: receive into recv_buf; else reduce (see above) */
  int incoming_first;      /* reduce as incoming op reduce_with (operand order) */
} hvd_xchg_t;

/* Run one step to completion. dtype sizes the elements (and, with op, the
 * reduction). Blocks; returns HVD_OK or the transport's error (xfers then stay with
 * the transport, see comm.h). */
hvd_status_t hvd_xchg_run(hvd_comm_t *c, uint64_t tag, const hvd_xchg_t *x,
                          hvd_dtype_t dtype, hvd_op_t op);

/* The data tag of step `step` of the collective with sequence number seq on c. */
static inline uint64_t hvd_coll_tag(const hvd_comm_t *c, unsigned seq, unsigned step) {
  return hvd_tag_make(HVD_TAG_KIND_COLL, c->id, seq, step);
}

/* c->work with at least bytes bytes (grown on demand, 64-byte aligned); NULL if out
 * of memory. Invalidates earlier pointers into it when it grows. */
void *hvd_comm_work(hvd_comm_t *c, size_t bytes);
/* c->scratch with at least bytes bytes. */
void *hvd_comm_scratch(hvd_comm_t *c, size_t bytes);

#endif
