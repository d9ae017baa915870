/*
 * Bad input through the public API: every exported function with every class of bad
 * argument (NULL context or pointers, unknown enum values, counts whose byte size
 * overflows, names that are empty, too long or unterminated, ranks, roots and process
 * sets out of range, non-finite scale factors, blocking calls from a completion
 * callback, calls while hvd_shutdown runs on another thread). Each must return its
 * documented status (docs/errors.md) and log a line naming the argument; none may
 * crash (the ASan+UBSan stage runs this file).
 *
 * Single-rank jobs in this process (hvd_init with no job environment); cases that need
 * peers are in tests/integration/progs/runtime_check.c ("invalid"). stderr goes to a
 * file so each log line can be checked.
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "capture.h"
#include "collectives/reduce.h"
#include "common/log.h"
#include "runtime/ctx.h"

/* ---- log checks ---------------------------------------------------------------------- */

/* rc must be want, and the log since the last check must contain every needle. */
static void check(const char *what, hvd_status_t rc, hvd_status_t want, const char *const *needles) {
  const char *log = cap_text();
  cr_expect_eq(rc, want, "%s: %s (%d), want %s; log:\n%s", what, hvd_status_string(rc), rc,
               hvd_status_string(want), log);
  for (; *needles; needles++)
    cr_expect(strstr(log, *needles) != NULL, "%s: the log lacks \"%s\":\n%s", what, *needles, log);
  cap_clear();
}

/* EXPECT(call, status, "text the log must contain", ...) */
#define EXPECT(call, st, ...)                                                              \
  do {                                                                                     \
    cap_clear();                                                                           \
    hvd_status_t rc_ = (call);                                                             \
    check(#call, rc_, st, (const char *const[]){__VA_ARGS__, NULL});                       \
  } while (0)

/* ---- fixture: a one-rank context --------------------------------------------------------- */

static hvd_ctx_t *ctx;

static void setup(void) {
  cap_start();
  cr_assert_eq(hvd_init(&ctx), HVD_OK, "%s", cap_text());
  cap_clear();
}

static void teardown(void) {
  if (ctx) cr_expect_eq(hvd_shutdown(ctx), HVD_OK, "%s", cap_text());
  ctx = NULL;
  cap_end();
}

TestSuite(badinput, .init = setup, .fini = teardown, .timeout = 60);

/* A tensor the tests can use. */
static float x[8], y[8];

static hvd_op_args_t args_for(const char *name) {
  hvd_op_args_t a = HVD_OP_ARGS_INIT;
  a.name = name;
  a.sendbuf = x;
  a.recvbuf = y;
  a.count = 8;
  a.recv_capacity = 8; /* allgather, alltoall */
  return a;
}

/* ---- NULL context ("before init") --------------------------------------------------------- */

Test(badinput, null_context) {
  hvd_op_args_t a = args_for("t");
  hvd_req_t *req = (hvd_req_t *)&a; /* must come back NULL */
  int id = 0, ranks[1] = {0};
  hvd_stats_t s;
  EXPECT(hvd_init(NULL), HVD_ERR_INVALID_PARAM, "hvd_init", "out is NULL");
  EXPECT(hvd_shutdown(NULL), HVD_OK, "");
  EXPECT(hvd_allreduce_async(NULL, "t", x, y, 8, HVD_FLOAT32, HVD_SUM, &req),
         HVD_ERR_INVALID_PARAM, "allreduce", "ctx is NULL");
  cr_expect_null(req);
  EXPECT(hvd_allreduce(NULL, "t", x, y, 8, HVD_FLOAT32, HVD_SUM), HVD_ERR_INVALID_PARAM,
         "ctx is NULL");
  EXPECT(hvd_allreduce_ex(NULL, &a, &req), HVD_ERR_INVALID_PARAM, "allreduce", "ctx is NULL");
  EXPECT(hvd_grouped_allreduce(NULL, &a, 1, &req), HVD_ERR_INVALID_PARAM, "ctx is NULL");
  EXPECT(hvd_allgather_ex(NULL, &a, &req), HVD_ERR_INVALID_PARAM, "allgather", "ctx is NULL");
  EXPECT(hvd_broadcast_ex(NULL, &a, &req), HVD_ERR_INVALID_PARAM, "broadcast", "ctx is NULL");
  EXPECT(hvd_reducescatter_ex(NULL, &a, &req), HVD_ERR_INVALID_PARAM, "reducescatter",
         "ctx is NULL");
  EXPECT(hvd_alltoall_ex(NULL, &a, &req), HVD_ERR_INVALID_PARAM, "alltoall", "ctx is NULL");
  EXPECT(hvd_broadcast(NULL, "t", x, 8, HVD_FLOAT32, 0), HVD_ERR_INVALID_PARAM, "ctx is NULL");
  EXPECT(hvd_barrier(NULL, 0), HVD_ERR_INVALID_PARAM, "barrier", "ctx is NULL");
  EXPECT(hvd_join(NULL, 0, &id), HVD_ERR_INVALID_PARAM, "join", "ctx is NULL");
  EXPECT(hvd_process_set_create(NULL, ranks, 1, &id), HVD_ERR_INVALID_PARAM,
         "hvd_process_set_create", "ctx is NULL");
  EXPECT(hvd_get_stats(NULL, &s), HVD_ERR_INVALID_PARAM, "hvd_get_stats", "ctx is NULL");
  EXPECT(hvd_timeline_start(NULL, "t.json"), HVD_ERR_INVALID_PARAM, "hvd_timeline_start",
         "ctx is NULL");
  EXPECT(hvd_timeline_stop(NULL), HVD_ERR_INVALID_PARAM, "hvd_timeline_stop", "ctx is NULL");
  cr_expect_null(req);
  /* getters answer without a log line */
  cap_clear();
  cr_expect_eq(hvd_rank(NULL), -1);
  cr_expect_eq(hvd_size(NULL), -1);
  cr_expect_eq(hvd_local_rank(NULL), -1);
  cr_expect_eq(hvd_local_size(NULL), -1);
  cr_expect_eq(hvd_cross_rank(NULL), -1);
  cr_expect_eq(hvd_cross_size(NULL), -1);
  cr_expect_eq(hvd_process_set_rank(NULL, 0), -1);
  cr_expect_eq(hvd_process_set_size(NULL, 0), -1);
  cr_expect_str_eq(hvd_ctx_error(NULL), "");
  cr_expect_str_eq(cap_text(), "");
}

Test(badinput, null_request) {
  int done = 7;
  const size_t *counts;
  void *buf;
  EXPECT(hvd_test(NULL, &done), HVD_ERR_INVALID_PARAM, "hvd_test", "req is NULL");
  cr_expect_eq(done, 7, "output untouched on failure");
  EXPECT(hvd_wait(NULL), HVD_ERR_INVALID_PARAM, "hvd_wait", "req is NULL");
  EXPECT(hvd_req_output(NULL, &buf, NULL), HVD_ERR_INVALID_PARAM, "hvd_req_output",
         "req is NULL");
  EXPECT(hvd_req_recv_counts(NULL, &counts, NULL), HVD_ERR_INVALID_PARAM,
         "hvd_req_recv_counts", "req is NULL");
  cr_expect_str_eq(hvd_req_error(NULL), "");
  hvd_req_free(NULL); /* documented no-op */
}

/* Values that are not enum members are named, never indexed with. */
Test(badinput, static_helpers) {
  cr_expect_str_eq(hvd_status_string((hvd_status_t)12345), "unknown status");
  cr_expect_str_eq(hvd_status_string((hvd_status_t)INT_MIN), "unknown status");
  cr_expect_eq(hvd_dtype_size((hvd_dtype_t)-1), 0);
  cr_expect_eq(hvd_dtype_size(HVD_DTYPE_COUNT), 0);
  cr_expect_str_eq(hvd_dtype_name((hvd_dtype_t)-1), "unknown");
  cr_expect_str_eq(hvd_dtype_name((hvd_dtype_t)INT_MAX), "unknown");
  cr_expect_str_eq(hvd_op_name((hvd_op_t)-1), "unknown");
  cr_expect_str_eq(hvd_op_name(HVD_OP_COUNT), "unknown");
}

/* ---- operations ------------------------------------------------------------------------ */

static void gate_callback(hvd_req_t *req, hvd_status_t status, void *arg);

typedef hvd_status_t (*post_fn)(hvd_ctx_t *, const hvd_op_args_t *, hvd_req_t **);
static const struct {
  const char *op;
  post_fn fn;
  int reduces;
} ops[] = {
    {"allreduce", hvd_allreduce_ex, 1},       {"allgather", hvd_allgather_ex, 0},
    {"broadcast", hvd_broadcast_ex, 0},       {"reducescatter", hvd_reducescatter_ex, 1},
    {"alltoall", hvd_alltoall_ex, 0},
};
#define NOPS (sizeof ops / sizeof ops[0])

/* a must be refused by ops[i] with a log line containing "<op>(<name>)" and want. */
static void refused(size_t i, const hvd_op_args_t *a, const char *want) {
  char head[96];
  snprintf(head, sizeof head, "%s(%.40s", ops[i].op, a->name ? a->name : "");
  hvd_req_t *req = (hvd_req_t *)x; /* must come back NULL */
  cap_clear();
  hvd_status_t rc = ops[i].fn(ctx, a, &req);
  char what[160];
  snprintf(what, sizeof what, "%s with %s", ops[i].op, want);
  check(what, rc, HVD_ERR_INVALID_PARAM, (const char *const[]){head, want, NULL});
  cr_expect_null(req, "%s: *req not cleared", what);
}

/* a must be accepted by ops[i] and complete with HVD_OK. */
static void accepted(size_t i, const hvd_op_args_t *a) {
  hvd_req_t *req = NULL;
  hvd_status_t rc = ops[i].fn(ctx, a, &req);
  cr_expect_eq(rc, HVD_OK, "%s(%s): %s\n%s", ops[i].op, a->name, hvd_status_string(rc), cap_text());
  if (rc == HVD_OK) {
    cr_expect_eq(hvd_wait(req), HVD_OK, "%s(%s): %s", ops[i].op, a->name, hvd_req_error(req));
    hvd_req_free(req);
  }
  cap_clear();
}

Test(badinput, null_pointers) {
  for (size_t i = 0; i < NOPS; i++) {
    hvd_op_args_t a = args_for("p");
    EXPECT(ops[i].fn(ctx, &a, NULL), HVD_ERR_INVALID_PARAM, "req is NULL");
    hvd_req_t *req = (hvd_req_t *)x;
    EXPECT(ops[i].fn(ctx, NULL, &req), HVD_ERR_INVALID_PARAM, "args is NULL");
    cr_expect_null(req);
    if (i != 2) { /* broadcast: sendbuf NULL means in place */
      a.sendbuf = NULL;
      refused(i, &a, "sendbuf is NULL with count > 0");
      a.sendbuf = x;
    }
    if (ops[i].reduces || i == 2) { /* allgather/alltoall: NULL recvbuf = hvd allocates */
      a.recvbuf = NULL;
      refused(i, &a, "recvbuf is NULL with count > 0");
    } else {
      a.recvbuf = NULL;
      a.recv_capacity = 8;
      refused(i, &a, "recv_capacity is set but recvbuf is NULL");
    }
    /* zero elements need no buffers */
    hvd_op_args_t z = HVD_OP_ARGS_INIT;
    z.name = "p.zero";
    accepted(i, &z);
  }
  EXPECT(hvd_allreduce_async(ctx, "p", NULL, y, 8, HVD_FLOAT32, HVD_SUM, NULL),
         HVD_ERR_INVALID_PARAM, "req is NULL");
  EXPECT(hvd_allreduce(ctx, "p", x, NULL, 8, HVD_FLOAT32, HVD_SUM), HVD_ERR_INVALID_PARAM,
         "allreduce(p)", "recvbuf is NULL");
  EXPECT(hvd_broadcast(ctx, "p", NULL, 8, HVD_FLOAT32, 0), HVD_ERR_INVALID_PARAM,
         "broadcast(p)", "recvbuf is NULL");
}

Test(badinput, unknown_dtype_and_op) {
  const int bad_dtypes[] = {-1, HVD_DTYPE_COUNT, 99, INT_MAX, INT_MIN};
  const int bad_ops[] = {-1, HVD_OP_COUNT, 77, INT_MIN};
  for (size_t i = 0; i < NOPS; i++) {
    hvd_op_args_t a = args_for("e");
    for (size_t k = 0; k < sizeof bad_dtypes / sizeof bad_dtypes[0]; k++) {
      char want[64];
      snprintf(want, sizeof want, "dtype %d is not an hvd_dtype_t", bad_dtypes[k]);
      a.dtype = (hvd_dtype_t)bad_dtypes[k];
      refused(i, &a, want);
    }
    a.dtype = HVD_FLOAT32;
    for (size_t k = 0; k < sizeof bad_ops / sizeof bad_ops[0]; k++) {
      a.op = (hvd_op_t)bad_ops[k];
      if (ops[i].reduces) {
        char want[64];
        snprintf(want, sizeof want, "op %d is not an hvd_op_t", bad_ops[k]);
        refused(i, &a, want);
      } else {
        accepted(i, &a); /* op is not an argument of the collectives that do not reduce */
      }
    }
  }
  /* every (dtype, op) pair: accepted where the kernels support it, refused by name
   * where not (today every pair is supported) */
  for (int d = 0; d < HVD_DTYPE_COUNT; d++)
    for (int o = 0; o < HVD_OP_COUNT; o++) {
      static uint64_t buf[8];
      hvd_op_args_t a = HVD_OP_ARGS_INIT;
      a.name = "pairs";
      a.sendbuf = a.recvbuf = buf;
      a.count = 4;
      a.dtype = (hvd_dtype_t)d;
      a.op = (hvd_op_t)o;
      if (hvd_reduce_supported(a.dtype, a.op)) {
        accepted(0, &a);
      } else {
        char want[96];
        snprintf(want, sizeof want, "op %s is not supported for dtype %s", hvd_op_name(a.op),
                 hvd_dtype_name(a.dtype));
        refused(0, &a, want);
      }
    }
}

Test(badinput, counts_that_overflow) {
  const struct {
    size_t count;
    hvd_dtype_t dtype;
  } c[] = {
      {SIZE_MAX, HVD_FLOAT32},        /* (size_t)-1: a "negative" count */
      {(size_t)-8, HVD_INT8},
      {SIZE_MAX / 2, HVD_FLOAT64},    /* the multiplication wraps */
      {SIZE_MAX / 8 + 1, HVD_FLOAT32}, /* no wrap, but beyond SIZE_MAX / 4 bytes */
      {(size_t)1 << 62, HVD_FLOAT16},
  };
  for (size_t i = 0; i < NOPS; i++)
    for (size_t k = 0; k < sizeof c / sizeof c[0]; k++) {
      hvd_op_args_t a = args_for("big");
      a.count = c[k].count;
      a.dtype = c[k].dtype;
      char want[96];
      snprintf(want, sizeof want, "count %zu of %s overflows the byte size", c[k].count,
               hvd_dtype_name(c[k].dtype));
      refused(i, &a, want);
    }
  EXPECT(hvd_allreduce(ctx, "big", x, x, SIZE_MAX, HVD_FLOAT32, HVD_SUM), HVD_ERR_INVALID_PARAM,
         "count 18446744073709551615 of float32 overflows");
}

Test(badinput, names) {
  static char longest[HVD_NAME_MAX + 1], unterminated[HVD_NAME_MAX + 1];
  memset(longest, 'n', HVD_NAME_MAX);
  longest[HVD_NAME_MAX] = '\0';
  /* heap, exactly HVD_NAME_MAX + 1 bytes without a NUL: ASan reports any read past */
  char *heap = malloc(HVD_NAME_MAX + 1);
  memset(heap, 'u', HVD_NAME_MAX + 1);
  memset(unterminated, 'v', sizeof unterminated);
  for (size_t i = 0; i < NOPS; i++) {
    hvd_op_args_t a = args_for("");
    refused(i, &a, "name is empty (NULL gives an automatic name)");
    a.name = heap;
    refused(i, &a, "name is longer than HVD_NAME_MAX (512 bytes) or not terminated");
    a.name = unterminated;
    refused(i, &a, "name is longer than HVD_NAME_MAX");
    a.name = longest;
    accepted(i, &a);
    a.name = NULL; /* automatic */
    accepted(i, &a);
    a.name = "with spaces, \"quotes\", \\ and \n newline";
    accepted(i, &a);
  }
  /* the log shows at most 64 bytes of a name that is too long */
  hvd_op_args_t a = args_for(heap);
  refused(0, &a, "allreduce(uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu...)");
  EXPECT(hvd_allreduce(ctx, "", x, y, 8, HVD_FLOAT32, HVD_SUM), HVD_ERR_INVALID_PARAM,
         "name is empty");
  EXPECT(hvd_broadcast(ctx, heap, x, 8, HVD_FLOAT32, 0), HVD_ERR_INVALID_PARAM,
         "not terminated");
  free(heap);
}

Test(badinput, process_sets_and_roots) {
  const int bad_sets[] = {-1, 1, 7, HVD_MAX_PSETS, INT_MAX, INT_MIN};
  for (size_t i = 0; i < NOPS; i++)
    for (size_t k = 0; k < sizeof bad_sets / sizeof bad_sets[0]; k++) {
      hvd_op_args_t a = args_for("s");
      a.process_set = bad_sets[k];
      char want[64];
      snprintf(want, sizeof want, "process_set %d does not exist", bad_sets[k]);
      refused(i, &a, want);
    }
  EXPECT(hvd_barrier(ctx, 3), HVD_ERR_INVALID_PARAM, "barrier", "process_set 3 does not exist");
  EXPECT(hvd_barrier(ctx, -1), HVD_ERR_INVALID_PARAM, "process_set -1 does not exist");
  EXPECT(hvd_join(ctx, 5, NULL), HVD_ERR_INVALID_PARAM, "join", "process_set 5 does not exist");
  cr_expect_eq(hvd_process_set_rank(ctx, -1), -1);
  cr_expect_eq(hvd_process_set_size(ctx, 12345), -1);
  cr_expect_eq(hvd_process_set_size(ctx, INT_MIN), -1);
  cr_expect_eq(hvd_process_set_size(ctx, 0), 1);

  const int bad_roots[] = {-1, 1, INT_MAX, INT_MIN};
  for (size_t k = 0; k < sizeof bad_roots / sizeof bad_roots[0]; k++) {
    hvd_op_args_t a = args_for("r");
    a.root = bad_roots[k];
    char want[96];
    snprintf(want, sizeof want, "root %d is out of range: process_set 0 has 1 ranks",
             bad_roots[k]);
    refused(2, &a, want);
    EXPECT(hvd_broadcast(ctx, "r", x, 8, HVD_FLOAT32, bad_roots[k]), HVD_ERR_INVALID_PARAM, want);
    for (size_t i = 0; i < NOPS; i++)
      if (i != 2) accepted(i, &a); /* root is only broadcast's */
  }
}

Test(badinput, process_set_create) {
  int id = -5, r0[] = {0}, r1[] = {1}, rneg[] = {-1}, rmin[] = {INT_MIN}, r00[] = {0, 0};
  const char *fn = "hvd_process_set_create";
  EXPECT(hvd_process_set_create(ctx, NULL, 1, &id), HVD_ERR_INVALID_PARAM, fn, "ranks is NULL");
  EXPECT(hvd_process_set_create(ctx, r0, 1, NULL), HVD_ERR_INVALID_PARAM, fn, "id is NULL");
  EXPECT(hvd_process_set_create(ctx, r0, 0, &id), HVD_ERR_INVALID_PARAM, fn,
         "n = 0 is out of range: a set has 1 to 1 ranks");
  EXPECT(hvd_process_set_create(ctx, r0, -1, &id), HVD_ERR_INVALID_PARAM, "n = -1");
  EXPECT(hvd_process_set_create(ctx, r00, 2, &id), HVD_ERR_INVALID_PARAM, "n = 2");
  EXPECT(hvd_process_set_create(ctx, r0, INT_MIN, &id), HVD_ERR_INVALID_PARAM, "out of range");
  EXPECT(hvd_process_set_create(ctx, r1, 1, &id), HVD_ERR_INVALID_PARAM,
         "ranks[0] = 1 is not a rank of the job [0, 1)");
  EXPECT(hvd_process_set_create(ctx, rneg, 1, &id), HVD_ERR_INVALID_PARAM, "ranks[0] = -1");
  EXPECT(hvd_process_set_create(ctx, rmin, 1, &id), HVD_ERR_INVALID_PARAM, "ranks[0] = -2147483648");
  cr_expect_eq(id, -5, "*id untouched on failure");
  /* duplicates need two ranks: runtime_check's "invalid" case */
  EXPECT(hvd_process_set_create(ctx, r0, 1, &id), HVD_OK, "");
  cr_expect_eq(id, 1);
  cr_expect_eq(hvd_process_set_rank(ctx, id), 0);
}

Test(badinput, scale_factors) {
  const double bad[] = {NAN, -NAN, INFINITY, -INFINITY};
  for (size_t i = 0; i < NOPS; i++)
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
      for (int post = 0; post < 2; post++) {
        hvd_op_args_t a = args_for("sc");
        if (post) a.postscale = bad[k];
        else a.prescale = bad[k];
        if (ops[i].reduces) refused(i, &a, "prescale and postscale must be finite");
        else accepted(i, &a); /* the collectives that do not reduce ignore them */
      }
  /* finite factors of any size are the caller's business */
  hvd_op_args_t a = args_for("sc.ok");
  a.prescale = 0;
  a.postscale = -1e300;
  accepted(0, &a);
}

Test(badinput, alltoall_splits) {
  size_t splits[1];
  hvd_op_args_t a = args_for("a2a");
  a.splits = splits;
  splits[0] = 7;
  refused(4, &a, "splits add up to 7 but count is 8");
  splits[0] = SIZE_MAX; /* a "negative" split */
  refused(4, &a, "splits add up to 18446744073709551615 but count is 8");
  splits[0] = 8;
  accepted(4, &a);
  /* splits that overflow when added need two ranks: runtime_check's "invalid" case */
}

Test(badinput, groups) {
  hvd_op_args_t g[3] = {args_for("g0"), args_for("g1"), args_for("g2")};
  hvd_req_t *req = (hvd_req_t *)x;
  const int bad_n[] = {0, -1, INT_MIN, HVD_GROUP_MAX + 1, INT_MAX};
  for (size_t k = 0; k < sizeof bad_n / sizeof bad_n[0]; k++) {
    char want[96];
    snprintf(want, sizeof want, "n = %d tensors is out of range [1, %d]", bad_n[k], HVD_GROUP_MAX);
    EXPECT(hvd_grouped_allreduce(ctx, g, bad_n[k], &req), HVD_ERR_INVALID_PARAM, want);
    cr_expect_null(req);
  }
  EXPECT(hvd_grouped_allreduce(ctx, g, 3, NULL), HVD_ERR_INVALID_PARAM, "req is NULL");
  EXPECT(hvd_grouped_allreduce(ctx, NULL, 3, &req), HVD_ERR_INVALID_PARAM, "args is NULL");
  /* one bad member fails the group, named */
  g[2].dtype = (hvd_dtype_t)42;
  EXPECT(hvd_grouped_allreduce(ctx, g, 3, &req), HVD_ERR_INVALID_PARAM,
         "allreduce(g2): invalid parameter: dtype 42");
  g[2].dtype = HVD_FLOAT32;
  int id, r0[] = {0};
  cr_assert_eq(hvd_process_set_create(ctx, r0, 1, &id), HVD_OK);
  g[1].process_set = id;
  EXPECT(hvd_grouped_allreduce(ctx, g, 3, &req), HVD_ERR_INVALID_PARAM,
         "allreduce(g1): invalid parameter: a group must use one process set");
  g[1].process_set = 0;
  g[2].callback = gate_callback; /* never called */
  EXPECT(hvd_grouped_allreduce(ctx, g, 3, &req), HVD_ERR_INVALID_PARAM,
         "only the first tensor of a group may have a callback");
  cr_expect_null(req);
  g[2].callback = NULL;
  /* two tensors of one group with the same name */
  g[1].name = "g0";
  EXPECT(hvd_grouped_allreduce(ctx, g, 2, &req), HVD_ERR_INVALID_PARAM, "already in flight");
  cr_expect_null(req);
  g[1].name = "g1";
  EXPECT(hvd_grouped_allreduce(ctx, g, 3, &req), HVD_OK, "");
  cr_expect_eq(hvd_wait(req), HVD_OK);
  hvd_req_free(req);
}

Test(badinput, requests) {
  hvd_req_t *req;
  int done = 5;
  cr_assert_eq(hvd_allreduce_async(ctx, "q", x, y, 8, HVD_FLOAT32, HVD_SUM, &req), HVD_OK);
  EXPECT(hvd_test(req, NULL), HVD_ERR_INVALID_PARAM, "hvd_test", "done is NULL");
  cr_expect_eq(hvd_wait(req), HVD_OK);
  void *buf = x;
  size_t n = 3;
  const size_t *counts = NULL;
  int nc = 4;
  EXPECT(hvd_req_output(req, &buf, &n), HVD_ERR_INVALID_PARAM, "hvd_req_output",
         "the request is an allreduce, not an allgather or alltoall");
  EXPECT(hvd_req_recv_counts(req, &counts, &nc), HVD_ERR_INVALID_PARAM, "hvd_req_recv_counts",
         "not an allgather or alltoall");
  cr_expect(buf == x && n == 3 && counts == NULL && nc == 4, "outputs untouched on failure");
  EXPECT(hvd_test(req, &done), HVD_OK, "");
  cr_expect_eq(done, 1);
  cr_expect_str_eq(hvd_req_error(req), "");
  hvd_req_free(req);
  /* outputs the caller does not want may be NULL */
  hvd_op_args_t a = args_for("q.gather");
  a.recvbuf = NULL; /* hvd allocates the output */
  a.recv_capacity = 0;
  cr_assert_eq(hvd_allgather_ex(ctx, &a, &req), HVD_OK);
  cr_expect_eq(hvd_wait(req), HVD_OK);
  EXPECT(hvd_req_output(req, NULL, NULL), HVD_OK, "");
  EXPECT(hvd_req_recv_counts(req, NULL, NULL), HVD_OK, "");
  hvd_req_free(req);
}

Test(badinput, stats) {
  hvd_stats_t s;
  EXPECT(hvd_get_stats(ctx, NULL), HVD_ERR_INVALID_PARAM, "hvd_get_stats", "out is NULL");
  EXPECT(hvd_get_stats(ctx, &s), HVD_OK, "");
}

Test(badinput, timeline_paths) {
  char path[4200], ok[128];
  const char *fn = "hvd_timeline_start";
  EXPECT(hvd_timeline_start(ctx, NULL), HVD_ERR_INVALID_PARAM, fn, "path is NULL");
  EXPECT(hvd_timeline_start(ctx, ""), HVD_ERR_INVALID_PARAM, fn, "path is empty");
  EXPECT(hvd_timeline_start(ctx, "/nonexistent-dir/t.json"), HVD_ERR_INVALID_PARAM,
         "cannot create /nonexistent-dir/t.json: No such file or directory");
  EXPECT(hvd_timeline_start(ctx, cap_dir), HVD_ERR_INVALID_PARAM, "Is a directory");
  snprintf(path, sizeof path, "%s/", cap_dir);
  memset(path + strlen(path), 'p', sizeof path - strlen(path) - 1);
  path[sizeof path - 1] = '\0';
  EXPECT(hvd_timeline_start(ctx, path), HVD_ERR_INVALID_PARAM, "File name too long");
  EXPECT(hvd_timeline_stop(ctx), HVD_OK, ""); /* none running */
  snprintf(ok, sizeof ok, "%s/t.json", cap_dir);
  EXPECT(hvd_timeline_start(ctx, ok), HVD_OK, "");
  EXPECT(hvd_timeline_start(ctx, "/nonexistent-dir/t.json"), HVD_ERR_INVALID_PARAM,
         "cannot create");
  EXPECT(hvd_timeline_stop(ctx), HVD_OK, "");
  EXPECT(hvd_timeline_stop(ctx), HVD_OK, "");
}

/* ---- completion callbacks that block ------------------------------------------------------- */

typedef struct {
  hvd_status_t wait_own, sync_allreduce, broadcast, barrier, join, pset, tl_start, tl_stop,
      async;
  hvd_req_t *async_req;
  int ran;
} cb_result_t;

static void misbehaving_callback(hvd_req_t *req, hvd_status_t status, void *arg) {
  cb_result_t *r = arg;
  float v = 1;
  int id, r0[] = {0};
  char tl[96];
  snprintf(tl, sizeof tl, "%s/cb.json", cap_dir);
  r->wait_own = hvd_wait(req);
  hvd_req_free(req); /* refused: the library still uses it */
  r->sync_allreduce = hvd_allreduce(ctx, "cb.sync", &v, &v, 1, HVD_FLOAT32, HVD_SUM);
  r->broadcast = hvd_broadcast(ctx, "cb.bcast", &v, 1, HVD_FLOAT32, 0);
  r->barrier = hvd_barrier(ctx, 0);
  r->join = hvd_join(ctx, 0, NULL);
  r->pset = hvd_process_set_create(ctx, r0, 1, &id);
  r->tl_start = hvd_timeline_start(ctx, tl);
  r->tl_stop = hvd_timeline_stop(ctx);
  /* asynchronous submission is allowed */
  r->async = hvd_allreduce_async(ctx, "cb.async", &v, &v, 1, HVD_FLOAT32, HVD_SUM, &r->async_req);
  r->ran = status == HVD_OK ? 1 : -1;
}

Test(badinput, blocking_calls_from_a_callback) {
  cb_result_t r = {0};
  hvd_op_args_t a = args_for("cb");
  a.callback = misbehaving_callback;
  a.callback_arg = &r;
  hvd_req_t *req;
  cr_assert_eq(hvd_allreduce_ex(ctx, &a, &req), HVD_OK);
  cr_assert_eq(hvd_wait(req), HVD_OK, "%s", cap_text());
  cr_assert_eq(r.ran, 1);
  const hvd_status_t inv = HVD_ERR_INVALID_PARAM;
  cr_expect_eq(r.wait_own, inv);
  cr_expect_eq(r.sync_allreduce, inv);
  cr_expect_eq(r.broadcast, inv);
  cr_expect_eq(r.barrier, inv);
  cr_expect_eq(r.join, inv);
  cr_expect_eq(r.pset, inv);
  cr_expect_eq(r.tl_start, inv);
  cr_expect_eq(r.tl_stop, inv);
  cr_expect_eq(r.async, HVD_OK);
  const char *log = cap_text();
  const char *want[] = {
      "hvd_wait: invalid parameter: called from a completion callback",
      "hvd_req_free: invalid parameter: called from a completion callback",
      "hvd_allreduce: invalid parameter: called from a completion callback",
      "hvd_broadcast: invalid parameter: called from a completion callback",
      "hvd_barrier: invalid parameter: called from a completion callback",
      "hvd_join: invalid parameter: called from a completion callback",
      "hvd_process_set_create: invalid parameter: called from a completion callback",
      "hvd_timeline_start: invalid parameter: called from a completion callback",
      "hvd_timeline_stop: invalid parameter: called from a completion callback",
  };
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    cr_expect(strstr(log, want[i]) != NULL, "log lacks \"%s\":\n%s", want[i], log);
  cr_expect_eq(hvd_wait(r.async_req), HVD_OK);
  hvd_req_free(r.async_req);
  hvd_req_free(req); /* the real free */
}

/* ---- while hvd_shutdown runs on another thread ---------------------------------------------- */

static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static int gate_entered, gate_open;

/* Holds the background thread (and so hvd_shutdown) until the test opens the gate. */
static void gate_callback(hvd_req_t *req, hvd_status_t status, void *arg) {
  pthread_mutex_lock(&gate_mu);
  gate_entered = 1;
  pthread_cond_broadcast(&gate_cv);
  while (!gate_open) pthread_cond_wait(&gate_cv, &gate_mu);
  pthread_mutex_unlock(&gate_mu);
}

static void *shutdown_main(void *arg) {
  return (void *)(intptr_t)hvd_shutdown(arg);
}

Test(badinput, calls_while_shutdown_runs) {
  hvd_op_args_t a = args_for("held");
  a.callback = gate_callback;
  hvd_req_t *held;
  cr_assert_eq(hvd_allreduce_ex(ctx, &a, &held), HVD_OK);
  pthread_mutex_lock(&gate_mu);
  while (!gate_entered) pthread_cond_wait(&gate_cv, &gate_mu);
  pthread_mutex_unlock(&gate_mu);

  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, shutdown_main, ctx), 0);
  for (int i = 0;; i++) { /* until hvd_shutdown has begun */
    pthread_mutex_lock(&ctx->mu);
    int stopping = ctx->stopping;
    pthread_mutex_unlock(&ctx->mu);
    if (stopping) break;
    cr_assert_lt(i, 10000, "hvd_shutdown did not begin");
    usleep(1000);
  }
  cap_clear();
  const hvd_status_t sd = HVD_ERR_SHUTDOWN;
  hvd_op_args_t b = args_for("late");
  hvd_req_t *req = NULL;
  int id, r0[] = {0};
  char tl[96];
  snprintf(tl, sizeof tl, "%s/late.json", cap_dir);
  EXPECT(hvd_allreduce_async(ctx, "late", x, y, 8, HVD_FLOAT32, HVD_SUM, &req), sd,
         "late: hvd_shutdown has already begun");
  EXPECT(hvd_allreduce(ctx, "late", x, y, 8, HVD_FLOAT32, HVD_SUM), sd, "hvd_shutdown");
  for (size_t i = 0; i < NOPS; i++) EXPECT(ops[i].fn(ctx, &b, &req), sd, "hvd_shutdown");
  EXPECT(hvd_grouped_allreduce(ctx, &b, 1, &req), sd, "hvd_shutdown");
  EXPECT(hvd_broadcast(ctx, "late", x, 8, HVD_FLOAT32, 0), sd, "hvd_shutdown");
  EXPECT(hvd_barrier(ctx, 0), sd, "hvd_shutdown");
  EXPECT(hvd_join(ctx, 0, NULL), sd, "hvd_shutdown");
  EXPECT(hvd_process_set_create(ctx, r0, 1, &id), sd, "hvd_shutdown");
  EXPECT(hvd_timeline_start(ctx, tl), sd, "hvd_timeline_start: hvd_shutdown has already begun");
  EXPECT(hvd_timeline_stop(ctx), sd, "hvd_timeline_stop: hvd_shutdown has already begun");
  cr_expect_null(req);
  /* reading the context is still fine */
  hvd_stats_t s;
  EXPECT(hvd_get_stats(ctx, &s), HVD_OK, "");
  cr_expect_eq(hvd_rank(ctx), 0);
  cr_expect_eq(hvd_size(ctx), 1);
  cr_expect_eq(hvd_process_set_size(ctx, 0), 1);
  cr_expect_str_eq(hvd_ctx_error(ctx), "");

  pthread_mutex_lock(&gate_mu);
  gate_open = 1;
  pthread_cond_broadcast(&gate_cv);
  pthread_mutex_unlock(&gate_mu);
  void *rc;
  pthread_join(th, &rc);
  ctx = NULL;
  cr_expect_eq((hvd_status_t)(intptr_t)rc, HVD_OK);
  /* requests outlive their context */
  cr_expect_eq(hvd_wait(held), HVD_OK);
  int done = 0;
  cr_expect_eq(hvd_test(held, &done), HVD_OK);
  cr_expect_eq(done, 1);
  cr_expect_str_eq(hvd_req_error(held), "");
  hvd_req_free(held);
}

/* A request submitted just before hvd_shutdown stays usable after it. */
Test(badinput, request_after_shutdown) {
  hvd_req_t *req;
  cr_assert_eq(hvd_allreduce_async(ctx, "before", x, y, 8, HVD_FLOAT32, HVD_SUM, &req), HVD_OK);
  cr_assert_eq(hvd_shutdown(ctx), HVD_OK);
  ctx = NULL;
  hvd_status_t st = hvd_wait(req);
  cr_expect(st == HVD_OK || st == HVD_ERR_SHUTDOWN, "%s", hvd_status_string(st));
  cr_expect(st == HVD_OK || strstr(hvd_req_error(req), "shut down") != NULL, "%s",
            hvd_req_error(req));
  hvd_req_free(req);
}

/* An operation name still in flight is refused until it completes. */
Test(badinput, duplicate_name_in_flight) {
  hvd_op_args_t a = args_for("holder");
  a.callback = gate_callback;
  hvd_req_t *held, *first, *again = (hvd_req_t *)x;
  cr_assert_eq(hvd_allreduce_ex(ctx, &a, &held), HVD_OK);
  pthread_mutex_lock(&gate_mu);
  while (!gate_entered) pthread_cond_wait(&gate_cv, &gate_mu);
  pthread_mutex_unlock(&gate_mu);
  /* the background thread is held: "dup" stays queued */
  cr_assert_eq(hvd_allreduce_async(ctx, "dup", x, y, 8, HVD_FLOAT32, HVD_SUM, &first), HVD_OK);
  EXPECT(hvd_allreduce_async(ctx, "dup", x, y, 8, HVD_FLOAT32, HVD_SUM, &again),
         HVD_ERR_INVALID_PARAM, "a tensor named 'dup' is already in flight on this rank");
  cr_expect_null(again);
  int done = 9;
  EXPECT(hvd_test(first, &done), HVD_IN_PROGRESS, "");
  cr_expect_eq(done, 0);
  void *buf;
  EXPECT(hvd_req_output(first, &buf, NULL), HVD_ERR_INVALID_PARAM,
         "hvd_req_output: invalid parameter: the request has not completed");
  cr_expect_str_eq(hvd_req_error(first), "");
  pthread_mutex_lock(&gate_mu);
  gate_open = 1;
  pthread_cond_broadcast(&gate_cv);
  pthread_mutex_unlock(&gate_mu);
  cr_expect_eq(hvd_wait(first), HVD_OK);
  hvd_req_free(first);
  hvd_req_free(held);
  /* and accepted again once done */
  EXPECT(hvd_allreduce(ctx, "dup", x, y, 8, HVD_FLOAT32, HVD_SUM), HVD_OK, "");
}
