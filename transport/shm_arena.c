/* POSIX shared-memory segments for same-host ranks; see shm_arena.h. */
#include "transport/shm_arena.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

void hvd_arena_name(char *out, size_t len, const char *tag, int gen, int rank) {
  uint64_t h = 14695981039346656037ull; /* FNV-1a: ranks only need to agree on it */
  for (const char *c = "hvd-shm:"; *c; c++) h = (h ^ (uint8_t)*c) * 1099511628211ull;
  for (const char *c = tag; *c; c++) h = (h ^ (uint8_t)*c) * 1099511628211ull;
  snprintf(out, len, "/hvd-%016llx-%d-%d", (unsigned long long)h, gen, rank);
}

static void seg_name(char *out, size_t len, const char *tag, int gen, int rank) {
  hvd_arena_name(out, len, tag, gen, rank);
}

hvd_status_t hvd_arena_create(const char *tag, int gen, int rank, const int *local_ranks, int n,
                              size_t slot_bytes, hvd_arena_t **out, hvd_err_t *err) {
  *out = NULL;
  hvd_arena_t *a = calloc(1, sizeof *a);
  if (a == NULL) return HVD_ERR_NO_MEMORY;
  a->n = n;
  a->me = -1;
  a->oversubscribed = n > (int)sysconf(_SC_NPROCESSORS_ONLN);
  a->stores = HVD_SHM_STORES_AUTO;
  a->slot_bytes = slot_bytes;
  a->seg_bytes = sizeof(hvd_arena_ctrl_t) + 2 * slot_bytes;
  a->ranks = malloc((size_t)n * sizeof *a->ranks);
  a->base = calloc((size_t)n, sizeof *a->base);
  if (a->ranks == NULL || a->base == NULL) {
    hvd_arena_destroy(a);
    return HVD_ERR_NO_MEMORY;
  }
  for (int i = 0; i < n; i++) {
    a->ranks[i] = local_ranks[i];
    if (local_ranks[i] == rank) a->me = i;
  }
  if (a->me < 0) {
    hvd_err_set(err, "rank %d is not among its host's ranks", rank);
    hvd_arena_destroy(a);
    return HVD_ERR_INVALID_PARAM;
  }
  seg_name(a->name, sizeof a->name, tag, gen, rank);
  shm_unlink(a->name); /* a leftover of a killed earlier job with the same token */
  int fd = shm_open(a->name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    hvd_err_set(err, "shm_open %s: %s", a->name, strerror(errno));
    a->unlinked = 1;
    hvd_arena_destroy(a);
    return HVD_ERR_TRANSPORT;
  }
  /* posix_fallocate, unlike ftruncate, fails now (ENOSPC) rather than with SIGBUS on
   * first touch when /dev/shm is too small. */
  int e = posix_fallocate(fd, 0, (off_t)a->seg_bytes);
  void *p = e == 0 ? mmap(NULL, a->seg_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
  close(fd);
  if (p == MAP_FAILED) {
    hvd_err_set(err, "shared memory segment of %zu bytes: %s", a->seg_bytes,
                strerror(e ? e : errno));
    hvd_arena_destroy(a);
    return HVD_ERR_TRANSPORT;
  }
  memset(p, 0, a->seg_bytes);
  a->base[a->me] = p;
  hvd_arena_ctrl(a, a->me)->pid = (int64_t)getpid();
  hvd_arena_ctrl(a, a->me)->self = (uint64_t)(uintptr_t)p;
#ifdef PR_SET_PTRACER
  /* Under Yama ptrace_scope 1 only ancestors may read a process's memory; the other
   * ranks are siblings. Same user only, as without Yama (Open MPI's vader does this). */
  prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
#endif
  *out = a;
  return HVD_OK;
}

hvd_status_t hvd_arena_attach(hvd_arena_t *a, const char *tag, int gen, hvd_err_t *err) {
  for (int i = 0; i < a->n; i++) {
    if (a->base[i] != NULL) continue;
    char name[96];
    seg_name(name, sizeof name, tag, gen, a->ranks[i]);
    int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
      hvd_err_set(err, "shm_open %s (rank %d): %s", name, a->ranks[i], strerror(errno));
      return HVD_ERR_TRANSPORT;
    }
    struct stat st;
    void *p = MAP_FAILED;
    if (fstat(fd, &st) == 0 && (size_t)st.st_size == a->seg_bytes)
      p = mmap(NULL, a->seg_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
      hvd_err_set(err, "mapping rank %d's segment %s failed (size %lld, expected %zu)",
                  a->ranks[i], name, (long long)st.st_size, a->seg_bytes);
      return HVD_ERR_TRANSPORT;
    }
    a->base[i] = p;
  }
  return HVD_OK;
}

/* process_vm_readv (write 0) or process_vm_writev (write 1) of len bytes between
 * local and member j's address remote, looping over partial transfers. */
static hvd_status_t cross(const hvd_arena_t *a, int j, int write, char *local, uint64_t remote,
                          size_t len, hvd_err_t *err) {
  const pid_t pid = (pid_t)hvd_arena_ctrl(a, j)->pid;
  while (len > 0) {
    struct iovec l = {.iov_base = local, .iov_len = len};
    struct iovec r = {.iov_base = (void *)(uintptr_t)remote, .iov_len = len};
    ssize_t got = write ? process_vm_writev(pid, &l, 1, &r, 1, 0)
                        : process_vm_readv(pid, &l, 1, &r, 1, 0);
    if (got <= 0) {
      hvd_err_set(err, "%s %zu bytes of local rank %d (pid %d): %s", write ? "writing" : "reading",
                  len, a->ranks[j], (int)pid, got < 0 ? strerror(errno) : "nothing moved");
      return HVD_ERR_TRANSPORT;
    }
    local += got;
    remote += (uint64_t)got;
    len -= (size_t)got;
  }
  return HVD_OK;
}

hvd_status_t hvd_arena_read(const hvd_arena_t *a, int j, void *dst, uint64_t src, size_t len,
                            hvd_err_t *err) {
  return cross(a, j, 0, dst, src, len, err);
}

hvd_status_t hvd_arena_write(const hvd_arena_t *a, int j, uint64_t dst, const void *src,
                             size_t len, hvd_err_t *err) {
  return cross(a, j, 1, (char *)(uintptr_t)src, dst, len, err);
}

int hvd_arena_probe_cma(const hvd_arena_t *a) {
  for (int j = 0; j < a->n; j++) {
    if (j == a->me) continue;
    const hvd_arena_ctrl_t *peer = hvd_arena_ctrl(a, j);
    int64_t pid = 0;
    hvd_err_t err;
    /* The peer's pid, read from its own copy: equal to what the mapping shows. */
    if (hvd_arena_read(a, j, &pid, peer->self + offsetof(hvd_arena_ctrl_t, pid), sizeof pid,
                       &err) != HVD_OK ||
        pid != peer->pid)
      return 0;
    /* Writing needs the same permission; check it too (the same value back). */
    if (hvd_arena_write(a, j, peer->self + offsetof(hvd_arena_ctrl_t, pid), &pid, sizeof pid,
                        &err) != HVD_OK)
      return 0;
  }
  return 1;
}

void hvd_arena_unlink(hvd_arena_t *a) {
  if (a && !a->unlinked) {
    shm_unlink(a->name);
    a->unlinked = 1;
  }
}

void hvd_arena_destroy(hvd_arena_t *a) {
  if (a == NULL) return;
  hvd_arena_unlink(a);
  if (a->base)
    for (int i = 0; i < a->n; i++)
      if (a->base[i]) munmap(a->base[i], a->seg_bytes);
  free(a->base);
  free(a->ranks);
  free(a);
}
