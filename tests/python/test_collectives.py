"""allgather, broadcast, alltoall, reducescatter, process sets, join, barrier:
numpy and torch, element by element against references every rank computes locally."""
import time

import numpy as np
import pytest
import torch

import hvd
from _hvdtest import (DTYPES, FRAMEWORKS, check_equal, make, need_ranks, reduce_ref,
                      same_type, shape_of, to_fw)


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_allgather_variable_first_dim(fw, dtype):
    n, r = hvd.size(), hvd.rank()
    handles = []
    for dim in (1, 2, 3):
        def part(j):
            return make(j, dtype, (j + 1,) + (4,) * (dim - 1), seed=60 + dim)
        x = to_fw(part(r), fw)
        want = np.concatenate([part(j) for j in range(n)])
        out = hvd.allgather(x, name="ag.%s.%s.%d" % (fw, dtype, dim))
        same_type(out, x)
        check_equal(out, want, "allgather %s %dd" % (dtype, dim))
        handles.append((hvd.allgather_async(x, name="aga.%s.%s.%d" % (fw, dtype, dim)), want))
    for h, want in handles:
        check_equal(hvd.synchronize(h), want, "allgather async")


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_allgather_empty_part(fw):
    n, r = hvd.size(), hvd.rank()
    parts = [make(j, "int64", (j % 2, 3), seed=70) for j in range(n)]
    out = hvd.allgather(to_fw(parts[r], fw), name="ag.empty.%s" % fw)
    check_equal(out, np.concatenate(parts), "allgather with empty parts")


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_broadcast(fw, dtype):
    n, r = hvd.size(), hvd.rank()
    for dim in (1, 2, 3):
        for root in range(n):
            xs = [make(j, dtype, shape_of(dim), seed=80 + dim) for j in range(n)]
            x = to_fw(xs[r], fw)
            out = hvd.broadcast(x, root, name="bc.%s.%s.%d.%d" % (fw, dtype, dim, root))
            same_type(out, x)
            check_equal(out, xs[root], "broadcast root %d" % root)
            check_equal(x, xs[r], "broadcast leaves its input alone")
            y = hvd.broadcast_(x, root_rank=root, name="bc_.%s.%s.%d.%d" % (fw, dtype, dim, root))
            assert y is x
            check_equal(x, xs[root], "broadcast_ root %d" % root)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_broadcast_non_contiguous_in_place(fw):
    n, r = hvd.size(), hvd.rank()
    xs = [make(j, "float32", (3, 5), seed=90) for j in range(n)]
    base = to_fw(xs[r], fw)
    view = base[:, 1:4]
    hvd.broadcast_(view, n - 1, name="bc.view.%s" % fw)
    want = xs[r].copy()
    want[:, 1:4] = xs[n - 1][:, 1:4]
    check_equal(base, want, "only the view changed")


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_alltoall(fw, dtype):
    n, r = hvd.size(), hvd.rank()
    for dim in (1, 2, 3):
        trail = (3,) * (dim - 1)
        # Equal parts: n rows per rank, row j*... goes to rank j.
        xs = [make(j, dtype, (2 * n,) + trail, seed=100 + dim) for j in range(n)]
        out = hvd.alltoall(to_fw(xs[r], fw), name="a2a.%s.%s.%d" % (fw, dtype, dim))
        want = np.concatenate([xs[j][2 * r:2 * r + 2] for j in range(n)])
        check_equal(out, want, "alltoall equal %dd" % dim)
        # Uneven splits: rank j sends (j + k) % 3 rows to rank k.
        splits = [[(j + k) % 3 for k in range(n)] for j in range(n)]
        ys = [make(j, dtype, (sum(splits[j]),) + trail, seed=110 + dim) for j in range(n)]
        sp = splits[r] if fw == "numpy" else torch.tensor(splits[r], dtype=torch.int32)
        out, recv = hvd.alltoall(to_fw(ys[r], fw), splits=sp,
                                 name="a2av.%s.%s.%d" % (fw, dtype, dim))
        same_type(out, to_fw(ys[r], fw))
        off = [np.cumsum([0] + splits[j]) for j in range(n)]
        want = np.concatenate([ys[j][off[j][r]:off[j][r + 1]] for j in range(n)])
        check_equal(out, want, "alltoall splits %dd" % dim)
        assert [int(v) for v in recv] == [splits[j][r] for j in range(n)]


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_reducescatter(fw, dtype):
    n, r = hvd.size(), hvd.rank()
    for dim in (1, 2, 3):
        for rows in (2 * n, 2 * n + 1):     # even split, and the first rank gets a row more
            shape = (rows,) + (3,) * (dim - 1)
            xs = [make(j, dtype, shape, seed=120 + dim + rows) for j in range(n)]
            mine = rows // n + (1 if r < rows % n else 0)
            first = r * (rows // n) + min(r, rows % n)
            for op, pre, post in ((hvd.Sum, 1.0, 1.0), (hvd.Average, 1.0, 1.0),
                                  (hvd.Sum, 2.5, 0.5)):
                nm = "rs.%s.%s.%d.%d.%d.%g" % (fw, dtype, dim, rows, op, pre)
                out = hvd.reducescatter(to_fw(xs[r], fw), name=nm, op=op, prescale_factor=pre,
                                        postscale_factor=post)
                want = reduce_ref(xs, op, dtype, pre, post)[first:first + mine]
                check_equal(out, want, nm)


def test_reducescatter_default_op_is_average():
    n, r = hvd.size(), hvd.rank()
    xs = [make(j, "float64", (n * 2,), seed=130) for j in range(n)]
    out = hvd.reducescatter(xs[r], name="rs.default")
    check_equal(out, reduce_ref(xs, hvd.Average, "float64")[2 * r:2 * r + 2])


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_process_sets(fw):
    need_ranks(2)
    n, r = hvd.size(), hvd.rank()
    even = hvd.add_process_set([j for j in range(n) if j % 2 == 0])
    odd = hvd.add_process_set(hvd.ProcessSet([j for j in range(n) if j % 2 == 1]))
    assert even.process_set_id != odd.process_set_id
    mine, other = (even, odd) if r % 2 == 0 else (odd, even)
    assert mine.included() and not other.included()
    assert mine.rank() == mine.ranks.index(r) and other.rank() == -1
    assert mine.size() == len(mine.ranks)
    xs = [make(j, "int32", (4, 3), seed=140) for j in range(n)]
    x = to_fw(xs[r], fw)
    out = hvd.allreduce(x, op=hvd.Sum, name="ps.ar.%s" % fw, process_set=mine)
    check_equal(out, reduce_ref([xs[j] for j in mine.ranks], hvd.Sum, "int32"))
    root = mine.ranks[-1]   # a global rank
    check_equal(hvd.broadcast(x, root, name="ps.bc.%s" % fw, process_set=mine), xs[root])
    got = hvd.allgather(x, name="ps.ag.%s" % fw, process_set=mine)
    check_equal(got, np.concatenate([xs[j] for j in mine.ranks]))
    hvd.barrier(process_set=mine)
    with pytest.raises(ValueError, match="not a member"):
        hvd.allreduce(x, name="ps.other", process_set=other)
    with pytest.raises(ValueError, match="not a rank of"):
        hvd.broadcast(x, other.ranks[0] if other.ranks else n, process_set=mine)
    with pytest.raises(ValueError, match="not registered"):
        hvd.allreduce(x, process_set=hvd.ProcessSet([0]))
    # A grouped allreduce inside the set, and the global set still works.
    outs = hvd.grouped_allreduce([x, x], op=hvd.Max, name="ps.g.%s" % fw, process_set=mine)
    for o in outs:
        check_equal(o, reduce_ref([xs[j] for j in mine.ranks], hvd.Max, "int32"))
    check_equal(hvd.allreduce(x, op=hvd.Sum, name="ps.global.%s" % fw),
                reduce_ref(xs, hvd.Sum, "int32"))


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_join_allreduce(fw):
    need_ranks(2)
    n, r = hvd.size(), hvd.rank()
    xs = [make(j, "float64", (5, 2), seed=150) for j in range(n)]
    for first in range(n):
        if r == first:
            last = hvd.join()
        else:
            x = to_fw(xs[r], fw)
            ha = hvd.allreduce_async(x, op=hvd.Sum, name="join.sum.%s.%d" % (fw, first))
            hb = hvd.allreduce_async(x, op=hvd.Average, name="join.avg.%s.%d" % (fw, first))
            others = [xs[j] for j in range(n) if j != first]
            check_equal(hvd.synchronize(ha), reduce_ref(others, hvd.Sum, "float64"))
            # Average divides by the whole set: the joined rank counted as zeros.
            s = reduce_ref(others, hvd.Sum, "float64")
            check_equal(hvd.synchronize(hb), s * (1.0 / n))
            last = hvd.join()
        lasts = hvd.allgather(np.array([last]), name="join.last.%s.%d" % (fw, first))
        assert len(set(lasts.tolist())) == 1, "ranks disagree about the last joined rank"
        assert last != first and 0 <= last < n


def test_join_then_allgather_fails_on_the_others():
    need_ranks(2)
    n, r = hvd.size(), hvd.rank()
    if r == 0:
        hvd.join()
    else:
        with pytest.raises(hvd.HvdError) as e:
            hvd.allgather(np.zeros(2), name="join.ag")
        assert "join" in str(e.value).lower()
        hvd.join()
    hvd.barrier()


def test_barrier_waits_for_the_slow_rank():
    need_ranks(2)
    if hvd.rank() == 0:
        time.sleep(1.0)
    t = time.monotonic()
    hvd.barrier()
    if hvd.rank() != 0:
        assert time.monotonic() - t >= 0.8
