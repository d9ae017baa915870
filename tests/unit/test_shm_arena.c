/*
 * The same-host shared-memory arena and its allreduce, in real forked processes
 * (no transport: the algorithm only needs the arena). Each child creates its segment,
 * the children meet at a barrier in an anonymous shared mapping, attach, and run
 * allreduces that are checked element by element and for identical bytes everywhere,
 * with each kind of slot stores (cached, streaming, chosen by measurement).
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "collectives/coll.h"
#include "collectives/reduce.h"
#include "transport/shm_arena.h"
#include "transport/transport.h"

typedef struct shared {
  atomic_int arrived[5];
  atomic_int entered[64]; /* barrier_rounds(): members that reached round r's barrier */
  atomic_int cma_ok;
  uint64_t hash[8][64];
} shared_t;

static shared_t *sh;

static void barrier(int n, int phase) {
  atomic_fetch_add(&sh->arrived[phase], 1);
  while (atomic_load(&sh->arrived[phase]) < n) usleep(100);
}

static uint64_t fnv(const void *p, size_t n) {
  const unsigned char *b = p;
  uint64_t h = 14695981039346656037ull;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

static double val(size_t i, int r) { return (double)((long)((i * 5 + (size_t)r * 7) % 11) - 5); }

static void put(void *buf, size_t i, hvd_dtype_t dt, double v) {
  if (dt == HVD_FLOAT32) ((float *)buf)[i] = (float)v;
  else ((int64_t *)buf)[i] = (int64_t)v;
}
static double get(const void *buf, size_t i, hvd_dtype_t dt) {
  return dt == HVD_FLOAT32 ? ((const float *)buf)[i] : (double)((const int64_t *)buf)[i];
}

/* Broadcast, allgatherv and reduce-scatter through the arena (shm_coll.c), each
 * followed by a small allreduce so that algorithms alternate on the slots; sizes
 * from empty to several slots, uneven and empty blocks, in place and not. Returns
 * the number of wrong values. */
static int other_collectives(hvd_comm_t *c, int rank, int n, size_t slot) {
  const hvd_dtype_t dts[] = {HVD_FLOAT32, HVD_INT64};
  int bad = 0;
  for (size_t di = 0; di < 2; di++) {
    const hvd_dtype_t dt = dts[di];
    const size_t es = hvd_dtype_size(dt), se = slot / es;
    const size_t sizes[] = {0, 1, (size_t)n + 1, se - 1, se + 3, 3 * se + 7, 40000};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
      const size_t cnt = sizes[si];
      size_t counts[8], total = 0, off = 0;
      for (int j = 0; j < n; j++) {
        counts[j] = (j + (int)si) % 3 == 0 ? 0 : cnt / (size_t)(j + 1) + (size_t)j;
        total += counts[j];
      }
      for (int j = 0; j < rank; j++) off += counts[j];
      const size_t room = (total > cnt ? total : cnt) * es + 8;
      char *buf = malloc(room), *in = malloc(room);
      float tick = 1;
      if (hvd_barrier_shm(c) != HVD_OK) return bad + 1000;
      /* broadcast from every root */
      for (int root = 0; root < n; root++) {
        for (size_t i = 0; i < cnt; i++) put(buf, i, dt, rank == root ? val(i, root) : 99);
        if (hvd_broadcast_shm(c, buf, cnt, dt, root) != HVD_OK) return bad + 1000;
        for (size_t i = 0; i < cnt; i++) bad += get(buf, i, dt) != val(i, root);
        if (hvd_allreduce_shm(c, &tick, &tick, 1, HVD_FLOAT32, HVD_SUM) != HVD_OK) return bad + 1000;
      }
      /* allgatherv, out of place then in place */
      for (int inplace = 0; inplace < 2; inplace++) {
        for (size_t i = 0; i < total; i++) put(buf, i, dt, 99);
        char *send = inplace ? buf + off * es : in;
        for (size_t i = 0; i < counts[rank]; i++) put(send, i, dt, val(off + i, rank));
        if (hvd_allgatherv_shm(c, send, buf, counts, dt) != HVD_OK) return bad + 1000;
        size_t at = 0;
        for (int j = 0; j < n; j++)
          for (size_t i = 0; i < counts[j]; i++, at++) bad += get(buf, at, dt) != val(at, j);
        if (hvd_allreduce_shm(c, &tick, &tick, 1, HVD_FLOAT32, HVD_SUM) != HVD_OK) return bad + 1000;
      }
      /* reduce-scatter (sum), out of place then in place */
      for (int inplace = 0; inplace < 2; inplace++) {
        for (size_t i = 0; i < total; i++) put(in, i, dt, val(i, rank));
        char *out = inplace ? in + off * es : buf;
        if (hvd_reducescatter_shm(c, in, out, counts, dt, HVD_SUM) != HVD_OK) return bad + 1000;
        for (size_t i = 0; i < counts[rank]; i++) {
          double want = 0;
          for (int q = 0; q < n; q++) want += val(off + i, q);
          bad += get(out, i, dt) != want;
        }
        if (hvd_allreduce_shm(c, &tick, &tick, 1, HVD_FLOAT32, HVD_SUM) != HVD_OK) return bad + 1000;
      }
      free(buf);
      free(in);
    }
  }
  return bad;
}

/* hvd_allreduce_shm_parts: tensors of uneven sizes (empty ones too) with a part
 * without input on the last member (zeros; the vector's last sixth, inside that
 * member's own sub-slice, which it reduces from its inputs when there is no
 * prescale) and one without output, one in place, with and without a prescale, and
 * a postscale; totals below and above the one-hand-off size and several slots. */
static int parts_allreduce(hvd_comm_t *c, int rank, int n, size_t slot) {
  const size_t totals[] = {5, 300, slot / 4 * 2 + 9};
  int bad = 0;
  for (int pi = 0; pi < 2; pi++) {
    const double pre = pi == 0 ? 2.0 : 1.0;
    for (size_t ti = 0; ti < 3; ti++) {
      enum { NP = 5 };
      size_t cnt[NP] = {totals[ti] / 2, 0, totals[ti] / 3, totals[ti] / 6 + 1, 2};
      float *in[NP], *out[NP];
      hvd_shm_part_t parts[NP];
      for (int i = 0; i < NP; i++) {
        in[i] = malloc(cnt[i] * sizeof(float) + 4);
        out[i] = i == 2 ? in[i] : malloc(cnt[i] * sizeof(float) + 4); /* 2: in place */
        for (size_t x = 0; x < cnt[i]; x++) in[i][x] = (float)val(x + (size_t)i, rank);
        parts[i] = (hvd_shm_part_t){.in = i == 3 && rank == n - 1 ? NULL : in[i],
                                    .out = i == 4 ? NULL : out[i], .count = cnt[i]};
      }
      if (hvd_allreduce_shm_parts(c, parts, NP, HVD_FLOAT32, HVD_SUM, pre, 0.25) != HVD_OK)
        return bad + 1000;
      for (int i = 0; i < NP; i++) {
        for (size_t x = 0; i != 4 && x < cnt[i]; x++) {
          double want = 0;
          for (int q = 0; q < n; q++) want += i == 3 && q == n - 1 ? 0 : pre * val(x + (size_t)i, q);
          bad += out[i][x] != (float)(want * 0.25);
        }
        if (out[i] != in[i]) free(out[i]);
        free(in[i]);
      }
    }
  }
  return bad;
}

/* Child: returns the exit status (0 = all good). */
/* hvd_barrier_shm: nobody leaves round r before every member has entered it; each round
 * a different member arrives last, 2 ms late (member 0 too, which releases the others
 * when ranks outnumber cores). Both forms of the barrier, whatever this machine's core
 * count: the second half of the rounds flips the arena's oversubscribed flag. Returns
 * the number of early leaves. */
static int barrier_rounds(hvd_comm_t *c, int rank, int n) {
  int bad = 0;
  const int natural = c->arena->oversubscribed;
  for (int r = 0; r < 64; r++) {
    c->arena->oversubscribed = r < 32 ? natural : !natural;
    if (r % n == rank) usleep(2000);
    atomic_fetch_add(&sh->entered[r], 1);
    if (hvd_barrier_shm(c) != HVD_OK) return bad + 1000;
    int in = atomic_load(&sh->entered[r]);
    if (in != n) {
      fprintf(stderr, "rank %d of %d left barrier %d when %d had entered it\n", rank, n, r, in);
      bad++;
    }
  }
  c->arena->oversubscribed = natural;
  return bad;
}

static int child(int rank, int n, size_t slot, int stores, char tag[17]) {
  int ranks[8];
  for (int i = 0; i < n; i++) ranks[i] = i;
  hvd_arena_t *a;
  hvd_err_t err;
  if (hvd_arena_create(tag, 0, rank, ranks, n, slot, &a, &err) != HVD_OK) return 10;
  barrier(n, 0);
  if (hvd_arena_attach(a, tag, 0, &err) != HVD_OK) return 11;
  barrier(n, 1);
  hvd_arena_unlink(a);
  a->stores = stores;
  hvd_comm_t c = {.rank = rank, .size = n, .arena = a};
  const size_t counts[] = {0, 1, (size_t)n - 1, (size_t)n + 1, 100003, slot / 4 * 3 + 5};
  const hvd_dtype_t dts[] = {HVD_FLOAT32, HVD_INT64, HVD_FLOAT64};
  const hvd_op_t ops[] = {HVD_SUM, HVD_MAX};
  int k = 0, bad = barrier_rounds(&c, rank, n);
  for (size_t ci = 0; ci < sizeof counts / sizeof counts[0]; ci++)
    for (size_t di = 0; di < 3; di++)
      for (size_t oi = 0; oi < 2; oi++, k++) {
        size_t cnt = counts[ci];
        hvd_dtype_t dt = dts[di];
        size_t es = hvd_dtype_size(dt);
        double *ref = malloc((cnt + 1) * sizeof *ref);
        char *in = malloc(cnt * es + 1), *out = malloc(cnt * es + 1);
        for (size_t i = 0; i < cnt; i++) {
          double v = val(i, rank);
          if (dt == HVD_FLOAT32) ((float *)in)[i] = (float)v;
          else if (dt == HVD_INT64) ((int64_t *)in)[i] = (int64_t)v;
          else ((double *)in)[i] = v;
          double r = val(i, 0);
          for (int q = 1; q < n; q++) r = ops[oi] == HVD_SUM ? r + val(i, q) : (val(i, q) > r ? val(i, q) : r);
          ref[i] = r;
        }
        hvd_status_t rc = hvd_allreduce_shm(&c, in, out, cnt, dt, ops[oi]);
        if (rc != HVD_OK) bad++;
        for (size_t i = 0; i < cnt && !bad; i++) {
          double got = dt == HVD_FLOAT32 ? ((float *)out)[i]
                       : dt == HVD_INT64 ? (double)((int64_t *)out)[i]
                                         : ((double *)out)[i];
          if (got != ref[i]) {
            fprintf(stderr, "rank %d: count %zu dtype %d op %d: [%zu] = %g, want %g\n", rank, cnt,
                    (int)dt, (int)ops[oi], i, got, ref[i]);
            bad++;
          }
        }
        sh->hash[rank][k] = fnv(out, cnt * es);
        free(ref);
        free(in);
        free(out);
      }
  int other = other_collectives(&c, rank, n, slot) + parts_allreduce(&c, rank, n, slot);
  /* Again with cross-memory reads (large allgathers read the owners' buffers), if
   * every member may use them. */
  atomic_fetch_add(&sh->cma_ok, hvd_arena_probe_cma(a));
  barrier(n, 4);
  a->cma = atomic_load(&sh->cma_ok) == n;
  if (!a->cma) fprintf(stderr, "rank %d: process_vm_readv not permitted here\n", rank);
  else other += other_collectives(&c, rank, n, slot);
  if (other) fprintf(stderr, "rank %d of %d, slot %zu: %d wrong values in broadcast, allgatherv, "
                     "reduce-scatter or the allreduce of parts\n", rank, n, slot, other);
  bad += other;
  barrier(n, 2);
  for (int q = 0; q < n; q++)
    for (int j = 0; j < k; j++)
      if (sh->hash[q][j] != sh->hash[0][j]) bad++;
  hvd_arena_destroy(a);
  return bad ? 1 : 0;
}

static void run(int n, size_t slot, int stores) {
  sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  cr_assert(sh != MAP_FAILED);
  memset(sh, 0, sizeof *sh);
  char tag[17];
  snprintf(tag, sizeof tag, "t%dp%d", n, (int)getpid());
  pid_t pids[8];
  for (int r = 0; r < n; r++) {
    pids[r] = fork();
    if (pids[r] == 0) _exit(child(r, n, slot, stores, tag));
  }
  for (int r = 0; r < n; r++) {
    int st;
    waitpid(pids[r], &st, 0);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "rank %d of %d: status %d", r, n, st);
  }
  munmap(sh, sizeof *sh);
}

Test(shm_arena, np2, .timeout = 60) { run(2, 4096, HVD_SHM_STORES_AUTO); }
Test(shm_arena, np3, .timeout = 60) { run(3, 65536, HVD_SHM_STORES_AUTO); }
Test(shm_arena, np4_oversubscribed, .timeout = 120) { run(4, 4096, HVD_SHM_STORES_AUTO); }
Test(shm_arena, np2_large_slot, .timeout = 60) { run(2, 1 << 20, HVD_SHM_STORES_AUTO); }
/* Every allreduce from 64 KiB with streaming stores (unaligned sub-slices, blocks
 * across chunk ends, parts without input or output); all with cached ones below. */
Test(shm_arena, np2_streaming, .timeout = 60) { run(2, 65536, HVD_SHM_STORE_STREAMING); }
Test(shm_arena, np3_streaming, .timeout = 60) { run(3, 4096, HVD_SHM_STORE_STREAMING); }
Test(shm_arena, np2_large_slot_streaming, .timeout = 60) {
  run(2, 1 << 20, HVD_SHM_STORE_STREAMING);
}

/* The measured choice of slot stores (collectives/allreduce_shm.c, "Slot stores"),
 * made deterministic by seeding the costs: with streaming recorded as far cheaper,
 * calls 4-31 of a size class stream and leave the cached cost alone, call 32 tries the
 * cached stores (and records them), 33 streams again; a forced kind records nothing.
 * Results are checked on every call. Returns the number of failed checks. */
static int stores_child(int rank, size_t slot, char tag[17]) {
  int ranks[2] = {0, 1}, bad = 0;
  hvd_arena_t *a;
  hvd_err_t err;
  if (hvd_arena_create(tag, 0, rank, ranks, 2, slot, &a, &err) != HVD_OK) return 100;
  barrier(2, 0);
  if (hvd_arena_attach(a, tag, 0, &err) != HVD_OK) return 101;
  barrier(2, 1);
  hvd_arena_unlink(a);
  hvd_comm_t c = {.rank = rank, .size = 2, .arena = a};
  enum { N = 3 * 16384 + 3 }; /* 192 KiB and 12 bytes: the 128 KiB class */
  float *in = malloc(N * sizeof *in), *out = malloc(N * sizeof *out);
  for (size_t i = 0; i < N; i++) in[i] = (float)val(i, rank);
  const double huge = 1e9, tiny = 1e-9; /* ns per byte */
  c.shm_stores[0][1].calls = 4;
  c.shm_stores[0][1].cost[0] = huge;
  c.shm_stores[0][1].cost[1] = tiny;
  for (int call = 4; call <= 33; call++) {
    const double before[2] = {c.shm_stores[0][1].cost[0], c.shm_stores[0][1].cost[1]};
    if (hvd_allreduce_shm(&c, in, out, N, HVD_FLOAT32, HVD_SUM) != HVD_OK) return bad + 1000;
    for (size_t i = 0; i < N; i++) bad += out[i] != (float)(val(i, 0) + val(i, 1));
    const int cached_moved = c.shm_stores[0][1].cost[0] != before[0];
    const int streaming_moved = c.shm_stores[0][1].cost[1] != before[1];
    const int want_cached = call == 32;
    if (cached_moved != want_cached || streaming_moved == want_cached) {
      fprintf(stderr, "rank %d, call %d: cached cost %s, streaming cost %s\n", rank, call,
              cached_moved ? "recorded" : "kept", streaming_moved ? "recorded" : "kept");
      bad++;
    }
  }
  bad += c.shm_stores[0][1].calls != 34;
  bad += c.shm_stores[0][1].cost[0] >= huge; /* the cached call's time pulled it down */
  for (int forced = HVD_SHM_STORE_CACHED; forced <= HVD_SHM_STORE_STREAMING; forced++) {
    a->stores = forced;
    if (hvd_allreduce_shm(&c, in, out, N, HVD_FLOAT32, HVD_SUM) != HVD_OK) return bad + 1000;
    for (size_t i = 0; i < N; i++) bad += out[i] != (float)(val(i, 0) + val(i, 1));
  }
  bad += c.shm_stores[0][1].calls != 34;
  free(in);
  free(out);
  hvd_arena_destroy(a);
  return bad;
}

/* Every allreduce with cached stores, then the measured choice. (One test, not two:
 * with eleven tests in this file Criterion's runner leaked 48 bytes under ASan.) */
Test(shm_arena, np2_cached_and_stores_choice, .timeout = 60) {
  run(2, 65536, HVD_SHM_STORE_CACHED);
  sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  cr_assert(sh != MAP_FAILED);
  memset(sh, 0, sizeof *sh);
  char tag[17];
  snprintf(tag, sizeof tag, "sc%d", (int)getpid());
  pid_t pids[2];
  for (int r = 0; r < 2; r++) {
    pids[r] = fork();
    if (pids[r] == 0) _exit(stores_child(r, 65536, tag) ? 1 : 0);
  }
  for (int r = 0; r < 2; r++) {
    int st;
    waitpid(pids[r], &st, 0);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "rank %d: status %d", r, st);
  }
  munmap(sh, sizeof *sh);
}

/* A peer that never arrives: the wait gives up once the abort flag is set. */
Test(shm_arena, abort_while_waiting, .timeout = 30) {
  char tag[17];
  snprintf(tag, sizeof tag, "ab%d", (int)getpid());
  int ranks[2] = {0, 1};
  hvd_arena_t *a, *b;
  hvd_err_t err;
  cr_assert_eq(hvd_arena_create(tag, 0, 0, ranks, 2, 4096, &a, &err), HVD_OK, "%s", err.msg);
  cr_assert_eq(hvd_arena_create(tag, 0, 1, ranks, 2, 4096, &b, &err), HVD_OK, "%s", err.msg);
  cr_assert_eq(hvd_arena_attach(a, tag, 0, &err), HVD_OK, "%s", err.msg);
  hvd_arena_unlink(a);
  hvd_arena_unlink(b);
  atomic_int flag = 1; /* already aborted: the first wait must give up */
  hvd_transport_t tp = {.abort = &flag};
  hvd_comm_t c = {.tp = &tp, .rank = 0, .size = 2, .arena = a};
  float x[8] = {0};
  cr_assert_eq(hvd_allreduce_shm(&c, x, x, 8, HVD_FLOAT32, HVD_SUM), HVD_ERR_ABORTED);
  hvd_arena_destroy(a);
  hvd_arena_destroy(b);
}

Test(shm_arena, names_are_removed) {
  char tag[17], path[128];
  snprintf(tag, sizeof tag, "rm%d", (int)getpid());
  int ranks[1] = {0};
  hvd_arena_t *a;
  hvd_err_t err;
  cr_assert_eq(hvd_arena_create(tag, 3, 0, ranks, 1, 4096, &a, &err), HVD_OK);
  char name[96];
  hvd_arena_name(name, sizeof name, tag, 3, 0);
  snprintf(path, sizeof path, "/dev/shm%s", name);
  cr_assert(strstr(path, tag) == NULL, "the tag is in the name: %s", path);
  cr_assert_eq(access(path, F_OK), 0, "segment should exist before unlink");
  hvd_arena_unlink(a);
  cr_assert_neq(access(path, F_OK), 0, "segment left in /dev/shm");
  hvd_arena_destroy(a);
}
