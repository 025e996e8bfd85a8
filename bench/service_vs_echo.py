"""rnnstream vs a bare grpc.aio echo server taking the same messages, in one run.

    python -m bench.service_vs_echo [--seconds 3] [--inline-below-s 0] [--out bench/results/service_vs_echo.md]

Both servers run as subprocesses on loopback; one asyncio client drives them the same way
(each stream sends a chunk, waits for its answer, sends the next). Workloads:
  * one stream, 64-step chunks, LSTM H=32, TBPTT(16, 16), Adam, learning on: steps/s;
  * 256 concurrent streams, 1-step chunks: steps/s, and round-trip p50/p99;
  * one stream, 1-step chunks: round-trip p50/p99.
Targets: service >= 70% of the echo's steps/s at 64-step chunks; p99 <= 1.5x the echo's.
``--inline-below-s`` is handed to the server (its default, 0, keeps every engine call on a worker
thread), to see what the thread hand-off costs.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

import grpc
import numpy as np

from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from rnnstream.protos.rnnstream.v1 import rnnstream_pb2_grpc as pb_grpc

REPO = pathlib.Path(__file__).resolve().parents[1]
INPUT, OUTPUT, HIDDEN = 4, 1, 32


def _spawn(args: list[str], marker: str, log_path: pathlib.Path,
           timeout_s: float = 120) -> tuple[subprocess.Popen, int]:
    """Start ``python ARGS`` with its output in ``log_path``; its port, read after ``marker``."""
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = log_path.read_text()
        if marker in text:
            return proc, int(text.split(marker)[1].split()[0])
        if proc.poll() is not None:
            raise RuntimeError(text)
        time.sleep(0.05)
    raise TimeoutError(log_path.read_text())


def _chunk(rng, steps: int, seq: int, sid: str) -> pb.StreamRequest:
    x = rng.standard_normal((steps, INPUT)).astype(np.float32)
    y = rng.standard_normal((steps, OUTPUT)).astype(np.float32)
    return pb.StreamRequest(model="bench", stream_id=sid, seq=seq, inputs=x.ravel().tolist(),
                            targets=y.ravel().tolist())


async def _drive(stub, streams: int, steps: int, seconds: float, warmup: int) -> dict:
    """Each of ``streams`` calls: ping-pong for ``seconds``; returns steps/s and round trips."""
    rng = np.random.default_rng(0)
    pool = [_chunk(rng, steps, 0, "") for _ in range(64)]
    run_id = f"{time.monotonic_ns()}"
    rtts: list[float] = []
    counted = [0]
    start_evt = asyncio.Event()
    t_end = [0.0]

    async def one(i: int):
        sid = f"{run_id}-{i}"
        call = stub.Stream()
        seq = 0
        for _ in range(warmup):
            seq += 1
            req = pool[seq % len(pool)]
            req.seq, req.stream_id = seq, sid
            await call.write(req)
            await call.read()
        await start_evt.wait()
        while time.perf_counter() < t_end[0]:
            seq += 1
            req = pool[seq % len(pool)]
            req.seq, req.stream_id = seq, sid
            t0 = time.perf_counter()
            await call.write(req)
            resp = await call.read()
            rtts.append(time.perf_counter() - t0)
            assert not resp.HasField("error"), resp.error.message
            counted[0] += 1
        await call.done_writing()
        while await call.read() is not grpc.aio.EOF:
            pass

    tasks = [asyncio.create_task(one(i)) for i in range(streams)]
    await asyncio.sleep(0.5)
    t0 = time.perf_counter()
    t_end[0] = t0 + seconds
    start_evt.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    r = np.asarray(rtts)
    return dict(steps_per_s=counted[0] * steps / elapsed, p50=float(np.percentile(r, 50)),
                p99=float(np.percentile(r, 99)), chunks=counted[0])


async def _bench(address: str, seconds: float, create: bool) -> dict:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.RnnStreamStub(channel)
        if create:
            await stub.CreateModel(pb.CreateModelRequest(spec=pb.ModelSpec(
                name="bench", cell=pb.CELL_LSTM, hidden_sizes=[HIDDEN], input_size=INPUT, output_size=OUTPUT,
                algorithm=pb.ALGORITHM_TBPTT, tbptt_k1=16, tbptt_k2=16, optimizer=pb.Optimizer(kind=pb.OPTIMIZER_KIND_ADAM, lr=1e-3),
                normalize=pb.NORMALIZATION_OFF, linear_skip=False, output_taps=[0])))
        return {
            "one stream, 64-step chunks": await _drive(stub, 1, 64, seconds, warmup=20),
            "256 streams, 1-step chunks": await _drive(stub, 256, 1, seconds, warmup=3),
            "one stream, 1-step chunks": await _drive(stub, 1, 1, seconds, warmup=50),
        }


def _table(service: dict, echo: dict, seconds: float, inline_below_s: float) -> str:
    lines = [f"# rnnstream vs bare grpc.aio echo ({platform.node()}, {os.cpu_count()} CPUs, "
             f"{time.strftime('%Y-%m-%d %H:%M')}, {seconds:g} s per workload, server --inline-below-s "
             f"{inline_below_s:g})", "",
             "LSTM H=32, input 4, output 1, TBPTT(16, 16), Adam, learning on; ping-pong per stream.", "",
             "| workload | service steps/s | echo steps/s | ratio | service p50 / p99 ms | echo p50 / p99 ms | p99 ratio |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in service:
        s, e = service[name], echo[name]
        lines.append(f"| {name} | {s['steps_per_s']:,.0f} | {e['steps_per_s']:,.0f} | "
                     f"{s['steps_per_s'] / e['steps_per_s']:.0%} | {s['p50'] * 1e3:.3f} / {s['p99'] * 1e3:.3f} | "
                     f"{e['p50'] * 1e3:.3f} / {e['p99'] * 1e3:.3f} | {s['p99'] / e['p99']:.2f}x |")
    big = service["one stream, 64-step chunks"]["steps_per_s"] / echo["one stream, 64-step chunks"]["steps_per_s"]
    p99 = service["one stream, 1-step chunks"]["p99"] / echo["one stream, 1-step chunks"]["p99"]
    lines += ["", f"Engine alone (service.engine.Engine.step, same model, in-process): {_engine_ms(64):.3f} ms per "
              f"64-step chunk, {_engine_ms(1):.3f} ms per 1-step chunk. A ping-pong client cannot hide that time, "
              "so at 64-step chunks the kernel, not the service path, sets the ratio.",
              "", f"Targets: 64-step steps/s >= 70% of echo: {big:.0%} ({'met' if big >= 0.7 else 'NOT met'}); "
              f"1-step p99 <= 1.5x echo: {p99:.2f}x ({'met' if p99 <= 1.5 else 'NOT met'})."]
    return "\n".join(lines) + "\n"


def _engine_ms(steps: int, repeats: int = 50) -> float:
    """Median time of one engine call on one stream, for the table's footnote."""
    from rnnstream.service.engine import Engine, Spec

    engine = Engine(Spec(name="e", cell="lstm", hidden_sizes=(HIDDEN,), input_size=INPUT, output_size=OUTPUT,
                         algorithm="tbptt", tbptt_k1=16, tbptt_k2=16, optimizer="adam", lr=1e-3,
                         normalize="off", linear_skip=False, output_taps=()))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, steps, INPUT)).astype(np.float32)
    y = rng.standard_normal((1, steps, OUTPUT)).astype(np.float32)
    times = []
    for i in range(repeats + 5):
        t0 = time.perf_counter()
        engine.step(["s"], inputs=x, targets=y)
        if i >= 5:
            times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--inline-below-s", type=float, default=0.0,
                        help="the server's flag: batches expected to take less run on its event loop (0: never)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "service_vs_echo.md"))
    opts = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        procs = []
        try:
            svc, svc_port = _spawn(["-m", "rnnstream.service", "--port", "0", "--metrics-port", "-1", "--data-dir",
                                    str(tmp / "data"), "--inline-below-s", str(opts.inline_below_s)],
                                   "rnnstream serving on 127.0.0.1:", tmp / "service.log")
            procs.append(svc)
            echo, echo_port = _spawn(["-m", "bench.echo_server", "--port", "0", "--input-size", str(INPUT),
                                      "--output-size", str(OUTPUT)], "echo serving on 127.0.0.1:", tmp / "echo.log")
            procs.append(echo)
            service = asyncio.run(_bench(f"127.0.0.1:{svc_port}", opts.seconds, create=True))
            baseline = asyncio.run(_bench(f"127.0.0.1:{echo_port}", opts.seconds, create=False))
        finally:
            for p in procs:
                p.terminate()
                p.wait(30)
    table = _table(service, baseline, opts.seconds, opts.inline_below_s)
    pathlib.Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(opts.out).write_text(table)
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
