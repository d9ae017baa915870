"""hvd: Python bindings of the hvd collective communication runtime.

The API is horovod.torch's, on numpy arrays and CPU torch tensors (no copy of
contiguous inputs: hvd reads and writes their memory directly):

  init, shutdown, is_initialized, rank, size, local_rank, local_size, cross_rank,
  cross_size,
  allreduce, allreduce_, allreduce_async, allreduce_async_,
  grouped_allreduce, grouped_allreduce_, grouped_allreduce_async,
  grouped_allreduce_async_,
  allgather, allgather_async, broadcast, broadcast_, broadcast_async,
  broadcast_async_, alltoall, alltoall_async, reducescatter, reducescatter_async,
  synchronize, poll, join, barrier,
  ProcessSet, global_process_set, add_process_set,
  Average, Sum, Min, Max, Product,
  start_timeline, stop_timeline,
  HvdError (a RuntimeError carrying hvd's message; alias HorovodInternalError),
  get_stats (hvd's counters; not in Horovod).

Every rank must run the same collectives with the same names (unnamed ones are named
in call order, so they match when every rank calls them in the same order).
Documentation: docs/python.md.
"""
import atexit
import ctypes
import math
import numbers
import sys
import threading

import numpy as np

from . import _lib

__all__ = [
    "init", "shutdown", "is_initialized", "rank", "size", "local_rank", "local_size",
    "cross_rank", "cross_size",
    "allreduce", "allreduce_", "allreduce_async", "allreduce_async_",
    "grouped_allreduce", "grouped_allreduce_", "grouped_allreduce_async",
    "grouped_allreduce_async_",
    "allgather", "allgather_async", "broadcast", "broadcast_", "broadcast_async",
    "broadcast_async_", "alltoall", "alltoall_async", "reducescatter",
    "reducescatter_async", "synchronize", "poll", "join", "barrier",
    "ProcessSet", "global_process_set", "add_process_set",
    "Compression", "Compressor", "NoneCompressor", "FP16Compressor",
    "Average", "Sum", "Min", "Max", "Product",
    "start_timeline", "stop_timeline", "get_stats",
    "HvdError", "HorovodInternalError",
]

_C = _lib.load()


class HvdError(RuntimeError):
    """An hvd operation failed; str(e) is hvd's message, e.status its hvd_status_t."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


HorovodInternalError = HvdError

# Horovod's values (Adasum, 2, is not implemented by hvd).
Average, Sum, Min, Max, Product = 0, 1, 3, 4, 5
_OPS = {Average: _lib.AVERAGE, Sum: _lib.SUM, Min: _lib.MIN, Max: _lib.MAX,
        Product: _lib.PRODUCT}
_OP_NAMES = {Average: "Average", Sum: "Sum", Min: "Min", Max: "Max", Product: "Product"}

_NP_DTYPES = {
    np.dtype(np.float16): _lib.FLOAT16, np.dtype(np.float32): _lib.FLOAT32,
    np.dtype(np.float64): _lib.FLOAT64, np.dtype(np.int8): _lib.INT8,
    np.dtype(np.uint8): _lib.UINT8, np.dtype(np.int32): _lib.INT32,
    np.dtype(np.int64): _lib.INT64,
}
_torch_dtypes = None

# ---- module state: one context per process ---------------------------------------------
_lock = threading.RLock()
_ctx = None                # ctypes.c_void_p while initialized
_handles = {}              # handle -> _Handle
_inflight = {}             # (process set id, name) -> handle
_next_handle = 1
_noname = {}               # op -> next automatic name index
_process_sets = []         # registered ProcessSet objects other than the global one
_atexit_registered = False


def _not_initialized():
    return ValueError("hvd has not been initialized; use hvd.init().")


def _ctx_or_raise():
    c = _ctx
    if c is None:
        raise _not_initialized()
    return c


def _status_text(st):
    return _C.hvd_status_string(st).decode()


def _job_error(st, what):
    """HvdError for a failed call that has no request to ask for a message."""
    msg = "%s: %s" % (what, _status_text(st))
    if _ctx is not None:
        extra = _C.hvd_ctx_error(_ctx).decode(errors="replace")
        if extra:
            msg += ": " + extra
    return HvdError(msg, st)


def _submit_error(st, fn, name):
    if st == _lib.HVD_ERR_INVALID_PARAM:
        return ValueError("hvd.%s(name=%r): hvd refused the arguments (its log line on "
                          "stderr names the one that is wrong)" % (fn, name))
    return _job_error(st, "hvd.%s(name=%r)" % (fn, name))


# ---- tensors ---------------------------------------------------------------------------

def _torch():
    return sys.modules.get("torch")


def _is_torch(x):
    t = _torch()
    return t is not None and isinstance(x, t.Tensor)


def _dtype_code(x, fn):
    """hvd_dtype_t of x, checking that x is a numpy array or a CPU torch tensor."""
    global _torch_dtypes
    if isinstance(x, np.ndarray):
        code = _NP_DTYPES.get(x.dtype)
        if code is None:
            raise TypeError("hvd.%s: numpy dtype %s is not supported (supported: float16, "
                            "float32, float64, int8, uint8, int32, int64)" % (fn, x.dtype))
        return code
    if _is_torch(x):
        t = _torch()
        if _torch_dtypes is None:
            _torch_dtypes = {
                t.float16: _lib.FLOAT16, t.bfloat16: _lib.BFLOAT16,
                t.float32: _lib.FLOAT32, t.float64: _lib.FLOAT64, t.int8: _lib.INT8,
                t.uint8: _lib.UINT8, t.int32: _lib.INT32, t.int64: _lib.INT64,
            }
        if x.device.type != "cpu":
            raise ValueError("hvd.%s: tensor is on device %s; hvd works on CPU tensors "
                             "only" % (fn, x.device))
        if x.is_sparse:
            raise ValueError("hvd.%s: sparse tensors are not supported" % fn)
        code = _torch_dtypes.get(x.dtype)
        if code is None:
            raise TypeError("hvd.%s: torch dtype %s is not supported (supported: float16, "
                            "bfloat16, float32, float64, int8, uint8, int32, int64)"
                            % (fn, x.dtype))
        return code
    raise TypeError("hvd.%s: expected a numpy.ndarray or a torch.Tensor, got %s"
                    % (fn, type(x).__name__))


def _contiguous(x):
    if isinstance(x, np.ndarray):
        return x if x.flags.c_contiguous else np.ascontiguousarray(x)
    return x if x.is_contiguous() else x.contiguous()


def _ptr(x):
    return x.ctypes.data if isinstance(x, np.ndarray) else x.data_ptr()


def _numel(x):
    return x.size if isinstance(x, np.ndarray) else x.numel()


def _empty(like, shape):
    if isinstance(like, np.ndarray):
        return np.empty(shape, dtype=like.dtype)
    return _torch().empty(shape, dtype=like.dtype)


def _check_writable(x, fn):
    if isinstance(x, np.ndarray) and not x.flags.writeable:
        raise ValueError("hvd.%s: the array is read-only and the operation is in place" % fn)


def _copy_into(dst, src):
    if isinstance(dst, np.ndarray):
        dst[...] = src
    else:
        with _torch().no_grad():
            dst.copy_(src)


def _from_c(like, shape, buf, count):
    """A new array/tensor of like's type holding count elements copied from buf."""
    out = _empty(like, shape)
    n = _numel(out)
    if n != count:
        raise HvdError("hvd: internal error: %d elements received for shape %s"
                       % (count, list(shape)))
    if n:
        esize = out.itemsize if isinstance(out, np.ndarray) else out.element_size()
        ctypes.memmove(_ptr(out), buf, n * esize)
    return out


def _rows(shape):
    r = 1
    for d in shape[1:]:
        r *= d
    return r


# ---- arguments -------------------------------------------------------------------------

def _check_factor(v, what, fn):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
        raise ValueError("hvd.%s: %s must be a finite number, got %r" % (fn, what, v))
    return float(v)


def _reduce_op(op, average, fn, default=Average):
    if op is not None and average is not None:
        raise ValueError("hvd.%s: pass op or the deprecated average, not both" % fn)
    if average is not None:
        op = Average if average else Sum
    if op is None:
        op = default
    if isinstance(op, bool) or op not in _OPS:
        if op == 2:
            raise ValueError("hvd.%s: Adasum is not supported by hvd" % fn)
        raise ValueError("hvd.%s: op %r is not one of hvd.Average, hvd.Sum, hvd.Min, "
                         "hvd.Max, hvd.Product" % (fn, op))
    return _OPS[op]


def _pset(process_set, fn):
    """(id, set size, this rank's index in the set) after checking membership."""
    ctx = _ctx_or_raise()
    if not isinstance(process_set, ProcessSet):
        raise TypeError("hvd.%s: process_set must be an hvd.ProcessSet, got %s"
                        % (fn, type(process_set).__name__))
    pid = process_set.process_set_id
    if pid == 0:
        return 0, _C.hvd_size(ctx), _C.hvd_rank(ctx)
    if pid is None:
        raise ValueError("hvd.%s: %r is not registered; call hvd.add_process_set first"
                         % (fn, process_set))
    me = _C.hvd_process_set_rank(ctx, pid)
    n = _C.hvd_process_set_size(ctx, pid)
    if n < 0:
        raise ValueError("hvd.%s: %r is not known to hvd (registered before the last "
                         "hvd.shutdown?)" % (fn, process_set))
    if me < 0:
        raise ValueError("hvd.%s: rank %d is not a member of %r"
                         % (fn, _C.hvd_rank(ctx), process_set))
    return pid, n, me


def _name(name, op):
    if name is None:
        with _lock:
            k = _noname.get(op, 0)
            _noname[op] = k + 1
        return "%s.noname.%d" % (op, k)
    if not isinstance(name, str):
        raise TypeError("hvd: name must be a str, got %s" % type(name).__name__)
    if not name or "\0" in name:
        raise ValueError("hvd: name must be a non-empty string without NUL characters")
    return name


# ---- requests and handles --------------------------------------------------------------

class _Handle:
    __slots__ = ("reqs", "keep", "finish", "keys", "fn")

    def __init__(self, fn, keep, finish):
        self.reqs = []          # ctypes.c_void_p, in submission order
        self.keep = keep        # Python objects hvd reads or writes until completion
        self.finish = finish    # reqs -> the value synchronize() returns
        self.keys = []          # (process set id, name) entries of _inflight
        self.fn = fn


def _done(h):
    d = ctypes.c_int(0)
    for r in h.reqs:
        _C.hvd_test(r, ctypes.byref(d))
        if not d.value:
            return False
    return True


def _claim(h, pid, names):
    """Refuse names this rank still has in flight (Horovod's duplicate-name error)."""
    for nm in names:
        other = _inflight.get((pid, nm))
        if other is not None and other in _handles and not _done(_handles[other]):
            raise ValueError("hvd.%s: a tensor named '%s' is already in flight on this rank "
                             "(process set %d); use a different name, or synchronize the "
                             "first one before submitting it again" % (h.fn, nm, pid))


def _post(h, cfn, args, n=None):
    """Submit one request of handle h through C function cfn."""
    req = ctypes.c_void_p()
    ctx = _ctx_or_raise()
    if n is None:
        st = cfn(ctx, ctypes.byref(args), ctypes.byref(req))
    else:
        st = cfn(ctx, args, n, ctypes.byref(req))
    if st != _lib.HVD_OK:
        first = args if n is None else args[0]
        raise _submit_error(st, h.fn, first.name.decode() if first.name else None)
    h.reqs.append(req)


def _register(h, pid, names):
    global _next_handle
    with _lock:
        hid = _next_handle
        _next_handle += 1
        _handles[hid] = h
        for nm in names:
            _inflight[(pid, nm)] = hid
            h.keys.append((pid, nm))
    return hid


def _abandon(h):
    for r in h.reqs:
        _C.hvd_req_free(r)
    h.reqs = []


def _submit(fn, pid, names, keep, finish, posts):
    """Check names, run the C submissions in posts (list of (cfn, args[, n])), and
    return a new handle. A failure after the first submission waits for the submitted
    requests (hvd still uses their buffers) before raising."""
    h = _Handle(fn, keep, finish)
    with _lock:
        _claim(h, pid, names)
        try:
            for p in posts:
                _post(h, *p)
        except BaseException:
            _abandon(h)
            raise
        return _register(h, pid, names)


def _req_failure(h):
    """(status, message) of the first failed request of h, or None."""
    for r in h.reqs:
        st = _C.hvd_wait(r)  # releases the GIL while blocked
        if st != _lib.HVD_OK:
            msg = _C.hvd_req_error(r).decode(errors="replace") or _status_text(st)
            return st, msg
    return None


def poll(handle):
    """True when the operation of handle has finished (successfully or not)."""
    with _lock:
        h = _handles.get(handle)
    if h is None:
        raise ValueError("hvd.poll: %r is not a handle of an operation in flight" % (handle,))
    return _done(h)


def synchronize(handle):
    """Wait for the operation of handle; return its output, or raise HvdError with hvd's
    message if it failed. The handle is released either way."""
    with _lock:
        h = _handles.pop(handle, None)
    if h is None:
        raise ValueError("hvd.synchronize: %r is not a handle of an operation in flight"
                         % (handle,))
    try:
        fail = _req_failure(h)
        if fail is not None:
            raise HvdError(fail[1], fail[0])
        return h.finish(h.reqs)
    finally:
        _abandon(h)
        with _lock:
            for k in h.keys:
                if _inflight.get(k) == handle:
                    del _inflight[k]


# ---- lifecycle -------------------------------------------------------------------------

class ProcessSet:
    """A subset of the ranks with its own negotiation: ProcessSet([0, 2]), registered
    on every rank (in the same order) with hvd.add_process_set or hvd.init(process_sets=)."""

    def __init__(self, ranks):
        ranks = list(ranks)
        for r in ranks:
            if isinstance(r, bool) or not isinstance(r, numbers.Integral):
                raise TypeError("hvd.ProcessSet: ranks must be integers, got %r" % (r,))
        if len(set(ranks)) != len(ranks):
            raise ValueError("hvd.ProcessSet: ranks %r contain duplicates" % (ranks,))
        self.ranks = sorted(int(r) for r in ranks)
        self.process_set_id = None

    def size(self):
        return len(self.ranks)

    def rank(self):
        """This rank's index in the set, -1 if it is not a member."""
        ctx = _ctx_or_raise()
        if self.process_set_id is None:
            return self.ranks.index(rank()) if rank() in self.ranks else -1
        return _C.hvd_process_set_rank(ctx, self.process_set_id)

    def included(self):
        return rank() in self.ranks

    def __repr__(self):
        return "ProcessSet(process_set_id=%s, ranks=%s)" % (self.process_set_id, self.ranks)


global_process_set = ProcessSet([])
global_process_set.process_set_id = 0


def add_process_set(process_set):
    """Register a process set (a ProcessSet or a list of ranks) on every rank; all ranks
    call it with the same ranks, in the same order. Returns the registered ProcessSet."""
    ctx = _ctx_or_raise()
    ps = process_set if isinstance(process_set, ProcessSet) else ProcessSet(process_set)
    if ps.process_set_id is not None:
        raise ValueError("hvd.add_process_set: %r is already registered" % (ps,))
    n = size()
    if not ps.ranks or ps.ranks[0] < 0 or ps.ranks[-1] >= n:
        raise ValueError("hvd.add_process_set: ranks %s must be 1 to %d distinct ranks in "
                         "[0, %d)" % (ps.ranks, n, n))
    arr = (ctypes.c_int * len(ps.ranks))(*ps.ranks)
    pid = ctypes.c_int(-1)
    st = _C.hvd_process_set_create(ctx, arr, len(ps.ranks), ctypes.byref(pid))
    if st != _lib.HVD_OK:
        raise _job_error(st, "hvd.add_process_set(%s)" % ps.ranks)
    ps.process_set_id = pid.value
    with _lock:
        _process_sets.append(ps)
    return ps


def init(comm=None, process_sets=None):
    """Join the job started by hvdrun (a one-rank job without it). A second call while
    initialized does nothing; init after shutdown starts a new context."""
    global _ctx, _atexit_registered
    if comm is not None:
        raise ValueError("hvd.init: comm is not supported (hvd jobs always span every rank "
                         "hvdrun started; use process sets for subsets)")
    with _lock:
        if _ctx is not None:
            return
        ctx = ctypes.c_void_p()
        st = _C.hvd_init(ctypes.byref(ctx))
        if st != _lib.HVD_OK:
            raise HvdError("hvd.init failed: %s (hvd's log on stderr says why)"
                           % _status_text(st), st)
        _ctx = ctx
        _noname.clear()
        global_process_set.ranks = list(range(_C.hvd_size(ctx)))
        if not _atexit_registered:
            atexit.register(shutdown)
            _atexit_registered = True
    if process_sets is not None and process_sets != "dynamic":
        for ps in process_sets:
            add_process_set(ps)


def shutdown():
    """Leave the job. Operations still in flight fail; their handles are released."""
    global _ctx
    with _lock:
        ctx = _ctx
        if ctx is None:
            return
        _ctx = None
        _C.hvd_shutdown(ctx)  # fails what has not run; requests stay valid until freed
        for h in _handles.values():
            _abandon(h)
        _handles.clear()
        _inflight.clear()
        for ps in _process_sets:
            ps.process_set_id = None
        _process_sets.clear()


def is_initialized():
    return _ctx is not None


def rank():
    return _C.hvd_rank(_ctx_or_raise())


def size():
    return _C.hvd_size(_ctx_or_raise())


def local_rank():
    return _C.hvd_local_rank(_ctx_or_raise())


def local_size():
    return _C.hvd_local_size(_ctx_or_raise())


def cross_rank():
    return _C.hvd_cross_rank(_ctx_or_raise())


def cross_size():
    return _C.hvd_cross_size(_ctx_or_raise())


# ---- compression (Horovod's hvd.Compression) -------------------------------------------

class Compressor:
    """What an allreduce does to a tensor before and after it travels: compress(tensor)
    returns (tensor to send, ctx) and decompress(tensor, ctx) the tensor to hand back."""

    @staticmethod
    def compress(tensor):
        raise NotImplementedError

    @staticmethod
    def decompress(tensor, ctx):
        raise NotImplementedError


class NoneCompressor(Compressor):
    """The tensor travels as it is."""

    @staticmethod
    def compress(tensor):
        return tensor, None

    @staticmethod
    def decompress(tensor, ctx):
        return tensor


class FP16Compressor(Compressor):
    """Floating-point tensors travel as float16 (half the bytes of float32, 11
    significant bits, largest finite value 65504) and come back in their own dtype;
    other tensors travel as they are."""

    @staticmethod
    def compress(tensor):
        if isinstance(tensor, np.ndarray):
            if tensor.dtype.kind == "f" and tensor.dtype != np.float16:
                return tensor.astype(np.float16), tensor.dtype
            return tensor, None
        t = _torch()
        if _is_torch(tensor) and tensor.is_floating_point() and tensor.dtype != t.float16:
            return tensor.to(t.float16), tensor.dtype
        return tensor, None

    @staticmethod
    def decompress(tensor, ctx):
        if ctx is None:
            return tensor
        return tensor.astype(ctx) if isinstance(tensor, np.ndarray) else tensor.to(ctx)


class Compression:
    """Horovod's choices: hvd.Compression.none (default) and hvd.Compression.fp16."""
    none = NoneCompressor
    fp16 = FP16Compressor


def _compressed(fn, compression, tensors):
    """(compressed tensors, their contexts), checking compression."""
    if not (isinstance(compression, type) and issubclass(compression, Compressor)) and \
            not isinstance(compression, Compressor):
        raise TypeError("hvd.%s: compression must be hvd.Compression.none, "
                        "hvd.Compression.fp16 or a Compressor, got %r" % (fn, compression))
    pairs = [compression.compress(t) for t in tensors]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _decompressing(fin, compression, ctxs, grouped):
    """A finish function that decompresses what fin returns."""
    def finish(reqs):
        out = fin(reqs)
        if grouped:
            return [compression.decompress(t, c) for t, c in zip(out, ctxs)]
        return compression.decompress(out, ctxs[0])
    return finish


# ---- allreduce -------------------------------------------------------------------------

def _allreduce_args(fn, tensors, inplace, average, name, op, prescale_factor,
                    postscale_factor, process_set, grouped):
    cop = _reduce_op(op, average, fn)
    pre = _check_factor(prescale_factor, "prescale_factor", fn)
    post = _check_factor(postscale_factor, "postscale_factor", fn)
    pid, _, _ = _pset(process_set, fn)
    codes = [_dtype_code(t, fn) for t in tensors]
    if inplace:
        for t in tensors:
            _check_writable(t, fn)
    # Named last: a refused call must not advance the automatic name counter.
    if grouped:
        base = _name(name, "grouped_allreduce")
        names = ["%s.%d" % (base, i) for i in range(len(tensors))]
    else:
        names = [_name(name, "allreduce")]
    args = (_lib.OpArgs * len(tensors))()
    keep, outs, work = [args, tensors], [], []
    for i, (t, code) in enumerate(zip(tensors, codes)):
        src = _contiguous(t)
        if inplace:
            dst = src                  # t itself when contiguous, else a copy written back
        else:
            dst = _empty(src, tuple(src.shape))
        work.append(dst)
        keep += [src, dst]
        args[i] = _lib.op_args(name=names[i].encode(), sendbuf=_ptr(src), recvbuf=_ptr(dst),
                               count=_numel(src), dtype=code, op=cop, prescale=pre,
                               postscale=post, process_set=pid)
    for t, dst in zip(tensors, work):
        outs.append(t if inplace else dst)

    def finish(reqs):
        if inplace:
            for t, dst in zip(tensors, work):
                if dst is not t:
                    _copy_into(t, dst)
        return outs if grouped else outs[0]

    return pid, names, keep, finish, args


def allreduce_async(tensor, average=None, name=None, compression=Compression.none, op=None,
                    prescale_factor=1.0, postscale_factor=1.0,
                    process_set=global_process_set):
    """Start an allreduce into a new array/tensor; synchronize(handle) returns it. With
    compression=hvd.Compression.fp16 a floating-point tensor travels as float16."""
    sent, ctxs = _compressed("allreduce_async", compression, [tensor])
    pid, names, keep, fin, args = _allreduce_args(
        "allreduce_async", sent, False, average, name, op, prescale_factor,
        postscale_factor, process_set, False)
    return _submit("allreduce_async", pid, names, keep,
                   _decompressing(fin, compression, ctxs, False),
                   [(_C.hvd_allreduce_ex, args[0])])


def allreduce_async_(tensor, average=None, name=None, op=None, prescale_factor=1.0,
                     postscale_factor=1.0, process_set=global_process_set):
    """Start an in-place allreduce; synchronize(handle) returns tensor."""
    pid, names, keep, fin, args = _allreduce_args(
        "allreduce_async_", [tensor], True, average, name, op, prescale_factor,
        postscale_factor, process_set, False)
    return _submit("allreduce_async_", pid, names, keep, fin,
                   [(_C.hvd_allreduce_ex, args[0])])


def allreduce(tensor, average=None, name=None, compression=Compression.none, op=None,
              prescale_factor=1.0, postscale_factor=1.0, process_set=global_process_set):
    """Reduce tensor over the ranks of process_set (default op Average); returns a new
    array/tensor of the same type, shape and dtype."""
    return synchronize(allreduce_async(tensor, average, name, compression, op,
                                       prescale_factor, postscale_factor, process_set))


def allreduce_(tensor, average=None, name=None, op=None, prescale_factor=1.0,
               postscale_factor=1.0, process_set=global_process_set):
    """In-place allreduce; returns tensor."""
    return synchronize(allreduce_async_(tensor, average, name, op, prescale_factor,
                                        postscale_factor, process_set))


def _grouped(fn, tensors, inplace, average, name, op, prescale_factor, postscale_factor,
             process_set, compression=Compression.none):
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise ValueError("hvd.%s: expected a non-empty list of arrays/tensors" % fn)
    sent, ctxs = _compressed(fn, compression, list(tensors))
    pid, names, keep, fin, args = _allreduce_args(
        fn, sent, inplace, average, name, op, prescale_factor, postscale_factor,
        process_set, True)
    return _submit(fn, pid, names, keep, _decompressing(fin, compression, ctxs, True),
                   [(_C.hvd_grouped_allreduce, args, len(tensors))])


def grouped_allreduce_async(tensors, average=None, name=None, compression=Compression.none,
                            op=None, prescale_factor=1.0, postscale_factor=1.0,
                            process_set=global_process_set):
    """Allreduce a list of tensors submitted as one unit; synchronize returns a list."""
    return _grouped("grouped_allreduce_async", tensors, False, average, name, op,
                    prescale_factor, postscale_factor, process_set, compression)


def grouped_allreduce_async_(tensors, average=None, name=None, op=None, prescale_factor=1.0,
                             postscale_factor=1.0, process_set=global_process_set):
    return _grouped("grouped_allreduce_async_", tensors, True, average, name, op,
                    prescale_factor, postscale_factor, process_set)


def grouped_allreduce(tensors, average=None, name=None, compression=Compression.none,
                      op=None, prescale_factor=1.0, postscale_factor=1.0,
                      process_set=global_process_set):
    return synchronize(grouped_allreduce_async(tensors, average, name, compression, op,
                                               prescale_factor, postscale_factor,
                                               process_set))


def grouped_allreduce_(tensors, average=None, name=None, op=None, prescale_factor=1.0,
                       postscale_factor=1.0, process_set=global_process_set):
    return synchronize(grouped_allreduce_async_(tensors, average, name, op, prescale_factor,
                                                postscale_factor, process_set))


# ---- allgather and alltoall (shapes travel in a small int64 allgather beside the data) ----

def _shape_header(fn, name, shape, pid):
    hdr = np.array([len(shape)] + list(shape), dtype=np.int64)
    args = _lib.op_args(name=(name + ".__shape__").encode(), sendbuf=hdr.ctypes.data,
                        count=hdr.size, dtype=_lib.INT64, process_set=pid)
    return hdr, args


def _gathered(req):
    """(buffer pointer, element count, per-rank counts) of a finished allgather/alltoall."""
    buf, count = ctypes.c_void_p(), ctypes.c_size_t()
    counts, n = ctypes.POINTER(ctypes.c_size_t)(), ctypes.c_int()
    _C.hvd_req_output(req, ctypes.byref(buf), ctypes.byref(count))
    _C.hvd_req_recv_counts(req, ctypes.byref(counts), ctypes.byref(n))
    return buf.value, count.value, [counts[i] for i in range(n.value)]


def _check_shapes(fn, name, hreq, my_shape, set_ranks):
    """Every rank's shape from the header allgather; raise (identically on every rank)
    when the ranks disagree about anything but the first dimension."""
    buf, count, counts = _gathered(hreq)
    flat = np.ctypeslib.as_array(ctypes.cast(buf, ctypes.POINTER(ctypes.c_int64)),
                                 shape=(count,)).copy() if count else np.zeros(0, np.int64)
    shapes, off = [], 0
    for c in counts:
        shapes.append(tuple(int(v) for v in flat[off + 1:off + c]))
        off += c
    for j, s in enumerate(shapes):
        if len(s) != len(shapes[0]):
            raise HvdError("Mismatched %s tensor shapes for tensor '%s': rank %d sent a tensor "
                           "of rank %d, but rank %d sent a tensor of rank %d"
                           % (fn, name, set_ranks[0], len(shapes[0]), set_ranks[j], len(s)))
        if s[1:] != shapes[0][1:]:
            raise HvdError("Mismatched %s tensor shapes for tensor '%s': rank %d sent a tensor "
                           "of shape %s, but rank %d sent a tensor of shape %s; only the first "
                           "dimension may differ" % (fn, name, set_ranks[0], list(shapes[0]),
                                                    set_ranks[j], list(s)))
    return shapes


def _set_ranks(process_set):
    return process_set.ranks if process_set.ranks else list(range(size()))


def allgather_async(tensor, name=None, process_set=global_process_set):
    """Start an allgather: the ranks' tensors concatenated along the first dimension
    (which may differ between ranks), in rank order."""
    fn = "allgather"
    pid, _, _ = _pset(process_set, fn)
    code = _dtype_code(tensor, fn)
    if len(tensor.shape) == 0:
        raise ValueError("hvd.allgather: the tensor must have at least one dimension")
    name = _name(name, fn)
    src = _contiguous(tensor)
    shape = tuple(src.shape)
    hdr, hargs = _shape_header(fn, name, shape, pid)
    args = _lib.op_args(name=name.encode(), sendbuf=_ptr(src), count=_numel(src), dtype=code,
                        process_set=pid)
    set_ranks = _set_ranks(process_set)

    def finish(reqs):
        shapes = _check_shapes(fn, name, reqs[1], shape, set_ranks)
        buf, count, _ = _gathered(reqs[0])
        rows = sum(s[0] for s in shapes)
        return _from_c(src, (rows,) + shape[1:], buf, count)

    return _submit(fn, pid, [name, name + ".__shape__"], [src, hdr, args, hargs], finish,
                   [(_C.hvd_allgather_ex, args), (_C.hvd_allgather_ex, hargs)])


def allgather(tensor, name=None, process_set=global_process_set):
    return synchronize(allgather_async(tensor, name, process_set))


def alltoall_async(tensor, splits=None, name=None, process_set=global_process_set):
    """Start an alltoall: splits[j] rows (first-dimension slices) go to rank j of the set
    (None: equal parts). synchronize returns the received rows in rank order, and
    with splits given, (output, received_splits) as Horovod does."""
    fn = "alltoall"
    pid, n, _ = _pset(process_set, fn)
    code = _dtype_code(tensor, fn)
    if len(tensor.shape) == 0:
        raise ValueError("hvd.alltoall: the tensor must have at least one dimension")
    src = _contiguous(tensor)
    shape = tuple(src.shape)
    rowsz = _rows(shape)
    want_splits = splits is not None
    if splits is None:
        if shape[0] % n:
            raise ValueError("hvd.alltoall: the first dimension %d is not divisible by the %d "
                             "ranks of the process set; pass splits" % (shape[0], n))
        rsplits = [shape[0] // n] * n
    else:
        if _is_torch(splits) or isinstance(splits, np.ndarray):
            splits = splits.tolist()
        rsplits = list(splits)
        if len(rsplits) != n or any(isinstance(s, bool) or not isinstance(s, numbers.Integral)
                                    or s < 0 for s in rsplits):
            raise ValueError("hvd.alltoall: splits must be %d non-negative integers (one per "
                             "rank of the process set), got %r" % (n, splits))
        if sum(rsplits) != shape[0]:
            raise ValueError("hvd.alltoall: splits add up to %d but the first dimension is %d"
                             % (sum(rsplits), shape[0]))
    name = _name(name, fn)
    csplits = (ctypes.c_size_t * n)(*[int(s) * rowsz for s in rsplits])
    hdr, hargs = _shape_header(fn, name, shape, pid)
    args = _lib.op_args(name=name.encode(), sendbuf=_ptr(src), count=_numel(src), dtype=code,
                        process_set=pid, splits=csplits)
    set_ranks = _set_ranks(process_set)

    def finish(reqs):
        _check_shapes(fn, name, reqs[1], shape, set_ranks)
        buf, count, counts = _gathered(reqs[0])
        recv = [c // rowsz if rowsz else 0 for c in counts]
        out = _from_c(src, (sum(recv),) + shape[1:], buf, count)
        if not want_splits:
            return out
        if isinstance(src, np.ndarray):
            return out, np.array(recv, dtype=np.int32)
        return out, _torch().tensor(recv, dtype=_torch().int32)

    return _submit(fn, pid, [name, name + ".__shape__"], [src, hdr, csplits, args, hargs],
                   finish, [(_C.hvd_alltoall_ex, args), (_C.hvd_allgather_ex, hargs)])


def alltoall(tensor, splits=None, name=None, process_set=global_process_set):
    return synchronize(alltoall_async(tensor, splits, name, process_set))


# ---- broadcast -------------------------------------------------------------------------

def _broadcast(fn, tensor, root_rank, name, process_set, inplace):
    pid, _, _ = _pset(process_set, fn)
    code = _dtype_code(tensor, fn)
    ranks = _set_ranks(process_set)
    if isinstance(root_rank, bool) or not isinstance(root_rank, numbers.Integral) \
            or int(root_rank) not in ranks:
        raise ValueError("hvd.%s: root_rank %r is not a rank of %r" % (fn, root_rank,
                                                                      process_set))
    if inplace:
        _check_writable(tensor, fn)
    name = _name(name, "broadcast")
    src = _contiguous(tensor)
    dst = src if inplace else _empty(src, tuple(src.shape))
    args = _lib.op_args(name=name.encode(), sendbuf=_ptr(src), recvbuf=_ptr(dst),
                        count=_numel(src), dtype=code, root=ranks.index(int(root_rank)),
                        process_set=pid)

    def finish(reqs):
        if inplace:
            if dst is not tensor:
                _copy_into(tensor, dst)
            return tensor
        return dst

    return _submit(fn, pid, [name], [tensor, src, dst, args], finish,
                   [(_C.hvd_broadcast_ex, args)])


def broadcast_async(tensor, root_rank, name=None, process_set=global_process_set):
    """Start a broadcast of root_rank's tensor (a global rank, member of process_set) into
    a new array/tensor."""
    return _broadcast("broadcast_async", tensor, root_rank, name, process_set, False)


def broadcast_async_(tensor, root_rank, name=None, process_set=global_process_set):
    return _broadcast("broadcast_async_", tensor, root_rank, name, process_set, True)


def broadcast(tensor, root_rank, name=None, process_set=global_process_set):
    return synchronize(broadcast_async(tensor, root_rank, name, process_set))


def broadcast_(tensor, root_rank, name=None, process_set=global_process_set):
    return synchronize(broadcast_async_(tensor, root_rank, name, process_set))


# ---- reducescatter ---------------------------------------------------------------------

def reducescatter_async(tensor, name=None, op=Average, process_set=global_process_set,
                        prescale_factor=1.0, postscale_factor=1.0):
    """Start a reduce-scatter: the reduction of every rank's tensor, split along the first
    dimension (the first shape[0] % size ranks get one row more); this rank gets its part."""
    fn = "reducescatter"
    cop = _reduce_op(op, None, fn)
    pre = _check_factor(prescale_factor, "prescale_factor", fn)
    post = _check_factor(postscale_factor, "postscale_factor", fn)
    pid, n, me = _pset(process_set, fn)
    code = _dtype_code(tensor, fn)
    if len(tensor.shape) == 0:
        raise ValueError("hvd.reducescatter: the tensor must have at least one dimension")
    name = _name(name, fn)
    src = _contiguous(tensor)
    shape = tuple(src.shape)
    rowsz = _rows(shape)
    mine = shape[0] // n + (1 if me < shape[0] % n else 0)
    first = me * (shape[0] // n) + min(me, shape[0] % n)
    out = _empty(src, (mine,) + shape[1:])
    if rowsz == 1 or shape[0] % n == 0:
        # hvd's element blocks are exactly these rows.
        args = _lib.op_args(name=name.encode(), sendbuf=_ptr(src), recvbuf=_ptr(out),
                            count=_numel(src), dtype=code, op=cop, prescale=pre,
                            postscale=post, process_set=pid)
        full = None
        cfn = _C.hvd_reducescatter_ex

        def finish(reqs):
            return out
    else:
        # Rows do not fall on hvd's element blocks: reduce everything, keep our rows.
        full = _empty(src, shape)
        args = _lib.op_args(name=name.encode(), sendbuf=_ptr(src), recvbuf=_ptr(full),
                            count=_numel(src), dtype=code, op=cop, prescale=pre,
                            postscale=post, process_set=pid)
        cfn = _C.hvd_allreduce_ex

        def finish(reqs):
            _copy_into(out, full[first:first + mine])
            return out

    return _submit(fn, pid, [name], [src, out, full, args], finish, [(cfn, args)])


def reducescatter(tensor, name=None, op=Average, process_set=global_process_set,
                  prescale_factor=1.0, postscale_factor=1.0):
    return synchronize(reducescatter_async(tensor, name, op, process_set, prescale_factor,
                                           postscale_factor))


# ---- join, barrier, timeline, stats ----------------------------------------------------

def join(device=-1, process_set=global_process_set):
    """This rank has no more data: until every rank joined, it contributes zeros to the
    other ranks' allreduces. Blocks; returns the rank that joined last (same everywhere)."""
    pid, _, _ = _pset(process_set, "join")
    last = ctypes.c_int(-1)
    st = _C.hvd_join(_ctx_or_raise(), pid, ctypes.byref(last))
    if st != _lib.HVD_OK:
        raise _job_error(st, "hvd.join")
    return last.value


def barrier(process_set=global_process_set):
    """Return when every rank of process_set has called barrier."""
    pid, _, _ = _pset(process_set, "barrier")
    st = _C.hvd_barrier(_ctx_or_raise(), pid)
    if st != _lib.HVD_OK:
        raise _job_error(st, "hvd.barrier")


def start_timeline(file_path, mark_cycles=False):
    """Write a Chrome trace of this rank's operations to file_path (replacing a running
    one). mark_cycles comes from HVD_TIMELINE_MARK_CYCLES at init; see docs/python.md."""
    ctx = _ctx_or_raise()
    if not isinstance(file_path, str) or not file_path:
        raise ValueError("hvd.start_timeline: file_path must be a non-empty str")
    st = _C.hvd_timeline_start(ctx, file_path.encode())
    if st == _lib.HVD_ERR_INVALID_PARAM:
        raise ValueError("hvd.start_timeline: cannot write a timeline to %r (hvd's log line "
                         "on stderr says why)" % file_path)
    if st != _lib.HVD_OK:
        raise _job_error(st, "hvd.start_timeline")


def stop_timeline():
    st = _C.hvd_timeline_stop(_ctx_or_raise())
    if st != _lib.HVD_OK:
        raise _job_error(st, "hvd.stop_timeline")


def get_stats():
    """hvd's counters on this rank (hvd_stats_t) as a dict."""
    s = _lib.Stats()
    _C.hvd_get_stats(_ctx_or_raise(), ctypes.byref(s))
    return {k: getattr(s, k) for k, _ in _lib.Stats._fields_}
