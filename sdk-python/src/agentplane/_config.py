"""Connection settings, from arguments or from AGENTPLANE_* environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc

from agentplane._retry import RetryPolicy

ENV_URL = "AGENTPLANE_URL"
ENV_API_KEY = "AGENTPLANE_API_KEY"
ENV_PROJECT = "AGENTPLANE_PROJECT"
ENV_AGENT_ID = "AGENTPLANE_AGENT_ID"
ENV_CA_CERT = "AGENTPLANE_CA_CERT"
ENV_CLIENT_CERT = "AGENTPLANE_CLIENT_CERT"
ENV_CLIENT_KEY = "AGENTPLANE_CLIENT_KEY"
ENV_TIMEOUT = "AGENTPLANE_TIMEOUT"

DEFAULT_PORT = 50051
DEFAULT_TLS_PORT = 443
DEFAULT_TIMEOUT = 10.0

# Reconnect within seconds after a server restart (gRPC's default backoff grows to 120 s), and
# keep long watch streams alive through idle proxies. The server permits pings without calls.
DEFAULT_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 3000),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.enable_retries", 0),  # the SDK retries itself, by the contract's idempotency
)


@dataclass(frozen=True)
class TLSConfig:
    """TLS toward the server. Every field is optional: ``TLSConfig()`` uses the system roots.

    ``client_cert``/``client_private_key`` (PEM) authenticate this client by mutual TLS;
    ``domain`` overrides the name checked in the server certificate.
    """

    server_root_ca_cert: bytes | None = None
    client_cert: bytes | None = None
    client_private_key: bytes | None = None
    domain: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.server_root_ca_cert,
            private_key=self.client_private_key,
            certificate_chain=self.client_cert,
        )


@dataclass(frozen=True)
class ConnectConfig:
    """Everything a client needs to reach Agentplane. ``target`` empty means null mode."""

    target: str = ""
    api_key: str | None = None
    tls: TLSConfig | None = None
    project: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    headers: Mapping[str, str] = field(default_factory=dict)
    channel_options: Sequence[tuple[str, Any]] = ()
    # Check requests against the contract's buf.validate rules before sending (extra: validate).
    validate: bool = False

    @property
    def null(self) -> bool:
        return not self.target

    def call_metadata(self) -> tuple[tuple[str, str], ...]:
        metadata: list[tuple[str, str]] = []
        if self.api_key:
            metadata.append(("authorization", f"Bearer {self.api_key}"))
        if self.project:
            metadata.append(("x-agentplane-project", self.project))
        metadata.extend((k.lower(), v) for k, v in self.headers.items())
        return tuple(metadata)

    def options(self) -> list[tuple[str, Any]]:
        from agentplane import __version__

        given = dict(self.channel_options)
        merged = dict(DEFAULT_CHANNEL_OPTIONS)
        merged["grpc.primary_user_agent"] = f"agentplane-python/{__version__}"
        if self.tls is not None and self.tls.domain:
            merged["grpc.ssl_target_name_override"] = self.tls.domain
        merged.update(given)
        return list(merged.items())

    def with_overrides(self, **changes: Any) -> ConnectConfig:
        return replace(self, **changes)


def parse_target(url: str, tls: bool | TLSConfig | None) -> tuple[str, TLSConfig | None]:
    """``host:port``, ``grpc://host:port`` (plaintext) or ``grpcs://``/``https://`` (TLS).

    An explicit ``tls`` argument wins over the scheme; without a port, 50051 is used for
    plaintext and 443 for TLS.
    """
    url = url.strip()
    scheme = ""
    if "://" in url:
        scheme, url = url.split("://", 1)
        scheme = scheme.lower()
        if scheme not in ("grpc", "http", "grpcs", "https"):
            raise ValueError(f"unsupported scheme {scheme!r} in Agentplane URL")
    url = url.rstrip("/")
    secure = scheme in ("grpcs", "https")
    config: TLSConfig | None
    if isinstance(tls, TLSConfig):
        config = tls
    elif tls is True or (tls is None and secure):
        config = TLSConfig()
    else:
        config = None
    host = url
    if not _has_port(url):
        host = f"{url}:{DEFAULT_TLS_PORT if config is not None else DEFAULT_PORT}"
    return host, config


def _has_port(host: str) -> bool:
    if host.startswith("["):  # [::1]:50051
        return "]:" in host
    return host.count(":") == 1 and host.rsplit(":", 1)[1].isdigit()


def tls_from_env(env: Mapping[str, str]) -> TLSConfig | None:
    ca, cert, key = env.get(ENV_CA_CERT), env.get(ENV_CLIENT_CERT), env.get(ENV_CLIENT_KEY)
    if not (ca or cert or key):
        return None
    return TLSConfig(
        server_root_ca_cert=Path(ca).read_bytes() if ca else None,
        client_cert=Path(cert).read_bytes() if cert else None,
        client_private_key=Path(key).read_bytes() if key else None,
    )


def resolve(
    target: str | None,
    *,
    api_key: str | None,
    tls: bool | TLSConfig | None,
    project: str | None,
    timeout: float | None,
    retry: RetryPolicy | None,
    headers: Mapping[str, str] | None,
    channel_options: Sequence[tuple[str, Any]],
    validate: bool = False,
    env: Mapping[str, str] | None = None,
) -> ConnectConfig:
    """Arguments first, then the environment. No target anywhere means null mode."""
    env = os.environ if env is None else env
    url = target if target is not None else env.get(ENV_URL, "")
    if tls is None:
        tls = tls_from_env(env)
    host, tls_config = parse_target(url, tls) if url else ("", None)
    if timeout is None:
        timeout = float(env.get(ENV_TIMEOUT) or DEFAULT_TIMEOUT)
    return ConnectConfig(
        target=host,
        api_key=api_key if api_key is not None else env.get(ENV_API_KEY) or None,
        tls=tls_config,
        project=project if project is not None else env.get(ENV_PROJECT) or None,
        timeout=timeout,
        retry=retry or RetryPolicy(),
        headers=dict(headers or {}),
        channel_options=tuple(channel_options),
        validate=validate,
    )
