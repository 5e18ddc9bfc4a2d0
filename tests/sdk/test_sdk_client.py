"""The SDK's client layer against a real server: connecting, configuration, typed errors with
their details, deadlines, retries (by idempotency, with backoff and RetryInfo), raw stubs,
client-side validation, null mode, and the freshness of the generated sub-clients."""

from __future__ import annotations

import importlib
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from serverproc import ServerProcess, free_port

import agentplane
from agentplane import (
    AgentplaneError,
    AlreadyExistsError,
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    RetryPolicy,
    RpcError,
    UnauthenticatedError,
    UnavailableError,
)
from agentplane._config import parse_target
from agentplane._services import SERVICE_CLIENTS
from agentplane._transport import _prepare
from agentplane.admin.v1 import admin_service_pb2, api_key_pb2
from agentplane.common.v1 import error_reason_pb2
from agentplane.contract import contract_services
from agentplane.session.v1 import session_pb2, session_service_pb2
from sdk.sdkutil import new_project, uid

ROOT = Path(__file__).resolve().parents[2]


# --- configuration -----------------------------------------------------------------------------


def test_connect_from_environment(server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("AGENTPLANE_URL", f"grpc://{server.address}")
    monkeypatch.setenv("AGENTPLANE_API_KEY", server.admin_key)
    with agentplane.Client.connect() as client:
        assert not client.is_null
        assert client.target == server.address
        info = client.server_info()
        assert info.principal.role == api_key_pb2.ROLE_ADMIN
        assert "agentplane.session.v1.SessionService" in info.services
        assert client.check_contract()
        assert info.contract_digest == agentplane.CONTRACT_DIGEST


def test_parse_target() -> None:
    assert parse_target("127.0.0.1:7000", None) == ("127.0.0.1:7000", None)
    assert parse_target("grpc://example.org", None) == ("example.org:50051", None)
    host, tls = parse_target("grpcs://example.org", None)
    assert host == "example.org:443" and tls is not None
    host, tls = parse_target("https://example.org:8443/", None)
    assert host == "example.org:8443" and tls is not None
    assert parse_target("[::1]:9000", False) == ("[::1]:9000", None)
    assert parse_target("grpcs://example.org:9", False)[1] is None  # explicit tls wins
    with pytest.raises(ValueError, match="scheme"):
        parse_target("ftp://example.org", None)


def test_null_mode_is_logged_and_sends_nothing(caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="agentplane")
    client = agentplane.Client.connect()
    assert client.is_null and client.channel is None and client.sessions.stub is None
    assert "null mode" in caplog.text
    assert client.sessions.create_session(title="x") == session_service_pb2.CreateSessionResponse()
    assert list(client.sessions.list_sessions()) == []
    assert list(client.sessions.watch_session(session_id="s")) == []
    assert client.check_contract()


async def test_null_mode_async() -> None:
    client = await agentplane.AsyncClient.connect()
    assert client.is_null
    response = await client.admin.get_server_info()
    assert response == admin_service_pb2.GetServerInfoResponse()
    assert [s async for s in client.sessions.list_sessions()] == []
    assert [m async for m in client.sessions.watch_session(session_id="s")] == []
    await client.close()


def test_with_options_acts_on_another_project(client) -> None:  # type: ignore[no-untyped-def]
    other = new_project(client)
    created = other.sessions.create_session(title="elsewhere").session
    assert created.project_id == other.config.project
    with pytest.raises(NotFoundError):
        client.sessions.get_session(session_id=created.session_id)
    assert other.sessions.get_session(session_id=created.session_id).session == created


# --- typed errors ------------------------------------------------------------------------------


def test_typed_errors_carry_parsed_details(client) -> None:  # type: ignore[no-untyped-def]
    missing = uid("missing")
    with pytest.raises(NotFoundError) as caught:
        client.sessions.get_session(session_id=missing, headers={"x-request-id": "req-sdk-1"})
    error = caught.value
    assert isinstance(error, RpcError) and isinstance(error, AgentplaneError)
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "ERROR_REASON_SESSION_NOT_FOUND"
    assert error.error_reason == error_reason_pb2.ERROR_REASON_SESSION_NOT_FOUND
    assert error.domain == "agentplane.dev"
    assert error.metadata == {"session_id": missing}
    assert error.request_id == "req-sdk-1"
    assert error.method == "/agentplane.session.v1.SessionService/GetSession"
    assert "ERROR_REASON_SESSION_NOT_FOUND" in str(error)

    with pytest.raises(InvalidArgumentError) as caught:
        client.sessions.create_session(session_id="-bad", labels={"Bad Key": "v"})
    violations = caught.value.violations_by_field
    assert "session_id" in violations
    assert any(field.startswith("labels") for field in violations)
    assert caught.value.reason == "ERROR_REASON_INVALID_REQUEST"

    session_id = uid()
    client.sessions.create_session(session_id=session_id)
    with pytest.raises(AlreadyExistsError) as caught:
        client.sessions.create_session(session_id=session_id)
    assert caught.value.reason == "ERROR_REASON_SESSION_ALREADY_EXISTS"

    with pytest.raises(UnauthenticatedError) as caught:
        client.with_options(api_key="ap_not_a_real_key").sessions.get_session(session_id="x")
    assert caught.value.reason == "ERROR_REASON_UNAUTHENTICATED"


async def test_typed_errors_async(aclient) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(NotFoundError) as caught:
        await aclient.sessions.get_session(session_id="nope-async")
    assert caught.value.metadata == {"session_id": "nope-async"}
    assert caught.value.request_id
    with pytest.raises(InvalidArgumentError) as caught:
        await aclient.sessions.append_messages(session_id="x", messages=[])
    assert "messages" in caught.value.violations_by_field
    with pytest.raises(NotFoundError):  # errors inside an async iterator are typed too
        [m async for m in aclient.sessions.list_messages(session_id="nope-async")]


def test_request_message_or_keywords(client) -> None:  # type: ignore[no-untyped-def]
    request = session_service_pb2.CreateSessionRequest(title="as a message")
    created = client.sessions.create_session(request).session
    assert created.title == "as a message"
    assert request.request_id == ""  # the caller's message is never changed
    with pytest.raises(TypeError, match="not both"):
        client.sessions.create_session(request, title="both")
    updated = client.sessions.update_session(
        session={"session_id": created.session_id, "title": "renamed"}, update_mask=["title"]
    ).session
    assert updated.title == "renamed"


# --- deadlines ---------------------------------------------------------------------------------


def test_deadlines(client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DeadlineExceededError):
        client.sessions.list_sessions_page(timeout=0.000001)
    session_id = client.sessions.create_session().session.session_id
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        for _ in client.sessions.watch_session(session_id=session_id, timeout=0.5):
            pass
    assert 0.4 < time.monotonic() - started < 5


async def test_deadlines_async(aclient) -> None:  # type: ignore[no-untyped-def]
    session_id = (await aclient.sessions.create_session()).session.session_id
    with pytest.raises(DeadlineExceededError):
        async for _ in aclient.sessions.watch_session(session_id=session_id, timeout=0.3):
            pass


# --- retries -----------------------------------------------------------------------------------


def test_retry_classification_follows_the_contract() -> None:
    policy = RetryPolicy()
    specs = {
        name: getattr(importlib.import_module("agentplane._services"), name)
        for name in (
            "_SESSION_SERVICE_GET_SESSION",
            "_SESSION_SERVICE_CREATE_SESSION",
            "_SESSION_SERVICE_UPDATE_SESSION",
            "_SESSION_SERVICE_DELETE_SESSION",
            "_ADMIN_SERVICE_CREATE_API_KEY",
        )
    }
    get = session_service_pb2.GetSessionRequest(session_id="s")
    assert _prepare(specs["_SESSION_SERVICE_GET_SESSION"], get, True, None, policy)[1] is policy
    delete = session_service_pb2.DeleteSessionRequest(session_id="s")
    assert _prepare(specs["_SESSION_SERVICE_DELETE_SESSION"], delete, True, None, policy)[1]
    update = session_service_pb2.UpdateSessionRequest()
    assert _prepare(specs["_SESSION_SERVICE_UPDATE_SESSION"], update, True, None, policy)[1] is None

    # A create becomes retryable by carrying a request_id, which the SDK fills in...
    create = session_service_pb2.CreateSessionRequest()
    sent, retry = _prepare(specs["_SESSION_SERVICE_CREATE_SESSION"], create, False, None, policy)
    assert retry is policy and sent.request_id and sent is not create and not create.request_id
    # ...unless told not to: then it is not retried at all.
    no_auto = RetryPolicy(auto_request_id=False)
    assert (
        _prepare(specs["_SESSION_SERVICE_CREATE_SESSION"], create, True, None, no_auto)[1] is None
    )
    given = session_service_pb2.CreateSessionRequest(request_id="mine")
    assert _prepare(specs["_SESSION_SERVICE_CREATE_SESSION"], given, True, None, no_auto)[1]
    # CreateApiKey's secret is in the first response only: never an automatic request_id.
    key = admin_service_pb2.CreateApiKeyRequest()
    sent, retry = _prepare(specs["_ADMIN_SERVICE_CREATE_API_KEY"], key, True, None, policy)
    assert retry is None and not sent.request_id
    assert _prepare(specs["_SESSION_SERVICE_GET_SESSION"], get, True, False, policy)[1] is None


def test_retries_until_the_server_is_back_but_not_for_unsafe_calls(tmp_path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    first = ServerProcess(None, data_dir=tmp_path, port=port)
    key = first.admin_key
    first.stop()
    retries: list[tuple[str, int]] = []
    policy = RetryPolicy(
        max_attempts=200,
        initial_backoff=0.05,
        max_backoff=0.3,
        on_retry=lambda error, attempt, delay: retries.append((error.code.name, attempt)),
    )
    client = agentplane.Client.connect(f"127.0.0.1:{port}", api_key=key, retry=policy, timeout=60)

    # Server down: a call that is not safe to repeat fails at once.
    unsafe = client.with_options(retry=RetryPolicy(auto_request_id=False, on_retry=policy.on_retry))
    with pytest.raises(UnavailableError):
        unsafe.sessions.create_session(title="not retried")
    assert retries == []

    restarted: list[ServerProcess] = []
    starter = threading.Thread(
        target=lambda: (time.sleep(1.0), restarted.append(ServerProcess(None, tmp_path, port=port)))
    )
    starter.start()
    try:
        info = client.server_info()  # NO_SIDE_EFFECTS: retried with backoff until it answers
        created = client.sessions.create_session(title="after restart")  # has a request_id
        assert info.principal.role == api_key_pb2.ROLE_ADMIN
        assert created.session.title == "after restart"
        assert len(retries) >= 2 and {code for code, _ in retries} == {"UNAVAILABLE"}
    finally:
        starter.join()
        for process in restarted:
            process.stop()
        client.close()


def test_rate_limit_is_retried_after_retry_info(client, server) -> None:  # type: ignore[no-untyped-def]
    key = client.admin.create_api_key(
        role=api_key_pb2.ROLE_READER, requests_per_second=1, display_name="slow"
    ).key
    waits: list[float] = []
    limited = agentplane.Client.connect(
        server.address,
        api_key=key,
        retry=RetryPolicy(on_retry=lambda error, attempt, delay: waits.append(delay)),
    )
    limited.server_info()
    with pytest.raises(ResourceExhaustedError) as caught:
        limited.admin.get_server_info(retry=False)
    assert caught.value.reason == "ERROR_REASON_RATE_LIMITED"
    assert caught.value.retry_delay is not None and caught.value.retry_delay.total_seconds() > 0
    started = time.monotonic()
    assert limited.server_info().principal.role == api_key_pb2.ROLE_READER
    assert waits and time.monotonic() - started >= min(waits) * 0.9
    limited.close()


# --- raw stubs, validation, generated code -------------------------------------------------------


def test_raw_stubs_are_reachable(client, server) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(client.channel, grpc.Channel)
    created = client.sessions.create_session(title="raw").session
    reply = client.sessions.stub.GetSession(
        session_service_pb2.GetSessionRequest(session_id=created.session_id),
        metadata=server.metadata(),
    )
    assert reply.session.title == "raw"


def test_client_side_validation(server) -> None:  # type: ignore[no-untyped-def]
    with agentplane.Client.connect(server.address, api_key=server.admin_key, validate=True) as c:
        with pytest.raises(InvalidArgumentError) as caught:
            c.sessions.append_messages(
                session_id="s", messages=[{"role": session_pb2.ROLE_USER, "trace_id": "XYZ"}]
            )
        assert "checked before sending" in caught.value.message
        assert "messages[0].trace_id" in caught.value.violations_by_field
        assert not caught.value.request_id  # the server never saw it
        assert c.sessions.create_session(title="valid").session.title == "valid"


def test_every_rpc_has_sync_and_async_methods() -> None:
    clients = {sync.service_name: (sync, async_) for _, sync, async_ in SERVICE_CLIENTS}
    assert set(clients) == {s.full_name for s in contract_services()}
    for service in contract_services():
        sync_class, async_class = clients[service.full_name]
        for method in service.descriptor.methods:
            name = "".join(f"_{c.lower()}" if c.isupper() else c for c in method.name)[1:]
            assert hasattr(sync_class, name) and hasattr(async_class, name), method.full_name
            if "page_token" in method.input_type.fields_by_name:
                assert hasattr(sync_class, f"{name}_page"), method.full_name


def test_generated_sub_clients_are_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "sdk-python/scripts/gen_services.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
