"""Real Agentplane servers and real databases for the tests.

A ServerProcess is `agentplane serve` in a child process on free ports, with its own data
directory and database, exactly as an operator starts it. PostgreSQL comes from
AGENTPLANE_TEST_POSTGRES_URL, else the server on 127.0.0.1:5432, else a throwaway cluster made
with initdb; every server gets a database of its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
AGENTPLANE = Path(sys.executable).with_name("agentplane")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """An admin connection URL to a PostgreSQL server, and databases made on it."""

    def __init__(self, admin_url: str, cleanup: list) -> None:
        self.admin_url = admin_url  # psycopg conninfo URL, e.g. postgresql://postgres@host/test
        self._cleanup = cleanup

    @classmethod
    def find(cls) -> Postgres:
        cleanup: list = []
        url = os.environ.get("AGENTPLANE_TEST_POSTGRES_URL")
        candidates = [url] if url else ["postgresql://postgres@127.0.0.1:5432/test"]
        for candidate in candidates:
            try:
                with psycopg.connect(candidate, connect_timeout=3) as conn:
                    conn.execute("select 1")
                return cls(candidate, cleanup)
            except psycopg.OperationalError:
                if url:
                    raise
        return cls(cls._throwaway_cluster(cleanup), cleanup)

    @staticmethod
    def _throwaway_cluster(cleanup: list) -> str:
        bindir = next(Path("/usr/lib/postgresql").glob("*/bin"), None)
        initdb = shutil.which("initdb") or (bindir and str(bindir / "initdb"))
        pg_ctl = shutil.which("pg_ctl") or (bindir and str(bindir / "pg_ctl"))
        if not initdb or not pg_ctl:
            raise RuntimeError("no PostgreSQL server reachable and no initdb to make one")
        data = Path(tempfile.mkdtemp(prefix="agentplane-pg-"))
        port = free_port()
        user = ["-U", "postgres"]
        run_as: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            shutil.chown(data, "postgres")
            run_as = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [*run_as, initdb, "-D", str(data), *user, "-A", "trust"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                *run_as,
                pg_ctl,
                "-D",
                str(data),
                "-w",
                "-o",
                f"-p {port} -k {data} -c listen_addresses=127.0.0.1",
                "start",
                "-l",
                str(data / "log"),
            ],
            check=True,
            capture_output=True,
        )
        cleanup.append(
            lambda: subprocess.run(
                [*run_as, pg_ctl, "-D", str(data), "stop", "-m", "immediate"], capture_output=True
            )
        )
        return f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def create_database(self) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = f"agentplane_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self._cleanup.append(lambda: self._drop(name))
        base = self.admin_url.rsplit("/", 1)[0]
        return f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"

    def _drop(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        for cleanup in reversed(self._cleanup):
            with contextlib.suppress(Exception):
                cleanup()
        self._cleanup.clear()


class ServerProcess:
    """`agentplane serve` in a child process."""

    def __init__(
        self,
        database_url: str | None,
        data_dir: Path | None = None,
        *,
        workers: int = 1,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="agentplane-test-"))
        self.database_url = database_url
        self.port = port or free_port()
        self.metrics_port = free_port()
        self.http_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.http_address = f"127.0.0.1:{self.http_port}"
        self.log_path = self.data_dir / f"server-{self.port}-{uuid.uuid4().hex[:6]}.log"
        args = [
            str(AGENTPLANE),
            "serve",
            "--listen",
            self.address,
            "--data-dir",
            str(self.data_dir),
            "--metrics-listen",
            f"127.0.0.1:{self.metrics_port}",
            "--http-listen",
            self.http_address,
            "--workers",
            str(workers),
            "--shutdown-grace",
            "5",
            *extra_args,
        ]
        if database_url:
            args += ["--database-url", database_url]
        self.args = args
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            cwd=self.data_dir,
        )
        self._channels: list[grpc.Channel] = []
        self.wait_ready()
        self.admin_key = (self.data_dir / "admin.key").read_text().strip()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited early:\n{self.logs()}")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise TimeoutError(f"server not ready in {timeout}s:\n{self.logs()}")

    @property
    def http_url(self) -> str:
        """Base URL of the HTTP listener (Connect, gRPC-Web)."""
        scheme = "https" if "--tls-cert" in self.args else "http"
        return f"{scheme}://{self.http_address}"

    def channel(self) -> grpc.Channel:
        channel = grpc.insecure_channel(self.address)
        self._channels.append(channel)
        return channel

    def metadata(self, key: str | None = None, **extra: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {key or self.admin_key}"), *extra.items())

    def logs(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def send_signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> int:
        for channel in self._channels:
            channel.close()
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


@contextlib.contextmanager
def running_server(database_url: str | None, **kwargs) -> Iterator[ServerProcess]:  # type: ignore[no-untyped-def]
    server = ServerProcess(database_url, **kwargs)
    try:
        yield server
    finally:
        server.stop()
