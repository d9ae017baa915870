/*
 * mlp.c - the model: a fully connected ReLU network with a softmax cross-entropy head,
 * forward and backward through OpenBLAS sgemm, and SGD with momentum and weight decay.
 *
 * Shapes, for a batch of n rows (row-major throughout):
 *   forward   act[l+1] = relu(act[l] (n x din) * W[l]^T (din x dout) + b[l])
 *   backward  gW[l]    = delta^T (dout x n) * act[l] (n x din)
 *             gb[l]    = column sums of delta
 *             delta'   = (delta (n x dout) * W[l] (dout x din)) masked by act[l] > 0
 * Backward runs one layer per call so the caller can hand each layer's gradients to an
 * allreduce while the earlier layers are still being computed.
 */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train.h"

size_t mlp_wsize(const mlp_t *m, int l) { return (size_t)m->dims[l + 1] * (size_t)m->dims[l]; }
size_t mlp_bsize(const mlp_t *m, int l) { return (size_t)m->dims[l + 1]; }

static float *falloc(size_t n) {
  /* 64-byte aligned for the BLAS kernels; rounded up as aligned_alloc demands. */
  size_t bytes = (n * sizeof(float) + 63) & ~(size_t)63;
  float *p = aligned_alloc(64, bytes ? bytes : 64);
  if (p) memset(p, 0, bytes);
  return p;
}

int mlp_create(mlp_t *m, int nlayers, const int *dims, size_t cap) {
  memset(m, 0, sizeof *m);
  if (nlayers < 1 || nlayers > TRAIN_MAX_LAYERS) return -1;
  m->nlayers = nlayers;
  int maxdim = 0;
  for (int l = 0; l <= nlayers; l++) {
    m->dims[l] = dims[l];
    if (dims[l] > maxdim) maxdim = dims[l];
  }
  for (int l = 0; l < nlayers; l++) m->nparams += mlp_wsize(m, l) + mlp_bsize(m, l);
  m->params = falloc(m->nparams);
  m->grads = falloc(m->nparams);
  m->mom = falloc(m->nparams);
  if (!m->params || !m->grads || !m->mom) goto fail;
  size_t off = 0;
  for (int l = 0; l < nlayers; l++) {
    m->W[l] = m->params + off;
    m->gW[l] = m->grads + off;
    m->vW[l] = m->mom + off;
    off += mlp_wsize(m, l);
    m->b[l] = m->params + off;
    m->gb[l] = m->grads + off;
    m->vb[l] = m->mom + off;
    off += mlp_bsize(m, l);
  }
  m->cap = cap;
  for (int l = 0; l <= nlayers; l++)
    if (!(m->act[l] = falloc(cap * (size_t)dims[l]))) goto fail;
  for (int k = 0; k < 2; k++)
    if (!(m->delta[k] = falloc(cap * (size_t)maxdim))) goto fail;
  return 0;

fail:
  mlp_destroy(m);
  return -1;
}

void mlp_destroy(mlp_t *m) {
  free(m->params);
  free(m->grads);
  free(m->mom);
  for (int l = 0; l <= TRAIN_MAX_LAYERS; l++) free(m->act[l]);
  free(m->delta[0]);
  free(m->delta[1]);
  memset(m, 0, sizeof *m);
}

void mlp_init(mlp_t *m, uint64_t seed) {
  rng_t r;
  rng_seed(&r, seed);
  for (int l = 0; l < m->nlayers; l++) {
    /* He for layers feeding a ReLU, LeCun (1 / fan_in) for the logits so the first loss
     * is near ln(classes) instead of several times it. */
    double std = sqrt((l < m->nlayers - 1 ? 2.0 : 1.0) / m->dims[l]);
    size_t nw = mlp_wsize(m, l);
    for (size_t i = 0; i < nw; i++) m->W[l][i] = (float)(std * rng_normal(&r));
    memset(m->b[l], 0, mlp_bsize(m, l) * sizeof(float));
  }
  memset(m->mom, 0, m->nparams * sizeof(float));
}

double mlp_forward(mlp_t *m, size_t n, const int *y, int grad, float grad_scale, long *correct) {
  const int L = m->nlayers;
  for (int l = 0; l < L; l++) {
    const int din = m->dims[l], dout = m->dims[l + 1];
    float *out = m->act[l + 1];
    for (size_t i = 0; i < n; i++) memcpy(out + i * (size_t)dout, m->b[l], (size_t)dout * 4);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, dout, din, 1.0f, m->act[l], din,
                m->W[l], din, 1.0f, out, dout);
    if (l < L - 1)
      for (size_t i = 0; i < n * (size_t)dout; i++) out[i] = out[i] > 0.0f ? out[i] : 0.0f;
  }
  /* Softmax cross-entropy, row by row: loss_i = logsumexp(z_i) - z_i[y_i]. */
  const int K = m->dims[L];
  float *d = m->delta[0];
  double loss = 0.0;
  long ok = 0;
  for (size_t i = 0; i < n; i++) {
    float *z = m->act[L] + i * (size_t)K;
    int arg = 0;
    for (int k = 1; k < K; k++)
      if (z[k] > z[arg]) arg = k;
    const float zmax = z[arg];
    double sum = 0.0;
    for (int k = 0; k < K; k++) sum += exp((double)(z[k] - zmax));
    loss += (double)zmax + log(sum) - (double)z[y[i]];
    ok += arg == y[i];
    if (grad) {
      float *di = d + i * (size_t)K;
      for (int k = 0; k < K; k++) {
        float p = (float)(exp((double)(z[k] - zmax)) / sum);
        di[k] = (p - (k == y[i] ? 1.0f : 0.0f)) * grad_scale;
      }
    }
  }
  m->cur = 0;
  if (correct) *correct += ok;
  return loss;
}

void mlp_backward_layer(mlp_t *m, int l, size_t n) {
  const int din = m->dims[l], dout = m->dims[l + 1];
  const float *d = m->delta[m->cur];
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dout, din, (int)n, 1.0f, d, dout, m->act[l],
              din, 0.0f, m->gW[l], din);
  float *gb = m->gb[l];
  memset(gb, 0, (size_t)dout * sizeof(float));
  for (size_t i = 0; i < n; i++)
    for (int j = 0; j < dout; j++) gb[j] += d[i * (size_t)dout + (size_t)j];
  if (l == 0) return;
  float *dn = m->delta[1 - m->cur];
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, din, dout, 1.0f, d, dout, m->W[l],
              din, 0.0f, dn, din);
  const float *a = m->act[l];
  for (size_t i = 0; i < n * (size_t)din; i++)
    if (a[i] <= 0.0f) dn[i] = 0.0f;
  m->cur = 1 - m->cur;
}

/* The update touches every parameter three times per step on every rank, so it is worth
 * vectorising: blocks of 8 with a fixed trip count let GCC's -O2 (very cheap cost model)
 * vectorise the body; the tail runs scalar. */
static void sgd(float *restrict w, const float *restrict g, float *restrict v, size_t n,
                float lr, float mu, float wd) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (size_t k = i; k < i + 8; k++) {
      v[k] = mu * v[k] + (g[k] + wd * w[k]);
      w[k] -= lr * v[k];
    }
  for (; i < n; i++) {
    v[i] = mu * v[i] + (g[i] + wd * w[i]);
    w[i] -= lr * v[i];
  }
}

void mlp_sgd(mlp_t *m, float lr, float momentum, float wd) {
  for (int l = 0; l < m->nlayers; l++) {
    sgd(m->W[l], m->gW[l], m->vW[l], mlp_wsize(m, l), lr, momentum, wd);
    sgd(m->b[l], m->gb[l], m->vb[l], mlp_bsize(m, l), lr, momentum, 0.0f);
  }
}

int64_t mlp_checksum(const mlp_t *m) {
  uint64_t h = 0xcbf29ce484222325ull;
  const unsigned char *p = (const unsigned char *)m->params;
  for (size_t i = 0; i < m->nparams * sizeof(float); i++) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return (int64_t)h;
}
