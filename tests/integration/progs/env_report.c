/*
 * A rank program for launcher tests: prints, on one line, what hvdrun gave it
 *
 *   env_report [--init] [VAR...]
 *   -> "report rank=R size=S local_rank=.. local_size=.. cross_rank=.. cross_size=..
 *       host=H cpus=0,1 cwd=DIR VAR=value... end"
 *
 * cpus is the CPU affinity (sched_getaffinity) as a list; a VAR that is not set
 * prints as VAR=(unset). With --init it also runs hvd_init/hvd_shutdown and adds
 * "init=ok" (or exits 1), so the rendezvous sees it.
 */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hvd.h"

static const char *env(const char *name) {
  const char *v = getenv(name);
  return v != NULL ? v : "(unset)";
}

int main(int argc, char **argv) {
  char line[8192];
  size_t off = 0;
  int init = argc > 1 && strcmp(argv[1], "--init") == 0;
  cpu_set_t set;
  char cwd[4096];

#define ADD(...) off += (size_t)snprintf(line + off, sizeof line - off, __VA_ARGS__)
  ADD("report rank=%s size=%s local_rank=%s local_size=%s cross_rank=%s cross_size=%s "
      "host=%s",
      env("HVD_RANK"), env("HVD_SIZE"), env("HVD_LOCAL_RANK"), env("HVD_LOCAL_SIZE"),
      env("HVD_CROSS_RANK"), env("HVD_CROSS_SIZE"), env("HVD_HOSTNAME"));
  ADD(" cpus=");
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int first = 1;
    for (int c = 0; c < CPU_SETSIZE && off < sizeof line - 16; c++)
      if (CPU_ISSET(c, &set)) {
        ADD("%s%d", first ? "" : ",", c);
        first = 0;
      }
  }
  ADD(" cwd=%s", getcwd(cwd, sizeof cwd) != NULL ? cwd : "?");
  for (int i = init ? 2 : 1; i < argc && off < sizeof line - 64; i++)
    ADD(" %s=%s", argv[i], env(argv[i]));
  if (init) {
    hvd_ctx_t *ctx = NULL;
    if (hvd_init(&ctx) != HVD_OK) {
      fprintf(stderr, "env_report: hvd_init failed\n");
      return 1;
    }
    ADD(" init=ok");
    hvd_shutdown(ctx);
  }
  ADD(" end\n");
#undef ADD
  fwrite(line, 1, off < sizeof line ? off : sizeof line - 1, stdout);
  return 0;
}
