"""Bad input to trace ingestion and search, on SQLite and PostgreSQL.

OTLP Export: a request mixing valid spans with malformed ones (bad ids, huge attributes,
missing fields, out-of-range values) gets partial success (rejected_spans, error_message) and
every valid span of it is stored; bytes that are not an ExportTraceServiceRequest get
INVALID_ARGUMENT and store nothing. ListTraces and GetTrace: INVALID_ARGUMENT with field
violations.
"""

from __future__ import annotations

import time
import uuid

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_rpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2 as otlp_trace
from rpcutil import expect_error

from agentplane.admin.v1 import admin_service_pb2 as admin_pb
from agentplane.admin.v1 import admin_service_pb2_grpc as admin_rpc
from agentplane.common.v1 import time_range_pb2
from agentplane.trace.v1 import trace_service_pb2 as pb
from agentplane.trace.v1 import trace_service_pb2_grpc as rpc

MS = 1_000_000
INVALID = grpc.StatusCode.INVALID_ARGUMENT
TRUE = common_pb2.AnyValue(bool_value=True)
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class Env:
    def __init__(self, server) -> None:  # type: ignore[no-untyped-def]
        self.server = server
        self.project = f"bad-traces-{uuid.uuid4().hex[:8]}"
        channel = server.channel()
        admin_rpc.AdminServiceStub(channel).CreateProject(
            admin_pb.CreateProjectRequest(project_id=self.project), metadata=server.metadata()
        )
        self.md = server.metadata(**{"x-agentplane-project": self.project})
        self.traces = rpc.TraceServiceStub(channel)
        self.otlp = otlp_rpc.TraceServiceStub(channel)
        self.raw_export = channel.unary_unary(EXPORT)  # bytes in, bytes out

    def all_traces(self) -> list:
        return list(
            self.traces.ListTraces(pb.ListTracesRequest(page_size=500), metadata=self.md).traces
        )


@pytest.fixture(scope="module")
def env(server) -> Env:  # type: ignore[no-untyped-def]
    return Env(server)


def kv(key: str, **value) -> common_pb2.KeyValue:  # type: ignore[no-untyped-def]
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(**value))


def span(trace_id: bytes, number: int, **fields) -> otlp_trace.Span:  # type: ignore[no-untyped-def]
    start = time.time_ns()
    values = {
        "trace_id": trace_id,
        "span_id": number.to_bytes(8, "big"),
        "name": f"span-{number}",
        "start_time_unix_nano": start,
        "end_time_unix_nano": start + MS,
    }
    values.update(fields)
    return otlp_trace.Span(**values)


def request(*spans: otlp_trace.Span) -> otlp.ExportTraceServiceRequest:
    return otlp.ExportTraceServiceRequest(
        resource_spans=[
            otlp_trace.ResourceSpans(
                resource=resource_pb2.Resource(
                    attributes=[kv("service.name", string_value="bad-input")]
                ),
                scope_spans=[otlp_trace.ScopeSpans(spans=list(spans))],
            )
        ]
    )


def malformed(trace_id: bytes) -> dict[str, otlp_trace.Span]:
    """One malformed span per kind of fault, each with a distinct span id."""
    huge = "x" * (300 * 1024)
    return {
        "short trace id": span(b"\x01" * 15, 101),
        "zero trace id": span(bytes(16), 102),
        "short span id": span(trace_id, 103, span_id=b"\x01" * 7),
        "zero span id": span(trace_id, 104, span_id=bytes(8)),
        "bad parent id": span(trace_id, 105, parent_span_id=b"\x01\x02\x03"),
        "missing name": span(trace_id, 106, name=""),
        "missing start": span(trace_id, 107, start_time_unix_nano=0),
        "ends before start": span(
            trace_id, 108, start_time_unix_nano=10 * MS, end_time_unix_nano=5 * MS
        ),
        "huge attribute": span(trace_id, 109, attributes=[kv("blob", string_value=huge)]),
        "undefined kind": span(trace_id, 110, kind=9),
        "undefined status": span(trace_id, 111, status=otlp_trace.Status(code=7)),
        "bad link": span(
            trace_id,
            112,
            links=[otlp_trace.Span.Link(trace_id=b"\x01", span_id=b"\x02" * 8)],
        ),
        "NUL in name": span(trace_id, 113, name="a\x00b"),
        "name too long": span(trace_id, 114, name="n" * 1025),
        "session too long": span(
            trace_id, 115, attributes=[kv("session.id", string_value="s" * 129)]
        ),
        "negative tokens": span(
            trace_id, 116, attributes=[kv("gen_ai.usage.input_tokens", int_value=-1)]
        ),
        "tokens not a number": span(
            trace_id, 117, attributes=[kv("gen_ai.usage.output_tokens", string_value="many")]
        ),
        "cost beyond range": span(
            trace_id, 118, attributes=[kv("agentplane.cost_micros", int_value=10**16)]
        ),
        "bad currency": span(
            trace_id, 119, attributes=[kv("agentplane.cost_currency", string_value="usd")]
        ),
        "model not a string": span(
            trace_id, 120, attributes=[kv("gen_ai.request.model", int_value=4)]
        ),
    }


def test_malformed_spans_get_partial_success_and_valid_ones_are_stored(env: Env) -> None:
    trace_id = uuid.uuid4().bytes
    bad = malformed(trace_id)
    good = [
        span(trace_id, 1, name="root"),
        span(
            trace_id,
            2,
            name="llm",
            parent_span_id=(1).to_bytes(8, "big"),
            attributes=[
                kv("gen_ai.usage.input_tokens", int_value=3),
                kv("big.int", int_value=2**60),
                kv("bytes", bytes_value=b"\x00\x01"),
                kv(
                    "list",
                    array_value=common_pb2.ArrayValue(
                        values=[common_pb2.AnyValue(bool_value=True)]
                    ),
                ),
                kv("nan", double_value=float("nan")),
            ],
        ),
        # A parent that is all zeros means "no parent" (some SDKs send it so).
        span(trace_id, 3, name="zero-parent", parent_span_id=bytes(8)),
    ]
    spans = [good[0], *bad.values(), good[1], good[2]]
    reply = env.otlp.Export(request(*spans), metadata=env.md)
    assert reply.partial_success.rejected_spans == len(bad)
    message = reply.partial_success.error_message
    assert message.startswith(f"rejected {len(bad)} span(s): ")
    assert "trace_id must be 16 bytes" in message
    assert f"and {len(bad) - 5} more" in message

    got = env.traces.GetTrace(pb.GetTraceRequest(trace_id=trace_id.hex()), metadata=env.md)
    assert sorted(s.name for s in got.spans) == ["llm", "root", "zero-parent"]
    assert got.trace.span_count == 3 and got.trace.usage.input_tokens == 3
    llm = next(s for s in got.spans if s.name == "llm")
    assert llm.attributes["big.int"] == str(2**60)  # beyond 2^53: a decimal string
    assert llm.attributes["bytes"] == "AAE="
    assert list(llm.attributes["list"]) == [True]
    assert llm.attributes["nan"] == "NaN"
    zero_parent = next(s for s in got.spans if s.name == "zero-parent")
    assert zero_parent.parent_span_id == ""
    assert [t.trace_id for t in env.all_traces()] == [trace_id.hex()]  # nothing else stored


@pytest.mark.parametrize("fault", sorted(malformed(b"\x01" * 16)))
def test_each_fault_alone_is_rejected(env: Env, fault: str) -> None:
    trace_id = uuid.uuid4().bytes
    bad = malformed(trace_id)[fault]
    reply = env.otlp.Export(request(bad, span(trace_id, 1, name="ok")), metadata=env.md)
    assert reply.partial_success.rejected_spans == 1, fault
    assert "spans[0]" in reply.partial_success.error_message
    got = env.traces.GetTrace(pb.GetTraceRequest(trace_id=trace_id.hex()), metadata=env.md)
    assert [s.name for s in got.spans] == ["ok"]


def test_undecodable_request_is_invalid_and_stores_nothing(env: Env) -> None:
    before = env.all_traces()
    with pytest.raises(grpc.RpcError) as caught:
        env.raw_export(b"\xff\xff\xff\xff not protobuf", metadata=env.md)
    assert caught.value.code() == INVALID
    assert "ExportTraceServiceRequest" in caught.value.details()
    # A string that is not UTF-8 makes the whole request undecodable too.
    broken = request(span(uuid.uuid4().bytes, 1, name="placeholder")).SerializeToString()
    broken = broken.replace(b"placeholder", b"\xc3\x28laceholder")
    with pytest.raises(grpc.RpcError) as caught:
        env.raw_export(broken, metadata=env.md)
    assert caught.value.code() == INVALID
    assert env.all_traces() == before


def test_empty_export_is_fine(env: Env) -> None:
    reply = env.otlp.Export(otlp.ExportTraceServiceRequest(), metadata=env.md)
    assert reply.partial_success.rejected_spans == 0


def ts(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds)


LIST_CASES = [
    ("negative page size", pb.ListTracesRequest(page_size=-1), "page_size"),
    ("page token too long", pb.ListTracesRequest(page_token="x" * 1025), "page_token"),
    ("forged page token", pb.ListTracesRequest(page_token="abc.def"), "page_token"),
    ("empty agent id", pb.ListTracesRequest(agent_ids=[""]), "agent_ids[0]"),
    ("repeated agent id", pb.ListTracesRequest(agent_ids=["a", "a"]), "agent_ids"),
    ("too many agents", pb.ListTracesRequest(agent_ids=[f"a{i}" for i in range(101)]), "agent_ids"),
    ("agent id too long", pb.ListTracesRequest(agent_ids=["a" * 129]), "agent_ids[0]"),
    ("session too long", pb.ListTracesRequest(session_id="s" * 129), "session_id"),
    ("root name too long", pb.ListTracesRequest(root_span_name="r" * 1025), "root_span_name"),
    (
        "negative duration",
        pb.ListTracesRequest(min_duration=duration_pb2.Duration(seconds=-1)),
        "min_duration",
    ),
    ("undefined status", pb.ListTracesRequest(status=7), "status"),
    (
        "range backwards",
        pb.ListTracesRequest(
            start_time=time_range_pb2.TimeRange(start_time=ts(2000), end_time=ts(1000))
        ),
        "start_time",
    ),
    (
        "timestamp out of range",
        pb.ListTracesRequest(start_time=time_range_pb2.TimeRange(start_time=ts(-(10**12)))),
        "start_time.start_time",
    ),
    ("NUL in session", pb.ListTracesRequest(session_id="a\x00"), "session_id"),
]


@pytest.mark.parametrize(("case", "message", "field"), LIST_CASES, ids=[c[0] for c in LIST_CASES])
def test_list_traces_bad_input(
    env: Env, case: str, message: pb.ListTracesRequest, field: str
) -> None:
    error = expect_error(INVALID, env.traces.ListTraces, message, metadata=env.md)
    assert field in error.field_violations, (case, error.field_violations)


GET_CASES = [
    ("empty", ""),
    ("upper case", "A" * 32),
    ("too short", "a" * 31),
    ("too long", "a" * 33),
    ("not hex", "g" * 32),
    ("all zero", "0" * 32),
]


@pytest.mark.parametrize(("case", "trace_id"), GET_CASES, ids=[c[0] for c in GET_CASES])
def test_get_trace_bad_id(env: Env, case: str, trace_id: str) -> None:
    error = expect_error(
        INVALID, env.traces.GetTrace, pb.GetTraceRequest(trace_id=trace_id), metadata=env.md
    )
    assert "trace_id" in error.field_violations
    assert error.reason == "ERROR_REASON_INVALID_REQUEST"
