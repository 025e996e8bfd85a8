"""The PyTorch loops the engine is measured against (bench_engine): the loops a PyTorch user
writes for TBPTT (a cell step by step, or ``nn.LSTM`` over each window) and exact RTRL written
with torch.func. The ``run_*`` functions return steps/s, timed as ours are (``timing.timed``)."""
from __future__ import annotations

import numpy as np

from rnnstream.kernels.registry import CELLS

from .timing import timed


def _torch_modules(spec, torch):
    H = spec.hidden_sizes[0]
    cell = getattr(torch.nn, CELLS[spec.cell].torch_module + "Cell")(spec.input_size, H)
    head = torch.nn.Linear(H, spec.output_size)
    params = list(cell.parameters()) + list(head.parameters())
    return cell, head, params


def run_torch_tbptt(spec, x, y):
    """The usual loop: k steps, sum of losses, backward, optimizer step, detach."""
    import torch

    cell, head, params = _torch_modules(spec, torch)
    opt = torch.optim.Adam(params, lr=1e-3)
    X, Y = torch.as_tensor(x).transpose(0, 1), torch.as_tensor(y).transpose(0, 1)
    T, B, H = X.shape[0], X.shape[1], spec.hidden_sizes[0]
    lstm = spec.cell == "lstm"

    def go():
        h = torch.zeros(B, H)
        c = torch.zeros(B, H)
        loss = 0.0
        for t in range(T):
            if lstm:
                h, c = cell(X[t], (h, c))
            else:
                h = cell(X[t], h)
            loss = loss + ((head(h) - Y[t]) ** 2).mean(dim=1).sum()
            if (t + 1) % spec.tbptt_k1 == 0:
                opt.zero_grad()
                loss.backward()
                opt.step()
                loss = 0.0
                h, c = h.detach(), c.detach()
    return B * T / timed(go)


def torch_window_loop(spec, x, y):
    """The loop a PyTorch user writes for TBPTT(k, k): ``nn.LSTM`` (or ``nn.RNN``/``nn.GRU``)
    over each k-step window at once, the window's summed loss, backward, an Adam step, detach.
    Returns a function that runs it over all of x once."""
    import torch

    H, k = spec.hidden_sizes[0], spec.tbptt_k1
    rnn = getattr(torch.nn, CELLS[spec.cell].torch_module)(spec.input_size, H)
    head = torch.nn.Linear(H, spec.output_size)
    opt = torch.optim.Adam(list(rnn.parameters()) + list(head.parameters()), lr=1e-3)
    X, Y = torch.as_tensor(x).transpose(0, 1), torch.as_tensor(y).transpose(0, 1)  # [T, B, *]
    T, B = X.shape[0], X.shape[1]
    lstm = spec.cell == "lstm"

    def go():
        h = torch.zeros(1, B, H)
        state = (h, torch.zeros(1, B, H)) if lstm else h
        for t0 in range(0, T, k):
            out, state = rnn(X[t0:t0 + k], state)
            loss = ((head(out) - Y[t0:t0 + k]) ** 2).mean(dim=2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            state = tuple(s.detach() for s in state) if lstm else state.detach()
    return go


def run_torch_window(spec, x, y):
    """Steps/s of ``torch_window_loop``."""
    return x.shape[0] * x.shape[1] / timed(torch_window_loop(spec, x, y))


def run_torch_rtrl(spec, x, y):
    """Exact RTRL written in PyTorch: per step the state and parameter Jacobians from
    torch.func.jacrev, M = J_s M + J_θ, gradient dL/ds M, an Adam step."""
    import torch
    from torch.func import functional_call, jacrev

    cell, head, params = _torch_modules(spec, torch)
    names = [n for n, _ in cell.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in cell.parameters()])
    shapes = [p.shape for p in cell.parameters()]
    H = spec.hidden_sizes[0]
    lstm = spec.cell == "lstm"
    S = 2 * H if lstm else H

    def unflat(v):
        out, o = {}, 0
        for n, s in zip(names, shapes):
            k = int(np.prod(s))
            out[n] = v[o:o + k].reshape(s)
            o += k
        return out

    def step(s, theta, xt):
        p = unflat(theta)
        if lstm:
            h, c = functional_call(cell, p, (xt, (s[:, :H], s[:, H:])))
            return torch.cat([h, c], dim=1)
        return functional_call(cell, p, (xt, s))

    jac = jacrev(step, argnums=(0, 1))
    theta = flat.clone().requires_grad_(False)
    head_params = list(head.parameters())
    opt_state = torch.optim.Adam([theta] + head_params, lr=1e-3)
    X, Y = torch.as_tensor(x[0]), torch.as_tensor(y[0])

    def go():
        s = torch.zeros(1, S)
        M = torch.zeros(S, theta.numel())
        for t in range(X.shape[0]):
            xt = X[t:t + 1]
            J_s, J_theta = jac(s, theta, xt)
            s = step(s, theta, xt).detach()
            M = J_s.reshape(S, S) @ M + J_theta.reshape(S, -1)
            h = s[:, :H].clone().requires_grad_(True)
            loss = ((head(h) - Y[t]) ** 2).mean()
            opt_state.zero_grad()
            loss.backward()
            dh = torch.zeros(1, S)
            dh[:, :H] = h.grad
            theta.grad = (dh @ M).reshape(-1)
            opt_state.step()
    return X.shape[0] / timed(go)
