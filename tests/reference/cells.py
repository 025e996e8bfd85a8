"""One step of every cell, its hand-written backward, the heads and the losses.

Plain NumPy, float64, one stream, one step at a time: the oracle the kernels are checked
against (kernels/README.md, "One step"). Every forward returns the new state and a per-step
dict of intermediates; every backward takes that dict and the cotangents of the step's
outputs and returns the cotangents of its inputs and of its parameters. Backwards read the
weights from their ``params`` argument, not from the cache, so a step's Jacobian can be
evaluated with other weights than the ones that ran it (SnAp-1's Jordan term needs that).

Equations: NNDL ch. 6 (README, "References") — SRN eq. 6.5-6.7, LSTM eq. 6.49-6.57,
LSTM variants eq. 6.58 (no forget gate), 6.59-6.61 (peephole), 6.62-6.63 (coupled),
GRU eq. 6.64-6.67; IndRNN (Li et al. 2018) eq. 2.

A model's state is a dict ``{"h": [h_0..h_L-1], "c": [c_0..] or None, "y": y_{t-1} or None}``
(``y`` only for Jordan). Its flat order, for RTRL's dS/dθ, is h_0, c_0, h_1, c_1, ..., y.
"""

import numpy as np

from tests.reference.params import LAYER_NAMES, layer_params, zeros_like_params


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


# ----------------------------------------------------------------------------- Elman / Jordan

def elman_step(lp, x, r):
    """SRN, eq. 6.5-6.7: h = tanh(W_ih x + b_ih + W_hh r + b_hh).

    ``r`` is h_{t-1} (Elman) or the model's previous prediction y_{t-1} (Jordan layer 0).
    """
    a = lp["w_ih"] @ x + lp["b_ih"] + lp["w_hh"] @ r + lp["b_hh"]
    h = np.tanh(a)
    return h, {"x": x, "r": r, "h": h}


def elman_backward(lp, cache, dh):
    """Backward of ``elman_step``: eq. 6.34 (δ = f'(z) ⊙ ...) and eq. 6.36-6.39."""
    da = dh * (1.0 - cache["h"] ** 2)
    grads = {"w_ih": np.outer(da, cache["x"]), "w_hh": np.outer(da, cache["r"]),
             "b_ih": da.copy(), "b_hh": da.copy()}
    return lp["w_ih"].T @ da, lp["w_hh"].T @ da, grads


# ----------------------------------------------------------------------------- IndRNN

def indrnn_step(lp, x, r):
    """IndRNN (Li et al. 2018, eq. 2) with tanh: h = tanh(W_ih x + b_ih + u ⊙ h_{t-1} + b_hh),
    ``u = w_hh`` a vector: each unit is fed back only its own previous state."""
    a = lp["w_ih"] @ x + lp["b_ih"] + lp["w_hh"] * r + lp["b_hh"]
    h = np.tanh(a)
    return h, {"x": x, "r": r, "h": h}


def indrnn_backward(lp, cache, dh):
    """Backward of ``indrnn_step``: the recurrent Jacobian is diagonal, diag(u ⊙ (1 - h²))."""
    da = dh * (1.0 - cache["h"] ** 2)
    grads = {"w_ih": np.outer(da, cache["x"]), "w_hh": da * cache["r"],
             "b_ih": da.copy(), "b_hh": da.copy()}
    return lp["w_ih"].T @ da, lp["w_hh"] * da, grads


# ----------------------------------------------------------------------------- LSTM

def lstm_step(lp, x, h, c, variant):
    """LSTM, gates stacked i, f, g, o as PyTorch.

    standard: eq. 6.49-6.54; peephole: eq. 6.59-6.61 (w_ci*c_{t-1}, w_cf*c_{t-1}, w_co*c_t);
    coupled: f = 1 - i, eq. 6.62-6.63; no_forget: f = 1, eq. 6.58.
    """
    H = h.shape[0]
    A = lp["w_ih"] @ x + lp["b_ih"] + lp["w_hh"] @ h + lp["b_hh"]
    ai, af, ag, ao = A[:H].copy(), A[H:2 * H].copy(), A[2 * H:3 * H], A[3 * H:].copy()
    if variant == "peephole":
        ai += lp["w_ch"][0] * c
        af += lp["w_ch"][1] * c
    i = sigmoid(ai)
    g = np.tanh(ag)
    if variant == "coupled":
        f = 1.0 - i
    elif variant == "no_forget":
        f = np.ones(H)
    else:
        f = sigmoid(af)
    c_new = f * c + i * g
    if variant == "peephole":
        ao += lp["w_ch"][2] * c_new
    o = sigmoid(ao)
    tc = np.tanh(c_new)
    h_new = o * tc
    cache = {"x": x, "h_prev": h, "c_prev": c, "i": i, "f": f, "g": g, "o": o,
             "c": c_new, "tc": tc, "h": h_new, "variant": variant}
    return h_new, c_new, cache


def lstm_backward(lp, cache, dh, dc_next):
    """Backward of ``lstm_step``: returns dx, dh_prev, dc_prev and the layer's grads."""
    i, f, g, o, tc = cache["i"], cache["f"], cache["g"], cache["o"], cache["tc"]
    c_prev, c_new, variant = cache["c_prev"], cache["c"], cache["variant"]
    H = i.shape[0]
    dao = dh * tc * o * (1.0 - o)
    dc = dc_next + dh * o * (1.0 - tc ** 2)
    grads = {}
    if variant == "peephole":
        dc = dc + dao * lp["w_ch"][2]
    di = dc * g
    dg = dc * i
    df = dc * c_prev
    dc_prev = dc * f
    if variant == "coupled":
        di = di - df
        daf = np.zeros(H)
    elif variant == "no_forget":
        daf = np.zeros(H)
    else:
        daf = df * f * (1.0 - f)
    dai = di * i * (1.0 - i)
    dag = dg * (1.0 - g ** 2)
    if variant == "peephole":
        dc_prev = dc_prev + dai * lp["w_ch"][0] + daf * lp["w_ch"][1]
        grads["w_ch"] = np.stack([dai * c_prev, daf * c_prev, dao * c_new])
    dA = np.concatenate([dai, daf, dag, dao])
    grads.update({"w_ih": np.outer(dA, cache["x"]), "w_hh": np.outer(dA, cache["h_prev"]),
                  "b_ih": dA.copy(), "b_hh": dA.copy()})
    return lp["w_ih"].T @ dA, lp["w_hh"].T @ dA, dc_prev, grads


# ----------------------------------------------------------------------------- GRU

def gru_step(lp, x, h, variant):
    """GRU, gates stacked r, z, n as PyTorch; h = (1-z)*n + z*h_{t-1} (eq. 6.66).

    pytorch: n = tanh(W_in x + b_in + r*(W_hn h + b_hn));
    cho (eq. 6.64, Cho et al. 2014): n = tanh(W_in x + b_in + W_hn (r*h) + b_hn).
    """
    H = h.shape[0]
    gi = lp["w_ih"] @ x + lp["b_ih"]
    w_hh, b_hh = lp["w_hh"], lp["b_hh"]
    gh_rz = w_hh[:2 * H] @ h + b_hh[:2 * H]
    r = sigmoid(gi[:H] + gh_rz[:H])                     # eq. 6.65
    z = sigmoid(gi[H:2 * H] + gh_rz[H:])                # eq. 6.67
    if variant == "cho":
        gh_n = w_hh[2 * H:] @ (r * h) + b_hh[2 * H:]
        n = np.tanh(gi[2 * H:] + gh_n)
    else:
        gh_n = w_hh[2 * H:] @ h + b_hh[2 * H:]
        n = np.tanh(gi[2 * H:] + r * gh_n)
    h_new = (1.0 - z) * n + z * h
    cache = {"x": x, "h_prev": h, "r": r, "z": z, "n": n, "gh_n": gh_n, "h": h_new,
             "variant": variant}
    return h_new, cache


def gru_backward(lp, cache, dh):
    """Backward of ``gru_step``: returns dx, dh_prev and the layer's grads."""
    r, z, n, gh_n, h = cache["r"], cache["z"], cache["n"], cache["gh_n"], cache["h_prev"]
    H = h.shape[0]
    w_hh = lp["w_hh"]
    dn = dh * (1.0 - z)
    dz = dh * (h - n)
    dh_prev = dh * z
    dan = dn * (1.0 - n ** 2)
    dgh = np.zeros(3 * H)
    dW_hh = np.zeros_like(w_hh)
    if cache["variant"] == "cho":
        dgh[2 * H:] = dan
        drh = w_hh[2 * H:].T @ dan
        dr = drh * h
        dh_prev = dh_prev + drh * r
        dW_hh[2 * H:] = np.outer(dan, r * h)
    else:
        dgh[2 * H:] = dan * r
        dr = dan * gh_n
        dh_prev = dh_prev + w_hh[2 * H:].T @ dgh[2 * H:]
        dW_hh[2 * H:] = np.outer(dgh[2 * H:], h)
    dar = dr * r * (1.0 - r)
    daz = dz * z * (1.0 - z)
    dgh[:H], dgh[H:2 * H] = dar, daz
    dW_hh[:2 * H] = np.outer(dgh[:2 * H], h)
    dh_prev = dh_prev + w_hh[:2 * H].T @ dgh[:2 * H]
    dgi = np.concatenate([dar, daz, dan])
    grads = {"w_ih": np.outer(dgi, cache["x"]), "w_hh": dW_hh, "b_ih": dgi, "b_hh": dgh}
    return lp["w_ih"].T @ dgi, dh_prev, grads


# ----------------------------------------------------------------------------- one layer, any cell

def layer_step(cfg, lp, x, r, c):
    """One layer of any cell: returns (h, c or None, cache). ``r`` is the recurrent input."""
    if cfg.cell in ("elman", "jordan"):
        h, cache = elman_step(lp, x, r)
        return h, None, cache
    if cfg.cell == "indrnn":
        h, cache = indrnn_step(lp, x, r)
        return h, None, cache
    if cfg.cell == "lstm":
        return lstm_step(lp, x, r, c, cfg.lstm_variant)
    h, cache = gru_step(lp, x, r, cfg.gru_variant)
    return h, None, cache


def layer_backward(cfg, lp, cache, dh, dc):
    """Backward of ``layer_step``: returns (dx, dr, dc_prev or None, grads)."""
    if cfg.cell in ("elman", "jordan"):
        dx, dr, g = elman_backward(lp, cache, dh)
        return dx, dr, None, g
    if cfg.cell == "indrnn":
        dx, dr, g = indrnn_backward(lp, cache, dh)
        return dx, dr, None, g
    if cfg.cell == "lstm":
        return lstm_backward(lp, cache, dh, dc)
    dx, dr, g = gru_backward(lp, cache, dh)
    return dx, dr, None, g


# ----------------------------------------------------------------------------- state

def zero_state(cfg):
    return {
        "h": [np.zeros(H) for H in cfg.hidden_sizes],
        "c": [np.zeros(H) for H in cfg.hidden_sizes] if cfg.cell == "lstm" else None,
        "y": np.zeros(cfg.out_size) if cfg.cell == "jordan" else None,
    }


def state_slices(cfg):
    """[(kind, layer, start, stop)] of the flat state vector: h_0, c_0, h_1, c_1, ..., y."""
    out, start = [], 0
    for k, H in enumerate(cfg.hidden_sizes):
        out.append(("h", k, start, start + H))
        start += H
        if cfg.cell == "lstm":
            out.append(("c", k, start, start + H))
            start += H
    if cfg.cell == "jordan":
        out.append(("y", None, start, start + cfg.out_size))
    return out


def state_size(cfg):
    return state_slices(cfg)[-1][3]


def state_to_vec(cfg, state):
    v = np.zeros(state_size(cfg))
    for kind, k, a, b in state_slices(cfg):
        v[a:b] = state["y"] if kind == "y" else state[kind][k]
    return v


def vec_to_state(cfg, v):
    s = zero_state(cfg)
    for kind, k, a, b in state_slices(cfg):
        if kind == "y":
            s["y"] = v[a:b].copy()
        else:
            s[kind][k] = v[a:b].copy()
    return s


def copy_state(state):
    return {"h": [a.copy() for a in state["h"]],
            "c": None if state["c"] is None else [a.copy() for a in state["c"]],
            "y": None if state["y"] is None else state["y"].copy()}


# ----------------------------------------------------------------------------- head and loss

def head_forward(cfg, params, h_last, x):
    """Linear head z = W h + b (+ W_skip x, the linear skip from the model's input row x);
    the prediction is z (regression) or softmax(z) (classes)."""
    z = params["head.weight"] @ h_last + params["head.bias"]
    if cfg.linear_skip:
        z = z + params["skip.weight"] @ x
    return z, (softmax(z) if cfg.classes else z.copy())


def loss_and_grad(cfg, z, target):
    """Per-step loss and dL/dz: mean over outputs of (z - t)^2 (``MSELoss()`` on one step),
    or cross-entropy -log softmax(z)[t] for classes and tokens."""
    if cfg.classes:
        t = int(target)
        m = z.max()
        logp = z - m - np.log(np.exp(z - m).sum())
        dz = np.exp(logp)
        dz[t] -= 1.0
        return -logp[t], dz
    t = np.asarray(target, dtype=np.float64)
    diff = z - t
    return float(np.mean(diff ** 2)), 2.0 * diff / z.shape[0]


def loss_grad_dz(cfg, z, target):
    return loss_and_grad(cfg, z, target)[1]


# ----------------------------------------------------------------------------- the whole model

def model_step(cfg, params, state, inp):
    """One step of the whole model: embedding, stacked layers, head.

    ``inp`` is an input row (dense) or a token id (``cfg.vocab_size > 0``). Jordan layer 0
    is fed y_{t-1}; later layers are Elman layers fed their own h_{t-1}. Returns the new state
    and the step's cache, which holds the logits ``z`` and the prediction ``y``.
    """
    if cfg.vocab_size > 0:
        token = int(inp)
        x = params["embedding.weight"][token].copy()
    else:
        token = None
        x = np.asarray(inp, dtype=np.float64)
    new = {"h": [], "c": [] if cfg.cell == "lstm" else None, "y": None}
    layers = []
    below = x
    for k in range(cfg.num_layers):
        r = state["y"] if (cfg.cell == "jordan" and k == 0) else state["h"][k]
        c = state["c"][k] if cfg.cell == "lstm" else None
        h, c_new, cache = layer_step(cfg, layer_params(params, k), below, r, c)
        new["h"].append(h)
        if cfg.cell == "lstm":
            new["c"].append(c_new)
        layers.append(cache)
        below = h
    z, y = head_forward(cfg, params, below, x)
    if cfg.cell == "jordan":
        new["y"] = y.copy()
    return new, {"token": token, "x": x, "layers": layers, "z": z, "y": y, "h_last": below}


def model_step_backward(cfg, params, cache, dstate=None, dz=None):
    """Backward of ``model_step`` with the weights ``params``.

    ``dstate``: cotangent of the new state (dict like a state, or None for zero); ``dz``: the
    loss's dL/dz at this step (or None). Returns (dstate_prev, grads, dh_total), where
    ``dh_total[k]`` is the total within-step cotangent of layer k's new h (SnAp-1 needs it).
    """
    grads = zeros_like_params(cfg)
    L = cfg.num_layers
    dh = [np.zeros(H) for H in cfg.hidden_sizes]
    dc = [np.zeros(H) for H in cfg.hidden_sizes]
    if dstate is not None:
        dh = [a.astype(np.float64).copy() for a in dstate["h"]]
        if cfg.cell == "lstm":
            dc = [a.astype(np.float64).copy() for a in dstate["c"]]
    dz_total = np.zeros(cfg.out_size) if dz is None else np.asarray(dz, dtype=np.float64).copy()
    if cfg.cell == "jordan" and dstate is not None:
        dy = dstate["y"]
        # y = softmax(z): dz = (diag(y) - y y^T) dy
        dz_total += cache["y"] * (dy - cache["y"] @ dy) if cfg.classes else dy
    grads["head.weight"] += np.outer(dz_total, cache["h_last"])
    grads["head.bias"] += dz_total
    dx_skip = 0.0
    if cfg.linear_skip:
        grads["skip.weight"] += np.outer(dz_total, cache["x"])
        dx_skip = params["skip.weight"].T @ dz_total
    dh[L - 1] = dh[L - 1] + params["head.weight"].T @ dz_total

    prev = zero_state(cfg)
    dh_total = [None] * L
    for k in reversed(range(L)):
        dh_total[k] = dh[k].copy()
        dx, dr, dc_prev, g = layer_backward(cfg, layer_params(params, k), cache["layers"][k],
                                            dh[k], dc[k])
        for short, arr in g.items():
            grads[LAYER_NAMES[short].format(k)] += arr
        if cfg.cell == "jordan" and k == 0:
            prev["y"] = dr
        else:
            prev["h"][k] = dr
        if cfg.cell == "lstm":
            prev["c"][k] = dc_prev
        if k > 0:
            dh[k - 1] = dh[k - 1] + dx
        elif cfg.vocab_size > 0:
            grads["embedding.weight"][cache["token"]] += dx + dx_skip
    return prev, grads, dh_total
