"""Train hvd-train's MLP on Fashion-MNIST with PyTorch and hvd.torch.DistributedOptimizer.

    hvdrun -np 2 /usr/bin/python3 examples/python/train_mlp.py --epochs 15

The same job as tools/hvd-train (docs/training.md), written the Horovod way in PyTorch:
784-256-128-10 ReLU MLP, softmax cross-entropy, SGD with momentum 0.9 and weight decay
5e-4 on the weights (not the biases), global batch 128 split evenly over the ranks, the
learning rate 0.05 scaled by the number of ranks with a linear warm-up over the first
epoch, then a cosine decay to 0. It even draws the same numbers: rank 0 initialises the
weights and every rank shuffles each epoch with hvd-train's generator (xoshiro256**,
below), so both programs see the same initial weights and the same batches, and differ
only in the order of floating-point additions.

What hvd does here: rank 0's parameters and optimizer state are broadcast
(hvd.broadcast_parameters / broadcast_optimizer_state); DistributedOptimizer averages
every gradient with an asynchronous allreduce started as soon as backward() has produced
it; test evaluation is sharded and summed with hvd.allreduce; at the end the ranks compare
a checksum of their parameters (hvd.allgather_object) and exit 1 if they differ.
Rank 0 prints one line per epoch and then "final test accuracy: X".
"""
import argparse
import ctypes
import gzip
import math
import os
import struct
import sys
import time
import zlib

# Debian's torch does its matrix products in OpenBLAS, which starts one busy-waiting thread
# per core unless told otherwise: two ranks on two cores would then fight over them (4x
# slower here). One thread per rank, as hvd-train does; --threads changes it below.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import hvd.torch as hvd

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530  # of Fashion-MNIST's training pixels in [0, 1], as hvd-train
M64 = (1 << 64) - 1


# ---- hvd-train's random numbers (tools/hvd-train/rng.c), bit for bit ---------------------

class Rng:
    """xoshiro256** seeded through splitmix64."""

    def __init__(self, seed):
        x = seed & M64
        self.s = []
        for _ in range(4):
            x = (x + 0x9E3779B97F4A7C15) & M64
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
            self.s.append(z ^ (z >> 31))

    def next(self):
        s0, s1, s2, s3 = self.s
        r = (s1 * 5) & M64
        out = ((((r << 7) | (r >> 57)) & M64) * 9) & M64
        t = (s1 << 17) & M64
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = ((s3 << 45) | (s3 >> 19)) & M64
        self.s = [s0, s1, s2, s3]
        return out

    def uniform(self):
        return (self.next() >> 11) * 2.0 ** -53

    def below(self, n):
        limit = M64 - M64 % n
        x = self.next()
        while x >= limit:
            x = self.next()
        return x % n

    def normal(self):
        u1, u2 = self.uniform(), self.uniform()
        return math.sqrt(-2.0 * math.log(max(u1, 1e-300))) * math.cos(2.0 * math.pi * u2)


def shuffle(n, seed, epoch):
    """hvd-train's data_shuffle: a permutation of 0..n-1 that depends on (seed, epoch)."""
    r = Rng(seed * 0x100000001B3 + epoch * 0x9E3779B97F4A7C15 + 1)
    perm = list(range(n))
    for i in range(n, 1, -1):
        j = r.below(i)
        perm[i - 1], perm[j] = perm[j], perm[i - 1]
    return np.array(perm, dtype=np.int64)


# ---- data ---------------------------------------------------------------------------------

def read_idx(path):
    """An IDX file (gzip or plain) as a uint8 array of its dimensions."""
    for p in (path + ".gz", path):
        if os.path.exists(p):
            break
    else:
        raise SystemExit("train_mlp.py: %s(.gz) not found (Debian package "
                         "dataset-fashion-mnist, or --data DIR)" % path)
    with (gzip.open(p) if p.endswith(".gz") else open(p, "rb")) as f:
        raw = bytearray(f.read())  # writable, so torch.from_numpy does not warn
    magic, = struct.unpack(">I", raw[:4])
    if magic >> 8 != 0x08 or not 1 <= (magic & 0xFF) <= 3:
        raise SystemExit("train_mlp.py: %s: not an unsigned-byte IDX file (magic %#x)"
                         % (p, magic))
    nd = magic & 0xFF
    dims = struct.unpack(">%dI" % nd, raw[4:4 + 4 * nd])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * nd)
    if data.size != int(np.prod(dims)):
        raise SystemExit("train_mlp.py: %s: %d data bytes, dimensions %s need %d"
                         % (p, data.size, dims, int(np.prod(dims))))
    return data.reshape(dims)


def load(data_dir):
    split = {}
    for name, prefix in (("train", "train"), ("test", "t10k")):
        x = read_idx(os.path.join(data_dir, "%s-images-idx3-ubyte" % prefix))
        y = read_idx(os.path.join(data_dir, "%s-labels-idx1-ubyte" % prefix))
        if x.shape[0] != y.shape[0] or x.shape[1:] != (28, 28):
            raise SystemExit("train_mlp.py: %s: %s images, %s labels" % (name, x.shape,
                                                                         y.shape))
        split[name] = (torch.from_numpy(x.reshape(-1, 784)), torch.from_numpy(y.astype(np.int64)))
    return split


def to_input(pixels):
    """Normalise uint8 pixels as hvd-train does: x * (1 / (255 std)) - mean / std."""
    scale = np.float32(1.0) / (np.float32(255.0) * np.float32(STD))
    shift = np.float32(MEAN) / np.float32(STD)
    return pixels.float() * float(scale) - float(shift)


# ---- model --------------------------------------------------------------------------------

def make_model(hidden):
    dims = [784] + hidden + [10]
    layers = []
    for i in range(len(dims) - 1):
        layers.append(torch.nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def init_like_hvd_train(model, seed):
    """hvd-train's mlp_init: N(0, 2 / fan_in) weights (1 / fan_in for the output layer),
    drawn in row-major order from one stream, zero biases."""
    r = Rng(seed)
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for i, lin in enumerate(linears):
            fan_in = lin.in_features
            std = math.sqrt((2.0 if i < len(linears) - 1 else 1.0) / fan_in)
            w = np.fromiter((std * r.normal() for _ in range(lin.weight.numel())),
                            dtype=np.float64, count=lin.weight.numel())
            lin.weight.copy_(torch.from_numpy(w.astype(np.float32)).view_as(lin.weight))
            lin.bias.zero_()


def lr_at(a, size, step, steps_per_epoch):
    """hvd-train's lr_at: linear warm-up from lr to lr x size, then cosine to 0."""
    base, peak = a.lr, a.lr * (size if not a.no_lr_scale else 1)
    warm = a.warmup_epochs * steps_per_epoch
    total = a.epochs * steps_per_epoch
    if step < warm:
        return base + (peak - base) * step / warm
    if total <= warm:
        return peak
    t = min((step - warm) / (total - warm), 1.0)
    return peak * 0.5 * (1.0 + math.cos(math.pi * t))


def evaluate(model, test, rank, size):
    """Summed loss and correct count over this rank's contiguous shard of the test set."""
    x, y = test
    lo, hi = len(y) * rank // size, len(y) * (rank + 1) // size
    loss, correct = 0.0, 0
    with torch.no_grad():
        for s in range(lo, hi, 1000):
            out = model(to_input(x[s:min(s + 1000, hi)]))
            yy = y[s:min(s + 1000, hi)]
            loss += float(torch.nn.functional.cross_entropy(out.double(), yy, reduction="sum"))
            correct += int((out.argmax(1) == yy).sum())
    return loss, correct, hi - lo


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=DEFAULT_DATA, help="IDX files (gzip or plain) [%(default)s]")
    ap.add_argument("--hidden", default="256,128", help="hidden widths [%(default)s]")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch", type=int, default=128, help="GLOBAL batch size [%(default)s]")
    ap.add_argument("--lr", type=float, default=0.05, help="single-rank lr, x N [%(default)s]")
    ap.add_argument("--no-lr-scale", action="store_true", help="use --lr as is, not lr x N")
    ap.add_argument("--warmup-epochs", type=float, default=1.0)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--wd", type=float, default=5e-4, help="weight decay on weights")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--steps", type=int, default=0, help="stop after N steps (tests)")
    ap.add_argument("--print-loss", action="store_true",
                    help="print every step's global-batch loss: step K loss X (rank 0)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch and OpenBLAS threads per rank [%(default)s]")
    ap.add_argument("--min-accuracy", type=float, default=None,
                    help="exit 1 if the final test accuracy is below this (tests)")
    a = ap.parse_args()
    if a.epochs < 1 or a.batch < 1 or a.threads < 1:
        ap.error("--epochs, --batch and --threads must be positive")
    hidden = [int(h) for h in a.hidden.split(",")] if a.hidden != "none" else []

    torch.set_num_threads(a.threads)
    try:
        ctypes.CDLL("libopenblas.so.0").openblas_set_num_threads(a.threads)
    except (OSError, AttributeError):
        pass  # not OpenBLAS: torch.set_num_threads is what counts
    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    if a.batch % size:
        if rank == 0:
            print("train_mlp.py: --batch %d is not a multiple of the %d ranks" % (a.batch, size),
                  file=sys.stderr)
        return 2
    nloc = a.batch // size
    data = load(a.data)
    xtr, ytr = data["train"]
    spe = len(ytr) // a.batch

    # Every rank builds the model; only rank 0's initial weights count (broadcast below).
    torch.manual_seed(a.seed + rank)
    model = make_model(hidden)
    if rank == 0:
        init_like_hvd_train(model, a.seed)
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    opt = torch.optim.SGD([{"params": weights, "weight_decay": a.wd},
                           {"params": biases, "weight_decay": 0.0}],
                          lr=a.lr, momentum=a.momentum)
    opt = hvd.DistributedOptimizer(opt, named_parameters=model.named_parameters())
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    hvd.broadcast_optimizer_state(opt, root_rank=0)

    nparams = sum(p.numel() for p in model.parameters())
    if rank == 0:
        print("train_mlp.py: %d rank%s, model %s (%d parameters), torch %s, %s: %d train / "
              "%d test samples" % (size, "s" if size > 1 else "",
                                   "-".join(map(str, [784] + hidden + [10])), nparams,
                                   torch.__version__, a.data, len(ytr), len(data["test"][1])))
        print("train_mlp.py: batch %d global (%d per rank), %d steps per epoch, lr %g x %d, "
              "warm-up %g epochs, cosine decay, momentum %g, wd %g, seed %d"
              % (a.batch, nloc, spe, a.lr, 1 if a.no_lr_scale else size, a.warmup_epochs,
                 a.momentum, a.wd, a.seed), flush=True)

    step, test_acc, t_run = 0, None, time.perf_counter()
    for epoch in range(a.epochs):
        perm = torch.from_numpy(shuffle(len(ytr), a.seed, epoch))
        loss_sum, correct, seen, wait_s, step_s = 0.0, 0, 0, 0.0, 0.0
        t0 = time.perf_counter()
        s = 0
        for s in range(spe):
            if a.steps and step == a.steps:
                break
            ts = time.perf_counter()
            idx = perm[s * a.batch + rank * nloc: s * a.batch + (rank + 1) * nloc]
            x, y = to_input(xtr[idx]), ytr[idx]
            for g in opt.param_groups:
                g["lr"] = lr_at(a, size, step, spe)
            opt.zero_grad()
            out = model(x)
            loss = torch.nn.functional.cross_entropy(out, y)
            loss.backward()  # the hooks start each gradient's allreduce here
            tw = time.perf_counter()
            opt.synchronize()  # wait for the averaged gradients ...
            wait_s += time.perf_counter() - tw
            with opt.skip_synchronize():
                opt.step()  # ... and update with them
            step += 1
            if a.print_loss:
                gl = hvd.allreduce(loss.detach().double().reshape(1), name="step.loss")
                if rank == 0:
                    print("step %d loss %.12f" % (step, float(gl)))
            loss_sum += float(loss) * nloc
            correct += int((out.argmax(1) == y).sum())
            seen += nloc
            step_s += time.perf_counter() - ts
        else:
            s = spe
        train_s = time.perf_counter() - t0
        if seen == 0:
            break
        tl, tc, tn = evaluate(model, data["test"], rank, size)
        st = hvd.allreduce(torch.tensor([loss_sum, correct, seen, tl, tc, tn, wait_s, step_s],
                                        dtype=torch.float64), op=hvd.Sum, name="epoch.stats")
        st = st.tolist()
        test_acc = st[4] / st[5]
        if rank == 0:
            print("epoch %2d/%d  loss %.4f  train acc %.4f  test loss %.4f  test acc %.4f  "
                  "lr %.4g  samples/s %.0f  allreduce wait %.1f%%  time %.2f s%s"
                  % (epoch + 1, a.epochs, st[0] / st[2], st[1] / st[2], st[3] / st[5], test_acc,
                     lr_at(a, size, step - 1, spe), st[2] / train_s, 100 * st[6] / st[7],
                     train_s, "  (stopped by --steps)" if s < spe else ""), flush=True)
        if s < spe:
            break
    run_s = time.perf_counter() - t_run
    if test_acc is None:
        tl, tc, tn = evaluate(model, data["test"], rank, size)
        st = hvd.allreduce(torch.tensor([tc, tn], dtype=torch.float64), op=hvd.Sum,
                           name="final.stats").tolist()
        test_acc = st[0] / st[1]

    # Every rank must hold the same bytes.
    crc = 0
    for p in model.parameters():
        crc = zlib.crc32(p.detach().numpy().tobytes(), crc)
    crcs = hvd.allgather_object(crc, name="check.params")
    status = 0
    if len(set(crcs)) != 1:
        print("train_mlp.py: rank %d: parameters differ across ranks after training (crc32 "
              "per rank: %s)" % (rank, ", ".join("%08x" % c for c in crcs)), file=sys.stderr)
        status = 1
    elif rank == 0:
        print("parameters identical on all %d ranks (crc32 %08x); %d steps in %.1f s"
              % (size, crc, step, run_s))
    if rank == 0:
        print("final test accuracy: %.4f" % test_acc, flush=True)
    if a.min_accuracy is not None and test_acc < a.min_accuracy:
        if rank == 0:
            print("train_mlp.py: final test accuracy %.4f is below --min-accuracy %g"
                  % (test_acc, a.min_accuracy), file=sys.stderr)
        status = 1
    hvd.shutdown()
    return status


if __name__ == "__main__":
    sys.exit(main())
