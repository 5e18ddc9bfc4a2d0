"""Tenancy and access control against a real server, on SQLite and PostgreSQL: projects, keys,
roles, isolation, rate limits, audit, and secrets that never leak."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from rpcutil import expect_error

from agentplane.admin.v1 import admin_service_pb2 as admin_pb
from agentplane.admin.v1 import admin_service_pb2_grpc as admin_rpc
from agentplane.admin.v1 import api_key_pb2, project_pb2
from agentplane.session.v1 import session_pb2
from agentplane.session.v1 import session_service_pb2 as pb
from agentplane.session.v1 import session_service_pb2_grpc as rpc


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class World:
    """Two projects with one key of every role, made through the AdminService."""

    def __init__(self, server) -> None:  # type: ignore[no-untyped-def]
        self.server = server
        channel = server.channel()
        self.admin = admin_rpc.AdminServiceStub(channel)
        self.sessions = rpc.SessionServiceStub(channel)
        self.secrets: list[str] = []
        self.project_a, self.project_b = uid("team-a"), uid("team-b")
        for project in (self.project_a, self.project_b):
            self.admin.CreateProject(
                admin_pb.CreateProjectRequest(project_id=project, display_name=project),
                metadata=server.metadata(),
            )
        self.a_admin = self.key(self.project_a, api_key_pb2.ROLE_PROJECT_ADMIN)
        self.a_agent = self.key(self.project_a, api_key_pb2.ROLE_AGENT, agent_id="billing")
        self.a_reader = self.key(self.project_a, api_key_pb2.ROLE_READER)
        self.b_agent = self.key(self.project_b, api_key_pb2.ROLE_AGENT, agent_id="billing")

    def key(self, project: str, role: int, **fields) -> str:  # type: ignore[no-untyped-def]
        created = self.admin.CreateApiKey(
            admin_pb.CreateApiKeyRequest(role=role, display_name=uid("key"), **fields),
            metadata=self.server.metadata(**{"x-agentplane-project": project}),
        )
        self.secrets.append(created.key)
        return created.key

    def md(self, key: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {key}"),)


@pytest.fixture(scope="module")
def world(server) -> World:  # type: ignore[no-untyped-def]
    return World(server)


def test_created_keys_work_and_are_listed_without_secrets(world: World) -> None:
    listed = world.admin.ListApiKeys(
        admin_pb.ListApiKeysRequest(), metadata=world.md(world.a_admin)
    )
    assert {k.role for k in listed.api_keys} == {
        api_key_pb2.ROLE_PROJECT_ADMIN,
        api_key_pb2.ROLE_AGENT,
        api_key_pb2.ROLE_READER,
    }
    assert all(k.project_id == world.project_a for k in listed.api_keys)
    text = str(listed)
    assert not any(secret in text for secret in world.secrets)
    assert all(
        (k.prefix and world.a_agent.startswith(k.prefix)) or k.agent_id != "billing"
        for k in listed.api_keys
    )
    info = world.admin.GetServerInfo(
        admin_pb.GetServerInfoRequest(), metadata=world.md(world.a_agent)
    )
    assert (info.principal.project_id, info.principal.role) == (
        world.project_a,
        api_key_pb2.ROLE_AGENT,
    )
    assert info.principal.agent_id == "billing"


def test_revoked_key_is_refused(world: World) -> None:
    key = world.key(world.project_a, api_key_pb2.ROLE_READER)
    admin_md = world.md(world.a_admin)
    key_id = next(
        k.key_id
        for k in world.admin.ListApiKeys(admin_pb.ListApiKeysRequest(), metadata=admin_md).api_keys
        if key.startswith(k.prefix)
        and k.state == api_key_pb2.API_KEY_STATE_ACTIVE
        and k.role == api_key_pb2.ROLE_READER
        and k.create_time.seconds
    )
    world.sessions.ListSessions(pb.ListSessionsRequest(), metadata=world.md(key))
    revoked = world.admin.RevokeApiKey(
        admin_pb.RevokeApiKeyRequest(key_id=key_id), metadata=admin_md
    )
    assert revoked.api_key.state == api_key_pb2.API_KEY_STATE_REVOKED
    error = expect_error(
        grpc.StatusCode.UNAUTHENTICATED,
        world.sessions.ListSessions,
        pb.ListSessionsRequest(),
        metadata=world.md(key),
    )
    assert "unknown or revoked" in error.message


def test_expired_key_is_refused(world: World) -> None:
    created = world.admin.CreateApiKey(
        admin_pb.CreateApiKeyRequest(
            role=api_key_pb2.ROLE_READER, ttl=duration_pb2.Duration(seconds=1)
        ),
        metadata=world.md(world.a_admin),
    )
    world.secrets.append(created.key)
    world.sessions.ListSessions(pb.ListSessionsRequest(), metadata=world.md(created.key))
    time.sleep(1.2)
    error = expect_error(
        grpc.StatusCode.UNAUTHENTICATED,
        world.sessions.ListSessions,
        pb.ListSessionsRequest(),
        metadata=world.md(created.key),
    )
    assert "expired" in error.message


def test_agent_cannot_write_as_another_agent(world: World) -> None:
    md = world.md(world.a_agent)
    error = expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        world.sessions.CreateSession,
        pb.CreateSessionRequest(agent_id="orders"),
        metadata=md,
    )
    assert error.reason == "ERROR_REASON_AGENT_IDENTITY_MISMATCH"
    session = world.sessions.CreateSession(pb.CreateSessionRequest(), metadata=md).session
    assert list(session.agent_ids) == ["billing"]  # stamped from the credential
    error = expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        world.sessions.AppendMessages,
        pb.AppendMessagesRequest(
            session_id=session.session_id,
            messages=[pb.MessageInput(role=session_pb2.ROLE_ASSISTANT, agent_id="orders")],
        ),
        metadata=md,
    )
    assert error.field_violations == {} and error.metadata["field"] == "messages[0].agent_id"
    appended = world.sessions.AppendMessages(
        pb.AppendMessagesRequest(
            session_id=session.session_id,
            messages=[pb.MessageInput(role=session_pb2.ROLE_ASSISTANT, content="hi")],
        ),
        metadata=md,
    )
    assert appended.messages[0].agent_id == "billing"


def test_projects_are_isolated(world: World) -> None:
    mine = world.sessions.CreateSession(
        pb.CreateSessionRequest(session_id=uid("shared-name")), metadata=world.md(world.a_agent)
    ).session
    other_md = world.md(world.b_agent)
    # Reading another project's session by id: NOT_FOUND, its existence does not leak.
    error = expect_error(
        grpc.StatusCode.NOT_FOUND,
        world.sessions.GetSession,
        pb.GetSessionRequest(session_id=mine.session_id),
        metadata=other_md,
    )
    assert error.reason == "ERROR_REASON_SESSION_NOT_FOUND"
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        world.sessions.AppendMessages,
        pb.AppendMessagesRequest(
            session_id=mine.session_id, messages=[pb.MessageInput(role=session_pb2.ROLE_USER)]
        ),
        metadata=other_md,
    )
    # The same id is free in the other project.
    theirs = world.sessions.CreateSession(
        pb.CreateSessionRequest(session_id=mine.session_id), metadata=other_md
    ).session
    assert theirs.project_id == world.project_b
    # Lists never cross projects.
    listed = world.sessions.ListSessions(pb.ListSessionsRequest(page_size=500), metadata=other_md)
    assert {s.project_id for s in listed.sessions} == {world.project_b}
    projects = world.admin.ListProjects(admin_pb.ListProjectsRequest(), metadata=other_md)
    assert [p.project_id for p in projects.projects] == [world.project_b]
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        world.admin.GetProject,
        admin_pb.GetProjectRequest(project_id=world.project_a),
        metadata=other_md,
    )


def test_reader_cannot_write(world: World) -> None:
    md = world.md(world.a_reader)
    world.sessions.ListSessions(pb.ListSessionsRequest(), metadata=md)
    error = expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        world.sessions.CreateSession,
        pb.CreateSessionRequest(),
        metadata=md,
    )
    assert "read-only" in error.message
    expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        world.admin.CreateApiKey,
        admin_pb.CreateApiKeyRequest(role=api_key_pb2.ROLE_READER),
        metadata=md,
    )


def test_project_admin_is_confined_to_its_project(world: World) -> None:
    md = world.md(world.a_admin)
    error = expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        world.sessions.ListSessions,
        pb.ListSessionsRequest(),
        metadata=(*md, ("x-agentplane-project", world.project_b)),
    )
    assert world.project_b in error.message
    expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        world.admin.CreateApiKey,
        admin_pb.CreateApiKeyRequest(role=api_key_pb2.ROLE_ADMIN),
        metadata=md,
    )
    expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        world.admin.CreateProject,
        admin_pb.CreateProjectRequest(project_id=uid("nope")),
        metadata=md,
    )
    update = admin_pb.UpdateProjectRequest(
        project=project_pb2.Project(project_id=world.project_b, display_name="taken over"),
        update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
    )
    expect_error(grpc.StatusCode.NOT_FOUND, world.admin.UpdateProject, update, metadata=md)
    update.project.project_id = world.project_a
    updated = world.admin.UpdateProject(update, metadata=md).project
    assert updated.display_name == "taken over"


def test_rate_limit_answers_resource_exhausted_with_retry_info(world: World) -> None:
    created = world.admin.CreateApiKey(
        admin_pb.CreateApiKeyRequest(role=api_key_pb2.ROLE_READER, requests_per_second=5),
        metadata=world.md(world.a_admin),
    )
    world.secrets.append(created.key)
    md = world.md(created.key)
    codes = []
    for _ in range(30):
        try:
            world.sessions.ListSessions(pb.ListSessionsRequest(page_size=1), metadata=md)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as failure:
            codes.append(failure.code())
            if failure.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                limited = failure
    assert codes[:5] == [grpc.StatusCode.OK] * 5
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    from rpcutil import rich_error

    error = rich_error(limited)
    assert error.reason == "ERROR_REASON_RATE_LIMITED"
    assert error.retry_delay is not None and 0 < error.retry_delay <= 1
    time.sleep(error.retry_delay + 0.05)
    world.sessions.ListSessions(pb.ListSessionsRequest(page_size=1), metadata=md)


def test_admin_actions_are_audited(world: World) -> None:
    events = world.admin.ListAuditEvents(
        admin_pb.ListAuditEventsRequest(actions=["api_key.create", "api_key.revoke"]),
        metadata=world.md(world.a_admin),
    ).audit_events
    assert {e.action for e in events} >= {"api_key.create", "api_key.revoke"}
    assert all(e.project_id == world.project_a for e in events)
    assert all(e.request_id for e in events)
    text = str(events)
    assert not any(secret in text for secret in world.secrets)


def test_secrets_never_reach_logs_or_errors(world: World) -> None:
    logs = world.server.logs()
    assert world.secrets and not any(secret in logs for secret in world.secrets)
    assert world.server.admin_key not in logs


def test_keys_are_stored_hashed(world: World, backend: str, postgres) -> None:  # type: ignore[no-untyped-def]
    url = world.server.database_url
    if backend == "sqlite":
        import sqlite3

        connection = sqlite3.connect(world.server.data_dir / "agentplane.db")
        dump = "\n".join(connection.iterdump())
        hashes = [row[0] for row in connection.execute("select secret_hash from api_keys")]
        connection.close()
    else:
        dump = subprocess.run(
            ["pg_dump", url.replace("postgresql+psycopg://", "postgresql://")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        import psycopg

        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as c:
            hashes = [row[0] for row in c.execute("select secret_hash from api_keys")]
    assert "api_keys" in dump
    assert not any(secret in dump for secret in [*world.secrets, world.server.admin_key])
    # What the dump holds does not work as a credential.
    expect_error(
        grpc.StatusCode.UNAUTHENTICATED,
        world.sessions.ListSessions,
        pb.ListSessionsRequest(),
        metadata=world.md(hashes[0]),
    )
    expect_error(
        grpc.StatusCode.UNAUTHENTICATED,
        world.sessions.ListSessions,
        pb.ListSessionsRequest(),
        metadata=world.md("apk_" + hashes[0]),
    )


def test_operator_cli_creates_lists_and_revokes_keys(server) -> None:  # type: ignore[no-untyped-def]
    agentplane = Path(sys.executable).with_name("agentplane")
    common = ["--data-dir", str(server.data_dir)]
    if server.database_url:
        common += ["--database-url", server.database_url]

    def cli(*args: str) -> str:
        done = subprocess.run(
            [str(agentplane), "keys", *common, *args], capture_output=True, text=True, check=True
        )
        return done.stdout

    secret = cli("create", "--role", "agent", "--agent-id", "cli-agent", "--name", "from cli")
    secret = secret.strip()
    assert secret.startswith("apk_")
    sessions = rpc.SessionServiceStub(server.channel())
    created = sessions.CreateSession(
        pb.CreateSessionRequest(), metadata=(("authorization", f"Bearer {secret}"),)
    )
    assert list(created.session.agent_ids) == ["cli-agent"]
    listing = cli("list")
    line = next(line for line in listing.splitlines() if "cli-agent" in line)
    assert secret not in listing
    key_id = line.split("\t")[0]
    cli("revoke", key_id)
    time.sleep(5.2)  # the server's key cache; the CLI revokes behind its back
    expect_error(
        grpc.StatusCode.UNAUTHENTICATED,
        sessions.ListSessions,
        pb.ListSessionsRequest(),
        metadata=(("authorization", f"Bearer {secret}"),),
    )


def test_jwt_credentials_through_the_server(make_server, backend, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A gateway's identity provider: JWTs verified by kid against a JWKS, claims to principal."""
    if backend != "sqlite":
        pytest.skip("credential checks do not touch storage")
    import json

    from test_jwt import AUDIENCE, ISSUER, jwk, mint, rsa_key

    signing = rsa_key()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk(signing, "k1")]}))
    server = make_server(
        None,
        extra_args=(
            "--jwt-key-file",
            str(jwks),
            "--jwt-issuer",
            ISSUER,
            "--jwt-audience",
            AUDIENCE,
        ),
    )
    sessions = rpc.SessionServiceStub(server.channel())

    def bearer(token: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token}"),)

    good = mint(signing, "k1", project_id="default", role="agent", agent_id="jwt-agent")
    created = sessions.CreateSession(pb.CreateSessionRequest(), metadata=bearer(good)).session
    assert list(created.agent_ids) == ["jwt-agent"]
    cases = {
        "expired": mint(signing, "k1", project_id="default", exp=int(time.time()) - 3600),
        "wrong audience": mint(signing, "k1", project_id="default", aud="someone-else"),
        "wrong issuer": mint(signing, "k1", project_id="default", iss="https://evil.example"),
        "unknown signing key id": mint(rsa_key(), "k2", project_id="default"),
    }
    for expected, token in cases.items():
        error = expect_error(
            grpc.StatusCode.UNAUTHENTICATED,
            sessions.ListSessions,
            pb.ListSessionsRequest(),
            metadata=bearer(token),
        )
        assert expected in error.message, (expected, error.message)
        assert token not in server.logs()
