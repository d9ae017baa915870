/*
 * hvd-info: what this hvd build is and how it is configured: version, the libfabric
 * providers it can use here, the reduction kernels picked for this CPU, and every
 * HVD_* setting with its default, current value (from the environment) and help.
 * Exits 1 if a setting in the environment does not parse (and says which).
 */
#include <rdma/fabric.h>
#include <stdio.h>
#include <string.h>

#include "collectives/reduce.h"
#include "hvd.h"
#include "runtime/config.h"

static void provider(const char *name) {
  struct fi_info *hints = fi_allocinfo(), *info = NULL;
  hints->ep_attr->type = FI_EP_RDM;
  hints->caps = FI_TAGGED;
  hints->fabric_attr->prov_name = strdup(name);
  int rc = fi_getinfo(FI_VERSION(1, 17), NULL, NULL, 0, hints, &info);
  if (rc == 0 && info != NULL)
    printf("  %-14s available (domain %s, inject %zu B, max message %zu B)\n", name,
           info->domain_attr->name, info->tx_attr->inject_size, info->ep_attr->max_msg_size);
  else
    printf("  %-14s not available (%s)\n", name, fi_strerror(-rc));
  if (info) fi_freeinfo(info);
  fi_freeinfo(hints);
}

int main(int argc, char **argv) {
  if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
    printf("usage: hvd-info\nPrints the hvd version, transports and every HVD_* setting.\n");
    return 0;
  }
  printf("hvd %d.%d.%d\n", HVD_VERSION_MAJOR, HVD_VERSION_MINOR, HVD_VERSION_PATCH);
  printf("libfabric %u.%u (runtime)\n", FI_MAJOR(fi_version()), FI_MINOR(fi_version()));
  printf("reduction kernels: %s\n", hvd_reduce_isa());
  printf("transports (RDM, tagged):\n");
  provider("shm");
  provider("tcp;ofi_rxm");
  provider("verbs;ofi_rxm");
  provider("efa");

  hvd_config_t cfg;
  hvd_err_t err = {{0}};
  hvd_status_t rc = hvd_config_load(&cfg, &err);
  size_t n;
  const hvd_config_field_t *f = hvd_config_fields(&n);
  printf("\nsettings (name [alias]: current (default) - help):\n");
  for (size_t i = 0; i < n; i++) {
    char cur[HVD_CFG_STR_MAX];
    if (rc == HVD_OK) hvd_config_format(&cfg, &f[i], cur, sizeof cur);
    else snprintf(cur, sizeof cur, "?");
    printf("  %s%s%s%s: %s (%s)\n      %s\n", f[i].name, f[i].alias ? " [" : "",
           f[i].alias ? f[i].alias : "", f[i].alias ? "]" : "", cur[0] ? cur : "\"\"",
           f[i].def[0] ? f[i].def : "\"\"", f[i].help);
  }
  if (rc != HVD_OK) {
    fprintf(stderr, "hvd-info: error: %s\n", err.msg);
    return 1;
  }
  return 0;
}
