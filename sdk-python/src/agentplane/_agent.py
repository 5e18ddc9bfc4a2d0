# ruff: noqa: ASYNC109 - `timeout` is a gRPC deadline or a bounded wait, part of the API.
"""``Agent`` and ``AsyncAgent``: register with a card, keep the lease, deregister on the way out.

    with Agent(agent_id="orders:pod-1", name="Orders", version="1.2.0") as agent:
        ...  # registered; the lease is renewed in the background; governed() uses agent's id

On ``stop()`` (leaving ``with``, ``atexit``, or SIGTERM) the agent flushes its queued execution
reports and deregisters. SIGTERM is handled only when the agent starts in the main thread: the
handler deregisters, then puts the previous handler back and raises SIGTERM again, so the
process ends exactly as it would have without the SDK (or runs the application's own handler).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import datetime
import logging
import os
import signal
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from agentplane._client import AsyncClient, Client
from agentplane._config import ENV_AGENT_ID
from agentplane._errors import NotFoundError, RpcError
from agentplane._governed import AsyncGovernor, Governor, governed, set_default_governor
from agentplane.registry.v1 import agent_pb2, registry_service_pb2

log = logging.getLogger("agentplane")
DEFAULT_LEASE = 30.0
NULL_AGENT_ID = "standalone"


def build_card(
    card: agent_pb2.AgentCard | Mapping[str, Any] | None,
    *,
    name: str | None,
    version: str,
    description: str,
    skills: Iterable[agent_pb2.AgentSkill | Mapping[str, Any]],
    labels: Mapping[str, str] | None,
    framework: str,
    fallback_name: str,
    interfaces: Iterable[agent_pb2.AgentInterface | Mapping[str, Any]] = (),
) -> agent_pb2.AgentCard:
    """The card to register: ``card`` as given, or one made from the keyword fields; the SDK's
    language and version are filled in when empty."""
    from agentplane import __version__

    if isinstance(card, agent_pb2.AgentCard):
        result = agent_pb2.AgentCard()
        result.CopyFrom(card)
    elif card is not None:
        result = agent_pb2.AgentCard(**card)
    else:
        result = agent_pb2.AgentCard(
            name=name or fallback_name,
            version=version,
            description=description,
            skills=list(skills),  # type: ignore[arg-type]
            labels=dict(labels or {}),
            framework=framework,
            interfaces=list(interfaces),  # type: ignore[arg-type]
        )
    if not result.sdk_language:
        result.sdk_language = "python"
    if not result.sdk_version:
        result.sdk_version = __version__
    return result


class _AgentBase:
    def __init__(
        self,
        *,
        agent_id: str | None,
        card: agent_pb2.AgentCard | Mapping[str, Any] | None,
        name: str | None,
        version: str,
        description: str,
        skills: Iterable[agent_pb2.AgentSkill | Mapping[str, Any]],
        labels: Mapping[str, str] | None,
        framework: str,
        lease_duration: float,
        handle_sigterm: bool,
        governor_options: Mapping[str, Any] | None,
        set_default: bool,
        interfaces: Iterable[agent_pb2.AgentInterface | Mapping[str, Any]] = (),
    ) -> None:
        self.agent_id = agent_id or os.environ.get(ENV_AGENT_ID, "")
        self._card_args = {
            "card": card,
            "name": name,
            "version": version,
            "description": description,
            "skills": list(skills),
            "labels": labels,
            "framework": framework,
            "interfaces": list(interfaces),
        }
        self.lease_duration = lease_duration
        self.handle_sigterm = handle_sigterm
        self.governor_options = dict(governor_options or {})
        self.set_default = set_default
        self.agent: agent_pb2.Agent | None = None
        self.heartbeats = 0
        self.registrations = 0
        self.last_error: BaseException | None = None
        self.lease_expire_time: datetime.datetime | None = None
        self._previous_handler: Any = None
        self._signal_installed = False
        self._started = False
        self._stopped = False

    @property
    def card(self) -> agent_pb2.AgentCard:
        return build_card(**self._card_args, fallback_name=self.agent_id)  # type: ignore[arg-type]

    def _register_request(self) -> registry_service_pb2.RegisterAgentRequest:
        request = registry_service_pb2.RegisterAgentRequest(agent_id=self.agent_id, card=self.card)
        request.lease_duration.FromTimedelta(datetime.timedelta(seconds=self.lease_duration))
        return request

    def _registered(self, response: registry_service_pb2.RegisterAgentResponse) -> None:
        self.agent = response.agent
        self.registrations += 1
        self.lease_expire_time = response.agent.lease_expire_time.ToDatetime(datetime.UTC)

    def _heartbeat_ok(self, response: registry_service_pb2.HeartbeatAgentResponse) -> float:
        self.heartbeats += 1
        self.lease_expire_time = response.lease_expire_time.ToDatetime(datetime.UTC)
        lease = response.lease_duration.ToTimedelta().total_seconds() or self.lease_duration
        return lease / 3

    def _reraise_sigterm(self) -> None:
        """Put the previous SIGTERM handler back and deliver SIGTERM to it."""
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, self._previous_handler or signal.SIG_DFL)
            self._signal_installed = False
        signal.raise_signal(signal.SIGTERM)

    def _restore_signal(self) -> None:
        if self._signal_installed:
            with contextlib.suppress(ValueError):  # not in the main thread any more
                signal.signal(signal.SIGTERM, self._previous_handler or signal.SIG_DFL)
            self._signal_installed = False


class Agent(_AgentBase):
    """A registered agent (sync). Creates its own ``Client.connect()`` when given none.

    ``agent_id`` defaults to ``AGENTPLANE_AGENT_ID``, then to the agent of the credential.
    The card is ``card`` (an AgentCard or a dict) or built from ``name``, ``version``,
    ``description``, ``skills``, ``labels``, ``framework`` and ``interfaces`` (the endpoints
    the agent serves, ``[{"url": ..., "transport": "JSONRPC"}]``: its A2A card needs one).
    ``governor_options`` go to the agent's ``Governor`` (e.g. ``{"watch": True,
    "fail_open": False, "timeout": 2.0}``), which becomes the default for ``governed`` while
    the agent runs.
    """

    def __init__(
        self,
        client: Client | None = None,
        *,
        agent_id: str | None = None,
        card: agent_pb2.AgentCard | Mapping[str, Any] | None = None,
        name: str | None = None,
        version: str = "0.0.0",
        description: str = "",
        skills: Iterable[agent_pb2.AgentSkill | Mapping[str, Any]] = (),
        labels: Mapping[str, str] | None = None,
        framework: str = "",
        lease_duration: float = DEFAULT_LEASE,
        handle_sigterm: bool = True,
        governor_options: Mapping[str, Any] | None = None,
        set_default: bool = True,
        interfaces: Iterable[agent_pb2.AgentInterface | Mapping[str, Any]] = (),
    ) -> None:
        super().__init__(
            agent_id=agent_id,
            card=card,
            name=name,
            version=version,
            description=description,
            skills=skills,
            labels=labels,
            framework=framework,
            lease_duration=lease_duration,
            handle_sigterm=handle_sigterm,
            governor_options=governor_options,
            set_default=set_default,
            interfaces=interfaces,
        )
        self._owns_client = client is None
        self.client = client or Client.connect()
        self.governor: Governor | None = None
        self._stopping = threading.Event()
        self._stop_lock = threading.Lock()
        self._heartbeat: threading.Thread | None = None

    @property
    def is_null(self) -> bool:
        return self.client.is_null

    def start(self) -> Agent:
        """Register, start renewing the lease, install the SIGTERM handler. Raises the typed
        RpcError when registration fails."""
        if self._started:
            return self
        if not self.agent_id:
            self.agent_id = NULL_AGENT_ID if self.is_null else self._credential_agent()
        self.governor = Governor(self.client, agent_id=self.agent_id, **self.governor_options)
        if self.set_default:
            set_default_governor(self.governor)
        self._started = True
        if self.is_null:
            log.info("null mode: agent %r is not registered", self.agent_id)
            return self
        self._registered(self.client.registry.register_agent(self._register_request()))
        log.info("registered agent %r", self.agent_id)
        self._heartbeat = threading.Thread(
            target=self._heartbeat_loop, name=f"agentplane-lease-{self.agent_id}", daemon=True
        )
        self._heartbeat.start()
        if self.handle_sigterm and threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
            self._signal_installed = True
        atexit.register(self.stop)
        return self

    def _credential_agent(self) -> str:
        principal = self.client.server_info().principal
        if not principal.agent_id:
            raise ValueError(
                "Agent needs an agent_id: pass agent_id=..., set AGENTPLANE_AGENT_ID, or use an "
                "agent API key"
            )
        return principal.agent_id

    def _heartbeat_loop(self) -> None:
        interval = self.lease_duration / 3
        while not self._stopping.wait(interval):
            try:
                interval = self._heartbeat_ok(
                    self.client.registry.heartbeat_agent(
                        agent_id=self.agent_id, timeout=max(1.0, interval)
                    )
                )
                self.last_error = None
            except NotFoundError:
                # Removed after the lease ran out (e.g. a long pause): register again.
                log.warning("agent %r was removed; registering again", self.agent_id)
                try:
                    self._registered(self.client.registry.register_agent(self._register_request()))
                    interval = self.lease_duration / 3
                except RpcError as error:
                    self.last_error = error
                    interval = min(self.lease_duration / 3, 1.0)
            except RpcError as error:
                self.last_error = error
                log.warning("heartbeat for %r failed: %s", self.agent_id, error)
                interval = min(self.lease_duration / 3, 1.0)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        log.info("SIGTERM; deregistering agent %r", self.agent_id)
        self.stop()
        self._reraise_sigterm()

    def stop(self, timeout: float = 5.0) -> None:
        """Flush reports, stop renewing the lease and deregister (idempotent)."""
        with self._stop_lock:
            if self._stopped or not self._started:
                return
            self._stopped = True
        self._stopping.set()
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        if self.governor is not None:
            self.governor.close(timeout)
        if self._heartbeat is not None:
            self._heartbeat.join(timeout)
        if not self.is_null:
            try:
                self.client.registry.deregister_agent(agent_id=self.agent_id, timeout=timeout)
                log.info("deregistered agent %r", self.agent_id)
            except NotFoundError:
                pass
            except RpcError as error:
                self.last_error = error
                log.warning("could not deregister %r: %s", self.agent_id, error)
        self._restore_signal()
        if self.set_default:
            set_default_governor(None)
        if self._owns_client:
            self.client.close()

    def governed(self, action: str, **options: Any) -> governed:
        """``governed(action, ...)`` with this agent's governor."""
        if self.governor is None:
            raise RuntimeError("start the agent first")
        return governed(action, governor=self.governor, **options)

    def configure_tracing(self, **options: Any) -> Any:
        """``configure_tracing(self, ...)``: export spans to Agentplane as this agent."""
        from agentplane._tracing import configure_tracing

        return configure_tracing(self, **options)

    def __enter__(self) -> Agent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class AsyncAgent(_AgentBase):
    """``Agent`` for asyncio: ``async with AsyncAgent(...)``; the lease is renewed by a task."""

    def __init__(
        self,
        client: AsyncClient | None = None,
        *,
        agent_id: str | None = None,
        card: agent_pb2.AgentCard | Mapping[str, Any] | None = None,
        name: str | None = None,
        version: str = "0.0.0",
        description: str = "",
        skills: Iterable[agent_pb2.AgentSkill | Mapping[str, Any]] = (),
        labels: Mapping[str, str] | None = None,
        framework: str = "",
        lease_duration: float = DEFAULT_LEASE,
        handle_sigterm: bool = True,
        governor_options: Mapping[str, Any] | None = None,
        set_default: bool = True,
        interfaces: Iterable[agent_pb2.AgentInterface | Mapping[str, Any]] = (),
    ) -> None:
        super().__init__(
            agent_id=agent_id,
            card=card,
            name=name,
            version=version,
            description=description,
            skills=skills,
            labels=labels,
            framework=framework,
            lease_duration=lease_duration,
            handle_sigterm=handle_sigterm,
            governor_options=governor_options,
            set_default=set_default,
            interfaces=interfaces,
        )
        self._owns_client = client is None
        self.client: AsyncClient | None = client
        self.governor: AsyncGovernor | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_task: asyncio.Task[None] | None = None

    @property
    def is_null(self) -> bool:
        return self.client is not None and self.client.is_null

    async def start(self) -> AsyncAgent:
        if self._started:
            return self
        if self.client is None:
            self.client = await AsyncClient.connect()
        client = self.client
        if not self.agent_id:
            if client.is_null:
                self.agent_id = NULL_AGENT_ID
            else:
                principal = (await client.server_info()).principal
                if not principal.agent_id:
                    raise ValueError(
                        "AsyncAgent needs an agent_id: pass agent_id=..., set "
                        "AGENTPLANE_AGENT_ID, or use an agent API key"
                    )
                self.agent_id = principal.agent_id
        self.governor = AsyncGovernor(client, agent_id=self.agent_id, **self.governor_options)
        if self.set_default:
            set_default_governor(self.governor)
        self._started = True
        if client.is_null:
            log.info("null mode: agent %r is not registered", self.agent_id)
            return self
        self._registered(await client.registry.register_agent(self._register_request()))
        log.info("registered agent %r", self.agent_id)
        self._loop = asyncio.get_running_loop()
        self._heartbeat = self._loop.create_task(self._heartbeat_loop())
        if self.handle_sigterm and threading.current_thread() is threading.main_thread():
            with contextlib.suppress(NotImplementedError, RuntimeError):  # e.g. Windows
                self._previous_handler = signal.getsignal(signal.SIGTERM)
                self._loop.add_signal_handler(signal.SIGTERM, self._on_sigterm)
                self._signal_installed = True
        return self

    async def _heartbeat_loop(self) -> None:
        assert self.client is not None
        interval = self.lease_duration / 3
        while True:
            await asyncio.sleep(interval)
            try:
                interval = self._heartbeat_ok(
                    await self.client.registry.heartbeat_agent(
                        agent_id=self.agent_id, timeout=max(1.0, interval)
                    )
                )
                self.last_error = None
            except NotFoundError:
                log.warning("agent %r was removed; registering again", self.agent_id)
                try:
                    self._registered(
                        await self.client.registry.register_agent(self._register_request())
                    )
                    interval = self.lease_duration / 3
                except RpcError as error:
                    self.last_error = error
                    interval = min(self.lease_duration / 3, 1.0)
            except RpcError as error:
                self.last_error = error
                log.warning("heartbeat for %r failed: %s", self.agent_id, error)
                interval = min(self.lease_duration / 3, 1.0)

    def _on_sigterm(self) -> None:
        log.info("SIGTERM; deregistering agent %r", self.agent_id)
        assert self._loop is not None

        async def stop_then_reraise() -> None:
            await self.stop()
            self._reraise_sigterm()

        self._stop_task = self._loop.create_task(stop_then_reraise())

    def _restore_signal(self) -> None:
        if self._signal_installed and self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_signal_handler(signal.SIGTERM)
        super()._restore_signal()

    async def stop(self, timeout: float = 5.0) -> None:
        if self._stopped or not self._started:
            return
        self._stopped = True
        client = self.client
        assert client is not None
        if self.governor is not None:
            await self.governor.close(timeout)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        if not client.is_null:
            try:
                await client.registry.deregister_agent(agent_id=self.agent_id, timeout=timeout)
                log.info("deregistered agent %r", self.agent_id)
            except NotFoundError:
                pass
            except RpcError as error:
                self.last_error = error
                log.warning("could not deregister %r: %s", self.agent_id, error)
        self._restore_signal()
        if self.set_default:
            set_default_governor(None)
        if self._owns_client:
            await client.close()

    def governed(self, action: str, **options: Any) -> governed:
        if self.governor is None:
            raise RuntimeError("start the agent first")
        return governed(action, governor=self.governor, **options)

    def configure_tracing(self, **options: Any) -> Any:
        from agentplane._tracing import configure_tracing

        return configure_tracing(self, **options)

    async def __aenter__(self) -> AsyncAgent:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
