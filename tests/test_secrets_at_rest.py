"""Secrets at rest: the data directory is 0700 and every file the server writes 0600 (the
database with its WAL and SHM files included), and the keys that sign feedback and page tokens
can come from a secret, with rotation. Real servers on SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
import stat
import tempfile
from pathlib import Path

import grpc
import pytest
from rpcutil import expect_error
from serverproc import ServerProcess, free_port

from agentplane.feedback.v1 import feedback_pb2
from agentplane.feedback.v1 import feedback_service_pb2 as fb
from agentplane.feedback.v1 import feedback_service_pb2_grpc as fb_rpc
from agentplane.session.v1 import session_service_pb2 as ses
from agentplane.session.v1 import session_service_pb2_grpc as ses_rpc


def modes(directory: Path) -> dict[str, int]:
    found = {".": stat.S_IMODE(directory.stat().st_mode)}
    for path in directory.rglob("*"):
        found[str(path.relative_to(directory))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def assert_private(directory: Path) -> None:
    for name, mode in modes(directory).items():
        path = directory / name
        expected = 0o700 if path.is_dir() else 0o600
        assert mode == expected, f"{name}: {oct(mode)}, expected {oct(expected)}"


def test_data_directory_and_files_are_private(make_server, backend) -> None:  # type: ignore[no-untyped-def]
    data_dir = Path(tempfile.mkdtemp(prefix="agentplane-modes-"))
    data_dir.chmod(0o755)
    server = make_server(data_dir=data_dir)
    sessions = ses_rpc.SessionServiceStub(server.channel())
    sessions.CreateSession(ses.CreateSessionRequest(), metadata=server.metadata())
    names = set(modes(data_dir))
    assert "admin.key" in names
    if backend == "sqlite":  # open connections keep the WAL and shared-memory files
        assert {"agentplane.db", "agentplane.db-wal", "agentplane.db-shm"} <= names
    assert_private(data_dir)
    server.stop()

    # Files an older version left readable are tightened at the next start.
    for path in [data_dir, *data_dir.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    server = make_server(database_url=server.database_url, data_dir=data_dir)
    sessions = ses_rpc.SessionServiceStub(server.channel())
    sessions.CreateSession(ses.CreateSessionRequest(), metadata=server.metadata())
    assert_private(data_dir)


def keys_file(directory: Path, *keys: str) -> Path:
    path = directory / f"signing-keys-{secrets.token_hex(4)}"
    path.write_text("# first signs, all verify\n" + "\n".join(keys) + "\n")
    path.chmod(0o600)
    return path


def start(
    make_server, database_url: str | None, data_dir: Path, keys: Path | None = None, **kwargs
) -> ServerProcess:  # type: ignore[no-untyped-def]
    extra = ("--signing-keys-file", str(keys)) if keys is not None else ()
    return make_server(database_url=database_url, data_dir=data_dir, extra_args=extra, **kwargs)


def mint(server: ServerProcess) -> str:
    stub = fb_rpc.FeedbackServiceStub(server.channel())
    return stub.CreateFeedbackToken(
        fb.CreateFeedbackTokenRequest(
            session_id="s-rotation", message_id=f"m-{secrets.token_hex(4)}", agent_id="a"
        ),
        metadata=server.metadata(),
    ).token


def submit(server: ServerProcess, token: str) -> fb.SubmitFeedbackResponse:
    stub = fb_rpc.FeedbackServiceStub(server.channel())
    return stub.SubmitFeedback(
        fb.SubmitFeedbackRequest(token=token, rating=feedback_pb2.RATING_THUMBS_UP)
    )


def page(server: ServerProcess, token: str = "") -> ses.ListSessionsResponse:
    stub = ses_rpc.SessionServiceStub(server.channel())
    return stub.ListSessions(
        ses.ListSessionsRequest(page_size=1, page_token=token), metadata=server.metadata()
    )


def test_signing_keys_rotate(make_server, backend) -> None:  # type: ignore[no-untyped-def]
    old_key, new_key = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    data_dir = Path(tempfile.mkdtemp(prefix="agentplane-keys-"))
    first = start(make_server, "", data_dir, keys_file(data_dir, old_key))
    database_url = first.database_url
    sessions = ses_rpc.SessionServiceStub(first.channel())
    for _ in range(3):
        sessions.CreateSession(ses.CreateSessionRequest(), metadata=first.metadata())
    old_feedback, old_page = mint(first), page(first).next_page_token
    assert old_page
    first.stop()

    # The new key first: it signs; the old one still verifies what it signed.
    rotated = start(make_server, database_url, data_dir, keys_file(data_dir, new_key, old_key))
    assert submit(rotated, old_feedback).feedback.feedback_id
    assert page(rotated, old_page).sessions
    new_feedback, new_page = mint(rotated), page(rotated).next_page_token
    rotated.stop()

    # The old key removed: what it signed is refused, what the new one signed still verifies.
    # Here the keys come from the environment instead of a file.
    retired = start(make_server, database_url, data_dir, env={"AGENTPLANE_SIGNING_KEYS": new_key})
    error = expect_error(
        grpc.StatusCode.UNAUTHENTICATED,
        fb_rpc.FeedbackServiceStub(retired.channel()).SubmitFeedback,
        fb.SubmitFeedbackRequest(token=old_feedback, rating=feedback_pb2.RATING_THUMBS_UP),
    )
    assert error.reason == "ERROR_REASON_FEEDBACK_TOKEN_INVALID"
    error = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        ses_rpc.SessionServiceStub(retired.channel()).ListSessions,
        ses.ListSessionsRequest(page_size=1, page_token=old_page),
        metadata=retired.metadata(),
    )
    assert "page_token" in error.field_violations
    assert submit(retired, new_feedback).feedback.feedback_id
    assert page(retired, new_page).sessions
    retired.stop()

    for server in (first, rotated, retired):
        logs = server.log_path.read_text(errors="replace")
        assert old_key not in logs and new_key not in logs
    # Configured keys replace the database's: none was created there.
    if backend == "sqlite":
        import sqlite3

        with sqlite3.connect(data_dir / "agentplane.db") as connection:
            names = [row[0] for row in connection.execute("select name from server_secrets")]
        assert names == []


@pytest.mark.parametrize(
    ("content", "why"),
    [("short-key\n", "shorter than 32 characters"), ("# only a comment\n", "no signing key")],
)
def test_bad_signing_keys_stop_the_start_without_showing_them(content: str, why: str) -> None:
    import subprocess
    import sys

    data_dir = Path(tempfile.mkdtemp(prefix="agentplane-badkeys-"))
    path = data_dir / "keys"
    path.write_text(content)
    agentplane = Path(sys.executable).with_name("agentplane")
    result = subprocess.run(
        [
            str(agentplane),
            "serve",
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--metrics-listen",
            f"127.0.0.1:{free_port()}",
            "--data-dir",
            str(data_dir),
            "--signing-keys-file",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert why in result.stderr and "short-key" not in result.stderr + result.stdout
