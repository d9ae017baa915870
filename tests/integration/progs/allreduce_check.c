/*
 * A rank program for integration tests: allreduces vectors of many counts and
 * dtypes and checks every element against a reference, then checks that all ranks
 * hold identical bytes. Inputs are small integers, so any summation order is exact.
 *
 *   allreduce_check [--counts LIST] [--dtypes LIST] [--ops LIST] [--iters K]
 *                   [--inplace] [--die-rank R --die-status S --die-after K]
 *                   [--attack-rendezvous] [--sleep-before-ms MS]
 * LIST is comma-separated; a count may be "N-1", "N" or "N+1" (N = ranks).
 * Prints "rank R: ALL OK (...)" and exits 0 on success; exits 1 on any mismatch.
 */
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "hvd.h"

static double expected_input(size_t i, int rank) {
  return (double)((long)((i * 37u + (size_t)rank * 11u) % 23u) - 11);
}

static void store(void *buf, size_t i, hvd_dtype_t dt, double v) {
  switch (dt) {
  case HVD_FLOAT32: ((float *)buf)[i] = (float)v; break;
  case HVD_FLOAT64: ((double *)buf)[i] = v; break;
  case HVD_INT32: ((int32_t *)buf)[i] = (int32_t)v; break;
  case HVD_INT64: ((int64_t *)buf)[i] = (int64_t)v; break;
  case HVD_INT8: ((int8_t *)buf)[i] = (int8_t)v; break;
  case HVD_UINT8: ((uint8_t *)buf)[i] = (uint8_t)v; break;
  default: abort();
  }
}

static double load(const void *buf, size_t i, hvd_dtype_t dt) {
  switch (dt) {
  case HVD_FLOAT32: return ((const float *)buf)[i];
  case HVD_FLOAT64: return ((const double *)buf)[i];
  case HVD_INT32: return ((const int32_t *)buf)[i];
  case HVD_INT64: return (double)((const int64_t *)buf)[i];
  case HVD_INT8: return ((const int8_t *)buf)[i];
  case HVD_UINT8: return ((const uint8_t *)buf)[i];
  default: abort();
  }
}

static int parse_dtype(const char *s, hvd_dtype_t *out) {
  for (int d = 0; d < HVD_DTYPE_COUNT; d++)
    if (strcmp(s, hvd_dtype_name((hvd_dtype_t)d)) == 0) {
      *out = (hvd_dtype_t)d;
      return 0;
    }
  return -1;
}

static int parse_op(const char *s, hvd_op_t *out) {
  for (int o = 0; o < HVD_OP_COUNT; o++)
    if (strcmp(s, hvd_op_name((hvd_op_t)o)) == 0) {
      *out = (hvd_op_t)o;
      return 0;
    }
  return -1;
}

static double reduce_ref(hvd_op_t op, size_t i, int n) {
  double acc = expected_input(i, 0);
  for (int r = 1; r < n; r++) {
    double v = expected_input(i, r);
    switch (op) {
    case HVD_SUM: case HVD_AVERAGE: acc += v; break;
    case HVD_MIN: acc = v < acc ? v : acc; break;
    case HVD_MAX: acc = v > acc ? v : acc; break;
    case HVD_PRODUCT: acc *= v; break;
    default: abort();
    }
  }
  if (op == HVD_AVERAGE) acc = trunc(acc / n);
  return acc;
}

static uint64_t fnv1a(const void *p, size_t n) {
  const unsigned char *b = p;
  uint64_t h = 14695981039346656037ull;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

/* Every rank contributes its hash in its own slot of an int64 vector; a sum
 * allreduce then gives everyone every hash (integer addition of zeros is exact). */
static int check_identical(hvd_ctx_t *ctx, uint64_t h, const char *what) {
  int n = hvd_size(ctx), me = hvd_rank(ctx);
  int64_t *v = calloc((size_t)n, sizeof *v);
  v[me] = (int64_t)(h >> 1);
  hvd_status_t rc = hvd_allreduce(ctx, "hash", v, v, (size_t)n, HVD_INT64, HVD_SUM);
  int bad = rc != HVD_OK;
  for (int r = 0; r < n && !bad; r++)
    if (v[r] != v[me]) {
      fprintf(stderr, "rank %d: %s: bytes differ from rank %d\n", me, what, r);
      bad = 1;
    }
  free(v);
  return bad;
}

static void attack_rendezvous(int rank) {
  const char *addr = getenv("HVD_RENDEZVOUS_ADDR"), *port = getenv("HVD_RENDEZVOUS_PORT");
  if (addr == NULL || port == NULL) return;
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port))};
  inet_pton(AF_INET, addr, &sa.sin_addr);
  /* 1: a well-formed HELLO with a wrong token. */
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(s, (struct sockaddr *)&sa, sizeof sa) == 0) {
    unsigned char f[12 + 4 + 32 + 8];
    uint32_t magic = 0x52445648u, len = 4 + 32 + 8;
    uint16_t ver = 1, type = 1;
    memcpy(f, &magic, 4);
    memcpy(f + 4, &ver, 2);
    memcpy(f + 6, &type, 2);
    memcpy(f + 8, &len, 4);
    uint32_t tl = 32;
    memcpy(f + 12, &tl, 4);
    memset(f + 16, 'f', 32);
    uint32_t r = (uint32_t)rank, sz = 2;
    memcpy(f + 48, &r, 4);
    memcpy(f + 52, &sz, 4);
    (void)!write(s, f, sizeof f);
    char buf[256];
    (void)!read(s, buf, sizeof buf); /* the server answers and closes */
  }
  close(s);
  /* 2: random bytes. */
  s = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(s, (struct sockaddr *)&sa, sizeof sa) == 0) {
    unsigned char junk[4096];
    srand(12345);
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (unsigned char)rand();
    (void)!write(s, junk, sizeof junk);
    char buf[256];
    (void)!read(s, buf, sizeof buf);
  }
  close(s);
  printf("rank %d: sent a wrong-token HELLO and random bytes to the rendezvous\n", rank);
  fflush(stdout);
}

int main(int argc, char **argv) {
  const char *counts = "0,1,7,N-1,1000", *dtypes = "float32,float64,int32,int64", *ops = "sum";
  int iters = 1, inplace = 0, die_rank = -1, die_status = 0, die_after = 0, attack = 0;
  int sleep_ms = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--counts") && i + 1 < argc) counts = argv[++i];
    else if (!strcmp(argv[i], "--dtypes") && i + 1 < argc) dtypes = argv[++i];
    else if (!strcmp(argv[i], "--ops") && i + 1 < argc) ops = argv[++i];
    else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--inplace")) inplace = 1;
    else if (!strcmp(argv[i], "--die-rank") && i + 1 < argc) die_rank = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--die-status") && i + 1 < argc) die_status = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--die-after") && i + 1 < argc) die_after = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--attack-rendezvous")) attack = 1;
    else if (!strcmp(argv[i], "--sleep-before-ms") && i + 1 < argc) sleep_ms = atoi(argv[++i]);
    else {
      fprintf(stderr, "allreduce_check: unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  if (attack && getenv("HVD_RANK") && atoi(getenv("HVD_RANK")) == 0)
    attack_rendezvous(0);
  if (sleep_ms > 0) usleep((useconds_t)sleep_ms * 1000);

  hvd_ctx_t *ctx;
  hvd_status_t rc = hvd_init(&ctx);
  if (rc != HVD_OK) {
    fprintf(stderr, "hvd_init failed: %s\n", hvd_status_string(rc));
    return 1;
  }
  int n = hvd_size(ctx), me = hvd_rank(ctx);
  int failures = 0, checked = 0, done_ops = 0;
  for (int it = 0; it < iters; it++) {
    char *cl = strdup(counts);
    for (char *cs = strtok(cl, ","); cs; cs = strtok(NULL, ",")) {
      size_t count;
      if (!strcmp(cs, "N-1")) count = (size_t)(n - 1);
      else if (!strcmp(cs, "N")) count = (size_t)n;
      else if (!strcmp(cs, "N+1")) count = (size_t)n + 1;
      else count = (size_t)strtoull(cs, NULL, 10);
      char *dl = strdup(dtypes), *dsave;
      for (char *ds = strtok_r(dl, ",", &dsave); ds; ds = strtok_r(NULL, ",", &dsave)) {
        hvd_dtype_t dt;
        if (parse_dtype(ds, &dt) != 0) {
          fprintf(stderr, "unknown dtype %s\n", ds);
          return 2;
        }
        char *ol = strdup(ops), *osave;
        for (char *os = strtok_r(ol, ",", &osave); os; os = strtok_r(NULL, ",", &osave)) {
          hvd_op_t op;
          if (parse_op(os, &op) != 0) {
            fprintf(stderr, "unknown op %s\n", os);
            return 2;
          }
          if (die_rank == me && done_ops == die_after) {
            printf("rank %d: exiting with status %d on purpose\n", me, die_status);
            fflush(stdout);
            _exit(die_status);
          }
          size_t es = hvd_dtype_size(dt);
          char *in = malloc(count * es + 1), *out = inplace ? in : malloc(count * es + 1);
          for (size_t i = 0; i < count; i++) store(in, i, dt, expected_input(i, me));
          if (!inplace) memset(out, 0x5a, count * es);
          char name[128];
          snprintf(name, sizeof name, "check.%s.%s.%zu.%d", ds, os, count, it);
          rc = hvd_allreduce(ctx, name, in, out, count, dt, op);
          done_ops++;
          if (rc != HVD_OK) {
            fprintf(stderr, "rank %d: allreduce %s failed: %s: %s\n", me, name,
                    hvd_status_string(rc), hvd_ctx_error(ctx));
            hvd_shutdown(ctx);
            if (!inplace) free(out);
            free(in);
            free(ol);
            free(dl);
            free(cl);
            return 1;
          }
          size_t wrong = 0;
          for (size_t i = 0; i < count; i++) {
            double want = reduce_ref(op, i, n), got = load(out, i, dt);
            if (got != want) {
              if (wrong < 5)
                fprintf(stderr, "rank %d: %s[%zu] = %g, expected %g\n", me, name, i, got, want);
              wrong++;
            }
          }
          if (wrong) {
            fprintf(stderr, "rank %d: %s: %zu of %zu elements wrong\n", me, name, wrong, count);
            failures++;
          }
          failures += check_identical(ctx, fnv1a(out, count * es), name);
          checked++;
          if (!inplace) free(out);
          free(in);
        }
        free(ol);
      }
      free(dl);
    }
    free(cl);
  }
  rc = hvd_shutdown(ctx);
  if (rc != HVD_OK) {
    fprintf(stderr, "rank %d: hvd_shutdown: %s\n", me, hvd_status_string(rc));
    failures++;
  }
  if (failures) {
    printf("rank %d: FAILED %d of %d checks\n", me, failures, checked);
    return 1;
  }
  printf("rank %d: ALL OK (%d checks, %d ranks)\n", me, checked, n);
  return 0;
}
