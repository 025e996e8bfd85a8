"""Learning rules of the reference: BPTT, exact RTRL, TBPTT(k1, k2), SnAp-1.

kernels/README.md ("Learning rules") is the definition; NNDL ch. 6 the equations:
BPTT eq. 6.29-6.39, RTRL eq. 6.40-6.44. Every rule is written on the flat parameter vector
and the flat state vector S_t (h_0, c_0, ..., y), float64, one stream.

Each rule object follows one small protocol, used by ``tests.reference.learner``:
  ``observe(params, prev_state, inp, cache)`` — after the forward of a step, with the weights
  that ran it; ``gradient(params, cache, dz, learn, target)`` — once the step's loss gradient dz is
  known; returns the flat gradient to apply now, or None; ``forget()`` — zero the
  sensitivity (after a non-finite gradient).
Late labels (``cfg.max_label_delay`` D > 0, TBPTT and SnAp-1; kernels/README.md, "Late
labels"): ``label(params, back, target)`` — the target of the step ``back`` steps before the
latest one arrives now; returns (the loss of that step's prediction, the gradient to apply now
or None). TBPTT also has ``due(params)`` — before a step is run, the gradient to apply first
because a pending step would leave the ring, or None — and ``flush(params)`` — the pending
losses' gradient now (before a reset), or None. ``reset()`` empties the state's history.
"""

from collections import deque

import numpy as np

from tests.reference.cells import (copy_state, layer_backward, loss_and_grad, model_step,
                                   model_step_backward, state_size, state_slices, state_to_vec,
                                   vec_to_state, zero_state)
from tests.reference.params import (LAYER_NAMES, flatten, layer_params, num_params, offsets,
                                    zeros_like_params)


# ----------------------------------------------------------------------------- BPTT

def run_forward(cfg, params, inps, state=None):
    """Forward over a sequence with fixed weights: returns (caches, final state)."""
    state = zero_state(cfg) if state is None else copy_state(state)
    caches = []
    for inp in inps:
        state, cache = model_step(cfg, params, state, inp)
        caches.append(cache)
    return caches, state


def sequence_loss(cfg, params, inps, targets, state=None):
    """Summed loss of a sequence with frozen weights (for finite differences)."""
    caches, _ = run_forward(cfg, params, inps, state)
    return sum(loss_and_grad(cfg, c["z"], t)[0] for c, t in zip(caches, targets))


def bptt_gradient(cfg, params, inps, targets, state=None):
    """Full BPTT: gradient of the summed loss over the sequence (eq. 6.37-6.39).

    The cotangent of S_t is carried backwards (eq. 6.34); each step adds its direct terms.
    Returns (summed loss, grads dict).
    """
    caches, _ = run_forward(cfg, params, inps, state)
    grads = zeros_like_params(cfg)
    total, dS = 0.0, None
    for cache, target in reversed(list(zip(caches, targets))):
        loss, dz = loss_and_grad(cfg, cache["z"], target)
        total += loss
        dS, g, _ = model_step_backward(cfg, params, cache, dS, dz)
        for name in grads:
            grads[name] += g[name]
    return total, grads


# ----------------------------------------------------------------------------- Jacobians

def step_jacobians(cfg, params, cache):
    """J_t = dS_t/dS_{t-1} [S, S] and I_t = ∂S_t/∂θ [S, P] (immediate, S_{t-1} held).

    Analytic: row i of both is the backward of the step with the unit cotangent e_i on S_t.
    """
    S, P = state_size(cfg), num_params(cfg)
    J, I = np.zeros((S, S)), np.zeros((S, P))
    for i in range(S):
        e = np.zeros(S)
        e[i] = 1.0
        dprev, g, _ = model_step_backward(cfg, params, cache, vec_to_state(cfg, e))
        J[i] = state_to_vec(cfg, dprev)
        I[i] = flatten(cfg, g)
    return J, I


def readout_gradient(cfg, params, cache, dz):
    """dL_t/dS_t (only the last layer's h is read) and the head's (and skip's) direct
    gradient (flat)."""
    dS = np.zeros(state_size(cfg))
    kind, k, a, b = [s for s in state_slices(cfg) if s[0] == "h"][-1]
    dS[a:b] = params["head.weight"].T @ dz
    g = zeros_like_params(cfg)
    g["head.weight"] = np.outer(dz, cache["h_last"])
    g["head.bias"] = np.asarray(dz, dtype=np.float64).copy()
    if cfg.linear_skip:  # z also reads the input row directly: W_skip x_t
        g["skip.weight"] = np.outer(dz, cache["x"])
        if cfg.vocab_size > 0:
            g["embedding.weight"][cache["token"]] += params["skip.weight"].T @ dz
    return dS, flatten(cfg, g)


# ----------------------------------------------------------------------------- RTRL

class RTRL:
    """Exact RTRL (eq. 6.40-6.44): M_t = J_t M_{t-1} + I_t with the weights in force at t;
    grad_t = dL_t/dS_t · M_t + the head's direct term (eq. 6.44)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.M = np.zeros((state_size(cfg), num_params(cfg)))

    def observe(self, params, prev_state, inp, cache):
        J, I = step_jacobians(self.cfg, params, cache)
        self.M = J @ self.M + I                      # eq. 6.43 for every parameter at once

    def gradient(self, params, cache, dz, learn, target=None):
        if not learn:
            return None
        dS, direct = readout_gradient(self.cfg, params, cache, dz)
        return dS @ self.M + direct

    def forget(self):
        self.M[:] = 0.0

    def reset(self):
        self.forget()


# ----------------------------------------------------------------------------- SnAp-1

def snap_units(cfg):
    """For every flat parameter index: (layer, unit) it writes, or (-1, -1) for head/embedding.

    Row ρ of any gate block of W_ih, W_hh, b_ih, b_hh writes unit ρ mod H; column j of W_ch
    writes unit j.
    """
    P = num_params(cfg)
    layer, unit = np.full(P, -1), np.full(P, -1)
    for name, (a, b, shape) in offsets(cfg).items():
        if name.startswith(("embedding.", "head.", "skip.")):
            continue
        k = int(name.rsplit("_l", 1)[1])
        H = cfg.hidden_sizes[k]
        idx = np.arange(b - a).reshape(shape)
        if name.startswith("weight_ch"):
            units = np.broadcast_to(np.arange(H)[None, :], shape)
        else:
            rows = np.arange(shape[0]) % H
            units = np.broadcast_to(rows.reshape((-1,) + (1,) * (len(shape) - 1)), shape)
        layer[a + idx.reshape(-1)] = k
        unit[a + idx.reshape(-1)] = units.reshape(-1)
    return layer, unit


class SnAp1:
    """SnAp-1 (Menick et al. 2020) as kernels/README.md defines it.

    Each recurrent-layer parameter p keeps m_p = its influence on the unit j it writes:
    (h_j) or (h_j, c_j) for LSTM. m_p <- J_jj m_p + I_p, with J_jj the unit's own 1x1 (2x2)
    block of the layer's state Jacobian (inputs from the layer below held fixed) and I_p the
    immediate derivative. Jordan layer 0 reads y_{t-1}, so its J_jj goes through y_{t-1}:
    (dh_j/dy_{t-1}) · (dy_{t-1}/dh_{0,t-1})[:, j], the latter from step t-1's activations and
    the weights in force at step t. grad_p = dL_t/dh_{k,j} · m_p with dL_t/dh back-propagated
    through the layers above within step t only; head and embedding get the within-step
    gradient.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        self.layer, self.unit = snap_units(cfg)
        P = num_params(cfg)
        self.m_h, self.m_c = np.zeros(P), np.zeros(P)
        self.prev_cache = None
        self.history = deque(maxlen=cfg.max_label_delay + 1)  # what a late label needs

    def _jordan_readout_jacobian(self, params):
        """R = dy_{t-1}/dh_{0,t-1} [O, H_0]; zero at a stream's start (y_{-1} = 0 is fixed)."""
        cfg = self.cfg
        R = np.zeros((cfg.out_size, cfg.hidden_sizes[0]))
        if self.prev_cache is None:
            return R
        for o in range(cfg.out_size):
            d = zero_state(cfg)
            d["y"][o] = 1.0
            _, _, dh_total = model_step_backward(cfg, params, self.prev_cache, d)
            R[o] = dh_total[0]
        return R

    def _local_rows(self, params, k, cache, j, target):
        """Backward of layer k alone with the unit cotangent on h_j or c_j: returns the
        immediate derivatives I_p of this unit's parameters and the Jacobian row (dr, dc_prev)."""
        cfg = self.cfg
        H = cfg.hidden_sizes[k]
        dh, dc = np.zeros(H), np.zeros(H)
        (dh if target == "h" else dc)[j] = 1.0
        _, dr, dc_prev, g = layer_backward(cfg, layer_params(params, k), cache["layers"][k], dh, dc)
        full = zeros_like_params(cfg)
        for short, arr in g.items():
            full[LAYER_NAMES[short].format(k)] = arr
        return flatten(cfg, full), dr, dc_prev

    def observe(self, params, prev_state, inp, cache):
        cfg = self.cfg
        lstm = cfg.cell == "lstm"
        R = self._jordan_readout_jacobian(params) if cfg.cell == "jordan" else None
        for k, H in enumerate(cfg.hidden_sizes):
            for j in range(H):
                sel = (self.layer == k) & (self.unit == j)
                mh, mc = self.m_h[sel].copy(), self.m_c[sel].copy()
                I_h, dr, dc_prev = self._local_rows(params, k, cache, j, "h")
                j_hh = dr @ R[:, j] if (R is not None and k == 0) else dr[j]
                j_hc = dc_prev[j] if lstm else 0.0
                self.m_h[sel] = j_hh * mh + j_hc * mc + I_h[sel]
                if lstm:
                    I_c, dr, dc_prev = self._local_rows(params, k, cache, j, "c")
                    self.m_c[sel] = dr[j] * mh + dc_prev[j] * mc + I_c[sel]
        self.prev_cache = cache
        self.history.append({"inp": inp, "x": cache["x"].copy(), "prev": copy_state(prev_state),
                             "z": cache["z"].copy(), "m_h": self.m_h.copy()})

    def label(self, params, back, target):
        """The step's loss against its stored prediction; its gradient from the step's forward
        recomputed with the current weights (from its stored layer-0 input and state) and the
        sensitivity the step had."""
        e = self.history[-1 - back]
        loss, dz = loss_and_grad(self.cfg, e["z"], target)
        _, cache = model_step(self.cfg, stored_embedding(self.cfg, params, e), e["prev"], e["inp"])
        return loss, self._gradient(params, cache, dz, e["m_h"])

    def reset(self):
        self.forget()
        self.prev_cache = None
        self.history.clear()

    def gradient(self, params, cache, dz, learn, target=None):
        if not learn:
            return None
        return self._gradient(params, cache, dz, self.m_h)

    def _gradient(self, params, cache, dz, m_h):
        cfg = self.cfg
        _, g, dh_total = model_step_backward(cfg, params, cache, None, dz)
        grad = flatten(cfg, g)                       # head and embedding: within-step gradient
        rec = self.layer >= 0
        dh_at = np.array([dh_total[k][j] for k, j in zip(self.layer[rec], self.unit[rec])])
        grad[rec] = dh_at * m_h[rec]
        return grad

    def forget(self):
        self.m_h[:] = 0.0
        self.m_c[:] = 0.0


# ----------------------------------------------------------------------------- TBPTT(k1, k2)

class TBPTT:
    """Truncated BPTT(k1, k2) as kernels/README.md defines it.

    A ring buffer holds the last k2 steps (input, previous state, target). When k1 steps with
    a loss have accumulated since the last update, the gradient of the sum of those k1 losses is
    back-propagated through the buffered steps, each step's forward recomputed from its stored
    input and stored previous state with the current weights (``recompute="per_step"``);
    ``recompute="chain"`` instead re-runs the buffered steps in a chain from the oldest stored
    state. For k1 = k2 both are the PyTorch loop (sum k losses, backward, step, detach).

    Token input: ``embedding="current"`` re-embeds each stored token with the current
    embedding (the README's "with the current weights"); ``embedding="stored"`` reuses the
    embedding row as it was when the step ran, as a stored activation (a diagnostic variant).
    """

    def __init__(self, cfg, recompute="per_step", embedding="current"):
        self.cfg = cfg
        self.k2 = cfg.tbptt_k2 or cfg.tbptt_k1
        self.buffer = deque(maxlen=self.k2 + cfg.max_label_delay)
        self.count = 0
        self.recompute = recompute
        self.embedding = embedding

    def observe(self, params, prev_state, inp, cache):
        self.buffer.append({"inp": inp, "x": cache["x"].copy(), "prev": copy_state(prev_state),
                            "z": cache["z"].copy(), "target": None, "in_window": False})

    def _params_for(self, params, e):
        if self.cfg.vocab_size == 0 or self.embedding == "current":
            return params
        p = dict(params)
        p["embedding.weight"] = params["embedding.weight"].copy()
        p["embedding.weight"][int(e["inp"])] = e["x"]
        return p

    def gradient(self, params, cache, dz, learn, target=None):
        if not learn:
            return None
        return self._pend(params, self.buffer[-1], target)

    def _pend(self, params, entry, target):
        entry["target"], entry["in_window"] = target, True
        self.count += 1
        if self.count < self.cfg.tbptt_k1:
            return None
        self.count = 0
        return self._window_gradient(params)

    def label(self, params, back, target):
        entry = self.buffer[-1 - back]
        loss = loss_and_grad(self.cfg, entry["z"], target)[0]
        return loss, self._pend(params, entry, target)

    def due(self, params):
        if (self.cfg.max_label_delay > 0 and len(self.buffer) == self.buffer.maxlen
                and self.buffer[0]["in_window"]):
            self.count = 0
            return self._window_gradient(params)
        return None

    def flush(self, params):
        if self.count == 0:
            return None
        self.count = 0
        return self._window_gradient(params)

    def reset(self):
        self.forget()

    def _window_gradient(self, params):
        """The window ends at the newest pending step and reaches k2 steps back from it, or
        back to the oldest pending step if that is older (labels out of order)."""
        cfg = self.cfg
        entries = list(self.buffer)
        pending = [i for i, e in enumerate(entries) if e["in_window"]]
        if pending:
            end = pending[-1]
            entries = entries[max(min(end - self.k2 + 1, pending[0]), 0):end + 1]
        caches = []
        state = entries[0]["prev"]
        for e in entries:
            start = e["prev"] if self.recompute == "per_step" else state
            state, cache = model_step(cfg, self._params_for(params, e), start, e["inp"])
            caches.append(cache)
        grad = zeros_like_params(cfg)
        dS = None
        for e, cache in reversed(list(zip(entries, caches))):
            dz = loss_and_grad(cfg, cache["z"], e["target"])[1] if e["in_window"] else None
            dS, g, _ = model_step_backward(cfg, params, cache, dS, dz)
            for name in grad:
                grad[name] += g[name]
        for e in entries:
            e["in_window"] = False
        return flatten(cfg, grad)

    def forget(self):
        self.buffer.clear()
        self.count = 0


def stored_embedding(cfg, params, entry):
    """The weights with the step's embedding row as it was when the step ran (the kernels
    keep the layer-0 input a step ran with)."""
    if cfg.vocab_size == 0:
        return params
    p = dict(params)
    p["embedding.weight"] = params["embedding.weight"].copy()
    p["embedding.weight"][int(entry["inp"])] = entry["x"]
    return p


def make_rule(cfg, **kwargs):
    return {"rtrl": RTRL, "snap1": SnAp1, "tbptt": TBPTT}[cfg.algorithm](cfg, **kwargs)


def accumulated_gradient(cfg, params, inps, targets, **kwargs):
    """Run a rule over a sequence with frozen weights, summing every gradient it produces."""
    rule = make_rule(cfg, **kwargs)
    state = zero_state(cfg)
    total = np.zeros(num_params(cfg))
    for inp, target in zip(inps, targets):
        prev = state
        state, cache = model_step(cfg, params, prev, inp)
        rule.observe(params, prev, inp, cache)
        dz = loss_and_grad(cfg, cache["z"], target)[1]
        g = rule.gradient(params, cache, dz, True, target=target)
        if g is not None:
            total += g
    return total


