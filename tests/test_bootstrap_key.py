"""The bootstrap admin key from a file (a Kubernetes Secret): registered on the first start,
never written to the data directory, the same on every replica."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

from serverproc import free_port

from agentplane.admin.v1 import admin_service_pb2, admin_service_pb2_grpc, api_key_pb2

AGENTPLANE = Path(sys.executable).with_name("agentplane")


def whoami(server, key: str) -> admin_service_pb2.GetServerInfoResponse:  # type: ignore[no-untyped-def]
    return admin_service_pb2_grpc.AdminServiceStub(server.channel()).GetServerInfo(
        admin_service_pb2.GetServerInfoRequest(), metadata=server.metadata(key)
    )


def test_the_given_key_is_the_admin_key_on_every_replica(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key = "apk_" + secrets.token_hex(32)
    key_file = tmp_path / "admin.key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    first = make_server(extra_args=("--bootstrap-admin-key", str(key_file)))
    assert not (first.data_dir / "admin.key").exists()
    info = whoami(first, key)
    assert (info.principal.project_id, info.principal.role) == ("default", api_key_pb2.ROLE_ADMIN)
    assert key not in first.logs()
    if first.database_url:  # a second replica on the same database accepts the same key
        second = make_server(
            first.database_url, extra_args=("--bootstrap-admin-key", str(key_file))
        )
        assert whoami(second, key).principal.key_id == info.principal.key_id


def test_an_unusable_key_file_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    key_file = tmp_path / "admin.key"
    key_file.write_text("changeme\n")
    data = tmp_path / "data"
    done = subprocess.run(
        [
            str(AGENTPLANE),
            "serve",
            "--data-dir",
            str(data),
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--metrics-listen",
            f"127.0.0.1:{free_port()}",
            "--triton-url",
            f"127.0.0.1:{free_port()}",
            "--bootstrap-admin-key",
            str(key_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "bootstrap admin key" in lines[0], done.stderr
    assert "changeme" not in done.stderr
    assert not data.exists()
