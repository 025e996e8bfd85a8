"""The fields of the CPU chunk kernels' argument bundles (``kernels/chunk.py``), by name.

The bundles stay plain tuples and the kernels read them by these constant indices (numba
folds a module global, so ``pool[POOL_CNT]`` is as cheap as ``pool[8]``). Not namedtuples:
numba's dispatcher types a namedtuple argument in Python on every call, which measured
+3.5 us per kernel call, about a fifth of a one-step ``Engine.step``
(``bench.bench_engine.step_overhead``), for no change in compile time. The service builds
each tuple in the order of its ``*_FIELDS``; ``tests/kernels/test_registry.py`` checks that
the constants agree with them. Shapes: ``kernels/chunk.py``'s docstring.
"""

MODEL_FIELDS = ("cfg", "lay", "hyp")
MODEL_CFG, MODEL_LAY, MODEL_HYP = range(3)

# the weights and optimizer moments per row ([1, P] shared, [capacity, P] per stream)
WEIGHTS_FIELDS = ("W", "m", "v", "steps")
WEIGHTS_W, WEIGHTS_M, WEIGHTS_V, WEIGHTS_STEPS = range(4)

# per-stream storage, indexed by slot (h*: the history ring)
POOL_FIELDS = ("state", "sens", "hx", "htok", "hs", "hy", "hcls", "hflag", "cnt", "fst", "hc",
               "hz", "hs1", "hver")
(POOL_STATE, POOL_SENS, POOL_HX, POOL_HTOK, POOL_HS, POOL_HY, POOL_HCLS, POOL_HFLAG, POOL_CNT,
 POOL_FST, POOL_HC, POOL_HZ, POOL_HS1, POOL_HVER) = range(14)

# one call's streams and inputs
BATCH_FIELDS = ("slots", "wrow", "inputs", "tokens", "targets", "tclass", "lengths", "learn")
(BATCH_SLOTS, BATCH_WROW, BATCH_INPUTS, BATCH_TOKENS, BATCH_TARGETS, BATCH_TCLASS,
 BATCH_LENGTHS, BATCH_LEARN) = range(8)

# what the call writes
OUT_FIELDS = ("preds", "losses", "res", "gnorms")
OUT_PREDS, OUT_LOSSES, OUT_RES, OUT_GNORMS = range(4)
