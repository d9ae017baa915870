"""Errors: ranks that disagree get hvd.HvdError carrying hvd's message on every rank (and
the job goes on); names still in flight, and bad arguments, raise ValueError/TypeError
on the submitting rank before anything reaches libhvd."""
import numpy as np
import pytest
import torch

import hvd
from _hvdtest import FRAMEWORKS, check_equal, make, need_ranks, reduce_ref, to_fw


def expect_hvd_error(fn, *needles):
    with pytest.raises(hvd.HvdError) as e:
        fn()
    msg = str(e.value)
    for s in needles:
        assert s in msg, "%r not in %r" % (s, msg)
    assert isinstance(e.value, RuntimeError)
    return msg


def still_works(tag):
    n, r = hvd.size(), hvd.rank()
    xs = [make(j, "int64", (6,), seed=200) for j in range(n)]
    check_equal(hvd.allreduce(xs[r], op=hvd.Sum, name="after." + tag),
                reduce_ref(xs, hvd.Sum, "int64"), "after " + tag)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_mismatched_shapes(fw):
    need_ranks(2)
    r = hvd.rank()
    nm = "err.shape.%s" % fw
    x = to_fw(np.ones((3, 4 + r), np.float32), fw)
    msg = expect_hvd_error(lambda: hvd.allreduce(x, name=nm), "mismatched element counts", nm)
    assert "rank 0 sent 12" in msg
    still_works("shape." + fw)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_mismatched_dtypes(fw):
    need_ranks(2)
    r = hvd.rank()
    x = to_fw(np.ones(5, np.int32 if r % 2 == 0 else np.float32), fw)
    nm = "err.dtype.%s" % fw
    msg = expect_hvd_error(lambda: hvd.allreduce(x, name=nm), "mismatched data types", nm)
    assert "int32" in msg and "float32" in msg
    still_works("dtype." + fw)


def test_mismatched_ops_and_scales():
    need_ranks(2)
    r = hvd.rank()
    x = np.ones(4, np.float64)
    expect_hvd_error(lambda: hvd.allreduce(x, name="err.op", op=hvd.Sum if r == 0 else hvd.Max),
                     "mismatched reduction operations", "err.op")
    expect_hvd_error(lambda: hvd.allreduce(x, name="err.scale", prescale_factor=1.0 + r),
                     "mismatched prescale/postscale factors", "err.scale")
    expect_hvd_error(lambda: hvd.allreduce(x, name="err.post", postscale_factor=2.0 + r),
                     "mismatched prescale/postscale factors")
    still_works("ops")


def test_mismatched_broadcast_root_and_collective():
    need_ranks(2)
    r, n = hvd.rank(), hvd.size()
    x = np.ones(4, np.float32)
    expect_hvd_error(lambda: hvd.broadcast(x, r, name="err.root"),
                     "mismatched broadcast root ranks", "err.root")
    if r == 0:
        f = lambda: hvd.allreduce(x, name="err.kind")   # noqa: E731
    else:
        f = lambda: hvd.broadcast(x, 0, name="err.kind")   # noqa: E731
    expect_hvd_error(f, "mismatched operations", "err.kind")
    still_works("root")


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_mismatched_allgather_and_alltoall_shapes(fw):
    need_ranks(2)
    r = hvd.rank()
    x = to_fw(np.ones((2, 3 + r), np.float32), fw)
    expect_hvd_error(lambda: hvd.allgather(x, name="err.ag.%s" % fw),
                     "Mismatched allgather tensor shapes", "[2, 3]", "[2, 4]")
    y = to_fw(np.ones((2,) * (1 + (r > 0)), np.float32), fw)
    expect_hvd_error(lambda: hvd.allgather(y, name="err.agr.%s" % fw),
                     "Mismatched allgather tensor shapes", "rank 1", "rank 2")
    z = to_fw(np.ones((2 * hvd.size(), 2 + r), np.float32), fw)
    expect_hvd_error(lambda: hvd.alltoall(z, name="err.a2a.%s" % fw),
                     "Mismatched alltoall tensor shapes")
    w = to_fw(np.ones((3,), np.int32 if r == 0 else np.int64), fw)
    expect_hvd_error(lambda: hvd.allgather(w, name="err.agt.%s" % fw), "mismatched data types")
    still_works("allgather." + fw)


def test_duplicate_name_in_flight():
    need_ranks(2)
    # The duplicate is refused on the rank that submits it while the first is still
    # pending (the ranks that have not submitted it yet keep it pending).
    r = hvd.rank()
    x = np.ones(3, np.float32)
    if r == 0:
        h1 = hvd.allreduce_async(x, name="dup.a")
        with pytest.raises(ValueError, match="'dup.a' is already in flight"):
            hvd.allreduce_async(x, name="dup.a")
        with pytest.raises(ValueError, match="already in flight"):
            hvd.allgather_async(x, name="dup.a")
        hvd.barrier()
        h2 = hvd.allreduce_async(x, name="dup.b")
    else:
        h2 = hvd.allreduce_async(x, name="dup.b")
        with pytest.raises(ValueError, match="'dup.b' is already in flight"):
            hvd.allreduce_(x.copy(), name="dup.b")
        hvd.barrier()
        h1 = hvd.allreduce_async(x, name="dup.a")
    check_equal(hvd.synchronize(h1), x)
    check_equal(hvd.synchronize(h2), x)
    # Once synchronized, the name can be used again.
    check_equal(hvd.allreduce(x, name="dup.a"), x)


def test_error_surfaces_through_synchronize_and_poll():
    need_ranks(2)
    r = hvd.rank()
    h = hvd.allreduce_async(np.ones(2 + r, np.float32), name="err.async")
    while not hvd.poll(h):
        pass
    with pytest.raises(hvd.HvdError, match="mismatched element counts"):
        hvd.synchronize(h)
    with pytest.raises(ValueError):
        hvd.synchronize(h)
    still_works("async")


def test_bad_arguments():
    x = np.ones(4, np.float32)
    with pytest.raises(TypeError, match="numpy.ndarray or a torch.Tensor"):
        hvd.allreduce([1.0, 2.0])
    with pytest.raises(TypeError, match="dtype bool"):
        hvd.allreduce(np.ones(3, bool))
    with pytest.raises(TypeError, match="complex"):
        hvd.allreduce(torch.ones(3, dtype=torch.complex64))
    with pytest.raises(ValueError, match="Adasum"):
        hvd.allreduce(x, op=2)
    with pytest.raises(ValueError, match="op 7"):
        hvd.allreduce(x, op=7)
    with pytest.raises(ValueError, match="not both"):
        hvd.allreduce(x, op=hvd.Sum, average=True)
    with pytest.raises(ValueError, match="prescale_factor"):
        hvd.allreduce(x, prescale_factor=float("nan"))
    with pytest.raises(ValueError, match="postscale_factor"):
        hvd.allreduce(x, postscale_factor="2")
    with pytest.raises(ValueError, match="read-only"):
        ro = np.ones(3)
        ro.flags.writeable = False
        hvd.allreduce_(ro)
    with pytest.raises(ValueError, match="root_rank"):
        hvd.broadcast(x, hvd.size())
    with pytest.raises(ValueError, match="root_rank"):
        hvd.broadcast(x, -1)
    with pytest.raises(ValueError, match="at least one dimension"):
        hvd.allgather(np.ones((), np.float32))
    with pytest.raises(ValueError, match="splits"):
        hvd.alltoall(np.ones(4), splits=[1] * (hvd.size() + 1))
    with pytest.raises(ValueError, match="add up to"):
        hvd.alltoall(np.ones(4), splits=[5] + [0] * (hvd.size() - 1))
    with pytest.raises(TypeError, match="process_set must be an hvd.ProcessSet"):
        hvd.allreduce(x, process_set=0)
    with pytest.raises(TypeError, match="name"):
        hvd.allreduce(x, name=3)
    with pytest.raises(ValueError, match="duplicates"):
        hvd.ProcessSet([0, 0])
    with pytest.raises(ValueError, match="distinct ranks"):
        hvd.add_process_set([hvd.size()])
    # Nothing above reached the other ranks: the job is still in step.
    still_works("bad-arguments")
