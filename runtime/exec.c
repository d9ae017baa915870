/*
 * Executing responses on a member (background thread). Each response names the
 * tensors it covers; this rank looks them up in the set's pending table (a rank that
 * has joined may have none: it contributes zeros to allreduces), runs the collective
 * on the set's communicator and completes the entries.
 *
 * Allreduce: on the same-host arena the tensors go straight into the arena and the
 * results straight out of it, scaled on the way (no fusion buffer, no scaling pass).
 * Otherwise a lone tensor runs directly from the caller's send buffer into its
 * receive buffer (no copy) unless a prescale needs one; fused tensors are copied
 * into the persistent fusion buffer (prescale applied on the way in), reduced in
 * place, and copied out (postscale and AVERAGE's 1/n applied on the way out).
 * A set of one member reduces nothing: each tensor's result is its input, scaled (no
 * fusion buffer, no copy for a tensor reduced in place).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collectives/reduce.h"
#include "collectives/ring.h"
#include "collectives/select.h"
#include "common/log.h"
#include "common/util.h"
#include "runtime/ctx.h"

static hvd_entry_t *take(hvd_pset_t *ps, const char *name) {
  return hvd_strmap_del(&ps->pending, name);
}

/* ---- timeline ----------------------------------------------------------------------
 * Per tensor: NEGOTIATE_<OP> ends when the response list arrived (t_list), QUEUE runs
 * from then until this response starts, then the execution phases. */


static void tl_start(hvd_ctx_t *ctx, const hvd_response_t *r, hvd_entry_t *const *es, int n) {
  if (ctx->tl == NULL) return;
  char neg[64];
  uint64_t now = hvd_now_ns();
  for (int i = 0; i < n; i++) {
    if (es[i] == NULL) continue;
    /* An ERROR response ends the negotiation of whatever the entry asked for. */
    snprintf(neg, sizeof neg, "NEGOTIATE_%s",
             hvd_msg_type_name(r->type == HVD_MSG_ERROR ? (hvd_msg_type_t)es[i]->meta.type
                                                        : (hvd_msg_type_t)r->type));
    hvd_tl_end(ctx->tl, es[i]->meta.name, neg, ctx->tl_list_ns, NULL);
    hvd_tl_begin(ctx->tl, es[i]->meta.name, "QUEUE", ctx->tl_list_ns);
    hvd_tl_end(ctx->tl, es[i]->meta.name, "QUEUE", now, NULL);
  }
}

static void tl_span(hvd_ctx_t *ctx, hvd_entry_t *const *es, int n, const char *phase, uint64_t t0,
                    uint64_t t1, const char *args) {
  if (ctx->tl == NULL) return;
  for (int i = 0; i < n; i++) {
    if (es[i] == NULL) continue;
    hvd_tl_begin(ctx->tl, es[i]->meta.name, phase, t0);
    hvd_tl_end(ctx->tl, es[i]->meta.name, phase, t1, args);
  }
}

static void tl_op(hvd_ctx_t *ctx, const hvd_response_t *r, hvd_entry_t *const *es, int n,
                  const char *algo, size_t bytes, uint64_t t0, uint64_t t1) {
  if (ctx->tl == NULL) return;
  char args[160];
  snprintf(args, sizeof args, "\"algorithm\":\"%s\",\"bytes\":%zu,\"tensors\":%u", algo,
           bytes, r->ntensors);
  tl_span(ctx, es, n, hvd_msg_type_name(r->type), t0, t1, args);
}

/* The fusion buffer, at least `bytes` long (grown, pre-touched). NULL if out of memory
 * (not for 0 bytes before the first use: a 0-element operation with NULL buffers needs
 * a valid pointer too). */
static void *fusion(hvd_ctx_t *ctx, size_t bytes) {
  if (bytes <= ctx->fusion_size && ctx->fusion != NULL) return ctx->fusion;
  /* Grow to the next power of two of what is needed (at least 1 MiB): touching the
   * whole fusion threshold (128 MiB by default) up front would cost a job that only
   * ever fuses a few MiB half a second and that much memory. */
  size_t want = (size_t)1 << 20;
  while (want < bytes) want *= 2;
  void *p = NULL;
  if (posix_memalign(&p, 64, want ? want : 64) != 0) return NULL;
  memset(p, 0, want); /* touch every page now, not in the middle of a collective */
  free(ctx->fusion);
  ctx->fusion = p;
  ctx->fusion_size = want;
  return p;
}

/* A collective failed: a dead peer (abort) or a transport failure, which fails the job. */
static void coll_failed(hvd_ctx_t *ctx, hvd_pset_t *ps, const hvd_response_t *r, hvd_status_t rc,
                        hvd_entry_t **es, int n) {
  char msg[HVD_ERR_MSG_MAX];
  /* (Not after a no-progress timeout: the transport watched for the abort all along.) */
  if (rc != HVD_ERR_ABORTED && rc != HVD_ERR_TIMEOUT && hvd_ctx_await_abort(ctx)) {
    HVD_INFO("%s of '%.100s' failed (%s); the job's failure: %s", hvd_msg_type_name(r->type),
             r->names[0], ctx->tp ? ctx->tp->err.msg : hvd_status_string(rc), ctx->abort_msg);
    rc = HVD_ERR_ABORTED;
  }
  if (rc == HVD_ERR_ABORTED) {
    snprintf(msg, sizeof msg, "%s", ctx->abort_msg);
  } else {
    snprintf(msg, sizeof msg, "%s of '%.100s' failed on rank %d: %.300s",
             hvd_msg_type_name(r->type), r->names[0], ctx->id.rank,
             ctx->tp ? ctx->tp->err.msg : hvd_status_string(rc));
    hvd_ctx_abort(ctx, "%s", msg);
  }
  for (int i = 0; i < n; i++)
    if (es[i]) hvd_entry_complete(ctx, es[i], rc, msg);
  (void)ps;
}

static void exec_allreduce(hvd_ctx_t *ctx, hvd_pset_t *ps, const hvd_response_t *r) {
  int n = (int)r->ntensors;
  hvd_dtype_t dt = (hvd_dtype_t)r->dtype;
  hvd_op_t op = (hvd_op_t)r->op == HVD_AVERAGE ? HVD_SUM : (hvd_op_t)r->op;
  double pre = r->prescale;
  double post = r->postscale * ((hvd_op_t)r->op == HVD_AVERAGE ? 1.0 / ps->n : 1.0);
  size_t es = hvd_dtype_size(dt);
  hvd_entry_t *stack[8], **e = n <= 8 ? stack : calloc((size_t)n, sizeof *e);
  if (e == NULL) {
    hvd_ctx_abort(ctx, "rank %d: out of memory executing a fused allreduce", ctx->id.rank);
    return;
  }
  for (int i = 0; i < n; i++) e[i] = take(ps, r->names[i]);
  tl_start(ctx, r, e, n);
  int remote = ctx->id.local_size < ctx->id.size;
  size_t total_count = 0;
  for (int i = 0; i < n; i++) total_count += r->counts[i];
  hvd_algo_t algo =
      hvd_allreduce_algo(&ps->comm, (hvd_algo_t)ctx->allreduce_algo, total_count * es, remote);
  hvd_status_t rc = HVD_OK;
  uint64_t t0, t1;
  hvd_shm_part_t pstack[8], *parts = NULL;
  if (algo == HVD_ALGO_SHM && ps->n > 1)
    parts = n <= 8 ? pstack : malloc((size_t)n * sizeof *parts); /* NULL: fusion buffer */

  if (ps->n == 1) {
    t0 = hvd_now_ns();
    for (int i = 0; i < n; i++) {
      hvd_entry_t *x = e[i];
      size_t count = r->counts[i];
      if (x == NULL || count == 0) continue;
      if (x->sendbuf != x->recvbuf) memcpy(x->recvbuf, x->sendbuf, count * es);
      if (pre != 1.0) hvd_scale(x->recvbuf, count, dt, pre); /* as the other paths round */
      if (post != 1.0) hvd_scale(x->recvbuf, count, dt, post);
    }
    tl_op(ctx, r, e, n, "local", total_count * es, t0, hvd_now_ns());
  } else if (parts != NULL) {
    /* The arena reads the tensors and writes the results in place of a fusion buffer,
     * scaling on the way (collectives/allreduce_shm.c). */
    for (int i = 0; i < n; i++)
      parts[i] = (hvd_shm_part_t){.in = e[i] ? e[i]->sendbuf : NULL,
                                  .out = e[i] ? e[i]->recvbuf : NULL,
                                  .count = r->counts[i]};
    t0 = hvd_now_ns();
    rc = hvd_allreduce_shm_parts(&ps->comm, parts, (size_t)n, dt, op, pre, post);
    tl_op(ctx, r, e, n, hvd_algo_name(algo), total_count * es, t0, hvd_now_ns());
    if (parts != pstack) free(parts);
  } else if (n == 1 && e[0] != NULL) {
    hvd_entry_t *x = e[0];
    size_t count = r->counts[0];
    const void *src = x->sendbuf;
    if (pre != 1.0 && count > 0) {
      if (x->sendbuf != x->recvbuf) memcpy(x->recvbuf, x->sendbuf, count * es);
      hvd_scale(x->recvbuf, count, dt, pre);
      src = x->recvbuf;
    }
    t0 = hvd_now_ns();
    rc = hvd_coll_allreduce(&ps->comm, algo, remote, src, x->recvbuf, count, dt, op);
    t1 = hvd_now_ns();
    tl_op(ctx, r, e, n, hvd_algo_name(algo), count * es, t0, t1);
    if (rc == HVD_OK && post != 1.0 && count > 0) hvd_scale(x->recvbuf, count, dt, post);
  } else {
    size_t total = 0;
    for (int i = 0; i < n; i++) total += r->counts[i] * es;
    size_t had = ctx->fusion_size;
    t0 = hvd_now_ns();
    char *buf = fusion(ctx, total);
    if (buf != NULL && ctx->fusion_size != had) {
      char args[64];
      snprintf(args, sizeof args, "\"bytes\":%zu", ctx->fusion_size);
      tl_span(ctx, e, n, "INIT_FUSION_BUFFER", t0, hvd_now_ns(), args);
    }
    if (buf == NULL) {
      hvd_ctx_abort(ctx, "rank %d: out of memory for a %zu-byte fusion buffer", ctx->id.rank, total);
      rc = HVD_ERR_NO_MEMORY;
    } else {
      size_t off = 0;
      t0 = hvd_now_ns();
      for (int i = 0; i < n; i++) {
        size_t b = r->counts[i] * es;
        if (e[i] != NULL) {
          memcpy(buf + off, e[i]->sendbuf, b);
          if (pre != 1.0) hvd_scale(buf + off, r->counts[i], dt, pre);
        } else {
          memset(buf + off, 0, b); /* joined: contribute zeros */
        }
        off += b;
      }
      t1 = hvd_now_ns();
      tl_span(ctx, e, n, "MEMCPY_IN_FUSION_BUFFER", t0, t1, NULL);
      rc = hvd_coll_allreduce(&ps->comm, algo, remote, buf, buf, total / (es ? es : 1), dt, op);
      t0 = hvd_now_ns();
      tl_op(ctx, r, e, n, hvd_algo_name(algo), total, t1, t0);
      off = 0;
      for (int i = 0; i < n && rc == HVD_OK; i++) {
        size_t b = r->counts[i] * es;
        if (e[i] != NULL) {
          memcpy(e[i]->recvbuf, buf + off, b);
          if (post != 1.0) hvd_scale(e[i]->recvbuf, r->counts[i], dt, post);
        }
        off += b;
      }
      tl_span(ctx, e, n, "MEMCPY_OUT_FUSION_BUFFER", t0, hvd_now_ns(), NULL);
    }
  }
  atomic_fetch_add(&ctx->st_collectives, 1);
  if (n > 1) {
    atomic_fetch_add(&ctx->st_fused, (unsigned long long)n);
    HVD_DEBUG("fused %d tensors (%zu bytes, first '%s') into one %s allreduce", n,
              total_count * es, r->names[0], hvd_algo_name(algo));
  }
  if (rc != HVD_OK) {
    coll_failed(ctx, ps, r, rc, e, n);
  } else {
    for (int i = 0; i < n; i++)
      if (e[i]) hvd_entry_complete(ctx, e[i], HVD_OK, NULL);
  }
  if (e != stack) free(e);
}

/* Output buffer for allgather/alltoall: the caller's if it is big enough, else one
 * allocated for the request (recvbuf NULL), else a scratch buffer and an error after
 * the collective (every rank must still take part). */
static void *gather_out(hvd_ctx_t *ctx, hvd_entry_t *e, size_t total, size_t es, char *why,
                        size_t whylen) {
  why[0] = '\0';
  if (e != NULL && e->recvbuf != NULL && e->recv_capacity >= total) return e->recvbuf;
  if (e != NULL && e->recvbuf == NULL) {
    e->req->out_alloc = malloc(total * es + 1);
    return e->req->out_alloc;
  }
  if (e != NULL)
    snprintf(why, whylen, "'%s': recv_capacity %zu is smaller than the %zu elements received",
             e->meta.name, e->recv_capacity, total);
  return fusion(ctx, total * es);
}

static void finish_gather(hvd_ctx_t *ctx, hvd_pset_t *ps, const hvd_response_t *r, hvd_entry_t *e,
                          hvd_status_t rc, void *out, size_t total, size_t *rc_counts,
                          const char *why) {
  if (rc != HVD_OK) {
    free(rc_counts);
    coll_failed(ctx, ps, r, rc, &e, 1);
    return;
  }
  if (e == NULL) {
    free(rc_counts);
    return;
  }
  e->req->recv_counts = rc_counts;
  e->req->nrecv_counts = ps->n;
  if (why[0]) {
    hvd_entry_complete(ctx, e, HVD_ERR_INVALID_PARAM, why);
    return;
  }
  e->req->out_buf = out;
  e->req->out_count = total;
  hvd_entry_complete(ctx, e, HVD_OK, NULL);
}

static void exec_allgather(hvd_ctx_t *ctx, hvd_pset_t *ps, const hvd_response_t *r) {
  hvd_entry_t *e = take(ps, r->names[0]);
  tl_start(ctx, r, &e, 1);
  hvd_dtype_t dt = (hvd_dtype_t)r->dtype;
  size_t es = hvd_dtype_size(dt), total = 0;
  size_t *counts = malloc((size_t)ps->n * sizeof *counts);
  if (counts == NULL) {
    hvd_ctx_abort(ctx, "rank %d: out of memory", ctx->id.rank);
    return;
  }
  for (int j = 0; j < ps->n; j++) total += (counts[j] = (size_t)r->counts[j]);
  char why[HVD_ERR_MSG_MAX];
  char *out = gather_out(ctx, e, total, es, why, sizeof why);
  hvd_status_t rc = HVD_ERR_NO_MEMORY;
  if (out != NULL) {
    const void *send = e ? e->sendbuf : NULL;
    if (send == NULL) { /* nothing of ours: send zeros of our size from the output */
      size_t off = 0;
      for (int j = 0; j < ps->me; j++) off += counts[j];
      memset(out + off * es, 0, counts[ps->me] * es);
      send = out + off * es;
    }
    {
      /* HVD_ALLGATHER_ALGO was validated at init; the same on every rank. */
      int remote = ctx->id.local_size < ctx->id.size;
      hvd_algo_t algo =
          hvd_allgather_algo(&ps->comm, (hvd_algo_t)ctx->allgather_algo, total * es, remote);
      uint64_t c0 = hvd_now_ns();
      rc = hvd_coll_allgatherv(&ps->comm, algo, remote, send, out, counts, dt);
      tl_op(ctx, r, &e, 1, hvd_algo_name(algo), total * es, c0, hvd_now_ns());
    }
  }
  atomic_fetch_add(&ctx->st_collectives, 1);
  finish_gather(ctx, ps, r, e, rc, out, total, counts, why);
}

static void exec_alltoall(hvd_ctx_t *ctx, hvd_pset_t *ps, const hvd_response_t *r) {
  hvd_entry_t *e = take(ps, r->names[0]);
  tl_start(ctx, r, &e, 1);
  hvd_dtype_t dt = (hvd_dtype_t)r->dtype;
  int n = ps->n, me = ps->me;
  size_t es = hvd_dtype_size(dt), total = 0;
  size_t *v = malloc(4 * (size_t)n * sizeof *v);
  size_t *rcounts = malloc((size_t)n * sizeof *rcounts);
  if (v == NULL || rcounts == NULL) {
    free(v);
    free(rcounts);
    hvd_ctx_abort(ctx, "rank %d: out of memory", ctx->id.rank);
    return;
  }
  size_t *sc = v, *sd = v + n, *rcnt = v + 2 * n, *rd = v + 3 * n;
  size_t so = 0, ro = 0;
  for (int j = 0; j < n; j++) {
    sc[j] = (size_t)r->counts[(size_t)me * (size_t)n + (size_t)j];
    rcnt[j] = rcounts[j] = (size_t)r->counts[(size_t)j * (size_t)n + (size_t)me];
    sd[j] = so;
    rd[j] = ro;
    so += sc[j];
    ro += rcnt[j];
  }
  total = ro;
  char why[HVD_ERR_MSG_MAX];
  char *out = gather_out(ctx, e, total, es, why, sizeof why);
  hvd_status_t rc = HVD_ERR_NO_MEMORY;
  if (out != NULL) {
    const void *send = e ? e->sendbuf : NULL;
    void *zeros = NULL;
    if (send == NULL && so > 0) send = zeros = calloc(so, es);
    {
      uint64_t c0 = hvd_now_ns();
      if (send != NULL || so == 0) rc = hvd_alltoallv_pairwise(&ps->comm, send, sc, sd, out, rcnt, rd, dt);
      tl_op(ctx, r, &e, 1, "pairwise", 0, c0, hvd_now_ns());
    }
    free(zeros);
  }
  free(v);
  atomic_fetch_add(&ctx->st_collectives, 1);
  finish_gather(ctx, ps, r, e, rc, out, total, rcounts, why);
}

static void exec_broadcast(hvd_ctx_t *ctx, hvd_pset_t *ps, const hvd_response_t *r) {
  hvd_entry_t *e = take(ps, r->names[0]);
  tl_start(ctx, r, &e, 1);
  hvd_dtype_t dt = (hvd_dtype_t)r->dtype;
  size_t count = r->counts[0], es = hvd_dtype_size(dt);
  void *buf = e ? e->recvbuf : NULL;
  if (buf == NULL) buf = fusion(ctx, count * es);
  hvd_status_t rc = HVD_ERR_NO_MEMORY;
  if (buf != NULL) {
    if (e && ps->me == r->root && e->sendbuf && e->sendbuf != buf) memcpy(buf, e->sendbuf, count * es);
    {
      /* HVD_BROADCAST_ALGO was validated at init; the same on every rank. */
      int remote = ctx->id.local_size < ctx->id.size;
      hvd_algo_t algo =
          hvd_broadcast_algo(&ps->comm, (hvd_algo_t)ctx->broadcast_algo, count * es, remote);
      uint64_t c0 = hvd_now_ns();
      rc = hvd_coll_broadcast(&ps->comm, algo, remote, buf, count, dt, r->root);
      tl_op(ctx, r, &e, 1, hvd_algo_name(algo), count * es, c0, hvd_now_ns());
    }
  }
  atomic_fetch_add(&ctx->st_collectives, 1);
  if (rc != HVD_OK) coll_failed(ctx, ps, r, rc, &e, 1);
  else if (e) hvd_entry_complete(ctx, e, HVD_OK, NULL);
}

static void exec_reducescatter(hvd_ctx_t *ctx, hvd_pset_t *ps, const hvd_response_t *r) {
  hvd_entry_t *e = take(ps, r->names[0]);
  tl_start(ctx, r, &e, 1);
  hvd_dtype_t dt = (hvd_dtype_t)r->dtype;
  hvd_op_t op = (hvd_op_t)r->op == HVD_AVERAGE ? HVD_SUM : (hvd_op_t)r->op;
  double post = r->postscale * ((hvd_op_t)r->op == HVD_AVERAGE ? 1.0 / ps->n : 1.0);
  size_t count = r->counts[0], es = hvd_dtype_size(dt);
  size_t *counts = malloc((size_t)ps->n * sizeof *counts);
  if (counts == NULL) {
    hvd_ctx_abort(ctx, "rank %d: out of memory", ctx->id.rank);
    return;
  }
  for (int j = 0; j < ps->n; j++) counts[j] = hvd_block_count(count, ps->n, j);
  const void *send = e ? e->sendbuf : NULL;
  void *recv = e ? e->recvbuf : NULL;
  size_t mine = counts[ps->me];
  char *tmp = NULL;
  if (send == NULL || r->prescale != 1.0) {
    tmp = fusion(ctx, (count + mine) * es);
    if (tmp != NULL) {
      if (send) memcpy(tmp, send, count * es);
      else memset(tmp, 0, count * es);
      if (r->prescale != 1.0) hvd_scale(tmp, count, dt, r->prescale);
      send = tmp;
      if (recv == NULL) recv = tmp + count * es;
    }
  }
  hvd_status_t rc = HVD_ERR_NO_MEMORY;
  {
      uint64_t c0 = hvd_now_ns();
      hvd_algo_t algo = hvd_reducescatter_algo(&ps->comm, HVD_ALGO_AUTO);
      if (send != NULL && recv != NULL)
        rc = hvd_coll_reducescatter(&ps->comm, algo, send, recv, counts, dt, op);
      tl_op(ctx, r, &e, 1, hvd_algo_name(algo), 0, c0, hvd_now_ns());
    }
  if (rc == HVD_OK && e && post != 1.0) hvd_scale(e->recvbuf, mine, dt, post);
  free(counts);
  atomic_fetch_add(&ctx->st_collectives, 1);
  if (rc != HVD_OK) coll_failed(ctx, ps, r, rc, &e, 1);
  else if (e) hvd_entry_complete(ctx, e, HVD_OK, NULL);
}

static void exec_process_set(hvd_ctx_t *ctx, hvd_pset_t *ps, const hvd_response_t *r) {
  hvd_entry_t *e = take(ps, r->names[0]);
  tl_start(ctx, r, &e, 1);
  int id = ctx->next_pset_id;
  int n = (int)r->ncounts;
  int *ranks = malloc((size_t)(n ? n : 1) * sizeof *ranks);
  hvd_pset_t *nps = NULL;
  if (ranks != NULL && id < HVD_MAX_PSETS) {
    for (int i = 0; i < n; i++) ranks[i] = (int)r->counts[i];
    nps = hvd_pset_new(ctx, id, ranks, n);
  }
  free(ranks);
  if (nps == NULL) {
    hvd_ctx_abort(ctx, "rank %d: cannot create process set %d", ctx->id.rank, id);
    if (e) hvd_entry_complete(ctx, e, HVD_ERR_NO_MEMORY, "cannot create the process set");
    return;
  }
  ctx->next_pset_id++;
  hvd_pset_install(ctx, nps);
  if (e) {
    e->req->int_result = id;
    hvd_entry_complete(ctx, e, HVD_OK, NULL);
  }
}

void hvd_exec_response(hvd_ctx_t *ctx, hvd_pset_t *ps, const hvd_response_t *r,
                       uint64_t t_list) {
  if (atomic_load(&ctx->aborted)) return; /* the loop fails everything with the cause */
  ctx->tl_list_ns = t_list;
  switch ((hvd_msg_type_t)r->type) {
  case HVD_MSG_ERROR:
    for (uint32_t i = 0; i < r->ntensors; i++) {
      hvd_entry_t *e = take(ps, r->names[i]);
      tl_start(ctx, r, &e, 1);
      if (e) hvd_entry_complete(ctx, e, (hvd_status_t)r->status, r->error);
    }
    break;
  case HVD_MSG_ALLREDUCE: exec_allreduce(ctx, ps, r); break;
  case HVD_MSG_ALLGATHER: exec_allgather(ctx, ps, r); break;
  case HVD_MSG_BROADCAST: exec_broadcast(ctx, ps, r); break;
  case HVD_MSG_REDUCESCATTER: exec_reducescatter(ctx, ps, r); break;
  case HVD_MSG_ALLTOALL: exec_alltoall(ctx, ps, r); break;
  case HVD_MSG_BARRIER: {
    /* The coordinator answers only once every member asked: that is the barrier. */
    hvd_entry_t *e = take(ps, r->names[0]);
    tl_start(ctx, r, &e, 1);
    if (e) hvd_entry_complete(ctx, e, HVD_OK, NULL);
    break;
  }
  case HVD_MSG_JOIN:
    if (ps->join_entry) {
      hvd_entry_t *e = ps->join_entry;
      ps->join_entry = NULL;
      e->req->int_result = r->last_joined;
      hvd_entry_complete(ctx, e, HVD_OK, NULL);
    }
    break;
  case HVD_MSG_PROCESS_SET: exec_process_set(ctx, ps, r); break;
  default: HVD_ERROR("unknown response type %d", r->type); break;
  }
}
