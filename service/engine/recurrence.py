"""The exponentially discounted sums the seasonal members keep, written out.

``y[t] = gain * x[t] + decay * y[t-1]`` along one axis. This is what
``scipy.signal.lfilter([gain], [1, -decay], x, zi=decay * y_before)`` computes, with the same
two products and one sum per element, so the results agree bit for bit for finite inputs
(tests/service/test_recurrence.py). It is written here because importing scipy.signal cost
2.5 s of every server start, and a chunk is short enough that a loop over its steps is cheap.
"""
from __future__ import annotations

import numpy as np


def discounted(x, gain: float, decay: float, y_before, axis: int = 0) -> np.ndarray:
    """y with x's shape (float64): y[t] = gain * x[t] + decay * y[t-1] along ``axis``, where
    y[-1] = ``y_before`` (x's shape without ``axis``)."""
    x = np.moveaxis(np.asarray(x, dtype=np.result_type(x, np.float64)), axis, 0)
    out = np.empty_like(x)
    y = np.broadcast_to(np.asarray(y_before, dtype=out.dtype), x.shape[1:])
    for t in range(x.shape[0]):
        y = gain * x[t] + decay * y
        out[t] = y
    return np.moveaxis(out, 0, axis)
