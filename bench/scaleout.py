"""Scale-out: replicas behind nginx on one PostgreSQL store, measured in one run.

    python -m bench.scaleout [--replicas 1 2 3] [--streams 24] [--seconds 8] [--steps 64] [--hidden 64]
                             [--sharing per_stream|shared] [--window 1]
                             [--failover-streams 60] [--quality-chunks 40] [--out bench/results/scaleout.md]

Everything runs for real on loopback (tests/scaleout/cluster.py): PostgreSQL, N replicas
(``python -m rnnstream.service --store postgresql://... --workers 1``) and nginx rendered from
deploy/nginx/nginx.conf.

1. Throughput: for N in --replicas, a model (LSTM H=--hidden, input 4, TBPTT(16, 16), Adam,
   PER_STREAM or, with --sharing shared, SHARED with rounds every --share-interval-s); --streams SDK sessions through the proxy, each sending a chunk, waiting for its answer
   and sending the next. Steps/s over the timed part, and per-replica efficiency
   throughput(N) / (N x throughput(1)), also against min(N, cores), since N replicas cannot
   use more cores than the machine has. The load generator shares those cores.
2. Failover: 3 replicas, --failover-streams sessions; kill -9 the replica holding the most
   streams; for each of its streams, the time from the kill to its first answer on another
   replica (p50, p99, max).
3. Shared weights: one SHARED model, the same streams through 1 replica and through 3
   replicas that combine their copies every --share-interval-s; the mean loss of the second
   half of each stream, 3 replicas against 1.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import platform
import shutil
import signal
import tempfile
import time

import grpc
import numpy as np

from rnnstream.clients import AsyncClient
from rnnstream.clients.connect import ROUTE_HEADER, Backoff, route
from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from rnnstream.protos.rnnstream.v1 import rnnstream_pb2_grpc as pb_grpc
from .proc_cpu import own_cpu_seconds, tree_cpu_seconds
from tests.scaleout.cluster import Nginx, Postgres, start_replicas, stop

INPUT = 4
HIDDEN = [32]  # --hidden sets it
SHARING = {"per_stream": pb.SHARING_PER_STREAM, "shared": pb.SHARING_SHARED}


def _spec(name: str, sharing) -> pb.ModelSpec:
    return pb.ModelSpec(name=name, cell=pb.CELL_LSTM, hidden_sizes=HIDDEN, input_size=INPUT, output_size=1,
                        algorithm=pb.ALGORITHM_TBPTT, tbptt_k1=16, tbptt_k2=16, sharing=sharing, seed=7,
                        optimizer=pb.Optimizer(kind=pb.OPTIMIZER_KIND_ADAM, lr=0.01))


def _chunk(rng, t0: int, steps: int):
    t = (t0 + np.arange(steps + 1)) * 0.1
    x = np.stack([np.sin(t * (k + 1)) for k in range(INPUT)], axis=1).astype(np.float32)
    y = (0.5 * x[:, :1] + 0.3 * x[:, 1:2] ** 2 + 0.05 * rng.standard_normal((steps + 1, 1))).astype(np.float32)
    return x[:-1], y[1:]


def _create(address: str, spec: pb.ModelSpec) -> None:
    with grpc.insecure_channel(address) as channel:
        pb_grpc.RnnStreamStub(channel).CreateModel(pb.CreateModelRequest(spec=spec), timeout=60,
                                                   metadata=((ROUTE_HEADER, route(spec.name)),))


async def _load(address: str, model: str, streams: int, steps: int, seconds: float, warmup: float,
                cpu_roles: dict, window: int = 1) -> tuple[float, dict]:
    """Steps per second answered through ``address`` while ``streams`` sessions push chunks (each
    waiting for its answer before the next, or with ``window`` chunks in flight), and the CPU cores
    each role (name -> function giving its CPU seconds) used over the same window of time."""
    done_steps = [0]
    start = time.monotonic() + warmup
    stop_at = start + seconds
    cpu_used: dict[str, float] = {}

    async def measure_cpu():
        await asyncio.sleep(start - time.monotonic())
        before = {role: read() for role, read in cpu_roles.items()}
        await asyncio.sleep(stop_at - time.monotonic())
        cpu_used.update({role: (read() - before[role]) / seconds for role, read in cpu_roles.items()})

    async def one(client, i):
        rng = np.random.default_rng(i)
        session = client.stream(model, f"load{i}")
        await session.open()

        def chunks():
            t = 0
            while time.monotonic() < stop_at:
                yield _chunk(rng, t, steps)
                t += steps

        async for _ in session.pipeline(chunks(), window=window):
            if start <= time.monotonic() <= stop_at:
                done_steps[0] += steps
        await session.close(durable=False)

    async with AsyncClient(address) as client:
        await asyncio.gather(measure_cpu(), *(one(client, i) for i in range(streams)))
    return done_steps[0] / seconds, cpu_used


def throughput(pg: Postgres, workdir: pathlib.Path, n: int, args, direct: bool = False) -> tuple[float, dict]:
    """Steps/s of ``n`` replicas through nginx (``direct``: one replica, no proxy in between), and
    the cores each part used meanwhile (replicas, nginx, PostgreSQL, the load generator)."""
    db = f"tp{n}{'d' if direct else ''}_{os.getpid()}"
    url = _new_db(pg, db)
    parts = []
    try:
        parts += start_replicas(n, url, workdir / db, "--workers", "1", "--checkpoint-interval-s", "2",
                                "--share-interval-s", str(args.share_interval_s))
        address = f"127.0.0.1:{parts[0].port}"
        if not direct:
            parts.append(Nginx([r.port for r in parts]))
            address = parts[-1].address
        _create(address, _spec("tp", SHARING[args.sharing]))
        replicas = parts[:n]
        roles = {"replicas": lambda: sum(tree_cpu_seconds(r.proc.pid) for r in replicas),
                 "nginx": lambda: 0.0 if direct else tree_cpu_seconds(parts[-1].proc.pid),
                 "PostgreSQL": lambda: tree_cpu_seconds(pg.proc.pid),
                 "load generator": own_cpu_seconds}
        return asyncio.run(_load(address, "tp", args.streams, args.steps, args.seconds, warmup=2.0,
                                 cpu_roles=roles, window=args.window))
    finally:
        stop(parts)


def failover(pg: Postgres, workdir: pathlib.Path, args) -> list[float]:
    url = _new_db(pg, f"fo_{os.getpid()}")
    parts = []
    try:
        parts += start_replicas(3, url, workdir / "failover", "--workers", "1", "--checkpoint-interval-s", "1",
                                "--lease-ttl-s", str(args.lease_ttl_s))
        replicas = list(parts)
        parts.append(Nginx([r.port for r in replicas]))
        address = parts[-1].address
        _create(address, _spec("fo", pb.SHARING_PER_STREAM))
        return asyncio.run(_failover(replicas, address, args.failover_streams, args.steps))
    finally:
        stop(parts)


async def _failover(replicas, address: str, streams: int, steps: int) -> list[float]:
    killed_at: list[float] = []
    first: dict[str, float] = {}
    stop_after = [None]

    async def one(client, sid, i):
        rng = np.random.default_rng(i)
        session = client.stream("fo", sid)
        await session.open()
        t = 0
        while stop_after[0] is None or time.monotonic() < stop_after[0]:
            x, y = _chunk(rng, t, steps)
            await session.send(x, targets=y)
            t += steps
            if killed_at and sid not in first:
                first[sid] = time.monotonic() - killed_at[0]
            await asyncio.sleep(0.05)
        await session.close(durable=False)

    async with AsyncClient(address, backoff=Backoff(give_up_after_s=60)) as client:
        sids = [f"fo{i}" for i in range(streams)]
        tasks = [asyncio.create_task(one(client, sid, i)) for i, sid in enumerate(sids)]
        await asyncio.sleep(3.0)
        held = [[sid for sid in sids if await asyncio.to_thread(_in_memory, r, sid)] for r in replicas]
        victim = int(np.argmax([len(h) for h in held]))
        replicas[victim].proc.send_signal(signal.SIGKILL)
        killed_at.append(time.monotonic())
        stop_after[0] = time.monotonic() + 15.0
        await asyncio.gather(*tasks)
    return sorted(first[sid] for sid in held[victim] if sid in first)


def _in_memory(replica, sid: str) -> bool:
    try:
        return replica.stub.GetStream(pb.GetStreamRequest(model="fo", stream_id=sid), timeout=10).in_memory
    except grpc.RpcError as err:  # never held there, not checkpointed yet
        if err.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return False


def quality(pg: Postgres, workdir: pathlib.Path, args) -> tuple[float, float]:
    """Mean loss over the second half of each stream of a SHARED model: 1 replica, 3 replicas."""
    out = []
    for n in (1, 3):
        url = _new_db(pg, f"q{n}_{os.getpid()}")
        parts = []
        try:
            parts += start_replicas(n, url, workdir / f"quality{n}", "--workers", "1",
                                    "--share-interval-s", str(args.share_interval_s))
            parts.append(Nginx([r.port for r in parts]))
            _create(parts[-1].address, _spec("q", pb.SHARING_SHARED))
            out.append(asyncio.run(_quality(parts[-1].address, args.quality_streams, args.quality_chunks, args.steps)))
        finally:
            stop(parts)
    return out[0], out[1]


async def _quality(address: str, streams: int, chunks: int, steps: int) -> float:
    losses: list[float] = []

    async def one(client, i):
        rng = np.random.default_rng(1000 + i)
        session = client.stream("q", f"q{i}")
        await session.open()
        for k in range(chunks):
            x, y = _chunk(rng, k * steps + 37 * i, steps)
            result = await session.send(x, targets=y)
            if k >= chunks // 2:
                losses.extend(float(v) for v in result.losses if np.isfinite(v))
            await asyncio.sleep(0.02)  # spread each stream over several rounds
        await session.close(durable=False)

    async with AsyncClient(address) as client:
        await asyncio.gather(*(one(client, i) for i in range(streams)))
    return float(np.mean(losses))


def _throughput_lines(direct: tuple[float, dict], runs: dict, args, cores: int) -> list[str]:
    """The throughput tables: steps/s and efficiency, then the cores each part used."""
    base = runs[1][0] if 1 in runs else None
    per_core_base = base / runs[1][1]["replicas"] if base and runs[1][1].get("replicas") else None
    lines = ["## Throughput through nginx", "",
             f"{args.streams} streams, chunks of {args.steps} steps, LSTM H={HIDDEN[0]} TBPTT(16,16) Adam, "
             + ("PER_STREAM" if args.sharing == "per_stream" else
                f"SHARED (rounds every {args.share_interval_s} s)")
             + f", {args.window} chunk(s) in flight per stream, --workers 1 per replica; the load generator"
             " runs on the same cores. "
             f"Peer: 1 replica without the proxy, {direct[0]:,.0f} steps/s"
             + (f" (1 replica through nginx: {base / direct[0]:.2f}x of it)." if base else "."), "",
             "| replicas | steps/s | vs 1 replica | efficiency (N x 1) | efficiency (min(N, cores) x 1) "
             "| steps per replica CPU-second | efficiency per replica CPU-second |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for n, (rate, cpu) in runs.items():
        per_core = rate / cpu["replicas"] if cpu.get("replicas") else float("nan")
        cells = [f"{n}", f"{rate:,.0f}"]
        cells += ([f"{rate / base:.2f}x", f"{rate / (n * base):.0%}", f"{rate / (min(n, cores) * base):.0%}"]
                  if base else ["", "", ""])
        cells += [f"{per_core:,.0f}", f"{per_core / per_core_base:.0%}" if per_core_base else ""]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Cores used over the timed window (CPU seconds per second; the machine has {cores}):", "",
              "| setup | replicas | nginx | PostgreSQL | load generator | all |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, (_, cpu) in [("1 replica, direct", direct), *((f"{n} behind nginx", run) for n, run in runs.items())]:
        lines.append(f"| {name} | " + " | ".join(f"{cpu[role]:.2f}" for role in
                                                 ("replicas", "nginx", "PostgreSQL", "load generator"))
                     + f" | {sum(cpu.values()):.2f} |")
    return lines + [""]


def _new_db(pg: Postgres, name: str) -> str:
    import psycopg
    with psycopg.connect(pg.url, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    return pg.url.rsplit("/", 1)[0] + "/" + name


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--streams", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--window", type=int, default=1,
                        help="chunks each stream keeps in flight (1: waits for each answer)")
    parser.add_argument("--sharing", choices=sorted(SHARING), default="per_stream",
                        help="the throughput model's weights (failover uses PER_STREAM, quality SHARED)")
    parser.add_argument("--failover-streams", type=int, default=60)
    parser.add_argument("--lease-ttl-s", type=float, default=2.0)
    parser.add_argument("--quality-streams", type=int, default=12)
    parser.add_argument("--quality-chunks", type=int, default=40)
    parser.add_argument("--share-interval-s", type=float, default=2.0)
    parser.add_argument("--skip", nargs="*", default=[], choices=["throughput", "failover", "quality"])
    parser.add_argument("--out", default="bench/results/scaleout.md")
    args = parser.parse_args(argv)
    HIDDEN[:] = [args.hidden]
    cores = len(os.sched_getaffinity(0))
    lines = [f"# bench/scaleout ({platform.node()}, {cores} cores, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
             "", f"command: python -m bench.scaleout {' '.join(argv or __import__('sys').argv[1:])}", ""]
    lines += [f"load average at the start: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (the box is shared)", ""]
    pg = Postgres()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="rnnstream-bench-scaleout-"))
    try:
        if "throughput" not in args.skip:
            direct = throughput(pg, workdir, 1, args, direct=True)
            runs = {n: throughput(pg, workdir, n, args) for n in args.replicas}
            lines += _throughput_lines(direct, runs, args, cores)
        if "failover" not in args.skip:
            times = failover(pg, workdir, args)
            lines += ["## Failover (kill -9 of the replica holding the most streams)", "",
                      f"{args.failover_streams} streams, lease {args.lease_ttl_s} s; time from the kill to each "
                      "moved stream's first answer on another replica.", ""]
            if times:
                lines += [f"moved streams: {len(times)}; p50 {np.percentile(times, 50):.2f} s, "
                          f"p99 {np.percentile(times, 99):.2f} s, max {max(times):.2f} s", ""]
            else:
                lines += ["no moved stream answered", ""]
        if "quality" not in args.skip:
            one, three = quality(pg, workdir, args)
            lines += ["## Shared weights: 3 replicas with rounds against 1 replica", "",
                      f"SHARED model, {args.quality_streams} streams x {args.quality_chunks} chunks of {args.steps} "
                      f"steps, rounds every {args.share_interval_s} s; mean loss of each stream's second half.", "",
                      "| setup | mean loss | ratio |", "| --- | ---: | ---: |",
                      f"| 1 replica | {one:.5f} | 1.00 |", f"| 3 replicas, rounds | {three:.5f} | {three / one:.2f} |",
                      ""]
    finally:
        pg.close()
        shutil.rmtree(workdir, ignore_errors=True)
    text = "\n".join(lines)
    print(text)
    pathlib.Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
