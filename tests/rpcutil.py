"""Helpers to read the rich error details the server sends."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass
class RichError:
    code: grpc.StatusCode
    message: str
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: dict[str, str] = field(default_factory=dict)
    retry_delay: float | None = None
    request_id: str = ""


def rich_error(error: grpc.RpcError) -> RichError:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    result = RichError(code=error.code(), message=error.details() or "")  # type: ignore[attr-defined]
    if status is None:
        return result
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            result.reason, result.metadata = info.reason, dict(info.metadata)
            assert info.domain == "agentplane.dev"
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            result.field_violations = {v.field: v.description for v in bad.field_violations}
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            result.retry_delay = retry.retry_delay.ToTimedelta().total_seconds()
        elif detail.Is(error_details_pb2.RequestInfo.DESCRIPTOR):
            info = error_details_pb2.RequestInfo()
            detail.Unpack(info)
            result.request_id = info.request_id
    return result


def expect_error(code: grpc.StatusCode, call, *args, **kwargs) -> RichError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    error = rich_error(caught.value)
    assert error.code == code, f"expected {code}, got {error.code}: {error.message}"
    return error
