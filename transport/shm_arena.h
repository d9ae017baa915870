/*
 * A same-host shared-memory arena: every rank of the host owns one POSIX shared-memory
 * segment (a control block plus two data slots) and maps every other local rank's,
 * so collectives among ranks of one host can read each other's data directly, without
 * a message or a system call per transfer.
 *
 * Life cycle (driven by the runtime during hvd_init):
 *   create  - make and map this rank's segment, touching every page;
 *   attach  - after a job-wide barrier, map the other local ranks' segments;
 *   unlink  - after a second barrier remove this rank's name, so nothing is left in
 *             /dev/shm even if the job is killed later (mappings stay valid).
 * If any step fails (e.g. /dev/shm too small) the runtime goes on without an arena and
 * says so once; collectives then use the libfabric path.
 *
 * Segment layout: the control block (one cache line per counter, so a rank spinning
 * on a peer's counter does not share a line with the peer's other writes), then slot 0
 * and slot 1 of slot_bytes each. Counters only grow; their meaning belongs to the
 * algorithms (collectives/allreduce_shm.c).
 */
#ifndef HVD_TRANSPORT_SHM_ARENA_H
#define HVD_TRANSPORT_SHM_ARENA_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "hvd.h"

#define HVD_ARENA_LINE 64
#define HVD_ARENA_COUNTERS 8

typedef struct hvd_arena_ctrl {
  struct {
    _Atomic uint64_t v;
    char pad[HVD_ARENA_LINE - sizeof(uint64_t)];
  } c[HVD_ARENA_COUNTERS];
  /* For cross-memory reads (process_vm_readv), set once by the owner at creation: its
   * pid and where this block is in its own address space. */
  _Alignas(HVD_ARENA_LINE) int64_t pid;
  uint64_t self;
  /* Owner's buffer that the running single-copy round reads (collectives/shm_coll.c),
   * written before the round's POSTED. */
  uint64_t buf;
} hvd_arena_ctrl_t;

typedef struct hvd_arena {
  int n;          /* local ranks, including this one */
  int me;         /* this rank's local index */
  int *ranks;     /* local index -> global rank (ascending) */
  char **base;    /* local index -> mapped segment (NULL until attached) */
  size_t slot_bytes;
  size_t seg_bytes;
  char name[96];  /* this rank's segment name (until unlinked) */
  int unlinked;
  int cma; /* every member can read every other's memory (hvd_arena_probe_cma, agreed
              by the owner on all members): single-copy algorithms allowed */
  int oversubscribed; /* more local ranks than online CPUs (waits yield early) */
  int stores; /* HVD_SHM_STORE_* forced (HVD_SHM_STORES), or HVD_SHM_STORES_AUTO (default) */
} hvd_arena_t;

/* Kinds of slot stores (collectives/allreduce_shm.c, "Slot stores"), and
 * hvd_arena_t.stores's value when the kind is measured per size class instead. */
#define HVD_SHM_STORE_CACHED 0
#define HVD_SHM_STORE_STREAMING 1
#define HVD_SHM_STORES_AUTO (-1)
#define HVD_SHM_STORES_CHOICES "auto, cached, streaming"

/* The name of a rank's segment: "/hvd-<64-bit hash of tag>-<gen>-<rank>". Names in
 * /dev/shm are visible to every local user and appear in error messages, so the tag
 * (the job token) is never part of them, only a hash of it. */
void hvd_arena_name(char *out, size_t len, const char *tag, int gen, int rank);
/* Create and map this rank's segment. tag: a per-job string (the job token); gen:
 * the context's incarnation; rank: global rank. local_ranks: the n global ranks on
 * this host, ascending, including rank. */
hvd_status_t hvd_arena_create(const char *tag, int gen, int rank, const int *local_ranks, int n,
                              size_t slot_bytes, hvd_arena_t **out, hvd_err_t *err);
/* Map the other local ranks' segments (they must all have been created). */
hvd_status_t hvd_arena_attach(hvd_arena_t *a, const char *tag, int gen, hvd_err_t *err);
/* 1 if this rank can read and write every attached member's memory with
 * process_vm_readv/writev (same user, and Yama or a container does not forbid it),
 * else 0. Each member must have been created (hvd_arena_create makes it accessible
 * under Yama ptrace_scope 1).
 * Whether to use it must be agreed by all members (a->cma). */
int hvd_arena_probe_cma(const hvd_arena_t *a);
/* Read len bytes at the member j's address src into dst (process_vm_readv).
 * HVD_OK, or HVD_ERR_TRANSPORT with the reason in err. */
hvd_status_t hvd_arena_read(const hvd_arena_t *a, int j, void *dst, uint64_t src, size_t len,
                            hvd_err_t *err);
/* Write len bytes from src to member j's address dst (process_vm_writev); same
 * permission and errors as hvd_arena_read. */
hvd_status_t hvd_arena_write(const hvd_arena_t *a, int j, uint64_t dst, const void *src,
                             size_t len, hvd_err_t *err);
/* Remove this rank's name from /dev/shm (mappings stay). */
void hvd_arena_unlink(hvd_arena_t *a);
void hvd_arena_destroy(hvd_arena_t *a);

static inline hvd_arena_ctrl_t *hvd_arena_ctrl(const hvd_arena_t *a, int i) {
  return (hvd_arena_ctrl_t *)(void *)a->base[i];
}
static inline char *hvd_arena_slot(const hvd_arena_t *a, int i, int parity) {
  return a->base[i] + sizeof(hvd_arena_ctrl_t) + (size_t)parity * a->slot_bytes;
}

#endif
