"""The routing header on every SDK and CLI call: through nginx, every call about a stream reaches
the replica that holds it (a call that landed elsewhere would wait for the stream's lease and
be refused, or see the stream as not in memory)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from rnnstream.clients import Client
from rnnstream.clients.connect import ROUTE_HEADER, Connection, route, route_of
from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from tests.scaleout.cluster import Nginx, start_replicas, stop
from tests.scaleout.test_store_postgres import _fresh_db
from tests.service.conftest import REPO, make_chunks


def test_the_route_names_model_and_stream_of_every_request_kind():
    assert route("m", "s/1 é") == "m/s%2F1%20%C3%A9"  # printable ASCII, the separator kept apart
    assert route_of(pb.CreateModelRequest(spec=pb.ModelSpec(name="m"))) == "m/"
    assert route_of(pb.GetModelRequest(name="m")) == "m/"
    assert route_of(pb.ListModelsRequest()) == "/"
    for kind in (pb.StreamRequest, pb.GetStreamRequest, pb.ResetStreamRequest, pb.CloseStreamRequest,
                 pb.DeleteStreamRequest, pb.ExportWeightsRequest):
        assert route_of(kind(model="m", stream_id="s")) == "m/s", kind
    assert Connection(token="t").metadata("m/s") == (("authorization", "Bearer t"), (ROUTE_HEADER, "m/s"))


@pytest.fixture
def proxied(postgres, tmp_path):
    parts = []
    try:
        parts += start_replicas(3, _fresh_db(postgres), tmp_path, "--lease-ttl-s", "1", "--workers", "1")
        parts.append(Nginx([r.port for r in parts]))
        yield parts[:3], parts[3].address
    finally:
        stop(parts)


def _cli(address: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rnnstream.clients.cli", *args, "--address", address],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def test_every_sdk_and_cli_call_of_a_stream_reaches_its_replica(proxied):
    replicas, address = proxied
    sids = [f"s{i}" for i in range(12)]
    with Client(address) as client:
        client.create_model(name="m", cell="lstm", hidden_sizes=[4], input_size=2, output_size=1,
                             sharing="per_stream")
        for i, sid in enumerate(sids):
            for x, y in make_chunks(2, 3, seed=i):
                client.predict("m", sid, x, targets=y)
        held = {sid: [k for k, r in enumerate(replicas) if sid in _in_memory(r)] for sid in sids}
        assert all(len(h) == 1 for h in held.values()), held
        assert len({h[0] for h in held.values()}) > 1  # spread over the replicas
        for sid in sids:
            info = client.get_stream("m", sid)
            assert info.in_memory and info.acked_seq == 2
            weights = client.export_weights("m", sid)
            client.import_weights("m", {k: v * 0.5 for k, v in weights.items()}, stream_id=sid)
            np.testing.assert_array_equal(client.export_weights("m", sid)["head.bias"], weights["head.bias"] * 0.5)
            assert client.reset_stream("m", sid).acked_seq == 0
        for sid in sids[:4]:  # the CLI sends the header too
            shown = _cli(address, "streams", "show", "m", sid)
            assert shown.returncode == 0, shown.stderr
            assert json.loads(shown.stdout)["in_memory"] is True
            closed = _cli(address, "streams", "close", "m", sid)
            assert closed.returncode == 0, closed.stderr
        # nothing moved: each stream is still (or, closed, no longer) on the replica that held it
        for sid in sids[4:]:
            assert [k for k, r in enumerate(replicas) if sid in _in_memory(r)] == held[sid]


def _in_memory(replica) -> set[str]:
    """The streams ``replica`` holds in memory, asked directly (not through the proxy)."""
    out = set()
    for i in range(12):
        try:
            if replica.stub.GetStream(pb.GetStreamRequest(model="m", stream_id=f"s{i}"), timeout=10).in_memory:
                out.add(f"s{i}")
        except Exception:  # noqa: BLE001 - NOT_FOUND: never held here nor stored yet
            pass
    return out
