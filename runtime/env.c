/*
 * Job identity from the environment hvdrun sets. HOROVOD_* names are accepted as
 * aliases. With no rank variables at all the job is a single rank.
 *
 * Jobs started by Open MPI's mpirun or Slurm's srun instead: when HVD_RANK (and its
 * alias) is unset, the identity comes from OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,
 * LOCAL_SIZE}, or from SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID,
 * SLURM_STEP_TASKS_PER_NODE, SLURM_NODEID and SLURM_STEP_NUM_NODES (srun sets the
 * STEP ones; a batch script's own environment does not, so a plain program in an
 * sbatch script stays a single rank). Nobody runs a rendezvous server for such a
 * job: rank 0 serves it in-process at HVD_RENDEZVOUS_ADDR:HVD_RENDEZVOUS_PORT, which
 * the user exports (have_launcher = 2 tells hvd_init). The job token is
 * HVD_JOB_TOKEN; without it, and only when the rendezvous address is a loopback one
 * (a single-host job), a token is derived from the launcher's job id and the port:
 * that keeps concurrent jobs apart but is no secret, so a job across hosts must
 * export a real one.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "runtime/ctx.h"

static const char *env2(const char *a, const char *b, const char **which) {
  const char *v = getenv(a);
  *which = a;
  if (v == NULL || *v == '\0') {
    v = getenv(b);
    *which = b;
  }
  return (v != NULL && *v != '\0') ? v : NULL;
}

static hvd_status_t get_int(const char *a, const char *b, long lo, long hi, long def, long *out,
                            hvd_err_t *err) {
  const char *which;
  const char *v = env2(a, b, &which);
  if (v == NULL) {
    *out = def;
    return HVD_OK;
  }
  if (hvd_parse_int(v, lo, hi, out) != 0) {
    hvd_err_set(err, "%s=\"%.64s\" is not valid: expected an integer in [%ld, %ld]", which, v,
                lo, hi);
    return HVD_ERR_INVALID_PARAM;
  }
  return HVD_OK;
}

/* Tasks on node `node` from Slurm's "2(x3),1" (counts with repeats, by node). */
static long slurm_tasks_on_node(const char *spec, long node) {
  const char *p = spec;
  while (*p != '\0') {
    char *end;
    long count = strtol(p, &end, 10), reps = 1;
    if (end == p || count < 1) return -1;
    p = end;
    if (strncmp(p, "(x", 2) == 0) {
      reps = strtol(p + 2, &end, 10);
      if (end == p + 2 || *end != ')' || reps < 1) return -1;
      p = end + 1;
    }
    if (node < reps) return count;
    node -= reps;
    if (*p == ',') p++;
    else if (*p != '\0') return -1;
  }
  return -1;
}

/* Identity set by mpirun or srun into id; 1 if one was found, 0 if not, negative
 * status with err on values that do not parse. */
static int identity_from_other_launcher(hvd_identity_t *id, hvd_err_t *err) {
  long v[6] = {0, 1, 0, 1, 0, 1}; /* rank size lrank lsize crank csize */
  const char *which;
  if (getenv("OMPI_COMM_WORLD_RANK") != NULL) {
    HVD_CHECK(get_int("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", 1, HVD_TP_MAX_RANKS - 1, 1,
                      &v[1], err));
    HVD_CHECK(get_int("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_RANK", 0, v[1] - 1, 0, &v[0], err));
    HVD_CHECK(get_int("OMPI_COMM_WORLD_LOCAL_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", 1, v[1], v[1],
                      &v[3], err));
    HVD_CHECK(get_int("OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", 0, v[3] - 1,
                      0, &v[2], err));
    if (v[1] % v[3] == 0) { /* mpirun fills hosts in order: as hvdrun, Horovod's cross */
      v[5] = v[1] / v[3];
      v[4] = v[0] / v[3];
    }
  } else if (getenv("SLURM_PROCID") != NULL && getenv("SLURM_STEP_NUM_TASKS") != NULL) {
    HVD_CHECK(get_int("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", 1, HVD_TP_MAX_RANKS - 1, 1, &v[1],
                      err));
    HVD_CHECK(get_int("SLURM_PROCID", "SLURM_PROCID", 0, v[1] - 1, 0, &v[0], err));
    HVD_CHECK(get_int("SLURM_STEP_NUM_NODES", "SLURM_NNODES", 1, v[1], 1, &v[5], err));
    HVD_CHECK(get_int("SLURM_NODEID", "SLURM_NODEID", 0, v[5] - 1, 0, &v[4], err));
    const char *tpn = env2("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE", &which);
    long ls = tpn != NULL ? slurm_tasks_on_node(tpn, v[4]) : -1;
    v[3] = ls >= 1 && ls <= v[1] ? ls : (v[5] == 1 ? v[1] : 1);
    HVD_CHECK(get_int("SLURM_LOCALID", "SLURM_LOCALID", 0, v[3] - 1, 0, &v[2], err));
  } else {
    return 0;
  }
  id->rank = (int)v[0];
  id->size = (int)v[1];
  id->local_rank = (int)v[2];
  id->local_size = (int)v[3];
  id->cross_rank = (int)v[4];
  id->cross_size = (int)v[5];
  return 1;
}

static int is_loopback(const char *addr) {
  struct in_addr a4;
  struct in6_addr a6;
  if (strcmp(addr, "localhost") == 0) return 1;
  if (inet_pton(AF_INET, addr, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  return inet_pton(AF_INET6, addr, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

/* A token from what every rank of an mpirun/srun job shares (not a secret). */
static void derived_token(const char *port, char out[HVD_RDV_TOKEN_LEN + 1]) {
  const char *parts[] = {"hvd-derived-token", getenv("PMIX_NAMESPACE"),
                         getenv("OMPI_MCA_ess_base_jobid"), getenv("SLURM_JOB_ID"),
                         getenv("SLURM_STEP_ID"), port};
  uint64_t h[2] = {0xcbf29ce484222325ull, 0x84222325cbf29ce4ull};
  for (int k = 0; k < 2; k++)
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
      for (const char *c = parts[i] ? parts[i] : "-"; *c != '\0'; c++) {
        h[k] ^= (unsigned char)*c;
        h[k] *= 0x100000001b3ull;
      }
  snprintf(out, HVD_RDV_TOKEN_LEN + 1, "%016llx%016llx", (unsigned long long)h[0],
           (unsigned long long)h[1]);
}

hvd_status_t hvd_identity_from_env(hvd_identity_t *id, hvd_err_t *err) {
  long size, rank, lrank, lsize, crank, csize, port;
  const char *which;
  memset(id, 0, sizeof *id);
  if (env2("HVD_RANK", "HOROVOD_RANK", &which) == NULL) {
    int other = identity_from_other_launcher(id, err);
    if (other < 0) return (hvd_status_t)other;
    if (other > 0) {
      const char *host = env2("HVD_HOSTNAME", "HOROVOD_HOSTNAME", &which);
      if (host != NULL && strlen(host) < sizeof id->hostname)
        strcpy(id->hostname, host);
      else if (gethostname(id->hostname, sizeof id->hostname - 1) != 0)
        strcpy(id->hostname, "localhost");
      if (id->size == 1) return HVD_OK;
      const char *addr = env2("HVD_RENDEZVOUS_ADDR", "HOROVOD_GLOO_RENDEZVOUS_ADDR", &which);
      const char *portstr = env2("HVD_RENDEZVOUS_PORT", "HOROVOD_GLOO_RENDEZVOUS_PORT", &which);
      if (addr == NULL || portstr == NULL) {
        hvd_err_set(err, "started by mpirun or srun without hvdrun: export HVD_RENDEZVOUS_ADDR "
                         "(rank 0's host) and HVD_RENDEZVOUS_PORT (a free port there) to "
                         "every rank");
        return HVD_ERR_INVALID_PARAM;
      }
      if (strlen(addr) >= sizeof id->rdv_addr) {
        hvd_err_set(err, "%s is too long", which);
        return HVD_ERR_INVALID_PARAM;
      }
      strcpy(id->rdv_addr, addr);
      HVD_CHECK(get_int("HVD_RENDEZVOUS_PORT", "HOROVOD_GLOO_RENDEZVOUS_PORT", 1, 65535, 0, &port,
                        err));
      id->rdv_port = (int)port;
      const char *tok = env2("HVD_JOB_TOKEN", "HOROVOD_JOB_TOKEN", &which);
      if (tok != NULL && strlen(tok) == HVD_RDV_TOKEN_LEN) {
        strcpy(id->token, tok);
      } else if (tok == NULL && is_loopback(addr)) {
        derived_token(portstr, id->token);
      } else {
        hvd_err_set(err, "%s must be %d characters, the same for every rank (e.g. "
                         "export HVD_JOB_TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \\n')"
                         "); it may be left unset only when HVD_RENDEZVOUS_ADDR is a loopback "
                         "address", tok ? which : "HVD_JOB_TOKEN", HVD_RDV_TOKEN_LEN);
        return HVD_ERR_INVALID_PARAM;
      }
      id->have_launcher = 2; /* rank 0 serves the rendezvous (hvd_init) */
      return HVD_OK;
    }
  }
  HVD_CHECK(get_int("HVD_SIZE", "HOROVOD_SIZE", 1, HVD_TP_MAX_RANKS - 1, 1, &size, err));
  HVD_CHECK(get_int("HVD_RANK", "HOROVOD_RANK", 0, size - 1, 0, &rank, err));
  if (size > 1 && env2("HVD_RANK", "HOROVOD_RANK", &which) == NULL) {
    hvd_err_set(err, "HVD_SIZE=%ld but HVD_RANK is not set", size);
    return HVD_ERR_INVALID_PARAM;
  }
  HVD_CHECK(get_int("HVD_LOCAL_SIZE", "HOROVOD_LOCAL_SIZE", 1, size, size, &lsize, err));
  HVD_CHECK(get_int("HVD_LOCAL_RANK", "HOROVOD_LOCAL_RANK", 0, lsize - 1,
                    lsize == size ? rank : 0, &lrank, err));
  HVD_CHECK(get_int("HVD_CROSS_SIZE", "HOROVOD_CROSS_SIZE", 1, size, 1, &csize, err));
  HVD_CHECK(get_int("HVD_CROSS_RANK", "HOROVOD_CROSS_RANK", 0, csize - 1, 0, &crank, err));
  id->size = (int)size;
  id->rank = (int)rank;
  id->local_size = (int)lsize;
  id->local_rank = (int)lrank;
  id->cross_size = (int)csize;
  id->cross_rank = (int)crank;

  const char *host = env2("HVD_HOSTNAME", "HOROVOD_HOSTNAME", &which);
  if (host != NULL) {
    if (strlen(host) >= sizeof id->hostname) {
      hvd_err_set(err, "%s is longer than %zu characters", which, sizeof id->hostname - 1);
      return HVD_ERR_INVALID_PARAM;
    }
    strcpy(id->hostname, host);
  } else if (gethostname(id->hostname, sizeof id->hostname - 1) != 0) {
    strcpy(id->hostname, "localhost");
  }

  const char *addr = env2("HVD_RENDEZVOUS_ADDR", "HOROVOD_GLOO_RENDEZVOUS_ADDR", &which);
  if (addr != NULL) {
    if (strlen(addr) >= sizeof id->rdv_addr) {
      hvd_err_set(err, "%s is too long", which);
      return HVD_ERR_INVALID_PARAM;
    }
    strcpy(id->rdv_addr, addr);
    HVD_CHECK(get_int("HVD_RENDEZVOUS_PORT", "HOROVOD_GLOO_RENDEZVOUS_PORT", 1, 65535, 0, &port,
                      err));
    if (port == 0) {
      hvd_err_set(err, "HVD_RENDEZVOUS_ADDR is set but HVD_RENDEZVOUS_PORT is not");
      return HVD_ERR_INVALID_PARAM;
    }
    id->rdv_port = (int)port;
    const char *tok = env2("HVD_JOB_TOKEN", "HOROVOD_JOB_TOKEN", &which);
    if (tok == NULL || strlen(tok) != HVD_RDV_TOKEN_LEN) {
      hvd_err_set(err, "%s must be set to the %d-character job token that the launcher "
                       "generated", tok ? which : "HVD_JOB_TOKEN", HVD_RDV_TOKEN_LEN);
      return HVD_ERR_INVALID_PARAM;
    }
    strcpy(id->token, tok);
    id->have_launcher = 1;
  } else if (size > 1) {
    hvd_err_set(err, "HVD_SIZE=%ld but HVD_RENDEZVOUS_ADDR is not set: start the job with "
                     "hvdrun", size);
    return HVD_ERR_INVALID_PARAM;
  }
  return HVD_OK;
}
