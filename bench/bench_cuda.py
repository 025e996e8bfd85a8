"""Stream-steps per second of the CUDA engine, next to the CPU engine and a PyTorch CUDA
batched loop doing the same work, in one run, on a real GPU.

Work: LSTM, hidden 128, input 16, one regression output, TBPTT(16, 16), Adam; chunks of 16
steps for N streams (1k, 10k, 100k); shared weights (one model, the N streams' gradients
summed into one update per 16 steps) and per-stream weights (one model per stream).

PyTorch (the same work): shared, ``nn.LSTM`` + ``nn.Linear`` over a [16, N, 16] batch, the
16 steps' summed MSE, backward, ``Adam.step``, detach; per stream, a batched LSTM cell with
per-stream weight tensors [N, 4H, *] (``torch.bmm``) under the same loop.

    python -m bench.bench_cuda                # the full table, written to bench/results/cuda.md
    python -m bench.bench_cuda --streams 1000 --chunks 2    # a quick look

Refuses to run without a usable NVIDIA GPU (and under the CUDA simulator).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

H, I, O, K = 128, 16, 1, 16


def _require_gpu():
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        sys.exit("bench_cuda.py measures a real GPU; unset NUMBA_ENABLE_CUDASIM")
    from rnnstream.kernels.cuda import unavailable_reason
    reason = unavailable_reason()
    if reason is not None:
        sys.exit(f"bench_cuda.py needs a usable NVIDIA GPU: {reason}")
    from numba import cuda
    name = cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)


def _spec(device, sharing):
    from rnnstream.service.engine import Spec
    return Spec(cell="lstm", hidden_sizes=(H,), input_size=I, output_size=O,
                algorithm="tbptt", tbptt_k1=K, tbptt_k2=K, optimizer="adam",
                sharing=sharing, device=device, seed=0, normalize="off", linear_skip=False,
                output_taps=())


def _fits(sharing, n, free_bytes):
    """Device bytes our engine needs for n streams (the pool grows to a power of two)."""
    from rnnstream.kernels.cuda.scratch import scratch_offsets
    from rnnstream.service.engine.engine import memory_per_stream
    from rnnstream.service.engine.layout import build_layout
    spec = _spec("cpu", sharing)
    lay = build_layout(spec)
    _, rows = scratch_offsets(lay.cfg, lay.lay)
    cap = 1 << max(2, (n - 1).bit_length())
    need = cap * (memory_per_stream(spec) + 4 * rows)
    return need < 0.9 * free_bytes, need


def ours(device, sharing, n, chunks, rng):
    """Stream-steps/s of our engine on ``device`` (the first chunk, which allocates the
    streams and compiles, is not timed)."""
    from rnnstream.service.engine import Engine
    eng = Engine(_spec(device, sharing))
    ids = [f"s{i}" for i in range(n)]
    x = rng.standard_normal((n, K, I)).astype(np.float32)
    y = rng.standard_normal((n, K, O)).astype(np.float32)
    eng.step(ids, inputs=x, targets=y)
    t0 = time.perf_counter()
    for _ in range(chunks):
        eng.step(ids, inputs=x, targets=y)
    return n * K * chunks / (time.perf_counter() - t0)


def torch_loop(sharing, n, chunks, rng):
    import torch
    dev = torch.device("cuda")
    x = torch.tensor(rng.standard_normal((K, n, I)), dtype=torch.float32, device=dev)
    y = torch.tensor(rng.standard_normal((K, n, O)), dtype=torch.float32, device=dev)
    h = torch.zeros(n, H, device=dev)
    c = torch.zeros(n, H, device=dev)
    if sharing == "shared":
        lstm = torch.nn.LSTM(I, H).to(dev)
        head = torch.nn.Linear(H, O).to(dev)
        params = list(lstm.parameters()) + list(head.parameters())

        def chunk(h, c):
            out, (h, c) = lstm(x, (h[None], c[None]))
            return ((head(out) - y) ** 2).mean(-1).sum(), h[0], c[0]
    else:
        b = 1.0 / H ** 0.5
        w_ih = torch.empty(n, 4 * H, I, device=dev).uniform_(-b, b).requires_grad_()
        w_hh = torch.empty(n, 4 * H, H, device=dev).uniform_(-b, b).requires_grad_()
        bias = torch.empty(n, 4 * H, device=dev).uniform_(-b, b).requires_grad_()
        w_o = torch.empty(n, O, H, device=dev).uniform_(-b, b).requires_grad_()
        b_o = torch.zeros(n, O, device=dev).requires_grad_()
        params = [w_ih, w_hh, bias, w_o, b_o]

        def chunk(h, c):
            loss = 0.0
            for t in range(K):
                gates = (torch.bmm(w_ih, x[t, :, :, None])[..., 0]
                         + torch.bmm(w_hh, h[:, :, None])[..., 0] + bias)
                i, f, g, o = gates.chunk(4, 1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                pred = torch.bmm(w_o, h[:, :, None])[..., 0] + b_o
                loss = loss + ((pred - y[t]) ** 2).mean(-1).sum()
            return loss, h, c
    opt = torch.optim.Adam(params, lr=1e-3)

    def run(h, c):
        opt.zero_grad(set_to_none=True)
        loss, h, c = chunk(h, c)
        loss.backward()
        opt.step()
        return h.detach(), c.detach()

    h, c = run(h, c)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(chunks):
        h, c = run(h, c)
    torch.cuda.synchronize()
    return n * K * chunks / (time.perf_counter() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, nargs="+", default=[1000, 10_000, 100_000])
    ap.add_argument("--sharing", nargs="+", default=["shared", "per_stream"])
    ap.add_argument("--chunks", type=int, default=3, help="timed chunks of 16 steps")
    ap.add_argument("--cpu-max-streams", type=int, default=10_000,
                    help="measure the CPU engine at most at this many streams (marked *)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "cuda.md"))
    args = ap.parse_args(argv)
    name = _require_gpu()
    from numba import cuda
    free, _ = cuda.current_context().get_memory_info()
    rng = np.random.default_rng(0)
    ours("cuda", "shared", 4, 1, rng)  # compile once, outside every measurement
    ours("cuda", "per_stream", 4, 1, rng)
    rows = []
    for sharing in args.sharing:
        for n in args.streams:
            ok, need = _fits(sharing, n, free)
            if not ok:
                rows.append((sharing, n, None, None, None, f"needs {need / 2**30:.0f} GiB"))
                continue
            gpu = ours("cuda", sharing, n, args.chunks, rng)
            ncpu = min(n, args.cpu_max_streams)
            cpu = ours("cpu", sharing, ncpu, 1, rng)
            try:
                pt = torch_loop(sharing, n, args.chunks, rng)
            except Exception as exc:  # e.g. out of memory for per-stream weights
                pt, note = None, f"torch: {type(exc).__name__}"
            else:
                note = "" if ncpu == n else f"CPU at {ncpu} streams*"
            rows.append((sharing, n, gpu, cpu, pt, note))
    lines = [f"Device: {name}. LSTM H={H}, input {I}, output {O}, TBPTT({K},{K}), Adam; "
             "stream-steps/s.", "",
             "| weights | streams | rnnstream CUDA | rnnstream CPU | PyTorch CUDA loop | "
             "CUDA/CPU | CUDA/PyTorch | note |", "|---|---:|---:|---:|---:|---:|---:|---|"]

    def f(v):
        return "-" if v is None else f"{v:,.0f}"

    def r(a, b):
        return "-" if a is None or b is None else f"{a / b:.2f}x"

    for sharing, n, gpu, cpu, pt, note in rows:
        lines.append(f"| {sharing} | {n:,} | {f(gpu)} | {f(cpu)} | {f(pt)} | {r(gpu, cpu)} | "
                     f"{r(gpu, pt)} | {note} |")
    text = "\n".join(lines)
    print(text)
    pathlib.Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
