/*
 * The application-facing entry points. Every operation fills entries and goes
 * through one checking path (check_args) and one enqueue (submit); nothing here
 * touches the transport. Argument errors fail synchronously with a log line naming
 * the argument.
 */
#include <limits.h>
#include <linux/futex.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "collectives/reduce.h"
#include "common/log.h"
#include "common/util.h"
#include "runtime/ctx.h"

static const char *op_fn(hvd_msg_type_t t) {
  switch (t) {
  case HVD_MSG_ALLREDUCE: return "allreduce";
  case HVD_MSG_ALLGATHER: return "allgather";
  case HVD_MSG_BROADCAST: return "broadcast";
  case HVD_MSG_REDUCESCATTER: return "reducescatter";
  case HVD_MSG_ALLTOALL: return "alltoall";
  case HVD_MSG_BARRIER: return "barrier";
  case HVD_MSG_JOIN: return "join";
  case HVD_MSG_PROCESS_SET: return "process_set";
  default: return "op";
  }
}

/* Log "<op>(<name>): invalid parameter: <what>". A name that is too long (or not
 * terminated within HVD_NAME_MAX) is shown by its first 64 bytes only. */
__attribute__((format(printf, 3, 4))) static hvd_status_t
invalid(hvd_msg_type_t t, const char *name, const char *fmt, ...) {
  char what[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  size_t len = name ? strnlen(name, HVD_NAME_MAX + 1) : 0;
  if (name == NULL)
    HVD_ERROR("%s: invalid parameter: %s", op_fn(t), what);
  else if (len > HVD_NAME_MAX)
    HVD_ERROR("%s(%.64s...): invalid parameter: %s", op_fn(t), name, what);
  else
    HVD_ERROR("%s(%s): invalid parameter: %s", op_fn(t), name, what);
  return HVD_ERR_INVALID_PARAM;
}

/* The same for the calls that are not one operation. */
__attribute__((format(printf, 2, 3))) static hvd_status_t invalid_in(const char *fn,
                                                                     const char *fmt, ...) {
  char what[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  HVD_ERROR("%s: invalid parameter: %s", fn, what);
  return HVD_ERR_INVALID_PARAM;
}

/* Whether the calling thread is ctx's background thread: a completion callback.
 * Waiting there for an operation of ctx can never end. Compares pointers only, so it
 * is safe on a request whose context is gone. */
static int on_bg_thread(const hvd_ctx_t *ctx) { return hvd_bg_self == ctx; }

/* Blocking calls refuse to start from a completion callback instead of hanging. */
static hvd_status_t may_block(const hvd_ctx_t *ctx, const char *fn) {
  if (ctx != NULL && on_bg_thread(ctx))
    return invalid_in(fn, "called from a completion callback, where it would wait forever "
                          "(use the asynchronous form)");
  return HVD_OK;
}

/* ---- requests ----------------------------------------------------------------------- */

static hvd_req_t *req_new(hvd_ctx_t *ctx, int n) {
  hvd_req_t *r = calloc(1, sizeof *r);
  if (r == NULL) return NULL;
  r->entries = calloc((size_t)n, sizeof *r->entries);
  if (r->entries == NULL) {
    free(r);
    return NULL;
  }
  r->ctx = ctx;
  r->nentries = n;
  atomic_init(&r->remaining, n);
  r->int_result = -1;
  pthread_mutex_init(&r->mu, NULL);
  for (int i = 0; i < n; i++) r->entries[i].req = r;
  return r;
}

static void req_destroy(hvd_req_t *r) {
  for (int i = 0; i < r->nentries; i++) {
    hvd_request_free(&r->entries[i].meta);
    free(r->entries[i].key);
  }
  free(r->entries);
  free(r->out_alloc);
  free(r->recv_counts);
  pthread_mutex_destroy(&r->mu);
  free(r);
}

/* Waiters sleep in futex(2) on `done` itself (wait_done), woken after r->mu is
 * released: a waiter woken while we still held it would preempt us (it often shares
 * our core), block on the mutex and switch back, two extra switches per request. The
 * wake may come after the waiter freed r: a private futex wake only hashes the
 * address, and a request allocated there meanwhile sees a spurious wake-up, which its
 * waiter's loop absorbs. */
static void wake_done(atomic_int *done) {
  syscall(SYS_futex, (int *)done, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* Between hvd_req_batch_begin and _end (the background thread executing one
 * response) wake-ups wait until every request of the batch is done: a waiter woken
 * at the first would run on our core, find the next one not done, sleep again, and
 * so on, two switches per fused tensor. */
#define WAKE_BATCH_MAX 256
static _Thread_local int batch_depth, batch_n;
static _Thread_local atomic_int *batch_wake[WAKE_BATCH_MAX];

void hvd_req_batch_begin(void) { batch_depth++; }

void hvd_req_batch_end(void) {
  if (--batch_depth > 0) return;
  for (int i = 0; i < batch_n; i++) wake_done(batch_wake[i]);
  batch_n = 0;
}

void hvd_req_finish(hvd_req_t *r) {
  atomic_store_explicit(&r->finished, 1, memory_order_release);
  if (r->callback) r->callback(r, r->status, r->callback_arg);
  pthread_mutex_lock(&r->mu);
  atomic_store_explicit(&r->done, 1, memory_order_release);
  pthread_mutex_unlock(&r->mu);
  if (batch_depth > 0 && batch_n < WAKE_BATCH_MAX) batch_wake[batch_n++] = &r->done;
  else wake_done(&r->done);
}

/* Record one entry's outcome; the request finishes with its last entry. */
static void entry_finish(hvd_ctx_t *ctx, hvd_entry_t *e, hvd_status_t st, const char *msg) {
  hvd_req_t *r = e->req;
  atomic_fetch_add(&ctx->st_completed, 1);
  if (st != HVD_OK) {
    pthread_mutex_lock(&r->mu);
    if (r->status == HVD_OK) {
      r->status = st;
      snprintf(r->err, sizeof r->err, "%s", msg ? msg : hvd_status_string(st));
    }
    pthread_mutex_unlock(&r->mu);
  }
  if (atomic_fetch_sub(&r->remaining, 1) == 1) hvd_req_finish(r);
}

/* An entry is completed by whoever takes it out of ctx->inflight: the background
 * thread here, or hvd_fail_stranded, which got there first (then this is a no-op and
 * the request is held, so its memory is still there). */
void hvd_entry_complete(hvd_ctx_t *ctx, hvd_entry_t *e, hvd_status_t st, const char *msg) {
  pthread_mutex_lock(&ctx->mu);
  int mine = hvd_strmap_get(&ctx->inflight, e->key) == e;
  if (mine) hvd_strmap_del(&ctx->inflight, e->key);
  pthread_mutex_unlock(&ctx->mu);
  if (mine) entry_finish(ctx, e, st, msg);
}

int hvd_fail_stranded(hvd_ctx_t *ctx) {
  int n = 0;
  /* Callbacks run on this thread now: blocking calls made from them must fail as they
   * do on the background thread (waiting here would stop the rescue). */
  hvd_ctx_t *self = hvd_bg_self;
  hvd_bg_self = ctx;
  for (;;) {
    const char *k;
    void *v = NULL;
    pthread_mutex_lock(&ctx->mu);
    if (ctx->bg_exited || hvd_strmap_next(&ctx->inflight, 0, &k, &v) == 0) {
      pthread_mutex_unlock(&ctx->mu);
      break;
    }
    hvd_entry_t *e = v;
    hvd_req_t *r = e->req;
    hvd_strmap_del(&ctx->inflight, k);
    pthread_mutex_lock(&r->mu);
    if (!r->held) {
      r->held = 1;
      r->stranded_next = ctx->stranded;
      ctx->stranded = r;
    }
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_unlock(&ctx->mu);
    if (n++ == 0)
      HVD_WARN("'%s' and what else is pending did not fail %d ms after the job failed (the "
               "background thread is stuck, likely in the transport); failing them now",
               e->meta.name, HVD_STRANDED_GRACE_MS);
    entry_finish(ctx, e, HVD_ERR_ABORTED, ctx->abort_msg);
  }
  hvd_bg_self = self;
  return n;
}

void hvd_release_stranded(hvd_ctx_t *ctx) {
  pthread_mutex_lock(&ctx->mu);
  /* An entry still queued is the background thread's until it takes the queue. */
  hvd_req_t *list = ctx->head == NULL ? ctx->stranded : NULL;
  if (list != NULL) ctx->stranded = NULL;
  pthread_mutex_unlock(&ctx->mu);
  for (hvd_req_t *r = list, *nx; r != NULL; r = nx) {
    nx = r->stranded_next;
    pthread_mutex_lock(&r->mu);
    r->held = 0;
    int freed = r->freed;
    pthread_mutex_unlock(&r->mu);
    if (freed) req_destroy(r);
  }
}

/* ---- the checking path -------------------------------------------------------------- */

static hvd_status_t check_args(hvd_ctx_t *ctx, hvd_msg_type_t t, const hvd_op_args_t *a,
                               int *set_size) {
  const char *nm = a->name;
  if (nm != NULL) {
    size_t len = strnlen(nm, HVD_NAME_MAX + 1); /* never reads past the limit */
    if (len == 0) return invalid(t, nm, "name is empty (NULL gives an automatic name)");
    if (len > HVD_NAME_MAX)
      return invalid(t, nm, "name is longer than HVD_NAME_MAX (%d bytes) or not terminated",
                     HVD_NAME_MAX);
  }
  hvd_pset_t *ps = hvd_pset_get(ctx, a->process_set);
  if (ps == NULL) return invalid(t, nm, "process_set %d does not exist", a->process_set);
  if (ps->me < 0)
    return invalid(t, nm, "rank %d is not a member of process_set %d", ctx->id.rank, a->process_set);
  *set_size = ps->n;
  if (t == HVD_MSG_BARRIER || t == HVD_MSG_JOIN) return HVD_OK;
  if ((unsigned)a->dtype >= HVD_DTYPE_COUNT)
    return invalid(t, nm, "dtype %d is not an hvd_dtype_t", (int)a->dtype);
  int reduces = t == HVD_MSG_ALLREDUCE || t == HVD_MSG_REDUCESCATTER;
  if (reduces) {
    if ((unsigned)a->op >= HVD_OP_COUNT) return invalid(t, nm, "op %d is not an hvd_op_t", (int)a->op);
    if (!hvd_reduce_supported(a->dtype, a->op))
      return invalid(t, nm, "op %s is not supported for dtype %s", hvd_op_name(a->op),
                     hvd_dtype_name(a->dtype));
    if (!isfinite(a->prescale) || !isfinite(a->postscale))
      return invalid(t, nm, "prescale and postscale must be finite (got %g, %g)", a->prescale,
                     a->postscale);
  }
  size_t bytes;
  if (hvd_mul_overflow(a->count, hvd_dtype_size(a->dtype), &bytes) || bytes > (SIZE_MAX >> 2))
    return invalid(t, nm, "count %zu of %s overflows the byte size", a->count, hvd_dtype_name(a->dtype));
  switch (t) {
  case HVD_MSG_BROADCAST:
    if (a->root < 0 || a->root >= ps->n)
      return invalid(t, nm, "root %d is out of range: process_set %d has %d ranks", a->root,
                     a->process_set, ps->n);
    if (a->count > 0 && a->recvbuf == NULL) return invalid(t, nm, "recvbuf is NULL with count > 0");
    break;
  case HVD_MSG_ALLTOALL:
    if (a->count > 0 && a->sendbuf == NULL) return invalid(t, nm, "sendbuf is NULL with count > 0");
    if (a->splits != NULL) {
      size_t sum = 0;
      for (int j = 0; j < ps->n; j++) {
        if (__builtin_add_overflow(sum, a->splits[j], &sum))
          return invalid(t, nm, "splits overflow");
      }
      if (sum != a->count)
        return invalid(t, nm, "splits add up to %zu but count is %zu", sum, a->count);
    } else if (a->count % (size_t)ps->n != 0) {
      return invalid(t, nm, "count %zu is not divisible by the %d ranks of the set; pass splits",
                     a->count, ps->n);
    }
    if (a->recvbuf == NULL && a->recv_capacity != 0)
      return invalid(t, nm, "recv_capacity is set but recvbuf is NULL");
    break;
  case HVD_MSG_ALLGATHER:
    if (a->count > 0 && a->sendbuf == NULL) return invalid(t, nm, "sendbuf is NULL with count > 0");
    if (a->recvbuf == NULL && a->recv_capacity != 0)
      return invalid(t, nm, "recv_capacity is set but recvbuf is NULL");
    break;
  default: /* allreduce, reducescatter */
    if (a->count > 0 && a->sendbuf == NULL) return invalid(t, nm, "sendbuf is NULL with count > 0");
    if (a->count > 0 && a->recvbuf == NULL) return invalid(t, nm, "recvbuf is NULL with count > 0");
    if (t == HVD_MSG_ALLREDUCE && a->count > 0 && a->sendbuf != a->recvbuf) {
      const char *s = a->sendbuf, *d = a->recvbuf;
      if (s < d + bytes && d < s + bytes)
        return invalid(t, nm, "sendbuf and recvbuf overlap without being equal");
    }
    break;
  }
  return HVD_OK;
}

static void fill_entry(hvd_ctx_t *ctx, hvd_entry_t *e, hvd_msg_type_t t, const hvd_op_args_t *a,
                       int set_size) {
  e->meta.type = (uint8_t)t;
  e->meta.dtype = (uint8_t)a->dtype;
  e->meta.op = (uint8_t)(t == HVD_MSG_ALLREDUCE || t == HVD_MSG_REDUCESCATTER ? a->op : 0);
  e->meta.root = t == HVD_MSG_BROADCAST ? a->root : 0;
  e->meta.count = t == HVD_MSG_BARRIER || t == HVD_MSG_JOIN ? 0 : a->count;
  /* Only reductions scale: the other collectives ignore the factors. */
  int reduces = t == HVD_MSG_ALLREDUCE || t == HVD_MSG_REDUCESCATTER;
  e->meta.prescale = reduces ? a->prescale : 1.0;
  e->meta.postscale = reduces ? a->postscale : 1.0;
  e->pset = a->process_set;
  e->sendbuf = a->sendbuf;
  e->recvbuf = a->recvbuf;
  e->recv_capacity = a->recv_capacity;
  (void)ctx;
  (void)set_size;
}

/* Names, duplicate check and enqueue of n entries as one unit. */
static hvd_status_t submit(hvd_ctx_t *ctx, hvd_req_t *r) {
  hvd_status_t rc = HVD_OK;
  for (int i = 0; i < r->nentries; i++) {
    hvd_entry_t *e = &r->entries[i];
    e->enqueue_ns = hvd_now_ns();
  }
  pthread_mutex_lock(&ctx->mu);
  if (ctx->stopping) {
    rc = HVD_ERR_SHUTDOWN;
    HVD_ERROR("%s: hvd_shutdown has already begun", r->entries[0].meta.name);
    goto out;
  }
  if (atomic_load(&ctx->aborted)) {
    rc = HVD_ERR_ABORTED;
    HVD_ERROR("%s: the job has failed: %s", r->entries[0].meta.name, ctx->abort_msg);
    goto out;
  }
  for (int i = 0; i < r->nentries; i++) {
    hvd_entry_t *e = &r->entries[i];
    if (hvd_strmap_get(&ctx->inflight, e->key) != NULL) {
      rc = invalid((hvd_msg_type_t)e->meta.type, e->meta.name,
                   "a tensor named '%s' is already in flight on this rank (process_set %d)",
                   e->meta.name, e->pset);
      for (int j = 0; j < i; j++) hvd_strmap_del(&ctx->inflight, r->entries[j].key);
      goto out;
    }
    if (hvd_strmap_put(&ctx->inflight, e->key, e) != 0) {
      for (int j = 0; j < i; j++) hvd_strmap_del(&ctx->inflight, r->entries[j].key);
      rc = HVD_ERR_NO_MEMORY;
      goto out;
    }
  }
  for (int i = 0; i < r->nentries; i++) {
    hvd_entry_t *e = &r->entries[i];
    e->next = NULL;
    if (ctx->tail) ctx->tail->next = e;
    else ctx->head = e;
    ctx->tail = e;
  }
  atomic_store(&ctx->queued, 1);
  atomic_fetch_add(&ctx->st_submitted, (unsigned long long)r->nentries);
  /* Wake the background thread now if it has a core of its own. On a shared core a
   * wake-up could switch to it (and back) for each tensor of a burst; it takes the
   * queue when this thread waits (hvd_wait signals) or at its next timed poll. */
  if (ctx->spare_core) pthread_cond_signal(&ctx->cv);
out:
  pthread_mutex_unlock(&ctx->mu);
  return rc;
}

static hvd_status_t name_entry(hvd_ctx_t *ctx, hvd_entry_t *e, const char *name) {
  char buf[HVD_NAME_MAX];
  if (name == NULL) {
    pthread_mutex_lock(&ctx->mu);
    unsigned long long k = (unsigned long long)ctx->noname_seq++;
    pthread_mutex_unlock(&ctx->mu);
    snprintf(buf, sizeof buf, "%s.noname.%llu", op_fn((hvd_msg_type_t)e->meta.type), k);
    name = buf;
  }
  e->meta.name = strdup(name);
  size_t kl = strlen(name) + 16;
  e->key = malloc(kl);
  if (e->meta.name == NULL || e->key == NULL) return HVD_ERR_NO_MEMORY;
  snprintf(e->key, kl, "%d/%s", e->pset, name);
  return HVD_OK;
}

static hvd_status_t post(hvd_ctx_t *ctx, hvd_msg_type_t t, const hvd_op_args_t *args, int n,
                         hvd_req_t **out) {
  if (out == NULL) return invalid(t, NULL, "req is NULL");
  *out = NULL;
  if (ctx == NULL) return invalid(t, NULL, "ctx is NULL");
  if (args == NULL) return invalid(t, NULL, "args is NULL");
  if (n < 1 || n > HVD_GROUP_MAX)
    return invalid(t, NULL, "n = %d tensors is out of range [1, %d]", n, HVD_GROUP_MAX);
  int set_size = 0;
  for (int i = 0; i < n; i++) {
    HVD_CHECK(check_args(ctx, t, &args[i], &set_size));
    if (i > 0 && args[i].process_set != args[0].process_set)
      return invalid(t, args[i].name, "a group must use one process set");
    if (i > 0 && args[i].callback != NULL)
      return invalid(t, args[i].name, "only the first tensor of a group may have a callback");
  }
  hvd_req_t *r = req_new(ctx, n);
  if (r == NULL) return HVD_ERR_NO_MEMORY;
  hvd_status_t rc = HVD_OK;
  for (int i = 0; i < n && rc == HVD_OK; i++) {
    hvd_entry_t *e = &r->entries[i];
    fill_entry(ctx, e, t, &args[i], set_size);
    if (t == HVD_MSG_ALLTOALL) {
      e->meta.nsplits = (uint32_t)set_size;
      e->meta.splits = malloc((size_t)set_size * sizeof *e->meta.splits);
      if (e->meta.splits == NULL) rc = HVD_ERR_NO_MEMORY;
      for (int j = 0; j < set_size && rc == HVD_OK; j++)
        e->meta.splits[j] = args[i].splits ? args[i].splits[j] : args[i].count / (size_t)set_size;
    }
    if (rc == HVD_OK) rc = name_entry(ctx, e, args[i].name);
  }
  r->callback = args[0].callback;
  r->callback_arg = args[0].callback_arg;
  if (rc == HVD_OK) rc = submit(ctx, r);
  if (rc != HVD_OK) {
    req_destroy(r);
    return rc;
  }
  *out = r;
  return HVD_OK;
}

/* ---- public entry points -------------------------------------------------------------- */

hvd_status_t hvd_allreduce_ex(hvd_ctx_t *ctx, const hvd_op_args_t *a, hvd_req_t **req) {
  return post(ctx, HVD_MSG_ALLREDUCE, a, 1, req);
}
hvd_status_t hvd_grouped_allreduce(hvd_ctx_t *ctx, const hvd_op_args_t *a, int n, hvd_req_t **req) {
  return post(ctx, HVD_MSG_ALLREDUCE, a, n, req);
}
hvd_status_t hvd_allgather_ex(hvd_ctx_t *ctx, const hvd_op_args_t *a, hvd_req_t **req) {
  return post(ctx, HVD_MSG_ALLGATHER, a, 1, req);
}
hvd_status_t hvd_broadcast_ex(hvd_ctx_t *ctx, const hvd_op_args_t *a, hvd_req_t **req) {
  return post(ctx, HVD_MSG_BROADCAST, a, 1, req);
}
hvd_status_t hvd_reducescatter_ex(hvd_ctx_t *ctx, const hvd_op_args_t *a, hvd_req_t **req) {
  return post(ctx, HVD_MSG_REDUCESCATTER, a, 1, req);
}
hvd_status_t hvd_alltoall_ex(hvd_ctx_t *ctx, const hvd_op_args_t *a, hvd_req_t **req) {
  return post(ctx, HVD_MSG_ALLTOALL, a, 1, req);
}

hvd_status_t hvd_allreduce_async(hvd_ctx_t *ctx, const char *name, const void *sendbuf,
                                 void *recvbuf, size_t count, hvd_dtype_t dtype, hvd_op_t op,
                                 hvd_req_t **req) {
  hvd_op_args_t a = HVD_OP_ARGS_INIT;
  a.name = name;
  a.sendbuf = sendbuf;
  a.recvbuf = recvbuf;
  a.count = count;
  a.dtype = dtype;
  a.op = op;
  return post(ctx, HVD_MSG_ALLREDUCE, &a, 1, req);
}

static hvd_status_t wait_free(hvd_req_t *req, int *int_result) {
  hvd_status_t rc = hvd_wait(req);
  if (rc != HVD_OK) HVD_DEBUG("%s: %s", req->entries[0].meta.name, req->err);
  if (int_result) *int_result = req->int_result;
  hvd_req_free(req);
  return rc;
}

hvd_status_t hvd_allreduce(hvd_ctx_t *ctx, const char *name, const void *sendbuf, void *recvbuf,
                           size_t count, hvd_dtype_t dtype, hvd_op_t op) {
  hvd_req_t *req;
  HVD_CHECK(may_block(ctx, "hvd_allreduce"));
  HVD_CHECK(hvd_allreduce_async(ctx, name, sendbuf, recvbuf, count, dtype, op, &req));
  return wait_free(req, NULL);
}

hvd_status_t hvd_broadcast(hvd_ctx_t *ctx, const char *name, void *buf, size_t count,
                           hvd_dtype_t dtype, int root) {
  hvd_op_args_t a = HVD_OP_ARGS_INIT;
  a.name = name;
  a.sendbuf = buf;
  a.recvbuf = buf;
  a.count = count;
  a.dtype = dtype;
  a.root = root;
  hvd_req_t *req;
  HVD_CHECK(may_block(ctx, "hvd_broadcast"));
  HVD_CHECK(hvd_broadcast_ex(ctx, &a, &req));
  return wait_free(req, NULL);
}

hvd_status_t hvd_barrier(hvd_ctx_t *ctx, int process_set) {
  hvd_op_args_t a = HVD_OP_ARGS_INIT;
  a.name = "barrier.noname";
  a.process_set = process_set;
  hvd_req_t *req;
  HVD_CHECK(may_block(ctx, "hvd_barrier"));
  HVD_CHECK(post(ctx, HVD_MSG_BARRIER, &a, 1, &req));
  return wait_free(req, NULL);
}

hvd_status_t hvd_join(hvd_ctx_t *ctx, int process_set, int *last_joined) {
  hvd_op_args_t a = HVD_OP_ARGS_INIT;
  a.name = "join.noname";
  a.process_set = process_set;
  hvd_req_t *req;
  HVD_CHECK(may_block(ctx, "hvd_join"));
  HVD_CHECK(post(ctx, HVD_MSG_JOIN, &a, 1, &req));
  int last = -1;
  hvd_status_t rc = wait_free(req, &last);
  if (last_joined) *last_joined = last;
  return rc;
}

static int cmp_int(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b;
  return (x > y) - (x < y);
}

hvd_status_t hvd_process_set_create(hvd_ctx_t *ctx, const int *ranks, int n, int *id) {
  const char *fn = "hvd_process_set_create";
  if (ctx == NULL) return invalid_in(fn, "ctx is NULL");
  if (id == NULL) return invalid_in(fn, "id is NULL");
  if (ranks == NULL) return invalid_in(fn, "ranks is NULL");
  if (n < 1 || n > ctx->id.size)
    return invalid_in(fn, "n = %d is out of range: a set has 1 to %d ranks", n, ctx->id.size);
  for (int i = 0; i < n; i++)
    if (ranks[i] < 0 || ranks[i] >= ctx->id.size)
      return invalid_in(fn, "ranks[%d] = %d is not a rank of the job [0, %d)", i, ranks[i],
                        ctx->id.size);
  HVD_CHECK(may_block(ctx, fn));
  int *sorted = malloc((size_t)n * sizeof *sorted);
  if (sorted == NULL) return HVD_ERR_NO_MEMORY;
  memcpy(sorted, ranks, (size_t)n * sizeof *sorted);
  qsort(sorted, (size_t)n, sizeof *sorted, cmp_int);
  for (int i = 1; i < n; i++)
    if (sorted[i] == sorted[i - 1]) {
      int dup = sorted[i];
      free(sorted);
      return invalid_in(fn, "ranks lists rank %d more than once", dup);
    }
  hvd_req_t *r = req_new(ctx, 1);
  if (r == NULL) {
    free(sorted);
    return HVD_ERR_NO_MEMORY;
  }
  hvd_entry_t *e = &r->entries[0];
  e->meta.type = HVD_MSG_PROCESS_SET;
  e->meta.nsplits = (uint32_t)n;
  e->meta.splits = malloc((size_t)n * sizeof *e->meta.splits);
  hvd_status_t rc = e->meta.splits ? HVD_OK : HVD_ERR_NO_MEMORY;
  for (int i = 0; i < n && rc == HVD_OK; i++) e->meta.splits[i] = (uint64_t)sorted[i];
  free(sorted);
  e->pset = 0;
  if (rc == HVD_OK) rc = name_entry(ctx, e, "process_set.create");
  if (rc == HVD_OK) rc = submit(ctx, r);
  if (rc != HVD_OK) {
    req_destroy(r);
    return rc;
  }
  int got = -1;
  rc = wait_free(r, &got);
  if (rc == HVD_OK) *id = got;
  return rc;
}

int hvd_process_set_rank(hvd_ctx_t *ctx, int id) {
  hvd_pset_t *ps = ctx ? hvd_pset_get(ctx, id) : NULL;
  return ps ? ps->me : -1;
}
int hvd_process_set_size(hvd_ctx_t *ctx, int id) {
  hvd_pset_t *ps = ctx ? hvd_pset_get(ctx, id) : NULL;
  return ps ? ps->n : -1;
}

hvd_status_t hvd_get_stats(hvd_ctx_t *ctx, hvd_stats_t *s) {
  if (ctx == NULL) return invalid_in("hvd_get_stats", "ctx is NULL");
  if (s == NULL) return invalid_in("hvd_get_stats", "out is NULL");
  s->tensors_submitted = atomic_load(&ctx->st_submitted);
  s->tensors_completed = atomic_load(&ctx->st_completed);
  s->collectives = atomic_load(&ctx->st_collectives);
  s->fused_tensors = atomic_load(&ctx->st_fused);
  s->cache_hits = atomic_load(&ctx->st_cache_hits);
  s->negotiations = atomic_load(&ctx->st_negotiations);
  return HVD_OK;
}

/* ---- request access ----------------------------------------------------------------- */

hvd_status_t hvd_test(hvd_req_t *req, int *done) {
  if (req == NULL) return invalid_in("hvd_test", "req is NULL");
  if (done == NULL) return invalid_in("hvd_test", "done is NULL");
  if (atomic_load_explicit(&req->done, memory_order_acquire)) {
    *done = 1;
    return req->status;
  }
  *done = 0;
  atomic_store_explicit(&req->ctx->test_ns, hvd_now_ns(), memory_order_relaxed);
  return HVD_IN_PROGRESS;
}

/* Block until req is done: count as a waiter, which tells a background thread
 * sharing our core to poll rather than sleep (bg.c, idle_wait), wake it if it sleeps,
 * and sleep in futex(2) on `done` (woken by hvd_req_finish). No spinning first: it
 * measured slower (a spinning waiter takes the CPU from the threads doing the work on
 * a busy host, and from the background thread when they share a core). */
static void wait_done(hvd_req_t *req) {
  hvd_ctx_t *ctx = req->ctx;
  pthread_mutex_lock(&ctx->mu);
  atomic_fetch_add(&ctx->waiters, 1);
  pthread_mutex_unlock(&ctx->mu);
  /* Signalled after unlocking: on a shared core the woken background thread runs at
   * once, and holding mu then made it block on mu, switch back to us to release it
   * and preempt us again (two extra switches per wait). It cannot miss the signal: it
   * either saw waiters > 0 under mu, or was already waiting on cv when we took mu. */
  pthread_cond_signal(&ctx->cv);
  while (!atomic_load_explicit(&req->done, memory_order_acquire))
    syscall(SYS_futex, (int *)&req->done, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
  atomic_fetch_sub(&ctx->waiters, 1);
}

hvd_status_t hvd_wait(hvd_req_t *req) {
  if (req == NULL) return invalid_in("hvd_wait", "req is NULL");
  if (!atomic_load_explicit(&req->done, memory_order_acquire) && on_bg_thread(req->ctx))
    return invalid_in("hvd_wait", "called from a completion callback on a request that has "
                                  "not completed: it would wait forever");
  if (!atomic_load_explicit(&req->done, memory_order_acquire)) wait_done(req);
  pthread_mutex_lock(&req->mu);
  hvd_status_t st = req->status;
  pthread_mutex_unlock(&req->mu);
  return st;
}

const char *hvd_req_error(const hvd_req_t *req) {
  if (req == NULL || !atomic_load_explicit(&req->finished, memory_order_acquire)) return "";
  return req->err;
}

/* hvd_req_output and hvd_req_recv_counts: a finished allgather or alltoall. */
static hvd_status_t check_gathered(const hvd_req_t *req, const char *fn) {
  if (req == NULL) return invalid_in(fn, "req is NULL");
  if (!atomic_load_explicit(&req->finished, memory_order_acquire))
    return invalid_in(fn, "the request has not completed");
  uint8_t t = req->entries[0].meta.type;
  if (t != HVD_MSG_ALLGATHER && t != HVD_MSG_ALLTOALL)
    return invalid_in(fn, "the request is a%s %s, not an allgather or alltoall",
                      t == HVD_MSG_ALLREDUCE ? "n" : "", op_fn((hvd_msg_type_t)t));
  return HVD_OK;
}

hvd_status_t hvd_req_output(const hvd_req_t *req, void **buf, size_t *count) {
  HVD_CHECK(check_gathered(req, "hvd_req_output"));
  if (buf) *buf = req->out_buf;
  if (count) *count = req->out_count;
  return req->status;
}

hvd_status_t hvd_req_recv_counts(const hvd_req_t *req, const size_t **counts, int *n) {
  HVD_CHECK(check_gathered(req, "hvd_req_recv_counts"));
  if (req->recv_counts == NULL) return req->status; /* failed before it had any */
  if (counts) *counts = req->recv_counts;
  if (n) *n = req->nrecv_counts;
  return req->status;
}

void hvd_req_free(hvd_req_t *req) {
  if (req == NULL) return;
  if (!atomic_load_explicit(&req->done, memory_order_acquire) && on_bg_thread(req->ctx)) {
    /* a callback freeing its own request: the library still uses it; leak instead */
    invalid_in("hvd_req_free", "called from a completion callback on a request that has not "
                               "completed; the request is not freed");
    return;
  }
  hvd_wait(req);
  pthread_mutex_lock(&req->mu);
  int held = req->held;
  if (held) req->freed = 1;
  pthread_mutex_unlock(&req->mu);
  /* Failed without its background thread, which may still hold its entries: freed by
   * hvd_release_stranded when that thread lets go, leaked if it never does. */
  if (!held) req_destroy(req);
}
