"""What the CUDA case files (cuda_*_cases.py) share: they refuse to run where numba.cuda cannot
run them, and every launch is patched small so that it spans several blocks.

Import ``small_launches`` into a case file to make it autouse there.
"""
import os

import pytest

from rnnstream.kernels.cuda import unavailable_reason

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1" and unavailable_reason() is not None:
    # A collection error, not a skip: these cases were asked for by name.
    raise RuntimeError("no usable CUDA device (%s): run these cases with NUMBA_ENABLE_CUDASIM=1 "
                       "(README, 'Run the tests'), or through tests/kernels/test_cuda_simulator.py"
                       % unavailable_reason())

from rnnstream.kernels.cuda import config as cuda_config  # noqa: E402


@pytest.fixture(autouse=True)
def small_launches(monkeypatch):
    monkeypatch.setattr(cuda_config, "THREADS_PER_BLOCK", 2)
    monkeypatch.setattr(cuda_config, "MAX_BLOCKS", 2)
    monkeypatch.setattr(cuda_config, "REDUCE_THREADS", 2)
    monkeypatch.setattr(cuda_config, "REDUCE_LANES", 2)
