"""rnnstream's Python SDK: ``Client`` (sync) and ``AsyncClient`` (asyncio).

Imports only the generated protos, grpcio and numpy: it installs and runs without numba
and without the service.
"""
from .aio import AsyncClient, AsyncStreamSession
from .client import Client, StreamSession
from .connect import Backoff
from .convert import ModelInfo, StreamInfo, StreamResult, StreamStats
from .spec import ModelSpec
from .errors import (AlreadyExists, ChunkRefused, DeadlineExceeded, FailedPrecondition, InvalidArgument,
                     NotFound, PermissionDenied, ResourceExhausted, RnnStreamError, Unauthenticated,
                     Unavailable)

__all__ = [
    "Client", "AsyncClient", "ModelSpec", "StreamSession", "AsyncStreamSession", "Backoff",
    "ModelInfo", "StreamInfo", "StreamResult", "StreamStats",
    "RnnStreamError", "InvalidArgument", "NotFound", "AlreadyExists", "FailedPrecondition",
    "Unauthenticated", "PermissionDenied", "ResourceExhausted", "Unavailable", "DeadlineExceeded",
    "ChunkRefused",
]
