/*
 * train.h - pieces of hvd-train shared between its files: the dataset, the MLP, the
 * checkpoint format and a small seeded random number generator.
 *
 * Nothing here knows about hvd; main.c is the only file that talks to the runtime, so
 * the model and data code can be read (and reasoned about) as plain single-process code.
 */
#ifndef HVD_TRAIN_H
#define HVD_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#define TRAIN_MAX_LAYERS 8 /* weight layers: hidden layers + the output layer */
#define TRAIN_IMG_SIDE 28
#define TRAIN_IMG_PIXELS (TRAIN_IMG_SIDE * TRAIN_IMG_SIDE)
#define TRAIN_CLASSES 10

/* ---- random numbers: splitmix64 seeding xoshiro256** (same stream on every rank) ---- */
typedef struct rng {
  uint64_t s[4];
} rng_t;

void rng_seed(rng_t *r, uint64_t seed);
uint64_t rng_next(rng_t *r);
/* Uniform in [0, 1) with 53 random bits. */
double rng_uniform(rng_t *r);
/* Uniform integer in [0, n), unbiased. n > 0. */
uint64_t rng_below(rng_t *r, uint64_t n);
/* Standard normal (Box-Muller, one value per call). */
double rng_normal(rng_t *r);

/* ---- data ----------------------------------------------------------------------------- */
/* One split of the dataset: n images of 784 uint8 pixels and their labels (0..9). Kept as
 * bytes (47 MB for the training set) and normalised per batch, so four ranks on one host
 * do not hold four float copies. */
typedef struct split {
  size_t n;
  uint8_t *pixels; /* n * TRAIN_IMG_PIXELS */
  uint8_t *labels; /* n */
} split_t;

typedef struct dataset {
  split_t train, test;
} dataset_t;

/* Load Fashion-MNIST from dir (train-images-idx3-ubyte.gz, ... ; an uncompressed file of
 * the same name without .gz is accepted too). On failure returns -1 with a one-line
 * message in err naming the file and what is wrong; nothing is left allocated. */
int data_load_idx(dataset_t *d, const char *dir, char *err, size_t errlen);
/* A deterministic learnable dataset: n training samples and max(n / 6, 1) test samples,
 * each a class prototype blended with another class's and noise. Same on every rank. */
int data_synthetic(dataset_t *d, size_t n, uint64_t seed, char *err, size_t errlen);
void data_free(dataset_t *d);
/* Write the normalised float form of sample idx[i] of s into x (row i, 784 floats) and its
 * label into y[i], for i < n. */
void data_batch(const split_t *s, const uint32_t *idx, size_t n, float *x, int *y);
/* perm = a permutation of 0..n-1 that depends only on (seed, epoch). */
void data_shuffle(uint32_t *perm, size_t n, uint64_t seed, int64_t epoch);

/* ---- float16 (half.c) ------------------------------------------------------------------- */
/* dst[i] = src[i] as IEEE float16 (round to nearest even) / back to float32 (exact), i < n.
 * portable != 0 uses the scalar code even where the F16C instructions exist (tests). */
void half_from_float(uint16_t *dst, const float *src, size_t n, int portable);
void half_to_float(float *dst, const uint16_t *src, size_t n, int portable);

/* ---- model ------------------------------------------------------------------------------ */
/* A fully connected ReLU network with a softmax cross-entropy head. Layer l maps
 * dims[l] -> dims[l+1]; W[l] is dims[l+1] x dims[l], row-major; b[l] has dims[l+1].
 * Parameters, gradients and momentum each live in one contiguous array (params, grads,
 * mom) in the order W0 b0 W1 b1 ...; W/b/gW/gb/vW/vb point into them. */
typedef struct mlp {
  int nlayers;
  int dims[TRAIN_MAX_LAYERS + 1];
  size_t nparams;
  float *params, *grads, *mom;
  float *W[TRAIN_MAX_LAYERS], *b[TRAIN_MAX_LAYERS];
  float *gW[TRAIN_MAX_LAYERS], *gb[TRAIN_MAX_LAYERS];
  float *vW[TRAIN_MAX_LAYERS], *vb[TRAIN_MAX_LAYERS];
  /* activations for up to cap rows: act[0] the input, act[l] the ReLU output of layer
   * l-1, act[nlayers] the logits (then the softmax probabilities) */
  size_t cap;
  float *act[TRAIN_MAX_LAYERS + 1];
  float *delta[2]; /* backprop scratch, cap x max(dims) each, used in turn */
  int cur;         /* which delta holds the gradient of the layer about to be done */
} mlp_t;

int mlp_create(mlp_t *m, int nlayers, const int *dims, size_t cap);
void mlp_destroy(mlp_t *m);
/* Normal weights (std sqrt(2 / fan_in), sqrt(1 / fan_in) for the output layer), zero
 * biases, zero momentum. */
void mlp_init(mlp_t *m, uint64_t seed);
/* Forward n rows of act[0] (n <= cap); labels y. Returns the summed cross-entropy over the
 * rows and adds the number of correct argmax predictions to *correct. With grad != 0 the
 * output layer's delta, (softmax - onehot) * grad_scale, is left ready for backprop. */
double mlp_forward(mlp_t *m, size_t n, const int *y, int grad, float grad_scale, long *correct);
/* Backprop through layer l (from nlayers-1 down to 0, in that order, after a forward with
 * grad != 0): fills gW[l] and gb[l], then, if l > 0, the delta of layer l-1. Reads W[l]
 * but not gW/gb of other layers, so gradients already handed to an allreduce are safe. */
void mlp_backward_layer(mlp_t *m, int l, size_t n);
/* SGD with momentum (PyTorch form): g = grad + wd * w (weights only, not biases);
 * v = momentum * v + g; w -= lr * v. */
void mlp_sgd(mlp_t *m, float lr, float momentum, float wd);
/* Size in floats of W[l] and b[l]. */
size_t mlp_wsize(const mlp_t *m, int l);
size_t mlp_bsize(const mlp_t *m, int l);
/* FNV-1a 64 over the bytes of params, as a signed 64-bit integer. */
int64_t mlp_checksum(const mlp_t *m);

/* ---- checkpoint ------------------------------------------------------------------------ */
/* Save params + momentum + progress to path atomically (path.tmp, fsync, rename).
 * Load checks magic, version, layer sizes against m and a CRC32 of the whole file.
 * Both return -1 with a one-line message in err on failure. */
int ckpt_save(const mlp_t *m, const char *path, int64_t epoch, int64_t step, char *err,
              size_t errlen);
int ckpt_load(mlp_t *m, const char *path, int64_t *epoch, int64_t *step, char *err, size_t errlen);

#endif
