"""Every kernel signature the test suite runs, compiled (cold numba cache) or loaded (warm).

``python -m tests.kernel_signatures float32|float64`` compiles one half in a process of its own:
``tests/conftest.py`` runs the two halves side by side on a cold cache (numba compiles under a
process-wide lock, so one process uses one core), then loads both in the test process.
"""
from __future__ import annotations

import sys


def float32() -> None:
    """The service's kernels: one tiny model per path (cell and rule are read from arrays). The
    shared split's run_stages is run_chunk's own loop, so it stays here: in the float64
    process it would compile that loop a second time."""
    from rnnstream.service.engine import warm
    warm.warm_up()


def float64() -> None:
    """tests/kernels also runs the kernels in float64 (the gradient checks)."""
    import numpy as np

    from rnnstream.service.engine import Engine, Spec
    x = np.zeros((1, 2, 1))
    for extra in (dict(normalize="off", linear_skip=False, output_taps=()), dict(input_taps=(1,), output_taps=(1,))):
        for algorithm in ("tbptt", "rtrl"):
            engine = Engine(Spec(cell="elman", hidden_sizes=(1,), input_size=1, output_size=1,
                                 algorithm=algorithm, tbptt_k1=1, tbptt_k2=1, **extra), dtype=np.float64)
            engine.step(["warm-up"], inputs=x, targets=x)
            engine.step(["warm-up"], inputs=x, learn=False)
            engine.forecast("warm-up", 1)


HALVES = {"float32": float32, "float64": float64}

if __name__ == "__main__":
    HALVES[sys.argv[1]]()
