"""OTLP spans to rows: per-span validation (partial success), agent/session/GenAI mapping, and the
per-trace summaries of a batch.

This is the ingestion hot path (tens of thousands of spans per second per process), so it reads
the upb messages directly into tuples, with no ORM objects and no per-span dicts; attributes,
events and links stay in the span's own OTLP encoding (`payload`) until GetTrace decodes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2

from agentplane_server.context import Principal, Role

# Limits of what one span may carry. The OTLP spec leaves them to the receiver; these keep one
# span's row small enough to read back quickly, and refuse "huge attributes" span by span.
MAX_SPAN_BYTES = 256 * 1024  # the whole encoded span: attributes, events, links
MAX_NAME_CHARS = 1024  # ListTracesRequest.root_span_name accepts up to 1024 characters
MAX_ID_CHARS = 128  # agent and session ids, as everywhere in the contracts
MAX_SERVICE_CHARS = 256
MAX_MODEL_CHARS = 256
MAX_TOKENS = 10**12  # agentplane.common.v1.Usage bounds, so totals stay inside int64
MAX_COST_MICROS = 10**15
MAX_ERRORS_REPORTED = 5

# Attribute names (OpenTelemetry semantic conventions, plus Agentplane's cost attributes).
SERVICE_NAME = "service.name"
AGENT_ID = "gen_ai.agent.id"
SESSION_KEYS = ("session.id", "gen_ai.conversation.id")
RESPONSE_MODEL = "gen_ai.response.model"
REQUEST_MODEL = "gen_ai.request.model"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
# Older names of the same two, still sent by some instrumentations.
PROMPT_TOKENS = "gen_ai.usage.prompt_tokens"
COMPLETION_TOKENS = "gen_ai.usage.completion_tokens"
COST_MICROS = "agentplane.cost_micros"
COST_CURRENCY = "agentplane.cost_currency"
_SPAN_KEYS = frozenset(
    {
        AGENT_ID,
        *SESSION_KEYS,
        RESPONSE_MODEL,
        REQUEST_MODEL,
        INPUT_TOKENS,
        OUTPUT_TOKENS,
        PROMPT_TOKENS,
        COMPLETION_TOKENS,
        COST_MICROS,
        COST_CURRENCY,
    }
)
_RESOURCE_KEYS = frozenset({SERVICE_NAME, AGENT_ID, *SESSION_KEYS})
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)

# Column order of a span row (storage.tables.spans without project_id and create_time_us).
SPAN_COLUMNS = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "kind",
    "start_time_us",
    "end_time_us",
    "status_code",
    "status_message",
    "agent_id",
    "session_id",
    "service_name",
    "model",
    "input_tokens",
    "output_tokens",
    "cost_micros",
    "cost_currency",
    "payload",
)
(
    TRACE,
    SPAN,
    PARENT,
    NAME,
    KIND,
    START,
    END,
    STATUS,
    STATUS_MESSAGE,
    AGENT,
    SESSION,
    SERVICE,
    MODEL,
    INPUT,
    OUTPUT,
    COST,
    CURRENCY,
    PAYLOAD,
) = range(len(SPAN_COLUMNS))

SpanRow = tuple


class _Rejected(Exception):
    """One span cannot be stored; the message goes into the partial-success error_message."""


@dataclass
class Batch:
    """The storable spans of one Export request, and what was rejected."""

    rows: list[SpanRow] = field(default_factory=list)
    rejected: int = 0
    errors: list[str] = field(default_factory=list)

    def reject(self, where: str, reason: str) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_ERRORS_REPORTED:
            self.errors.append(f"{where}: {reason}")

    def error_message(self) -> str:
        if not self.rejected:
            return ""
        more = self.rejected - len(self.errors)
        text = "; ".join(self.errors)
        if more > 0:
            text += f"; and {more} more"
        return f"rejected {self.rejected} span(s): {text}"


def count_spans(request: trace_service_pb2.ExportTraceServiceRequest) -> int:
    return sum(len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans)


def _string(value: common_pb2.AnyValue) -> str | None:
    return value.string_value if value.WhichOneof("value") == "string_value" else None


def _integer(value: common_pb2.AnyValue, key: str, maximum: int) -> int:
    kind = value.WhichOneof("value")
    if kind == "int_value":
        number = value.int_value
    elif kind == "double_value" and value.double_value.is_integer():
        number = int(value.double_value)
    elif kind == "string_value" and value.string_value.isdigit():
        number = int(value.string_value)
    else:
        raise _Rejected(f"attribute {key!r} must be an integer")
    if not 0 <= number <= maximum:
        raise _Rejected(f"attribute {key!r} must be between 0 and {maximum}")
    return number


def _text(value: str, what: str, limit: int) -> str:
    if len(value) > limit:
        raise _Rejected(f"{what} is longer than {limit} characters")
    if "\x00" in value:
        raise _Rejected(f"{what} contains a NUL character")
    return value


def convert(request: trace_service_pb2.ExportTraceServiceRequest, principal: Principal) -> Batch:
    """Every span of `request` as a row, or counted as rejected with the reason why.

    Agent: the span's gen_ai.agent.id, else its resource's, else the credential's agent, else
    the resource's service.name. An agent credential exports only its own spans: a span or
    resource naming another agent is rejected. Session: the span's session.id or
    gen_ai.conversation.id, else its resource's.
    """
    batch = Batch()
    own_agent = principal.agent_id if principal.role is Role.AGENT else ""
    for r_index, resource_spans in enumerate(request.resource_spans):
        service = ""
        resource_agent = ""
        resource_session = ""
        resource_error = ""
        for pair in resource_spans.resource.attributes:
            key = pair.key
            if key not in _RESOURCE_KEYS:
                continue
            text = _string(pair.value)
            if text is None:
                continue
            if key == SERVICE_NAME:
                service = text
            elif key == AGENT_ID:
                resource_agent = text
            elif not resource_session:
                resource_session = text
        try:
            _text(service, "resource attribute 'service.name'", MAX_SERVICE_CHARS)
            _text(resource_agent, "resource attribute 'gen_ai.agent.id'", MAX_ID_CHARS)
            _text(resource_session, "resource session id", MAX_ID_CHARS)
            if own_agent and resource_agent and resource_agent != own_agent:
                raise _Rejected(
                    f"resource agent {resource_agent!r} is not the calling agent {own_agent!r}"
                )
        except _Rejected as exc:
            resource_error = str(exc)
        default_agent = resource_agent or principal.agent_id or service
        for s_index, scope_spans in enumerate(resource_spans.scope_spans):
            for index, span in enumerate(scope_spans.spans):
                if resource_error:
                    batch.reject(f"resource_spans[{r_index}]", resource_error)
                    continue
                try:
                    batch.rows.append(
                        _row(span, default_agent, own_agent, resource_session, service)
                    )
                except _Rejected as exc:
                    where = f"resource_spans[{r_index}].scope_spans[{s_index}].spans[{index}]"
                    batch.reject(where, str(exc))
    return batch


def _row(span, default_agent: str, own_agent: str, default_session: str, service: str) -> SpanRow:  # type: ignore[no-untyped-def]
    trace_id = span.trace_id
    if len(trace_id) != 16 or trace_id == _ZERO_TRACE:
        raise _Rejected("trace_id must be 16 bytes, not all zero")
    span_id = span.span_id
    if len(span_id) != 8 or span_id == _ZERO_SPAN:
        raise _Rejected("span_id must be 8 bytes, not all zero")
    parent = span.parent_span_id
    if parent:
        if len(parent) != 8:
            raise _Rejected("parent_span_id must be empty or 8 bytes")
        parent_hex = "" if parent == _ZERO_SPAN else parent.hex()
    else:
        parent_hex = ""
    name = span.name
    if not name:
        raise _Rejected("name is required")
    _text(name, "name", MAX_NAME_CHARS)
    start = span.start_time_unix_nano
    end = span.end_time_unix_nano
    if not start:
        raise _Rejected("start_time_unix_nano is required")
    if end < start:
        raise _Rejected("end_time_unix_nano must not be before start_time_unix_nano")
    kind = span.kind
    if not 0 <= kind <= 5:
        raise _Rejected(f"kind {kind} is not a SpanKind")
    status = span.status
    code = status.code
    if not 0 <= code <= 2:
        raise _Rejected(f"status.code {code} is not a StatusCode")
    status_message = _text(status.message, "status.message", 64 * 1024)
    size = span.ByteSize()
    if size > MAX_SPAN_BYTES:
        raise _Rejected(f"span is {size} bytes encoded, more than {MAX_SPAN_BYTES}")
    for link in span.links:
        if len(link.trace_id) != 16 or len(link.span_id) != 8:
            raise _Rejected("links must have a 16-byte trace_id and an 8-byte span_id")

    agent = session = response_model = request_model = currency = ""
    input_tokens = output_tokens = cost = 0
    legacy_input = legacy_output = None
    for pair in span.attributes:
        key = pair.key
        if key not in _SPAN_KEYS:
            continue
        value = pair.value
        if key == INPUT_TOKENS:
            input_tokens = _integer(value, key, MAX_TOKENS)
        elif key == OUTPUT_TOKENS:
            output_tokens = _integer(value, key, MAX_TOKENS)
        elif key == COST_MICROS:
            cost = _integer(value, key, MAX_COST_MICROS)
        elif key == PROMPT_TOKENS:
            legacy_input = _integer(value, key, MAX_TOKENS)
        elif key == COMPLETION_TOKENS:
            legacy_output = _integer(value, key, MAX_TOKENS)
        else:
            text = _string(value)
            if text is None:
                raise _Rejected(f"attribute {key!r} must be a string")
            if key == AGENT_ID:
                agent = text
            elif key == RESPONSE_MODEL:
                response_model = text
            elif key == REQUEST_MODEL:
                request_model = text
            elif key == COST_CURRENCY:
                if not _CURRENCY.match(text):
                    raise _Rejected(f"attribute {key!r} must be an ISO 4217 code like 'USD'")
                currency = text
            elif not session:  # session.id first, then gen_ai.conversation.id
                session = text
    if legacy_input is not None and not input_tokens:
        input_tokens = legacy_input
    if legacy_output is not None and not output_tokens:
        output_tokens = legacy_output
    if agent:
        if own_agent and agent != own_agent:
            raise _Rejected(f"span agent {agent!r} is not the calling agent {own_agent!r}")
        _text(agent, "attribute 'gen_ai.agent.id'", MAX_ID_CHARS)
    else:
        agent = default_agent
    if session:
        _text(session, "session id", MAX_ID_CHARS)
    else:
        session = default_session
    model = response_model or request_model
    if model:
        _text(model, "model", MAX_MODEL_CHARS)
    return (
        trace_id.hex(),
        span_id.hex(),
        parent_hex,
        name,
        kind,
        start // 1000,
        end // 1000,
        code,
        status_message,
        agent,
        session,
        service,
        model,
        input_tokens,
        output_tokens,
        cost,
        currency,
        span.SerializeToString(),
    )


@dataclass(slots=True)
class TraceSummary:
    """What one batch adds to a trace's summary row (merged in SQL with what is stored)."""

    trace_id: str
    root_span_name: str = ""
    root_start_us: int | None = None
    session_id: str = ""
    session_start_us: int | None = None
    start_time_us: int = 0
    end_time_us: int = 0
    span_count: int = 0
    error_count: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_micros: int = 0
    cost_currency: str = ""


def summarize(
    rows: list[SpanRow],
) -> tuple[list[TraceSummary], list[tuple[str, str, int]], list[tuple[str, str, int]]]:
    """Per-trace summaries, (trace, agent, first start) and (trace, model, first start), all
    sorted by trace id so that concurrent batches lock summary rows in the same order."""
    summaries: dict[str, TraceSummary] = {}
    agents: dict[tuple[str, str], int] = {}
    models: dict[tuple[str, str], int] = {}
    for row in rows:
        trace_id = row[TRACE]
        start = row[START]
        summary = summaries.get(trace_id)
        if summary is None:
            summary = summaries[trace_id] = TraceSummary(trace_id, start_time_us=start)
        summary.span_count += 1
        if start < summary.start_time_us:
            summary.start_time_us = start
        if row[END] > summary.end_time_us:
            summary.end_time_us = row[END]
        if row[STATUS] == 2:
            summary.error_count += 1
        if not row[PARENT] and (summary.root_start_us is None or start < summary.root_start_us):
            summary.root_start_us = start
            summary.root_span_name = row[NAME]
        if row[SESSION] and (summary.session_start_us is None or start < summary.session_start_us):
            summary.session_start_us = start
            summary.session_id = row[SESSION]
        summary.input_tokens += row[INPUT]
        summary.output_tokens += row[OUTPUT]
        if row[COST] or row[CURRENCY]:
            summary.cost_micros += row[COST]
            if not summary.cost_currency:
                summary.cost_currency = row[CURRENCY]
        if row[AGENT]:
            key = (trace_id, row[AGENT])
            if start < agents.get(key, start + 1):
                agents[key] = start
        if row[MODEL]:
            key = (trace_id, row[MODEL])
            if start < models.get(key, start + 1):
                models[key] = start
    return (
        [summaries[k] for k in sorted(summaries)],
        sorted((t, a, s) for (t, a), s in agents.items()),
        sorted((t, m, s) for (t, m), s in models.items()),
    )
