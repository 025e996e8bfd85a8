"""``optim.apply_update``'s Adam loops, specialised for speed, against the loop every other
optimizer runs (the optimizer a run-time value): the same arithmetic, so the same bits, and the
same refusal of a step that would overflow. How close the optimizers come to torch.optim is
checked through whole runs elsewhere (tests/kernels/test_torch_parity.py and the engine tests)."""
import numpy as np
import pytest
from numba import njit

from rnnstream.kernels import codes as C
from rnnstream.kernels import optim

P = 4099  # not a multiple of any vector width: the loops' remainders run too


@njit(fastmath=optim.FAST, error_model="numpy")
def _any_kind_update(kind, hyp, t, g, w, mm, vv):
    """Both passes with ``kind`` unknown to the compiler: the loop before the specialisation."""
    c = optim._coefficients(hyp, t, w[:1])
    if optim._step_overflows(kind, c, t, g, w, mm, vv):
        return 0
    optim._write_step(kind, c, t, g, w, mm, vv)
    return 1


def _adam(weight_decay: float) -> np.ndarray:
    hyp = np.zeros(C.O_NFIELDS)
    hyp[C.O_KIND], hyp[C.O_LR], hyp[C.O_BETA1], hyp[C.O_BETA2] = C.ADAM, 1e-2, 0.9, 0.999
    hyp[C.O_EPS], hyp[C.O_WD] = 1e-8, weight_decay
    return hyp


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_adam_update_is_bit_for_bit_the_any_optimizer_loop(weight_decay):
    rng = np.random.default_rng(0)
    hyp = _adam(weight_decay)
    W = rng.standard_normal((2, P)).astype(np.float32)
    m, v, steps = np.zeros_like(W), np.zeros_like(W), np.zeros(2, np.int64)
    w2, m2, v2 = W[1].copy(), m[1].copy(), v[1].copy()
    other_row = W[0].copy()
    for t in range(1, 41):
        g = (rng.standard_normal(P) * 10.0 ** rng.uniform(-4, 1)).astype(np.float32)
        norm, clipped, applied = optim.apply_update(W, 1, g.copy(), m, v, steps, hyp)
        assert (applied, clipped, steps[1]) == (1, 0, t)
        assert norm == pytest.approx(float(np.linalg.norm(g.astype(np.float64))), rel=1e-12)
        assert _any_kind_update(C.ADAM, hyp, t, g, w2, m2, v2) == 1
        assert np.array_equal(W[1], w2) and np.array_equal(m[1], m2) and np.array_equal(v[1], v2), t
    assert np.array_equal(W[0], other_row) and steps[0] == 0


def test_adam_step_that_would_overflow_is_skipped_whole():
    """A finite gradient whose weighted square overflows float32 (Adam's second moment) leaves
    the row, its moments and its step count as they were."""
    rng = np.random.default_rng(1)
    hyp = _adam(0.0)
    W = rng.standard_normal((1, P)).astype(np.float32)
    m, v, steps = np.zeros_like(W), np.zeros_like(W), np.zeros(1, np.int64)
    optim.apply_update(W, 0, rng.standard_normal(P).astype(np.float32), m, v, steps, hyp)
    before = W.copy(), m.copy(), v.copy()
    g = rng.standard_normal(P).astype(np.float32)
    g[P - 1] = 3e37  # (1 - b2) * g * g overflows; the last element: the loop's remainder
    norm, clipped, applied = optim.apply_update(W, 0, g, m, v, steps, hyp)
    assert applied == 0 and np.isfinite(norm) and steps[0] == 1
    for now, then in zip((W, m, v), before):
        assert np.array_equal(now, then)
