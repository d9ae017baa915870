/*
 * hvd_on_mpi.c: the part of hvd's C API that hvd-train uses, implemented with plain MPI
 * calls, so that the same trainer (tools/hvd-train, unchanged) can run on Open MPI as
 * its allreduce backend: hvd-train-mpi, the peer that tools/train-scaling.sh --mpi
 * measures against.
 *
 * It is what a program that knows MPI would write: each asynchronous allreduce or
 * broadcast is one MPI_Iallreduce / MPI_Ibcast on MPI_COMM_WORLD, started at once and
 * completed by MPI_Wait; AVERAGE (float32 and float64, what hvd-train averages) is
 * MPI_SUM, then on completion hvd's own scaling by 1/n (collectives/reduce_scalar.h).
 * No negotiation, no fusion, no background thread: Open MPI
 * progresses a non-blocking collective inside MPI calls, so the gradients submitted
 * during backprop move when the step waits for them.
 *
 * Only what hvd-train calls is here (hvd_status_string and hvd_dtype_size are hvd's own
 * common/status.c and collectives/dtype.c, built in); the rest of hvd.h is not. Errors are reported like hvd's: a status and a
 * message naming the call.
 */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collectives/reduce_scalar.h"
#include "hvd.h"

struct hvd_ctx {
  int rank, size;
  char err[256];
};

struct hvd_req {
  MPI_Request mpi;
  void *buf; /* result to divide on completion (AVERAGE), else NULL */
  size_t count;
  hvd_dtype_t dtype;
  int size;
  hvd_status_t status;
  char err[256];
};

static MPI_Datatype mpi_type(hvd_dtype_t t) {
  switch (t) {
    case HVD_FLOAT32:
      return MPI_FLOAT;
    case HVD_FLOAT64:
      return MPI_DOUBLE;
    case HVD_INT8:
      return MPI_INT8_T;
    case HVD_UINT8:
      return MPI_UINT8_T;
    case HVD_INT32:
      return MPI_INT32_T;
    case HVD_INT64:
      return MPI_INT64_T;
    default:
      return MPI_DATATYPE_NULL; /* float16, bfloat16: no MPI type */
  }
}

static MPI_Op mpi_op(hvd_op_t op) {
  switch (op) {
    case HVD_SUM:
    case HVD_AVERAGE:
      return MPI_SUM;
    case HVD_MIN:
      return MPI_MIN;
    case HVD_MAX:
      return MPI_MAX;
    case HVD_PRODUCT:
      return MPI_PROD;
    default:
      return MPI_OP_NULL;
  }
}

hvd_status_t hvd_init(hvd_ctx_t **out) {
  if (out == NULL) return HVD_ERR_INVALID_PARAM;
  int inited = 0;
  MPI_Initialized(&inited);
  if (!inited && MPI_Init(NULL, NULL) != MPI_SUCCESS) return HVD_ERR_BOOTSTRAP;
  hvd_ctx_t *c = calloc(1, sizeof *c);
  if (c == NULL) return HVD_ERR_NO_MEMORY;
  MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
  MPI_Comm_size(MPI_COMM_WORLD, &c->size);
  *out = c;
  return HVD_OK;
}

hvd_status_t hvd_shutdown(hvd_ctx_t *ctx) {
  if (ctx == NULL) return HVD_ERR_INVALID_PARAM;
  free(ctx);
  int done = 0;
  MPI_Finalized(&done);
  if (!done) MPI_Finalize();
  return HVD_OK;
}

int hvd_rank(const hvd_ctx_t *ctx) { return ctx ? ctx->rank : -1; }
int hvd_size(const hvd_ctx_t *ctx) { return ctx ? ctx->size : -1; }
const char *hvd_ctx_error(const hvd_ctx_t *ctx) { return ctx ? ctx->err : ""; }
const char *hvd_req_error(const hvd_req_t *req) { return req ? req->err : ""; }
void hvd_req_free(hvd_req_t *req) { free(req); }

hvd_status_t hvd_get_stats(hvd_ctx_t *ctx, hvd_stats_t *out) {
  (void)ctx;
  (void)out;
  return HVD_ERR_NOT_SUPPORTED; /* hvd's counters have no MPI counterpart */
}

static hvd_status_t refuse(hvd_ctx_t *ctx, const hvd_op_args_t *a, const char *what) {
  snprintf(ctx->err, sizeof ctx->err, "hvd_on_mpi: tensor '%s': %s", a->name ? a->name : "?",
           what);
  return HVD_ERR_NOT_SUPPORTED;
}

static hvd_status_t start(hvd_ctx_t *ctx, const hvd_op_args_t *a, int bcast, hvd_req_t **req) {
  if (ctx == NULL || a == NULL || req == NULL) return HVD_ERR_INVALID_PARAM;
  *req = NULL;
  const MPI_Datatype t = mpi_type(a->dtype);
  if (t == MPI_DATATYPE_NULL) return refuse(ctx, a, "dtype without an MPI type");
  if (!bcast && mpi_op(a->op) == MPI_OP_NULL) return refuse(ctx, a, "unknown op");
  if (!bcast && a->op == HVD_AVERAGE && a->dtype != HVD_FLOAT32 && a->dtype != HVD_FLOAT64)
    return refuse(ctx, a, "AVERAGE is here for float32 and float64 only");
  if (a->prescale != 1.0 || a->postscale != 1.0 || a->process_set != 0 || a->callback)
    return refuse(ctx, a, "prescale, postscale, process sets and callbacks are not here");
  if (a->count > (size_t)INT32_MAX) return refuse(ctx, a, "count above INT_MAX");
  hvd_req_t *r = calloc(1, sizeof *r);
  if (r == NULL) return HVD_ERR_NO_MEMORY;
  int rc;
  if (bcast) {
    if (a->recvbuf != a->sendbuf && ctx->rank == a->root)
      memcpy(a->recvbuf, a->sendbuf, a->count * hvd_dtype_size(a->dtype));
    rc = MPI_Ibcast(a->recvbuf, (int)a->count, t, a->root, MPI_COMM_WORLD, &r->mpi);
  } else {
    const void *src = a->sendbuf == a->recvbuf ? MPI_IN_PLACE : a->sendbuf;
    rc = MPI_Iallreduce(src, a->recvbuf, (int)a->count, t, mpi_op(a->op), MPI_COMM_WORLD,
                        &r->mpi);
    if (a->op == HVD_AVERAGE) r->buf = a->recvbuf;
  }
  if (rc != MPI_SUCCESS) {
    free(r);
    snprintf(ctx->err, sizeof ctx->err, "hvd_on_mpi: tensor '%s': MPI error %d",
             a->name ? a->name : "?", rc);
    return HVD_ERR_TRANSPORT;
  }
  r->count = a->count;
  r->dtype = a->dtype;
  r->size = ctx->size;
  *req = r;
  return HVD_OK;
}

hvd_status_t hvd_allreduce_ex(hvd_ctx_t *ctx, const hvd_op_args_t *args, hvd_req_t **req) {
  return start(ctx, args, 0, req);
}

hvd_status_t hvd_broadcast_ex(hvd_ctx_t *ctx, const hvd_op_args_t *args, hvd_req_t **req) {
  return start(ctx, args, 1, req);
}

/* AVERAGE's 1/n, as hvd_scale does it: float32 through double, rounded once. */
static void divide(hvd_req_t *r) {
  const double f = 1.0 / r->size;
  if (r->dtype == HVD_FLOAT32) {
    float *x = r->buf;
    for (size_t i = 0; i < r->count; i++) x[i] = hvd_scale_f32(x[i], f);
  } else {
    double *x = r->buf;
    for (size_t i = 0; i < r->count; i++) x[i] = hvd_prod_f64(x[i], f);
  }
}

hvd_status_t hvd_wait(hvd_req_t *req) {
  if (req == NULL) return HVD_ERR_INVALID_PARAM;
  if (req->mpi != MPI_REQUEST_NULL) {
    int rc = MPI_Wait(&req->mpi, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) {
      snprintf(req->err, sizeof req->err, "MPI_Wait: MPI error %d", rc);
      req->status = HVD_ERR_TRANSPORT;
    } else if (req->buf != NULL) {
      divide(req);
    }
    req->buf = NULL;
  }
  return req->status;
}

static hvd_status_t blocking(hvd_ctx_t *ctx, const hvd_op_args_t *a, int bcast) {
  hvd_req_t *r;
  hvd_status_t rc = start(ctx, a, bcast, &r);
  if (rc != HVD_OK) return rc;
  rc = hvd_wait(r);
  if (rc != HVD_OK) snprintf(ctx->err, sizeof ctx->err, "%s", r->err);
  hvd_req_free(r);
  return rc;
}

hvd_status_t hvd_allreduce(hvd_ctx_t *ctx, const char *name, const void *sendbuf, void *recvbuf,
                           size_t count, hvd_dtype_t dtype, hvd_op_t op) {
  hvd_op_args_t a = HVD_OP_ARGS_INIT;
  a.name = name;
  a.sendbuf = sendbuf;
  a.recvbuf = recvbuf;
  a.count = count;
  a.dtype = dtype;
  a.op = op;
  return blocking(ctx, &a, 0);
}

hvd_status_t hvd_broadcast(hvd_ctx_t *ctx, const char *name, void *buf, size_t count,
                           hvd_dtype_t dtype, int root) {
  hvd_op_args_t a = HVD_OP_ARGS_INIT;
  a.name = name;
  a.sendbuf = a.recvbuf = buf;
  a.count = count;
  a.dtype = dtype;
  a.root = root;
  return blocking(ctx, &a, 1);
}
