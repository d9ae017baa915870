"""allreduce and its variants: every dtype, dims 1-3, every op, in place, async fused
with poll, prescale/postscale, grouped, numpy and torch, element by element."""
import zlib

import numpy as np
import pytest
import torch

import hvd
from _hvdtest import (DTYPES, FRAMEWORKS, as_np, check_equal, make, reduce_ref, same_type,
                      shape_of, to_fw)

OPS = {"sum": hvd.Sum, "average": hvd.Average, "min": hvd.Min, "max": hvd.Max,
       "product": hvd.Product}


def inputs(dtype, shape, seed, op=None):
    n = hvd.size()
    # Products of three values stay small enough to be exact in float16.
    lo, hi = (-4, 5) if op == hvd.Product else ((-40, 40) if dtype == "bfloat16" else (-100, 100))
    return [make(r, dtype, shape, seed, lo, hi) for r in range(n)]


def test_rank_and_size_match_the_launcher():
    import os
    assert hvd.is_initialized()
    assert hvd.rank() == int(os.environ["HVD_RANK"])
    assert hvd.size() == int(os.environ["HVD_SIZE"])
    assert hvd.local_rank() == int(os.environ["HVD_LOCAL_RANK"])
    assert hvd.local_size() == int(os.environ["HVD_LOCAL_SIZE"])
    assert 0 <= hvd.cross_rank() < hvd.cross_size()


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("opname", list(OPS))
def test_allreduce_every_dtype_and_dim(fw, opname):
    op = OPS[opname]
    dtypes = DTYPES + (["bfloat16"] if fw == "torch" else [])
    handles, want = [], []
    for dtype in dtypes:
        for dim in (1, 2, 3):
            seed = zlib.crc32(("%s%s%d" % (opname, dtype, dim)).encode()) % 1000
            xs = inputs(dtype, shape_of(dim), seed=seed, op=op)
            x = to_fw(xs[hvd.rank()], fw, dtype)
            before = as_np(x).copy()
            out = hvd.allreduce(x, op=op, name="ar.%s.%s.%s.%d" % (fw, opname, dtype, dim))
            same_type(out, x)
            check_equal(out, reduce_ref(xs, op, dtype), "%s %s %dd" % (opname, dtype, dim))
            check_equal(x, before, "input untouched")
            # The same through the async form, all in flight at once.
            handles.append(hvd.allreduce_async(x, op=op, name="ara.%s.%s.%s.%d"
                                               % (fw, opname, dtype, dim)))
            want.append((reduce_ref(xs, op, dtype), dtype, dim))
    for h, (w, dtype, dim) in zip(handles, want):
        check_equal(hvd.synchronize(h), w, "async %s %s %dd" % (opname, dtype, dim))


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_default_op_is_average_and_average_flag(fw):
    xs = inputs("float64", (7,), seed=3)
    x = to_fw(xs[hvd.rank()], fw)
    check_equal(hvd.allreduce(x, name="avg.default.%s" % fw),
                reduce_ref(xs, hvd.Average, "float64"))
    check_equal(hvd.allreduce(x, average=False, name="avg.false.%s" % fw),
                reduce_ref(xs, hvd.Sum, "float64"))
    check_equal(hvd.allreduce(x, average=True, name="avg.true.%s" % fw),
                reduce_ref(xs, hvd.Average, "float64"))


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_allreduce_in_place_without_copy(fw, dtype):
    for dim in (1, 2, 3):
        xs = inputs(dtype, shape_of(dim), seed=11 + dim)
        x = to_fw(xs[hvd.rank()], fw)
        addr = x.ctypes.data if fw == "numpy" else x.data_ptr()
        view = x.reshape(-1)  # shares x's memory
        out = hvd.allreduce_(x, op=hvd.Sum, name="inplace.%s.%s.%d" % (fw, dtype, dim))
        assert out is x
        assert (x.ctypes.data if fw == "numpy" else x.data_ptr()) == addr
        want = reduce_ref(xs, hvd.Sum, dtype)
        check_equal(x, want, "in place %s %dd" % (dtype, dim))
        check_equal(view, want.reshape(-1), "view of the in-place result")


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_allreduce_non_contiguous(fw):
    xs = inputs("float32", (6, 4), seed=21)
    base = to_fw(xs[hvd.rank()], fw)
    x = base.T if fw == "numpy" else base.t()   # not contiguous
    out = hvd.allreduce(x, op=hvd.Sum, name="noncontig.%s" % fw)
    check_equal(out, reduce_ref([v.T for v in xs], hvd.Sum, "float32"))
    hvd.allreduce_(x, op=hvd.Sum, name="noncontig_.%s" % fw)
    check_equal(base, reduce_ref(xs, hvd.Sum, "float32"), "written back through the view")


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_async_fused_and_poll(fw):
    n_tensors = 64
    before = hvd.get_stats()
    xs = [inputs("float32", (17, 3), seed=100 + i) for i in range(n_tensors)]
    handles = []
    saw_pending = False
    for i in range(n_tensors):
        h = hvd.allreduce_async(to_fw(xs[i][hvd.rank()], fw), op=hvd.Sum,
                                name="fused.%s.%d" % (fw, i))
        saw_pending |= not hvd.poll(h)
        handles.append(h)
    while not all(hvd.poll(h) for h in handles):
        pass
    for i, h in enumerate(handles):
        assert hvd.poll(h)
        check_equal(hvd.synchronize(h), reduce_ref(xs[i], hvd.Sum, "float32"), "tensor %d" % i)
    after = hvd.get_stats()
    assert saw_pending, "poll() never returned False: the operations were not asynchronous"
    assert after["fused_tensors"] > before["fused_tensors"], "no allreduce was fused"
    assert after["collectives"] - before["collectives"] < n_tensors
    with pytest.raises(ValueError, match="not a handle"):
        hvd.synchronize(handles[0])
    with pytest.raises(ValueError, match="not a handle"):
        hvd.poll(handles[0])


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_prescale_and_postscale(fw, dtype):
    for dim in (1, 2, 3):
        xs = inputs(dtype, shape_of(dim), seed=31 + dim)
        x = to_fw(xs[hvd.rank()], fw)
        for op, pre, post in ((hvd.Sum, 2.5, 1.0), (hvd.Sum, 1.0, 2.5), (hvd.Sum, 0.5, 1.5),
                              (hvd.Average, 2.5, 1.0), (hvd.Average, 1.0, 3.0)):
            nm = "scale.%s.%s.%d.%d.%g.%g" % (fw, dtype, dim, op, pre, post)
            out = hvd.allreduce(x, op=op, prescale_factor=pre, postscale_factor=post, name=nm)
            check_equal(out, reduce_ref(xs, op, dtype, pre, post), nm)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_grouped_allreduce(fw):
    r = hvd.rank()
    groups = [inputs(d, shape_of(k + 1), seed=41 + k) for k, d in enumerate(DTYPES)]
    xs = [to_fw(g[r], fw) for g in groups]
    outs = hvd.grouped_allreduce(xs, op=hvd.Sum, name="grouped.%s" % fw)
    assert isinstance(outs, list) and len(outs) == len(xs)
    for o, g, d in zip(outs, groups, DTYPES):
        check_equal(o, reduce_ref(g, hvd.Sum, d), "grouped sum %s" % d)
    outs = hvd.grouped_allreduce(xs, name="grouped.avg.%s" % fw)
    for o, g, d in zip(outs, groups, DTYPES):
        check_equal(o, reduce_ref(g, hvd.Average, d), "grouped average %s" % d)
    h = hvd.grouped_allreduce_async_(xs, op=hvd.Max, name="grouped_.%s" % fw)
    res = hvd.synchronize(h)
    for o, x, g, d in zip(res, xs, groups, DTYPES):
        assert o is x
        check_equal(x, reduce_ref(g, hvd.Max, d), "grouped in place %s" % d)
    with pytest.raises(ValueError, match="non-empty list"):
        hvd.grouped_allreduce([])


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_requires_grad_tensor_and_other_types(fw):
    if fw == "numpy":
        for dt in ("int8", "uint8"):
            xs = inputs(dt, (9,), seed=51, op=hvd.Product)
            xs = [np.abs(x).astype(dt) for x in xs]
            check_equal(hvd.allreduce(xs[hvd.rank()].copy(), op=hvd.Max, name="small." + dt),
                        reduce_ref(xs, hvd.Max, dt))
    else:
        xs = inputs("float32", (9,), seed=52)
        t = torch.from_numpy(xs[hvd.rank()]).requires_grad_(True)
        out = hvd.allreduce(t, op=hvd.Sum, name="grad.input")
        assert not out.requires_grad
        check_equal(out.detach(), reduce_ref(xs, hvd.Sum, "float32"))


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_fp16_compression(fw):
    """compression=hvd.Compression.fp16: floating-point tensors travel as float16 and
    come back in their own dtype, holding float16's arithmetic (each input rounded to
    float16, summed in float16 in rank order, AVERAGE's 1/n in float16); other dtypes
    travel as they are."""
    for dtype in ("float32", "float64"):
        # not integers: a seventh of each is rounded on the way to float16
        xs = [x / 7 for x in inputs(dtype, (4, 6), seed=61)]
        x = to_fw(xs[hvd.rank()], fw)
        halves = [x16.astype(np.float16) for x16 in xs]
        for op in (hvd.Sum, hvd.Average):
            want = reduce_ref(halves, op, "float16").astype(dtype)
            out = hvd.allreduce(x, op=op, compression=hvd.Compression.fp16,
                                name="fp16.%s.%s.%s" % (fw, dtype, op))
            same_type(out, x)
            check_equal(out, want, "fp16 %s %s" % (dtype, op))
            plain = hvd.allreduce(x, op=op, name="fp16.plain.%s.%s.%s" % (fw, dtype, op))
            assert not np.array_equal(as_np(plain), want), "the rounding must show"
        h = hvd.allreduce_async(x, name="fp16.async.%s.%s" % (fw, dtype),
                                compression=hvd.Compression.fp16)
        check_equal(hvd.synchronize(h), reduce_ref(halves, hvd.Average, "float16").astype(dtype),
                    "fp16 async %s" % dtype)
    ints = inputs("int32", (5,), seed=62)
    outs = hvd.grouped_allreduce([to_fw(ints[hvd.rank()], fw), to_fw(xs[hvd.rank()], fw)],
                                 op=hvd.Sum, compression=hvd.Compression.fp16,
                                 name="fp16.grouped.%s" % fw)
    check_equal(outs[0], reduce_ref(ints, hvd.Sum, "int32"), "int32 untouched")
    check_equal(outs[1], reduce_ref(halves, hvd.Sum, "float16").astype("float64"), "grouped")
    with pytest.raises(TypeError, match="compression must be"):
        hvd.allreduce(x, compression="fp16", name="fp16.bad")
