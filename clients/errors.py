"""The SDK's exceptions: one small hierarchy, each carrying the gRPC code and message.

Callers catch :class:`RnnStreamError` for anything the service said no to, or one of the
subclasses for the cases worth telling apart (``except NotFound:`` for an unknown model).
"""
from __future__ import annotations

import grpc


class RnnStreamError(Exception):
    """A call to the service failed. ``code`` is a :class:`grpc.StatusCode`."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgument(RnnStreamError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(RnnStreamError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(RnnStreamError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(RnnStreamError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unauthenticated(RnnStreamError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(RnnStreamError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(RnnStreamError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(RnnStreamError):
    """The server could not be reached, or went away (and retries, if any, ran out)."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(RnnStreamError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ChunkRefused(RnnStreamError):
    """The server refused one chunk of a stream (its ``error`` field was set).

    Nothing changed on the server and the stream stays open; ``seq`` is the refused chunk.
    """

    def __init__(self, message: str, code: grpc.StatusCode, seq: int):
        super().__init__(message, code)
        self.seq = seq

    def __str__(self) -> str:
        return f"{self.code.name}: chunk {self.seq} refused: {self.message}"


_BY_CODE = {
    cls.code: cls
    for cls in (InvalidArgument, NotFound, AlreadyExists, FailedPrecondition, Unauthenticated,
                PermissionDenied, ResourceExhausted, Unavailable, DeadlineExceeded)
}

# A stream session's retry policy, by the code that ended its call (the session's docstring
# says it for users). The call went away for a passing reason -- the server restarted or is
# draining (UNAVAILABLE; CANCELLED or DEADLINE_EXCEEDED from the server or a proxy, never from
# the session itself), a commit or lease was lost (ABORTED): reconnect and replay with
# exponential backoff and full jitter until ``Backoff.give_up_after_s``.
RECONNECT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                             grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED})
# A bug on one side or the other, not an outage: ``Backoff.quick_retries`` tries, then raised.
QUICK_RETRY_CODES = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})
# Anything else (INVALID_ARGUMENT, NOT_FOUND, UNAUTHENTICATED, RESOURCE_EXHAUSTED, ...) would
# fail again the same way: raised at once.

_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def status_code(number: int) -> grpc.StatusCode:
    """The :class:`grpc.StatusCode` of a numeric code (as in ``google.rpc.Status.code``)."""
    return _CODE_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


def error_of(code: grpc.StatusCode, message: str | None) -> RnnStreamError:
    """The SDK's exception for a gRPC status."""
    return _BY_CODE.get(code, RnnStreamError)(message or code.name.lower(), code)


def from_rpc_error(err: grpc.RpcError) -> RnnStreamError:
    """Translate a grpc error (sync or aio) into the SDK's exception of the same code."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    return error_of(code, err.details() if hasattr(err, "details") else None)
