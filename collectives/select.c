/* The selection table and the dispatching entry points; see select.h. */
#include "collectives/select.h"

#include <string.h>
#include <strings.h>

static const char *const names[HVD_ALGO_COUNT] = {"auto", "ring", "tree", "rd", "shm"};

int hvd_algo_parse(const char *s) {
  for (int i = 0; i < HVD_ALGO_COUNT; i++)
    if (strcasecmp(s, names[i]) == 0) return i;
  return -1;
}

const char *hvd_algo_name(hvd_algo_t a) {
  return (unsigned)a < HVD_ALGO_COUNT ? names[a] : "unknown";
}

/* First match wins. */
static const hvd_algo_rule_t rules[] = {
    {HVD_COLL_ALLREDUCE, 16 * 1024, 1, 1 << 20, -1, HVD_ALGO_RD},
    {HVD_COLL_ALLREDUCE, (size_t)-1, 1, 1 << 20, -1, HVD_ALGO_RING},
};

hvd_algo_t hvd_algo_select(hvd_coll_kind_t coll, size_t bytes, int ranks, int remote) {
  for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
    const hvd_algo_rule_t *r = &rules[i];
    if (r->coll == coll && bytes <= r->max_bytes && ranks >= r->min_ranks &&
        ranks <= r->max_ranks && (r->remote < 0 || r->remote == remote))
      return r->algo;
  }
  return HVD_ALGO_RING;
}

hvd_algo_t hvd_allreduce_algo(const hvd_comm_t *c, hvd_algo_t algo, size_t bytes, int remote) {
  if (algo == HVD_ALGO_AUTO && c->arena != NULL) return HVD_ALGO_SHM;
  if (algo == HVD_ALGO_AUTO) return hvd_algo_select(HVD_COLL_ALLREDUCE, bytes, c->size, remote);
  if (algo == HVD_ALGO_SHM && c->arena == NULL) return HVD_ALGO_RING;
  return algo;
}

hvd_status_t hvd_coll_allreduce(hvd_comm_t *c, hvd_algo_t algo, int remote, const void *sendbuf,
                                void *recvbuf, size_t count, hvd_dtype_t dtype, hvd_op_t op) {
  algo = hvd_allreduce_algo(c, algo, count * hvd_dtype_size(dtype), remote);
  switch (algo) {
  case HVD_ALGO_SHM: return hvd_allreduce_shm(c, sendbuf, recvbuf, count, dtype, op);
  case HVD_ALGO_RD: return hvd_allreduce_rd(c, sendbuf, recvbuf, count, dtype, op);
  case HVD_ALGO_TREE: return hvd_allreduce_tree(c, sendbuf, recvbuf, count, dtype, op);
  default: return hvd_allreduce_ring(c, sendbuf, recvbuf, count, dtype, op);
  }
}
