"""Runs the CUDA kernel cases (cuda_*_cases.py) on Numba's CUDA simulator, in a subprocess:
NUMBA_ENABLE_CUDASIM changes numba.cuda for the whole process, and the CPU tests here must
stay untouched by it. numba-cuda is part of the test extra, so a missing one fails.

This is how a plain ``python -m pytest`` runs them (one test for all the cases); CI runs the
case files directly instead, in their own invocation, and reports them case by case
(README, "Run the tests"), so it deselects this test with ``-m "not slow"``."""
import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).parent
ROOT = HERE.parent.parent


@pytest.mark.slow
def test_cuda_kernels_on_the_simulator():
    if importlib.util.find_spec("numba_cuda") is None:
        pytest.fail("numba-cuda is not installed: pip install -e '.[test]'")
    files = sorted(str(p.relative_to(ROOT)) for p in HERE.glob("cuda_*_cases.py"))
    assert files, "no CUDA case files found beside " + __file__
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *files], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-20000:] + proc.stderr[-5000:]
    summary = proc.stdout.strip().splitlines()[-1]
    # Every case must have run: a skip or deselection here would hide an untested kernel.
    assert " passed" in summary and "skipped" not in summary, summary


def test_cuda_device_fails_at_model_creation_without_a_gpu():
    """device='cuda' where no GPU is usable: a clear error when the model is created."""
    from rnnstream.kernels.cuda import unavailable_reason
    from rnnstream.service.engine import Engine, Spec
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" or unavailable_reason() is None:
        pytest.skip("a CUDA device (or the simulator) is available here")
    with pytest.raises(RuntimeError, match="device='cuda' cannot be used"):
        Engine(Spec(device="cuda", hidden_sizes=(2,), input_size=1, output_size=1))
