/*
 * hvd.h - the public C API of hvd, a Horovod-style collective communication runtime.
 *
 * This is the only header a program includes. Every object behind it is opaque.
 *
 * Conventions that hold for every function below unless its comment says otherwise:
 *  - Functions return an hvd_status_t: HVD_OK (0) on success, HVD_IN_PROGRESS (> 0)
 *    when an asynchronous operation is still running, a negative HVD_ERR_* on failure.
 *    A failure leaves outputs untouched and comes with a message (hvd_req_error(),
 *    hvd_ctx_error(), or the log) that names what was wrong.
 *  - Threads: a context may be used from any number of application threads at once
 *    (hvd_init/hvd_shutdown excepted, see there). The library never calls exit(),
 *    never prints to stdout, and logs to stderr through HVD_LOG_LEVEL.
 *  - Memory: buffers passed to an asynchronous call are owned by the caller and must
 *    stay valid, and must not be written (send) or read (receive), until the request
 *    completes. Requests are owned by the caller from the moment they are returned
 *    until hvd_req_free().
 *  - Bad arguments are checked before anything happens and fail with
 *    HVD_ERR_INVALID_PARAM and an error-level log line naming the function (or the
 *    operation and tensor) and the argument, e.g.
 *      [hvd 0][error] broadcast(w1): invalid parameter: root 2 is out of range: ...
 *    docs/errors.md lists every case. In particular:
 *      - a NULL ctx (there is no global state, so "before hvd_init" means this) is
 *        HVD_ERR_INVALID_PARAM; getters return -1, hvd_ctx_error "", and
 *        hvd_shutdown(NULL) does nothing;
 *      - a context whose hvd_shutdown has begun on another thread (and not yet
 *        returned) refuses new work with HVD_ERR_SHUTDOWN; getters still answer;
 *      - a context after hvd_shutdown returned, and a request after hvd_req_free (so
 *        also freeing it twice), are freed memory: using them is undefined, as with
 *        free(). hvd does not try to detect it: reading the freed object to find out
 *        would itself be the use-after-free;
 *      - blocking calls made from a completion callback, where they would wait for
 *        the callback's own thread, fail with HVD_ERR_INVALID_PARAM instead of hanging.
 */
#ifndef HVD_H
#define HVD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(HVD_BUILDING_LIBRARY) && defined(__GNUC__)
#define HVD_EXPORT __attribute__((visibility("default")))
#else
#define HVD_EXPORT
#endif

#define HVD_VERSION_MAJOR 0
#define HVD_VERSION_MINOR 1
#define HVD_VERSION_PATCH 0

/* ---- status codes ---------------------------------------------------------------
 * One list generates the enum and the strings returned by hvd_status_string(). */
#define HVD_STATUS_MAP(X)                                                              \
  X(OK, 0, "success")                                                                  \
  X(IN_PROGRESS, 1, "operation in progress")                                           \
  X(ERR_INVALID_PARAM, -1, "invalid parameter")                                        \
  X(ERR_NO_MEMORY, -2, "out of memory")                                                \
  X(ERR_NOT_SUPPORTED, -3, "operation not supported")                                  \
  X(ERR_TRANSPORT, -4, "transport error")                                              \
  X(ERR_ABORTED, -5, "job aborted: a peer rank failed or the launcher stopped the job") \
  X(ERR_TIMEOUT, -6, "timed out")                                                      \
  X(ERR_MISMATCH, -7, "ranks disagree about an operation")                             \
  X(ERR_SHUTDOWN, -8, "hvd is shut down")                                              \
  X(ERR_BOOTSTRAP, -9, "bootstrap (rendezvous) failed")                                \
  X(ERR_AUTH, -10, "authentication failed")                                            \
  X(ERR_PROTOCOL, -11, "malformed message")                                            \
  X(ERR_NOT_FOUND, -12, "not found")                                                   \
  X(ERR_INTERNAL, -13, "internal error")

typedef enum {
#define HVD_STATUS_ENUM_(name, value, text) HVD_##name = value,
  HVD_STATUS_MAP(HVD_STATUS_ENUM_)
#undef HVD_STATUS_ENUM_
} hvd_status_t;

/* A static, human-readable string for any status value (never NULL; unknown values
 * give "unknown status"). Thread-safe. */
HVD_EXPORT const char *hvd_status_string(hvd_status_t status);

/* ---- element types and reductions ------------------------------------------------ */
typedef enum {
  HVD_FLOAT16 = 0,
  HVD_BFLOAT16,
  HVD_FLOAT32,
  HVD_FLOAT64,
  HVD_INT8,
  HVD_UINT8,
  HVD_INT32,
  HVD_INT64,
  HVD_DTYPE_COUNT /* not a type: the number of types */
} hvd_dtype_t;

typedef enum {
  HVD_SUM = 0,
  HVD_AVERAGE, /* sum divided by the number of ranks; integers truncate toward zero */
  HVD_MIN,
  HVD_MAX,
  HVD_PRODUCT,
  HVD_OP_COUNT /* not an op: the number of ops */
} hvd_op_t;

/* Size in bytes of one element of dtype, or 0 for a value that is not an hvd_dtype_t. */
HVD_EXPORT size_t hvd_dtype_size(hvd_dtype_t dtype);
/* "float32", "int64", ...; "unknown" for a bad value. Static strings. */
HVD_EXPORT const char *hvd_dtype_name(hvd_dtype_t dtype);
HVD_EXPORT const char *hvd_op_name(hvd_op_t op);

/* Tensor names: 1 to HVD_NAME_MAX bytes, NUL-terminated. hvd reads at most
 * HVD_NAME_MAX + 1 bytes of a name, so an unterminated buffer of that size is
 * refused rather than read past. "" is refused too: pass NULL for an automatic name. */
#define HVD_NAME_MAX 512
/* Most tensors in one hvd_grouped_allreduce. */
#define HVD_GROUP_MAX 1000000

/* ---- context ----------------------------------------------------------------------- */
typedef struct hvd_ctx hvd_ctx_t;
typedef struct hvd_req hvd_req_t;

/*
 * Create a context from the environment that hvdrun sets (HVD_RANK, HVD_SIZE,
 * HVD_LOCAL_RANK, HVD_LOCAL_SIZE, HVD_CROSS_RANK, HVD_CROSS_SIZE, HVD_HOSTNAME,
 * HVD_RENDEZVOUS_ADDR, HVD_RENDEZVOUS_PORT, HVD_JOB_TOKEN; HOROVOD_* names are
 * accepted as aliases). With none of them set, the context is a single rank job.
 *
 * Blocks until every rank of the job has connected (or the start timeout passes),
 * exchanged its transport addresses and started its background thread.
 * On success *out is a new context owned by the caller until hvd_shutdown().
 * On failure *out is NULL and the reason is logged at error level; the returned
 * status says which stage failed (HVD_ERR_INVALID_PARAM for a bad environment value,
 * with a message naming the variable, its value and what is accepted; also for
 * out == NULL), HVD_ERR_BOOTSTRAP / HVD_ERR_AUTH for rendezvous, HVD_ERR_TRANSPORT for
 * libfabric). An empty variable counts as unset.
 * Call from one thread; several contexts may exist in one process.
 */
HVD_EXPORT hvd_status_t hvd_init(hvd_ctx_t **out);

/*
 * Stop the background thread, fail operations that have not started with
 * HVD_ERR_SHUTDOWN, wait (bounded) for the other ranks to reach shutdown, and free
 * the context. Requests obtained from ctx stay valid (completed) until freed.
 * Must not be called while another thread still uses ctx. Never hangs: the wait for
 * peers is bounded by HVD_SHUTDOWN_TIMEOUT_SECONDS (default 30); after the job failed,
 * a background thread stuck in the transport is waited for until 1 s after the
 * failure, then left behind with the context (docs/failures.md).
 * Returns HVD_OK, or the first error the job saw (still freeing everything).
 * ctx may be NULL (no-op). ctx is freed: calling hvd_shutdown twice, or anything else
 * on ctx afterwards, is undefined.
 */
HVD_EXPORT hvd_status_t hvd_shutdown(hvd_ctx_t *ctx);

/* Getters; thread-safe, non-blocking. Return -1 when ctx is NULL. */
HVD_EXPORT int hvd_rank(const hvd_ctx_t *ctx);
HVD_EXPORT int hvd_size(const hvd_ctx_t *ctx);
HVD_EXPORT int hvd_local_rank(const hvd_ctx_t *ctx);
HVD_EXPORT int hvd_local_size(const hvd_ctx_t *ctx);
HVD_EXPORT int hvd_cross_rank(const hvd_ctx_t *ctx);
HVD_EXPORT int hvd_cross_size(const hvd_ctx_t *ctx);

/* The first job-wide failure this context saw (e.g. "rank 1 (host a) exited with
 * status 3"), or "" when there was none. The string belongs to ctx and stays valid
 * until hvd_shutdown(). Thread-safe. */
HVD_EXPORT const char *hvd_ctx_error(const hvd_ctx_t *ctx);

/* ---- requests ---------------------------------------------------------------------- */

/* Non-blocking. Sets *done to 1 once the operation finished (successfully or not) and
 * returns its final status; otherwise sets *done to 0 and returns HVD_IN_PROGRESS.
 * Any thread. req or done NULL: HVD_ERR_INVALID_PARAM. */
HVD_EXPORT hvd_status_t hvd_test(hvd_req_t *req, int *done);

/* Blocks the calling thread (sleeping, not spinning) until the operation finished;
 * returns its final status. Any thread; several threads may wait on one request.
 * req NULL, or an unfinished request of the context whose completion callback is
 * calling: HVD_ERR_INVALID_PARAM (the wait could never end). */
HVD_EXPORT hvd_status_t hvd_wait(hvd_req_t *req);

/* Message describing why the request failed ("" if it did not, or is not finished,
 * or req is NULL). Owned by req; valid until hvd_req_free(). */
HVD_EXPORT const char *hvd_req_error(const hvd_req_t *req);

/* Free a request. If the operation is still running, waits for it first (the library
 * still uses the caller's buffers until then). req may be NULL. Freeing a request
 * twice is undefined (see the top of this file); a completion callback freeing its
 * own request is refused with a log line (the request stays allocated). A request
 * that failed after the job failed while the background thread was stuck in the
 * transport is freed once that thread lets go of it, or leaked if it never does. */
HVD_EXPORT void hvd_req_free(hvd_req_t *req);

/* ---- allreduce --------------------------------------------------------------------- */

/*
 * Start an allreduce of `count` elements of `dtype` from sendbuf into recvbuf on
 * every rank. sendbuf == recvbuf (in place) is allowed; otherwise they must not
 * overlap. name identifies the tensor across ranks (every rank must use the same
 * name for the same operation); it is copied. NULL gives an automatic name
 * "allreduce.noname.<k>", which matches across ranks only if every rank submits
 * its unnamed operations in the same order.
 *
 * Non-blocking: checks the arguments, queues the operation for the background
 * thread and returns. Bad arguments (ctx or req NULL, NULL buffer with count > 0,
 * unknown dtype/op, an op the dtype does not support, count * element size beyond
 * SIZE_MAX / 4, overlapping but unequal buffers, a name that is empty or longer than
 * HVD_NAME_MAX, a name already in flight) return HVD_ERR_INVALID_PARAM
 * synchronously with *req set to NULL (when req is not NULL) and a log line naming
 * the argument. After hvd_shutdown() has begun: HVD_ERR_SHUTDOWN. After a peer
 * failed: HVD_ERR_ABORTED.
 * On HVD_OK, *req is a new request; wait/test it, then free it.
 * Any application thread.
 */
HVD_EXPORT hvd_status_t hvd_allreduce_async(hvd_ctx_t *ctx, const char *name,
                                            const void *sendbuf, void *recvbuf,
                                            size_t count, hvd_dtype_t dtype, hvd_op_t op,
                                            hvd_req_t **req);

/* Synchronous wrapper: hvd_allreduce_async + hvd_wait + hvd_req_free. Blocks; so not
 * from a completion callback (HVD_ERR_INVALID_PARAM). */
HVD_EXPORT hvd_status_t hvd_allreduce(hvd_ctx_t *ctx, const char *name,
                                      const void *sendbuf, void *recvbuf, size_t count,
                                      hvd_dtype_t dtype, hvd_op_t op);

/* ---- every collective, with all options -------------------------------------------- */

/* Called once when a request finishes, on the rank's background thread (after the job
 * failed, possibly on its liveness thread: docs/failures.md), before
 * hvd_wait() returns for it. It may read the request (hvd_req_error, hvd_req_output)
 * and signal other threads; it must not block, must not call hvd_wait/hvd_req_free on
 * this request, and must not submit new operations synchronously (async is fine). */
typedef void (*hvd_callback_t)(hvd_req_t *req, hvd_status_t status, void *arg);

/*
 * Arguments of one tensor operation. Start from HVD_OP_ARGS_INIT and set what you need.
 *   name        identifies the tensor across ranks (NULL: "<op>.noname.<k>"); copied
 *   sendbuf     input (in place: sendbuf == recvbuf, or sendbuf NULL for broadcast)
 *   recvbuf     output; allgather/alltoall: NULL lets hvd allocate it (hvd_req_output)
 *   count       elements: allreduce/broadcast/reducescatter: of the whole tensor (equal
 *               on every rank); allgather: this rank's part; alltoall: this rank's total send
 *   op          reduction (allreduce, reducescatter; ignored by the others)
 *   prescale    inputs are multiplied by it before reducing (1.0); must be finite
 *   postscale   results are multiplied by it (1.0); AVERAGE divides by the set size too;
 *               must be finite. Both are ignored by the collectives that do not reduce
 *   root        broadcast root, a rank of the process set: [0, set size)
 *   process_set 0 = all ranks, or an id from hvd_process_set_create that this rank
 *               is a member of
 *   splits      alltoall: elements for each rank of the set (NULL = count split evenly);
 *               an array of set-size entries adding up to count
 *   recv_capacity allgather/alltoall with recvbuf: elements recvbuf can hold (too small
 *               for what arrives: the request fails with HVD_ERR_INVALID_PARAM)
 *   callback    optional, see hvd_callback_t; callback_arg is passed as is (NULL is
 *               fine, and ignored without a callback)
 */
typedef struct hvd_op_args {
  const char *name;
  const void *sendbuf;
  void *recvbuf;
  size_t count;
  hvd_dtype_t dtype;
  hvd_op_t op;
  double prescale;
  double postscale;
  int root;
  int process_set;
  const size_t *splits;
  size_t recv_capacity;
  hvd_callback_t callback;
  void *callback_arg;
} hvd_op_args_t;

#define HVD_OP_ARGS_INIT                                                                 \
  { .name = NULL, .sendbuf = NULL, .recvbuf = NULL, .count = 0, .dtype = HVD_FLOAT32,     \
    .op = HVD_SUM, .prescale = 1.0, .postscale = 1.0, .root = 0, .process_set = 0,        \
    .splits = NULL, .recv_capacity = 0, .callback = NULL, .callback_arg = NULL }

/*
 * Asynchronous collectives. Same contract as hvd_allreduce_async: arguments are
 * checked here (HVD_ERR_INVALID_PARAM with a log line naming the argument, *req NULL);
 * a name already in flight on this rank is HVD_ERR_INVALID_PARAM too. Everything else
 * (ranks disagreeing: HVD_ERR_MISMATCH; a dead peer: HVD_ERR_ABORTED; a stall past
 * HVD_STALL_SHUTDOWN_TIME_SECONDS, or a collective whose transfers made no progress for
 * HVD_TRANSPORT_TIMEOUT_SECONDS (a network or peer failure, which also fails the job):
 * HVD_ERR_TIMEOUT) is reported through the request.
 * Operations run in an order all ranks agree on, whatever order they were submitted
 * in; compatible allreduces are fused. Any application thread.
 */
HVD_EXPORT hvd_status_t hvd_allreduce_ex(hvd_ctx_t *ctx, const hvd_op_args_t *args,
                                         hvd_req_t **req);
/* n allreduces submitted atomically; one request completes when all n did (its status
 * is the first failure). n in [1, HVD_GROUP_MAX]; every args[i] is checked as by
 * hvd_allreduce_ex, all must use one process set, and only args[0] may have a
 * callback. */
HVD_EXPORT hvd_status_t hvd_grouped_allreduce(hvd_ctx_t *ctx, const hvd_op_args_t *args,
                                              int n, hvd_req_t **req);
/* Concatenation of every rank's part, in rank order (parts may differ in size). */
HVD_EXPORT hvd_status_t hvd_allgather_ex(hvd_ctx_t *ctx, const hvd_op_args_t *args,
                                         hvd_req_t **req);
HVD_EXPORT hvd_status_t hvd_broadcast_ex(hvd_ctx_t *ctx, const hvd_op_args_t *args,
                                         hvd_req_t **req);
/* Reduce count elements across ranks; rank r receives block r of the result: the
 * blocks split count as evenly as possible, the first (count % size) one larger. */
HVD_EXPORT hvd_status_t hvd_reducescatter_ex(hvd_ctx_t *ctx, const hvd_op_args_t *args,
                                             hvd_req_t **req);
/* Rank r sends splits[j] elements to rank j; receives what every rank sends it, in
 * rank order. */
HVD_EXPORT hvd_status_t hvd_alltoall_ex(hvd_ctx_t *ctx, const hvd_op_args_t *args,
                                        hvd_req_t **req);

/* After an allgather/alltoall completed: the output buffer (recvbuf, or the one hvd
 * allocated, owned by req) and its element count; returns the request's status.
 * buf and count may be NULL (not wanted). HVD_ERR_INVALID_PARAM for a NULL req,
 * other requests or before completion. */
HVD_EXPORT hvd_status_t hvd_req_output(const hvd_req_t *req, void **buf, size_t *count);
/* After an allgather/alltoall completed: elements received from each rank of the set
 * (array of *n entries owned by req); returns the request's status (a failed one sets
 * nothing). counts and n may be NULL. Errors as hvd_req_output. */
HVD_EXPORT hvd_status_t hvd_req_recv_counts(const hvd_req_t *req, const size_t **counts,
                                            int *n);

/* Blocking convenience forms (not from a completion callback). */
HVD_EXPORT hvd_status_t hvd_broadcast(hvd_ctx_t *ctx, const char *name, void *buf,
                                      size_t count, hvd_dtype_t dtype, int root);

/* Returns when every rank of the process set has called it. Blocks. */
HVD_EXPORT hvd_status_t hvd_barrier(hvd_ctx_t *ctx, int process_set);

/*
 * Join (uneven data): this rank has no more batches. Until every rank of the process
 * set has joined, the collectives other ranks run proceed without it: it contributes
 * zeros to their allreduces (an AVERAGE still divides by the full set size), and other
 * collectives fail with HVD_ERR_NOT_SUPPORTED. Blocks until all ranks joined; then
 * *last_joined (may be NULL) is the rank that joined last, the same on every rank.
 */
HVD_EXPORT hvd_status_t hvd_join(hvd_ctx_t *ctx, int process_set, int *last_joined);

/* ---- process sets ---------------------------------------------------------------------- */

/* Collective over all ranks: every rank calls it with the same list of n distinct
 * ranks (in any order; it is sorted), in the same order relative to other
 * process-set calls. *id is the new set's id (> 0), the same on every rank, also on
 * ranks that are not members. Blocks. HVD_ERR_INVALID_PARAM for ctx, ranks or id
 * NULL, n outside [1, size], a rank outside [0, size) or listed twice. */
HVD_EXPORT hvd_status_t hvd_process_set_create(hvd_ctx_t *ctx, const int *ranks, int n,
                                               int *id);
/* This rank's index in the set, or -1 if it is not a member; size of the set. Both
 * -1 for an unknown id. Thread-safe. */
HVD_EXPORT int hvd_process_set_rank(hvd_ctx_t *ctx, int id);
HVD_EXPORT int hvd_process_set_size(hvd_ctx_t *ctx, int id);

/* ---- statistics ------------------------------------------------------------------------ */

typedef struct hvd_stats {
  uint64_t tensors_submitted; /* operations accepted on this rank */
  uint64_t tensors_completed;
  uint64_t collectives;       /* collective executions on this rank (fused = 1) */
  uint64_t fused_tensors;     /* tensors that ran inside a fused allreduce of >= 2 */
  uint64_t cache_hits;        /* tensors this rank submitted as a cache bit */
  uint64_t negotiations;      /* response lists this rank applied */
} hvd_stats_t;

/* Snapshot of this rank's counters. Thread-safe. ctx or out NULL:
 * HVD_ERR_INVALID_PARAM. */
HVD_EXPORT hvd_status_t hvd_get_stats(hvd_ctx_t *ctx, hvd_stats_t *out);

/* ---- timeline -------------------------------------------------------------------------- */

/* Start writing a Chrome trace of every tensor's life to path on this rank (replacing
 * a timeline that is running, e.g. one started by HVD_TIMELINE). The file is valid
 * JSON after every flush. Blocks until the background thread switched to it (at most
 * the length of the collective running now). HVD_ERR_INVALID_PARAM if ctx is NULL, path
 * is NULL or "", or cannot be created (with a log line naming the path and the
 * reason). HVD_ERR_SHUTDOWN once hvd_shutdown has begun. Any thread but a completion
 * callback's. */
HVD_EXPORT hvd_status_t hvd_timeline_start(hvd_ctx_t *ctx, const char *path);
/* Stop the running timeline and close its file (complete, valid JSON). HVD_OK if none
 * was running. Blocks like hvd_timeline_start; errors as there. */
HVD_EXPORT hvd_status_t hvd_timeline_stop(hvd_ctx_t *ctx);

#ifdef __cplusplus
}
#endif
#endif /* HVD_H */
