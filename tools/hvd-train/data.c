/*
 * data.c - Fashion-MNIST from IDX files (gzip, read with zlib), a synthetic stand-in,
 * and the per-epoch shuffle.
 *
 * IDX format (big-endian): u32 magic (0x00000803 for 3-D unsigned-byte data, i.e.
 * images; 0x00000801 for 1-D, i.e. labels), one u32 per dimension, then the bytes.
 * Every way a file can be wrong ends in one line naming the file and the problem:
 * missing, not gzip or corrupt, wrong magic, wrong image size, fewer bytes than the
 * header promises, bytes after them, labels out of range, counts that disagree between
 * the images and labels files. The data buffer grows as bytes actually arrive, so a
 * header that claims billions of images is reported as truncated, not as out of memory.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "train.h"

#define IDX_MAGIC_IMAGES 0x00000803u
#define IDX_MAGIC_LABELS 0x00000801u

/* Fashion-MNIST training-set pixel mean and standard deviation (of p / 255). */
#define FMNIST_MEAN 0.2860f
#define FMNIST_STD 0.3530f

static void fail(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* Read up to want bytes; returns bytes read, or -1 on a gzip error (message in err). */
static long long gz_read_all(gzFile gz, void *buf, size_t want, const char *path, char *err,
                             size_t errlen) {
  size_t got = 0;
  while (got < want) {
    size_t chunk = want - got;
    if (chunk > (1u << 30)) chunk = 1u << 30;
    int n = gzread(gz, (char *)buf + got, (unsigned)chunk);
    if (n < 0) {
      int zerr;
      const char *msg = gzerror(gz, &zerr);
      if (zerr == Z_ERRNO)
        fail(err, errlen, "%s: read error: %s", path, strerror(errno));
      else
        fail(err, errlen, "%s: corrupt gzip data (%s)", path, msg);
      return -1;
    }
    if (n == 0) break;
    got += (size_t)n;
  }
  return (long long)got;
}

/* Did zlib reach the end of the file in the middle of a gzip stream? (gzread then
 * returns 0 and reports Z_BUF_ERROR, "unexpected end of file".) */
static int gz_cut_short(gzFile gz) {
  int zerr;
  gzerror(gz, &zerr);
  return zerr == Z_BUF_ERROR;
}

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* dir/name.gz if it exists, else dir/name (an uncompressed file; gzread reads those
 * transparently), else an error naming the .gz path. */
static int resolve(char *out, size_t outlen, const char *dir, const char *name, char *err,
                   size_t errlen) {
  struct stat st;
  snprintf(out, outlen, "%s/%s", dir, name);
  if (stat(out, &st) == 0) return 0;
  size_t len = strlen(out);
  if (len > 3 && strcmp(out + len - 3, ".gz") == 0) {
    char plain[4096];
    snprintf(plain, sizeof plain, "%.*s", (int)(len - 3), out);
    if (stat(plain, &st) == 0) {
      snprintf(out, outlen, "%s", plain);
      return 0;
    }
  }
  fail(err, errlen, "%s: cannot open: %s", out, strerror(errno));
  return -1;
}

/*
 * Read one IDX file: check the magic and dimensions, then read exactly
 * count * item_bytes bytes (growing the buffer as they arrive) and check nothing follows.
 * images != 0: 3-D 28x28 images; else 1-D labels.
 */
static int read_idx(const char *path, int images, uint8_t **data, size_t *count, char *err,
                    size_t errlen) {
  *data = NULL;
  *count = 0;
  errno = 0;
  gzFile gz = gzopen(path, "rb");
  if (!gz) {
    fail(err, errlen, "%s: cannot open: %s", path, errno ? strerror(errno) : "out of memory");
    return -1;
  }
  gzbuffer(gz, 1u << 17);
  const uint32_t want_magic = images ? IDX_MAGIC_IMAGES : IDX_MAGIC_LABELS;
  const size_t hdr_len = images ? 16 : 8;
  uint8_t hdr[16];
  uint8_t *buf = NULL;
  long long got = gz_read_all(gz, hdr, hdr_len, path, err, errlen);
  if (got < 0) goto fail_close;
  if (got < 4) {
    fail(err, errlen, "%s: truncated: %lld bytes, shorter than an IDX header", path, got);
    goto fail_close;
  }
  uint32_t magic = be32(hdr);
  if (magic != want_magic) {
    fail(err, errlen, "%s: wrong magic 0x%08x (expected 0x%08x: an IDX file of %s)", path, magic,
         want_magic, images ? "28x28 unsigned-byte images" : "unsigned-byte labels");
    goto fail_close;
  }
  if ((size_t)got < hdr_len) {
    fail(err, errlen, "%s: truncated: header is %lld of %zu bytes", path, got, hdr_len);
    goto fail_close;
  }
  uint32_t n = be32(hdr + 4);
  if (images && (be32(hdr + 8) != TRAIN_IMG_SIDE || be32(hdr + 12) != TRAIN_IMG_SIDE)) {
    fail(err, errlen, "%s: images are %ux%u, expected %dx%d", path, be32(hdr + 8), be32(hdr + 12),
         TRAIN_IMG_SIDE, TRAIN_IMG_SIDE);
    goto fail_close;
  }
  if (n == 0) {
    fail(err, errlen, "%s: header says 0 %s", path, images ? "images" : "labels");
    goto fail_close;
  }
  const size_t item = images ? TRAIN_IMG_PIXELS : 1;
  const size_t want = (size_t)n * item;
  /* Grow as data arrives: start at <= 16 MiB, double up to what the header claims. */
  size_t cap = want < (16u << 20) ? want : (16u << 20), have = 0;
  buf = malloc(cap);
  if (!buf) {
    fail(err, errlen, "%s: out of memory", path);
    goto fail_close;
  }
  for (;;) {
    got = gz_read_all(gz, buf + have, cap - have, path, err, errlen);
    if (got < 0) goto fail_close;
    have += (size_t)got;
    if (have < cap || cap == want) break;
    size_t ncap = cap * 2 < want ? cap * 2 : want;
    uint8_t *nb = realloc(buf, ncap);
    if (!nb) {
      fail(err, errlen, "%s: out of memory for %zu bytes", path, ncap);
      goto fail_close;
    }
    buf = nb;
    cap = ncap;
  }
  if (have < want) {
    fail(err, errlen, "%s: truncated: header says %u %s (%zu bytes) but only %zu bytes follow%s",
         path, n, images ? "images" : "labels", want, have,
         gz_cut_short(gz) ? " (and the gzip stream itself ends early)" : "");
    goto fail_close;
  }
  uint8_t extra;
  got = gz_read_all(gz, &extra, 1, path, err, errlen);
  if (got < 0) goto fail_close;
  if (got > 0) {
    fail(err, errlen, "%s: unexpected data after the %u %s the header announces", path, n,
         images ? "images" : "labels");
    goto fail_close;
  }
  if (!images) {
    for (size_t i = 0; i < n; i++)
      if (buf[i] >= TRAIN_CLASSES) {
        fail(err, errlen, "%s: label %u at index %zu is out of range 0..%d", path, buf[i], i,
             TRAIN_CLASSES - 1);
        goto fail_close;
      }
  }
  gzclose(gz);
  *data = buf;
  *count = n;
  return 0;

fail_close:
  free(buf);
  gzclose(gz);
  return -1;
}

static int load_split(split_t *s, const char *dir, const char *img_name, const char *lbl_name,
                      char *err, size_t errlen) {
  char ipath[4096], lpath[4096];
  size_t ni, nl;
  memset(s, 0, sizeof *s);
  if (resolve(ipath, sizeof ipath, dir, img_name, err, errlen) != 0) return -1;
  if (resolve(lpath, sizeof lpath, dir, lbl_name, err, errlen) != 0) return -1;
  if (read_idx(ipath, 1, &s->pixels, &ni, err, errlen) != 0) return -1;
  if (read_idx(lpath, 0, &s->labels, &nl, err, errlen) != 0) goto fail_pixels;
  if (ni != nl) {
    fail(err, errlen, "%s: %zu labels, but %s has %zu images", lpath, nl, ipath, ni);
    goto fail_labels;
  }
  s->n = ni;
  return 0;

fail_labels:
  free(s->labels);
fail_pixels:
  free(s->pixels);
  memset(s, 0, sizeof *s);
  return -1;
}

int data_load_idx(dataset_t *d, const char *dir, char *err, size_t errlen) {
  struct stat st;
  memset(d, 0, sizeof *d);
  if (stat(dir, &st) != 0) {
    fail(err, errlen, "%s: data directory: %s", dir, strerror(errno));
    return -1;
  }
  if (!S_ISDIR(st.st_mode)) {
    fail(err, errlen, "%s: data directory: not a directory", dir);
    return -1;
  }
  if (load_split(&d->train, dir, "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", err,
                 errlen) != 0)
    return -1;
  if (load_split(&d->test, dir, "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", err,
                 errlen) != 0) {
    data_free(d);
    return -1;
  }
  return 0;
}

static uint8_t clamp_u8(double v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v + 0.5); }

static int synth_split(split_t *s, size_t n, const uint8_t *proto, rng_t *r) {
  s->n = n;
  s->pixels = malloc(n * TRAIN_IMG_PIXELS);
  s->labels = malloc(n);
  if (!s->pixels || !s->labels) return -1;
  for (size_t i = 0; i < n; i++) {
    int c = (int)rng_below(r, TRAIN_CLASSES);
    int o = (c + 1 + (int)rng_below(r, TRAIN_CLASSES - 1)) % TRAIN_CLASSES;
    s->labels[i] = (uint8_t)c;
    const uint8_t *pc = proto + (size_t)c * TRAIN_IMG_PIXELS;
    const uint8_t *po = proto + (size_t)o * TRAIN_IMG_PIXELS;
    uint8_t *px = s->pixels + i * TRAIN_IMG_PIXELS;
    for (int k = 0; k < TRAIN_IMG_PIXELS; k++)
      px[k] = clamp_u8(0.55 * pc[k] + 0.35 * po[k] + 60.0 * rng_normal(r));
  }
  return 0;
}

int data_synthetic(dataset_t *d, size_t n, uint64_t seed, char *err, size_t errlen) {
  memset(d, 0, sizeof *d);
  if (n == 0 || n > UINT32_MAX) {
    fail(err, errlen, "--synthetic %zu: need 1 .. %u samples", n, UINT32_MAX);
    return -1;
  }
  rng_t r;
  rng_seed(&r, seed ^ 0x5e7d5e7d5e7d5e7dull);
  /* Prototypes: coarse 7x7 random blocks upsampled to 28x28, so classes look like blobs
   * of light and dark rather than white noise. */
  uint8_t proto[TRAIN_CLASSES * TRAIN_IMG_PIXELS];
  for (int c = 0; c < TRAIN_CLASSES; c++) {
    uint8_t coarse[49];
    for (int k = 0; k < 49; k++) coarse[k] = (uint8_t)rng_below(&r, 256);
    for (int y = 0; y < TRAIN_IMG_SIDE; y++)
      for (int x = 0; x < TRAIN_IMG_SIDE; x++)
        proto[c * TRAIN_IMG_PIXELS + y * TRAIN_IMG_SIDE + x] = coarse[(y / 4) * 7 + x / 4];
  }
  size_t ntest = n / 6 > 0 ? n / 6 : 1;
  if (synth_split(&d->train, n, proto, &r) != 0 || synth_split(&d->test, ntest, proto, &r) != 0) {
    data_free(d);
    fail(err, errlen, "--synthetic %zu: out of memory", n);
    return -1;
  }
  return 0;
}

void data_free(dataset_t *d) {
  free(d->train.pixels);
  free(d->train.labels);
  free(d->test.pixels);
  free(d->test.labels);
  memset(d, 0, sizeof *d);
}

void data_batch(const split_t *s, const uint32_t *idx, size_t n, float *x, int *y) {
  const float scale = 1.0f / (255.0f * FMNIST_STD), shift = FMNIST_MEAN / FMNIST_STD;
  for (size_t i = 0; i < n; i++) {
    const uint8_t *px = s->pixels + (size_t)idx[i] * TRAIN_IMG_PIXELS;
    float *row = x + i * TRAIN_IMG_PIXELS;
    for (int k = 0; k < TRAIN_IMG_PIXELS; k++) row[k] = (float)px[k] * scale - shift;
    y[i] = s->labels[idx[i]];
  }
}

void data_shuffle(uint32_t *perm, size_t n, uint64_t seed, int64_t epoch) {
  rng_t r;
  rng_seed(&r, seed * 0x100000001b3ull + (uint64_t)epoch * 0x9e3779b97f4a7c15ull + 1);
  for (size_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
  for (size_t i = n; i > 1; i--) {
    size_t j = (size_t)rng_below(&r, i);
    uint32_t t = perm[i - 1];
    perm[i - 1] = perm[j];
    perm[j] = t;
  }
}
