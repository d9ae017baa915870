"""Helpers shared by the hvd Python tests: deterministic per-rank inputs (every rank
can compute every other rank's input) and references that follow hvd's arithmetic."""
import numpy as np
import torch

import hvd

DTYPES = ["int32", "int64", "float16", "float32", "float64"]
FRAMEWORKS = ["numpy", "torch"]
TORCH_DTYPES = {"int8": torch.int8, "uint8": torch.uint8, "int32": torch.int32,
                "int64": torch.int64, "float16": torch.float16, "float32": torch.float32,
                "float64": torch.float64, "bfloat16": torch.bfloat16}


def shape_of(dim, side=5):
    return (side,) * dim


def make(rank, dtype, shape, seed, lo=-100, hi=100):
    """Integer-valued input of rank `rank` (exact in every dtype hvd sums in), as numpy."""
    rng = np.random.default_rng(seed * 1009 + rank)
    return rng.integers(lo, hi, size=shape).astype(np.float64 if dtype == "bfloat16" else dtype)


def to_fw(x, fw, dtype=None):
    """numpy array x as the framework's type (bfloat16 only exists for torch)."""
    if fw == "numpy":
        return x.copy()
    t = torch.from_numpy(np.ascontiguousarray(x).copy())
    return t.to(TORCH_DTYPES[dtype]) if dtype else t


def as_np(x):
    if isinstance(x, torch.Tensor):
        if x.dtype == torch.bfloat16:
            return x.to(torch.float64).numpy()
        return x.numpy()
    return x


def scale(x, f, dtype):
    """hvd_scale: what hvd does to a buffer multiplied by f."""
    if f == 1.0:
        return x.copy()
    if dtype == "float16":
        return (x.astype(np.float32) * np.float32(f)).astype(np.float16)
    if dtype == "bfloat16":
        t = torch.from_numpy(x.astype(np.float32)) * torch.tensor(f, dtype=torch.float32)
        return t.to(torch.bfloat16).to(torch.float64).numpy()
    if dtype == "float32":
        return (x.astype(np.float64) * f).astype(np.float32)
    if dtype == "float64":
        return x * f
    info = np.iinfo(dtype)
    y = np.trunc(x.astype(np.float64) * f)
    return np.clip(y, info.min, info.max).astype(dtype)


def reduce_ref(inputs, op, dtype, prescale=1.0, postscale=1.0):
    """hvd's result of reducing the ranks' inputs (exact for integer-valued inputs)."""
    xs = [scale(x, prescale, dtype) for x in inputs]
    n = len(xs)
    if op in (hvd.Sum, hvd.Average):
        r = xs[0].copy()
        for x in xs[1:]:
            r = r + x
    elif op == hvd.Min:
        r = np.minimum.reduce(xs)
    elif op == hvd.Max:
        r = np.maximum.reduce(xs)
    else:
        r = xs[0].copy()
        for x in xs[1:]:
            r = r * x
    r = r.astype(xs[0].dtype)
    post = postscale * (1.0 / n if op == hvd.Average else 1.0)
    return scale(r, post, dtype)


def check_equal(got, want, what=""):
    g = as_np(got)
    assert g.shape == want.shape, "%s: shape %s, want %s" % (what, g.shape, want.shape)
    bad = np.argwhere(~((g == want) | (np.isnan(g.astype(np.float64)) &
                                       np.isnan(want.astype(np.float64)))))
    assert bad.size == 0, "%s: %d elements differ, first at %s: got %r want %r" % (
        what, len(bad), tuple(bad[0]), g[tuple(bad[0])], want[tuple(bad[0])])


def same_type(got, like):
    if isinstance(like, np.ndarray):
        assert isinstance(got, np.ndarray) and got.dtype == like.dtype
    else:
        assert isinstance(got, torch.Tensor) and got.dtype == like.dtype


def need_ranks(k):
    """Skip a test that only means something with k ranks or more."""
    import pytest
    if hvd.size() < k:
        pytest.skip("needs %d ranks" % k)


__all__ = ["DTYPES", "FRAMEWORKS", "shape_of", "make", "to_fw", "as_np", "scale",
           "reduce_ref", "check_equal", "same_type", "need_ranks"]
