"""Exact RTRL of an IndRNN at the cost of TBPTT(1), in one run (issue 13, item 3).

    python -m bench.bench_indrnn            # a few minutes on 2 cores
    python -m bench.bench_indrnn --quick    # fewer steps, for a smoke run

An IndRNN's recurrence is diagonal (h = tanh(W_ih x + b_ih + u * h_{t-1} + b_hh)), so with one
layer on dense input each unit's sensitivity involves only its own row of parameters and the
engine runs exact RTRL with SnAp-1's O(P) step (``layout.rtrl_is_unit_local``). One stream,
Adam, normalisation/skip/taps off; per hidden size, steps/s of:

- ours: RTRL (unit-local), TBPTT(1,1), SnAp-1; RTRL with the full S x P sensitivity (the path
  a stacked or token IndRNN takes, forced here by switching the unit-local test off); exact
  RTRL of an Elman layer of the same width (a full recurrence: what exactness costs without
  the structure);
- PyTorch, the loops a competent user would write: TBPTT(1) (step, loss, backward, Adam,
  detach) and exact RTRL of the IndRNN by hand with its diagonal structure (per-unit
  sensitivities of W_ih's row, u, b as tensors, updated elementwise each step, then Adam).

The ratios printed: our RTRL over our TBPTT(1,1) (the claim: about 1), over our full-sensitivity
RTRL, and over each PyTorch loop.
"""
from __future__ import annotations

import argparse
import pathlib
from unittest import mock

import numpy as np

from rnnstream.service.engine import Spec, layout
from rnnstream.service.engine.threads import limit_kernel_blas_threads

from .bench_engine import OPTIONS_OFF, run_engine
from .timing import timed

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
INPUTS = 8


def spec(cell, H, algorithm, k1=1):
    return Spec(cell=cell, hidden_sizes=(H,), input_size=INPUTS, output_size=1,
                algorithm=algorithm, tbptt_k1=k1, optimizer="adam", **OPTIONS_OFF)


def full_sensitivity_rtrl(H, x, y):
    """Our RTRL of the same IndRNN on the S x P path (diagonal products, dense sensitivity)."""
    with mock.patch.object(layout, "rtrl_is_unit_local", lambda s: False):
        return run_engine(spec("indrnn", H, "rtrl"), x, y, x.shape[1])


def _torch_indrnn(H, torch):
    W = torch.nn.Linear(INPUTS, H)
    u = torch.nn.Parameter(torch.rand(H))
    b_hh = torch.nn.Parameter(torch.zeros(H))
    head = torch.nn.Linear(H, 1)
    return W, u, b_hh, head


def torch_tbptt1(H, x, y):
    """Step, loss, backward, Adam step, detach: PyTorch's TBPTT(1) of the IndRNN."""
    import torch

    W, u, b_hh, head = _torch_indrnn(H, torch)
    opt = torch.optim.Adam([*W.parameters(), u, b_hh, *head.parameters()], lr=1e-3)
    X, Y = torch.as_tensor(x[0]), torch.as_tensor(y[0])

    def go():
        h = torch.zeros(H)
        for t in range(X.shape[0]):
            h = torch.tanh(W(X[t]) + u * h + b_hh)
            loss = ((head(h) - Y[t]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            h = h.detach()
    return X.shape[0] / timed(go)


def torch_rtrl(H, x, y):
    """Exact RTRL of the IndRNN in PyTorch, by hand with its structure: unit j's sensitivity
    to its own W_ih row, u_j and b_j is m <- d_j (u_j m + immediate), d_j = 1 - h_j^2."""
    import torch

    W, u, b_hh, head = _torch_indrnn(H, torch)
    params = [*W.parameters(), u, b_hh, *head.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3)
    X, Y = torch.as_tensor(x[0]), torch.as_tensor(y[0])

    def go():
        h = torch.zeros(H)
        mW = torch.zeros(H, INPUTS)
        mu = torch.zeros(H)
        mb = torch.zeros(H)
        with torch.no_grad():
            for t in range(X.shape[0]):
                hp = h
                h = torch.tanh(W(X[t]) + u * hp + b_hh)
                d = 1.0 - h * h
                mW = d[:, None] * (u[:, None] * mW + X[t][None, :])
                mu = d * (u * mu + hp)
                mb = d * (u * mb + 1.0)
                z = head(h)
                dz = 2.0 * (z - Y[t])  # d mean((z - y)^2)/dz, one output
                dh = head.weight[0] * dz[0]
                W.weight.grad = dh[:, None] * mW
                W.bias.grad = dh * mb
                u.grad = dh * mu
                b_hh.grad = dh * mb
                head.weight.grad = dz[:, None] * h[None, :]
                head.bias.grad = dz.clone()
                opt.step()
    return X.shape[0] / timed(go)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps")
    opts = parser.parse_args(argv)
    limit_kernel_blas_threads(1)
    scale = 4 if opts.quick else 1
    rng = np.random.default_rng(0)
    lines = ["One stream, Adam, one thread. Steps/s; each ratio is our unit-local RTRL over the "
             "row's method, in this run.", "",
             "| H | method | steps/s | our RTRL / this |", "| ---: | --- | ---: | ---: |"]
    for H in (64, 256):
        T = 4096 // scale
        x = rng.standard_normal((1, T, INPUTS)).astype(np.float32)
        y = rng.standard_normal((1, T, 1)).astype(np.float32)
        short = max(64, T // (16 if H == 64 else 64))  # the dense paths are H times slower
        ours = run_engine(spec("indrnn", H, "rtrl"), x, y, T)
        rows = [
            ("ours: IndRNN RTRL, unit-local (exact)", ours),
            ("ours: IndRNN TBPTT(1,1)", run_engine(spec("indrnn", H, "tbptt"), x, y, T)),
            ("ours: IndRNN SnAp-1", run_engine(spec("indrnn", H, "snap1"), x, y, T)),
            ("ours: IndRNN RTRL, full S x P sensitivity (exact)",
             full_sensitivity_rtrl(H, x[:, :short], y[:, :short])),
            ("ours: Elman RTRL, same H (exact)",
             run_engine(spec("elman", H, "rtrl"), x[:, :short], y[:, :short], short)),
            ("PyTorch: IndRNN TBPTT(1) loop", torch_tbptt1(H, x[:, :T // 4], y[:, :T // 4])),
            ("PyTorch: IndRNN exact RTRL by hand", torch_rtrl(H, x[:, :T // 4], y[:, :T // 4])),
        ]
        for name, rate in rows:
            lines.append(f"| {H} | {name} | {rate:,.0f} | {ours / rate:.2f}x |")
            print(f"H={H} {name}: {rate:,.0f} steps/s ({ours / rate:.2f}x)", flush=True)
    table = "\n".join(lines)
    print("\n" + table)
    if not opts.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "indrnn.md").write_text("Command: `python -m bench.bench_indrnn`\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
