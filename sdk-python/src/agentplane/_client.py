# ruff: noqa: ASYNC109 - `timeout` is a gRPC deadline or a bounded wait, part of the API.
"""``Client`` and ``AsyncClient``: one channel, one typed sub-client per service.

Layers, as in temporalio/sdk-python: the generated stubs (``agentplane.<service>.v1``) -> the
transport (deadline, metadata, retry, typed errors; ``_transport.py``) -> the generated
sub-clients (``_services.py``) -> these two classes, which own the channel and the settings.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import grpc

from agentplane._config import ConnectConfig, TLSConfig, resolve
from agentplane._contract import CONTRACT_DIGEST, CONTRACT_VERSION
from agentplane._retry import RetryPolicy
from agentplane._services import (
    SERVICE_CLIENTS,
    AdminServiceClient,
    AsyncAdminServiceClient,
    AsyncFeedbackServiceClient,
    AsyncGovernanceServiceClient,
    AsyncInferenceServiceClient,
    AsyncRegistryServiceClient,
    AsyncSessionServiceClient,
    AsyncTraceServiceClient,
    FeedbackServiceClient,
    GovernanceServiceClient,
    InferenceServiceClient,
    RegistryServiceClient,
    SessionServiceClient,
    TraceServiceClient,
)
from agentplane._transport import AsyncTransport, NullTransport, SyncTransport
from agentplane.admin.v1 import admin_service_pb2

log = logging.getLogger("agentplane")
_null_announced = threading.Event()
C = TypeVar("C", bound="_ClientBase")


def _announce_null_mode() -> None:
    message = (
        "null mode (no AGENTPLANE_URL and no target): calls are not sent, "
        "Agent, governed() and tracing run as no-ops so the agent also runs standalone"
    )
    if _null_announced.is_set():
        log.info(message)
    else:
        _null_announced.set()
        log.warning(message)


class _ClientBase:
    config: ConnectConfig

    @property
    def is_null(self) -> bool:
        """True in null mode: nothing is sent, helpers are no-ops."""
        return self.config.null

    @property
    def target(self) -> str:
        return self.config.target

    def _contract_matches(self, info: admin_service_pb2.GetServerInfoResponse) -> bool:
        if self.is_null:
            return True
        if info.contract_digest != CONTRACT_DIGEST:
            log.warning(
                "the server speaks contract %s (%s), this SDK was built from %s (%s)",
                info.contract_version,
                info.contract_digest,
                CONTRACT_VERSION,
                CONTRACT_DIGEST,
            )
            return False
        return True


class Client(_ClientBase):
    """A synchronous Agentplane client.

    ``Client.connect()`` with no arguments reads ``AGENTPLANE_URL`` and ``AGENTPLANE_API_KEY``;
    without a URL it runs in null mode. Sub-clients: ``sessions``, ``feedback``, ``traces``,
    ``registry``, ``governance``, ``inference``, ``admin``; each has its generated stub as
    ``.stub``, and the channel is ``client.channel``.
    """

    sessions: SessionServiceClient
    feedback: FeedbackServiceClient
    traces: TraceServiceClient
    registry: RegistryServiceClient
    governance: GovernanceServiceClient
    inference: InferenceServiceClient
    admin: AdminServiceClient

    def __init__(
        self,
        config: ConnectConfig,
        *,
        channel: grpc.Channel | None = None,
        interceptors: Sequence[Any] = (),
    ) -> None:
        self.config = config
        self._owns_channel = channel is None
        if config.null:
            self.channel: grpc.Channel | None = None
            self._transport: SyncTransport | NullTransport = NullTransport(config, is_async=False)
            _announce_null_mode()
        else:
            if channel is None:
                if config.tls is None:
                    channel = grpc.insecure_channel(config.target, options=config.options())
                else:
                    channel = grpc.secure_channel(
                        config.target, config.tls.credentials(), options=config.options()
                    )
                if interceptors:
                    channel = grpc.intercept_channel(channel, *interceptors)
            self.channel = channel
            self._transport = SyncTransport(channel, config)
        for attribute, sync_class, _ in SERVICE_CLIENTS:
            setattr(self, attribute, sync_class(self._transport))  # type: ignore[arg-type]

    @classmethod
    def connect(
        cls,
        target: str | None = None,
        *,
        api_key: str | None = None,
        tls: bool | TLSConfig | None = None,
        project: str | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        interceptors: Sequence[grpc.UnaryUnaryClientInterceptor] = (),
        channel_options: Sequence[tuple[str, Any]] = (),
        validate: bool = False,
    ) -> Client:
        """Connect to ``target`` (``host:port``, ``grpc://`` or ``grpcs://``), or to
        ``AGENTPLANE_URL``. The channel connects lazily: no call is made here.

        ``api_key`` (default ``AGENTPLANE_API_KEY``) is sent as ``authorization: Bearer``;
        ``tls`` is True, False or a TLSConfig (default: by scheme, or ``AGENTPLANE_CA_CERT``);
        ``project`` sends ``x-agentplane-project`` (admin keys acting on another project);
        ``timeout`` is the default deadline of every call in seconds (default 10);
        ``validate=True`` checks requests with protovalidate before sending (extra: validate).
        """
        config = resolve(
            target,
            api_key=api_key,
            tls=tls,
            project=project,
            timeout=timeout,
            retry=retry,
            headers=headers,
            channel_options=channel_options,
            validate=validate,
        )
        return cls(config, interceptors=interceptors)

    def with_options(self, **changes: Any) -> Client:
        """A client on the same channel with other settings, e.g. ``project="p2"``,
        ``api_key=...``, ``timeout=...`` or ``headers={...}``."""
        clone = type(self)(replace(self.config, **changes), channel=self.channel)
        clone._owns_channel = False
        return clone

    def server_info(
        self, *, timeout: float | None = None
    ) -> admin_service_pb2.GetServerInfoResponse:
        """GetServerInfo: the server's version, contract, services and the caller's identity."""
        return self.admin.get_server_info(timeout=timeout)

    def check_contract(self) -> bool:
        """True when the server speaks the contract this SDK was built from (logs if not)."""
        return self._contract_matches(self.server_info())

    def close(self) -> None:
        if self.channel is not None and self._owns_channel:
            self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(target={self.target or 'null mode'!r})"


class AsyncClient(_ClientBase):
    """The asyncio twin of ``Client``: ``client = await AsyncClient.connect(...)``; every
    unary method is a coroutine, list methods are async iterators, streams are ``async for``.
    """

    sessions: AsyncSessionServiceClient
    feedback: AsyncFeedbackServiceClient
    traces: AsyncTraceServiceClient
    registry: AsyncRegistryServiceClient
    governance: AsyncGovernanceServiceClient
    inference: AsyncInferenceServiceClient
    admin: AsyncAdminServiceClient

    def __init__(
        self,
        config: ConnectConfig,
        *,
        channel: grpc.aio.Channel | None = None,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> None:
        self.config = config
        self._owns_channel = channel is None
        if config.null:
            self.channel: grpc.aio.Channel | None = None
            self._transport: AsyncTransport | NullTransport = NullTransport(config, is_async=True)
            _announce_null_mode()
        else:
            if channel is None:
                if config.tls is None:
                    channel = grpc.aio.insecure_channel(
                        config.target, options=config.options(), interceptors=interceptors
                    )
                else:
                    channel = grpc.aio.secure_channel(
                        config.target,
                        config.tls.credentials(),
                        options=config.options(),
                        interceptors=interceptors,
                    )
            self.channel = channel
            self._transport = AsyncTransport(channel, config)
        for attribute, _, async_class in SERVICE_CLIENTS:
            setattr(self, attribute, async_class(self._transport))  # type: ignore[arg-type]

    @classmethod
    async def connect(
        cls,
        target: str | None = None,
        *,
        api_key: str | None = None,
        tls: bool | TLSConfig | None = None,
        project: str | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
        channel_options: Sequence[tuple[str, Any]] = (),
        validate: bool = False,
    ) -> AsyncClient:
        """As ``Client.connect``; call it inside the event loop that will use the client."""
        config = resolve(
            target,
            api_key=api_key,
            tls=tls,
            project=project,
            timeout=timeout,
            retry=retry,
            headers=headers,
            channel_options=channel_options,
            validate=validate,
        )
        return cls(config, interceptors=interceptors)

    def with_options(self, **changes: Any) -> AsyncClient:
        """A client on the same channel with other settings (see ``Client.with_options``)."""
        clone = type(self)(replace(self.config, **changes), channel=self.channel)
        clone._owns_channel = False
        return clone

    async def server_info(
        self, *, timeout: float | None = None
    ) -> admin_service_pb2.GetServerInfoResponse:
        return await self.admin.get_server_info(timeout=timeout)

    async def check_contract(self) -> bool:
        return self._contract_matches(await self.server_info())

    async def close(self) -> None:
        if self.channel is not None and self._owns_channel:
            await self.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncClient(target={self.target or 'null mode'!r})"
