/*
 * CPU placement with hwloc, computed on the host where the rank runs (by the exec
 * trampoline or the remote wrapper; hvdrun computes the same for --verbose).
 *
 * --map-by picks a core for local rank i of n:
 *   slot, core  the i-th core of the host (wrapping around when i >= cores);
 *   numa        round robin over NUMA nodes: node i % nodes, and there the
 *               (i / nodes)-th core (wrapping around);
 * --bind-to then restricts the rank to that core's PUs (core), to the PUs of the
 * NUMA node holding that core (numa), or not at all (none). auto, the default, gives
 * local rank i of n the i-th block of cores/n consecutive cores (all cores for one
 * rank) and leaves the ranks unbound when they outnumber the cores: a rank's threads
 * (the application's and hvd's background thread) stay together on cores no other
 * rank uses, which is what keeps two busy ranks off one core while a third core sits
 * idle (docs/performance.md), without squeezing a multithreaded rank onto one core.
 * Hosts without core objects use PUs as cores. Only the CPUs this process may use count (hwloc's
 * default: a cgroup's cpuset or a taskset restrict the topology).
 */
#include <hwloc.h>
#include <stdio.h>
#include <string.h>

#include "tools/hvdrun/hvdrun.h"

const char *const hvdrun_bind_names[] = {"none", "core", "numa", "auto", NULL};
const char *const hvdrun_map_names[] = {"slot", "core", "numa", NULL};

struct hwloc_topology *hvdrun_topo_load(hvd_err_t *err) {
  hwloc_topology_t t;
  if (hwloc_topology_init(&t) != 0) {
    hvd_err_set(err, "hwloc: cannot initialise a topology");
    return NULL;
  }
  if (hwloc_topology_load(t) != 0) {
    hvd_err_set(err, "hwloc: cannot load this host's topology");
    hwloc_topology_destroy(t);
    return NULL;
  }
  return t;
}

void hvdrun_topo_free(struct hwloc_topology *topo) {
  if (topo != NULL) hwloc_topology_destroy(topo);
}

void hvdrun_set_free(void *set) {
  if (set != NULL) hwloc_bitmap_free(set);
}

static int count(hwloc_topology_t t, hwloc_obj_type_t type) {
  int n = hwloc_get_nbobjs_by_type(t, type);
  return n < 0 ? 0 : n;
}

void hvdrun_topo_summary(struct hwloc_topology *topo, char *buf, size_t size) {
  int pk = count(topo, HWLOC_OBJ_PACKAGE), nn = count(topo, HWLOC_OBJ_NUMANODE),
      co = count(topo, HWLOC_OBJ_CORE), pu = count(topo, HWLOC_OBJ_PU);
  snprintf(buf, size, "%d package%s, %d NUMA node%s, %d core%s, %d PU%s", pk,
           pk == 1 ? "" : "s", nn, nn == 1 ? "" : "s", co, co == 1 ? "" : "s", pu,
           pu == 1 ? "" : "s");
}

static hwloc_obj_type_t core_type(hwloc_topology_t t) {
  return count(t, HWLOC_OBJ_CORE) > 0 ? HWLOC_OBJ_CORE : HWLOC_OBJ_PU;
}

/* The NUMA node whose CPUs include obj's (the first one; NULL if none). */
static hwloc_obj_t numa_of(hwloc_topology_t t, hwloc_obj_t obj) {
  hwloc_obj_t n = NULL;
  while ((n = hwloc_get_next_obj_by_type(t, HWLOC_OBJ_NUMANODE, n)) != NULL)
    if (n->cpuset != NULL && hwloc_bitmap_isincluded(obj->cpuset, n->cpuset)) return n;
  return NULL;
}

int hvdrun_placement(struct hwloc_topology *topo, hvdrun_bind_t bind, hvdrun_map_t map,
                     int lr, int ls, void **set, char *desc, size_t size,
                     hvd_err_t *err) {
  hwloc_obj_type_t ct = core_type(topo);
  const char *ctname = ct == HWLOC_OBJ_CORE ? "core" : "PU";
  int ncores = count(topo, ct);
  hwloc_obj_t core = NULL;
  char cpus[256];

  *set = NULL;
  if (bind == HVDRUN_BIND_AUTO && ncores > 0 && ls >= 1 && ls <= ncores) {
    int per = ncores / ls;
    hwloc_bitmap_t s = hwloc_bitmap_alloc();
    if (s == NULL) {
      hvd_err_set(err, "out of memory");
      return -1;
    }
    for (int k = 0; k < per; k++) {
      hwloc_obj_t c = hwloc_get_obj_by_type(topo, ct, (unsigned)(lr * per + k));
      if (c != NULL && c->cpuset != NULL) hwloc_bitmap_or(s, s, c->cpuset);
    }
    hwloc_bitmap_and(s, s, hwloc_topology_get_allowed_cpuset(topo));
    hwloc_bitmap_list_snprintf(cpus, sizeof cpus, s);
    if (per == 1)
      snprintf(desc, size, "%s L#%d (cpus %s; auto: %d of %d %ss)", ctname, lr, cpus, per,
               ncores, ctname);
    else
      snprintf(desc, size, "%ss L#%d-%d (cpus %s; auto: %d of %d %ss)", ctname, lr * per,
               lr * per + per - 1, cpus, per, ncores, ctname);
    *set = s;
    return 0;
  }
  if (bind == HVDRUN_BIND_NONE || bind == HVDRUN_BIND_AUTO) {
    hwloc_bitmap_list_snprintf(cpus, sizeof cpus,
                               hwloc_topology_get_allowed_cpuset(topo));
    snprintf(desc, size, "not bound (cpus %s%s)", cpus,
             bind == HVDRUN_BIND_AUTO ? "; auto: more ranks than cores" : "");
    return 0;
  }
  if (ncores == 0) {
    hvd_err_set(err, "hwloc found no cores or PUs on this host");
    return -1;
  }
  if (map == HVDRUN_MAP_NUMA && count(topo, HWLOC_OBJ_NUMANODE) > 0) {
    int nn = count(topo, HWLOC_OBJ_NUMANODE);
    hwloc_obj_t node =
        hwloc_get_obj_by_type(topo, HWLOC_OBJ_NUMANODE, (unsigned)(lr % nn));
    int inside = node != NULL && node->cpuset != NULL
                     ? hwloc_get_nbobjs_inside_cpuset_by_type(topo, node->cpuset, ct)
                     : 0;
    if (inside > 0)
      core = hwloc_get_obj_inside_cpuset_by_type(topo, node->cpuset, ct,
                                                 (unsigned)((lr / nn) % inside));
  }
  if (core == NULL) core = hwloc_get_obj_by_type(topo, ct, (unsigned)(lr % ncores));
  if (core == NULL || core->cpuset == NULL) {
    hvd_err_set(err, "hwloc: no %s %d on this host", ctname, lr % ncores);
    return -1;
  }
  hwloc_obj_t target = core;
  if (bind == HVDRUN_BIND_NUMA) {
    hwloc_obj_t node = numa_of(topo, core);
    if (node != NULL) target = node;
  }
  hwloc_bitmap_t s = hwloc_bitmap_dup(target->cpuset);
  if (s == NULL) {
    hvd_err_set(err, "out of memory");
    return -1;
  }
  hwloc_bitmap_and(s, s, hwloc_topology_get_allowed_cpuset(topo));
  hwloc_bitmap_list_snprintf(cpus, sizeof cpus, s);
  const char *shared =
      ls > ncores && bind == HVDRUN_BIND_CORE ? ", shared: more ranks than cores" : "";
  if (target == core)
    snprintf(desc, size, "%s L#%u (cpus %s%s)", ctname, core->logical_index, cpus,
             shared);
  else
    snprintf(desc, size, "NUMA node L#%u (cpus %s), via %s L#%u", target->logical_index,
             cpus, ctname, core->logical_index);
  *set = s;
  return 0;
}

int hvdrun_bind_self(struct hwloc_topology *topo, void *set) {
  if (set == NULL) return 0;
  if (hwloc_set_cpubind(topo, set, HWLOC_CPUBIND_PROCESS) != 0) return -errno;
  return 0;
}
