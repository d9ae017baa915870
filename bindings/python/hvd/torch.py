"""hvd.torch: hvd's core API plus the PyTorch training helpers of horovod.torch.

``import hvd.torch as hvd`` gives everything ``import hvd`` gives (init, rank, size,
allreduce, allreduce_async_, synchronize, broadcast_, allgather, ..., Average, Sum, HvdError)
and adds:

  DistributedOptimizer(optimizer, named_parameters=None, compression=Compression.none,
                       backward_passes_per_step=1, op=Average,
                       gradient_predivide_factor=1.0, process_set=None)
      wraps a torch.optim optimizer: every gradient is allreduced asynchronously as soon
      as backward() has produced it; step() waits for them, then runs the inner step.
  broadcast_parameters(params, root_rank, process_set=None)
      a model's state_dict() or named_parameters() broadcast in place from root_rank.
  broadcast_optimizer_state(optimizer, root_rank, model=None, process_set=None)
      an optimizer's hyper-parameters and state (momentum buffers, ...) from root_rank.
  broadcast_object(obj, root_rank=0, name=None, process_set=None)
  allgather_object(obj, name=None, process_set=None)
      any picklable object, broadcast / gathered as a list in rank order.

How the optimizer finds out that a gradient is ready: PyTorch accumulates a leaf's
gradient in an AccumulateGrad node of the autograd graph; a hook on that node runs right
after p.grad has been written (torch >= 2.1 has Tensor.register_post_accumulate_grad_hook
for the same thing and it is used when present). The hook submits
``allreduce_async_(p.grad, name="allreduce.<parameter name>")``, so the reduction of the
last layer's gradients overlaps the backward pass of the earlier layers, as in Horovod.
docs/python.md has the details and the differences from horovod.torch.
"""

import collections
import contextlib
import pickle
import warnings

import numpy as _np
import torch as _torch

import hvd as _core
from hvd import *  # noqa: F401,F403  (the core API, re-exported)

_MINE = [
    "DistributedOptimizer",
    "broadcast_parameters",
    "broadcast_optimizer_state",
    "broadcast_object",
    "allgather_object",
]
__all__ = list(_core.__all__) + _MINE


# ---- small helpers over the core API ----------------------------------------------------

def _ps_kwargs(process_set):
    """Keyword arguments selecting process_set (None: the global set)."""
    return {"process_set": _core.global_process_set if process_set is None else process_set}


def _is_root(root_rank):
    """Roots are global ranks, as in horovod.torch, also within a process set."""
    return _core.rank() == root_rank


def _wait_all(handles):
    """Wait for every handle, even after one failed (hvd may still be writing the other
    tensors until then); then raise the first failure."""
    first = None
    for h in handles:
        try:
            _core.synchronize(h)
        except Exception as e:  # noqa: BLE001 - re-raised below
            first = first or e
    if first is not None:
        raise first


def _broadcast_inplace_all(tensors, root_rank, process_set):
    """Broadcast every (name, tensor) from root_rank in place, all in flight at once."""
    kw = _ps_kwargs(process_set)
    handles = []
    try:
        for n, t in tensors:
            handles.append(_core.broadcast_async_(t, root_rank, name=n, **kw))
    finally:
        _wait_all(handles)


def _as_bytes_tensor(data):
    return _torch.from_numpy(_np.frombuffer(data, dtype=_np.uint8).copy())


def _to_numpy(x):
    return x.numpy() if isinstance(x, _torch.Tensor) else _np.asarray(x)


# ---- objects ----------------------------------------------------------------------------

def broadcast_object(obj, root_rank=0, name=None, process_set=None):
    """Return root_rank's obj on every rank (pickled, its size broadcast, then its bytes).

    Every rank of the process set must call it; only root_rank's obj is used. name names
    the two broadcasts and must be the same on every rank. Its default is a fixed string,
    not horovod.torch's type(obj).__name__, which differs when the non-root ranks pass None.
    """
    name = name or "object"
    kw = _ps_kwargs(process_set)
    root = _is_root(root_rank)
    if root:
        payload = _as_bytes_tensor(pickle.dumps(obj))
        size = _torch.tensor([payload.numel()], dtype=_torch.int64)
    else:
        size = _torch.zeros(1, dtype=_torch.int64)
    _core.broadcast_(size, root_rank, name="broadcast_object.%s.size" % name, **kw)
    if not root:
        payload = _torch.empty(int(size[0]), dtype=_torch.uint8)
    _core.broadcast_(payload, root_rank, name="broadcast_object.%s.data" % name, **kw)
    if root:
        return obj
    return pickle.loads(payload.numpy().tobytes())


def allgather_object(obj, name=None, process_set=None):
    """Return the list of every rank's obj, in rank order (of the process set).

    Pickled; the byte counts are allgathered first, then the bytes (parts may differ in
    size, which allgather allows), and the concatenation is cut back into objects. name
    (default "object") must be the same on every rank.
    """
    name = name or "object"
    kw = _ps_kwargs(process_set)
    payload = _as_bytes_tensor(pickle.dumps(obj))
    size = _torch.tensor([payload.numel()], dtype=_torch.int64)
    sizes = _to_numpy(_core.allgather(size, name="allgather_object.%s.size" % name, **kw))
    data = _to_numpy(_core.allgather(payload, name="allgather_object.%s.data" % name, **kw))
    if int(sizes.sum()) != data.size:
        raise _core.HvdError("allgather_object %r: gathered %d bytes, sizes say %d"
                             % (name, data.size, int(sizes.sum())))
    out, off = [], 0
    for n in sizes.tolist():
        out.append(pickle.loads(data[off:off + n].tobytes()))
        off += n
    return out


# ---- model and optimizer state ----------------------------------------------------------

def broadcast_parameters(params, root_rank, process_set=None):
    """Overwrite params with root_rank's, in place.

    params is a model.state_dict() (broadcast in sorted key order), or a list of
    (name, tensor) pairs such as list(model.named_parameters()), or a list of tensors
    (named by position). Every rank must pass the same names. Tensors are written through
    their storage, so parameters that require grad are fine.
    """
    if isinstance(params, dict):
        items = sorted(params.items())
    elif isinstance(params, (list, tuple)) or hasattr(params, "__iter__"):
        items = []
        for i, p in enumerate(params):
            if isinstance(p, tuple):
                items.append(p)
            else:
                items.append(("param.%d" % i, p))
    else:
        raise ValueError("broadcast_parameters: params must be a state_dict or a list of "
                         "(name, tensor) pairs, not %s" % type(params).__name__)
    tensors = []
    for n, p in items:
        if p is None:
            continue
        if not isinstance(p, _torch.Tensor):
            raise ValueError("broadcast_parameters: %r is a %s, not a tensor"
                             % (n, type(p).__name__))
        t = p.detach()
        if t.dtype == _torch.bool:
            t = t.view(_torch.uint8)
        tensors.append(("broadcast_parameters.%s" % n, t))
    with _torch.no_grad():
        _broadcast_inplace_all(tensors, root_rank, process_set)


class _TensorSpec:
    """Stands for one state tensor of the root in the broadcast layout description."""

    def __init__(self, t):
        self.shape = tuple(t.shape)
        self.dtype = t.dtype


def broadcast_optimizer_state(optimizer, root_rank, model=None, process_set=None):
    """Make optimizer's hyper-parameters and state equal to root_rank's.

    The param_groups' options (lr, momentum, weight_decay, ...) and each parameter's
    non-tensor state travel through broadcast_object; state tensors (momentum buffers,
    Adam's moments, ...) are broadcast in place, created first on ranks that do not have
    them yet, and state that root_rank does not have is dropped. Parameters are matched by
    position in param_groups, which must have the same shape on every rank. Unlike
    horovod.torch it never runs an optimizer step to create missing state, so parameters
    are not touched. model is accepted for horovod.torch compatibility and unused.
    """
    del model
    if isinstance(optimizer, _torch.optim.LBFGS):
        raise ValueError("cannot broadcast torch.optim.LBFGS state")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    layout = None
    if _is_root(root_rank):
        groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        sizes = [len(g["params"]) for g in optimizer.param_groups]
        state = []
        for p in params:
            st = optimizer.state.get(p, {})
            state.append({k: (_TensorSpec(v) if isinstance(v, _torch.Tensor) else v)
                          for k, v in st.items()})
        layout = {"groups": groups, "sizes": sizes, "state": state}
    layout = broadcast_object(layout, root_rank, name="broadcast_optimizer_state.layout",
                              process_set=process_set)
    sizes = [len(g["params"]) for g in optimizer.param_groups]
    if sizes != layout["sizes"]:
        raise ValueError("broadcast_optimizer_state: this rank's optimizer has param_groups of "
                         "%s parameters, rank %d's has %s" % (sizes, root_rank, layout["sizes"]))
    for g, opts in zip(optimizer.param_groups, layout["groups"]):
        for k, v in opts.items():
            g[k] = v
    tensors = []
    for i, (p, st_root) in enumerate(zip(params, layout["state"])):
        if not st_root:
            optimizer.state.pop(p, None)
            continue
        st = optimizer.state[p]  # a defaultdict in torch.optim.Optimizer
        for k in list(st.keys()):
            if k not in st_root:
                del st[k]
        for k, v in st_root.items():
            if isinstance(v, _TensorSpec):
                cur = st.get(k)
                if (not isinstance(cur, _torch.Tensor) or tuple(cur.shape) != v.shape
                        or cur.dtype != v.dtype or not cur.is_contiguous()):
                    cur = _torch.zeros(v.shape, dtype=v.dtype)
                    st[k] = cur
                t = cur.detach()
                if t.dtype == _torch.bool:
                    t = t.view(_torch.uint8)
                tensors.append(("broadcast_optimizer_state.%d.%s" % (i, k), t))
            else:
                st[k] = v
    with _torch.no_grad():
        _broadcast_inplace_all(tensors, root_rank, process_set)


# ---- the optimizer ----------------------------------------------------------------------

class _DistributedOptimizerMixin:
    """Put in front of the wrapped optimizer's class by DistributedOptimizer(): super()
    is then that class, whose step() runs after the gradients have been averaged."""

    def __init__(self, params, named_parameters, compression, backward_passes_per_step, op,
                 gradient_predivide_factor, process_set):
        super().__init__(params)
        self._compression = compression
        self._op = op
        self._gradient_predivide_factor = gradient_predivide_factor
        self._process_set = process_set
        all_params = [p for g in self.param_groups for p in g["params"]]
        if named_parameters is not None:
            named = list(named_parameters)
            bad = [x for x in named
                   if not (isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str))]
            if bad:
                raise ValueError("named_parameters should be a sequence of (name, parameter) "
                                 "tuples, usually model.named_parameters(); got %r" % (bad[0],))
            counts = collections.Counter(n for n, _ in named)
            dups = sorted(n for n, c in counts.items() if c > 1)
            if dups:
                raise ValueError("Parameter names in named_parameters must be unique. "
                                 "Found duplicates: %s" % ", ".join(dups))
            names = {id(p): n for n, p in named}
            unnamed = [p for p in all_params if id(p) not in names]
            if unnamed:
                raise ValueError("named_parameters was specified, but %d of the optimizer's "
                                 "parameters are not in it (shapes %s)"
                                 % (len(unnamed), [tuple(p.shape) for p in unnamed[:5]]))
        else:
            names = {}
            for gi, g in enumerate(self.param_groups):
                for pi, p in enumerate(g["params"]):
                    names.setdefault(id(p), "noname.%d.%d" % (gi, pi))
        self._names = {p: names[id(p)] for p in all_params}
        self._requires_update = [p for p in all_params if p.requires_grad]
        self._handles = {}  # param -> (hvd handle, sent tensor, ctx), or None while accumulating
        self._delay = {}    # param -> backward passes left before its allreduce
        self._hooks = []
        self._should_synchronize = True
        self._synchronized = False
        self.set_backward_passes_per_step(backward_passes_per_step)
        self._register_hooks()

    # -- configuration --
    def set_backward_passes_per_step(self, passes):
        if not isinstance(passes, int) or passes <= 0:
            raise ValueError("backward_passes_per_step must be a positive integer, got %r"
                             % (passes,))
        if self._handles:
            raise AssertionError("set_backward_passes_per_step() called with gradients in "
                                 "flight; call it after step() or synchronize()")
        self.backward_passes_per_step = passes
        for p in self._requires_update:
            self._delay[p] = passes

    # -- hooks --
    def _register_hooks(self):
        seen = set()
        for p in self._requires_update:
            if id(p) in seen:
                continue
            seen.add(id(p))
            if hasattr(p, "register_post_accumulate_grad_hook"):
                self._hooks.append(p.register_post_accumulate_grad_hook(self._make_hook(p)))
            else:
                # p.expand_as(p) is a view whose grad_fn's input is p's AccumulateGrad
                # node; a hook on that node runs after p.grad has been written. The node
                # must be kept alive or the hook goes with it.
                acc = p.expand_as(p).grad_fn.next_functions[0][0]
                self._hooks.append((acc, acc.register_hook(self._make_hook(p))))

    def _make_hook(self, p):
        def hook(*_):
            if self._handles.get(p) is not None or self._delay[p] <= 0:
                raise AssertionError(
                    "Gradients were computed more than backward_passes_per_step times "
                    "before call to step(). Increase backward_passes_per_step to "
                    "accumulate gradients locally.")
            self._delay[p] -= 1
            self._handles[p] = self._submit(p) if self._delay[p] == 0 else None
        return hook

    def _submit(self, p):
        if p.grad is None:
            p.grad = _torch.zeros_like(p)
        elif not p.grad.is_contiguous():
            p.grad = p.grad.contiguous()
        kw = _ps_kwargs(self._process_set)
        if self._gradient_predivide_factor != 1.0:
            # Average = sum * (1/f) then * f / size: the same mean, summed at a smaller
            # magnitude (useful for float16).
            kw["prescale_factor"] = 1.0 / self._gradient_predivide_factor
            kw["postscale_factor"] = self._gradient_predivide_factor
        # Compressed (fp16): a float16 copy travels, in place, and is copied back into
        # p.grad after the wait; uncompressed, p.grad itself.
        sent, ctx = self._compression.compress(p.grad)
        h = _core.allreduce_async_(sent, name="allreduce." + self._names[p], op=self._op, **kw)
        return h, sent, ctx

    # -- the optimizer interface --
    def synchronize(self):
        """Wait for every gradient's allreduce; parameters whose hook has not fired this
        step (unused in the forward pass, or fewer than backward_passes_per_step passes)
        are submitted now, a missing gradient as zeros, so every rank reduces the same
        names. Afterwards p.grad holds the reduced gradient."""
        for p in self._requires_update:
            if self._handles.get(p) is None:
                self._handles[p] = self._submit(p)
        pending = list(self._handles.items())
        for p in self._handles:
            self._delay[p] = self.backward_passes_per_step
        self._handles.clear()
        _wait_all([h for _, (h, _, _) in pending])  # raises after every gradient is released
        for p, (_, sent, ctx) in pending:
            if sent is not p.grad:
                with _torch.no_grad():
                    p.grad.copy_(self._compression.decompress(sent, ctx))
        self._synchronized = True

    @contextlib.contextmanager
    def skip_synchronize(self):
        """step() inside this context does not synchronize: for code that called
        synchronize() itself (e.g. to clip the averaged gradients) before step()."""
        self._should_synchronize = False
        try:
            yield
        finally:
            self._should_synchronize = True

    def step(self, closure=None):
        if self._should_synchronize:
            if self._synchronized:
                warnings.warn("optimizer.step() called without optimizer.skip_synchronize() "
                              "after optimizer.synchronize(): the gradients are reduced "
                              "again, which costs time and is probably not wanted.")
            self.synchronize()
        self._synchronized = False
        return super().step(closure)

    def zero_grad(self, *args, **kwargs):
        if self._handles:
            raise AssertionError(
                "optimizer.zero_grad() was called after loss.backward() but before "
                "optimizer.step() or optimizer.synchronize(). This is prohibited as it can "
                "cause a race condition.")
        return super().zero_grad(*args, **kwargs)


def DistributedOptimizer(optimizer, named_parameters=None, compression=_core.Compression.none,
                         backward_passes_per_step=1, op=None, gradient_predivide_factor=1.0,
                         process_set=None):
    """Wrap a torch.optim optimizer for synchronous data-parallel training.

    Returns an instance of a subclass of optimizer's class (so isinstance checks, param
    groups, state_dict/load_state_dict and LR schedulers work) built on the same param
    groups; the given optimizer's state is carried over. Each parameter's gradient is
    allreduced (op, default Average) asynchronously as soon as backward() has accumulated
    it for the backward_passes_per_step-th time; step() waits for all of them and then runs
    the wrapped step. named_parameters (model.named_parameters()) gives the tensor names,
    "allreduce.<name>", which must be unique; without it parameters are named by position.
    compression=hvd.Compression.fp16 sends floating-point gradients as float16 (half the
    bytes) and puts the reduced values back into p.grad in its own dtype.
    Every rank must build its optimizer with the same parameters in the same order.
    """
    if op is None:
        op = _core.Average
    if gradient_predivide_factor != 1.0 and op != _core.Average:
        raise ValueError("gradient_predivide_factor is only supported with op=Average")
    if gradient_predivide_factor <= 0:
        raise ValueError("gradient_predivide_factor must be positive, got %r"
                         % (gradient_predivide_factor,))
    if isinstance(optimizer, _DistributedOptimizerMixin):
        raise ValueError("the optimizer is already a DistributedOptimizer")
    _core._compressed("DistributedOptimizer", compression, [])  # checks compression
    base = optimizer.__class__
    cls = type(base.__name__, (_DistributedOptimizerMixin, base), {})
    wrapped = cls(optimizer.param_groups, named_parameters, compression,
                  backward_passes_per_step, op, gradient_predivide_factor, process_set)
    if optimizer.state:
        wrapped.load_state_dict(optimizer.state_dict())
    return wrapped
