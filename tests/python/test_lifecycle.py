"""init/shutdown/init, the timeline API, and the uninitialized state."""
import json
import os
import tempfile

import numpy as np
import pytest

import hvd
from _hvdtest import check_equal, make, reduce_ref


def test_timeline_start_stop():
    r = hvd.rank()
    d = tempfile.mkdtemp(prefix="hvd-py-tl-")
    path = os.path.join(d, "tl.%d.json" % r)
    hvd.start_timeline(path)
    hvd.allreduce(np.ones(8, np.float32), name="tl.tensor")
    hvd.stop_timeline()
    hvd.stop_timeline()  # nothing running: fine
    with open(path) as f:
        events = json.load(f)
    text = json.dumps(events)
    assert "tl.tensor" in text
    with pytest.raises(ValueError, match="cannot write a timeline"):
        hvd.start_timeline(os.path.join(d, "no", "such", "dir", "tl.json"))


def test_reinit():
    r, n = hvd.rank(), hvd.size()
    ps = hvd.add_process_set(list(range(n)))
    h = hvd.allreduce_async(np.ones(2), name="reinit.pending") if n == 1 else None
    hvd.shutdown()
    assert not hvd.is_initialized()
    hvd.shutdown()  # twice is fine
    with pytest.raises(ValueError, match="not been initialized"):
        hvd.rank()
    with pytest.raises(ValueError, match="not been initialized"):
        hvd.allreduce(np.ones(2))
    if h is not None:
        with pytest.raises(ValueError):
            hvd.synchronize(h)
    hvd.init()
    hvd.init()  # a second init while initialized does nothing
    assert hvd.is_initialized() and hvd.rank() == r and hvd.size() == n
    assert ps.process_set_id is None  # sets do not survive shutdown
    with pytest.raises(ValueError, match="not registered"):
        hvd.allreduce(np.ones(2), process_set=ps)
    xs = [make(j, "int32", (5,), seed=300) for j in range(n)]
    check_equal(hvd.allreduce(xs[r], op=hvd.Sum, name="reinit.after"),
                reduce_ref(xs, hvd.Sum, "int32"))
    # Unnamed operations are named in call order, the same on every rank.
    check_equal(hvd.allreduce(xs[r], op=hvd.Min), reduce_ref(xs, hvd.Min, "int32"))
    check_equal(hvd.allgather(xs[r]), np.concatenate(xs))


def test_init_with_process_sets():
    n = hvd.size()
    hvd.shutdown()
    sets = [hvd.ProcessSet([0]), hvd.ProcessSet(list(range(n)))]
    hvd.init(process_sets=sets)
    assert all(s.process_set_id is not None for s in sets)
    x = np.full(3, hvd.rank() + 1, np.int64)
    check_equal(hvd.allreduce(x, op=hvd.Sum, name="initps", process_set=sets[1]),
                np.full(3, n * (n + 1) // 2, np.int64))
