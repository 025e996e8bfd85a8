"""The seasonal members' discounted sums equal scipy.signal.lfilter's, bit for bit."""
import numpy as np
import pytest
from scipy.signal import lfilter

from rnnstream.service.engine.recurrence import discounted


@pytest.mark.parametrize("shape, axis", [((7,), 0), ((5, 9), 1), ((9, 2, 3), 0), ((4, 11, 6), 1), ((1, 3), 1)])
@pytest.mark.parametrize("gain, decay", [(1.0, 0.995), (0.3, 1.0 - 0.3), (0.05, 1.0 - 0.05)])
def test_equals_lfilter_bit_for_bit(shape, axis, gain, decay):
    rng = np.random.default_rng(sum(shape) + axis)
    x = rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 4, shape)
    y_before = rng.standard_normal(np.delete(shape, axis))
    ours = discounted(x, gain, decay, y_before, axis=axis)
    # the members' former call: a = [1, gain - 1] when gain is a rate, [1, -decay] otherwise
    theirs, _ = lfilter([gain], [1.0, -decay], x, axis=axis, zi=np.expand_dims(decay * y_before, axis))
    assert ours.dtype == np.float64 and ours.shape == x.shape
    assert np.array_equal(ours, theirs)
    assert ours.tobytes() == theirs.tobytes()


def test_float32_input_runs_in_float64_and_leaves_the_input_alone():
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    kept = x.copy()
    ours = discounted(x, 1.0, 0.995, np.zeros(4), axis=0)
    theirs, _ = lfilter([1.0], [1.0, -0.995], x, axis=0, zi=np.zeros((1, 4)))
    assert ours.dtype == np.float64 and np.array_equal(ours, theirs)
    assert np.array_equal(x, kept)


def test_an_empty_run_is_empty():
    assert discounted(np.zeros((0, 3)), 1.0, 0.5, np.ones(3)).shape == (0, 3)


def test_the_server_does_not_import_scipy_signal():
    """scipy.signal took 2.5 s of every start; the service no longer needs it."""
    import subprocess
    import sys
    code = "import sys, rnnstream.service.server; print('scipy.signal' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
