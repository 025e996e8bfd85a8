"""Delay taps (TDNN / NARX): the kernel's input row of step t is
[x_t, x_{t-l} for l in input_taps, y_{t-m} for m in output_taps], zeros where the stream has
no such step yet. x are the (standardised) inputs, y the (standardised) observed targets,
one-hot for classes; a step without a target has its prediction stand in.

Each stream keeps its past in rings: ``tapx`` [L, I] (L = the longest input tap), ``tapy``
[M, O], and ``tapn`` [2] how many rows each has taken; the row taken r steps ago (r >= 1) sits
at (n - r) mod L. A forecast rolls the taps forward with its own predictions.
"""
import numpy as np
from numba import njit

from .codes import C_CACHE, C_EMB, C_HLAST, C_HTOP, C_IN, C_OUT, C_S, C_VOCAB
from .model import head_logits, predict_row, step_forward


@njit(cache=True)
def _ring_read(ring, n, r, dst):
    """dst = the row taken r steps ago, or zeros."""
    L = ring.shape[0]
    if r > n or r > L:
        dst[:] = 0.0
    else:
        dst[:] = ring[(n - r) % L]


@njit(cache=True)
def build_rows(z, zy, lengths, slots, tapx, tapy, tapn, in_taps, out_taps, rows):
    """rows[b, t] = [z[b, t], taps]; the lags reach into this chunk's z / zy first, then into
    the stream's rings (read only here)."""
    B = z.shape[0]
    I = z.shape[2]
    O = zy.shape[2]
    nl = in_taps.shape[0]
    for b in range(B):
        slot = slots[b]
        for t in range(lengths[b]):
            rows[b, t, :I] = z[b, t]
            for j in range(nl):
                lag = in_taps[j]
                dst = rows[b, t, I + j * I:I + (j + 1) * I]
                if lag <= t:
                    dst[:] = z[b, t - lag]
                else:
                    _ring_read(tapx[slot], tapn[slot, 0], lag - t, dst)
            base = I + nl * I
            for j in range(out_taps.shape[0]):
                lag = out_taps[j]
                dst = rows[b, t, base + j * O:base + (j + 1) * O]
                if lag <= t:
                    dst[:] = zy[b, t - lag]
                else:
                    _ring_read(tapy[slot], tapn[slot, 1], lag - t, dst)


@njit(cache=True)
def push_rows(ring, tapn, which, slots, src, lengths):
    """Append each stream's rows src[b, :lengths[b]] to its ring (which: 0 tapx, 1 tapy)."""
    L = ring.shape[1]
    if L == 0:
        return
    for b in range(src.shape[0]):
        slot = slots[b]
        for t in range(lengths[b]):
            ring[slot, tapn[slot, which] % L] = src[b, t]
            tapn[slot, which] += 1


@njit(cache=True, nogil=True)
def forecast_rows(theta, cfg, lay, s, x_last, rings, in_taps, out_taps, feed, out):
    """out[i] = the prediction i steps past the state s (out[0]: the head on s and on the last
    input row x_last), each fed back as the next input through feed = (a, c): x = a * y + c
    (from the target's standardised units to the input's); the taps roll forward with the fed
    inputs and the predictions. s and the rings are not modified."""
    tapx, tapy, tapn = rings
    a, c = feed
    S = cfg[C_S]
    O = cfg[C_OUT]
    F = cfg[C_IN]
    I = a.shape[0]
    horizon = out.shape[0]
    st = np.empty((1, S), dtype=theta.dtype)
    st[0] = s
    st1 = np.empty((1, S), dtype=theta.dtype)
    cache = np.empty((1, cfg[C_CACHE]), dtype=theta.dtype)
    Z = np.empty((1, O), dtype=theta.dtype)
    x = np.empty((1, F), dtype=theta.dtype)
    x[0] = x_last
    htop = cfg[C_HTOP]
    head_logits(theta, cfg, st[:, htop:htop + cfg[C_HLAST]], x, Z)
    nl = in_taps.shape[0]
    for i in range(horizon):
        predict_row(cfg, Z[0], out[i])
        if i == horizon - 1:
            break
        if cfg[C_VOCAB] > 0:  # tokens (no taps): the most probable one, embedded
            base = cfg[C_EMB] + np.argmax(out[i]) * F
            x[0] = theta[base:base + F]
            step_forward(theta, cfg, lay, x, st, st1, cache, Z)
            st[0] = st1[0]
            continue
        # step i + 1 is fed the input predicted at step j: a * out[j] + c
        for q in range(I):
            x[0, q] = a[q] * out[i, q] + c[q]
        for j in range(nl):
            lag = in_taps[j]
            dst = x[0, I + j * I:I + (j + 1) * I]
            if lag <= i:
                for q in range(I):
                    dst[q] = a[q] * out[i - lag, q] + c[q]
            else:
                _ring_read(tapx, tapn[0], lag - i, dst)
        base = I + nl * I
        for j in range(out_taps.shape[0]):
            lag = out_taps[j]
            dst = x[0, base + j * O:base + (j + 1) * O]
            if lag <= i:
                dst[:] = out[i + 1 - lag]
            else:
                _ring_read(tapy, tapn[1], lag - i, dst)
        step_forward(theta, cfg, lay, x, st, st1, cache, Z)
        st[0] = st1[0]
