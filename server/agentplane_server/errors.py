"""Domain errors and their one mapping to gRPC status codes with google.rpc error details.

Logic raises these; the error interceptor turns them into a google.rpc.Status with an
ErrorInfo (reason from agentplane.common.v1.ErrorReason), plus BadRequest field violations,
RetryInfo and RequestInfo where they apply.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from agentplane.common.v1.error_reason_pb2 import ErrorReason

ERROR_DOMAIN = "agentplane.dev"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str
    reason: str = ""


class ApiError(Exception):
    """An error the caller should see with a canonical code and a machine-readable reason."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    default_reason: int = ErrorReason.ERROR_REASON_INTERNAL

    def __init__(
        self,
        message: str,
        *,
        reason: int | None = None,
        metadata: Mapping[str, str] | None = None,
        field_violations: Iterable[FieldViolation] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = self.default_reason if reason is None else reason
        self.metadata = dict(metadata or {})
        self.field_violations = list(field_violations)
        self.retry_after = retry_after

    def to_status(self, request_id: str = "") -> grpc.Status:
        details = [
            error_details_pb2.ErrorInfo(
                reason=ErrorReason.Name(self.reason),
                domain=ERROR_DOMAIN,
                metadata=self.metadata,
            )
        ]
        if self.field_violations:
            details.append(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description, reason=v.reason
                        )
                        for v in self.field_violations
                    ]
                )
            )
        if self.retry_after is not None:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(self.retry_after * 1e9))
            details.append(error_details_pb2.RetryInfo(retry_delay=delay))
        if request_id:
            details.append(error_details_pb2.RequestInfo(request_id=request_id))
        packed = []
        for detail in details:
            holder = any_pb2.Any()
            holder.Pack(detail)
            packed.append(holder)
        status = rpc_status.to_status(
            status_pb2.Status(
                code=getattr(code_pb2, self.code.name), message=self.message, details=packed
            )
        )
        if self.retry_after is None:
            return status
        # OpenTelemetry's OTLP exporters read the retry delay from this trailer, not from the
        # status details.
        retry = next(d for d in details if isinstance(d, error_details_pb2.RetryInfo))
        return _Status(
            status.code,
            status.details,
            (*status.trailing_metadata, ("google.rpc.retryinfo-bin", retry.SerializeToString())),
        )


@dataclass(frozen=True)
class _Status(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple


class InvalidArgument(ApiError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = ErrorReason.ERROR_REASON_INVALID_REQUEST

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        return cls(
            f"invalid {field}: {description}",
            field_violations=[FieldViolation(field, description)],
        )


class NotFound(ApiError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = ErrorReason.ERROR_REASON_RESOURCE_NOT_FOUND


class AlreadyExists(ApiError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = ErrorReason.ERROR_REASON_RESOURCE_ALREADY_EXISTS


class Aborted(ApiError):
    code = grpc.StatusCode.ABORTED
    default_reason = ErrorReason.ERROR_REASON_ETAG_MISMATCH


class FailedPrecondition(ApiError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class OutOfRange(ApiError):
    code = grpc.StatusCode.OUT_OF_RANGE


class Unauthenticated(ApiError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = ErrorReason.ERROR_REASON_UNAUTHENTICATED


class PermissionDenied(ApiError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = ErrorReason.ERROR_REASON_PERMISSION_DENIED


class ResourceExhausted(ApiError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = ErrorReason.ERROR_REASON_RATE_LIMITED


class Unavailable(ApiError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = ErrorReason.ERROR_REASON_STORAGE_UNAVAILABLE


class Unimplemented(ApiError):
    code = grpc.StatusCode.UNIMPLEMENTED
    default_reason = ErrorReason.ERROR_REASON_NOT_IMPLEMENTED


class Internal(ApiError):
    code = grpc.StatusCode.INTERNAL
    default_reason = ErrorReason.ERROR_REASON_INTERNAL


def etag_mismatch(resource_type: str, resource_id: str) -> Aborted:
    return Aborted(
        f"{resource_type} {resource_id!r} was changed since the etag was read; read it again",
        metadata={"resource_type": resource_type, "resource_id": resource_id},
    )


def request_id_conflict(request_id: str) -> AlreadyExists:
    return AlreadyExists(
        f"request_id {request_id!r} was already used for a different request",
        reason=ErrorReason.ERROR_REASON_REQUEST_ID_CONFLICT,
        metadata={"request_id": request_id},
    )
