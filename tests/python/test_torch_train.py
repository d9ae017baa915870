"""examples/python/train_mlp.py (PyTorch + hvd.torch.DistributedOptimizer) against itself at
np=1 and against tools/hvd-train.

Not an in-job test: it starts hvdrun itself, so it runs only from its own ctest entry
(python.train_mlp, which sets HVD_TORCH_TRAIN_TEST=1 and HVD_BIN_DIR) and is skipped when
collected inside the python.np2 / python.np3 jobs.

With --no-lr-scale the global-batch gradient, and so every step, is the same whatever
the rank count; the example also draws hvd-train's initial weights and batches (same
generator), so the three runs print the same per-step losses up to float32 rounding. A
broken gradient allreduce (not averaged, summed, skipped, stale) changes them within a
few steps, and ranks that diverge fail the example's own parameter check.
"""
import os
import re
import subprocess
import sys

import pytest

ENABLED = os.environ.get("HVD_TORCH_TRAIN_TEST") == "1"
pytestmark = pytest.mark.skipif(not ENABLED, reason="run by the python.train_mlp ctest entry")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "python", "train_mlp.py")
BIN = os.environ.get("HVD_BIN_DIR", os.path.join(ROOT, "build"))
STEPS = 50
ARGS = ["--batch", "64", "--steps", str(STEPS), "--print-loss", "--no-lr-scale", "--seed", "7"]


def run(np, prog, timeout=240):
    cmd = [os.path.join(BIN, "hvdrun"), "-np", str(np)] + prog
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout)
    assert p.returncode == 0, "%s exited with %d:\n%s" % (" ".join(cmd), p.returncode, p.stdout)
    return p.stdout


def losses(out):
    got = {int(k): float(v) for k, v in re.findall(r"step (\d+) loss ([0-9.eE+-]+)", out)}
    assert sorted(got) == list(range(1, STEPS + 1)), out
    return [got[k] for k in range(1, STEPS + 1)]


def torch_run(np):
    return run(np, [sys.executable, EXAMPLE] + ARGS)


def test_np2_matches_np1_and_hvd_train():
    out1, out2 = torch_run(1), torch_run(2)
    ref = run(2, [os.path.join(BIN, "hvd-train")] + ARGS)
    assert "parameters identical on all 2 ranks" in out2, out2
    l1, l2, lc = losses(out1), losses(out2), losses(ref)
    for k in range(STEPS):
        rel = abs(l2[k] - l1[k]) / l1[k]
        assert rel <= 1e-4, "step %d: np=1 loss %.12f, np=2 loss %.12f" % (k + 1, l1[k], l2[k])
        rel = abs(l2[k] - lc[k]) / lc[k]
        assert rel <= 1e-4, ("step %d: train_mlp.py np=2 loss %.12f, hvd-train np=2 loss %.12f"
                             % (k + 1, l2[k], lc[k]))
    assert l2[-1] < 0.8 * l2[0], "loss %.4f -> %.4f: did not learn" % (l2[0], l2[-1])


def test_np2_short_run_accuracy():
    """200 steps of the default job (lr x 2): accuracy well above chance, ranks identical."""
    out = run(2, [sys.executable, EXAMPLE, "--steps", "200", "--min-accuracy", "0.75"])
    assert "parameters identical on all 2 ranks" in out, out
    acc = float(re.search(r"final test accuracy: ([0-9.]+)", out).group(1))
    assert 0.75 < acc <= 1.0, out
