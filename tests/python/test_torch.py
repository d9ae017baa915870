"""hvd.torch: DistributedOptimizer and the broadcast / gather helpers.

Run by every rank of `hvdrun -np N /usr/bin/python3 -m pytest tests/python` (N = 2, 3); the
tests run in the same order everywhere and use distinct tensor names; conftest.py starts hvd
and gives every test a watchdog. Every rank can build
every other rank's data (seeded by rank), so each one computes the expected result locally,
with plain PyTorch, and compares element by element. Models are float64 so that the only
difference from the reference is the order of a few additions (tolerance 1e-12).
"""
import warnings

import pytest
import torch

import hvd.torch as hvd


class _Probe(torch.autograd.Function):
    """Identity; its backward calls fn(), to look at the optimizer during backward()."""

    @staticmethod
    def forward(ctx, x, fn):
        ctx.fn = fn
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        ctx.fn()
        return g, None


class Net(torch.nn.Module):
    def __init__(self, seed, probe=None):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc1 = torch.nn.Linear(6, 5).double()
        self.fc2 = torch.nn.Linear(5, 3).double()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
        self.probe = probe

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        if self.probe is not None:
            h = _Probe.apply(h, self.probe)
        return self.fc2(h)


def batch(rank, step, n=4):
    g = torch.Generator().manual_seed(1000 * step + rank)
    return (torch.randn(n, 6, generator=g, dtype=torch.float64),
            torch.randint(0, 3, (n,), generator=g))


def loss_of(model, rank, step):
    x, y = batch(rank, step)
    return torch.nn.functional.cross_entropy(model(x), y)


def grads(model, rank, step):
    """Gradients of one rank's loss at this step, for the reference."""
    model.zero_grad()
    loss_of(model, rank, step).backward()
    return [p.grad.clone() for p in model.parameters()]


def mean_grads(model, step, ranks=None):
    ranks = range(hvd.size()) if ranks is None else ranks
    per = [grads(model, r, step) for r in ranks]
    return [sum(gs) / hvd.size() for gs in zip(*per)]


def assert_params_equal(a, b, tol=1e-12):
    pa, pb = list(a.parameters()), list(b.parameters())
    assert len(pa) == len(pb)
    for x, y in zip(pa, pb):
        torch.testing.assert_close(x, y, rtol=tol, atol=tol)


def sgd(params, lr, momentum=0.0):
    return torch.optim.SGD(params, lr=lr, momentum=momentum)


def test_step_equals_sgd_on_averaged_gradient():
    model, ref = Net(7), Net(7)
    opt = hvd.DistributedOptimizer(sgd(model.parameters(), 0.1, 0.9),
                                   named_parameters=model.named_parameters())
    ref_opt = sgd(ref.parameters(), 0.1, 0.9)
    for step in range(3):
        opt.zero_grad()
        loss_of(model, hvd.rank(), step).backward()
        opt.step()
        g = mean_grads(ref, step)
        for p, gp in zip(ref.parameters(), g):
            p.grad = gp
        ref_opt.step()
        assert_params_equal(model, ref)
    assert isinstance(opt, torch.optim.SGD)
    # the whole job agrees bit for bit, not only up to the tolerance
    w = model.fc1.weight.detach().clone()
    torch.testing.assert_close(hvd.broadcast_object(w, 0, name="t_step.w"), w, rtol=0, atol=0)


def test_allreduce_submitted_during_backward():
    """When backward() reaches fc1, fc2's gradients are already in flight and fc1's not."""
    seen = {}

    def look():
        seen["submitted"] = {n for n, p in model.named_parameters()
                             if opt._handles.get(p) is not None}

    model = Net(8, probe=look)
    opt = hvd.DistributedOptimizer(sgd(model.parameters(), 0.1),
                                   named_parameters=model.named_parameters())
    loss_of(model, hvd.rank(), 0).backward()
    assert seen["submitted"] == {"fc2.weight", "fc2.bias"}
    handles = dict(opt._handles)
    assert len(handles) == 4 and all(h is not None for h in handles.values())
    for h, sent, _ in handles.values():
        assert hvd.poll(h) in (True, False)
    opt.step()  # waits for them
    assert not opt._handles


def test_gradients_averaged_after_synchronize_and_skip_synchronize():
    model, ref = Net(9), Net(9)
    opt = hvd.DistributedOptimizer(sgd(model.parameters(), 0.05),
                                   named_parameters=model.named_parameters())
    loss_of(model, hvd.rank(), 3).backward()
    opt.synchronize()
    for p, g in zip(model.parameters(), mean_grads(ref, 3)):
        torch.testing.assert_close(p.grad, g, rtol=1e-12, atol=1e-12)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)  # on the averaged gradient
    clipped = [p.grad.clone() for p in model.parameters()]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "step() after synchronize()" warning here
        with opt.skip_synchronize():
            opt.step()
    with torch.no_grad():
        for p, g in zip(ref.parameters(), clipped):
            p -= 0.05 * g
    assert_params_equal(model, ref)


def test_fp16_compression():
    """compression=hvd.Compression.fp16 (Horovod's): each rank's float64 gradient travels
    as float16, is averaged with float16's arithmetic, and p.grad gets the result back as
    float64, bit for bit what the reference computes; step() uses it."""
    import numpy as np
    from _hvdtest import reduce_ref
    model, ref = Net(12), Net(12)
    opt = hvd.DistributedOptimizer(sgd(model.parameters(), 0.1), model.named_parameters(),
                                   hvd.Compression.fp16)
    loss_of(model, hvd.rank(), 5).backward()
    opt.synchronize()
    per = [grads(ref, r, 5) for r in range(hvd.size())]
    for p, gs in zip(model.parameters(), zip(*per)):
        want = reduce_ref([g.numpy().astype(np.float16) for g in gs], hvd.Average, "float16")
        assert p.grad.dtype == torch.float64
        torch.testing.assert_close(p.grad, torch.from_numpy(want.astype(np.float64)),
                                   rtol=0, atol=0)
        exact = sum(gs) / hvd.size()
        assert not torch.equal(p.grad, exact), "the float16 rounding must show"
    with opt.skip_synchronize():
        opt.step()
    with pytest.raises(TypeError, match="compression must be"):
        hvd.DistributedOptimizer(sgd(Net(13).parameters(), 0.1), compression="fp16")


def test_backward_passes_per_step_2():
    model, ref = Net(10), Net(10)
    opt = hvd.DistributedOptimizer(sgd(model.parameters(), 0.1),
                                   named_parameters=model.named_parameters(),
                                   backward_passes_per_step=2)
    for it in range(2):
        opt.zero_grad()
        loss_of(model, hvd.rank(), 10 * it).backward()
        assert len(opt._handles) == 4
        assert all(h is None for h in opt._handles.values()), "submitted after one pass"
        loss_of(model, hvd.rank(), 10 * it + 1).backward()
        assert all(h is not None for h in opt._handles.values()), "not submitted after two"
        opt.step()
        # reference: the two passes' gradients summed locally, then averaged over ranks
        g0, g1 = mean_grads(ref, 10 * it), mean_grads(ref, 10 * it + 1)
        with torch.no_grad():
            for p, a, b in zip(ref.parameters(), g0, g1):
                p -= 0.1 * (a + b)
        assert_params_equal(model, ref)
    # a third pass before step() is an error, as in horovod.torch
    opt.zero_grad()
    for step in (20, 21):
        loss_of(model, hvd.rank(), step).backward()
    with pytest.raises(AssertionError, match="backward_passes_per_step"):
        loss_of(model, hvd.rank(), 22).backward()
    opt.synchronize()


def test_unused_parameter_gets_zero_gradient():
    """A parameter with no gradient on some ranks is still reduced (as zeros) everywhere."""
    model, ref = Net(11), Net(11)
    extra = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = hvd.DistributedOptimizer(
        sgd(list(model.parameters()) + [extra], 1.0),
        named_parameters=list(model.named_parameters()) + [("extra", extra)])
    loss = loss_of(model, hvd.rank(), 5)
    if hvd.rank() % 2 == 1:
        loss = loss + (extra * torch.tensor([1.0, 2.0], dtype=torch.float64)).sum()
    loss.backward()
    opt.step()
    users = sum(1 for r in range(hvd.size()) if r % 2 == 1)
    want = -torch.tensor([1.0, 2.0], dtype=torch.float64) * users / hvd.size()
    torch.testing.assert_close(extra.detach(), want, rtol=1e-12, atol=1e-12)
    g_ref = mean_grads(ref, 5)
    with torch.no_grad():
        for p, g in zip(ref.parameters(), g_ref):
            p -= g
    assert_params_equal(model, ref)


def test_gradient_predivide_factor_and_sum():
    model, ref = Net(12), Net(12)
    opt = hvd.DistributedOptimizer(sgd(model.parameters(), 0.1),
                                   named_parameters=model.named_parameters(),
                                   gradient_predivide_factor=2.0)
    loss_of(model, hvd.rank(), 6).backward()
    opt.step()
    g_ref = mean_grads(ref, 6)
    with torch.no_grad():
        for p, g in zip(ref.parameters(), g_ref):
            p -= 0.1 * g
    assert_params_equal(model, ref)

    model, ref = Net(13), Net(13)
    opt = hvd.DistributedOptimizer(sgd(model.parameters(), 0.1),
                                   named_parameters=model.named_parameters(), op=hvd.Sum)
    loss_of(model, hvd.rank(), 7).backward()
    opt.step()
    g_ref = mean_grads(ref, 7)
    with torch.no_grad():
        for p, g in zip(ref.parameters(), g_ref):
            p -= 0.1 * hvd.size() * g
    assert_params_equal(model, ref)


def test_zero_grad_with_gradients_in_flight_raises():
    model = Net(14)
    opt = hvd.DistributedOptimizer(sgd(model.parameters(), 0.1),
                                   named_parameters=model.named_parameters())
    loss_of(model, hvd.rank(), 0).backward()
    with pytest.raises(AssertionError, match="zero_grad"):
        opt.zero_grad()
    opt.synchronize()
    opt.zero_grad()


def test_ranks_with_different_models_get_hvd_error():
    """Same parameter names, other shapes on rank 0: every rank's step() raises hvd's
    mismatch message, and the job goes on."""
    width = 4 if hvd.rank() == 0 else 5
    model = torch.nn.Linear(3, width).double()
    opt = hvd.DistributedOptimizer(sgd(model.parameters(), 0.1),
                                   named_parameters=model.named_parameters())
    model(torch.ones(2, 3, dtype=torch.float64)).sum().backward()
    msg = r"mismatched element counts for tensor 'allreduce\.(weight|bias)'"
    with pytest.raises(hvd.HvdError, match=msg):
        opt.step()
    assert not opt._handles
    ok = Net(17)
    opt = hvd.DistributedOptimizer(sgd(ok.parameters(), 0.1),
                                   named_parameters=ok.named_parameters())
    loss_of(ok, hvd.rank(), 0).backward()
    opt.step()


def test_bad_arguments_raise():
    model = Net(15)
    named = list(model.named_parameters())
    dup = [named[0], ("fc1.weight", named[1][1])] + named[2:]
    with pytest.raises(ValueError, match="unique.*fc1.weight"):
        hvd.DistributedOptimizer(sgd(model.parameters(), 0.1), named_parameters=dup)
    with pytest.raises(ValueError, match="not in it"):
        hvd.DistributedOptimizer(sgd(model.parameters(), 0.1), named_parameters=named[:3])
    with pytest.raises(ValueError, match="backward_passes_per_step"):
        hvd.DistributedOptimizer(sgd(model.parameters(), 0.1), named_parameters=named,
                                 backward_passes_per_step=0)
    with pytest.raises(ValueError, match="gradient_predivide_factor"):
        hvd.DistributedOptimizer(sgd(model.parameters(), 0.1), named_parameters=named,
                                 op=hvd.Sum, gradient_predivide_factor=2.0)
    with pytest.raises(ValueError, match="LBFGS"):
        hvd.broadcast_optimizer_state(torch.optim.LBFGS(model.parameters()), 0)


def test_unnamed_parameters_and_adam():
    """Without named_parameters the tensors are named by position; any optimizer works."""
    model, ref = Net(16), Net(16)
    opt = hvd.DistributedOptimizer(torch.optim.Adam(model.parameters(), lr=0.01))
    ref_opt = torch.optim.Adam(ref.parameters(), lr=0.01)
    for step in range(2):
        opt.zero_grad()
        loss_of(model, hvd.rank(), step).backward()
        opt.step()
        for p, g in zip(ref.parameters(), mean_grads(ref, step)):
            p.grad = g
        ref_opt.step()
    assert_params_equal(model, ref, tol=1e-10)


def test_broadcast_parameters_state_dict_and_named():
    root = hvd.size() - 1
    model = Net(100 + hvd.rank())  # different weights on every rank
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    assert_params_equal(model, Net(100), tol=0)

    model = Net(200 + hvd.rank())
    hvd.broadcast_parameters(list(model.named_parameters()), root_rank=root)
    assert_params_equal(model, Net(200 + root), tol=0)
    # still leaves of the graph, still trainable
    assert all(p.requires_grad and p.grad_fn is None for p in model.parameters())

    bn = torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        bn.running_mean.fill_(float(hvd.rank()))
    bn.num_batches_tracked.fill_(hvd.rank() + 5)
    hvd.broadcast_parameters(bn.state_dict(), root_rank=root)
    assert torch.equal(bn.running_mean, torch.full((3,), float(root)))
    assert int(bn.num_batches_tracked) == root + 5


def _sgd_with_state(seed, lr, momentum, steps):
    model = Net(seed)
    opt = sgd(model.parameters(), lr, momentum)
    for s in range(steps):
        opt.zero_grad()
        loss_of(model, 0, s).backward()
        opt.step()
    return model, opt


def test_broadcast_optimizer_state_sgd_momentum():
    root = hvd.size() - 1
    if hvd.rank() == root:  # root: two steps taken, lr 0.123, momentum 0.8
        model, opt = _sgd_with_state(300, 0.123, 0.8, 2)
    else:  # others: a fresh optimizer with other hyper-parameters and no state
        model = Net(300)
        opt = sgd(model.parameters(), 0.5, 0.1)
    before = [p.detach().clone() for p in model.parameters()]
    hvd.broadcast_optimizer_state(opt, root_rank=root)
    _, want = _sgd_with_state(300, 0.123, 0.8, 2)
    assert opt.param_groups[0]["lr"] == 0.123 and opt.param_groups[0]["momentum"] == 0.8
    ps = [p for g in opt.param_groups for p in g["params"]]
    wps = [p for g in want.param_groups for p in g["params"]]
    for p, wp in zip(ps, wps):
        assert torch.equal(opt.state[p]["momentum_buffer"], want.state[wp]["momentum_buffer"])
    # parameters themselves are not touched
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p.detach(), b)

    # state root does not have is dropped: root fresh, the others with momentum and more
    if hvd.rank() == root:
        model = Net(301)
        opt = sgd(model.parameters(), 0.2, 0.9)
    else:
        model, opt = _sgd_with_state(301, 0.3, 0.5, 1)
        opt.state[model.fc1.weight]["extra"] = 1
    hvd.broadcast_optimizer_state(opt, root_rank=root)
    assert len(opt.state) == 0
    assert opt.param_groups[0]["lr"] == 0.2 and opt.param_groups[0]["momentum"] == 0.9

    # keys root does not have are dropped, the others overwritten
    model, opt = _sgd_with_state(302, 0.1, 0.9, 1 if hvd.rank() == root else 2)
    if hvd.rank() != root:
        opt.state[model.fc1.weight]["extra"] = 1
    hvd.broadcast_optimizer_state(opt, root_rank=root)
    want_model, want = _sgd_with_state(302, 0.1, 0.9, 1)
    for p, wp in zip(model.parameters(), want_model.parameters()):
        assert opt.state[p].keys() == {"momentum_buffer"}
        assert torch.equal(opt.state[p]["momentum_buffer"], want.state[wp]["momentum_buffer"])


def test_broadcast_optimizer_state_adam_and_wrapped():
    """Adam (tensor 'step' and two moments) through a DistributedOptimizer; ranks start
    with different amounts of state, root has taken 2 steps."""
    root = 0
    model = Net(400)
    inner = torch.optim.Adam(model.parameters(), lr=0.001 * (hvd.rank() + 1))
    for s in range(2 if hvd.rank() == root else hvd.rank() % 2):
        inner.zero_grad()
        loss_of(model, 0, s).backward()
        inner.step()
    opt = hvd.DistributedOptimizer(inner, named_parameters=model.named_parameters())
    hvd.broadcast_parameters(model.state_dict(), root_rank=root)
    hvd.broadcast_optimizer_state(opt, root_rank=root)

    want_model = Net(400)
    want = torch.optim.Adam(want_model.parameters(), lr=0.001)
    for s in range(2):
        want.zero_grad()
        loss_of(want_model, 0, s).backward()
        want.step()
    assert_params_equal(model, want_model, tol=0)
    assert opt.param_groups[0]["lr"] == 0.001
    for p, wp in zip(model.parameters(), want_model.parameters()):
        st, wst = opt.state[p], want.state[wp]
        assert set(st) == set(wst)
        for k in wst:
            assert torch.equal(torch.as_tensor(st[k]), torch.as_tensor(wst[k])), k
    # and training continues identically everywhere
    opt.zero_grad()
    loss_of(model, hvd.rank(), 9).backward()
    opt.step()
    for p, g in zip(want_model.parameters(), mean_grads(want_model, 9)):
        p.grad = g
    want.step()
    assert_params_equal(model, want_model, tol=1e-10)


def _obj(rank):
    return {"rank": rank, "payload": list(range(rank * 1000)), "name": "r" * (rank + 1),
            "t": torch.arange(rank + 1)}


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k])
        else:
            assert a[k] == b[k]


def test_broadcast_object_sizes_differ():
    for root in range(hvd.size()):
        got = hvd.broadcast_object(_obj(hvd.rank()), root_rank=root, name="t_bobj")
        _same(got, _obj(root))
    assert hvd.broadcast_object(None if hvd.rank() else 3.5) == 3.5


def test_allgather_object_sizes_differ():
    got = hvd.allgather_object(_obj(hvd.rank()), name="t_gobj")
    assert len(got) == hvd.size()
    for r, o in enumerate(got):
        _same(o, _obj(r))
    assert hvd.allgather_object("x" * hvd.rank()) == ["x" * r for r in range(hvd.size())]
