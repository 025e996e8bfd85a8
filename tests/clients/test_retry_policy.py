"""The stream session's retry policy, code by code, and its backoff's jitter.

The real server cannot be made to end a call with INTERNAL, CANCELLED or DEADLINE_EXCEEDED on
demand, so these tests run the SDK against a scripted gRPC server on loopback: real gRPC,
real transport, whose Stream ends its first calls with the code under test and then answers.
What the real server does on a drain, a crash and a restart is tested in test_session_faults.
"""
from __future__ import annotations

import asyncio
import random
from concurrent import futures

import grpc
import pytest

from rnnstream.clients import AsyncClient, Backoff, Client, RnnStreamError
from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from rnnstream.protos.rnnstream.v1 import rnnstream_pb2_grpc as pb_grpc

FAST = Backoff(initial_s=0.01, max_s=0.05, give_up_after_s=5)


class ScriptedServer(pb_grpc.RnnStreamServicer):
    """Ends its first ``failures`` Stream calls with ``code`` after reading one chunk; then
    answers every chunk as applied."""

    def __init__(self, code: grpc.StatusCode, failures: int):
        self.code, self.failures, self.calls = code, failures, 0

    def GetModel(self, request, context):
        return pb.Model(spec=pb.ModelSpec(name=request.name, cell=pb.CELL_LSTM, hidden_sizes=[2],
                                          input_size=1, output_size=1))

    def GetStream(self, request, context):
        context.abort(grpc.StatusCode.NOT_FOUND, "no such stream yet")

    def Stream(self, request_iterator, context):
        self.calls += 1
        for req in request_iterator:
            if self.calls <= self.failures:
                context.abort(self.code, f"scripted {self.code.name}")
            yield pb.StreamResponse(stream_id=req.stream_id, seq=req.seq, acked_seq=req.seq,
                                    predictions=[0.0], losses=[0.0])


@pytest.fixture
def scripted():
    servers = []

    def start(code: grpc.StatusCode, failures: int) -> tuple[str, ScriptedServer]:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        script = ScriptedServer(code, failures)
        pb_grpc.add_RnnStreamServicer_to_server(script, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}", script

    yield start
    for server in servers:
        server.stop(None)


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                                  grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED])
def test_passing_failures_are_retried_until_the_call_works(scripted, code):
    address, script = scripted(code, failures=5)
    with Client(address, backoff=FAST) as client:
        with client.stream("m", "s") as s:
            assert s.send([[0.5]], targets=[[0.1]]).seq == 1
            s.close(durable=False)
    assert script.calls == 6 and s.disconnects == [code] * 5 and s.reconnects == 5


@pytest.mark.parametrize("code", [grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN])
def test_internal_and_unknown_get_two_quick_retries_then_raise(scripted, code):
    address, script = scripted(code, failures=2)
    with Client(address, backoff=FAST) as client:
        assert client.stream("m", "s").send([[0.5]], targets=[[0.1]]).seq == 1  # two failures: retried
    address, script = scripted(code, failures=10)
    with Client(address, backoff=FAST) as client:
        s = client.stream("m", "s")
        with pytest.raises(RnnStreamError) as err:
            s.send([[0.5]], targets=[[0.1]])
    assert err.value.code == code and script.calls == 3  # the first try and two retries


def test_a_code_that_would_fail_again_is_raised_at_once(scripted):
    address, script = scripted(grpc.StatusCode.PERMISSION_DENIED, failures=10)
    with Client(address, backoff=FAST) as client:
        with pytest.raises(RnnStreamError) as err:
            client.stream("m", "s").send([[0.5]], targets=[[0.1]])
    assert err.value.code == grpc.StatusCode.PERMISSION_DENIED and script.calls == 1


def test_async_session_follows_the_same_policy(scripted):
    async def main(code, failures):
        address, script = scripted(code, failures)
        async with AsyncClient(address, backoff=FAST) as client:
            s = client.stream("m", "s")
            try:
                return (await s.send([[0.5]], targets=[[0.1]])).seq, script.calls
            except RnnStreamError as err:
                return err.code, script.calls
            finally:
                await s.close(durable=False)

    assert asyncio.run(main(grpc.StatusCode.CANCELLED, 4)) == (1, 5)
    assert asyncio.run(main(grpc.StatusCode.INTERNAL, 10)) == (grpc.StatusCode.INTERNAL, 3)
    assert asyncio.run(main(grpc.StatusCode.PERMISSION_DENIED, 10)) == (grpc.StatusCode.PERMISSION_DENIED, 1)


def test_backoff_has_full_jitter_under_an_exponential_cap():
    backoff = Backoff(initial_s=0.1, max_s=2.0, multiplier=2.0)
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    runs = [list(zip(range(8), backoff.delays(random.Random(seed)))) for seed in range(50)]
    for run in runs:
        assert all(0.0 <= delay <= ceilings[n] for n, delay in run)
    # spread, not lockstep: fifty clients' first waits after one restart all differ
    assert len({run[0][1] for run in runs}) == 50
    assert [d for _, d in zip(range(8), Backoff(jitter=False).delays())] == ceilings
