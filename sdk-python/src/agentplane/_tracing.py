"""Tracing: one call ships OpenTelemetry spans to Agentplane, and session ids go into spans.

Agentplane serves the standard OTLP gRPC TraceService on its own port, so ``configure_tracing``
only wires the stock OpenTelemetry SDK and OTLP exporter (the ``otel`` extra) to the client's
target and credentials, with the agent's identity on the resource (``service.name``,
``gen_ai.agent.id``). ``session_scope(session_id)`` marks the work of one conversation: every span
started inside it gets ``session.id`` (the attribute the trace service reads), and the id also
rides in W3C baggage, so a downstream agent that extracts the context sees it too.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from agentplane._config import ENV_AGENT_ID, ConnectConfig, TLSConfig, resolve

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

try:  # the API alone is enough to read the current span and baggage
    from opentelemetry import baggage as _otel_baggage
    from opentelemetry import context as _otel_context
    from opentelemetry import trace as _otel_trace
except ImportError:  # pragma: no cover - OpenTelemetry is an optional extra
    _otel_trace = None  # type: ignore[assignment]
    _otel_baggage = None  # type: ignore[assignment]
    _otel_context = None  # type: ignore[assignment]

log = logging.getLogger("agentplane")

SESSION_ATTRIBUTE = "session.id"
AGENT_ATTRIBUTE = "gen_ai.agent.id"
_session_id: contextvars.ContextVar[str] = contextvars.ContextVar(
    "agentplane_session_id", default=""
)


def current_session_id() -> str:
    """The session id of the enclosing ``session_scope`` (or W3C baggage), else ""."""
    session_id = _session_id.get()
    if session_id or _otel_baggage is None:
        return session_id
    value = _otel_baggage.get_baggage(SESSION_ATTRIBUTE)
    return str(value) if value else ""


def current_trace_id() -> str:
    """The W3C trace id (32 hex digits) of the current span, else ""."""
    if _otel_trace is None:
        return ""
    context = _otel_trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


@contextlib.contextmanager
def session_scope(session_id: str) -> Iterator[str]:
    """Spans started inside belong to ``session_id`` (works in sync and async code)."""
    token = _session_id.set(session_id)
    otel_token = None
    if _otel_baggage is not None and _otel_context is not None:
        otel_token = _otel_context.attach(_otel_baggage.set_baggage(SESSION_ATTRIBUTE, session_id))
    try:
        yield session_id
    finally:
        if otel_token is not None and _otel_context is not None:
            _otel_context.detach(otel_token)
        _session_id.reset(token)


class _SessionProcessorMixin:
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        session_id = _session_id.get()
        if not session_id and _otel_baggage is not None:
            value = _otel_baggage.get_baggage(SESSION_ATTRIBUTE, parent_context)
            session_id = str(value) if value else ""
        if session_id:
            span.set_attribute(SESSION_ATTRIBUTE, session_id)

    def on_end(self, span: Any) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


@functools.cache
def _session_processor_class() -> type:
    from opentelemetry.sdk.trace import SpanProcessor

    class SessionSpanProcessor(_SessionProcessorMixin, SpanProcessor):
        """Stamps ``session.id`` on spans started in a ``session_scope``."""

    return SessionSpanProcessor


def session_span_processor() -> Any:
    """A SpanProcessor that stamps ``session.id`` on spans started in a ``session_scope``
    (``configure_tracing`` adds it; add it yourself to a TracerProvider you build)."""
    return _session_processor_class()()


def configure_tracing(
    source: Any = None,
    *,
    agent_id: str | None = None,
    service_name: str | None = None,
    target: str | None = None,
    api_key: str | None = None,
    tls: bool | TLSConfig | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    set_global: bool = True,
    batch: bool = True,
) -> TracerProvider:
    """Configure OpenTelemetry to export spans to Agentplane, as this agent.

    ``source`` is an Agent/AsyncAgent (its client and agent_id are used), a Client/AsyncClient
    (its target and credentials), or None (``target``/``api_key``/``tls`` or the AGENTPLANE_*
    environment). In null mode spans are still made (session ids included) but not exported.
    Returns the TracerProvider; ``set_global`` also makes it the global one (once per process:
    OpenTelemetry refuses to replace a global provider). Needs
    ``pip install 'agentplane-sdk[otel]'``.
    """
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError as error:  # pragma: no cover - depends on the extra
        raise ImportError(
            "configure_tracing needs OpenTelemetry: pip install 'agentplane-sdk[otel]'"
        ) from error

    client = getattr(source, "client", source)
    if agent_id is None:
        agent_id = getattr(source, "agent_id", None) or os.environ.get(ENV_AGENT_ID, "")
    config: ConnectConfig = (
        client.config
        if client is not None
        else resolve(
            target,
            api_key=api_key,
            tls=tls,
            project=None,
            timeout=None,
            retry=None,
            headers=None,
            channel_options=(),
        )
    )
    from agentplane import __version__

    attributes: dict[str, Any] = {
        "service.name": service_name or agent_id or "agentplane-agent",
        "telemetry.sdk.language": "python",
        "agentplane.sdk.version": __version__,
    }
    if agent_id:
        attributes[AGENT_ATTRIBUTE] = agent_id
    attributes.update(resource_attributes or {})
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(session_span_processor())
    if config.null:
        log.info("null mode: spans are made but not exported")
    else:
        exporter = OTLPSpanExporter(
            endpoint=config.target,
            insecure=config.tls is None,
            credentials=config.tls.credentials() if config.tls is not None else None,
            headers=dict(config.call_metadata()),
        )
        provider.add_span_processor(
            BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        )
    if set_global and _otel_trace is not None:
        _otel_trace.set_tracer_provider(provider)
    return provider
