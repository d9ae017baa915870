/*
 * ckpt.c - hvd-train checkpoints: parameters, momentum and progress in one file.
 *
 * Layout (host byte order; the trainer only targets little-endian x86-64/arm64):
 *   char     magic[8]   "HVDTRAIN"
 *   uint32   version    1
 *   uint32   nlayers
 *   uint32   dims[nlayers + 1]
 *   int64    epoch      epochs completed
 *   int64    step       optimizer steps completed (drives the learning-rate schedule)
 *   uint64   nparams
 *   float    params[nparams]
 *   float    momentum[nparams]
 *   uint32   crc32 of every byte before it
 * Written to path.tmp, fsync'ed, then renamed over path, so a crash mid-write leaves the
 * previous checkpoint intact.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "train.h"

#define CKPT_MAGIC "HVDTRAIN"
#define CKPT_VERSION 1u

static void fail(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

typedef struct wbuf {
  FILE *f;
  uLong crc;
  int bad;
} wbuf_t;

static void put(wbuf_t *w, const void *p, size_t n) {
  if (w->bad) return;
  if (fwrite(p, 1, n, w->f) != n) w->bad = 1;
  /* zlib's crc32 takes a uInt length; feed it in pieces. */
  const unsigned char *c = p;
  while (n > 0) {
    uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
    w->crc = crc32(w->crc, c, k);
    c += k;
    n -= k;
  }
}

int ckpt_save(const mlp_t *m, const char *path, int64_t epoch, int64_t step, char *err,
              size_t errlen) {
  char tmp[4096];
  if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) {
    fail(err, errlen, "%s: checkpoint path too long", path);
    return -1;
  }
  wbuf_t w = {.f = fopen(tmp, "wb"), .crc = crc32(0L, Z_NULL, 0)};
  if (!w.f) {
    fail(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
    return -1;
  }
  uint32_t version = CKPT_VERSION, nl = (uint32_t)m->nlayers;
  uint64_t np = m->nparams;
  put(&w, CKPT_MAGIC, 8);
  put(&w, &version, 4);
  put(&w, &nl, 4);
  for (int l = 0; l <= m->nlayers; l++) {
    uint32_t d = (uint32_t)m->dims[l];
    put(&w, &d, 4);
  }
  put(&w, &epoch, 8);
  put(&w, &step, 8);
  put(&w, &np, 8);
  put(&w, m->params, m->nparams * sizeof(float));
  put(&w, m->mom, m->nparams * sizeof(float));
  uint32_t crc = (uint32_t)w.crc;
  if (!w.bad && fwrite(&crc, 1, 4, w.f) != 4) w.bad = 1;
  int saved_errno = errno;
  if (fflush(w.f) != 0 || fsync(fileno(w.f)) != 0) {
    w.bad = 1;
    saved_errno = errno;
  }
  if (fclose(w.f) != 0 && !w.bad) {
    w.bad = 1;
    saved_errno = errno;
  }
  if (w.bad) {
    fail(err, errlen, "%s: write failed: %s", tmp, strerror(saved_errno));
    unlink(tmp);
    return -1;
  }
  if (rename(tmp, path) != 0) {
    fail(err, errlen, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
    unlink(tmp);
    return -1;
  }
  return 0;
}

typedef struct rbuf {
  const unsigned char *p;
  size_t len, off;
} rbuf_t;

static int get(rbuf_t *r, void *out, size_t n) {
  if (r->len - r->off < n) return -1;
  memcpy(out, r->p + r->off, n);
  r->off += n;
  return 0;
}

static void dims_str(char *out, size_t outlen, int n, const uint32_t *d32, const int *dint) {
  size_t k = 0;
  out[0] = '\0';
  for (int i = 0; i < n && k < outlen; i++)
    k += (size_t)snprintf(out + k, outlen - k, "%s%u", i ? "-" : "",
                          d32 ? d32[i] : (uint32_t)dint[i]);
}

int ckpt_load(mlp_t *m, const char *path, int64_t *epoch, int64_t *step, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  unsigned char *buf = NULL;
  if (!f) {
    fail(err, errlen, "%s: cannot open checkpoint: %s", path, strerror(errno));
    return -1;
  }
  /* The expected size is known from the model; read at most one byte more to notice a
   * longer file without trusting any size the file states. */
  size_t hdr = 8 + 4 + 4 + 4 * ((size_t)m->nlayers + 1) + 8 + 8 + 8;
  size_t want = hdr + 2 * m->nparams * sizeof(float) + 4;
  buf = malloc(want + 1);
  if (!buf) {
    fail(err, errlen, "%s: out of memory", path);
    goto fail_close;
  }
  size_t got = fread(buf, 1, want + 1, f);
  if (ferror(f)) {
    fail(err, errlen, "%s: read error: %s", path, strerror(errno));
    goto fail_close;
  }
  rbuf_t r = {.p = buf, .len = got};
  char magic[8];
  uint32_t version = 0, nl = 0;
  if (get(&r, magic, 8) != 0 || memcmp(magic, CKPT_MAGIC, 8) != 0) {
    fail(err, errlen, "%s: not an hvd-train checkpoint (bad magic)", path);
    goto fail_close;
  }
  if (get(&r, &version, 4) != 0) {
    fail(err, errlen, "%s: truncated checkpoint header", path);
    goto fail_close;
  }
  if (version != CKPT_VERSION) {
    fail(err, errlen, "%s: checkpoint version %u, this hvd-train reads version %u", path, version,
         CKPT_VERSION);
    goto fail_close;
  }
  if (get(&r, &nl, 4) != 0 || nl < 1 || nl > TRAIN_MAX_LAYERS) {
    fail(err, errlen, "%s: truncated or corrupt checkpoint header", path);
    goto fail_close;
  }
  uint32_t dims[TRAIN_MAX_LAYERS + 1];
  int same = nl == (uint32_t)m->nlayers;
  for (uint32_t l = 0; l <= nl; l++) {
    if (get(&r, &dims[l], 4) != 0) {
      fail(err, errlen, "%s: truncated checkpoint header", path);
      goto fail_close;
    }
    if (same && dims[l] != (uint32_t)m->dims[l]) same = 0;
  }
  if (!same) {
    char have[128], need[128];
    dims_str(have, sizeof have, (int)nl + 1, dims, NULL);
    dims_str(need, sizeof need, m->nlayers + 1, NULL, m->dims);
    fail(err, errlen, "%s: checkpoint is for a %s network, this run builds %s (see --hidden)", path,
         have, need);
    goto fail_close;
  }
  uint64_t np;
  int64_t e, s;
  if (get(&r, &e, 8) != 0 || get(&r, &s, 8) != 0 || get(&r, &np, 8) != 0) {
    fail(err, errlen, "%s: truncated checkpoint header", path);
    goto fail_close;
  }
  if (np != m->nparams || e < 0 || s < 0) {
    fail(err, errlen, "%s: corrupt checkpoint header", path);
    goto fail_close;
  }
  if (got != want) {
    fail(err, errlen, "%s: checkpoint is %s: %zu%s bytes, expected %zu", path,
         got < want ? "truncated" : "too long", got, got > want ? "+" : "", want);
    goto fail_close;
  }
  uint32_t crc_file;
  memcpy(&crc_file, buf + want - 4, 4);
  uLong crc = crc32(0L, Z_NULL, 0);
  for (size_t off = 0; off < want - 4;) {
    uInt k = want - 4 - off > (1u << 30) ? (1u << 30) : (uInt)(want - 4 - off);
    crc = crc32(crc, buf + off, k);
    off += k;
  }
  if ((uint32_t)crc != crc_file) {
    fail(err, errlen, "%s: checkpoint CRC mismatch (file corrupt)", path);
    goto fail_close;
  }
  memcpy(m->params, buf + r.off, m->nparams * sizeof(float));
  memcpy(m->mom, buf + r.off + m->nparams * sizeof(float), m->nparams * sizeof(float));
  *epoch = e;
  *step = s;
  free(buf);
  fclose(f);
  return 0;

fail_close:
  free(buf);
  fclose(f);
  return -1;
}
