"""Typed errors: one class per gRPC status family, with the server's rich details parsed.

Agentplane sends every error as a ``google.rpc.Status`` in the ``grpc-status-details-bin``
trailer: an ``ErrorInfo`` whose ``reason`` is a name from ``agentplane.common.v1.ErrorReason``,
plus ``BadRequest`` field violations, ``RetryInfo`` and ``RequestInfo`` where they apply. We
parse that trailer ourselves (a few lines) instead of depending on grpcio-status, so the SDK
needs only grpcio, protobuf and googleapis-common-protos.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from agentplane.common.v1 import error_reason_pb2

ERROR_DOMAIN = "agentplane.dev"
_DETAILS_KEY = "grpc-status-details-bin"


class AgentplaneError(Exception):
    """The base of every exception the SDK raises on purpose."""


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request (``google.rpc.BadRequest.FieldViolation``)."""

    field: str
    description: str
    reason: str = ""


class RpcError(AgentplaneError):
    """A call failed with a gRPC status. Subclasses name the status family.

    Switch on ``reason`` (an ``ErrorReason`` name such as ``"ERROR_REASON_SESSION_NOT_FOUND"``),
    not on the message. ``request_id`` finds the server's log line for the call.
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[FieldViolation] = (),
        retry_delay: datetime.timedelta | None = None,
        request_id: str = "",
        details: Sequence[Any] = (),
        method: str = "",
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})
        self.field_violations: list[FieldViolation] = list(field_violations)
        self.retry_delay = retry_delay
        self.request_id = request_id
        self.details: list[Any] = list(details)
        self.method = method

    @property
    def error_reason(self) -> int:
        """``reason`` as an ``agentplane.common.v1.ErrorReason`` value (0 when unknown)."""
        try:
            return error_reason_pb2.ErrorReason.Value(self.reason)
        except ValueError:
            return error_reason_pb2.ERROR_REASON_UNSPECIFIED

    @property
    def violations_by_field(self) -> dict[str, str]:
        return {v.field: v.description for v in self.field_violations}

    def __str__(self) -> str:
        parts = [f"{self.code.name}: {self.message}"]
        if self.reason:
            parts.append(f"reason={self.reason}")
        if self.field_violations:
            parts.append(
                "fields=" + ", ".join(f"{v.field} ({v.description})" for v in self.field_violations)
            )
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        if self.method:
            parts.append(f"method={self.method}")
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self!s})"


class CancelledError(RpcError):
    code = grpc.StatusCode.CANCELLED


class UnknownError(RpcError):
    code = grpc.StatusCode.UNKNOWN


class InvalidArgumentError(RpcError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceededError(RpcError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFoundError(RpcError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(RpcError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDeniedError(RpcError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhaustedError(RpcError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPreconditionError(RpcError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class AbortedError(RpcError):
    code = grpc.StatusCode.ABORTED


class OutOfRangeError(RpcError):
    code = grpc.StatusCode.OUT_OF_RANGE


class UnimplementedError(RpcError):
    code = grpc.StatusCode.UNIMPLEMENTED


class InternalError(RpcError):
    code = grpc.StatusCode.INTERNAL


class UnavailableError(RpcError):
    code = grpc.StatusCode.UNAVAILABLE


class DataLossError(RpcError):
    code = grpc.StatusCode.DATA_LOSS


class UnauthenticatedError(RpcError):
    code = grpc.StatusCode.UNAUTHENTICATED


ERROR_CLASSES: dict[grpc.StatusCode, type[RpcError]] = {
    cls.code: cls
    for cls in (
        CancelledError,
        UnknownError,
        InvalidArgumentError,
        DeadlineExceededError,
        NotFoundError,
        AlreadyExistsError,
        PermissionDeniedError,
        ResourceExhaustedError,
        FailedPreconditionError,
        AbortedError,
        OutOfRangeError,
        UnimplementedError,
        InternalError,
        UnavailableError,
        DataLossError,
        UnauthenticatedError,
    )
}


def _status_from_trailers(error: grpc.RpcError) -> status_pb2.Status | None:
    try:
        trailers = error.trailing_metadata()  # type: ignore[attr-defined]
    except Exception:
        return None
    for key, value in trailers or ():
        if key == _DETAILS_KEY:
            try:
                return status_pb2.Status.FromString(value)
            except Exception:
                return None
    return None


def from_grpc_error(error: grpc.RpcError, method: str = "") -> RpcError:
    """The typed error for a ``grpc.RpcError`` (sync or ``grpc.aio.AioRpcError``)."""
    code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
    message: str = error.details() or ""  # type: ignore[attr-defined]
    kwargs: dict[str, Any] = {}
    status = _status_from_trailers(error)
    details: list[Any] = []
    if status is not None:
        for packed in status.details:
            if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                packed.Unpack(info)
                kwargs.update(reason=info.reason, domain=info.domain, metadata=info.metadata)
                details.append(info)
            elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                packed.Unpack(bad)
                kwargs["field_violations"] = [
                    FieldViolation(v.field, v.description, v.reason) for v in bad.field_violations
                ]
                details.append(bad)
            elif packed.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                packed.Unpack(retry)
                kwargs["retry_delay"] = retry.retry_delay.ToTimedelta()
                details.append(retry)
            elif packed.Is(error_details_pb2.RequestInfo.DESCRIPTOR):
                request = error_details_pb2.RequestInfo()
                packed.Unpack(request)
                kwargs["request_id"] = request.request_id
                details.append(request)
            else:
                details.append(packed)
    cls = ERROR_CLASSES.get(code, RpcError)
    result = cls(message, code=code, details=details, method=method, **kwargs)
    result.__cause__ = error if isinstance(error, BaseException) else None
    return result


# --- governance helpers --------------------------------------------------------------------


class GovernanceError(AgentplaneError):
    """A governed action did not go ahead."""

    def __init__(self, message: str, *, action: str = "", decision: Any = None) -> None:
        super().__init__(message)
        self.action = action
        self.decision = decision


class ActionDenied(GovernanceError):
    """CheckPermission (or the local policy snapshot) answered DENY."""


class ApprovalRequired(GovernanceError):
    """The action needs a reviewer's approval: wait for ``approval_id`` and check again."""

    @property
    def approval_id(self) -> str:
        return getattr(self.decision, "approval_id", "")


class OutputRejected(GovernanceError):
    """ValidateOutput answered REJECT (or FLAG_FOR_REVIEW while flagged outputs are refused)."""

    def __init__(self, message: str, *, action: str = "", validation: Any = None) -> None:
        super().__init__(message, action=action)
        self.validation = validation


class GovernanceUnavailable(GovernanceError):
    """Agentplane could not be asked in time, so the action failed closed.

    ``__cause__`` is the underlying ``RpcError`` (UNAVAILABLE or DEADLINE_EXCEEDED). Pass
    ``fail_open=True`` to ``governed``/``Governor`` to allow actions in that case instead.
    """


class NullModeError(AgentplaneError):
    """Raised for a call that has no sensible no-op result in null mode."""
