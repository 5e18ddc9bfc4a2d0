"""Builds and runs the grpc.aio server: services, health, reflection, interceptors, shutdown."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from agentplane.contract import contract_services
from agentplane_server.admin import service as admin_service
from agentplane_server.admin.bootstrap import bootstrap
from agentplane_server.config import Settings
from agentplane_server.feedback import service as feedback_service
from agentplane_server.governance import service as governance_service
from agentplane_server.health_service import HealthServicer
from agentplane_server.housekeeping import Housekeeping
from agentplane_server.inference import service as inference_service
from agentplane_server.interceptors import CallInterceptor
from agentplane_server.interceptors.auth import Authenticator
from agentplane_server.interceptors.validation import RequestValidator
from agentplane_server.pagination import PageTokens
from agentplane_server.reflection import enable_reflection
from agentplane_server.registry import service as registry_service
from agentplane_server.runtime import Runtime
from agentplane_server.session import service as session_service
from agentplane_server.signing import signing_keys
from agentplane_server.storage.db import Database, DatabaseUnreachable, retry_while_unavailable
from agentplane_server.storage.errors import describe, storage_unavailable
from agentplane_server.storage.health import StorageHealth
from agentplane_server.trace import service as trace_service
from agentplane_server.transports.console import console_app
from agentplane_server.transports.http import (
    HttpListener,
    RegisteredMethods,
    build_app,
    http_endpoints,
)

log = logging.getLogger(__name__)

# Each service package's build(runtime), in build order: a service may use the servicers built
# before it (governance uses registry's and inference's).
SERVICE_PACKAGES: tuple[ModuleType, ...] = (
    session_service,
    trace_service,
    feedback_service,
    registry_service,
    inference_service,
    governance_service,
    admin_service,
)
# Shutdown refuses new calls until none has arrived for DRAIN_QUIET_SECONDS, at most
# DRAIN_MAX_SECONDS (within the grace period), before grpc.aio stops the server.
DRAIN_QUIET_SECONDS = 0.02
DRAIN_MAX_SECONDS = 0.5


class MissingServicer(RuntimeError):
    """A service of the contract that no service package builds."""


def _add_servicers(methods: RegisteredMethods, servicers: dict[str, Any]) -> list[str]:
    """Register a servicer for every service of the contract; their names, in contract order."""
    missing = [s.full_name for s in contract_services() if s.full_name not in servicers]
    if missing:
        # At start-up rather than UNIMPLEMENTED at call time.
        raise MissingServicer(
            f"no servicer for {', '.join(missing)}: add its package's build() to "
            "SERVICE_PACKAGES in agentplane_server/app.py"
        )
    for service in contract_services():
        module = importlib.import_module(service.grpc_module)
        add = getattr(module, f"add_{service.name}Servicer_to_server")
        add(servicers[service.full_name], methods)
    return [s.full_name for s in contract_services()]


class AgentplaneServer:
    """One process's server. `start()` binds and serves; `stop()` drains and closes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server: grpc.aio.Server | None = None
        self.health = HealthServicer()
        self.state: Runtime | None = None
        self.http: HttpListener | None = None
        self.storage_health: StorageHealth | None = None
        self._cleanups: list[Callable[[], Any]] = []

    async def start(self) -> int:
        settings = self.settings
        db = Database(settings.resolved_database_url, timeout=settings.database_timeout)
        authenticator = Authenticator(db, settings)
        page_tokens = PageTokens(await signing_keys(settings, db, "page_tokens"))
        state = self.state = Runtime(
            settings=settings,
            db=db,
            authenticator=authenticator,
            page_tokens=page_tokens,
            housekeeping=Housekeeping(db, settings.data_dir / "housekeeping.lock"),
            health=self.health,
        )

        interceptors: list[grpc.aio.ServerInterceptor] = []
        if settings.otel_traces:
            interceptors.append(_otel_interceptor(self._cleanups))
        self.calls = CallInterceptor(authenticator, RequestValidator(), settings.access_log)
        interceptors.append(self.calls)

        server = self.server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                ("grpc.keepalive_time_ms", 60_000),
                ("grpc.http2.max_pings_without_data", 0),
                ("grpc.keepalive_permit_without_calls", 1),
            ],
        )
        for package in SERVICE_PACKAGES:
            built = package.build(state)
            state.servicers.update(await built if inspect.isawaitable(built) else built)
        methods = RegisteredMethods(server)  # what the HTTP listener serves too
        contract = _add_servicers(methods, state.servicers)
        methods.add_generic_rpc_handlers(tuple(state.extra_services.values()))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, methods)
        state.services = [*contract, *state.extra_services, health.SERVICE_NAME]
        enable_reflection(server, state.services)

        credentials = _server_credentials(settings)
        if credentials is None:
            port = server.add_insecure_port(settings.listen)
        else:
            port = server.add_secure_port(settings.listen, credentials)
        if port == 0:
            raise OSError(f"could not bind {settings.listen}")
        state.port = port
        await server.start()
        if settings.http_listen:
            endpoints = await http_endpoints(methods, state.services, self.calls)
            app = build_app(endpoints, settings, fallback=console_app(settings))
            self.http = HttpListener(app, settings)
            state.http_port = await self.http.start()
        for name in contract:
            serving = name not in state.self_reported_health
            await self.health.set(
                name,
                health_pb2.HealthCheckResponse.SERVING
                if serving
                else health_pb2.HealthCheckResponse.NOT_SERVING,
            )
        for name in state.extra_services:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        # Every service GetServerInfo lists has a status, the health service itself included.
        await self.health.set(health.SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self.storage_health = StorageHealth(
            db,
            self.health,
            [
                *(n for n in contract if n not in state.self_reported_health),
                *state.extra_services,
            ],
            settings.database_probe_interval,
        )
        self.storage_health.start()
        state.housekeeping.start()
        log.info(
            "serving",
            extra={
                "listen": settings.listen,
                "port": port,
                "http_listen": settings.http_listen,
                "http_port": state.http_port,
                "pid": os.getpid(),
            },
        )
        return port

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting calls, let in-flight calls finish (streams end cleanly), then close."""
        if self.server is None or self.state is None:
            return
        grace = self.settings.shutdown_grace if grace is None else grace
        log.info("shutting down", extra={"grace_seconds": grace})
        await self.health.enter_graceful_shutdown()
        self.state.shutdown.set()  # watch streams return, so clients can resume elsewhere
        await self._refuse_new_calls(min(DRAIN_MAX_SECONDS, grace))
        await asyncio.gather(
            self.server.stop(grace), self.http.stop(grace) if self.http else asyncio.sleep(0)
        )
        if self.storage_health is not None:
            await self.storage_health.stop()
        for hook in self.state.stop_hooks:
            await hook()
        await self.state.housekeeping.stop()
        for cleanup in self._cleanups:
            cleanup()
        await self.state.db.dispose()
        log.info("stopped")

    async def _refuse_new_calls(self, at_most: float) -> None:
        """Answer calls that start from now on UNAVAILABLE (which clients retry), until none
        has arrived for DRAIN_QUIET_SECONDS. grpc.aio's stop() answers calls that had arrived
        but not yet started with CANCELLED, which clients do not retry (grpc/grpc#41785);
        refusing them first empties that queue, so stop() finds it empty unless clients keep
        sending faster than refusals are answered. Kept short: a client retries on the same
        connection, which reaches another replica or worker only once stop() closes it."""
        self.calls.draining = True
        deadline = time.perf_counter() + at_most
        while time.perf_counter() < deadline:
            await asyncio.sleep(DRAIN_QUIET_SECONDS / 2)
            if time.perf_counter() - self.calls.last_call_started >= DRAIN_QUIET_SECONDS:
                return

    async def wait(self) -> None:
        assert self.server is not None
        await self.server.wait_for_termination()


def _server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if settings.tls_cert is None:
        if settings.tls_key or settings.tls_client_ca:
            # Refuse rather than silently serving plaintext to an operator who asked for TLS.
            raise ValueError("--tls-key and --tls-client-ca need --tls-cert")
        return None
    if settings.tls_key is None:
        raise ValueError("--tls-key is required with --tls-cert")
    root = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())],
        root_certificates=root,
        require_client_auth=root is not None,
    )


def _otel_interceptor(cleanups: list[Callable[[], Any]]) -> grpc.aio.ServerInterceptor:
    """Server spans for every RPC, exported by the standard OTLP exporter (configured by the
    OTEL_EXPORTER_OTLP_* environment variables)."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.grpc import aio_server_interceptor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "agentplane-server"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    cleanups.append(provider.shutdown)
    return aio_server_interceptor(tracer_provider=provider)


async def prepare(settings: Settings) -> None:
    """Once per deployment start, before any worker serves: schema and bootstrap."""
    from agentplane_server.datadir import make_private
    from agentplane_server.storage.db import migrate

    make_private(settings)
    url = settings.resolved_database_url

    async def attempt() -> None:
        await asyncio.to_thread(migrate, url, timeout=settings.database_timeout)
        db = Database(url, timeout=settings.database_timeout)
        try:
            await bootstrap(db, settings.admin_key_path, settings.bootstrap_admin_key)
        finally:
            await db.dispose()

    try:
        await retry_while_unavailable(attempt, url, settings.database_startup_timeout)
    except DatabaseUnreachable as exc:
        raise SystemExit(f"agentplane serve: {exc}") from None


async def serve_forever(settings: Settings) -> None:
    """Run one server process until SIGTERM or SIGINT, then drain and exit."""
    app = AgentplaneServer(settings)
    try:
        await app.start()
    except MissingServicer as exc:
        raise SystemExit(f"agentplane serve: {exc}") from None
    except Exception as exc:
        if storage_unavailable(exc) is None:
            raise
        # A worker restarted while the database is away: one line, and the supervisor retries.
        raise SystemExit(f"agentplane serve: database unavailable: {describe(exc)}") from None
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    _exit_after(settings.shutdown_grace + settings.decision_log_shutdown_deadline + SHUTDOWN_SLACK)
    await app.stop()


# The process exits at most shutdown_grace + decision_log_shutdown_deadline + SHUTDOWN_SLACK
# seconds after SIGTERM, even when the database hangs: every answered decision is already in
# the decision journal (the kernel has it), so nothing acknowledged is lost by exiting.
SHUTDOWN_SLACK = 2.0


def _exit_after(seconds: float) -> None:
    def force() -> None:
        from agentplane_server.logs import flush_logs

        log.error(
            "shutdown did not finish in time (the database is not answering); exiting now. "
            "Undelivered decisions stay in the decision journal for the next start",
            extra={"seconds": seconds},
        )
        flush_logs()
        os._exit(1)

    # A thread, not the event loop: it fires even if something blocks the loop.
    timer = threading.Timer(seconds, force)
    timer.daemon = True
    timer.start()
