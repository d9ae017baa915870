/*
 * The 64-bit tag layout, in one place (MSB -> LSB):
 *
 *   kind 4 | comm 12 | seq 16 | step 12 | src 20
 *
 * kind  what the message belongs to (HVD_TAG_KIND_*)
 * comm  communicator / process set id
 * seq   the communicator's collective sequence number (mod 2^16); every rank runs a
 *       communicator's collectives in the same order, so the counters agree
 * step  the algorithm's step or chunk index (mod 2^12)
 * src   filled in by the transport: the sender's global rank (transport/transport.h)
 */
#ifndef HVD_COLLECTIVES_TAGS_H
#define HVD_COLLECTIVES_TAGS_H

#include <stdint.h>

#include "transport/transport.h"

enum {
  HVD_TAG_KIND_COLL = 1,    /* collective data */
  HVD_TAG_KIND_CONTROL = 2, /* runtime negotiation */
  HVD_TAG_KIND_BARRIER = 3,
};

#define HVD_TAG_STEP_BITS 12
#define HVD_TAG_SEQ_BITS 16
#define HVD_TAG_COMM_BITS 12

static inline uint64_t hvd_tag_make(unsigned kind, unsigned comm, unsigned seq, unsigned step) {
  uint64_t t = (uint64_t)(kind & 0xfu);
  t = (t << HVD_TAG_COMM_BITS) | (comm & ((1u << HVD_TAG_COMM_BITS) - 1));
  t = (t << HVD_TAG_SEQ_BITS) | (seq & ((1u << HVD_TAG_SEQ_BITS) - 1));
  t = (t << HVD_TAG_STEP_BITS) | (step & ((1u << HVD_TAG_STEP_BITS) - 1));
  return t << HVD_TP_SRC_BITS;
}

#endif
