/*
 * Context life cycle: hvd_init and hvd_shutdown, the getters, and the liveness thread.
 *
 * hvd_init: identity and settings from the environment -> connect to the rendezvous
 * (authenticated with the job token) -> open the libfabric transport -> publish our
 * address blob ("addr/<rank>" = host NUL blob) and read everyone else's -> connect the
 * transport -> rendezvous barrier (libfabric shm connects lazily, so nobody sends
 * before every endpoint exists) -> start the background and liveness threads.
 *
 * hvd_shutdown: the background thread drains what was queued before shutdown began
 * and exits -> the liveness thread stops -> a bounded rendezvous barrier so no rank
 * closes its endpoint while a peer may still be receiving from it -> BYE -> close.
 *
 * The liveness thread: an ABORT from the launcher, or the loss of the rendezvous
 * connection, aborts the context (every pending and later operation fails with that
 * message). A lost connection means the job is gone for good (hvdrun was killed, or
 * rank 0's in-process server died), so this process must not outlive it either: a
 * watchdog ends it ORPHAN_GRACE_S later (SIGTERM, then SIGKILL) unless it exits first.
 * Local ranks of hvdrun also carry PR_SET_PDEATHSIG (SIGKILL) from its exec trampoline;
 * while the liveness thread runs that signal is lifted (it would kill the rank before
 * anything could say why) and hvd_shutdown puts it back. docs/failures.md.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "collectives/select.h"
#include "collectives/tags.h"
#include "common/log.h"
#include "common/util.h"
#include "runtime/ctx.h"
#include "transport/shm_arena.h"

#define ADDR_BLOB_MAX 4096
/* Lost rendezvous connection -> SIGTERM to this process; SIGKILL ORPHAN_KILL_S later. */
#define ORPHAN_GRACE_S 5
#define ORPHAN_KILL_S 2

void hvd_ctx_abort(hvd_ctx_t *ctx, const char *fmt, ...) {
  pthread_mutex_lock(&ctx->abort_mu);
  if (!atomic_load(&ctx->aborted)) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->abort_msg, sizeof ctx->abort_msg, fmt, ap);
    va_end(ap);
    ctx->abort_ns = hvd_now_ns();
    atomic_store(&ctx->aborted, 1);
    HVD_ERROR("%s", ctx->abort_msg);
  }
  pthread_mutex_unlock(&ctx->abort_mu);
  /* Wake the background thread so queued work fails now rather than later. */
  pthread_mutex_lock(&ctx->mu);
  pthread_cond_broadcast(&ctx->cv);
  pthread_mutex_unlock(&ctx->mu);
}

int hvd_ctx_await_abort(hvd_ctx_t *ctx) {
  uint64_t deadline = hvd_now_ns() + (uint64_t)HVD_PEER_FAILURE_WAIT_MS * 1000000u;
  while (ctx->live_started && !atomic_load(&ctx->aborted) && hvd_now_ns() < deadline) {
    struct timespec ts = {.tv_sec = 0, .tv_nsec = 1000000};
    nanosleep(&ts, NULL);
  }
  return atomic_load(&ctx->aborted);
}

static void sleep_s(int s) {
  struct timespec ts = {.tv_sec = s, .tv_nsec = 0};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* Detached, and independent of any context (the application may shut hvd down and
 * carry on): the job this process belonged to is gone. */
static void *orphan_watchdog(void *arg) {
  (void)arg;
  sleep_s(ORPHAN_GRACE_S);
  HVD_ERROR("the job's rendezvous connection was lost %d s ago; ending this process",
            ORPHAN_GRACE_S);
  kill(getpid(), SIGTERM);
  sleep_s(ORPHAN_KILL_S);
  kill(getpid(), SIGKILL);
  return NULL;
}

/* Once per process: several contexts may lose their connection. */
static atomic_int orphan_watchdog_started;

static void start_orphan_watchdog(void) {
  pthread_t t;
  pthread_attr_t at;
  if (atomic_exchange(&orphan_watchdog_started, 1)) return;
  pthread_attr_init(&at);
  pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
  if (pthread_create(&t, &at, orphan_watchdog, NULL) != 0)
    HVD_ERROR("cannot start the watchdog that ends this process now that its job is gone");
  pthread_attr_destroy(&at);
}

/* Around the liveness thread: lift hvdrun's PR_SET_PDEATHSIG, and put it back (firing
 * it if the parent died meanwhile unnoticed: once the watchdog runs, the application
 * keeps its grace period). Only under hvdrun, whose rendezvous server is the
 * parent of a local rank (a remote rank's parent is hvdrun's remote wrapper, which
 * stops the rank itself when hvdrun goes away); under mpirun the parent is not the
 * rendezvous server, and only the signal notices its death. */
static void lift_pdeathsig(hvd_ctx_t *ctx) {
  int sig = 0;
  if (ctx->id.have_launcher != 1 || prctl(PR_GET_PDEATHSIG, &sig) != 0 || sig == 0) return;
  ctx->ppid = getppid();
  if (prctl(PR_SET_PDEATHSIG, 0) == 0) ctx->pdeathsig = sig;
}

static void restore_pdeathsig(hvd_ctx_t *ctx) {
  if (ctx->pdeathsig == 0) return;
  (void)prctl(PR_SET_PDEATHSIG, ctx->pdeathsig);
  if (getppid() != ctx->ppid && !atomic_load(&orphan_watchdog_started)) raise(ctx->pdeathsig);
  ctx->pdeathsig = 0;
}

static void *live_main(void *arg) {
  hvd_ctx_t *ctx = arg;
  struct pollfd fds[2] = {{.fd = hvd_rdv_fd(ctx->rdv), .events = POLLIN},
                          {.fd = ctx->live_pipe[0], .events = POLLIN}};
  int timeout_ms = -1; /* after the abort: HVD_STRANDED_GRACE_MS */
  for (;;) {
    int n = poll(fds, 2, timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      hvd_ctx_abort(ctx, "liveness: poll failed: %s", strerror(errno));
      return NULL;
    }
    if (fds[1].revents) return NULL; /* shutdown */
    if (n == 0) {
      /* Aborted a while ago: fail what the background thread has not (it may be
       * stuck where the abort flag does not reach it); again later, in case. */
      hvd_fail_stranded(ctx);
      continue;
    }
    if (fds[0].revents) {
      hvd_err_t err = {{0}};
      hvd_status_t rc = hvd_rdv_read_event(ctx->rdv, &err);
      if (rc == HVD_OK) continue;
      if (rc == HVD_ERR_ABORTED) {
        hvd_ctx_abort(ctx, "%s", err.msg[0] ? err.msg : hvd_status_string(rc));
      } else {
        /* The server is gone (or talks nonsense): nobody can tell us anything any more. */
        hvd_ctx_abort(ctx, "rank %d: %s%s; the job cannot go on", ctx->id.rank,
                      err.msg[0] ? err.msg : hvd_status_string(rc),
                      rc == HVD_ERR_BOOTSTRAP && ctx->id.have_launcher == 1
                          ? " (hvdrun, which serves it, has exited or cannot be reached)"
                          : "");
        start_orphan_watchdog();
      }
      /* Nothing more to hear; keep watching for operations left stranded. */
      fds[0].fd = -1;
      timeout_ms = HVD_STRANDED_GRACE_MS;
    }
  }
}

/* Exchange address blobs through the rendezvous and connect the transport. */
static hvd_status_t exchange_addresses(hvd_ctx_t *ctx, int timeout_ms, hvd_err_t *err) {
  int n = ctx->id.size;
  hvd_status_t rc;
  char key[64];
  char mine[HVD_HOST_MAX + ADDR_BLOB_MAX];
  size_t hostlen = strlen(ctx->id.hostname) + 1;
  size_t bloblen = ADDR_BLOB_MAX;
  void **vals = calloc((size_t)n, sizeof *vals);
  const void **blobs = calloc((size_t)n, sizeof *blobs);
  size_t *lens = calloc((size_t)n, sizeof *lens);
  int *same = calloc((size_t)n, sizeof *same);
  if (!vals || !blobs || !lens || !same) {
    rc = HVD_ERR_NO_MEMORY;
    hvd_err_set(err, "out of memory for %d address blobs", n);
    goto out;
  }
  memcpy(mine, ctx->id.hostname, hostlen);
  rc = ctx->tp->ops->get_address(ctx->tp, mine + hostlen, &bloblen);
  if (rc != HVD_OK) {
    hvd_err_set(err, "transport address: %s", ctx->tp->err.msg);
    goto out;
  }
  snprintf(key, sizeof key, "addr/%d/%d", ctx->gen, ctx->id.rank);
  HVD_CHECK_GOTO(hvd_rdv_put(ctx->rdv, key, mine, hostlen + bloblen, err), rc, out);
  for (int r = 0; r < n; r++) {
    size_t len = 0;
    snprintf(key, sizeof key, "addr/%d/%d", ctx->gen, r);
    rc = hvd_rdv_get(ctx->rdv, key, &vals[r], &len, timeout_ms, err);
    if (rc == HVD_ERR_TIMEOUT)
      hvd_err_set(err, "rank %d did not publish its address within %d ms", r, timeout_ms);
    if (rc != HVD_OK) goto out;
    const char *host = vals[r];
    size_t hl = strnlen(host, len);
    if (hl == len) {
      rc = HVD_ERR_PROTOCOL;
      hvd_err_set(err, "rank %d published a malformed address", r);
      goto out;
    }
    same[r] = strcmp(host, ctx->id.hostname) == 0;
    blobs[r] = host + hl + 1;
    lens[r] = len - hl - 1;
  }
  ctx->local_ranks = malloc((size_t)n * sizeof *ctx->local_ranks);
  ctx->hosts = calloc((size_t)n, sizeof *ctx->hosts);
  if (ctx->local_ranks == NULL || ctx->hosts == NULL) {
    rc = HVD_ERR_NO_MEMORY;
    goto out;
  }
  for (int r = 0; r < n; r++) /* the host is the first string of the value (see above) */
    if ((ctx->hosts[r] = strdup(vals[r])) == NULL) {
      rc = HVD_ERR_NO_MEMORY;
      goto out;
    }
  hvd_transport_set_hosts(ctx->tp, (const char *const *)ctx->hosts);
  ctx->nlocal = 0;
  for (int r = 0; r < n; r++)
    if (same[r]) ctx->local_ranks[ctx->nlocal++] = r;
  rc = ctx->tp->ops->connect(ctx->tp, blobs, lens, same);
  if (rc != HVD_OK) hvd_err_set(err, "transport connect: %s", ctx->tp->err.msg);
out:
  if (vals)
    for (int r = 0; r < n; r++) free(vals[r]);
  free(vals);
  free(blobs);
  free(lens);
  free(same);
  return rc;
}

/* A rank may shut down and init again within one job; every incarnation gets its own
 * keys and barrier names so nobody reads a previous incarnation's address. Ranks
 * re-initialise the same number of times, so their generation numbers agree. */
static hvd_status_t next_generation(hvd_ctx_t *ctx, hvd_err_t *err) {
  char key[64];
  void *val = NULL;
  size_t len = 0;
  snprintf(key, sizeof key, "gen/%d", ctx->id.rank);
  hvd_status_t rc = hvd_rdv_get(ctx->rdv, key, &val, &len, 0, err);
  if (rc == HVD_OK) {
    long g = 0;
    if (hvd_parse_int(val, 0, 1 << 30, &g) == 0) ctx->gen = (int)g + 1;
    free(val);
  } else if (rc != HVD_ERR_TIMEOUT) {
    return rc;
  }
  char v[16];
  snprintf(v, sizeof v, "%d", ctx->gen);
  return hvd_rdv_put(ctx->rdv, key, v, strlen(v), err);
}

/* Under mpirun/srun nobody else serves the rendezvous: rank 0 does, in-process, at
 * the address and port the user exported (env.c sets have_launcher = 2). The server
 * lives as long as the process, so a job that shuts down and initialises again finds
 * it where the other ranks still are; hence the one static here. A host name binds
 * every interface; "localhost" binds 127.0.0.1. */
static hvd_status_t serve_rendezvous(const hvd_identity_t *id, hvd_err_t *err) {
  static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  static hvd_rdv_server_thread_t *server;
  unsigned char a[sizeof(struct in6_addr)];
  hvd_status_t rc = HVD_OK;
  const char *bind = id->rdv_addr;
  if (strcmp(bind, "localhost") == 0) bind = "127.0.0.1";
  else if (inet_pton(AF_INET, bind, a) != 1 && inet_pton(AF_INET6, bind, a) != 1)
    bind = "0.0.0.0";
  pthread_mutex_lock(&mu);
  if (server == NULL) {
    hvd_rdv_server_opts_t so = {
        .bind_addr = bind, .port = id->rdv_port, .token = id->token, .size = id->size};
    rc = hvd_rdv_server_thread_start(&so, &server, NULL, err);
    if (rc != HVD_OK) {
      server = NULL;
      hvd_err_prefix(err, "rank 0 serving the rendezvous (HVD_RENDEZVOUS_ADDR/PORT)");
    }
  }
  pthread_mutex_unlock(&mu);
  return rc;
}

/* HVD_TIMELINE=t.json: rank 0 writes t.json; with HVD_TIMELINE_ALL_RANKS every rank
 * writes t.<rank>.json (t.<rank> when the name has no .json). */
static void timeline_path(const hvd_ctx_t *ctx, char *out, size_t len) {
  const char *p = ctx->cfg.timeline;
  if (!ctx->cfg.timeline_all_ranks) {
    snprintf(out, len, "%s", p);
    return;
  }
  size_t n = strlen(p);
  if (n > 5 && strcmp(p + n - 5, ".json") == 0)
    snprintf(out, len, "%.*s.%d.json", (int)(n - 5), p, ctx->id.rank);
  else
    snprintf(out, len, "%s.%d", p, ctx->id.rank);
}

/* Every rank says whether its step succeeded; returns 1 if all did. */
static int all_agree(hvd_ctx_t *ctx, const char *step, int ok, int timeout_ms) {
  char key[64];
  hvd_err_t err = {{0}};
  snprintf(key, sizeof key, "%s/%d/%d", step, ctx->gen, ctx->id.rank);
  if (hvd_rdv_put(ctx->rdv, key, ok ? "1" : "0", 1, &err) != HVD_OK) return 0;
  int all = 1;
  for (int r = 0; r < ctx->id.size && all; r++) {
    void *v = NULL;
    size_t len = 0;
    snprintf(key, sizeof key, "%s/%d/%d", step, ctx->gen, r);
    if (hvd_rdv_get(ctx->rdv, key, &v, &len, timeout_ms, &err) != HVD_OK || len != 1 ||
        ((char *)v)[0] != '1')
      all = 0;
    free(v);
  }
  return all;
}

/* The shared-memory arena, when every rank is on this host and the transport is not
 * forced to a network provider. All ranks agree on whether it is used. */
static void setup_arena(hvd_ctx_t *ctx, int timeout_ms) {
  const char *prov = ctx->cfg.ofi_provider;
  if (!ctx->cfg.shm_arena || ctx->nlocal != ctx->id.size || ctx->id.size < 2 ||
      (prov[0] != '\0' && strcmp(prov, "shm") != 0))
    return;
  hvd_err_t err = {{0}};
  hvd_arena_t *a = NULL;
  int ok = hvd_arena_create(ctx->id.token, ctx->gen, ctx->id.rank, ctx->local_ranks, ctx->nlocal,
                            (size_t)ctx->cfg.shm_chunk, &a, &err) == HVD_OK;
  if (!ok) HVD_WARN("shared-memory arena unavailable (%s); allreduce goes through libfabric", err.msg);
  if (all_agree(ctx, "arena-made", ok, timeout_ms)) {
    ok = hvd_arena_attach(a, ctx->id.token, ctx->gen, &err) == HVD_OK;
    if (!ok) HVD_WARN("shared-memory arena: %s; allreduce goes through libfabric", err.msg);
    ok = all_agree(ctx, "arena-mapped", ok, timeout_ms);
  } else {
    ok = 0;
  }
  hvd_arena_unlink(a);
  if (!ok) {
    hvd_arena_destroy(a);
    return;
  }
  /* Single-copy reads between ranks (large allgathers), if every rank can do them. */
  a->cma = all_agree(ctx, "arena-cma", hvd_arena_probe_cma(a), timeout_ms);
  a->stores = strcasecmp(ctx->cfg.shm_stores, "cached") == 0      ? HVD_SHM_STORE_CACHED
              : strcasecmp(ctx->cfg.shm_stores, "streaming") == 0 ? HVD_SHM_STORE_STREAMING
                                                                  : HVD_SHM_STORES_AUTO;
  ctx->arena = a;
  HVD_INFO("shared-memory arena: %d local ranks, %lld-byte chunks%s", a->n,
           (long long)ctx->cfg.shm_chunk, a->cma ? ", cross-memory reads" : "");
}

void hvd_ctx_free(hvd_ctx_t *ctx) {
  /* The transport goes first: receives it still holds point into communicators. */
  if (ctx->tp) ctx->tp->ops->destroy(ctx->tp);
  for (int i = 0; i < HVD_MAX_PSETS; i++)
    if (ctx->psets[i]) {
      hvd_comm_release(&ctx->psets[i]->comm);
      hvd_pset_free(ctx->psets[i]);
    }
  hvd_engine_free(ctx->eng);
  hvd_arena_destroy(ctx->arena);
  free(ctx->local_ranks);
  for (int r = 0; ctx->hosts != NULL && r < ctx->id.size; r++) free(ctx->hosts[r]);
  free(ctx->hosts);
  hvd_timeline_close(ctx->tl);
  pthread_cond_destroy(&ctx->tl_cv);
  free(ctx->fusion);
  hvd_strmap_free(&ctx->inflight);
  if (ctx->rdv) hvd_rdv_close(ctx->rdv);
  if (ctx->live_pipe[0] >= 0) close(ctx->live_pipe[0]);
  if (ctx->live_pipe[1] >= 0) close(ctx->live_pipe[1]);
  pthread_mutex_destroy(&ctx->mu);
  pthread_cond_destroy(&ctx->cv);
  pthread_mutex_destroy(&ctx->abort_mu);
  pthread_mutex_destroy(&ctx->pset_mu);
  free(ctx);
}

hvd_status_t hvd_init(hvd_ctx_t **out) {
  hvd_err_t err = {{0}};
  hvd_status_t rc;
  if (out == NULL) {
    HVD_ERROR("hvd_init: invalid parameter: out is NULL");
    return HVD_ERR_INVALID_PARAM;
  }
  *out = NULL;
  /* The level early, for what init logs; a bad value fails hvd_config_load below,
   * with a message naming the variable that was set (or its HOROVOD_ alias). */
  (void)hvd_log_init_from_env();
  hvd_ctx_t *ctx = calloc(1, sizeof *ctx);
  if (ctx == NULL) return HVD_ERR_NO_MEMORY;
  ctx->live_pipe[0] = ctx->live_pipe[1] = -1;
  pthread_mutex_init(&ctx->mu, NULL);
  pthread_cond_init(&ctx->cv, NULL);
  pthread_mutex_init(&ctx->abort_mu, NULL);
  pthread_mutex_init(&ctx->pset_mu, NULL);
  pthread_cond_init(&ctx->tl_cv, NULL);
  hvd_strmap_init(&ctx->inflight);
  ctx->next_pset_id = 1;

  HVD_CHECK_GOTO(hvd_identity_from_env(&ctx->id, &err), rc, fail);
  HVD_CHECK_GOTO(hvd_config_load(&ctx->cfg, &err), rc, fail);
  hvd_log_set_level((hvd_log_level_t)ctx->cfg.log_level);
  {
    char prefix[16];
    snprintf(prefix, sizeof prefix, "%d", ctx->id.rank);
    hvd_log_set_prefix(prefix);
  }

  /* The settings table checked HVD_*_ALGO against what each collective supports. */
  ctx->allreduce_algo = hvd_algo_parse(ctx->cfg.allreduce_algo);
  ctx->allgather_algo = hvd_algo_parse(ctx->cfg.allgather_algo);
  ctx->broadcast_algo = hvd_algo_parse(ctx->cfg.broadcast_algo);
  if (ctx->id.size > 1) {
    char key[64];
    int timeout_ms = (int)(ctx->cfg.start_timeout_s * 1000);
    if (ctx->id.have_launcher == 2 && ctx->id.rank == 0)
      HVD_CHECK_GOTO(serve_rendezvous(&ctx->id, &err), rc, fail);
    rc = hvd_rdv_connect(ctx->id.rdv_addr, ctx->id.rdv_port, ctx->id.token, ctx->id.rank,
                         ctx->id.size, timeout_ms, &ctx->rdv, &err);
    if (rc != HVD_OK) {
      hvd_err_prefix(&err, "rendezvous HVD_RENDEZVOUS_ADDR=%s HVD_RENDEZVOUS_PORT=%d",
                     ctx->id.rdv_addr, ctx->id.rdv_port);
      goto fail;
    }
    HVD_CHECK_GOTO(next_generation(ctx, &err), rc, fail);
    hvd_ofi_params_t p = {.rank = ctx->id.rank,
                          .size = ctx->id.size,
                          .provider = ctx->cfg.ofi_provider,
                          .iface = ctx->cfg.ofi_iface,
                          .max_msg_size = (size_t)ctx->cfg.ofi_max_msg_size,
                          .timeout_s = ctx->cfg.transport_timeout_s};
    HVD_CHECK_GOTO(hvd_ofi_create(&p, &ctx->tp, &err), rc, fail);
    hvd_transport_set_abort(ctx->tp, &ctx->aborted);
    HVD_CHECK_GOTO(exchange_addresses(ctx, timeout_ms, &err), rc, fail);
    snprintf(key, sizeof key, "connected/%d", ctx->gen);
    HVD_CHECK_GOTO(hvd_rdv_barrier(ctx->rdv, key, timeout_ms, &err), rc, fail);
    HVD_CHECK_GOTO(hvd_transport_wireup(ctx->tp, hvd_tag_make(HVD_TAG_KIND_CONTROL, 0xfff, 0, 7), &err),
                   rc, fail);
    setup_arena(ctx, timeout_ms);
    if (pipe2(ctx->live_pipe, O_CLOEXEC) != 0) {
      rc = HVD_ERR_INTERNAL;
      hvd_err_set(&err, "pipe: %s", strerror(errno));
      goto fail;
    }
    if (pthread_create(&ctx->live, NULL, live_main, ctx) != 0) {
      rc = HVD_ERR_INTERNAL;
      hvd_err_set(&err, "cannot start the liveness thread");
      goto fail;
    }
    ctx->live_started = 1;
    lift_pdeathsig(ctx);
  }
  {
    int *all = malloc((size_t)ctx->id.size * sizeof *all);
    hvd_pset_t *world = NULL;
    if (all != NULL) {
      for (int r = 0; r < ctx->id.size; r++) all[r] = r;
      world = hvd_pset_new(ctx, 0, all, ctx->id.size);
      free(all);
    }
    if (world == NULL) {
      rc = HVD_ERR_NO_MEMORY;
      hvd_err_set(&err, "out of memory for the global process set");
      goto fail;
    }
    world->comm.arena = ctx->arena;
    hvd_pset_install(ctx, world);
  }
  HVD_CHECK_GOTO(hvd_engine_new(ctx, &ctx->eng, &err), rc, fail);
  if (ctx->cfg.timeline[0] != '\0' && (ctx->id.rank == 0 || ctx->cfg.timeline_all_ranks)) {
    char path[HVD_CFG_STR_MAX + 32];
    timeline_path(ctx, path, sizeof path);
    if (hvd_timeline_open_for(ctx, path, &ctx->tl) != HVD_OK) {
      rc = HVD_ERR_INVALID_PARAM;
      hvd_err_set(&err, "%s=%s: cannot write the timeline", hvd_config_var("HVD_TIMELINE"),
                  ctx->cfg.timeline);
      goto fail;
    }
  }
  if (pthread_create(&ctx->bg, NULL, hvd_bg_main, ctx) != 0) {
    rc = HVD_ERR_INTERNAL;
    hvd_err_set(&err, "cannot start the background thread");
    goto fail;
  }
  ctx->bg_started = 1;
  HVD_INFO("initialized: rank %d of %d on %s (local %d/%d, cross %d/%d)", ctx->id.rank,
           ctx->id.size, ctx->id.hostname, ctx->id.local_rank, ctx->id.local_size,
           ctx->id.cross_rank, ctx->id.cross_size);
  *out = ctx;
  return HVD_OK;

fail:
  HVD_ERROR("init failed: %s", err.msg[0] ? err.msg : hvd_status_string(rc));
  if (ctx->live_started) {
    (void)!write(ctx->live_pipe[1], "x", 1);
    pthread_join(ctx->live, NULL);
    restore_pdeathsig(ctx);
  }
  hvd_ctx_free(ctx);
  return rc;
}

/* Wait for the background thread to exit; after an abort only until
 * HVD_ABORT_JOIN_MS after it (at least HVD_ABORT_JOIN_MIN_MS from t0): normally it
 * leaves within milliseconds of the abort, and one that has not is stuck where the
 * abort flag does not reach it, perhaps for ever. Returns 1 if it was joined. */
static int join_bg(hvd_ctx_t *ctx, uint64_t t0) {
  pthread_mutex_lock(&ctx->mu);
  while (!ctx->bg_exited) {
    if (atomic_load(&ctx->aborted)) {
      uint64_t deadline = HVD_MAX(ctx->abort_ns + (uint64_t)HVD_ABORT_JOIN_MS * 1000000u,
                                  t0 + (uint64_t)HVD_ABORT_JOIN_MIN_MS * 1000000u);
      if (hvd_now_ns() >= deadline) break;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 50000000; /* re-check for an abort that arrives meanwhile */
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&ctx->tl_cv, &ctx->mu, &ts);
  }
  int exited = ctx->bg_exited;
  pthread_mutex_unlock(&ctx->mu);
  if (exited) pthread_join(ctx->bg, NULL);
  return exited;
}

hvd_status_t hvd_shutdown(hvd_ctx_t *ctx) {
  if (ctx == NULL) return HVD_OK;
  hvd_status_t rc = HVD_OK;
  uint64_t t0 = hvd_now_ns();
  pthread_mutex_lock(&ctx->mu);
  ctx->stopping = 1;
  pthread_cond_broadcast(&ctx->cv);
  pthread_mutex_unlock(&ctx->mu);
  int joined = !ctx->bg_started || join_bg(ctx, t0);
  if (ctx->live_started) {
    (void)!write(ctx->live_pipe[1], "x", 1);
    pthread_join(ctx->live, NULL);
    restore_pdeathsig(ctx);
  }
  if (atomic_load(&ctx->aborted)) rc = HVD_ERR_ABORTED;
  if (!joined) {
    /* The context stays with the stuck thread (it frees it if it ever gets out); the
     * rendezvous connection is ours to close. Whatever is still in flight fails now
     * (the liveness thread, which did that, is gone). */
    hvd_fail_stranded(ctx);
    HVD_WARN("shutdown: the background thread did not stop within %d ms of the job's "
             "failure (stuck in the transport); leaving it behind", HVD_ABORT_JOIN_MS);
    if (ctx->rdv != NULL) {
      hvd_rdv_close(ctx->rdv);
      ctx->rdv = NULL;
    }
    pthread_t bg = ctx->bg;
    pthread_mutex_lock(&ctx->mu);
    int exited = ctx->bg_exited; /* it may have got out meanwhile after all */
    if (!exited) ctx->abandoned = 1;
    pthread_mutex_unlock(&ctx->mu);
    if (!exited) {
      pthread_detach(bg); /* ctx is the thread's now: not to be touched */
      return rc;
    }
    pthread_join(bg, NULL);
    hvd_ctx_free(ctx);
    return rc;
  }
  if (ctx->rdv != NULL && rc == HVD_OK) {
    hvd_err_t err = {{0}};
    char key[64];
    snprintf(key, sizeof key, "shutdown/%d", ctx->gen);
    hvd_status_t brc = hvd_rdv_barrier(ctx->rdv, key,
                                       (int)(ctx->cfg.shutdown_timeout_s * 1000), &err);
    if (brc != HVD_OK) {
      HVD_WARN("shutdown: not every rank reached shutdown: %s", err.msg);
      rc = brc;
    } else {
      hvd_rdv_bye(ctx->rdv);
    }
  }
  hvd_ctx_free(ctx);
  return rc;
}

int hvd_rank(const hvd_ctx_t *ctx) { return ctx ? ctx->id.rank : -1; }
int hvd_size(const hvd_ctx_t *ctx) { return ctx ? ctx->id.size : -1; }
int hvd_local_rank(const hvd_ctx_t *ctx) { return ctx ? ctx->id.local_rank : -1; }
int hvd_local_size(const hvd_ctx_t *ctx) { return ctx ? ctx->id.local_size : -1; }
int hvd_cross_rank(const hvd_ctx_t *ctx) { return ctx ? ctx->id.cross_rank : -1; }
int hvd_cross_size(const hvd_ctx_t *ctx) { return ctx ? ctx->id.cross_size : -1; }

const char *hvd_ctx_error(const hvd_ctx_t *ctx) {
  if (ctx == NULL || !atomic_load(&ctx->aborted)) return "";
  return ctx->abort_msg; /* written once, before aborted was set */
}
