"""``warm_up``: every compiled kernel signature the service calls, loaded from numba's cache or
compiled, before the first real chunk needs it (``service/coldstart.py`` decides when)."""
from __future__ import annotations

import time

import numpy as np

from . import kernel_tier, shards
from .engine import Engine
from .ensemble import make_engine
from .spec import Spec


def warm_up(paths=None) -> float:
    """Load the CPU kernels from numba's cache (or compile them) now, so that the first real
    chunk does not wait for it (a few hundred ms with a warm cache). One tiny model covers every
    cell and rule: the kernels read those from arrays, so their signatures are shared. ``paths``:
    some of ``PATHS`` (default all; the test suite compiles them in two processes). Returns the
    seconds it took."""
    with kernel_tier.compiled_in_this_thread():
        t0 = time.perf_counter()
        for path in PATHS if paths is None else paths:
            path()
        return time.perf_counter() - t0


_X = np.zeros((1, 1, 1), dtype=np.float32)


def plain_and_features():
    """The plain path, and the feature path (normalisation, skip, taps, their forecast) of the
    default."""
    for extra in (dict(normalize="off", linear_skip=False, output_taps=()),
                  dict(input_taps=(1,), output_taps=(1,))):
        engine = Engine(Spec(cell="elman", hidden_sizes=(1,), input_size=1, output_size=1,
                             algorithm="tbptt", tbptt_k1=1, tbptt_k2=1, **extra))
        engine.step(["warm-up"], inputs=_X, targets=_X)
        engine.step(["warm-up"], inputs=_X, learn=False)  # no targets: predictions stand in
        engine.forecast("warm-up", 1)


def shared_split():
    """A SHARED model's batch split across threads (shared_parts), every path of its kernel."""
    engine = Engine(Spec(cell="elman", hidden_sizes=(1,), input_size=1, output_size=1,
                         tbptt_k1=1, tbptt_k2=1, normalize="off", linear_skip=False,
                         output_taps=()))
    with shards.split_in_this_thread(2):
        engine.step(["warm-up", "warm-up-2"], inputs=np.zeros((2, 1, 1), np.float32),
                    targets=np.zeros((2, 1, 1), np.float32))


def late_labels():
    """Late labels and segment resets."""
    engine = Engine(Spec(cell="elman", hidden_sizes=(1,), input_size=1, output_size=1,
                         tbptt_k1=1, tbptt_k2=1, max_label_delay=1))
    engine.step(["warm-up"], inputs=_X)
    engine.step(["warm-up"], labels=[([0], _X[0, :1])], reset_after=True)


def byte_context():
    """The byte context member's kernel (the default byte model's second member)."""
    engine = make_engine(Spec(vocab_size=256, num_classes=256, hidden_sizes=(1,), tbptt_k1=1,
                              tbptt_k2=1, target_mode="next_input", context_table_bits=10,
                              members=({}, {"baseline": "context"})))
    engine.step(["warm-up"], tokens=np.zeros((1, 2), np.int64))


PATHS = (plain_and_features, shared_split, late_labels, byte_context)
