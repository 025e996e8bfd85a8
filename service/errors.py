"""One exception type for every refusal; the servicer maps it to a gRPC status."""
from __future__ import annotations

import grpc
from google.rpc import status_pb2


class ServiceError(Exception):
    """A request the service refuses: ``code`` is a ``grpc.StatusCode``, the message says why."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def to_status(self) -> status_pb2.Status:
        """As a ``google.rpc.Status``, for the ``error`` field of a StreamResponse."""
        return status_pb2.Status(code=self.code.value[0], message=self.message)


def invalid(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, message)


def exhausted(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


def unavailable(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.UNAVAILABLE, message)
