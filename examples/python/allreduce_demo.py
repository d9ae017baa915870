"""A first hvd program in Python: run it on 2 ranks with

    hvdrun -np 2 /usr/bin/python3 examples/python/allreduce_demo.py

(from a build tree: PYTHONPATH=bindings/python HVD_LIBRARY=build/libhvd.so.0).
"""
import numpy as np

import hvd

hvd.init()
rank, size = hvd.rank(), hvd.size()

# Every rank contributes rank+1; the sum is 1+2+...+size everywhere.
grad = np.full(4, rank + 1, dtype=np.float32)
total = hvd.allreduce(grad, op=hvd.Sum, name="grad")
print("rank %d of %d: sum %s, average %s" % (rank, size, total,
                                             hvd.allreduce(grad, name="grad.avg")))

# Asynchronous and in place: hvd works on grad's own memory while Python goes on.
handle = hvd.allreduce_async_(grad, op=hvd.Max, name="grad.max")
hvd.synchronize(handle)
assert (grad == size).all()

# Ranks with different amounts of data: allgather concatenates along the first axis.
rows = hvd.allgather(np.full((rank + 1, 2), rank, dtype=np.int64), name="rows")
if rank == 0:
    print("allgather of (rank+1) x 2 blocks:\n%s" % rows)

# Errors come back as hvd.HvdError carrying hvd's message, and the job goes on.
try:
    hvd.allreduce(np.zeros(3 + rank), name="uneven")
except hvd.HvdError as e:
    if rank == 0:
        print("expected error: %s" % e)

hvd.shutdown()
