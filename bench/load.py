"""Load: many concurrent Stream calls against one rnnstream server, in one run.

    python -m bench.load [--streams 200 1000] [--seconds 5] [--steps 1 16] [--workers 0]
                         [--clients 1] [--out bench/results/load.md]

The server runs as a subprocess on loopback (its own data directory, durability periodic).
For each (streams, chunk steps, sharing) it creates a model (LSTM H=32, input 4, output 1,
TBPTT(16, 16), Adam), opens every Stream call at once, and each call sends a chunk, waits for
its answer and sends the next until the time is up. Measured: steps/s over the timed part,
time to first answer (from opening the call), when the client had handed its first chunks to
gRPC (p99 from the row's start: the client's own floor under the first answer), p50/p99 chunk
round trip, health-check p99 during the load on the main port and on the health port
(``--health-port``; each probed every 50 ms by a thread of a process of its own), errors by
gRPC code, chunks not answered or answered out of order, and the
server's RSS (now and peak). The client shares the machine's cores with the server, so on a
small box the numbers are a floor for the server.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import threading
import time

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from rnnstream.protos.rnnstream.v1 import rnnstream_pb2_grpc as pb_grpc

from bench.service_vs_echo import _spawn

REPO = pathlib.Path(__file__).resolve().parents[1]
INPUT, OUTPUT, HIDDEN = 4, 1, 32
STREAMS_PER_CHANNEL = 100


SERVING_LOG = "rnnstream serving on 127.0.0.1:"
HEALTH_PORT_LOG = "also on port "  # the server logs its --health-port right after SERVING_LOG


def _spawn_server(data_dir: str, workers: int, log_path: pathlib.Path) -> tuple[subprocess.Popen, int, int]:
    """The server, its port and its health port."""
    args = ["-m", "rnnstream.service", "--host", "127.0.0.1", "--port", "0", "--metrics-port", "-1",
            "--health-port", "0", "--data-dir", data_dir, "--workers", str(workers),
            "--max-streams-per-model", "100000"]
    # a cold numba cache compiles the kernels first: minutes, not seconds
    proc, health_port = _spawn(args, HEALTH_PORT_LOG, log_path, timeout_s=600)
    port = int(log_path.read_text().split(SERVING_LOG)[1].split()[0])
    return proc, port, health_port


def _rss(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in bytes."""
    fields = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields.get("VmRSS", 0), fields.get("VmHWM", 0)


def _pct(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


async def _workload(address: str, health_address: str, streams: int, steps: int, sharing: str,
                    seconds: float, clients: int = 1) -> dict:
    name = f"load-{streams}-{steps}-{sharing}"
    async with grpc.aio.insecure_channel(address) as channel:
        await pb_grpc.RnnStreamStub(channel).CreateModel(pb.CreateModelRequest(spec=pb.ModelSpec(
            name=name, cell=pb.CELL_LSTM, hidden_sizes=[HIDDEN], input_size=INPUT, output_size=OUTPUT,
            algorithm=pb.ALGORITHM_TBPTT, tbptt_k1=16, tbptt_k2=16,
            optimizer=pb.Optimizer(kind=pb.OPTIMIZER_KIND_ADAM, lr=0.01), seed=1,
            sharing=pb.SHARING_SHARED if sharing == "shared" else pb.SHARING_PER_STREAM)))
    # health is probed from its own process: in this one it would wait behind the client's own
    # loop, which thousands of calls keep busy, and measure the client instead of the server
    probe = subprocess.Popen([sys.executable, "-m", "bench.load", "--probe", address, health_address], cwd=REPO,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        if clients == 1:
            parts = [await _calls(address, name, list(range(streams)), steps, seconds)]
        else:  # client processes of their own, the streams dealt out among them, started together
            procs = [subprocess.Popen([sys.executable, "-m", "bench.load", "--calls", json.dumps(
                         [address, name, list(range(k, streams, clients)), steps, seconds])],
                         cwd=REPO, stdout=subprocess.PIPE) for k in range(clients)]
            outs = await asyncio.gather(*(asyncio.to_thread(p.communicate, timeout=seconds + 600) for p in procs))
            parts = [json.loads(out or b"{}") for out, _ in outs]
    finally:
        probed = json.loads(probe.communicate(b"", timeout=60)[0] or b"{}")  # closing stdin stops it
    errors = collections.Counter()
    samples = {}
    for part in parts:
        errors.update(part["errors"])
        samples.update(part["samples"])
    health_rtts, port_rtts = probed.get(address, {}).get("rtts", []), probed.get(health_address, {}).get("rtts", [])
    for where, label in ((address, "health"), (health_address, "health port")):
        for code, count in probed.get(where, {}).get("errors", {}).items():
            errors[f"{label} {code}"] += count

    def merged(key):
        return [v for part in parts for v in part[key]]
    first, rtts, sent = merged("first"), merged("rtts"), merged("sent")
    return dict(streams=streams, steps=steps, sharing=sharing, clients=clients,
                steps_per_s=sum(part["answered_steps"] for part in parts) / seconds,
                first_p50=_pct(first, 50), first_p99=_pct(first, 99), first_answered=len(first),
                sent_p99=_pct(sent, 99),
                rtt_p50=_pct(rtts, 50), rtt_p99=_pct(rtts, 99), health_p99=_pct(health_rtts, 99),
                health_port_p99=_pct(port_rtts, 99),
                errors=dict(errors), bad_order=sum(part["bad_order"] for part in parts), samples=samples)


async def _calls(address: str, name: str, ids: list[int], steps: int, seconds: float) -> dict:
    """One client: a Stream call per stream id of ``ids``, each sending a chunk and waiting for
    its answer until ``seconds`` after every one of them had its first answer. Returns the raw
    samples (seconds) and counts, as JSON-ready lists."""
    streams = len(ids)
    # one connection per channel, as separate clients would have (not one shared subchannel)
    channels = [grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(max(1, -(-streams // STREAMS_PER_CHANNEL)))]
    stubs = [pb_grpc.RnnStreamStub(c) for c in channels]
    rng = np.random.default_rng(0)
    pool = [(rng.standard_normal(steps * INPUT).astype(np.float32).tolist(),
             rng.standard_normal(steps * OUTPUT).astype(np.float32).tolist()) for _ in range(32)]
    first, rtts, errors, samples = [], [], collections.Counter(), {}
    # when each call's first chunk was handed to gRPC, from the start of the row: the client's
    # own share of the time to first answer (one Python process opening every call)
    sent = []
    answered_steps = [0]
    bad_order = [0]
    # every call sends its first chunk (time to first answer); the timed part, ``seconds``
    # long, starts once every call has its first answer (or failed)
    opened = [0]
    all_open = asyncio.Event()
    window = [0.0, float("inf")]

    def arrived():
        opened[0] += 1
        if opened[0] == streams:
            window[0] = time.perf_counter()
            window[1] = window[0] + seconds
            all_open.set()

    t_start = time.perf_counter()

    async def one(i: int):
        stub = stubs[i % len(stubs)]
        sid = ids[i]
        t_open = time.perf_counter()
        call = stub.Stream()
        seq = 0
        counted = False
        try:
            while seq == 0 or time.perf_counter() < window[1]:
                seq += 1
                x, y = pool[seq % len(pool)]
                t0 = time.perf_counter()
                await call.write(pb.StreamRequest(model=name, stream_id=f"s{sid}", seq=seq, inputs=x, targets=y))
                if seq == 1:
                    sent.append(time.perf_counter() - t_start)
                resp = await call.read()
                t1 = time.perf_counter()
                if resp is grpc.aio.EOF:
                    errors["EOF"] += 1
                    break
                if seq == 1:  # answered or refused: this call is open
                    counted = True
                    arrived()
                    if not resp.HasField("error"):
                        first.append(t1 - t_open)
                    await all_open.wait()
                if resp.HasField("error"):
                    errors[grpc.StatusCode(_code(resp.error.code)).name] += 1
                    continue
                if resp.seq != seq or resp.acked_seq != seq or resp.duplicate:
                    bad_order[0] += 1
                if seq > 1 and t1 <= window[1]:
                    rtts.append(t1 - t0)
                    answered_steps[0] += steps
            await call.done_writing()
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details()
            if "execute_batch" in (details or ""):  # a write on a call already ended: its real status
                code, details = await call.code(), await call.details()
            errors[code.name] += 1
            samples.setdefault(code.name, details)
        finally:
            if not counted:
                arrived()

    await asyncio.gather(*(one(i) for i in range(streams)))
    for c in channels:
        await c.close()
    return dict(first=first, rtts=rtts, sent=sent, errors=dict(errors), samples=samples,
                answered_steps=answered_steps[0], bad_order=bad_order[0])


def _probe(addresses: list[str]) -> None:
    """``--probe ADDRESS...``: a health check every 50 ms at each address, each from a thread
    of its own, until stdin closes; then per address their round trips (seconds) and failures
    as JSON on stdout."""
    stop = threading.Event()
    found = {a: {"rtts": [], "errors": collections.Counter()} for a in addresses}

    def probe(address):
        rtts, errors = found[address]["rtts"], found[address]["errors"]
        with grpc.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            stub.Check(health_pb2.HealthCheckRequest(), timeout=60)  # connected before timing
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
                    rtts.append(time.perf_counter() - t0)
                except grpc.RpcError as exc:
                    errors[exc.code().name] += 1
                stop.wait(0.05)

    threads = [threading.Thread(target=probe, args=(a,), daemon=True) for a in addresses]
    for t in threads:
        t.start()
    sys.stdin.read()
    stop.set()
    for t in threads:
        t.join(30)
    sys.stdout.write(json.dumps(found))


def _code(value: int) -> tuple:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code.value
    return grpc.StatusCode.UNKNOWN.value


def _table(rows: list[dict], header: str) -> str:
    lines = [header, "",
             "| streams | chunk steps | weights | steps/s | first answer p50 / p99 (ms) | first chunks sent by (ms) | "
             "answered first | "
             "round trip p50 / p99 (ms) | health p99 (ms) | health port p99 (ms) | errors | out of order | "
             "server RSS / peak (MB) |",
             "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    for r in rows:
        errs = ", ".join(f"{k} {v}" for k, v in sorted(r["errors"].items())) or "0"
        lines.append(f"| {r['streams']} | {r['steps']} | {r['sharing']} | {r['steps_per_s']:,.0f} | "
                     f"{r['first_p50'] * 1e3:.0f} / {r['first_p99'] * 1e3:.0f} | {r['sent_p99'] * 1e3:.0f} | {r['first_answered']} | "
                     f"{r['rtt_p50'] * 1e3:.1f} / {r['rtt_p99'] * 1e3:.1f} | {r['health_p99'] * 1e3:.1f} | {r['health_port_p99'] * 1e3:.1f} | {errs} | "
                     f"{r['bad_order']} | {r['rss'] / 1e6:.0f} / {r['rss_peak'] / 1e6:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--probe", metavar="ADDRESS", nargs="+", help=argparse.SUPPRESS)  # the health prober process
    parser.add_argument("--calls", help=argparse.SUPPRESS)  # one of --clients' client processes (JSON arguments)
    parser.add_argument("--clients", type=int, default=1,
                        help="client processes, the streams dealt out among them (1: this process)")
    parser.add_argument("--streams", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--sharing", nargs="+", default=["shared", "per_stream"], choices=["shared", "per_stream"])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=0, help="server --workers (0: its cores)")
    parser.add_argument("--out", default=str(REPO / "bench/results/load.md"))
    args = parser.parse_args(argv)
    if args.probe:
        return _probe(args.probe)
    if args.calls:
        sys.stdout.write(json.dumps(asyncio.run(_calls(*json.loads(args.calls)))))
        return None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        proc, port, health_port = _spawn_server(tmp + "/data", args.workers, pathlib.Path(tmp) / "server.log")
        try:
            for streams in args.streams:
                for steps in args.steps:
                    for sharing in args.sharing:
                        row = asyncio.run(_workload(f"127.0.0.1:{port}", f"127.0.0.1:{health_port}", streams, steps,
                                                    sharing, args.seconds, args.clients))
                        row["rss"], row["rss_peak"] = _rss(proc.pid)
                        rows.append(row)
                        print(_table([row], "").strip().splitlines()[-1], flush=True)
                        for code, details in row["samples"].items():
                            print(f"  e.g. {code}: {details}", flush=True)
        finally:
            proc.terminate()
            proc.wait(60)
            if any(r["errors"] for r in rows):
                print("server log tail:\n" + (pathlib.Path(tmp) / "server.log").read_text()[-3000:])
    header = (f"# bench/load.py: {args.seconds:g} s timed per row (after every call's first answer), server --workers {args.workers or 'cores'}, "
              f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), LSTM H={HIDDEN}, "
              f"TBPTT(16,16); {args.clients} client process(es) and the server on the same machine; RSS after the row, "
              "with the earlier rows' "
              "models and streams still held")
    text = _table(rows, header)
    pathlib.Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
