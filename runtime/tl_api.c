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

static hvd_status_t switch_to(hvd_ctx_t *ctx, hvd_timeline_t *next) {
  pthread_mutex_lock(&ctx->mu);
  while (ctx->tl_cmd) pthread_cond_wait(&ctx->tl_cv, &ctx->mu);
  if (!ctx->bg_started || ctx->bg_exited) {
    pthread_mutex_unlock(&ctx->mu);
    hvd_timeline_close(next);
    return HVD_ERR_SHUTDOWN;
  }
  ctx->tl_next = next;
  ctx->tl_cmd = 1;
  pthread_cond_broadcast(&ctx->cv);
  while (ctx->tl_cmd) pthread_cond_wait(&ctx->tl_cv, &ctx->mu);
  pthread_mutex_unlock(&ctx->mu);
  return HVD_OK;
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
  if (rc != HVD_OK) HVD_ERROR("timeline %s: %s", path, err.msg);
  return rc;
}

hvd_status_t hvd_timeline_start(hvd_ctx_t *ctx, const char *path) {
  if (ctx == NULL || path == NULL || *path == '\0') return HVD_ERR_INVALID_PARAM;
  hvd_timeline_t *tl;
  hvd_status_t rc = hvd_timeline_open_for(ctx, path, &tl);
  if (rc != HVD_OK) return HVD_ERR_INVALID_PARAM;
  return switch_to(ctx, tl);
}

hvd_status_t hvd_timeline_stop(hvd_ctx_t *ctx) {
  if (ctx == NULL) return HVD_ERR_INVALID_PARAM;
  return switch_to(ctx, NULL);
}
