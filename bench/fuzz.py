"""Fuzz a real rnnstream server with random requests and report what it answered.

    python -m bench.fuzz [--requests 10000] [--seed 0] [--out bench/results/fuzz.md]

The server runs as a subprocess (``python -m rnnstream.service``) on loopback with its log in a file.
Requests mix specs, chunks (Predict and Stream), ids, ImportWeights and raw bytes to every
method. Target: 0 INTERNAL/UNKNOWN answers, 0 tracebacks in the server log, 0 NaN/Inf in any
weight or optimizer state (stored and exported), a control model's predictions unchanged,
and the server up (health SERVING) at the end.
"""
from __future__ import annotations

import argparse
import collections
import pathlib
import platform
import sys
import tempfile
import time

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from rnnstream.protos.rnnstream.v1 import rnnstream_pb2_grpc as pb_grpc

REPO = pathlib.Path(__file__).resolve().parents[1]
CONTROL = "zz-control"
MODELS = ["fz-shared", "fz-per-stream", "fz-tokens"]
METHODS = ["CreateModel", "GetModel", "ListModels", "DeleteModel", "ExportWeights", "ImportWeights", "Predict",
           "GetStream", "ResetStream", "CloseStream", "DeleteStream"]
BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
EXTREME = np.array([0.5, -1.0, 1e19, -1.8e19, 3.4e38, 1e-45, 0.0, np.nan, np.inf], np.float32)


class Requests:
    """Random requests of every kind, from one seeded generator."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def text(self, limit=300) -> str:
        kind = self.rng.integers(4)
        if kind == 0:
            return self.pick(["s", "t", "u", "x" * int(self.rng.integers(1, limit))])
        alphabet = "abc-_.\x00\t\n é\u2028\U0001f600"
        return "".join(self.pick(alphabet) for _ in range(int(self.rng.integers(0, 12))))

    def floats(self, n) -> list:
        return [float(self.pick(EXTREME)) if self.rng.random() < 0.2 else float(self.rng.normal())
                for _ in range(n)]

    def model(self) -> str:
        return self.pick(MODELS) if self.rng.random() < 0.8 else self.text()

    def uint(self, small=8) -> int:
        # boundaries, not arbitrary large sizes: a large but valid model would only cost memory
        return int(self.rng.integers(0, small)) if self.rng.random() < 0.8 else self.pick(
            [65536, 65537, 2 ** 31, 2 ** 32 - 1])

    def chunk(self) -> pb.StreamRequest:
        if self.rng.random() < 0.5:
            return self.valid_chunk()
        n = int(self.rng.integers(0, 12))
        seq = int(self.rng.integers(0, 6)) if self.rng.random() < 0.8 else int(self.rng.integers(0, 2 ** 64,
                                                                                                dtype=np.uint64))
        return pb.StreamRequest(model=self.model(), stream_id=self.text(), seq=seq, inputs=self.floats(n),
                                targets=self.floats(int(self.rng.integers(0, n + 1))),
                                tokens=[int(t) for t in self.rng.integers(-2, 7, int(self.rng.integers(0, n + 1)))],
                                target_classes=[int(t) for t in self.rng.integers(-2, 7, int(self.rng.integers(0, 3)))],
                                predict_only=bool(self.rng.integers(2)), horizon=self.uint(3),
                                ephemeral=bool(self.rng.integers(2)), reset_after=bool(self.rng.integers(2)),
                                labels=[pb.Label(step=self.uint(20), target=self.floats(int(self.rng.integers(0, 3))),
                                                 target_class=int(self.rng.integers(-2, 7)))
                                        for _ in range(int(self.rng.integers(0, 3)))])

    def valid_chunk(self) -> pb.StreamRequest:
        """A well-formed chunk of a fuzz model, with extreme (but admissible) values: it trains."""
        model, n = self.pick(MODELS), int(self.rng.integers(1, 9))
        req = pb.StreamRequest(model=model, stream_id=self.pick(["s", "t", "u", "v"]),
                               seq=int(self.rng.integers(1, 50)), predict_only=self.rng.random() < 0.2)
        admissible = [v for v in EXTREME if np.isfinite(v) and abs(v) <= 1.8e19]
        values = lambda k: [float(self.pick(admissible)) if self.rng.random() < 0.3 else float(self.rng.normal())
                            for _ in range(k)]
        if model == "fz-tokens":
            req.tokens.extend(int(t) for t in self.rng.integers(0, 5, n))
        else:
            req.inputs.extend(values(2 * n))
            req.targets.extend(values(n))
        return req

    def spec(self) -> pb.ModelSpec:
        opt = pb.Optimizer(kind=int(self.rng.integers(0, 6)), lr=self.floats(1)[0] if self.rng.random() < 0.3 else 0.01)
        if self.rng.random() < 0.3:
            opt.momentum = self.floats(1)[0]
        name = f"fz-new-{int(self.rng.integers(1000))}" if self.rng.random() < 0.7 else self.text()
        return pb.ModelSpec(name=name, cell=int(self.rng.integers(0, 6)), lstm_variant=int(self.rng.integers(0, 5)),
                            hidden_sizes=[self.uint(6) for _ in range(int(self.rng.integers(0, 3)))],
                            input_size=self.uint(4), vocab_size=self.uint(5) if self.rng.random() < 0.3 else 0,
                            output_size=self.uint(3), num_classes=self.uint(4) if self.rng.random() < 0.3 else 0,
                            algorithm=int(self.rng.integers(0, 5)), tbptt_k1=self.uint(4), tbptt_k2=self.uint(4),
                            optimizer=opt, clip_norm=self.floats(1)[0] if self.rng.random() < 0.3 else 0.0,
                            sharing=int(self.rng.integers(0, 3)), seed=int(self.rng.integers(0, 2 ** 63)),
                            target_mode=int(self.rng.integers(0, 3)))

    def import_request(self) -> pb.ImportWeightsRequest:
        tensors = [pb.Tensor(name=self.pick(["head.bias", "head.weight", "weight_ih_l0", "weight_hh_l0",
                                             "bias_ih_l0", "bias_hh_l0", self.text(20)]),
                             shape=[self.uint(20) for _ in range(int(self.rng.integers(0, 3)))],
                             data=self.floats(int(self.rng.integers(0, 40))))
                   for _ in range(int(self.rng.integers(0, 7)))]
        return pb.ImportWeightsRequest(model=self.model(), stream_id=self.text() if self.rng.random() < 0.5 else "",
                                       tensors=tensors)

    def next(self):
        """(method, request message or raw bytes)."""
        kind = self.rng.random()
        if kind < 0.35:
            return self.pick(["Predict", "Stream"]), self.chunk()
        if kind < 0.45:
            return "CreateModel", pb.CreateModelRequest(spec=self.spec())
        if kind < 0.55:
            return "ImportWeights", self.import_request()
        if kind < 0.6:  # the streaming import: the unary import's tensors as pieces
            req = self.import_request()
            return "ImportWeightsStream", [pb.WeightsPiece(model=req.model, stream_id=req.stream_id, name=t.name,
                                                           shape=t.shape, offset=self.uint(3), data=t.data)
                                           for t in req.tensors]
        if kind < 0.75:
            action = self.pick(["GetStream", "ResetStream", "CloseStream", "DeleteStream", "ExportWeights"])
            cls = pb.ExportWeightsRequest if action == "ExportWeights" else getattr(pb, action + "Request")
            return action, cls(model=self.model(), stream_id=self.text())
        raw = self.rng.integers(0, 256, int(self.rng.integers(0, 64)), dtype=np.uint8).tobytes()
        return self.pick(METHODS + ["Stream"]), raw


def _touches_control(msg) -> bool:
    return CONTROL in str(msg)


def run(address: str, n: int, seed: int) -> dict:
    channel = grpc.insecure_channel(address)
    stub = pb_grpc.RnnStreamStub(channel)
    spec = dict(cell=pb.CELL_LSTM, hidden_sizes=[4], input_size=2, output_size=1, algorithm=pb.ALGORITHM_TBPTT, tbptt_k1=2,
                tbptt_k2=2, seed=1)
    stub.CreateModel(pb.CreateModelRequest(spec=pb.ModelSpec(name=CONTROL, **spec)))
    stub.CreateModel(pb.CreateModelRequest(spec=pb.ModelSpec(name=MODELS[0], max_label_delay=8, **spec)))
    stub.CreateModel(pb.CreateModelRequest(spec=pb.ModelSpec(name=MODELS[1], sharing=pb.SHARING_PER_STREAM, **dict(
        spec, optimizer=pb.Optimizer(kind=pb.OPTIMIZER_KIND_SGD, lr=0.5, momentum=0.9)))))
    stub.CreateModel(pb.CreateModelRequest(spec=pb.ModelSpec(
        name=MODELS[2], cell=pb.CELL_GRU, hidden_sizes=[3], input_size=2, vocab_size=5, num_classes=5,
        algorithm=pb.ALGORITHM_RTRL, target_mode=pb.TARGET_MODE_NEXT_INPUT)))
    probe = pb.StreamRequest(model=CONTROL, stream_id="probe", seq=1, predict_only=True,
                             inputs=np.linspace(-1, 1, 8).tolist())
    before = list(stub.Predict(probe).predictions)
    stub.DeleteStream(pb.DeleteStreamRequest(model=CONTROL, stream_id="probe"))
    gen, codes, t0 = Requests(seed), collections.Counter(), time.perf_counter()
    sent = 0
    while sent < n:
        method, msg = gen.next()
        if _touches_control(msg if not isinstance(msg, list) else [str(m) for m in msg]):
            continue
        sent += 1
        try:
            if method == "Stream":
                item = msg if isinstance(msg, bytes) else msg.SerializeToString()
                call = channel.stream_stream("/rnnstream.v1.RnnStream/Stream")
                for raw in call(iter([item, item]), timeout=10):
                    err = pb.StreamResponse.FromString(raw).error
                    codes["stream:" + (grpc.StatusCode(_code(err.code)).name if err.code else "OK")] += 1
                codes["OK"] += 1
            elif method == "ImportWeightsStream":
                stub.ImportWeightsStream(iter(msg), timeout=10)
                codes["OK"] += 1
            elif isinstance(msg, bytes):
                channel.unary_unary(f"/rnnstream.v1.RnnStream/{method}")(msg, timeout=10)
                codes["OK"] += 1
            else:
                getattr(stub, method)(msg, timeout=10)
                codes["OK"] += 1
        except grpc.RpcError as err:
            codes[err.code().name] += 1
    seconds = time.perf_counter() - t0
    after = list(stub.Predict(probe).predictions)
    nonfinite = 0
    for model in stub.ListModels(pb.ListModelsRequest()).models:
        name = model.spec.name
        try:
            for piece in stub.ExportWeightsStream(pb.ExportWeightsRequest(model=name)):
                nonfinite += int((~np.isfinite(np.asarray(piece.data))).sum())
        except grpc.RpcError:
            pass
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
    channel.close()
    return dict(codes=codes, seconds=seconds, control_unchanged=after == before, nonfinite_exported=nonfinite,
                serving=health == health_pb2.HealthCheckResponse.SERVING)


def _code(number: int) -> tuple:
    return next(c.value for c in grpc.StatusCode if c.value[0] == number)


def _stored_nonfinite(data_dir: pathlib.Path) -> int:
    sys.path.insert(0, str(REPO))
    from rnnstream.service.store import Store
    store = Store(str(data_dir))
    try:
        bad = 0
        for stored in store.run(store.load_models):
            bad += sum(int((~np.isfinite(a)).sum()) for a in stored.state.values() if a.dtype.kind == "f")
        return bad
    finally:
        store.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "fuzz.md"))
    args = parser.parse_args(argv)
    from bench.service_vs_echo import _spawn
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        log_path = tmp / "server.log"
        proc, port = _spawn(["-m", "rnnstream.service", "--host", "127.0.0.1", "--port", "0", "--metrics-port", "-1",
                             "--data-dir", str(tmp / "data"), "--checkpoint-interval-s", "0.5"],
                            "rnnstream serving on 127.0.0.1:", log_path)
        try:
            result = run(f"127.0.0.1:{port}", args.requests, args.seed)
        finally:
            proc.terminate()
            exit_code = proc.wait(60)
        log = log_path.read_text(errors="replace")
        stored_bad = _stored_nonfinite(tmp / "data")
    codes = result["codes"]
    internal = sum(v for k, v in codes.items() if k.split(":")[-1] in {c.name for c in BAD})
    rows = [("requests", args.requests), ("seconds", f"{result['seconds']:.1f}"),
            ("INTERNAL/UNKNOWN answers", internal), ("tracebacks in the server log", log.count("Traceback")),
            ("server log lines", log.count("\n")), ("NaN/Inf in exported weights", result["nonfinite_exported"]),
            ("NaN/Inf in stored model state", stored_bad), ("control predictions unchanged", result["control_unchanged"]),
            ("server SERVING at the end", result["serving"]), ("exit status after SIGTERM", exit_code)]
    text = ["# Fuzzing a real server", "", f"`python -m bench.fuzz --requests {args.requests} --seed {args.seed}` "
            f"on {platform.machine()}, Python {platform.python_version()}.", "", "| measure | value |", "| --- | --- |"]
    text += [f"| {k} | {v} |" for k, v in rows]
    text += ["", "Answers by status (`stream:` = the `error` of a Stream response):", "", "| status | count |",
             "| --- | --- |"] + [f"| {k} | {v} |" for k, v in sorted(codes.items())]
    report = "\n".join(text) + "\n"
    pathlib.Path(args.out).write_text(report)
    sys.stdout.write(report)
    ok = (internal == 0 and log.count("Traceback") == 0 and result["nonfinite_exported"] == 0 and stored_bad == 0
          and result["control_unchanged"] and result["serving"] and exit_code == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
