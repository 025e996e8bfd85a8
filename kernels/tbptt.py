"""Truncated back-propagation through time over a window of stored steps (NNDL 6.4.1,
eq. 6.29-6.39, truncated to the window).

The window holds, per step and stream, the layer-0 input, the token, the state before the
step, the target and whether the step's loss counts. Each step's forward is recomputed from
its stored input and previous state with the current weights, then the gradient flows back
from the newest step to the oldest.
"""
import numpy as np
from numba import njit

from .codes import C_CACHE, C_OUT, C_P, C_S
from .model import add_embedding_grad, loss_grad, step_backward, step_forward


@njit(cache=True)
def tbptt_window_grad(theta, cfg, lay, wx, wtok, ws, wy, wcls, wflag, grad):
    """Add to grad the gradient of the counted losses of the window ([n, nb, ...] arrays,
    oldest step first), back-propagated through all n steps."""
    n = wx.shape[0]
    nb = wx.shape[1]
    S = cfg[C_S]
    O = cfg[C_OUT]
    dS = np.zeros((nb, S), dtype=theta.dtype)
    dS0 = np.zeros((nb, S), dtype=theta.dtype)
    dHs = np.empty((nb, S), dtype=theta.dtype)
    S1 = np.empty((nb, S), dtype=theta.dtype)
    cache = np.empty((nb, cfg[C_CACHE]), dtype=theta.dtype)
    Z = np.empty((nb, O), dtype=theta.dtype)
    dZ = np.empty((nb, O), dtype=theta.dtype)
    dx = np.empty((nb, wx.shape[2]), dtype=theta.dtype)
    for tau in range(n - 1, -1, -1):
        step_forward(theta, cfg, lay, wx[tau], ws[tau], S1, cache, Z)
        dZ[:, :] = 0.0
        for b in range(nb):
            if wflag[tau, b] != 0:
                loss_grad(cfg, Z[b], wy[tau, b], wcls[tau, b], dZ[b])
        step_backward(theta, cfg, lay, wx[tau], ws[tau], S1, cache, dZ, dS, grad, dx, dS0,
                      dHs, 1)
        add_embedding_grad(cfg, wtok[tau], dx, grad)
        dS[:, :] = dS0
