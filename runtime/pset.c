/*
 * Process sets as a rank sees them: members, this rank's index, the communicator
 * used for the set's collectives (tag comm field = set id), the member-side
 * negotiation state, and on global rank 0 the set's coordinator.
 *
 * The table is written only by the background thread (which creates sets while
 * applying a PROCESS_SET response) and read by application threads in the getters,
 * so it is guarded by pset_mu; sets are never freed before the context is.
 */
#include <stdlib.h>
#include <string.h>

#include <stdio.h>

#include "runtime/ctx.h"

/* Coordinator hook: mark on the tensor's timeline lane when each rank became ready. */
static void tl_ready(void *arg, const char *name, int rank, uint64_t now) {
  hvd_ctx_t *ctx = arg;
  if (ctx->tl == NULL) return;
  char what[32];
  snprintf(what, sizeof what, "rank %d ready", rank);
  hvd_tl_instant(ctx->tl, name, what, now);
}

hvd_pset_t *hvd_pset_new(hvd_ctx_t *ctx, int id, const int *ranks, int n) {
  hvd_pset_t *ps = calloc(1, sizeof *ps);
  if (ps == NULL) return NULL;
  ps->id = id;
  ps->n = n;
  ps->me = -1;
  ps->members = malloc((size_t)n * sizeof *ps->members);
  ps->ncache = ctx->cfg.cache_capacity;
  if (ps->ncache > 0) ps->cache = calloc((size_t)ps->ncache, sizeof *ps->cache);
  if (ps->members == NULL || (ps->ncache > 0 && ps->cache == NULL)) goto fail;
  for (int i = 0; i < n; i++) {
    ps->members[i] = ranks[i];
    if (ranks[i] == ctx->id.rank) ps->me = i;
  }
  ps->comm.tp = ctx->tp;
  ps->comm.rank = ps->me;
  ps->comm.size = n;
  ps->comm.ranks = ps->members;
  ps->comm.id = (unsigned)id;
  hvd_strmap_init(&ps->pending);
  hvd_strmap_init(&ps->cache_by_name);
  if (ctx->id.rank == 0) {
    hvd_coord_params_t p = {.nmembers = n,
                            .members = ps->members,
                            .cache_capacity = ctx->cfg.cache_capacity,
                            .fusion_threshold = (size_t)ctx->cfg.fusion_threshold,
                            .stall_warning_s = ctx->cfg.stall_check_disable ? 0 : ctx->cfg.stall_warning_s,
                            .stall_shutdown_s = ctx->cfg.stall_shutdown_s,
                            .cycle_time_ms = ctx->cfg.cycle_time_ms,
                            .on_ready = tl_ready,
                            .arg = ctx};
    if ((ps->coord = hvd_coord_new(&p)) == NULL) goto fail;
  }
  return ps;
fail:
  hvd_pset_free(ps);
  return NULL;
}

void hvd_pset_free(hvd_pset_t *ps) {
  if (ps == NULL) return;
  for (int k = 0; k < ps->ncache && ps->cache; k++) {
    free(ps->cache[k].name);
    hvd_request_free(&ps->cache[k].own);
  }
  free(ps->cache);
  hvd_strmap_free(&ps->cache_by_name);
  hvd_strmap_free(&ps->pending);
  hvd_request_list_free(&ps->out);
  hvd_coord_free(ps->coord);
  free(ps->members);
  free(ps);
}

void hvd_pset_install(hvd_ctx_t *ctx, hvd_pset_t *ps) {
  pthread_mutex_lock(&ctx->pset_mu);
  ctx->psets[ps->id] = ps;
  if (ps->id >= ctx->npsets) ctx->npsets = ps->id + 1;
  pthread_mutex_unlock(&ctx->pset_mu);
}

hvd_pset_t *hvd_pset_get(hvd_ctx_t *ctx, int id) {
  if (id < 0 || id >= HVD_MAX_PSETS) return NULL;
  pthread_mutex_lock(&ctx->pset_mu);
  hvd_pset_t *ps = ctx->psets[id];
  pthread_mutex_unlock(&ctx->pset_mu);
  return ps;
}
