/*
 * Negotiation messages between a process set's members and its coordinator (the
 * set's rank 0), and their wire encoding.
 *
 * A worker sends a request list: the cache bits of cached tensors it has ready, the
 * full requests of uncached ones, and flags. The coordinator answers every member
 * with one response list, in one agreed order; each response names the tensors it
 * covers (a fused response covers several) or carries an error.
 *
 * Encoding: little-endian, every length bounded and checked before use (decoders are
 * fuzzed). A malformed message is HVD_ERR_PROTOCOL, never a crash.
 */
#ifndef HVD_RUNTIME_MESSAGE_H
#define HVD_RUNTIME_MESSAGE_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "hvd.h" /* HVD_NAME_MAX: the longest name on the wire, as in the API */

typedef enum {
  HVD_MSG_ALLREDUCE = 0,
  HVD_MSG_ALLGATHER,
  HVD_MSG_BROADCAST,
  HVD_MSG_REDUCESCATTER,
  HVD_MSG_ALLTOALL,
  HVD_MSG_BARRIER,
  HVD_MSG_JOIN,
  HVD_MSG_PROCESS_SET, /* create a process set: splits = its ranks */
  HVD_MSG_ERROR, /* responses only */
  HVD_MSG_TYPE_COUNT
} hvd_msg_type_t;

const char *hvd_msg_type_name(hvd_msg_type_t t); /* "ALLREDUCE", ... */

/* What one rank asks for one tensor. */
typedef struct hvd_request {
  uint8_t type;  /* hvd_msg_type_t */
  uint8_t dtype; /* hvd_dtype_t */
  uint8_t op;    /* hvd_op_t (reductions) */
  int32_t rank;  /* requesting rank, within the process set */
  int32_t root;  /* broadcast root, within the process set */
  uint64_t count; /* elements: allreduce/broadcast/reducescatter: the tensor;
                     allgather: this rank's part; alltoall: this rank's total send */
  double prescale, postscale;
  uint32_t group; /* grouped allreduce: group size (0 = not grouped) */
  uint32_t nsplits;
  uint64_t *splits; /* alltoall: elements to send to each member (nsplits = size) */
  char *name;
} hvd_request_t;

/* What every rank does next. */
typedef struct hvd_response {
  uint8_t type; /* hvd_msg_type_t; HVD_MSG_ERROR carries `error` */
  uint8_t dtype, op;
  int32_t root;
  double prescale, postscale;
  uint32_t ntensors;
  char **names;       /* ntensors */
  int32_t *cache_ids; /* ntensors; -1 = not cached */
  /* Sizes: allreduce/broadcast/reducescatter: one count per tensor (ncounts =
   * ntensors); allgather: per tensor, per member (ncounts = ntensors * size);
   * alltoall: the size x size split matrix (row = sender). */
  uint32_t ncounts;
  uint64_t *counts;
  int32_t last_joined; /* JOIN: the last rank to join; -1 otherwise */
  int32_t status;      /* ERROR: the hvd_status_t every listed request fails with */
  char *error;
} hvd_response_t;

typedef struct hvd_request_list {
  uint32_t flags;    /* HVD_REQ_FLAG_* */
  uint32_t set;      /* process set id */
  uint64_t ack;      /* sequence number of the last response list of the set applied */
  uint32_t nwords;   /* cache bit words that follow */
  uint64_t *bits;    /* ready cache entries, bit i = cache id i */
  uint32_t n;
  hvd_request_t *reqs;
} hvd_request_list_t;

#define HVD_REQ_FLAG_SHUTDOWN 1u /* this rank is shutting down */
/* Sent while this rank's application computes on the core its background thread
 * shares (not waiting): the rank runs no collective before its application waits or
 * its background thread's next timeout (bg.c), so the coordinator holds ready tensors
 * (up to the cycle time) rather than start a collective the others would wait in. */
#define HVD_REQ_FLAG_BUSY 2u

typedef struct hvd_response_list {
  uint32_t flags; /* HVD_RESP_FLAG_* */
  uint32_t set;   /* process set id */
  uint64_t seq;   /* 1, 2, 3, ... per process set */
  uint32_t n;
  hvd_response_t *resps;
  uint32_t nevict;
  int32_t *evict; /* cache ids every rank drops before executing this list */
} hvd_response_list_t;

#define HVD_RESP_FLAG_SHUTDOWN 1u /* every rank asked to shut down: stop */

/* Growable byte buffer (same idea as the rendezvous one, kept separate: layers). */
typedef struct hvd_wbuf {
  uint8_t *data;
  size_t len, cap;
  int oom;
} hvd_wbuf_t;
void hvd_wbuf_free(hvd_wbuf_t *b);

/* The process set a request or response list is for, read before decoding it (the
 * decoders check sizes against the set's size). -1 if the message is too short. */
int hvd_msg_peek_set(const uint8_t *p, size_t len, uint32_t *set);

/* nmembers: the size of the list's process set. */
hvd_status_t hvd_request_list_encode(const hvd_request_list_t *l, hvd_wbuf_t *out);
hvd_status_t hvd_request_list_decode(const uint8_t *p, size_t len, int nmembers,
                                     hvd_request_list_t *l, hvd_err_t *err);
void hvd_request_list_free(hvd_request_list_t *l);

hvd_status_t hvd_response_list_encode(const hvd_response_list_t *l, hvd_wbuf_t *out);
hvd_status_t hvd_response_list_decode(const uint8_t *p, size_t len, int nmembers,
                                      hvd_response_list_t *l, hvd_err_t *err);
void hvd_response_list_free(hvd_response_list_t *l);

void hvd_request_free(hvd_request_t *r);
void hvd_response_free(hvd_response_t *r);
/* Deep copy; returns HVD_ERR_NO_MEMORY on failure (dst then empty). */
hvd_status_t hvd_request_copy(hvd_request_t *dst, const hvd_request_t *src);

#endif
