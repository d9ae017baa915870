/*
 * The collective algorithms (collectives/) over the real libfabric transport.
 *
 * Each test forks n ranks (one process each, like tests/unit/test_ofi.c); the test
 * process is the rendezvous: children send their address blobs over socketpairs, get
 * everyone's back, connect, report, and wait for "go" (the barrier the transport
 * contract asks for). Then every rank runs the same battery of collectives on a
 * communicator over all ranks and checks every element against a reference computed
 * in double from values that make any reduction order exact; failures are printed by
 * the child and turn into its exit code.
 *
 * Covered: allreduce ring / recursive doubling / tree for every dtype and op
 * (band/bor on integers), counts 0, n-1, n+1, 1000 and one large count spanning
 * many pipelined chunks, in place and out of place (alternating); broadcast (binomial,
 * scatter + ring allgather, and the AUTO dispatcher) from every root with counts 0, 1,
 * n-1, n+1, 1000 and many chunks; allgatherv (ring, Bruck, AUTO) with zero, single,
 * fewer-than-n, uneven and large uneven counts, in place and out of place;
 * reduce-scatter with uneven and zero counts; alltoallv; barrier.
 * n = 1 (no messages), 2, 3, 4 and 5 over shm, and 3 over tcp;ofi_rxm with a small
 * max_msg_size so that chunks are segmented by the transport.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "collectives/coll.h"
#include "collectives/tags.h"
#include "collectives/comm.h"
#include "collectives/reduce.h"
#include "collectives/reduce_scalar.h"
#include "collectives/select.h"
#include "common/log.h"
#include "transport/transport.h"

#define MAX_RANKS 5
#define BLOB_MAX 1024

typedef struct job {
  int size;
  const char *provider;
  size_t max_msg_size;
} job_t;

#define FAIL(...)                                                                       \
  do {                                                                                  \
    fprintf(stderr, "[rank %d] ", c->rank);                                             \
    fprintf(stderr, __VA_ARGS__);                                                       \
    fprintf(stderr, "\n");                                                              \
    return 1;                                                                           \
  } while (0)
#define COLL_OK(expr)                                                                   \
  do {                                                                                  \
    hvd_status_t rc_ = (expr);                                                          \
    if (rc_ != HVD_OK) FAIL("%s: %s (%s)", #expr, hvd_status_string(rc_), c->tp->err.msg); \
  } while (0)

/* ---- values whose reductions are exact in every dtype ------------------------------- */

static double value(hvd_op_t op, int r, size_t i) {
  switch ((int)op) {
  case HVD_SUM:
    return (double)((int)((i * 7 + (size_t)r * 3) % 11) - 5);
  case HVD_PRODUCT: {
    int k = (int)((i + (size_t)r) % 3);
    return k == 0 ? 2.0 : k == 1 ? 1.0 : -1.0;
  }
  case HVD_OP_BAND:
    return (double)(0x7f & ~(1 << ((i + (size_t)r) % 7)));
  case HVD_OP_BOR:
    return (double)(1 << ((i * 3 + (size_t)r) % 7));
  default: /* min, max */
    return (double)((int)((i * 5 + (size_t)r * 13) % 17) - 8);
  }
}

static double combine(hvd_op_t op, double a, double b) {
  switch ((int)op) {
  case HVD_SUM:
    return a + b;
  case HVD_PRODUCT:
    return a * b;
  case HVD_MIN:
    return a < b ? a : b;
  case HVD_MAX:
    return a > b ? a : b;
  case HVD_OP_BAND:
    return (double)((int64_t)a & (int64_t)b);
  default:
    return (double)((int64_t)a | (int64_t)b);
  }
}

static void put(hvd_dtype_t dt, void *buf, size_t i, double v) {
  switch (dt) {
  case HVD_FLOAT16:
    ((uint16_t *)buf)[i] = hvd_f32_to_f16((float)v);
    break;
  case HVD_BFLOAT16:
    ((uint16_t *)buf)[i] = hvd_f32_to_bf16((float)v);
    break;
  case HVD_FLOAT32:
    ((float *)buf)[i] = (float)v;
    break;
  case HVD_FLOAT64:
    ((double *)buf)[i] = v;
    break;
  case HVD_INT8:
    ((int8_t *)buf)[i] = (int8_t)v;
    break;
  case HVD_UINT8:
    ((uint8_t *)buf)[i] = (uint8_t)(int)v; /* negative values wrap, like the kernels */
    break;
  case HVD_INT32:
    ((int32_t *)buf)[i] = (int32_t)v;
    break;
  default:
    ((int64_t *)buf)[i] = (int64_t)v;
    break;
  }
}

/* For uint8 the reference must reduce the wrapped values. */
static double input(hvd_dtype_t dt, hvd_op_t op, int r, size_t i) {
  double v = value(op, r, i);
  if (dt == HVD_UINT8) v = (double)(uint8_t)(int)v;
  return v;
}

static double reference(hvd_dtype_t dt, hvd_op_t op, int n, size_t i) {
  double acc = input(dt, op, 0, i);
  for (int r = 1; r < n; r++) acc = combine(op, acc, input(dt, op, r, i));
  if (dt == HVD_UINT8 && op == HVD_SUM) acc = (double)(uint8_t)(int)acc;
  if (dt == HVD_UINT8 && op == HVD_PRODUCT) acc = (double)(uint8_t)(int64_t)acc;
  return acc;
}

static int check(hvd_comm_t *c, const char *what, hvd_dtype_t dt, hvd_op_t op,
                 const void *got, size_t count, size_t first) {
  size_t es = hvd_dtype_size(dt);
  unsigned char want[8];
  for (size_t i = 0; i < count; i++) {
    put(dt, want, 0, reference(dt, op, c->size, first + i));
    if (memcmp(want, (const char *)got + i * es, es) != 0)
      FAIL("%s %s op %d count %zu: element %zu wrong (want %g)", what, hvd_dtype_name(dt),
           (int)op, count, first + i, reference(dt, op, c->size, first + i));
  }
  return 0;
}

/* ---- the battery -------------------------------------------------------------------- */

typedef hvd_status_t (*allreduce_fn)(hvd_comm_t *, const void *, void *, size_t, hvd_dtype_t,
                                     hvd_op_t);

static int run_allreduce(hvd_comm_t *c, const char *name, allreduce_fn fn, hvd_dtype_t dt,
                         hvd_op_t op, size_t count, int in_place) {
  size_t es = hvd_dtype_size(dt);
  unsigned char *sb = malloc(count * es + 1), *rb = malloc(count * es + 1);
  if (!sb || !rb) FAIL("malloc");
  for (size_t i = 0; i < count; i++) put(dt, sb, i, input(dt, op, c->rank, i));
  memset(rb, 0x5a, count * es + 1);
  const void *src = in_place ? rb : sb;
  if (in_place) memcpy(rb, sb, count * es);
  COLL_OK(fn(c, src, rb, count, dt, op));
  char what[64];
  snprintf(what, sizeof what, "%s%s", name, in_place ? " in place" : "");
  int bad = check(c, what, dt, op, rb, count, 0);
  if (!bad && rb[count * es] != 0x5a) FAIL("%s wrote past the end", what);
  free(sb);
  free(rb);
  return bad;
}

static int battery_allreduce(hvd_comm_t *c) {
  static const struct {
    const char *name;
    allreduce_fn fn;
  } algos[] = {{"ring", hvd_allreduce_ring}, {"rd", hvd_allreduce_rd}, {"tree", hvd_allreduce_tree}};
  const int n = c->size;
  const size_t counts[] = {0, (size_t)n - 1, (size_t)n + 1, 1000};
  for (size_t a = 0; a < sizeof algos / sizeof algos[0]; a++)
    for (int dt = 0; dt < HVD_DTYPE_COUNT; dt++)
      for (int op = 0; op < HVD_OP_COUNT + 2; op++) {
        if (op == HVD_AVERAGE || !hvd_reduce_supported((hvd_dtype_t)dt, (hvd_op_t)op)) continue;
        for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
          int in_place = (int)((a + (size_t)dt + (size_t)op + k) % 2); /* each way, often */
          if (run_allreduce(c, algos[a].name, algos[a].fn, (hvd_dtype_t)dt, (hvd_op_t)op,
                            counts[k], in_place))
            return 1;
        }
      }
  /* Large: several rounds of HVD_COLL_SLOTS chunks per step. */
  size_t big = (size_t)n * 400000 + 3; /* float32: 7 chunks per ring block */
  for (size_t a = 0; a < sizeof algos / sizeof algos[0]; a++) {
    if (run_allreduce(c, algos[a].name, algos[a].fn, HVD_FLOAT32, HVD_SUM, big, a == 0))
      return 1;
    if (run_allreduce(c, algos[a].name, algos[a].fn, HVD_FLOAT16, HVD_MAX, big, a != 0))
      return 1;
  }
  return 0;
}

typedef hvd_status_t (*bcast_fn)(hvd_comm_t *, void *, size_t, hvd_dtype_t, int);
static hvd_status_t bcast_auto(hvd_comm_t *c, void *buf, size_t count, hvd_dtype_t dt, int root) {
  return hvd_coll_broadcast(c, HVD_ALGO_AUTO, 0, buf, count, dt, root);
}

static int battery_bcast(hvd_comm_t *c) {
  static const struct {
    const char *name;
    bcast_fn fn;
  } algos[] = {{"binomial", hvd_broadcast_binomial},
               {"scatter_ring", hvd_broadcast_scatter_ring},
               {"auto", bcast_auto}};
  const int n = c->size;
  /* 0, 1, fewer than n (empty blocks), uneven blocks, many chunks per block */
  const size_t counts[] = {0, 1, (size_t)n - 1, (size_t)n + 1, 1000, 2000003};
  for (size_t a = 0; a < sizeof algos / sizeof algos[0]; a++)
    for (int root = 0; root < n; root++)
      for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
        size_t count = counts[k];
        int32_t *buf = malloc(count * 4 + 4);
        if (!buf) FAIL("malloc");
        for (size_t i = 0; i <= count; i++)
          buf[i] = c->rank == root && i < count ? (int32_t)(i * 31 + (size_t)root) : -1;
        COLL_OK(algos[a].fn(c, buf, count, HVD_INT32, root));
        for (size_t i = 0; i < count; i++)
          if (buf[i] != (int32_t)(i * 31 + (size_t)root))
            FAIL("broadcast %s root %d count %zu: element %zu is %d", algos[a].name, root,
                 count, i, buf[i]);
        if (buf[count] != -1)
          FAIL("broadcast %s root %d count %zu: wrote past the end", algos[a].name, root, count);
        free(buf);
      }
  return 0;
}

typedef hvd_status_t (*allgatherv_fn)(hvd_comm_t *, const void *, void *, const size_t *,
                                      hvd_dtype_t);
static hvd_status_t allgatherv_auto(hvd_comm_t *c, const void *sb, void *rb,
                                    const size_t *counts, hvd_dtype_t dt) {
  return hvd_coll_allgatherv(c, HVD_ALGO_AUTO, 0, sb, rb, counts, dt);
}

static int battery_allgatherv(hvd_comm_t *c) {
  static const struct {
    const char *name;
    allgatherv_fn fn;
  } algos[] = {{"ring", hvd_allgatherv_ring}, {"bruck", hvd_allgatherv_bruck},
               {"auto", allgatherv_auto}};
  const int n = c->size;
  enum { SHAPES = 6 };
  for (size_t a = 0; a < sizeof algos / sizeof algos[0]; a++)
    for (int shape = 0; shape < SHAPES; shape++) {
      size_t counts[MAX_RANKS], total = 0, mine_off = 0;
      for (int j = 0; j < n; j++) {
        counts[j] = shape == 0   ? (size_t)(j * 3 % 5)             /* some zero */
                    : shape == 1 ? 0                                /* all empty */
                    : shape == 2 ? 1                                /* one each */
                    : shape == 3 ? (size_t)(j == n - 1)             /* fewer than n */
                    : shape == 4 ? 1000 + (size_t)j * 13            /* uneven */
                                 : 300000 + (size_t)j * 7;          /* large, uneven */
        if (j < c->rank) mine_off += counts[j];
        total += counts[j];
      }
      double *rb = malloc(total * 8 + 8), *sb = malloc(counts[c->rank] * 8 + 8);
      if (!rb || !sb) FAIL("malloc");
      for (size_t i = 0; i < counts[c->rank]; i++) sb[i] = c->rank * 1e6 + (double)i;
      rb[total] = -7.0;
      int in_place = (shape + (int)a) % 2;
      if (in_place) memcpy(rb + mine_off, sb, counts[c->rank] * 8);
      COLL_OK(algos[a].fn(c, in_place ? rb + mine_off : sb, rb, counts, HVD_FLOAT64));
      size_t off = 0;
      for (int j = 0; j < n; j++)
        for (size_t i = 0; i < counts[j]; i++, off++)
          if (rb[off] != j * 1e6 + (double)i)
            FAIL("allgatherv %s shape %d%s: part of %d element %zu is %g", algos[a].name,
                 shape, in_place ? " in place" : "", j, i, rb[off]);
      if (rb[total] != -7.0) FAIL("allgatherv %s shape %d wrote past the end", algos[a].name, shape);
      free(rb);
      free(sb);
    }
  return 0;
}

static int battery_reducescatter(hvd_comm_t *c) {
  const int n = c->size;
  for (int shape = 0; shape < 3; shape++) {
    size_t counts[MAX_RANKS], total = 0, mine_off = 0;
    for (int j = 0; j < n; j++) {
      counts[j] = shape == 0 ? (size_t)(j % 2)                  /* zeros and ones */
                  : shape == 1 ? 1000 + (size_t)j
                               : 400000 + (size_t)j * 3;         /* many chunks */
      if (j < c->rank) mine_off += counts[j];
      total += counts[j];
    }
    hvd_op_t op = shape == 1 ? HVD_MIN : HVD_SUM;
    hvd_dtype_t dt = shape == 1 ? HVD_INT32 : HVD_FLOAT32;
    size_t es = hvd_dtype_size(dt);
    unsigned char *sb = malloc(total * es + 1), *rb = malloc(counts[c->rank] * es + 1);
    if (!sb || !rb) FAIL("malloc");
    for (size_t i = 0; i < total; i++) put(dt, sb, i, input(dt, op, c->rank, i));
    int in_place = shape == 1;
    void *out = in_place ? sb + mine_off * es : rb;
    COLL_OK(hvd_reducescatter_ring(c, sb, out, counts, dt, op));
    if (check(c, "reducescatter", dt, op, out, counts[c->rank], mine_off)) return 1;
    free(sb);
    free(rb);
  }
  return 0;
}

static int battery_alltoallv(hvd_comm_t *c) {
  const int n = c->size, r = c->rank;
  for (int scale = 1; scale <= 100001; scale += 100000) {
    size_t sc[MAX_RANKS], sd[MAX_RANKS], rc[MAX_RANKS], rd[MAX_RANKS], st = 0, rt = 0;
    for (int j = 0; j < n; j++) {
      sc[j] = (size_t)((r + 2 * j) % 4) * (size_t)scale; /* to j */
      rc[j] = (size_t)((j + 2 * r) % 4) * (size_t)scale; /* from j: j's sc[r] */
      sd[j] = st;
      rd[j] = rt;
      st += sc[j];
      rt += rc[j];
    }
    int64_t *sb = malloc(st * 8 + 8), *rb = malloc(rt * 8 + 8);
    if (!sb || !rb) FAIL("malloc");
    for (int j = 0; j < n; j++)
      for (size_t i = 0; i < sc[j]; i++) sb[sd[j] + i] = r * 1000000000ll + j * 1000000ll + (int64_t)i;
    COLL_OK(hvd_alltoallv_pairwise(c, sb, sc, sd, rb, rc, rd, HVD_INT64));
    for (int j = 0; j < n; j++)
      for (size_t i = 0; i < rc[j]; i++)
        if (rb[rd[j] + i] != j * 1000000000ll + r * 1000000ll + (int64_t)i)
          FAIL("alltoallv: from %d element %zu wrong", j, i);
    free(sb);
    free(rb);
  }
  return 0;
}

static int body(hvd_comm_t *c) {
  for (int i = 0; i < 3; i++) COLL_OK(hvd_barrier_dissemination(c));
  if (battery_allreduce(c) || battery_bcast(c) || battery_allgatherv(c) ||
      battery_reducescatter(c) || battery_alltoallv(c))
    return 1;
  COLL_OK(hvd_barrier_dissemination(c));
  return 0;
}

/* ---- one job: fork, rendezvous, run -------------------------------------------------- */

static int write_all(int fd, const void *buf, size_t n) {
  const char *p = buf;
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}
static int read_all(int fd, void *buf, size_t n) {
  char *p = buf;
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

static int child_main(const job_t *job, int rank, int fd) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  hvd_ofi_params_t params = {.rank = rank, .size = job->size, .provider = job->provider,
                             .max_msg_size = job->max_msg_size};
  hvd_transport_t *tp = NULL;
  hvd_err_t err = {{0}};
  if (hvd_ofi_create(&params, &tp, &err) != HVD_OK) {
    fprintf(stderr, "[rank %d] hvd_ofi_create: %s\n", rank, err.msg);
    return 90;
  }
  char mine[BLOB_MAX];
  size_t len = sizeof mine;
  if (tp->ops->get_address(tp, mine, &len) != HVD_OK) return 91;
  uint32_t len32 = (uint32_t)len;
  if (write_all(fd, &len32, 4) || write_all(fd, mine, len)) return 92;
  static char blobs[MAX_RANKS][BLOB_MAX];
  const void *bp[MAX_RANKS];
  size_t lens[MAX_RANKS];
  int same_host[MAX_RANKS];
  for (int r = 0; r < job->size; r++) {
    if (read_all(fd, &len32, 4) || len32 > BLOB_MAX || read_all(fd, blobs[r], len32)) return 93;
    bp[r] = blobs[r];
    lens[r] = len32;
    same_host[r] = 1;
  }
  hvd_status_t st = tp->ops->connect(tp, bp, lens, same_host);
  if (st != HVD_OK) fprintf(stderr, "[rank %d] connect: %s\n", rank, tp->err.msg);
  char report = st == HVD_OK ? 'o' : 'f', go = 0;
  if (write_all(fd, &report, 1) || read_all(fd, &go, 1) || go != 'g') return 94;

  /* Open connections in a fixed order, as the runtime does (tcp;ofi_rxm race). */
  hvd_err_t werr;
  if (hvd_transport_wireup(tp, hvd_tag_make(HVD_TAG_KIND_CONTROL, 0xfff, 0, 7), &werr) != HVD_OK) {
    fprintf(stderr, "[rank %d] wireup: %s\n", rank, werr.msg);
    return 96;
  }
  hvd_comm_t *c = calloc(1, sizeof *c);
  if (c == NULL) return 95;
  c->tp = tp;
  c->rank = rank;
  c->size = job->size;
  c->id = 1;
  int rc = body(c);
  tp->ops->destroy(tp);
  hvd_comm_release(c);
  free(c);
  return rc;
}

static void run_job(const job_t *job) {
  pid_t pids[MAX_RANKS];
  int fds[MAX_RANKS];
  for (int r = 0; r < job->size; r++) {
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fflush(NULL);
    pids[r] = fork();
    cr_assert(pids[r] >= 0);
    if (pids[r] == 0) {
      close(sv[0]);
      for (int q = 0; q < r; q++) close(fds[q]);
      _exit(child_main(job, r, sv[1]));
    }
    close(sv[1]);
    fds[r] = sv[0];
  }
  static char blobs[MAX_RANKS][BLOB_MAX];
  uint32_t lens[MAX_RANKS];
  int ok = 1;
  for (int r = 0; r < job->size && ok; r++)
    ok = read_all(fds[r], &lens[r], 4) == 0 && lens[r] <= BLOB_MAX &&
         read_all(fds[r], blobs[r], lens[r]) == 0;
  for (int r = 0; r < job->size && ok; r++)
    for (int q = 0; q < job->size && ok; q++)
      ok = write_all(fds[r], &lens[q], 4) == 0 && write_all(fds[r], blobs[q], lens[q]) == 0;
  int connected = ok;
  for (int r = 0; r < job->size && ok; r++) {
    char ch = 0;
    ok = read_all(fds[r], &ch, 1) == 0;
    if (ch != 'o') connected = 0;
  }
  char go = ok && connected ? 'g' : 'x';
  for (int r = 0; r < job->size; r++) {
    if (ok) write_all(fds[r], &go, 1);
    close(fds[r]);
  }
  for (int r = 0; r < job->size; r++) {
    int status = 0;
    while (waitpid(pids[r], &status, 0) < 0 && errno == EINTR) {
    }
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "rank %d: %s %d (see stderr)", r,
              WIFEXITED(status) ? "exit code" : "killed by signal",
              WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
  }
  cr_assert(ok, "address exchange with the children failed");
}

#define JOB_TEST(suite, name, n, prov, maxmsg)                                          \
  Test(suite, name, .timeout = 120) {                                                   \
    job_t job = {.size = (n), .provider = (prov), .max_msg_size = (maxmsg)};            \
    run_job(&job);                                                                      \
  }

JOB_TEST(coll_shm, one_rank, 1, NULL, 0)
JOB_TEST(coll_shm, two_ranks, 2, NULL, 0)
JOB_TEST(coll_shm, three_ranks, 3, NULL, 0)
JOB_TEST(coll_shm, four_ranks, 4, NULL, 0)
JOB_TEST(coll_shm, five_ranks, 5, NULL, 0)
JOB_TEST(coll_tcp, three_ranks_segmented, 3, "tcp", 65536)
