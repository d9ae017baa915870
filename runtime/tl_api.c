/*
 * hvd_timeline_start / hvd_timeline_stop: the application thread opens (or not) the
 * new timeline and hands it to the background thread, which is the only user of
 * ctx->tl; the caller waits until the switch happened, then the old timeline is
 * closed by the background thread.
 */
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "runtime/ctx.h"

/* Hand next (may be NULL: stop) to the background thread and wait until it took it.
 * Once hvd_shutdown has begun: HVD_ERR_SHUTDOWN, and next is closed here. */
static hvd_status_t switch_to(hvd_ctx_t *ctx, hvd_timeline_t *next, const char *fn) {
  hvd_status_t rc = HVD_OK;
  pthread_mutex_lock(&ctx->mu);
  while (ctx->tl_cmd && !ctx->bg_exited) pthread_cond_wait(&ctx->tl_cv, &ctx->mu);
  if (ctx->stopping || !ctx->bg_started || ctx->bg_exited) {
    rc = HVD_ERR_SHUTDOWN;
  } else {
    ctx->tl_next = next;
    ctx->tl_cmd = 1;
    pthread_cond_broadcast(&ctx->cv);
    while (ctx->tl_cmd && !ctx->bg_exited) pthread_cond_wait(&ctx->tl_cv, &ctx->mu);
    if (ctx->tl_cmd) { /* the background thread left without taking it */
      ctx->tl_cmd = 0;
      ctx->tl_next = NULL;
      rc = HVD_ERR_SHUTDOWN;
    } else {
      next = NULL; /* the background thread owns it now */
    }
  }
  pthread_mutex_unlock(&ctx->mu);
  hvd_timeline_close(next);
  if (rc == HVD_ERR_SHUTDOWN) HVD_ERROR("%s: hvd_shutdown has already begun", fn);
  return rc;
}

/* Background thread, at the top of a cycle: take a pending switch. */
void hvd_timeline_take_switch(hvd_ctx_t *ctx) {
  pthread_mutex_lock(&ctx->mu);
  if (!ctx->tl_cmd) {
    pthread_mutex_unlock(&ctx->mu);
    return;
  }
  hvd_timeline_t *old = ctx->tl;
  ctx->tl = ctx->tl_next;
  ctx->tl_next = NULL;
  ctx->tl_cmd = 0;
  pthread_cond_broadcast(&ctx->tl_cv);
  pthread_mutex_unlock(&ctx->mu);
  hvd_timeline_close(old);
}

hvd_status_t hvd_timeline_open_for(hvd_ctx_t *ctx, const char *path, hvd_timeline_t **out) {
  hvd_err_t err = {{0}};
  hvd_timeline_opts_t o = {.path = path,
                           .rank = ctx->id.rank,
                           .mark_cycles = (int)ctx->cfg.timeline_mark_cycles,
                           .max_bytes = (size_t)(ctx->cfg.timeline_max_mb * 1024 * 1024)};
  hvd_status_t rc = hvd_timeline_open(&o, out, &err);
  if (rc != HVD_OK) HVD_ERROR("timeline: %s", err.msg); /* the message names the path */
  return rc;
}

/* The checks both calls share; fn names the caller in the message. */
static hvd_status_t check_ctx(const hvd_ctx_t *ctx, const char *fn) {
  const char *why = ctx == NULL          ? "ctx is NULL"
                    : hvd_bg_self == ctx ? "called from a completion callback, where it would "
                                           "wait forever"
                                         : NULL;
  if (why == NULL) return HVD_OK;
  HVD_ERROR("%s: invalid parameter: %s", fn, why);
  return HVD_ERR_INVALID_PARAM;
}

hvd_status_t hvd_timeline_start(hvd_ctx_t *ctx, const char *path) {
  HVD_CHECK(check_ctx(ctx, "hvd_timeline_start"));
  if (path == NULL || *path == '\0') {
    HVD_ERROR("hvd_timeline_start: invalid parameter: path is %s", path ? "empty" : "NULL");
    return HVD_ERR_INVALID_PARAM;
  }
  hvd_timeline_t *tl;
  hvd_status_t rc = hvd_timeline_open_for(ctx, path, &tl); /* logs why it could not */
  if (rc != HVD_OK) return HVD_ERR_INVALID_PARAM;
  return switch_to(ctx, tl, "hvd_timeline_start");
}

hvd_status_t hvd_timeline_stop(hvd_ctx_t *ctx) {
  HVD_CHECK(check_ctx(ctx, "hvd_timeline_stop"));
  return switch_to(ctx, NULL, "hvd_timeline_stop");
}
