/*
 * Job identity from the environment hvdrun sets. HOROVOD_* names are accepted as
 * aliases. With no rank variables at all the job is a single rank.
 */
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

hvd_status_t hvd_identity_from_env(hvd_identity_t *id, hvd_err_t *err) {
  long size, rank, lrank, lsize, crank, csize, port;
  const char *which;
  memset(id, 0, sizeof *id);
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
      hvd_err_set(err, "HVD_JOB_TOKEN must be set to the %d-character job token that the "
                       "launcher generated", HVD_RDV_TOKEN_LEN);
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
