"""client.feedback, client.traces and the tracing helper against a real server, plus session ids
in spans (checked with an in-memory exporter, and end to end through OTLP)."""

from __future__ import annotations

import datetime

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import agentplane
from agentplane import NotFoundError, UnauthenticatedError, session_scope
from agentplane.feedback.v1 import feedback_pb2
from sdk.sdkutil import eventually, uid


def test_session_scope_stamps_spans() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(agentplane.session_span_processor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with session_scope("support-42"):
        assert agentplane.current_session_id() == "support-42"
        with tracer.start_as_current_span("outer"):
            assert len(agentplane.current_trace_id()) == 32
            with tracer.start_as_current_span("inner"):
                pass
    with tracer.start_as_current_span("outside"):
        pass
    assert agentplane.current_session_id() == ""
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["outer"].attributes["session.id"] == "support-42"
    assert spans["inner"].attributes["session.id"] == "support-42"
    assert "session.id" not in spans["outside"].attributes


def test_configure_tracing_ships_spans_to_agentplane(client) -> None:  # type: ignore[no-untyped-def]
    session_id = uid("traced")
    agents = []
    for agent_id in ("router", "orders"):
        provider = agentplane.configure_tracing(
            client, agent_id=f"{agent_id}-{session_id}", set_global=False, batch=False
        )
        tracer = provider.get_tracer("test")
        with session_scope(session_id), tracer.start_as_current_span(f"{agent_id}.turn") as span:
            with tracer.start_as_current_span("llm.call") as child:
                child.set_attribute("gen_ai.request.model", "gpt-4o")
                child.set_attribute("gen_ai.usage.input_tokens", 10)
            agents.append(
                (f"{agent_id}-{session_id}", format(span.get_span_context().trace_id, "032x"))
            )
        provider.shutdown()

    def listed() -> list:  # type: ignore[type-arg]
        traces = list(client.traces.list_traces(session_id=session_id))
        assert len(traces) == 2
        return traces

    traces = eventually(listed)
    assert sorted(a for t in traces for a in t.agent_ids) == sorted(a for a, _ in agents)
    trace = client.traces.get_trace(trace_id=agents[0][1])
    assert trace.trace.session_id == session_id and trace.trace.span_count == 2
    assert {s.name for s in trace.spans} == {"router.turn", "llm.call"}
    assert "gpt-4o" in trace.trace.models
    by_agent = list(client.traces.list_traces(agent_ids=[agents[1][0]]))
    assert [t.trace_id for t in by_agent] == [agents[1][1]]


def test_feedback_sub_client(client) -> None:  # type: ignore[no-untyped-def]
    feedback = client.feedback
    agent_id = uid("fb-agent")
    session_id = client.sessions.create_session(agent_id=agent_id).session.session_id
    message = client.sessions.append_messages(
        session_id=session_id,
        messages=[{"role": "ROLE_ASSISTANT", "content": "answer", "agent_id": agent_id}],
    ).messages[0]
    up = feedback.create_feedback(
        rating="RATING_THUMBS_UP",
        agent_id=agent_id,
        session_id=session_id,
        message_id=message.message_id,
        user_id="u-1",
        categories=["accuracy"],
    ).feedback
    down = feedback.create_feedback(
        rating=feedback_pb2.RATING_THUMBS_DOWN, score=0.2, agent_id=agent_id, comment="meh"
    ).feedback
    assert feedback.get_feedback(feedback_id=up.feedback_id).feedback.categories == ["accuracy"]
    listed = [f.feedback_id for f in feedback.list_feedback(agent_ids=[agent_id], page_size=1)]
    assert listed == [down.feedback_id, up.feedback_id]
    downs = list(feedback.list_feedback(agent_ids=[agent_id], rating="RATING_THUMBS_DOWN"))
    assert [f.feedback_id for f in downs] == [down.feedback_id]
    changed = feedback.update_feedback(
        feedback={"feedback_id": down.feedback_id, "comment": "better now"},
        update_mask=["comment"],
    ).feedback
    assert changed.comment == "better now"
    now = datetime.datetime.now(datetime.UTC)
    summary = feedback.summarize_feedback(
        time_range={
            "start_time": now - datetime.timedelta(hours=1),
            "end_time": now + datetime.timedelta(hours=1),
        },
        window="WINDOW_HOUR",
        agent_ids=[agent_id],
    )
    assert sum(b.up_count for b in summary.buckets) == 1
    assert sum(b.down_count for b in summary.buckets) == 1

    # A browser submits with a token and no API key.
    token = feedback.create_feedback_token(
        session_id=session_id, message_id=message.message_id, agent_id=agent_id, user_id="u-9"
    ).token
    browser = client.with_options(api_key=None)
    submitted = browser.feedback.submit_feedback(token=token, rating="RATING_THUMBS_UP").feedback
    assert submitted.agent_id == agent_id and submitted.user_id == "u-9"
    with pytest.raises(UnauthenticatedError) as caught:
        browser.feedback.submit_feedback(token=token + "x", rating="RATING_THUMBS_UP")
    assert caught.value.reason == "ERROR_REASON_FEEDBACK_TOKEN_INVALID"
    feedback.delete_feedback(feedback_id=up.feedback_id)
    with pytest.raises(NotFoundError):
        feedback.get_feedback(feedback_id=up.feedback_id)


async def test_feedback_async(aclient) -> None:  # type: ignore[no-untyped-def]
    agent_id = uid("afb")
    created = await aclient.feedback.create_feedback(
        rating="RATING_THUMBS_DOWN", agent_id=agent_id, request_id=uid("req")
    )
    listed = [f.feedback_id async for f in aclient.feedback.list_feedback(agent_ids=[agent_id])]
    assert listed == [created.feedback.feedback_id]
    traces = [t async for t in aclient.traces.list_traces(agent_ids=[agent_id])]
    assert traces == []
