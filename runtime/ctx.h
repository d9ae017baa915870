/*
 * The context, requests and process sets, private to runtime/.
 *
 * Threads: application threads only validate, enqueue and wait (api.c). One
 * background thread per context owns the transport, negotiates and runs every
 * collective (bg.c, exec.c). One liveness thread watches the rendezvous connection and
 * turns an ABORT from the launcher, or the loss of the connection, into ctx->aborted.
 *
 * Objects: a request (hvd_req_t, what the caller holds) covers one or more entries
 * (one per tensor; several for a grouped allreduce). Entries travel through the
 * context's queue to the background thread, which files them per process set by name.
 */
#ifndef HVD_RUNTIME_CTX_H
#define HVD_RUNTIME_CTX_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "collectives/comm.h"
#include "common/err.h"
#include "common/strmap.h"
#include "hvd.h"
#include "runtime/config.h"
#include "runtime/coord.h"
#include "runtime/message.h"
#include "runtime/timeline.h"
#include "transport/rdv.h"
#include "transport/transport.h"

#define HVD_HOST_MAX 256
#define HVD_MAX_PSETS 4096 /* ids fit the tag's comm field */
#define HVD_TEST_POLL_NS 2000000ull

typedef struct hvd_entry hvd_entry_t;

struct hvd_entry {
  hvd_entry_t *next; /* queue link (intrusive) */
  hvd_req_t *req;
  hvd_request_t meta; /* what goes on the wire; meta.name owned here */
  char *key;          /* "<set>/<name>": the in-flight map key */
  int pset;
  const void *sendbuf;
  void *recvbuf;
  size_t recv_capacity;
  uint64_t enqueue_ns;
};

struct hvd_req {
  hvd_ctx_t *ctx;
  int nentries;
  atomic_int remaining;
  hvd_entry_t *entries; /* nentries */
  hvd_callback_t callback;
  void *callback_arg;

  /* Results, written by the background thread before `done` is set. */
  hvd_status_t status;
  char err[HVD_ERR_MSG_MAX];
  void *out_buf; /* allgather/alltoall output (recvbuf, or out_alloc) */
  void *out_alloc;
  size_t out_count;
  size_t *recv_counts;
  int nrecv_counts;
  int int_result; /* join: last rank; process set: id */

  atomic_int finished; /* results final: set before the callback runs (it may read them) */
  atomic_int done;     /* set after the callback: hvd_test/hvd_wait see this */
  pthread_mutex_t mu;

  /* Failed by hvd_fail_stranded while the background thread may still hold its
   * entries (stuck in the transport): hvd_req_free then only marks it `freed`, and
   * whoever clears `held` (hvd_release_stranded) destroys it. Both guarded by mu. */
  int held;
  int freed;
  hvd_req_t *stranded_next; /* ctx->stranded list, guarded by ctx->mu */
};

/* A process set as this rank sees it. */
typedef struct hvd_pset {
  int id;
  int n;
  int *members; /* global ranks, sorted */
  int me;       /* my index, or -1 */
  hvd_comm_t comm;

  /* Member side (me >= 0). */
  hvd_strmap_t pending; /* name -> entry submitted, not yet done */
  uint64_t applied;     /* last response list applied */
  int ncache;           /* worker cache: id -> slot */
  struct wslot {
    char *name;         /* NULL: empty */
    hvd_request_t own;  /* my request when it was cached (own.name NULL: none) */
  } *cache;
  hvd_strmap_t cache_by_name;
  hvd_request_list_t out; /* being built for the coordinator */
  size_t out_cap;
  int out_dirty;
  int sent_busy; /* the last list sent had HVD_REQ_FLAG_BUSY */
  int shutdown_sent;
  int shut; /* the coordinator said everyone shut down */
  hvd_entry_t *join_entry;

  /* Coordinator side (global rank 0 only). */
  hvd_coord_t *coord;
} hvd_pset_t;

/* Identity of this rank within the job (env.c). */
typedef struct hvd_identity {
  int rank, size, local_rank, local_size, cross_rank, cross_size;
  char hostname[HVD_HOST_MAX];
  char rdv_addr[HVD_HOST_MAX];
  int rdv_port;
  char token[HVD_RDV_TOKEN_LEN + 1];
  int have_launcher; /* a rendezvous address was given */
} hvd_identity_t;

typedef struct hvd_engine hvd_engine_t; /* bg.c: control channel and buffers */

struct hvd_ctx {
  hvd_identity_t id;
  hvd_config_t cfg;

  hvd_rdv_client_t *rdv;
  struct hvd_arena *arena; /* same-host shared memory, when every rank is local */
  int nlocal;              /* ranks on this host (from the address exchange) */
  int *local_ranks;
  char **hosts; /* hosts[r]: rank r's host (address exchange), for transport errors */
  int gen; /* incarnation of this rank in the job (re-init after shutdown) */
  hvd_transport_t *tp;

  /* Queue of entries for the background thread and names in flight, guarded by mu. */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  hvd_entry_t *head, *tail;
  atomic_int queued; /* head != NULL, readable without the lock */
  hvd_strmap_t inflight; /* "<set>/<name>" -> entry, to refuse duplicates */
  int stopping;      /* set by hvd_shutdown */
  uint64_t noname_seq;
  /* Application threads blocked in hvd_wait (changed under mu, which hvd_wait also
   * signals cv with): while none is, and the rank has no core to spare, the
   * background thread sleeps between polls instead of taking the core from a
   * computing application thread (bg.c, idle_wait). */
  atomic_int waiters;
  atomic_ullong test_ns; /* hvd_now_ns() of the last hvd_test that found a request not
                            done: counts as waiting for HVD_TEST_POLL_NS */
  int spare_core; /* this rank has at least two CPUs: polling costs the other thread
                     nothing (set before the background thread starts) */
  hvd_req_t *stranded; /* requests failed by hvd_fail_stranded, still held */

  /* Process sets: written by the background thread, read by getters under pset_mu. */
  pthread_mutex_t pset_mu;
  hvd_pset_t *psets[HVD_MAX_PSETS];
  int npsets;

  hvd_engine_t *eng;
  int next_pset_id;
  int allreduce_algo; /* hvd_algo_t from HVD_ALLREDUCE_ALGO */
  int allgather_algo; /* ... HVD_ALLGATHER_ALGO */
  int broadcast_algo; /* ... HVD_BROADCAST_ALGO */

  /* Timeline: used by the background thread only; switched through tl_cmd. */
  hvd_timeline_t *tl;
  int tl_cmd;               /* 0 none, 1 install tl_next, guarded by mu */
  hvd_timeline_t *tl_next;
  pthread_cond_t tl_cv;     /* signalled when the background thread took tl_cmd */
  uint64_t tl_list_ns;      /* arrival of the response list being executed */

  /* hvd_run_on_bg: one direct call at a time, guarded by mu. */
  hvd_status_t (*direct_fn)(hvd_comm_t *world, void *arg);
  void *direct_arg;
  hvd_status_t direct_rc;
  int direct_state; /* 0 idle, 1 requested, 2 done */

  /* Persistent fusion buffer (background thread only), pre-touched. */
  void *fusion;
  size_t fusion_size;

  /* Counters (atomics: read by hvd_get_stats from any thread). */
  atomic_ullong st_submitted, st_completed, st_collectives, st_fused, st_cache_hits,
      st_negotiations;

  pthread_t bg;
  int bg_started;
  int bg_exited; /* guarded by mu */
  int abandoned; /* guarded by mu: hvd_shutdown gave up on a stuck background thread,
                    which frees the context if it ever gets out */
  pthread_t live;
  int live_started;
  int live_pipe[2]; /* written to stop the liveness thread */
  int pdeathsig;    /* parent-death signal lifted while the liveness thread runs, or 0 */
  pid_t ppid;       /* the parent it belongs to */

  /* First job-wide failure; once set, everything fails with it. */
  atomic_int aborted;
  pthread_mutex_t abort_mu;
  char abort_msg[HVD_ERR_MSG_MAX];
  uint64_t abort_ns; /* hvd_now_ns() of the abort; written before aborted is set */
};

/* env.c: read the job identity from HVD_* (HOROVOD_* aliases). */
hvd_status_t hvd_identity_from_env(hvd_identity_t *id, hvd_err_t *err);

/* ctx.c: record the first job-wide failure (later calls are ignored). */
void hvd_ctx_abort(hvd_ctx_t *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A transfer with a peer failed. If the peer died, the launcher's ABORT naming it is
 * on its way (the transport often notices first): wait up to HVD_PEER_FAILURE_WAIT_MS
 * for ctx to be aborted, so that the real cause, not this secondary error, becomes
 * the job's. Returns 1 if ctx is aborted. Background thread. */
#define HVD_PEER_FAILURE_WAIT_MS 2000
int hvd_ctx_await_abort(hvd_ctx_t *ctx);

/* A background thread can be stuck where no abort flag reaches it (libfabric's shm
 * provider spinning on a lock that a dead peer held; docs/failures.md). Once the
 * context has been aborted for HVD_STRANDED_GRACE_MS, the liveness thread fails what
 * the background thread has not (hvd_fail_stranded), and hvd_shutdown waits for the
 * background thread only until HVD_ABORT_JOIN_MS after the abort (at least
 * HVD_ABORT_JOIN_MIN_MS), then leaves it behind with the context. */
#define HVD_STRANDED_GRACE_MS 250
#define HVD_ABORT_JOIN_MS 1000
#define HVD_ABORT_JOIN_MIN_MS 250
/* ctx.c: free a context whose threads are gone (or, the background thread, itself). */
void hvd_ctx_free(hvd_ctx_t *ctx);

/* pset.c */
hvd_pset_t *hvd_pset_new(hvd_ctx_t *ctx, int id, const int *ranks, int n);
void hvd_pset_free(hvd_pset_t *ps);
/* Install ps in the table (background thread). */
void hvd_pset_install(hvd_ctx_t *ctx, hvd_pset_t *ps);
hvd_pset_t *hvd_pset_get(hvd_ctx_t *ctx, int id);

/* bg.c */
void *hvd_bg_main(void *arg);
/* On a background thread, its context (NULL elsewhere): lets blocking calls made
 * from a completion callback fail instead of waiting for themselves. */
extern _Thread_local hvd_ctx_t *hvd_bg_self;
hvd_status_t hvd_engine_new(hvd_ctx_t *ctx, hvd_engine_t **out, hvd_err_t *err);
void hvd_engine_free(hvd_engine_t *eng);

/* exec.c: execute one response on a member; completes the entries it covers. */
void hvd_exec_response(hvd_ctx_t *ctx, hvd_pset_t *ps, const hvd_response_t *r,
                       uint64_t t_list);
/* Finish one entry (and its request when it was the last). */
void hvd_entry_complete(hvd_ctx_t *ctx, hvd_entry_t *e, hvd_status_t st, const char *msg);

/* tl_api.c */
void hvd_timeline_take_switch(hvd_ctx_t *ctx);
hvd_status_t hvd_timeline_open_for(hvd_ctx_t *ctx, const char *path, hvd_timeline_t **out);

/* api.c */
void hvd_req_finish(hvd_req_t *r);
/* Background thread, around the execution of one response: the requests it finishes
 * are woken together at the end (nests). */
void hvd_req_batch_begin(void);
void hvd_req_batch_end(void);
/* Liveness thread, the context aborted: complete every entry still in flight with
 * HVD_ERR_ABORTED and the abort message (callbacks run here, once). An entry is
 * completed by whoever takes it out of ctx->inflight, so a late completion by the
 * background thread is a no-op. Their requests stay `held` until
 * hvd_release_stranded. Returns how many entries it failed. */
int hvd_fail_stranded(hvd_ctx_t *ctx);
/* Background thread, once it holds no entry any more (after failing everything on an
 * abort, or on its way out): requests failed by hvd_fail_stranded are no longer
 * held; those the application freed meanwhile are destroyed now. */
void hvd_release_stranded(hvd_ctx_t *ctx);

/* Run fn(world communicator, arg) on the background thread, which owns the transport,
 * and return its status. For benchmarks and tests that time raw collectives: every
 * rank must make the same calls in the same order, with no other operation in flight.
 * Blocks. */
hvd_status_t hvd_run_on_bg(hvd_ctx_t *ctx, hvd_status_t (*fn)(hvd_comm_t *world, void *arg),
                           void *arg);

#endif
