"""The engine against a PyTorch loop doing the same work, in one process, on the same data
and the same number of threads. Prints a table of steps/s and their ratio, FLOPs per step
and the fraction of this machine's float32 peak (a large matmul timed in the same run).

    python -m bench.bench_engine            # about a minute on 2 cores
    python -m bench.bench_engine --quick    # fewer steps, for a smoke run
    python -m bench.bench_engine --shared-parts  # a SHARED batch: one call, 2 workers, PyTorch

Cases (issue 2): LSTM H=64 in 8 TBPTT(16,16) one stream (against LSTMCell step by step and,
issue 11, against nn.LSTM over each 16-step window at H=64 and H=128: targets 10x and 5x); LSTM H=128 TBPTT(16,16) 1024 streams
with shared weights; exact RTRL on Elman H=32, H=64 and LSTM H=32; SnAp-1 on LSTM H=128
against TBPTT(1,1). Targets: >= 30x the PyTorch loop for one stream, >= 1x PyTorch batched
for 1024 streams, RTRL >= 25% of peak, SnAp-1 <= 2x TBPTT(1,1).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import time

import numpy as np

from rnnstream.kernels.registry import CELLS
from rnnstream.service.engine import Engine, Spec
from rnnstream.service.engine.batch import validated_batch
from rnnstream.service.engine.threads import limit_kernel_blas_threads

from .timing import alternating, measured_peak, timed, two_thread_ceiling
from .torch_peers import run_torch_rtrl, run_torch_tbptt, run_torch_window, torch_window_loop

RESULTS = pathlib.Path(__file__).resolve().parent / "results"



# the kernels against PyTorch: normalisation, skip and taps (on by default) are off on both sides
OPTIONS_OFF = dict(normalize="off", linear_skip=False, output_taps=())


# ---------------------------------------------------------------------------- FLOP counts
def forward_flops(spec):
    G = CELLS[spec.cell].n_gates
    flops, nin = 0, spec.input_size
    for H in spec.hidden_sizes:
        flops += 2 * G * H * (nin + H)
        nin = H
    return flops + 2 * spec.out_size * spec.hidden_sizes[-1]


def rtrl_flops(spec, P):
    """The products with the sensitivity: W_hh M (and W_ih M above layer 0), the gradient."""
    G = CELLS[spec.cell].n_gates
    flops, nin = 0, spec.input_size
    for k, H in enumerate(spec.hidden_sizes):
        flops += 2 * G * H * (H + (nin if k else 0)) * P
        nin = H
    return flops + 2 * spec.hidden_sizes[-1] * P + 3 * forward_flops(spec)


# ---------------------------------------------------------------------------- our engine
def run_engine(spec, x, y, chunk):
    B, T = x.shape[0], x.shape[1]
    eng = Engine(spec)
    ids = [f"s{b}" for b in range(B)]
    eng.step(ids, inputs=x[:, :chunk], targets=y[:, :chunk])  # compile and warm up
    eng = Engine(spec)

    def go():
        for t0 in range(0, T, chunk):
            eng.step(ids, inputs=x[:, t0:t0 + chunk], targets=y[:, t0:t0 + chunk])
    return B * T / timed(go)


def per_stream_parts(B=256, T=16, H=32, blocks=6, chunks=4):
    """Steps/s of a PER_STREAM LSTM(H), TBPTT(16,16), B streams in T-step chunks, with its batch
    run as one kernel call and split across every core (``service/engine/shards.py``); blocks
    of each alternate, the best of each counts. Returns (one call, split, parts)."""
    import time

    from rnnstream.service.engine import shards

    spec = Spec(cell="lstm", hidden_sizes=(H,), input_size=4, output_size=1, algorithm="tbptt",
                tbptt_k1=16, optimizer="adam", sharing="per_stream", **OPTIONS_OFF)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, 4)).astype(np.float32)
    y = rng.standard_normal((B, T, 1)).astype(np.float32)
    ids = [f"s{b}" for b in range(B)]
    best = {}
    for _ in range(blocks):
        for threads in (1, 0):
            shards.set_threads(threads)
            eng = Engine(spec)
            eng.step(ids, inputs=x, targets=y)  # allocation and first touches
            t0 = time.perf_counter()
            for _ in range(chunks):
                eng.step(ids, inputs=x, targets=y)
            rate = B * T * chunks / (time.perf_counter() - t0)
            best[threads] = max(best.get(threads, 0.0), rate)
    parts = len(shards.parts(B))
    shards.set_threads(0)
    return best[1], best[0], parts


def shared_parts(B=1024, H=128, chunks=4, blocks=5):
    """Steps/s of a SHARED LSTM(H), TBPTT(16,16), B streams in 16-step chunks, with its batch run
    as one kernel call and split over 2 workers (``service/engine/shared_parts.py``), and of
    PyTorch's nn.LSTM over each 16-step window of the batch on 2 threads. Returns (one call,
    split, PyTorch, the split's CPU seconds per step over one call's: on a machine whose other
    load leaves no second core free, the wall clock cannot show a speed-up, but this shows
    what the split costs in work)."""
    import torch

    from rnnstream.service.engine import shards

    spec = Spec(cell="lstm", hidden_sizes=(H,), input_size=8, output_size=1, algorithm="tbptt",
                tbptt_k1=16, optimizer="adam", **OPTIONS_OFF)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, 16 * chunks, 8)).astype(np.float32)
    y = rng.standard_normal((B, 16 * chunks, 1)).astype(np.float32)
    ids = [f"s{b}" for b in range(B)]

    cpu = {}
    torch.set_num_threads(2)
    torch_loop = torch_window_loop(spec, x, y)

    def run(threads):
        if threads == "torch":  # in the same rounds as ours: the same load
            t0 = time.perf_counter()
            torch_loop()
            return B * 16 * chunks / (time.perf_counter() - t0)
        shards.set_threads(threads)
        eng = Engine(spec)
        eng.step(ids, inputs=x[:, :16], targets=y[:, :16])  # allocation and first touches
        t0, c0 = time.perf_counter(), time.process_time()
        for c in range(chunks):
            eng.step(ids, inputs=x[:, 16 * c:16 * c + 16], targets=y[:, 16 * c:16 * c + 16])
        cpu[threads] = min(cpu.get(threads, float("inf")), time.process_time() - c0)
        return B * 16 * chunks / (time.perf_counter() - t0)

    best = alternating(blocks, (1, 2, "torch"), run)
    shards.set_threads(0)
    return best[1], best[2], best["torch"], cpu[2] / cpu[1]


def shared_parts_sweep(sizes=(32, 64, 128, 256), H=32, chunks=8, blocks=3):
    """Where splitting a SHARED batch in 2 starts to pay: steps/s split / one call, LSTM(H),
    TBPTT(16,16) (the parts meet once per chunk) and TBPTT(1,1) (at every step), B streams; and
    the split's CPU time over one call's (what the split adds in work)."""
    from rnnstream.service.engine import shards

    rows = []
    for k in (16, 1):
        spec = Spec(cell="lstm", hidden_sizes=(H,), input_size=8, output_size=1,
                    algorithm="tbptt", tbptt_k1=k, optimizer="adam", **OPTIONS_OFF)
        for B in sizes:
            rng = np.random.default_rng(0)
            x = rng.standard_normal((B, 16, 8)).astype(np.float32)
            y = rng.standard_normal((B, 16, 1)).astype(np.float32)
            ids = [f"s{b}" for b in range(B)]

            cpu = {}

            def run(parts):
                eng = Engine(spec)
                with shards.split_in_this_thread(parts):
                    eng.step(ids, inputs=x, targets=y)
                    t0, c0 = time.perf_counter(), time.process_time()
                    for _ in range(chunks):
                        eng.step(ids, inputs=x, targets=y)
                cpu[parts] = min(cpu.get(parts, float("inf")), time.process_time() - c0)
                return B * 16 * chunks / (time.perf_counter() - t0)

            best = alternating(blocks, (1, 2), run)
            rows.append((k, B, best[2] / best[1], cpu[2] / cpu[1]))
    return rows


def step_overhead(blocks=30, calls=1000):
    """Microseconds of one ``Engine.step`` at T=1 (one stream, LSTM H=32, TBPTT(16,16), Adam)
    and of the chunk kernel call it makes, given the same arguments: (step, kernel). Blocks of
    each alternate and the best block of each counts (CPU time of this thread), so both are
    timed under the same load on a shared machine."""
    from rnnstream.kernels import codes as kc
    from rnnstream.kernels.chunk import run_chunk

    spec = Spec(cell="lstm", hidden_sizes=(32,), input_size=4, output_size=1, algorithm="tbptt",
                tbptt_k1=16, optimizer="adam", **OPTIONS_OFF)
    eng = Engine(spec)
    x, y = np.ones((1, 1, 4), np.float32), np.ones((1, 1, 1), np.float32)
    for _ in range(100):
        eng.step(["s"], inputs=x, targets=y)
    batch = validated_batch(eng, ["s"], x, None, y, None, True, None)
    slots = np.array([eng.pool.slot("s")], np.int64)
    kbatch = (slots, np.zeros(1, np.int64), batch["inputs"], batch["tokens"], batch["targets"],
              batch["tclass"], batch["lengths"], batch["learn"])
    # the counters add up over the calls: room for every update's gradient norm
    out = (np.full((1, 1, 1), np.nan, np.float32), np.full((1, 1), np.nan, np.float32),
           np.zeros(kc.R_NFIELDS, np.int64), np.zeros(blocks * calls + 1))
    weights, pool = eng._weights(), eng.pool.bundle()

    def step():
        eng.step(["s"], inputs=x, targets=y)

    def kernel():
        run_chunk(eng._model, weights, pool, kbatch, out)

    best = {step: float("inf"), kernel: float("inf")}
    for _ in range(blocks):
        for fn in best:
            t0 = time.thread_time()
            for _ in range(calls):
                fn()
            best[fn] = min(best[fn], (time.thread_time() - t0) / calls)
    return best[step] * 1e6, best[kernel] * 1e6


# ---------------------------------------------------------------------------- the table
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    # Default: every core, since "% of peak" is of the whole machine's measured peak.
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads for both the kernels' BLAS and torch (default: all cores)")
    parser.add_argument("--quick", action="store_true", help="fewer steps")
    parser.add_argument("--window", action="store_true",
                        help="only one stream of LSTM H=64 and H=128 against nn.LSTM per window")
    parser.add_argument("--overhead", action="store_true",
                        help="only the Python around the kernel: Engine.step at T=1 against the "
                             "kernel call it makes (target: <= 10 us added)")
    parser.add_argument("--parts", action="store_true",
                        help="only a PER_STREAM model's batch as one kernel call against split "
                             "across every core (target: 1 -> 2 workers >= 1.8x)")
    parser.add_argument("--shared-parts", action="store_true",
                        help="only a SHARED model's batch (1024 streams, LSTM H=128, TBPTT(16,16)) "
                             "as one kernel call against split over 2 workers, and PyTorch "
                             "batched on 2 threads (targets: >= 1.8x and >= 1.5x)")
    opts = parser.parse_args(argv)
    if opts.shared_parts:
        limit_kernel_blas_threads(1)
        print(f"this run's ceiling: 2 threads ran a compiled loop {two_thread_ceiling():.2f}x "
              f"as fast as 1 (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)",
              flush=True)
        for k, B, ratio, work in shared_parts_sweep():
            print(f"SHARED LSTM(32) TBPTT({k},{k}), {B} streams x 16 steps: split in 2 / one call "
                  f"{ratio:.2f}x steps/s, {work:.2f}x CPU time", flush=True)
        one, split, torch_rate, work = shared_parts()
        print(f"SHARED LSTM(128) TBPTT(16,16), 1024 streams x 16-step chunks: one call {one:,.0f} "
              f"steps/s; split over 2 workers {split:,.0f} steps/s (ratio {split / one:.2f}x, "
              f"target >= 1.8x); PyTorch nn.LSTM per window, batch 1024, 2 threads "
              f"{torch_rate:,.0f} steps/s (split / PyTorch {split / torch_rate:.2f}x, "
              f"target >= 1.5x); CPU time split / one call {work:.2f}x; ceiling now "
              f"{two_thread_ceiling():.2f}x")
        return 0
    if opts.parts:
        limit_kernel_blas_threads(1)
        one, split, parts = per_stream_parts()
        print(f"PER_STREAM LSTM(32) TBPTT(16,16), 256 streams x 16 steps: one call {one:,.0f} steps/s; "
              f"split in {parts} parts {split:,.0f} steps/s; ratio {split / one:.2f}x")
        return 0
    if opts.overhead:
        limit_kernel_blas_threads(1)
        step_us, kernel_us = step_overhead()
        print(f"Engine.step, T=1, LSTM H=32: {step_us:.1f} us; its kernel call: {kernel_us:.1f} us; "
              f"added: {step_us - kernel_us:.1f} us (target <= 10 us)")
        return 0
    import torch

    torch.set_num_threads(opts.threads)
    limit_kernel_blas_threads(opts.threads)
    scale = 4 if opts.quick else 1
    rng = np.random.default_rng(0)

    def data(B, T, I, O=1):
        return (rng.standard_normal((B, T, I)).astype(np.float32),
                rng.standard_normal((B, T, O)).astype(np.float32))

    peak_1 = measured_peak(1)
    peak_all = measured_peak(os.cpu_count())
    rows = []

    def row(name, ours, theirs, flops, note=""):
        gflops = ours * flops / 1e9
        rows.append((name, ours, theirs, ours / theirs if theirs else float("nan"), flops,
                     gflops / peak_all, note))
        print(f"{name}: {ours:,.0f} vs {theirs:,.0f} steps/s", flush=True)

    lstm64 = Spec(cell="lstm", hidden_sizes=(64,), input_size=8, output_size=1,
                  algorithm="tbptt", tbptt_k1=16, optimizer="adam", **OPTIONS_OFF)
    x, y = data(1, 4096 // scale, 8)
    if not opts.window:
        row("LSTM H=64 TBPTT(16,16), 1 stream", run_engine(lstm64, x, y, 256),
            run_torch_tbptt(lstm64, x, y), 3 * forward_flops(lstm64), "target >= 30x")

    # issue 11: against nn.LSTM over each 16-step window (the loop a PyTorch user writes)
    for H, target in ((64, 10), (128, 5)):
        spec = Spec(cell="lstm", hidden_sizes=(H,), input_size=8, output_size=1,
                    algorithm="tbptt", tbptt_k1=16, optimizer="adam", **OPTIONS_OFF)
        x, y = data(1, 4096 // scale, 8)
        row(f"LSTM H={H} TBPTT(16,16), 1 stream, vs nn.LSTM per window", run_engine(spec, x, y, 256),
            run_torch_window(spec, x, y), 3 * forward_flops(spec), f"target >= {target}x")
    if opts.window:
        print("\n".join(f"{r[0]}: {r[3]:.2f}x ({r[6]})" for r in rows))
        return 0

    lstm128 = Spec(cell="lstm", hidden_sizes=(128,), input_size=8, output_size=1,
                   algorithm="tbptt", tbptt_k1=16, optimizer="adam", **OPTIONS_OFF)
    x, y = data(1024, 128 // scale, 8)
    row("LSTM H=128 TBPTT(16,16), 1024 streams shared", run_engine(lstm128, x, y, 16),
        run_torch_tbptt(lstm128, x, y), 3 * forward_flops(lstm128), "target >= 1x")

    for cell, H in (("elman", 32), ("elman", 64), ("lstm", 32)):
        spec = Spec(cell=cell, hidden_sizes=(H,), input_size=8, output_size=1,
                    algorithm="rtrl", optimizer="adam", **OPTIONS_OFF)
        P = Engine(spec).num_parameters
        T = max(8, {32: 512, 64: 64}[H] // (4 if cell == "lstm" else 1) // scale)
        x, y = data(1, T, 8)
        row(f"RTRL {cell} H={H} (P={P})", run_engine(spec, x, y, T),
            run_torch_rtrl(spec, x[:, :min(T, 32)], y[:, :min(T, 32)]), rtrl_flops(spec, P),
            "target >= 25% of peak")

    snap = Spec(cell="lstm", hidden_sizes=(128,), input_size=8, output_size=1,
                algorithm="snap1", optimizer="adam", **OPTIONS_OFF)
    tb11 = Spec(cell="lstm", hidden_sizes=(128,), input_size=8, output_size=1,
                algorithm="tbptt", tbptt_k1=1, optimizer="adam", **OPTIONS_OFF)
    x, y = data(1, 512 // scale, 8)
    ours_snap = run_engine(snap, x, y, 256 // scale)
    ours_tb11 = run_engine(tb11, x, y, 256 // scale)
    row("SnAp-1 LSTM H=128 vs our TBPTT(1,1)", ours_snap, ours_tb11,
        3 * forward_flops(snap), "target: time <= 2x TBPTT(1,1), i.e. ratio >= 0.5")
    row("our TBPTT(1,1) LSTM H=128 vs PyTorch TBPTT(1,1)", ours_tb11,
        run_torch_tbptt(tb11, x, y), 3 * forward_flops(tb11))

    lines = [f"threads: {opts.threads}; float32 peak: {peak_1:.0f} GFLOP/s on 1 core, "
             f"{peak_all:.0f} GFLOP/s on {os.cpu_count()} (2048^3 matmul, this run)", "",
             "| case | rnnstream steps/s | peer steps/s | ratio | FLOPs/step | % of peak | note |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, ours, theirs, ratio, flops, frac, note in rows:
        lines.append(f"| {name} | {ours:,.0f} | {theirs:,.0f} | {ratio:.2f}x | {flops:,.0f} | "
                     f"{100 * frac:.1f}% | {note} |")
    table = "\n".join(lines)
    print("\n" + table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "engine.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
