"""Request ids: taken from the caller's x-request-id (if sane) or generated, echoed back in the
x-request-id trailer and in RequestInfo error details, and stamped on every log line."""

from __future__ import annotations

import re
import secrets

import grpc

from agentplane_server.context import request_id_var

HEADER = "x-request-id"
_ACCEPTABLE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def begin_request(metadata: dict[str, str], context: grpc.aio.ServicerContext) -> str:
    offered = metadata.get(HEADER, "")
    request_id = offered if _ACCEPTABLE.match(offered) else f"req_{secrets.token_hex(8)}"
    request_id_var.set(request_id)
    context.set_trailing_metadata(((HEADER, request_id),))
    return request_id
