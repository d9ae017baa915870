"""ctypes declarations of include/hvd.h and the search for libhvd.

Private module: hvd/__init__.py is the API. Every prototype is declared here, once,
so that a wrong argument type fails in ctypes instead of corrupting memory.

libhvd is looked for in this order:
  1. the path in the HVD_LIBRARY environment variable;
  2. the library installed with this package (``_libpath.py``, written by
     ``cmake --install``, holds its path relative to this directory);
  3. ``libhvd.so.0`` through the dynamic loader (LD_LIBRARY_PATH, ld.so.cache).
"""
import ctypes
import os

# ---- enums (must match include/hvd.h) ------------------------------------------------
HVD_OK = 0
HVD_IN_PROGRESS = 1
HVD_ERR_INVALID_PARAM = -1
HVD_ERR_SHUTDOWN = -8
HVD_ERR_ABORTED = -5

FLOAT16, BFLOAT16, FLOAT32, FLOAT64, INT8, UINT8, INT32, INT64 = range(8)
SUM, AVERAGE, MIN, MAX, PRODUCT = range(5)

c_ctx_p = ctypes.c_void_p
c_req_p = ctypes.c_void_p



class OpArgs(ctypes.Structure):
    """hvd_op_args_t; build it with op_args()."""
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("sendbuf", ctypes.c_void_p),
        ("recvbuf", ctypes.c_void_p),
        ("count", ctypes.c_size_t),
        ("dtype", ctypes.c_int),
        ("op", ctypes.c_int),
        ("prescale", ctypes.c_double),
        ("postscale", ctypes.c_double),
        ("root", ctypes.c_int),
        ("process_set", ctypes.c_int),
        ("splits", ctypes.POINTER(ctypes.c_size_t)),
        ("recv_capacity", ctypes.c_size_t),
        ("callback", ctypes.c_void_p),
        ("callback_arg", ctypes.c_void_p),
    ]


def op_args(name=None, sendbuf=None, recvbuf=None, count=0, dtype=FLOAT32, op=SUM,
            prescale=1.0, postscale=1.0, root=0, process_set=0, splits=None,
            recv_capacity=0):
    """An hvd_op_args_t with HVD_OP_ARGS_INIT's defaults (no callback: see docs)."""
    return OpArgs(name, sendbuf, recvbuf, count, dtype, op, prescale, postscale, root,
                  process_set, splits, recv_capacity, None, None)


class Stats(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "tensors_submitted", "tensors_completed", "collectives", "fused_tensors",
        "cache_hits", "negotiations")]


def _candidates():
    env = os.environ.get("HVD_LIBRARY")
    if env:
        # An explicit choice: no silent fallback to another copy of the library.
        return [env], True
    out = []
    try:
        from . import _libpath  # written at install time
        out.append(os.path.normpath(os.path.join(os.path.dirname(__file__), _libpath.RELATIVE)))
    except ImportError:
        pass
    out.append("libhvd.so.0")
    return out, False


def _declare(lib):
    I, P, S = ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t
    PI = ctypes.POINTER(ctypes.c_int)
    protos = {
        "hvd_status_string": (ctypes.c_char_p, [I]),
        "hvd_dtype_size": (S, [I]),
        "hvd_dtype_name": (ctypes.c_char_p, [I]),
        "hvd_op_name": (ctypes.c_char_p, [I]),
        "hvd_init": (I, [ctypes.POINTER(c_ctx_p)]),
        "hvd_shutdown": (I, [c_ctx_p]),
        "hvd_rank": (I, [c_ctx_p]),
        "hvd_size": (I, [c_ctx_p]),
        "hvd_local_rank": (I, [c_ctx_p]),
        "hvd_local_size": (I, [c_ctx_p]),
        "hvd_cross_rank": (I, [c_ctx_p]),
        "hvd_cross_size": (I, [c_ctx_p]),
        "hvd_ctx_error": (ctypes.c_char_p, [c_ctx_p]),
        "hvd_test": (I, [c_req_p, PI]),
        "hvd_wait": (I, [c_req_p]),
        "hvd_req_error": (ctypes.c_char_p, [c_req_p]),
        "hvd_req_free": (None, [c_req_p]),
        "hvd_allreduce_ex": (I, [c_ctx_p, ctypes.POINTER(OpArgs), ctypes.POINTER(c_req_p)]),
        "hvd_grouped_allreduce": (I, [c_ctx_p, ctypes.POINTER(OpArgs), I,
                                      ctypes.POINTER(c_req_p)]),
        "hvd_allgather_ex": (I, [c_ctx_p, ctypes.POINTER(OpArgs), ctypes.POINTER(c_req_p)]),
        "hvd_broadcast_ex": (I, [c_ctx_p, ctypes.POINTER(OpArgs), ctypes.POINTER(c_req_p)]),
        "hvd_reducescatter_ex": (I, [c_ctx_p, ctypes.POINTER(OpArgs),
                                     ctypes.POINTER(c_req_p)]),
        "hvd_alltoall_ex": (I, [c_ctx_p, ctypes.POINTER(OpArgs), ctypes.POINTER(c_req_p)]),
        "hvd_req_output": (I, [c_req_p, ctypes.POINTER(P), ctypes.POINTER(S)]),
        "hvd_req_recv_counts": (I, [c_req_p, ctypes.POINTER(ctypes.POINTER(S)), PI]),
        "hvd_barrier": (I, [c_ctx_p, I]),
        "hvd_join": (I, [c_ctx_p, I, PI]),
        "hvd_process_set_create": (I, [c_ctx_p, PI, I, PI]),
        "hvd_process_set_rank": (I, [c_ctx_p, I]),
        "hvd_process_set_size": (I, [c_ctx_p, I]),
        "hvd_get_stats": (I, [c_ctx_p, ctypes.POINTER(Stats)]),
        "hvd_timeline_start": (I, [c_ctx_p, ctypes.c_char_p]),
        "hvd_timeline_stop": (I, [c_ctx_p]),
    }
    for name, (res, args) in protos.items():
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args


def load():
    """Load libhvd (ctypes.CDLL: every call releases the GIL) and declare its API."""
    names, explicit = _candidates()
    errors = []
    for n in names:
        try:
            lib = ctypes.CDLL(n)
        except OSError as e:
            errors.append("%s: %s" % (n, e))
            continue
        _declare(lib)
        lib.hvd_path = n
        return lib
    hint = ("HVD_LIBRARY is set but cannot be loaded" if explicit else
            "set HVD_LIBRARY to the path of libhvd.so, or put its directory on "
            "LD_LIBRARY_PATH")
    raise ImportError("hvd: cannot load libhvd (%s): %s" % (hint, "; ".join(errors)))
