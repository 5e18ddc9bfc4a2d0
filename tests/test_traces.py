"""Traces end to end, on SQLite and PostgreSQL: two agents, each a separate process running the
real opentelemetry-sdk with its OTLP gRPC exporter (configured only by the standard OTEL_*
variables, the agent's API key in OTEL_EXPORTER_OTLP_HEADERS), ship spans of one shared trace
and of their own; ListTraces finds them by agent, session, status, root name, duration and
time, GetTrace rebuilds the tree, and the feedback on a trace comes with it.

This file is also the agent program: `python tests/test_traces.py agent '<json args>'`.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from rpcutil import expect_error, rich_error

from agentplane.admin.v1 import admin_service_pb2 as admin_pb
from agentplane.admin.v1 import admin_service_pb2_grpc as admin_rpc
from agentplane.admin.v1 import api_key_pb2
from agentplane.common.v1 import time_range_pb2
from agentplane.feedback.v1 import feedback_pb2
from agentplane.feedback.v1 import feedback_service_pb2 as feedback_pb
from agentplane.feedback.v1 import feedback_service_pb2_grpc as feedback_rpc
from agentplane.trace.v1 import trace_pb2
from agentplane.trace.v1 import trace_service_pb2 as pb
from agentplane.trace.v1 import trace_service_pb2_grpc as rpc

MS = 1_000_000  # nanoseconds


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- the agent program (runs in its own process) ------------------------------------------------


def agent_main(args: dict) -> None:
    """Emit the spans of one agent with the OpenTelemetry SDK and its OTLP gRPC exporter, then
    print what was exported. Every setting comes from the standard OTEL_* variables."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    class Recording(SpanExporter):
        def __init__(self, inner: SpanExporter) -> None:
            self.inner = inner
            self.results: list[str] = []

        def export(self, spans):  # type: ignore[no-untyped-def]
            result = self.inner.export(spans)
            self.results.append(result.name)
            return result

        def shutdown(self) -> None:
            self.inner.shutdown()

        def force_flush(self, timeout_millis: int = 30_000) -> bool:
            return self.inner.force_flush(timeout_millis)

    exporter = Recording(OTLPSpanExporter())
    provider = TracerProvider(resource=Resource.create({}))  # service.name from OTEL_SERVICE_NAME
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("agentplane-test-agent")
    base = args["base_ns"]
    out: dict = {}

    def at(ms: int) -> int:
        return base + ms * MS

    if args["role"] == "planner":
        root = tracer.start_span(
            "handle_request",
            kind=SpanKind.SERVER,
            attributes={"session.id": args["session"]},
            start_time=at(0),
        )
        context = trace.set_span_in_context(root)
        plan = tracer.start_span(
            "plan",
            context=context,
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o-2024",
                "gen_ai.usage.input_tokens": 100,
                "gen_ai.usage.output_tokens": 20,
                "agentplane.cost_micros": 1500,
                "agentplane.cost_currency": "USD",
            },
            start_time=at(10),
        )
        plan.add_event("prompt", {"chars": 42}, timestamp=at(12))
        plan.end(end_time=at(60))
        tool = tracer.start_span(
            "tool.search", context=context, attributes={"query": "order 42"}, start_time=at(70)
        )
        tool.end(end_time=at(90))
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier, context=context)
        root.end(end_time=at(100))
        out["shared_trace_id"] = format(root.get_span_context().trace_id, "032x")
        out["root_span_id"] = format(root.get_span_context().span_id, "016x")
        out["traceparent"] = carrier["traceparent"]
        # A failing job of its own, long (2 s), in no session.
        job = tracer.start_span("nightly_job", start_time=at(1000))
        job.set_status(Status(StatusCode.ERROR, "index unavailable"))
        job.record_exception(RuntimeError("index unavailable"), timestamp=at(1500))
        job.end(end_time=at(3000))
        out["error_trace_id"] = format(job.get_span_context().trace_id, "032x")
    else:
        context = TraceContextTextMapPropagator().extract({"traceparent": args["traceparent"]})
        execute = tracer.start_span(
            "execute",
            context=context,
            kind=SpanKind.CONSUMER,
            attributes={"gen_ai.conversation.id": args["session"]},
            start_time=at(120),
        )
        inner = trace.set_span_in_context(execute)
        llm = tracer.start_span(
            "llm.generate",
            context=inner,
            attributes={
                "gen_ai.request.model": "claude-x",
                "gen_ai.usage.input_tokens": 50,
                "gen_ai.usage.output_tokens": 30,
                "agentplane.cost_micros": 700,
            },
            start_time=at(130),
        )
        llm.end(end_time=at(180))
        execute.end(end_time=at(200))
        out["execute_span_id"] = format(execute.get_span_context().span_id, "016x")
        own = tracer.start_span(
            "executor_job", attributes={"session.id": args["other_session"]}, start_time=at(5000)
        )
        own.end(end_time=at(5010))
        out["own_trace_id"] = format(own.get_span_context().trace_id, "032x")
    provider.shutdown()  # flushes the batch processor: one Export call
    out["results"] = exporter.results
    print(json.dumps(out))


# -- fixtures -----------------------------------------------------------------------------------


class Agents:
    """A fresh project with two agent keys, whose processes have exported their spans."""

    def __init__(self, server) -> None:  # type: ignore[no-untyped-def]
        self.server = server
        self.project = uid("traces")
        channel = server.channel()
        admin = admin_rpc.AdminServiceStub(channel)
        admin.CreateProject(
            admin_pb.CreateProjectRequest(project_id=self.project), metadata=server.metadata()
        )
        self.md = server.metadata(**{"x-agentplane-project": self.project})
        self.planner, self.executor = uid("planner"), uid("executor")
        self.keys = {
            agent: admin.CreateApiKey(
                admin_pb.CreateApiKeyRequest(
                    role=api_key_pb2.ROLE_AGENT, agent_id=agent, display_name=agent
                ),
                metadata=self.md,
            ).key
            for agent in (self.planner, self.executor)
        }
        self.traces = rpc.TraceServiceStub(channel)
        self.feedback = feedback_rpc.FeedbackServiceStub(channel)
        self.session, self.other_session = uid("ses"), uid("ses")
        self.base_ns = time.time_ns() - 3_600_000 * MS  # an hour ago, so ranges are easy
        self.planner_out = self.run_agent(
            self.planner, {"role": "planner", "session": self.session}
        )
        self.executor_out = self.run_agent(
            self.executor,
            {
                "role": "executor",
                "session": self.session,
                "other_session": self.other_session,
                "traceparent": self.planner_out["traceparent"],
            },
        )

    def run_agent(self, agent: str, args: dict) -> dict:
        env = {
            **os.environ,
            "OTEL_SERVICE_NAME": f"{agent}-service",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{self.server.address}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer%20{self.keys[agent]}",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "20",
        }
        done = subprocess.run(
            [
                sys.executable,
                str(Path(__file__)),
                "agent",
                json.dumps({**args, "base_ns": self.base_ns}),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout.strip().splitlines()[-1])
        assert out["results"] == ["SUCCESS"], done.stderr
        return out

    def list(self, **kwargs) -> list[trace_pb2.Trace]:  # type: ignore[no-untyped-def]
        return list(self.traces.ListTraces(pb.ListTracesRequest(**kwargs), metadata=self.md).traces)

    def ids(self, **kwargs) -> list[str]:  # type: ignore[no-untyped-def]
        """The agent processes' traces that ListTraces returns, in its order (other tests of
        this module add traces of their own to the project)."""
        theirs = {
            self.planner_out["shared_trace_id"],
            self.planner_out["error_trace_id"],
            self.executor_out["own_trace_id"],
        }
        return [t.trace_id for t in self.list(page_size=500, **kwargs) if t.trace_id in theirs]


@pytest.fixture(scope="module")
def agents(server) -> Agents:  # type: ignore[no-untyped-def]
    return Agents(server)


def ts(ns: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(ns)
    return stamp


# -- tests --------------------------------------------------------------------------------------


def test_two_agent_processes_one_shared_trace(agents: Agents) -> None:
    shared = agents.planner_out["shared_trace_id"]
    error = agents.planner_out["error_trace_id"]
    own = agents.executor_out["own_trace_id"]
    # Searchable as soon as Export returned: no waiting here.
    assert agents.ids() == [own, error, shared]  # newest first by start time
    by_planner = agents.ids(agent_ids=[agents.planner])
    by_executor = agents.ids(agent_ids=[agents.executor])
    assert by_planner == [error, shared]
    assert by_executor == [own, shared]
    assert agents.ids(agent_ids=[agents.planner, agents.executor]) == [own, error, shared]
    assert agents.ids(agent_ids=["nobody"]) == []

    (trace,) = agents.list(session_id=agents.session)
    assert trace.trace_id == shared
    assert list(trace.agent_ids) == [agents.planner, agents.executor]
    assert trace.root_span_name == "handle_request"
    assert trace.span_count == 5
    assert trace.status == trace_pb2.TRACE_STATUS_OK
    assert (trace.usage.input_tokens, trace.usage.output_tokens) == (150, 50)
    assert (trace.usage.cost_micros, trace.usage.cost_currency) == (2200, "USD")
    assert list(trace.models) == ["gpt-4o-2024", "claude-x"]
    assert trace.start_time.ToNanoseconds() == agents.base_ns // 1000 * 1000
    assert trace.duration.ToMilliseconds() == 200
    assert trace.project_id == agents.project
    # A session's view lists its traces.
    assert agents.ids(session_id=agents.other_session) == [own]


def test_get_trace_rebuilds_the_tree(agents: Agents) -> None:
    shared = agents.planner_out["shared_trace_id"]
    got = agents.traces.GetTrace(pb.GetTraceRequest(trace_id=shared), metadata=agents.md)
    assert got.trace.trace_id == shared and not got.spans_truncated
    spans = {s.name: s for s in got.spans}
    assert [s.name for s in got.spans] == [
        "handle_request",
        "plan",
        "tool.search",
        "execute",
        "llm.generate",
    ]  # by start time
    children: dict[str, list[str]] = {}
    for span in got.spans:
        children.setdefault(span.parent_span_id, []).append(span.name)
    root = spans["handle_request"]
    assert root.parent_span_id == "" and root.span_id == agents.planner_out["root_span_id"]
    assert children[""] == ["handle_request"]
    assert children[root.span_id] == ["plan", "tool.search", "execute"]
    assert children[spans["execute"].span_id] == ["llm.generate"]
    assert spans["execute"].span_id == agents.executor_out["execute_span_id"]

    assert {s.name: s.agent_id for s in got.spans} == {
        "handle_request": agents.planner,
        "plan": agents.planner,
        "tool.search": agents.planner,
        "execute": agents.executor,
        "llm.generate": agents.executor,
    }
    assert spans["handle_request"].session_id == agents.session
    assert spans["execute"].session_id == agents.session  # from gen_ai.conversation.id
    assert spans["plan"].service_name == f"{agents.planner}-service"
    assert root.kind == trace_pb2.SPAN_KIND_SERVER
    assert spans["execute"].kind == trace_pb2.SPAN_KIND_CONSUMER
    plan = spans["plan"]
    assert plan.model == "gpt-4o-2024"
    assert (plan.usage.input_tokens, plan.usage.output_tokens, plan.usage.cost_micros) == (
        100,
        20,
        1500,
    )
    assert plan.usage.cost_currency == "USD"
    assert plan.attributes["gen_ai.request.model"] == "gpt-4o"
    assert plan.attributes["gen_ai.usage.input_tokens"] == 100
    assert [e.name for e in plan.events] == ["prompt"]
    assert plan.events[0].attributes["chars"] == 42
    assert plan.events[0].event_time.ToNanoseconds() == agents.base_ns + 12 * MS
    assert spans["tool.search"].attributes["query"] == "order 42"
    assert spans["llm.generate"].model == "claude-x"
    assert (plan.end_time.ToMilliseconds() - plan.start_time.ToMilliseconds()) == 50
    assert list(got.feedback) == []


def test_status_root_name_duration_and_time_filters(agents: Agents) -> None:
    shared = agents.planner_out["shared_trace_id"]
    error = agents.planner_out["error_trace_id"]
    own = agents.executor_out["own_trace_id"]
    assert agents.ids(status=trace_pb2.TRACE_STATUS_ERROR) == [error]
    assert agents.ids(status=trace_pb2.TRACE_STATUS_OK) == [own, shared]
    (failed,) = agents.list(status=trace_pb2.TRACE_STATUS_ERROR)
    assert failed.status == trace_pb2.TRACE_STATUS_ERROR and failed.session_id == ""
    assert agents.ids(root_span_name="nightly_job") == [error]
    assert agents.ids(root_span_name="plan") == []  # not a root
    assert agents.ids(min_duration=duration_pb2.Duration(seconds=1)) == [error]
    assert agents.ids(min_duration=duration_pb2.Duration(nanos=200 * MS)) == [error, shared]
    assert agents.ids(min_duration=duration_pb2.Duration(nanos=201 * MS)) == [error]
    base = agents.base_ns
    window = time_range_pb2.TimeRange(
        start_time=ts(base + 1000 * MS), end_time=ts(base + 5000 * MS)
    )
    assert agents.ids(start_time=window) == [error]  # end is exclusive
    after = time_range_pb2.TimeRange(start_time=ts(base + 1 * MS))
    assert agents.ids(start_time=after) == [own, error]
    before = time_range_pb2.TimeRange(end_time=ts(base + 1 * MS))
    assert agents.ids(start_time=before) == [shared]
    assert agents.ids(agent_ids=[agents.executor], status=trace_pb2.TRACE_STATUS_ERROR) == []


def test_pages(agents: Agents) -> None:
    seen, token = [], ""
    while True:
        page = agents.traces.ListTraces(
            pb.ListTracesRequest(page_size=1, page_token=token), metadata=agents.md
        )
        seen += [t.trace_id for t in page.traces]
        token = page.next_page_token
        if not token:
            break
    assert seen == [t.trace_id for t in agents.list(page_size=500)]
    assert len(seen) >= 3
    first = agents.traces.ListTraces(pb.ListTracesRequest(page_size=1), metadata=agents.md)
    error = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        agents.traces.ListTraces,
        pb.ListTracesRequest(page_size=1, page_token=first.next_page_token, session_id="x"),
        metadata=agents.md,
    )
    assert error.reason == "ERROR_REASON_INVALID_PAGE_TOKEN"


def test_feedback_on_a_trace_comes_with_it(agents: Agents) -> None:
    shared = agents.planner_out["shared_trace_id"]
    created = [
        agents.feedback.CreateFeedback(
            feedback_pb.CreateFeedbackRequest(
                rating=rating, trace_id=shared, agent_id=agents.executor, comment=str(i)
            ),
            metadata=agents.md,
        ).feedback
        for i, rating in enumerate([feedback_pb2.RATING_THUMBS_DOWN, feedback_pb2.RATING_THUMBS_UP])
    ]
    got = agents.traces.GetTrace(pb.GetTraceRequest(trace_id=shared), metadata=agents.md)
    assert [f.feedback_id for f in got.feedback] == [f.feedback_id for f in reversed(created)]
    other = agents.traces.GetTrace(
        pb.GetTraceRequest(trace_id=agents.planner_out["error_trace_id"]), metadata=agents.md
    )
    assert list(other.feedback) == []


def test_traces_belong_to_their_project(agents: Agents) -> None:
    shared = agents.planner_out["shared_trace_id"]
    error = expect_error(
        grpc.StatusCode.NOT_FOUND,
        agents.traces.GetTrace,
        pb.GetTraceRequest(trace_id=shared),
        metadata=agents.server.metadata(),  # the default project
    )
    assert error.reason == "ERROR_REASON_RESOURCE_NOT_FOUND"
    assert error.metadata == {"resource_type": "trace", "resource_id": shared}
    listed = agents.traces.ListTraces(
        pb.ListTracesRequest(session_id=agents.session), metadata=agents.server.metadata()
    )
    assert list(listed.traces) == []
    unknown = "f" * 32
    error = expect_error(
        grpc.StatusCode.NOT_FOUND,
        agents.traces.GetTrace,
        pb.GetTraceRequest(trace_id=unknown),
        metadata=agents.md,
    )
    assert error.metadata["resource_id"] == unknown


# -- raw OTLP Export: identity, duplicates, backpressure ----------------------------------------


def otlp_request(spans: list, resource: dict | None = None):  # type: ignore[no-untyped-def]
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2 as otlp_trace

    attributes = [
        common_pb2.KeyValue(key=k, value=common_pb2.AnyValue(string_value=v))
        for k, v in (resource or {}).items()
    ]
    return otlp.ExportTraceServiceRequest(
        resource_spans=[
            otlp_trace.ResourceSpans(
                resource=resource_pb2.Resource(attributes=attributes),
                scope_spans=[otlp_trace.ScopeSpans(spans=spans)],
            )
        ]
    )


def make_span(trace: bytes, span: int, name: str = "op", parent: int = 0, **attributes):  # type: ignore[no-untyped-def]
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2 as otlp_trace

    start = time.time_ns()
    values = []
    for key, value in attributes.items():
        any_value = (
            common_pb2.AnyValue(int_value=value)
            if isinstance(value, int)
            else common_pb2.AnyValue(string_value=value)
        )
        values.append(common_pb2.KeyValue(key=key.replace("__", "."), value=any_value))
    return otlp_trace.Span(
        trace_id=trace,
        span_id=span.to_bytes(8, "big"),
        parent_span_id=parent.to_bytes(8, "big") if parent else b"",
        name=name,
        start_time_unix_nano=start,
        end_time_unix_nano=start + 5 * MS,
        attributes=values,
    )


def otlp_stub(server):  # type: ignore[no-untyped-def]
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    return trace_service_pb2_grpc.TraceServiceStub(server.channel())


def test_agent_credential_exports_only_its_own_spans(agents: Agents) -> None:
    trace_id = uuid.uuid4().bytes
    request = otlp_request(
        [
            make_span(trace_id, 1, "mine"),
            make_span(trace_id, 2, "also-mine", 1, gen_ai__agent__id=agents.planner),
            make_span(trace_id, 3, "impostor", 1, gen_ai__agent__id=agents.executor),
        ]
    )
    key = (("authorization", f"Bearer {agents.keys[agents.planner]}"),)
    reply = otlp_stub(agents.server).Export(request, metadata=key)
    assert reply.partial_success.rejected_spans == 1
    assert agents.executor in reply.partial_success.error_message
    got = agents.traces.GetTrace(pb.GetTraceRequest(trace_id=trace_id.hex()), metadata=agents.md)
    assert sorted(s.name for s in got.spans) == ["also-mine", "mine"]
    assert {s.agent_id for s in got.spans} == {agents.planner}
    # A resource naming another agent: all of its spans are refused.
    other = otlp_request(
        [make_span(uuid.uuid4().bytes, 1)], resource={"gen_ai.agent.id": agents.executor}
    )
    assert otlp_stub(agents.server).Export(other, metadata=key).partial_success.rejected_spans == 1


def test_admin_export_maps_agent_from_resource(agents: Agents) -> None:
    trace_id = uuid.uuid4().bytes
    request = otlp_request(
        [
            make_span(trace_id, 1, "by-service"),
            make_span(trace_id, 2, "by-attribute", 1, gen_ai__agent__id="named-agent"),
        ],
        resource={"service.name": "billing-svc", "session.id": "res-session"},
    )
    reply = otlp_stub(agents.server).Export(request, metadata=agents.md)
    assert not reply.HasField("partial_success") or reply.partial_success.rejected_spans == 0
    got = agents.traces.GetTrace(pb.GetTraceRequest(trace_id=trace_id.hex()), metadata=agents.md)
    assert {s.name: s.agent_id for s in got.spans} == {
        "by-service": "billing-svc",
        "by-attribute": "named-agent",
    }
    assert {s.session_id for s in got.spans} == {"res-session"}
    assert got.trace.session_id == "res-session"
    assert list(got.trace.agent_ids) == ["billing-svc", "named-agent"]


def test_resent_spans_are_stored_once_and_late_spans_extend_the_trace(agents: Agents) -> None:
    trace_id = uuid.uuid4().bytes
    first = otlp_request(
        [
            make_span(trace_id, 2, "child", 1, gen_ai__usage__input_tokens=7),
            make_span(trace_id, 3, "child", 1, gen_ai__usage__input_tokens=5),
        ]
    )
    stub = otlp_stub(agents.server)
    stub.Export(first, metadata=agents.md)
    stub.Export(first, metadata=agents.md)  # an exporter retrying after a lost answer
    got = agents.traces.GetTrace(pb.GetTraceRequest(trace_id=trace_id.hex()), metadata=agents.md)
    assert got.trace.span_count == 2 and got.trace.usage.input_tokens == 12
    assert got.trace.root_span_name == ""  # the root has not arrived yet
    late_root = make_span(trace_id, 1, "late-root")
    late_root.start_time_unix_nano -= 1000 * MS
    stub.Export(otlp_request([late_root, late_root]), metadata=agents.md)
    got = agents.traces.GetTrace(pb.GetTraceRequest(trace_id=trace_id.hex()), metadata=agents.md)
    assert got.trace.span_count == 3 and got.trace.usage.input_tokens == 12
    assert got.trace.root_span_name == "late-root"
    assert got.trace.start_time.ToNanoseconds() == late_root.start_time_unix_nano // 1000 * 1000
    assert [s.name for s in got.spans] == ["late-root", "child", "child"]


def test_reader_and_anonymous_cannot_export(agents: Agents) -> None:
    admin = admin_rpc.AdminServiceStub(agents.server.channel())
    reader = admin.CreateApiKey(
        admin_pb.CreateApiKeyRequest(role=api_key_pb2.ROLE_READER, display_name="reader"),
        metadata=agents.md,
    ).key
    request = otlp_request([make_span(uuid.uuid4().bytes, 1)])
    stub = otlp_stub(agents.server)
    expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        stub.Export,
        request,
        metadata=(("authorization", f"Bearer {reader}"),),
    )
    expect_error(grpc.StatusCode.UNAUTHENTICATED, stub.Export, request)
    # The reader may search.
    listed = agents.traces.ListTraces(
        pb.ListTracesRequest(page_size=1), metadata=(("authorization", f"Bearer {reader}"),)
    )
    assert len(listed.traces) == 1


def test_backpressure_refuses_with_retry_info(make_server) -> None:  # type: ignore[no-untyped-def]
    server = make_server(env={"AGENTPLANE_OTLP_MAX_INFLIGHT_SPANS": "600"})
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp

    requests = []
    for _ in range(8):
        trace_id = uuid.uuid4().bytes
        requests.append(otlp_request([make_span(trace_id, i + 1, "bulk") for i in range(500)]))

    async def send_all() -> list:
        async with grpc.aio.insecure_channel(server.address) as channel:
            export = channel.unary_unary(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                request_serializer=otlp.ExportTraceServiceRequest.SerializeToString,
                response_deserializer=otlp.ExportTraceServiceResponse.FromString,
            )
            return await asyncio.gather(
                *(export(r, metadata=server.metadata()) for r in requests),
                return_exceptions=True,
            )

    results = asyncio.run(send_all())
    refused = [r for r in results if isinstance(r, grpc.RpcError)]
    accepted = [r for r in results if not isinstance(r, BaseException)]
    assert refused and accepted, results
    for error in refused:
        details = rich_error(error)
        assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details.reason == "ERROR_REASON_INGESTION_BACKPRESSURE"
        assert details.retry_delay and details.retry_delay > 0
    listed = rpc.TraceServiceStub(server.channel()).ListTraces(
        pb.ListTracesRequest(), metadata=server.metadata()
    )
    assert len(listed.traces) == len(accepted)  # every accepted request stored, whole
    assert all(t.span_count == 500 for t in listed.traces)


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "agent":
    agent_main(json.loads(sys.argv[2]))


def test_grpcurl_sees_and_calls_otlp_export(agents: Agents) -> None:
    """The OTLP service is listed by reflection, reported by health, and callable with JSON."""
    import base64

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    grpcurl = Path(sys.executable).with_name("grpcurl")
    service = "opentelemetry.proto.collector.trace.v1.TraceService"
    address = agents.server.address
    listed = subprocess.run(
        [str(grpcurl), "-plaintext", address, "list"], capture_output=True, text=True, timeout=60
    )
    assert service in listed.stdout.split(), listed.stderr
    health = health_pb2_grpc.HealthStub(agents.server.channel())
    status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
    assert status == health_pb2.HealthCheckResponse.SERVING

    trace_id = uuid.uuid4().bytes
    now = time.time_ns()
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "cli"}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": base64.b64encode(trace_id).decode(),
                                "spanId": base64.b64encode(b"\x00" * 7 + b"\x01").decode(),
                                "name": "from-grpcurl",
                                "startTimeUnixNano": str(now),
                                "endTimeUnixNano": str(now + MS),
                            },
                            {"traceId": "AAAA", "spanId": "AAAA", "name": "bad ids"},
                        ]
                    }
                ],
            }
        ]
    }
    done = subprocess.run(
        [
            str(grpcurl),
            "-plaintext",
            "-H",
            f"authorization: Bearer {agents.server.admin_key}",
            "-H",
            f"x-agentplane-project: {agents.project}",
            "-d",
            json.dumps(body),
            address,
            f"{service}/Export",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    # OTLP's generated descriptors carry their proto field names as JSON names.
    partial = json.loads(done.stdout)["partial_success"]
    assert partial["rejected_spans"] == "1" and "trace_id" in partial["error_message"]
    got = agents.traces.GetTrace(pb.GetTraceRequest(trace_id=trace_id.hex()), metadata=agents.md)
    assert [(s.name, s.agent_id) for s in got.spans] == [("from-grpcurl", "cli")]


def test_get_trace_returns_the_earliest_10000_spans(agents: Agents) -> None:
    trace_id = uuid.uuid4().bytes
    stub = otlp_stub(agents.server)
    base = time.time_ns()
    spans = []
    for i in range(10_001):
        span = make_span(trace_id, i + 1, f"s{i}", 0 if i == 0 else 1)
        span.start_time_unix_nano = base + i * 1000  # one microsecond apart, in order
        span.end_time_unix_nano = span.start_time_unix_nano + 1000
        spans.append(span)
    for start in range(0, len(spans), 2000):
        stub.Export(otlp_request(spans[start : start + 2000]), metadata=agents.md)
    got = agents.traces.GetTrace(pb.GetTraceRequest(trace_id=trace_id.hex()), metadata=agents.md)
    assert got.trace.span_count == 10_001 and got.spans_truncated
    assert len(got.spans) == 10_000
    assert got.spans[0].name == "s0" and got.spans[-1].name == "s9999"
