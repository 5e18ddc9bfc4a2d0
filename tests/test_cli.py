"""The `agentplane` command as an operator types it: flags where the README puts them, one-line
refusals instead of tracebacks, and nothing created where nothing should be."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from serverproc import free_port

AGENTPLANE = Path(sys.executable).with_name("agentplane")


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AGENTPLANE), *args], capture_output=True, text=True, cwd=cwd, timeout=60
    )


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def storage_flags(server) -> list[str]:  # type: ignore[no-untyped-def]
    flags = ["--data-dir", str(server.data_dir)]
    if server.database_url:
        flags += ["--database-url", server.database_url]
    return flags


def test_keys_take_project_after_the_subcommand_as_the_readme_writes_it(server) -> None:  # type: ignore[no-untyped-def]
    created = run(
        "keys",
        "create",
        "--project",
        "default",
        "--role",
        "reader",
        "--name",
        "readme-style",
        *storage_flags(server),
    )
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip().startswith("apk_")
    listed = run("keys", "list", "--project", "default", *storage_flags(server))
    assert listed.returncode == 0, listed.stderr
    assert "readme-style" in listed.stdout
    # The flag before the subcommand still works, and a project given after it wins.
    before = run("keys", "--project", "default", *storage_flags(server), "list")
    assert "readme-style" in before.stdout
    elsewhere = run(
        "keys", "--project", "default", "list", "--project", "nosuch", *storage_flags(server)
    )
    assert "project 'nosuch' not found" in one_line_error(elsewhere)
    # No key is made for a project that does not exist.
    orphan = run(
        "keys", "create", "--project", "nosuch", "--role", "reader", *storage_flags(server)
    )
    assert "project 'nosuch' not found" in one_line_error(orphan)
    assert orphan.stdout == ""


def test_keys_revoke_of_an_unknown_id_is_one_line(server) -> None:  # type: ignore[no-untyped-def]
    done = run("keys", "revoke", "key_doesnotexist", *storage_flags(server))
    line = one_line_error(done)
    assert "key_doesnotexist" in line and "not found" in line


def test_keys_outside_a_data_directory_refuse_and_create_nothing(tmp_path: Path) -> None:
    done = run("keys", "create", "--role", "admin", cwd=tmp_path)
    line = one_line_error(done)
    assert str(tmp_path / ".agentplane") in line
    assert done.stdout == ""  # no key printed
    assert list(tmp_path.iterdir()) == []  # no second database

    other = tmp_path / "elsewhere"
    done = run("keys", "list", "--data-dir", str(other), cwd=tmp_path)
    assert str(other) in one_line_error(done)
    assert not other.exists()


def test_keys_on_a_postgres_database_without_the_schema_refuse(backend: str, postgres) -> None:  # type: ignore[no-untyped-def]
    if backend != "postgres":
        pytest.skip("PostgreSQL only: SQLite is covered by the data directory test")
    import sqlalchemy as sa

    url = postgres.create_database()
    done = run("keys", "list", "--database-url", url)
    assert "no Agentplane schema" in one_line_error(done)
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        assert sa.inspect(connection).get_table_names() == []  # nothing migrated
    engine.dispose()


@pytest.mark.parametrize("flag", ["--listen", "--metrics-listen"])
def test_a_second_server_on_a_busy_port_names_it_and_creates_nothing(
    flag: str, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        addresses = {
            "--listen": f"127.0.0.1:{free_port()}",
            "--metrics-listen": f"127.0.0.1:{free_port()}",
            flag: busy,
        }
        data = tmp_path / "data"
        done = run(
            "serve",
            "--data-dir",
            str(data),
            "--triton-url",
            f"127.0.0.1:{free_port()}",
            *(item for pair in addresses.items() for item in pair),
        )
    line = one_line_error(done)
    assert busy in line and flag in line
    assert not data.exists()  # checked before any database or key


def test_keys_and_migrate_help_list_only_their_own_flags() -> None:
    for command in (["keys"], ["keys", "create"], ["migrate"]):
        shown = run(*command, "--help").stdout
        assert "--data-dir" in shown and "--database-url" in shown
        assert "--triton-url" not in shown and "--jwt-issuer" not in shown, command
    assert "--triton-url" in run("serve", "--help").stdout
