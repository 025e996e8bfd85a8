"""The SDK's typed ModelSpec matches the server's; predict is one RPC; what is in effect is shown."""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import pydoc
import subprocess
import sys

import grpc
import numpy as np

from rnnstream.clients import AsyncClient, Client, ModelSpec
from rnnstream.clients.cli import main as rnnstream
from rnnstream.service.engine import Spec

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOT_IN_SDK: set = set()  # every server field is in the SDK's spec


def test_model_spec_has_the_servers_fields_and_defaults():
    ours = {f.name: f.default for f in dataclasses.fields(ModelSpec)}
    theirs = {f.name: f.default for f in dataclasses.fields(Spec)}
    assert set(theirs) - set(ours) == NOT_IN_SDK
    assert ours == {k: v for k, v in theirs.items() if k in ours}
    for name in ours:  # every field is explained
        assert f"    {name}: " in ModelSpec.__doc__, name


def test_help_of_create_model_names_every_field_with_its_default():
    for cls in (Client, AsyncClient):
        text = pydoc.render_doc(cls.create_model, renderer=pydoc.plaintext)
        assert "spec: 'ModelSpec | None' = None" in text
        assert "tbptt_k1: 'int' = 0" in text and "lr: 'Optional[float]' = None" in text
        assert "torch.optim's default" in text and "Adam 1e-2" in text


class _CountCalls(grpc.UnaryUnaryClientInterceptor):
    def __init__(self):
        self.methods = []

    def intercept_unary_unary(self, continuation, details, request):
        self.methods.append(details.method.rsplit("/", 1)[-1])
        return continuation(details, request)


def test_create_from_a_model_spec_and_predict_is_one_rpc_per_chunk(server, name):
    with Client(server.address) as client:
        info = client.create_model(ModelSpec(name=name, cell="gru", hidden_sizes=(4,), input_size=2,
                                             output_size=1), optimizer="rmsprop")
        assert info.spec["cell"] == "gru" and info.spec["optimizer"] == "rmsprop"
        counter = _CountCalls()
        from rnnstream.protos.rnnstream.v1 import rnnstream_pb2_grpc as pb_grpc
        client._stub = pb_grpc.RnnStreamStub(grpc.intercept_channel(client._channel, counter))
        x, y = np.ones((3, 2), np.float32), np.zeros((3, 1), np.float32)
        seqs = [client.predict(name, "u", x, targets=y).seq for _ in range(4)]
        assert seqs == [1, 2, 3, 4]
        assert counter.methods[:3] == ["GetModel", "GetStream", "Predict"]
        assert counter.methods[3:] == ["Predict"] * 3  # one RPC per chunk after the first
        client.reset_stream(name, "u")  # acked_seq back to 0: a remembered higher seq still works
        assert client.predict(name, "u", x, targets=y).acked_seq == 5
        with Client(server.address) as other:  # another writer moves the stream on
            other.predict(name, "u", x, targets=y, seq=9)
        assert client.predict(name, "u", x, targets=y).seq == 10  # asked again, sent once more


def test_models_show_prints_the_values_in_effect(server, name, capsys):
    args = ["--address", server.address]
    assert rnnstream(["models", "create", name, "--cell", "lstm", "--hidden", "8", "--input-size", "1",
                      "--output-size", "1", "--optimizer", "rmsprop", *args]) == 0
    assert rnnstream(["models", "show", name, *args]) == 0
    spec = json.loads(capsys.readouterr().out.split("\n", 1)[1])["spec"]
    assert (spec["lr"], spec["eps"], spec["alpha"]) == (0.01, 1e-8, 0.99)  # torch.optim's RMSprop
    assert (spec["algorithm"], spec["tbptt_k1"], spec["tbptt_k2"]) == ("tbptt", 1, 8)  # measured defaults
    assert spec["seed"] == 0 and spec["betas"] == [0.9, 0.999]


def test_every_create_flag_has_help_and_bad_values_say_what_was_expected(capsys):
    try:
        rnnstream(["models", "create", "--help"])
    except SystemExit:
        pass
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--lr", "--momentum", "--eps", "--seed", "--alpha", "--k1", "--k2", "--betas"):
        assert f"{flag} " in text
    assert "seed of the initial weights. (default: 0)" in text
    assert "TBPTT: update after every k1 steps; 0: 1 (dense) or 16 (tokens). (default: 0)" in text
    try:
        rnnstream(["models", "create", "m", "--hidden", "sixteen"])
    except SystemExit as exit:
        assert exit.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith("argument --hidden: expected whole numbers separated by commas, e.g. 32 or 64,32; "
                        "got 'sixteen'")


def test_service_help_says_what_each_flag_means_and_bad_levels_list_the_choices():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    out = subprocess.run([sys.executable, "-m", "rnnstream.service", "--help"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120).stdout
    assert "-1 turns the metrics endpoint off" in " ".join(out.split())
    bad = subprocess.run([sys.executable, "-m", "rnnstream.service", "--log-level", "verbose"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].endswith(
        "argument --log-level: invalid choice: 'VERBOSE' (choose from 'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL')")


class _CountAsyncCalls(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self):
        self.methods = []

    async def intercept_unary_unary(self, continuation, details, request):
        name = details.method.decode() if isinstance(details.method, bytes) else details.method
        self.methods.append(name.rsplit("/", 1)[-1])
        return await continuation(details, request)


def test_async_predict_is_one_rpc_per_chunk_too(server, name):
    import asyncio

    from rnnstream.protos.rnnstream.v1 import rnnstream_pb2_grpc as pb_grpc

    async def run():
        async with AsyncClient(server.address) as client:
            await client.create_model(ModelSpec(name=name, cell="elman", hidden_sizes=(4,), input_size=1,
                                                 output_size=1))
            counter = _CountAsyncCalls()
            channel = grpc.aio.insecure_channel(server.address, interceptors=[counter])
            client._stub = pb_grpc.RnnStreamStub(channel)
            x, y = np.ones((2, 1), np.float32), np.zeros((2, 1), np.float32)
            seqs = [(await client.predict(name, "a", x, targets=y)).seq for _ in range(3)]
            await channel.close()
            return seqs, counter.methods

    seqs, methods = asyncio.run(run())
    assert seqs == [1, 2, 3]
    assert methods == ["GetModel", "GetStream", "Predict", "Predict", "Predict"]
