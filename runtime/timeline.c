/* Placeholder until the timeline writer lands: accepts nothing, records nothing. */
#include "runtime/timeline.h"

hvd_status_t hvd_timeline_open(const hvd_timeline_opts_t *opts, hvd_timeline_t **out,
                               hvd_err_t *err) {
  (void)opts;
  *out = NULL;
  hvd_err_set(err, "timeline support is not built yet");
  return HVD_ERR_NOT_SUPPORTED;
}
void hvd_timeline_close(hvd_timeline_t *tl) { (void)tl; }
void hvd_tl_begin(hvd_timeline_t *tl, const char *t, const char *p, uint64_t ts) { (void)tl; (void)t; (void)p; (void)ts; }
void hvd_tl_end(hvd_timeline_t *tl, const char *t, const char *p, uint64_t ts, const char *a) { (void)tl; (void)t; (void)p; (void)ts; (void)a; }
void hvd_tl_instant(hvd_timeline_t *tl, const char *t, const char *w, uint64_t ts) { (void)tl; (void)t; (void)w; (void)ts; }
void hvd_tl_cycle(hvd_timeline_t *tl, uint64_t ts) { (void)tl; (void)ts; }
int hvd_tl_mark_cycles(const hvd_timeline_t *tl) { (void)tl; return 0; }
uint64_t hvd_tl_dropped(const hvd_timeline_t *tl) { (void)tl; return 0; }
