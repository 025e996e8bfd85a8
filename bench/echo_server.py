"""The baseline: a bare grpc.aio server with the RnnStream API that answers every chunk with a
response of the same shape (T x output_size predictions, T losses) and does nothing else.

``python -m bench.echo_server --port 0 --output-size 1`` logs ``echo serving on HOST:PORT``.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal

import grpc

from rnnstream.protos.rnnstream.v1 import rnnstream_pb2 as pb
from rnnstream.protos.rnnstream.v1 import rnnstream_pb2_grpc as pb_grpc

log = logging.getLogger("echo")


class Echo(pb_grpc.RnnStreamServicer):
    def __init__(self, output_size: int, input_size: int):
        self.output_size, self.input_size = output_size, input_size

    def _answer(self, req: pb.StreamRequest) -> pb.StreamResponse:
        steps = len(req.inputs) // self.input_size if req.inputs else len(req.tokens)
        return pb.StreamResponse(model=req.model, stream_id=req.stream_id, seq=req.seq, acked_seq=req.seq,
                                 predictions=[0.0] * (steps * self.output_size), losses=[0.0] * steps)

    async def Stream(self, request_iterator, context):
        async for req in request_iterator:
            yield self._answer(req)

    async def Predict(self, request, context):
        return self._answer(request)


async def _main(opts) -> None:
    server = grpc.aio.server()
    pb_grpc.add_RnnStreamServicer_to_server(Echo(opts.output_size, opts.input_size), server)
    port = server.add_insecure_port(f"{opts.host}:{opts.port}")
    await server.start()
    log.info("echo serving on %s:%d", opts.host, port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--input-size", type=int, default=4)
    parser.add_argument("--output-size", type=int, default=1)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    asyncio.run(_main(parser.parse_args()))
