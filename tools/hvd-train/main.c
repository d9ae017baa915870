/*
 * hvd-train: synchronous data-parallel SGD for an MLP on Fashion-MNIST, through the hvd
 * public API only. Run it with: hvdrun -np 2 hvd-train [options]
 *
 * What each rank does (Horovod's recipe, in C):
 *  - rank 0 initialises the weights (or loads a checkpoint) and every parameter tensor
 *    is broadcast from it, so all ranks start from the same bytes;
 *  - every epoch all ranks draw the same permutation of the training set (seeded by
 *    --seed and the epoch). Global batch k is perm[k*B, (k+1)*B); rank r trains on the
 *    r-th of its np equal slices. The last N mod B samples of an epoch are dropped;
 *  - each rank's gradient is the mean over its slice; an AVERAGE allreduce turns it into
 *    the mean over the global batch, exactly what one rank with batch B computes;
 *  - backprop runs from the last layer down. As soon as a layer's gW and gb exist they
 *    are submitted (async, named grad.W<l> / grad.b<l>) and the earlier layers are
 *    computed while they travel; the step waits for all of them only right before the
 *    optimizer update. The time spent in that wait is reported as "allreduce wait";
 *  - the learning rate is scaled by the number of ranks and warmed up linearly from the
 *    single-rank value over the first --warmup-epochs (Goyal et al., Horovod's
 *    LearningRateWarmupCallback), then follows a cosine decay (--schedule);
 *  - test evaluation is sharded across ranks and summed with an allreduce;
 *  - at the end every rank checksums its parameters; an allreduce of the MIN and MAX
 *    proves they are bit-identical everywhere (else: error, exit 1).
 * Only rank 0 prints progress. Errors name what went wrong, on one line, and exit 1.
 */
#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hvd.h"
#include "train.h"

#define DEFAULT_DATA_DIR "/usr/share/datasets/fashion-mnist"
#define EVAL_ROWS 1000 /* rows per evaluation forward pass */

typedef enum { SCHED_COSINE, SCHED_CONSTANT } schedule_t;

typedef struct opts {
  const char *data_dir;
  size_t synthetic; /* 0: read data_dir */
  int nhidden;
  int hidden[TRAIN_MAX_LAYERS];
  int epochs;
  long batch; /* global */
  double lr, momentum, wd, warmup_epochs;
  int lr_scale;
  schedule_t schedule;
  uint64_t seed;
  long long steps; /* 0: no limit */
  int print_loss;
  int overlap; /* submit each layer's gradients as soon as they exist */
  int sync_only; /* measurement: ranks train alone, synchronized by 1-element allreduces */
  int fp16;      /* gradients allreduced as float16 (Horovod's fp16 compression) */
  const char *timeline, *checkpoint, *resume;
  int blas_threads;
} opts_t;

/* Everything main's helpers need to report and clean up. */
typedef struct job {
  hvd_ctx_t *ctx;
  int rank, size;
} job_t;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void usage(FILE *f) {
  /* clang-format off */
  fprintf(f,
"usage: hvdrun -np N hvd-train [options]      (or hvd-train [options] for one rank)\n"
"\n"
"Synchronous data-parallel SGD for an MLP on Fashion-MNIST through hvd.\n"
"\n"
"data and model\n"
"  --data DIR           IDX files (gzip or plain) [" DEFAULT_DATA_DIR "]\n"
"  --synthetic N        instead: N generated training samples (+ N/6 test), learnable,\n"
"                       deterministic; for benchmarks\n"
"  --hidden LIST        hidden layer widths, comma separated, or 'none' [256,128]\n"
"training\n"
"  --epochs E           epochs [15]\n"
"  --batch B            GLOBAL batch size; each of the N ranks trains on B/N samples per\n"
"                       step, so B must be a multiple of N. Each epoch has\n"
"                       floor(samples/B) steps: the remainder (samples mod B) of the\n"
"                       shuffled epoch is dropped [128]\n"
"  --lr LR              single-rank learning rate; scaled by N (see --no-lr-scale) [0.05]\n"
"  --no-lr-scale        use LR as is instead of LR x N\n"
"  --warmup-epochs W    linear warm-up from LR to LR x N over the first W epochs\n"
"                       (may be fractional) [1]\n"
"  --schedule S         after warm-up: cosine (decay to 0 at the last epoch) or constant\n"
"                       [cosine]\n"
"  --momentum M         SGD momentum [0.9]\n"
"  --wd WD              weight decay (on weights, not biases) [5e-4]\n"
"  --seed S             initial weights, epoch shuffles, synthetic data [42]\n"
"  --steps N            stop after N optimizer steps in this run (tests)\n"
"output and state\n"
"  --print-loss         print every step's global-batch loss: step K loss X (rank 0)\n"
"  --timeline FILE      set HVD_TIMELINE=FILE for the runtime (before hvd_init)\n"
"  --checkpoint FILE    after every epoch rank 0 saves weights, momentum and progress\n"
"                       (FILE.tmp, then renamed over FILE)\n"
"  --resume FILE        rank 0 loads FILE, broadcasts it, training continues after the\n"
"                       saved epoch\n"
"  --blas-threads T     OpenBLAS threads per rank [1]\n"
"  --no-overlap         submit the gradients only after the whole backward pass (to\n"
"                       measure what overlapping them with it gains)\n"
"  --fp16-allreduce     allreduce the gradients as float16 (Horovod's fp16\n"
"                       compression): half the bytes, rounded to 11 significant bits\n"
"  --sync-only          measurement mode: each rank trains its own model (gradients\n"
"                       are not averaged); every step still submits one allreduce per\n"
"                       gradient, of one element, at the same points, so the ranks\n"
"                       negotiate and wait for each other exactly as in training:\n"
"                       what a step costs without the bytes (tools/train-scaling.sh)\n"
"  --help\n"
"\n"
"Rank 0 prints one line per epoch (loss, train acc, test acc, global samples/s, share of\n"
"step time spent waiting for gradient allreduces), then 'final test accuracy: 0.XXXX'.\n"
"At the end all ranks compare a checksum of their parameters; exit 1 if they differ.\n");
  /* clang-format on */
}

static int parse_long(const char *opt, const char *s, long lo, long hi, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) {
    fprintf(stderr, "hvd-train: %s '%s': expected an integer in %ld..%ld\n", opt, s, lo, hi);
    return -1;
  }
  *out = v;
  return 0;
}

static int parse_double(const char *opt, const char *s, double lo, double hi, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !(v >= lo && v <= hi)) {
    fprintf(stderr, "hvd-train: %s '%s': expected a number in %g..%g\n", opt, s, lo, hi);
    return -1;
  }
  *out = v;
  return 0;
}

static int parse_hidden(const char *s, opts_t *o) {
  o->nhidden = 0;
  if (strcmp(s, "none") == 0) return 0;
  char buf[256];
  snprintf(buf, sizeof buf, "%s", s);
  for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    long v;
    if (o->nhidden == TRAIN_MAX_LAYERS - 1) {
      fprintf(stderr, "hvd-train: --hidden '%s': at most %d hidden layers\n", s,
              TRAIN_MAX_LAYERS - 1);
      return -1;
    }
    if (parse_long("--hidden", tok, 1, 65536, &v) != 0) return -1;
    o->hidden[o->nhidden++] = (int)v;
  }
  if (o->nhidden == 0) {
    fprintf(stderr, "hvd-train: --hidden '%s': give widths like 256,128 or 'none'\n", s);
    return -1;
  }
  return 0;
}

/* Returns 0 to run, 1 to exit 0 (--help), -1 to exit 2 (bad usage). */
static int parse_args(int argc, char **argv, opts_t *o) {
  /* clang-format off */
  enum { O_DATA = 256, O_SYNTH, O_HIDDEN, O_EPOCHS, O_BATCH, O_LR, O_NOSCALE, O_WARMUP,
         O_SCHED, O_MOM, O_WD, O_SEED, O_STEPS, O_PRINTLOSS, O_TIMELINE, O_CKPT, O_RESUME,
         O_BLAS, O_NOOVERLAP, O_SYNCONLY, O_FP16, O_HELP };
  static const struct option longopts[] = {
      {"data", required_argument, 0, O_DATA},
      {"synthetic", required_argument, 0, O_SYNTH},
      {"hidden", required_argument, 0, O_HIDDEN},
      {"epochs", required_argument, 0, O_EPOCHS},
      {"batch", required_argument, 0, O_BATCH},
      {"lr", required_argument, 0, O_LR},
      {"no-lr-scale", no_argument, 0, O_NOSCALE},
      {"warmup-epochs", required_argument, 0, O_WARMUP},
      {"schedule", required_argument, 0, O_SCHED},
      {"momentum", required_argument, 0, O_MOM},
      {"wd", required_argument, 0, O_WD},
      {"seed", required_argument, 0, O_SEED},
      {"steps", required_argument, 0, O_STEPS},
      {"print-loss", no_argument, 0, O_PRINTLOSS},
      {"timeline", required_argument, 0, O_TIMELINE},
      {"checkpoint", required_argument, 0, O_CKPT},
      {"resume", required_argument, 0, O_RESUME},
      {"blas-threads", required_argument, 0, O_BLAS},
      {"no-overlap", no_argument, 0, O_NOOVERLAP},
      {"sync-only", no_argument, 0, O_SYNCONLY},
      {"fp16-allreduce", no_argument, 0, O_FP16},
      {"help", no_argument, 0, O_HELP},
      {0, 0, 0, 0}};
  /* clang-format on */
  *o = (opts_t){.data_dir = NULL,
                .nhidden = 2,
                .hidden = {256, 128},
                .epochs = 15,
                .batch = 128,
                .lr = 0.05,
                .momentum = 0.9,
                .wd = 5e-4,
                .warmup_epochs = 1.0,
                .lr_scale = 1,
                .schedule = SCHED_COSINE,
                .seed = 42,
                .blas_threads = 1,
                .overlap = 1};
  long v;
  int c;
  opterr = 0;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
      case O_DATA:
        o->data_dir = optarg;
        break;
      case O_SYNTH:
        if (parse_long("--synthetic", optarg, 1, 100000000, &v) != 0) return -1;
        o->synthetic = (size_t)v;
        break;
      case O_HIDDEN:
        if (parse_hidden(optarg, o) != 0) return -1;
        break;
      case O_EPOCHS:
        if (parse_long("--epochs", optarg, 1, 100000, &v) != 0) return -1;
        o->epochs = (int)v;
        break;
      case O_BATCH:
        if (parse_long("--batch", optarg, 1, 1 << 20, &v) != 0) return -1;
        o->batch = v;
        break;
      case O_LR:
        if (parse_double("--lr", optarg, 0, 100, &o->lr) != 0) return -1;
        break;
      case O_NOSCALE:
        o->lr_scale = 0;
        break;
      case O_WARMUP:
        if (parse_double("--warmup-epochs", optarg, 0, 100000, &o->warmup_epochs) != 0) return -1;
        break;
      case O_SCHED:
        if (strcmp(optarg, "cosine") == 0)
          o->schedule = SCHED_COSINE;
        else if (strcmp(optarg, "constant") == 0)
          o->schedule = SCHED_CONSTANT;
        else {
          fprintf(stderr, "hvd-train: --schedule '%s': expected cosine or constant\n", optarg);
          return -1;
        }
        break;
      case O_MOM:
        if (parse_double("--momentum", optarg, 0, 0.9999, &o->momentum) != 0) return -1;
        break;
      case O_WD:
        if (parse_double("--wd", optarg, 0, 1, &o->wd) != 0) return -1;
        break;
      case O_SEED:
        if (parse_long("--seed", optarg, 0, 0x7fffffffL, &v) != 0) return -1;
        o->seed = (uint64_t)v;
        break;
      case O_STEPS:
        if (parse_long("--steps", optarg, 1, 0x7fffffffL, &v) != 0) return -1;
        o->steps = v;
        break;
      case O_PRINTLOSS:
        o->print_loss = 1;
        break;
      case O_TIMELINE:
        o->timeline = optarg;
        break;
      case O_CKPT:
        o->checkpoint = optarg;
        break;
      case O_RESUME:
        o->resume = optarg;
        break;
      case O_BLAS:
        if (parse_long("--blas-threads", optarg, 1, 256, &v) != 0) return -1;
        o->blas_threads = (int)v;
        break;
      case O_NOOVERLAP:
        o->overlap = 0;
        break;
      case O_SYNCONLY:
        o->sync_only = 1;
        break;
      case O_FP16:
        o->fp16 = 1;
        break;
      case O_HELP:
      case 'h':
        usage(stdout);
        return 1;
      default:
        if (optopt || c == '?')
          fprintf(stderr, "hvd-train: unknown or incomplete option '%s' (see --help)\n",
                  argv[optind - 1]);
        return -1;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "hvd-train: unexpected argument '%s' (see --help)\n", argv[optind]);
    return -1;
  }
  if (o->data_dir && o->synthetic) {
    fprintf(stderr, "hvd-train: --data and --synthetic exclude each other\n");
    return -1;
  }
  if (o->sync_only && (o->checkpoint || o->resume)) {
    fprintf(stderr, "hvd-train: --sync-only trains a model per rank: it takes no "
                    "--checkpoint or --resume\n");
    return -1;
  }
  if (!o->data_dir) o->data_dir = DEFAULT_DATA_DIR;
  return 0;
}

/* Leave the job with status 1: shutting hvd down first so peers hear about it cleanly. */
static _Noreturn void leave(job_t *j) {
  fflush(stdout);
  hvd_shutdown(j->ctx);
  exit(1);
}

static _Noreturn void die(job_t *j, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "hvd-train: rank %d: ", j->rank);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  leave(j);
}

/* Wait for req, free it, and die naming `what` if it failed. */
static void finish(job_t *j, hvd_req_t *req, const char *what) {
  hvd_status_t rc = hvd_wait(req);
  if (rc != HVD_OK) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", hvd_req_error(req));
    hvd_req_free(req);
    die(j, "%s failed: %s%s%s", what, hvd_status_string(rc), msg[0] ? ": " : "", msg);
  }
  hvd_req_free(req);
}

static void check(job_t *j, hvd_status_t rc, const char *what) {
  if (rc != HVD_OK) {
    const char *cause = hvd_ctx_error(j->ctx);
    die(j, "%s failed: %s%s%s", what, hvd_status_string(rc), cause[0] ? ": " : "", cause);
  }
}

static hvd_req_t *allreduce_async(job_t *j, const char *name, void *buf, size_t count,
                                  hvd_dtype_t dtype, hvd_op_t op) {
  hvd_op_args_t a = HVD_OP_ARGS_INIT;
  a.name = name;
  a.sendbuf = buf;
  a.recvbuf = buf;
  a.count = count;
  a.dtype = dtype;
  a.op = op;
  hvd_req_t *req = NULL;
  check(j, hvd_allreduce_ex(j->ctx, &a, &req), name);
  return req;
}

/* Broadcast from rank 0 every tensor of one family (params or momentum), all in flight
 * at once, then wait for them: Horovod's broadcast_parameters. */
static void broadcast_tensors(job_t *j, mlp_t *m, const char *family, float *const *W,
                              float *const *b) {
  hvd_req_t *reqs[2 * TRAIN_MAX_LAYERS];
  char names[2 * TRAIN_MAX_LAYERS][48];
  int n = 0;
  for (int l = 0; l < m->nlayers; l++) {
    for (int k = 0; k < 2; k++) {
      hvd_op_args_t a = HVD_OP_ARGS_INIT;
      snprintf(names[n], sizeof names[n], "%s.%c%d", family, k ? 'b' : 'W', l + 1);
      a.name = names[n];
      a.sendbuf = a.recvbuf = k ? b[l] : W[l];
      a.count = k ? mlp_bsize(m, l) : mlp_wsize(m, l);
      a.dtype = HVD_FLOAT32;
      a.root = 0;
      check(j, hvd_broadcast_ex(j->ctx, &a, &reqs[n]), names[n]);
      n++;
    }
  }
  for (int i = 0; i < n; i++) finish(j, reqs[i], names[i]);
}

/* How the gradients travel: in place as float32 (g16 and sync NULL); as float16 copies
 * in g16 (--fp16-allreduce: the same layout as m->grads, converted back after the wait);
 * or, with sync (--sync-only), one element each of sync under the same names. */
typedef struct grad_io {
  uint16_t *g16;
  float *sync;
} grad_io_t;

/* Start the AVERAGE allreduces of layer l's gradients. */
static void submit_grads(job_t *j, mlp_t *m, int l, char (*gnames)[32], const grad_io_t *io,
                         hvd_req_t **reqs, int *nreq) {
  const size_t nW = mlp_wsize(m, l), nb = mlp_bsize(m, l);
  if (io->sync) {
    reqs[(*nreq)++] =
        allreduce_async(j, gnames[2 * l], &io->sync[2 * l], 1, HVD_FLOAT32, HVD_AVERAGE);
    reqs[(*nreq)++] =
        allreduce_async(j, gnames[2 * l + 1], &io->sync[2 * l + 1], 1, HVD_FLOAT32, HVD_AVERAGE);
  } else if (io->g16) {
    uint16_t *hW = io->g16 + (m->gW[l] - m->grads), *hb = io->g16 + (m->gb[l] - m->grads);
    half_from_float(hW, m->gW[l], nW, 0);
    half_from_float(hb, m->gb[l], nb, 0);
    reqs[(*nreq)++] = allreduce_async(j, gnames[2 * l], hW, nW, HVD_FLOAT16, HVD_AVERAGE);
    reqs[(*nreq)++] = allreduce_async(j, gnames[2 * l + 1], hb, nb, HVD_FLOAT16, HVD_AVERAGE);
  } else {
    reqs[(*nreq)++] = allreduce_async(j, gnames[2 * l], m->gW[l], nW, HVD_FLOAT32, HVD_AVERAGE);
    reqs[(*nreq)++] = allreduce_async(j, gnames[2 * l + 1], m->gb[l], nb, HVD_FLOAT32, HVD_AVERAGE);
  }
}

/* Test loss and correct count over this rank's contiguous shard of the test set. */
static void evaluate(mlp_t *m, const split_t *test, int rank, int size, double *loss, long *correct,
                     long *count) {
  size_t lo = test->n * (size_t)rank / (size_t)size,
         hi = test->n * (size_t)(rank + 1) / (size_t)size;
  uint32_t idx[EVAL_ROWS];
  int y[EVAL_ROWS];
  size_t rows = m->cap < EVAL_ROWS ? m->cap : EVAL_ROWS;
  *loss = 0;
  *correct = 0;
  *count = (long)(hi - lo);
  for (size_t s = lo; s < hi; s += rows) {
    size_t n = hi - s < rows ? hi - s : rows;
    for (size_t i = 0; i < n; i++) idx[i] = (uint32_t)(s + i);
    data_batch(test, idx, n, m->act[0], y);
    *loss += mlp_forward(m, n, y, 0, 0.0f, correct);
  }
}

/* Learning rate before optimizer step number `step` (0-based, counted over the run). */
static double lr_at(const opts_t *o, int size, long long step, long long steps_per_epoch) {
  const double base = o->lr, peak = o->lr * (o->lr_scale ? size : 1);
  const double warm = o->warmup_epochs * (double)steps_per_epoch;
  const double total = (double)o->epochs * (double)steps_per_epoch;
  if ((double)step < warm) return base + (peak - base) * (double)step / warm;
  if (o->schedule == SCHED_CONSTANT || total <= warm) return peak;
  double t = ((double)step - warm) / (total - warm);
  return peak * 0.5 * (1.0 + cos(M_PI * (t < 1 ? t : 1)));
}

static void model_str(char *out, size_t len, const mlp_t *m) {
  size_t k = 0;
  for (int l = 0; l <= m->nlayers && k < len; l++)
    k += (size_t)snprintf(out + k, len - k, "%s%d", l ? "-" : "", m->dims[l]);
}

int main(int argc, char **argv) {
  opts_t o;
  int pr = parse_args(argc, argv, &o);
  if (pr != 0) return pr > 0 ? 0 : 2;

  setvbuf(stdout, NULL, _IOLBF, 0);
  if (o.timeline && setenv("HVD_TIMELINE", o.timeline, 1) != 0) {
    fprintf(stderr, "hvd-train: setenv HVD_TIMELINE: %s\n", strerror(errno));
    return 1;
  }
  openblas_set_num_threads(o.blas_threads);

  job_t job = {0};
  hvd_status_t rc = hvd_init(&job.ctx);
  if (rc != HVD_OK) {
    fprintf(stderr, "hvd-train: hvd_init failed: %s\n", hvd_status_string(rc));
    return 1;
  }
  job.rank = hvd_rank(job.ctx);
  job.size = hvd_size(job.ctx);
  job_t *j = &job;
  const int rank = job.rank, size = job.size;

  if (o.batch % size != 0) {
    if (rank == 0)
      fprintf(stderr,
              "hvd-train: --batch %ld is not a multiple of the %d ranks (the batch is global)\n",
              o.batch, size);
    leave(j);
  }
  const size_t nloc = (size_t)(o.batch / size);

  /* Data: every rank reads its own copy. All ranks agree on whether that worked, and the
   * lowest failing rank says why, so a bad file gives one line and exit 1 everywhere. */
  dataset_t data;
  char err[1024] = "";
  int failed = o.synthetic ? data_synthetic(&data, o.synthetic, o.seed, err, sizeof err) != 0
                           : data_load_idx(&data, o.data_dir, err, sizeof err) != 0;
  int32_t first_bad = failed ? rank : size;
  check(j, hvd_allreduce(j->ctx, "setup.data", &first_bad, &first_bad, 1, HVD_INT32, HVD_MIN),
        "allreduce setup.data");
  if (first_bad < size) {
    if (rank == first_bad) fprintf(stderr, "hvd-train: %s\n", err);
    leave(j);
  }
  const long long spe = (long long)(data.train.n / (size_t)o.batch);
  if (spe == 0) {
    if (rank == 0)
      fprintf(stderr, "hvd-train: --batch %ld is larger than the %zu training samples\n", o.batch,
              data.train.n);
    leave(j);
  }

  /* Model. */
  int dims[TRAIN_MAX_LAYERS + 1];
  int nl = o.nhidden + 1;
  dims[0] = TRAIN_IMG_PIXELS;
  for (int i = 0; i < o.nhidden; i++) dims[i + 1] = o.hidden[i];
  dims[nl] = TRAIN_CLASSES;
  mlp_t model;
  if (mlp_create(&model, nl, dims, nloc > EVAL_ROWS ? nloc : EVAL_ROWS) != 0)
    die(j, "out of memory for the model");
  mlp_t *m = &model;

  /* Initial state: rank 0 initialises or loads, then broadcasts. */
  int64_t state[3] = {1, 0, 0}; /* ok, epochs done, steps done */
  if (rank == 0) {
    if (o.resume) {
      if (ckpt_load(m, o.resume, &state[1], &state[2], err, sizeof err) != 0) {
        fprintf(stderr, "hvd-train: %s\n", err);
        state[0] = 0;
      }
    } else {
      mlp_init(m, o.seed);
    }
  }
  check(j, hvd_broadcast(j->ctx, "setup.state", state, 3, HVD_INT64, 0), "broadcast setup.state");
  if (!state[0]) leave(j);
  broadcast_tensors(j, m, "param", m->W, m->b);
  if (o.resume) broadcast_tensors(j, m, "momentum", m->vW, m->vb);
  const int start_epoch = (int)state[1];
  long long step = state[2];

  char mstr[128];
  model_str(mstr, sizeof mstr, m);
  if (rank == 0) {
    printf("hvd-train: %d rank%s, model %s (%zu parameters), %s: %zu train / %zu test samples\n",
           size, size > 1 ? "s" : "", mstr, m->nparams, o.synthetic ? "synthetic data" : o.data_dir,
           data.train.n, data.test.n);
    printf(
        "hvd-train: batch %ld global (%zu per rank), %lld steps per epoch (%zu samples dropped), "
        "lr %g x %d = %g (warm-up %g epochs, %s), momentum %g, wd %g, seed %" PRIu64 "\n",
        o.batch, nloc, spe, data.train.n - (size_t)spe * (size_t)o.batch, o.lr,
        o.lr_scale ? size : 1, o.lr * (o.lr_scale ? size : 1), o.warmup_epochs,
        o.schedule == SCHED_COSINE ? "cosine decay" : "constant", o.momentum, o.wd, o.seed);
    if (o.resume)
      printf("hvd-train: resumed from %s after epoch %d (step %lld)\n", o.resume, start_epoch,
             step);
  }

  uint32_t *perm = malloc(data.train.n * sizeof *perm);
  int *y = malloc(m->cap * sizeof *y);
  if (!perm || !y) die(j, "out of memory");

  const int L = m->nlayers;
  char gnames[2 * TRAIN_MAX_LAYERS][32];
  for (int l = 0; l < L; l++) {
    snprintf(gnames[2 * l], sizeof gnames[0], "grad.W%d", l + 1);
    snprintf(gnames[2 * l + 1], sizeof gnames[0], "grad.b%d", l + 1);
  }
  float sync_buf[2 * TRAIN_MAX_LAYERS] = {0};
  grad_io_t io = {.sync = o.sync_only ? sync_buf : NULL};
  if (o.fp16 && !o.sync_only && (io.g16 = malloc(m->nparams * sizeof *io.g16)) == NULL)
    die(j, "out of memory");
  if (io.g16 && rank == 0)
    printf("hvd-train: --fp16-allreduce: gradients are allreduced as float16\n");
  if (o.sync_only && rank == 0)
    printf("hvd-train: --sync-only: each rank trains its own model; the gradient allreduces "
           "carry one element each (a measurement of the step without the bytes)\n");
  double test_acc = -1.0;
  long long run_steps = 0;
  int stopped = 0;
  double t_run0 = now_s();
  for (int epoch = start_epoch; epoch < o.epochs && !stopped; epoch++) {
    data_shuffle(perm, data.train.n, o.seed, epoch);
    double loss_sum = 0, wait_s = 0, step_s = 0;
    long correct = 0, seen = 0;
    double t_epoch0 = now_s();
    long long s;
    for (s = 0; s < spe; s++) {
      if (o.steps && run_steps == o.steps) {
        stopped = 1;
        break;
      }
      double t0 = now_s();
      const uint32_t *idx = perm + (size_t)s * (size_t)o.batch + (size_t)rank * nloc;
      data_batch(&data.train, idx, nloc, m->act[0], y);
      double loss = mlp_forward(m, nloc, y, 1, 1.0f / (float)nloc, &correct);

      /* Backprop from the last layer; each layer's gradients leave as soon as they exist. */
      hvd_req_t *reqs[2 * TRAIN_MAX_LAYERS + 1];
      int nreq = 0;
      for (int l = L - 1; l >= 0; l--) {
        mlp_backward_layer(m, l, nloc);
        if (o.overlap) submit_grads(j, m, l, gnames, &io, reqs, &nreq);
      }
      if (!o.overlap)
        for (int l = L - 1; l >= 0; l--) submit_grads(j, m, l, gnames, &io, reqs, &nreq);
      double step_loss = loss / (double)nloc;
      if (o.print_loss)
        reqs[nreq++] = allreduce_async(j, "step.loss", &step_loss, 1, HVD_FLOAT64, HVD_AVERAGE);
      double tw = now_s();
      for (int i = 0; i < nreq; i++)
        finish(j, reqs[i], i < 2 * L ? gnames[2 * (L - 1 - i / 2) + i % 2] : "step.loss");
      if (io.g16) half_to_float(m->grads, io.g16, m->nparams, 0);
      wait_s += now_s() - tw;

      mlp_sgd(m, (float)lr_at(&o, size, step, spe), (float)o.momentum, (float)o.wd);
      step++;
      run_steps++;
      loss_sum += loss;
      seen += (long)nloc;
      step_s += now_s() - t0;
      if (o.print_loss && rank == 0) printf("step %lld loss %.12f\n", step, step_loss);
    }
    double train_s = now_s() - t_epoch0;
    if (s == 0) break; /* --steps ran out exactly at an epoch boundary */

    double test_loss;
    long test_correct, test_n;
    evaluate(m, &data.test, rank, size, &test_loss, &test_correct, &test_n);
    double st[8] = {loss_sum,       (double)correct, (double)seen, test_loss, (double)test_correct,
                    (double)test_n, wait_s,          step_s};
    check(j, hvd_allreduce(j->ctx, "epoch.stats", st, st, 8, HVD_FLOAT64, HVD_SUM),
          "allreduce epoch.stats");
    test_acc = st[4] / st[5];
    if (rank == 0)
      printf(
          "epoch %2d/%d  loss %.4f  train acc %.4f  test loss %.4f  test acc %.4f  "
          "lr %.4g  samples/s %.0f  allreduce wait %.1f%%  time %.2f s%s\n",
          epoch + 1, o.epochs, st[0] / st[2], st[1] / st[2], st[3] / st[5], test_acc,
          lr_at(&o, size, step - 1, spe), st[2] / train_s, 100.0 * st[6] / st[7], train_s,
          s < spe ? "  (stopped by --steps)" : "");

    if (o.checkpoint && s == spe) {
      int32_t ok = 1;
      if (rank == 0 && ckpt_save(m, o.checkpoint, epoch + 1, step, err, sizeof err) != 0) {
        fprintf(stderr, "hvd-train: %s\n", err);
        ok = 0;
      }
      check(j, hvd_broadcast(j->ctx, "ckpt.status", &ok, 1, HVD_INT32, 0), "broadcast ckpt.status");
      if (!ok) leave(j);
    }
  }
  double run_s = now_s() - t_run0;

  if (test_acc < 0) { /* nothing trained in this run (or --steps ended on a boundary) */
    double test_loss;
    long test_correct, test_n;
    evaluate(m, &data.test, rank, size, &test_loss, &test_correct, &test_n);
    double st[2] = {(double)test_correct, (double)test_n};
    check(j, hvd_allreduce(j->ctx, "final.stats", st, st, 2, HVD_FLOAT64, HVD_SUM),
          "allreduce final.stats");
    test_acc = st[0] / st[1];
  }

  /* Every rank must hold the same bytes: compare checksums by MIN and MAX. */
  int64_t sum = mlp_checksum(m), lo = sum, hi = sum;
  if (o.sync_only) lo = hi = 0; /* the ranks trained separately: nothing to compare */
  check(j, hvd_allreduce(j->ctx, "check.min", &lo, &lo, 1, HVD_INT64, HVD_MIN),
        "allreduce check.min");
  check(j, hvd_allreduce(j->ctx, "check.max", &hi, &hi, 1, HVD_INT64, HVD_MAX),
        "allreduce check.max");
  if (lo != hi) {
    fprintf(stderr,
            "hvd-train: rank %d: parameters differ across ranks after training "
            "(parameter checksum: min %016" PRIx64 ", max %016" PRIx64 ", this rank %016" PRIx64
            ")\n",
            rank, (uint64_t)lo, (uint64_t)hi, (uint64_t)sum);
    leave(j);
  }
  if (rank == 0) {
    hvd_stats_t hs;
    if (o.sync_only)
      printf("parameters not compared (--sync-only: the ranks trained separately)\n");
    else
      printf("parameters identical on all %d ranks (checksum %016" PRIx64 ")\n", size,
             (uint64_t)sum);
    if (hvd_get_stats(j->ctx, &hs) == HVD_OK)
      printf("hvd: %" PRIu64 " tensors, %" PRIu64 " collectives, %" PRIu64
             " fused tensors, %" PRIu64 " cache hits; %lld steps in %.1f s\n",
             hs.tensors_completed, hs.collectives, hs.fused_tensors, hs.cache_hits, run_steps,
             run_s);
    printf("final test accuracy: %.4f\n", test_acc);
  }

  free(io.g16);
  free(perm);
  free(y);
  mlp_destroy(m);
  data_free(&data);
  rc = hvd_shutdown(j->ctx);
  if (rc != HVD_OK) {
    fprintf(stderr, "hvd-train: rank %d: hvd_shutdown: %s\n", rank, hvd_status_string(rc));
    return 1;
  }
  return 0;
}
