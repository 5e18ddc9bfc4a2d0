"""The HTTP listener (Connect protocol, gRPC-Web) of a real server: the same methods as the gRPC
listener, the same errors with their google.rpc details, streams, CORS and bad input.

Raw requests go through http.client, as curl or a proxy would send them; typed calls through
connectrpc's client. The conformance scenarios over every transport are in test_conformance.py.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import struct
import threading
import time
import uuid
from typing import Any

import grpc
import pytest
from connectrpc.client import ConnectClientSync
from connectrpc.compat import google_protobuf_json_codec
from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
from google.protobuf import descriptor_pool
from google.rpc import error_details_pb2, status_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from rpcutil import expect_error
from serverproc import ServerProcess

from agentplane.session.v1 import session_pb2
from agentplane.session.v1 import session_service_pb2 as pb
from agentplane.session.v1 import session_service_pb2_grpc as rpc

SESSIONS = "/agentplane.session.v1.SessionService"
REFLECTION = ("grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection")


def uid(prefix: str = "h") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def post(
    server: ServerProcess,
    path: str,
    body: bytes,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(server.http_address, timeout=30)
    try:
        all_headers = {"content-type": content_type, **(headers or {})}
        connection.request(method, path, body=body, headers=all_headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def status_of(server: ServerProcess, path: str, body: bytes, content_type: str) -> int:
    """The HTTP status alone (a stream such as health Watch does not end by itself)."""
    connection = http.client.HTTPConnection(server.http_address, timeout=30)
    try:
        connection.request("POST", path, body=body, headers={"content-type": content_type})
        return connection.getresponse().status
    finally:
        connection.close()


def auth(server: ServerProcess) -> dict[str, str]:
    return {"authorization": f"Bearer {server.admin_key}"}


def envelope(payload: bytes, flags: int = 0) -> bytes:
    return struct.pack(">BI", flags, len(payload)) + payload


def envelopes(body: bytes) -> list[tuple[int, bytes]]:
    found, offset = [], 0
    while offset < len(body):
        flags, size = struct.unpack(">BI", body[offset : offset + 5])
        found.append((flags, body[offset + 5 : offset + 5 + size]))
        offset += 5 + size
    return found


def session_exists(server: ServerProcess, session_id: str) -> bool:
    stub = rpc.SessionServiceStub(server.channel())
    try:
        stub.GetSession(pb.GetSessionRequest(session_id=session_id), metadata=server.metadata())
        return True
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.NOT_FOUND
        return False


def assert_no_traceback(server: ServerProcess) -> None:
    logs = server.logs()
    assert "Traceback" not in logs, logs[-4000:]


# --- the same methods ----------------------------------------------------------------------------


def test_both_listeners_serve_exactly_the_same_methods(server: ServerProcess) -> None:
    database = ProtoReflectionDescriptorDatabase(server.channel())
    pool = descriptor_pool.DescriptorPool(database)
    grpc_methods = {
        f"/{name}/{method.name}": method
        for name in database.get_services()
        for method in pool.FindServiceByName(name).methods
    }
    assert f"{SESSIONS}/GetSession" in grpc_methods

    served, not_served = set(), set()
    for path, method in grpc_methods.items():
        if method.server_streaming or method.client_streaming:
            status = status_of(server, path, envelope(b"{}"), "application/connect+json")
        else:
            status = status_of(server, path, b"{}", "application/json")
        assert status < 500 or status == 501, f"{path}: HTTP {status}"  # 501: unimplemented
        (not_served if status == 404 else served).add(path)
    # Reflection is a bidirectional stream for gRPC tooling (grpcurl): the one exception.
    assert not_served == {p for p in grpc_methods if p.split("/")[1] in REFLECTION}
    assert served == {p for p in grpc_methods if p.split("/")[1] not in REFLECTION}
    assert len(served) > 60

    # A method neither listener has: 404 here, UNIMPLEMENTED there.
    assert post(server, f"{SESSIONS}/Teleport", b"{}")[0] == 404
    with pytest.raises(grpc.RpcError) as caught:
        server.channel().unary_unary(f"{SESSIONS}/Teleport")(b"", metadata=server.metadata())
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


# --- errors --------------------------------------------------------------------------------------


def _connect_details(body: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for detail in body.get("details", ()):
        raw = base64.b64decode(detail["value"] + "==")
        kind = detail["type"]
        if kind == "google.rpc.ErrorInfo":
            found["info"] = error_details_pb2.ErrorInfo.FromString(raw)
        elif kind == "google.rpc.BadRequest":
            found["bad"] = error_details_pb2.BadRequest.FromString(raw)
        elif kind == "google.rpc.RequestInfo":
            found["request"] = error_details_pb2.RequestInfo.FromString(raw)
    return found


def test_errors_carry_the_same_google_rpc_details_as_grpc(server: ServerProcess) -> None:
    request = {"sessionId": "has space"}
    status, headers, body = post(
        server, f"{SESSIONS}/CreateSession", json.dumps(request).encode(), headers=auth(server)
    )
    assert status == 400
    error = json.loads(body)
    assert error["code"] == "invalid_argument"
    details = _connect_details(error)
    assert details["info"].reason == "ERROR_REASON_INVALID_REQUEST"
    assert details["info"].domain == "agentplane.dev"
    assert [v.field for v in details["bad"].field_violations] == ["session_id"]
    assert details["request"].request_id == headers["trailer-x-request-id"]

    over_grpc = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        rpc.SessionServiceStub(server.channel()).CreateSession,
        pb.CreateSessionRequest(session_id="has space"),
        metadata=server.metadata(),
    )
    assert over_grpc.message == error["message"]
    assert over_grpc.reason == details["info"].reason
    assert set(over_grpc.field_violations) == {"session_id"}

    # Without credentials: UNAUTHENTICATED (401), with the reason, as on gRPC.
    status, _, body = post(server, f"{SESSIONS}/GetSession", b'{"sessionId": "x"}')
    assert status == 401
    unauthenticated = json.loads(body)
    assert unauthenticated["code"] == "unauthenticated"
    assert _connect_details(unauthenticated)["info"].reason == "ERROR_REASON_UNAUTHENTICATED"


def test_request_id_and_project_headers_reach_the_pipeline(server: ServerProcess) -> None:
    session_id = uid()
    status, headers, body = post(
        server,
        f"{SESSIONS}/CreateSession",
        json.dumps({"sessionId": session_id}).encode(),
        headers={**auth(server), "x-request-id": "trace-me-42"},
    )
    assert status == 200, body
    assert headers["trailer-x-request-id"] == "trace-me-42"
    assert json.loads(body)["session"]["projectId"] == "default"
    # A read-only method also answers GET (Connect's cacheable form), as curl sends it.
    query = f"encoding=json&message={json.dumps({'sessionId': session_id})}"
    status, _, body = post(
        server,
        f"{SESSIONS}/GetSession?{query.replace(' ', '')}",
        b"",
        headers=auth(server),
        method="GET",
    )
    assert status == 200 and json.loads(body)["session"]["sessionId"] == session_id
    # A project that does not exist: NOT_FOUND from the same authenticator.
    status, _, body = post(
        server,
        f"{SESSIONS}/GetSession",
        json.dumps({"sessionId": session_id}).encode(),
        headers={**auth(server), "x-agentplane-project": "no-such-project"},
    )
    assert status == 404 and json.loads(body)["code"] == "not_found"


# --- streams -------------------------------------------------------------------------------------


def _watch_method() -> MethodInfo:
    return MethodInfo(
        name="WatchSession",
        service_name="agentplane.session.v1.SessionService",
        input=pb.WatchSessionRequest,
        output=pb.WatchSessionResponse,
        idempotency_level=IdempotencyLevel.NO_SIDE_EFFECTS,
        stream_type=StreamType.SERVER_STREAM,
    )


def test_watch_session_over_connect_follows_appends_live(server: ServerProcess) -> None:
    stub = rpc.SessionServiceStub(server.channel())
    md = server.metadata()
    session_id = stub.CreateSession(pb.CreateSessionRequest(), metadata=md).session.session_id
    client = ConnectClientSync(server.http_url, codec=google_protobuf_json_codec())
    received: list[pb.WatchSessionResponse] = []
    first = threading.Event()
    done = threading.Event()

    def follow() -> None:
        stream = client.execute_server_stream(
            request=pb.WatchSessionRequest(session_id=session_id),
            method=_watch_method(),
            headers=auth(server),
            timeout_ms=20_000,
        )
        for response in stream:
            received.append(response)
            first.set()
            if len(received) == 3:
                break
        done.set()

    def append(text: str) -> None:
        message = pb.MessageInput(role=session_pb2.ROLE_USER, content=text)
        stub.AppendMessages(
            pb.AppendMessagesRequest(session_id=session_id, messages=[message]), metadata=md
        )

    append("before")
    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    assert first.wait(10), "no message from the watch"
    append("live-1")
    append("live-2")
    assert done.wait(10), f"only {len(received)} message(s) arrived"
    assert [(r.message.sequence, r.message.content) for r in received] == [
        (1, "before"),
        (2, "live-1"),
        (3, "live-2"),
    ]


def test_stream_errors_end_the_stream_with_details(server: ServerProcess) -> None:
    payload = json.dumps({"sessionId": uid("missing")}).encode()
    status, _, body = post(
        server,
        f"{SESSIONS}/WatchSession",
        envelope(payload),
        "application/connect+json",
        headers=auth(server),
    )
    assert status == 200  # Connect streams report errors in the end-of-stream message
    (flags, end), *_ = envelopes(body)
    assert flags == 2
    error = json.loads(end)["error"]
    assert error["code"] == "not_found"
    assert _connect_details(error)["info"].reason == "ERROR_REASON_SESSION_NOT_FOUND"


def test_grpc_web_carries_status_and_details_in_the_trailer_frame(server: ServerProcess) -> None:
    request = pb.CreateSessionRequest(session_id="has space").SerializeToString()
    status, _, body = post(
        server,
        f"{SESSIONS}/CreateSession",
        envelope(request),
        "application/grpc-web+proto",
        headers=auth(server),
    )
    assert status == 200
    (flags, trailer), *_ = envelopes(body)
    assert flags == 0x80
    fields = dict(
        line.split(":", 1) for line in trailer.decode().strip().split("\r\n") if ":" in line
    )
    assert fields["grpc-status"].strip() == str(grpc.StatusCode.INVALID_ARGUMENT.value[0])
    details = status_pb2.Status.FromString(
        base64.b64decode(fields["grpc-status-details-bin"].strip() + "==")
    )
    assert any(d.Is(error_details_pb2.BadRequest.DESCRIPTOR) for d in details.details)


# --- bad input -----------------------------------------------------------------------------------


def test_malformed_json_is_invalid_argument_and_stores_nothing(server: ServerProcess) -> None:
    session_id = uid()
    for body in (
        b'{"sessionId": "' + session_id.encode() + b'"',  # cut short
        b'{"sessionId": "' + session_id.encode() + b'", "title": 5, "labels": []}',  # wrong types
        b"\xff\xfe not json",
    ):
        status, headers, answer = post(
            server, f"{SESSIONS}/CreateSession", body, headers=auth(server)
        )
        assert status == 400, answer
        assert headers["content-type"] == "application/json"
        assert json.loads(answer)["code"] == "invalid_argument"
    assert not session_exists(server, session_id)
    assert_no_traceback(server)


def test_wrong_content_type_unknown_method_and_verb_get_http_errors(server: ServerProcess) -> None:
    session_id = uid()
    body = json.dumps({"sessionId": session_id}).encode()
    for content_type in ("text/plain", "application/xml", ""):
        status, headers, _ = post(
            server, f"{SESSIONS}/CreateSession", body, content_type, auth(server)
        )
        assert status == 415
        assert "application/json" in headers["accept-post"]
    assert post(server, f"{SESSIONS}/CreateSessions", body, headers=auth(server))[0] == 404
    assert post(server, "/", body, headers=auth(server))[0] == 404
    # A method that changes data does not answer GET.
    status, headers, _ = post(
        server, f"{SESSIONS}/CreateSession?message={{}}&encoding=json", b"", method="GET"
    )
    assert status == 405 and headers["allow"] == "POST"
    assert not session_exists(server, session_id)
    assert_no_traceback(server)


def test_an_oversize_body_is_refused_and_stores_nothing(server: ServerProcess) -> None:
    session_id = uid()
    title = "x" * (9 * 1024 * 1024)  # over the default 8 MiB --max-message-bytes
    body = json.dumps({"sessionId": session_id, "title": title}).encode()
    status, _, answer = post(server, f"{SESSIONS}/CreateSession", body, headers=auth(server))
    assert status == 429
    assert json.loads(answer)["code"] == "resource_exhausted"
    assert not session_exists(server, session_id)
    assert_no_traceback(server)


def test_a_request_cut_midway_stores_nothing(server: ServerProcess) -> None:
    session_id = uid()
    body = json.dumps({"sessionId": session_id, "title": "cut"}).encode()
    # The HTTP body announced in full, half of it sent, then the connection closed.
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as raw:
        head = (
            f"POST {SESSIONS}/CreateSession HTTP/1.1\r\nhost: x\r\n"
            f"content-type: application/json\r\nauthorization: Bearer {server.admin_key}\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        )
        raw.sendall(head.encode() + body[: len(body) // 2])
    # A stream request whose envelope announces more bytes than the body holds.
    payload = json.dumps({"sessionId": session_id}).encode()
    status, _, answer = post(
        server,
        f"{SESSIONS}/WatchSession",
        struct.pack(">BI", 0, len(payload) + 100) + payload,
        "application/connect+json",
        headers=auth(server),
    )
    assert status == 200
    (flags, end), *_ = envelopes(answer)
    assert flags == 2 and json.loads(end)["error"]["code"] == "invalid_argument"
    time.sleep(0.3)
    assert not session_exists(server, session_id)
    assert_no_traceback(server)


def test_a_watch_cut_by_the_client_is_cancelled_cleanly(server: ServerProcess) -> None:
    stub = rpc.SessionServiceStub(server.channel())
    md = server.metadata()
    session_id = stub.CreateSession(pb.CreateSessionRequest(), metadata=md).session.session_id
    stub.AppendMessages(
        pb.AppendMessagesRequest(
            session_id=session_id,
            messages=[pb.MessageInput(role=session_pb2.ROLE_USER, content="hi")],
        ),
        metadata=md,
    )
    payload = envelope(json.dumps({"sessionId": session_id}).encode())
    request_id = uid("cut")
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as raw:
        head = (
            f"POST {SESSIONS}/WatchSession HTTP/1.1\r\nhost: x\r\nx-request-id: {request_id}\r\n"
            f"content-type: application/connect+json\r\n"
            f"authorization: Bearer {server.admin_key}\r\ncontent-length: {len(payload)}\r\n\r\n"
        )
        raw.sendall(head.encode() + payload)
        seen = b""
        while b'"hi"' not in seen:  # the first message arrived; then hang up
            chunk = raw.recv(65536)
            assert chunk, f"the stream ended early: {seen!r}"
            seen += chunk
    deadline = time.monotonic() + 10
    while request_id not in server.logs() and time.monotonic() < deadline:
        time.sleep(0.1)
    line = next(x for x in server.logs().splitlines() if request_id in x)
    assert '"method": "WatchSession"' in line
    assert '"code": "CANCELLED"' in line
    assert session_exists(server, session_id)  # still serving
    assert_no_traceback(server)


# --- CORS ----------------------------------------------------------------------------------------


def _preflight(server: ServerProcess, origin: str) -> tuple[int, dict[str, str]]:
    status, headers, _ = post(
        server,
        f"{SESSIONS}/GetSession",
        b"",
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,connect-protocol-version,authorization",
        },
        method="OPTIONS",
    )
    return status, headers


def test_cors_is_closed_by_default(server: ServerProcess) -> None:
    status, headers = _preflight(server, "http://localhost:3000")
    assert status == 400
    assert "access-control-allow-origin" not in headers


def test_cors_allows_configured_origins_only(make_server) -> None:  # type: ignore[no-untyped-def]
    allowed = "http://console.example:5173"
    server = make_server(extra_args=("--http-cors-origins", f"{allowed}, https://other.example"))
    status, headers = _preflight(server, allowed)
    assert status == 200
    assert headers["access-control-allow-origin"] == allowed
    allow_headers = headers["access-control-allow-headers"].lower()
    for needed in ("connect-protocol-version", "authorization", "x-grpc-web", "content-type"):
        assert needed in allow_headers

    status, headers = _preflight(server, "http://evil.example")
    assert status == 400 and "access-control-allow-origin" not in headers

    status, headers, _ = post(
        server, f"{SESSIONS}/GetSession", b'{"sessionId": "x"}', headers={"origin": allowed}
    )
    assert status == 401  # CORS lets the browser read it; the credentials are still required
    assert headers["access-control-allow-origin"] == allowed
    exposed = headers["access-control-expose-headers"].lower()
    for needed in ("grpc-status", "grpc-message", "grpc-status-details-bin", "x-request-id"):
        assert needed in exposed


def test_http_listener_can_be_turned_off(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(extra_args=("--http-listen", ""))
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.http_port), timeout=2).close()
    assert session_exists(server, "nothing") is False  # gRPC still serves


# --- drain ---------------------------------------------------------------------------------------


def test_sigterm_ends_http_streams_cleanly_and_exits(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server()
    stub = rpc.SessionServiceStub(server.channel())
    md = server.metadata()
    session_id = stub.CreateSession(pb.CreateSessionRequest(), metadata=md).session.session_id
    stub.AppendMessages(
        pb.AppendMessagesRequest(
            session_id=session_id,
            messages=[pb.MessageInput(role=session_pb2.ROLE_USER, content="hi")],
        ),
        metadata=md,
    )
    connection = http.client.HTTPConnection(server.http_address, timeout=30)
    connection.request(
        "POST",
        f"{SESSIONS}/WatchSession",
        body=envelope(json.dumps({"sessionId": session_id}).encode()),
        headers={"content-type": "application/connect+json", **auth(server)},
    )
    response = connection.getresponse()
    assert response.status == 200
    flags, size = struct.unpack(">BI", response.read(5))
    assert flags == 0 and json.loads(response.read(size))["message"]["content"] == "hi"

    server.send_signal()  # SIGTERM: the watch returns, so the client can resume elsewhere
    rest = envelopes(response.read())
    connection.close()
    assert [flags for flags, _ in rest] == [2]
    assert "error" not in json.loads(rest[0][1])
    assert server.process.wait(30) == 0
    assert_no_traceback(server)
