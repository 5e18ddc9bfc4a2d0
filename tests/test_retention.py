"""Per-project retention of sessions (with their messages), traces (with their spans), feedback,
governance decisions (with their policy rows, and trust events) and audit events, run by the
housekeeping loop of a real server, on SQLite and PostgreSQL: exactly the expired rows go,
nothing else, and the rows-removed metrics count them.

Records are made through the API (decisions, trust and audit events also written directly), then
aged by rewriting their times in the database (no long sleeps); the server runs the retention job
every 0.2 s (AGENTPLANE_RETENTION_INTERVAL).
"""

from __future__ import annotations

import re
import time
import urllib.request
import uuid

import pytest
import sqlalchemy as sa
from google.protobuf import duration_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_rpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2 as otlp_trace

from agentplane.admin.v1 import admin_service_pb2 as admin_pb
from agentplane.admin.v1 import admin_service_pb2_grpc as admin_rpc
from agentplane.admin.v1 import project_pb2
from agentplane.feedback.v1 import feedback_service_pb2 as feedback_pb
from agentplane.feedback.v1 import feedback_service_pb2_grpc as feedback_rpc
from agentplane.session.v1 import session_pb2
from agentplane.session.v1 import session_service_pb2 as session_pb
from agentplane.session.v1 import session_service_pb2_grpc as session_rpc
from agentplane_server.storage import tables
from agentplane_server.storage.db import sync_url

HOUR_US = 3_600_000_000
TWO_HOURS = duration_pb2.Duration(seconds=7200)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Fixture:
    """In one project: sessions, feedback and traces, some to be aged past retention."""

    def __init__(self, server, project_id: str) -> None:  # type: ignore[no-untyped-def]
        self.project_id = project_id
        md = server.metadata(**{"x-agentplane-project": project_id})
        channel = server.channel()
        sessions = session_rpc.SessionServiceStub(channel)
        feedback = feedback_rpc.FeedbackServiceStub(channel)
        export = otlp_rpc.TraceServiceStub(channel).Export

        def session(messages: int) -> str:
            session_id = sessions.CreateSession(
                session_pb.CreateSessionRequest(agent_id="router"), metadata=md
            ).session.session_id
            sessions.AppendMessages(
                session_pb.AppendMessagesRequest(
                    session_id=session_id,
                    messages=[
                        session_pb.MessageInput(
                            role=session_pb2.ROLE_USER, content=str(i), agent_id=f"agent-{i}"
                        )
                        for i in range(messages)
                    ],
                ),
                metadata=md,
            )
            return session_id

        def give_feedback() -> str:
            return feedback.CreateFeedback(
                feedback_pb.CreateFeedbackRequest(
                    rating=1, agent_id="router", categories=["speed", "safety"]
                ),
                metadata=md,
            ).feedback.feedback_id

        def trace(spans: int) -> str:
            trace_id = uuid.uuid4().bytes
            now = time.time_ns()
            model = common_pb2.KeyValue(
                key="gen_ai.request.model", value=common_pb2.AnyValue(string_value="m")
            )
            request = otlp.ExportTraceServiceRequest(
                resource_spans=[
                    otlp_trace.ResourceSpans(
                        scope_spans=[
                            otlp_trace.ScopeSpans(
                                spans=[
                                    otlp_trace.Span(
                                        trace_id=trace_id,
                                        span_id=(i + 1).to_bytes(8, "big"),
                                        name=f"s{i}",
                                        start_time_unix_nano=now,
                                        end_time_unix_nano=now + 1000,
                                        attributes=[
                                            model,
                                            common_pb2.KeyValue(
                                                key="gen_ai.agent.id",
                                                value=common_pb2.AnyValue(string_value=f"a{i}"),
                                            ),
                                        ],
                                    )
                                    for i in range(spans)
                                ]
                            )
                        ]
                    )
                ]
            )
            assert not export(request, metadata=md).partial_success.rejected_spans
            return trace_id.hex()

        # Expired: 3 hours old (retention 2 h). Kept: 1 hour old, and new.
        self.old_sessions = [session(3), session(2)]
        self.kept_sessions = [session(2), session(1)]
        self.old_feedback = [give_feedback() for _ in range(3)]
        self.kept_feedback = [give_feedback() for _ in range(2)]
        self.old_traces = [trace(2), trace(3)]
        self.kept_traces = [trace(1), trace(2)]
        self.old_decisions, self.kept_decisions = [uid("d"), uid("d")], [uid("d"), uid("d")]
        self.old_events, self.kept_events = [uid("te"), uid("te")], [uid("te"), uid("te")]
        self.old_audit, self.kept_audit = [uid("ae"), uid("ae")], [uid("ae"), uid("ae")]

    def add_rows(self, engine: sa.Engine) -> None:
        """Decisions (two policies each), trust events and audit events, all new for now."""
        now, p = time.time_ns() // 1000, self.project_id
        with engine.begin() as c:
            for decision_id in self.old_decisions + self.kept_decisions:
                c.execute(
                    sa.insert(tables.governance_decisions).values(
                        decision_id=decision_id,
                        project_id=p,
                        kind=1,
                        agent_id="router",
                        action="tool:x",
                        decision=1,
                        verdict=0,
                        record=b"",
                        create_time_us=now,
                    )
                )
                for policy_id in ("p1", "p2"):
                    c.execute(
                        sa.insert(tables.governance_decision_policies).values(
                            project_id=p,
                            policy_id=policy_id,
                            decision_id=decision_id,
                            create_time_us=now,
                        )
                    )
            for event_id in self.old_events + self.kept_events:
                c.execute(
                    sa.insert(tables.governance_trust_events).values(
                        event_id=event_id,
                        project_id=p,
                        agent_id="router",
                        cause=1,
                        delta=0.01,
                        score_after=0.5,
                        action="",
                        decision_id="",
                        request_id="",
                        feedback_id="",
                        actor="",
                        comment="",
                        create_time_us=now,
                    )
                )
            for event_id in self.old_audit + self.kept_audit:
                c.execute(
                    sa.insert(tables.audit_events).values(
                        event_id=event_id,
                        project_id=p,
                        actor_key_id="k",
                        actor_subject="s",
                        actor_project_id=p,
                        actor_role=1,
                        actor_agent_id="",
                        action="x",
                        resource_type="t",
                        resource_id="r",
                        request_id="",
                        create_time_us=now,
                    )
                )

    def age(self, engine: sa.Engine) -> None:
        now = time.time_ns() // 1000
        old, recent = now - 3 * HOUR_US, now - 1 * HOUR_US
        p = self.project_id
        S, F, T, SP = tables.sessions, tables.feedback, tables.traces, tables.spans
        with engine.begin() as c:
            for ids, when in ((self.old_sessions, old), (self.kept_sessions[:1], recent)):
                c.execute(
                    sa.update(S)
                    .where(S.c.project_id == p, S.c.session_id.in_(ids))
                    .values(update_time_us=when, create_time_us=when)
                )
            for ids, when in ((self.old_feedback, old), (self.kept_feedback[:1], recent)):
                c.execute(
                    sa.update(F)
                    .where(F.c.project_id == p, F.c.feedback_id.in_(ids))
                    .values(create_time_us=when, update_time_us=when)
                )
            for ids, when in ((self.old_traces, old), (self.kept_traces[:1], recent)):
                c.execute(
                    sa.update(T)
                    .where(T.c.project_id == p, T.c.trace_id.in_(ids))
                    .values(create_time_us=when, update_time_us=when)
                )
                c.execute(
                    sa.update(SP)
                    .where(SP.c.project_id == p, SP.c.trace_id.in_(ids))
                    .values(create_time_us=when)
                )
            D, DP = tables.governance_decisions, tables.governance_decision_policies
            for ids, when in ((self.old_decisions, old), (self.kept_decisions[:1], recent)):
                for table in (D, DP):
                    c.execute(
                        sa.update(table)
                        .where(table.c.project_id == p, table.c.decision_id.in_(ids))
                        .values(create_time_us=when)
                    )
            TE, AE = tables.governance_trust_events, tables.audit_events
            for table, gone, kept in (
                (TE, self.old_events, self.kept_events),
                (AE, self.old_audit, self.kept_audit),
            ):
                for ids, when in ((gone, old), (kept[:1], recent)):
                    c.execute(
                        sa.update(table)
                        .where(table.c.project_id == p, table.c.event_id.in_(ids))
                        .values(create_time_us=when)
                    )
            # The FEEDBACK_UP events of the feedback: all old. Those of expired feedback go with
            # it; those of kept feedback stay (they make a replaced rating count once).
            c.execute(
                sa.update(TE)
                .where(TE.c.project_id == p, TE.c.feedback_id != "")
                .values(create_time_us=old)
            )


def keys(engine: sa.Engine, project_id: str) -> dict[str, set]:
    """Every row of the project in the tables retention touches, by key."""
    found: dict[str, set] = {}
    with engine.connect() as c:
        for table, columns in (
            (tables.sessions, ["session_id"]),
            (tables.messages, ["session_id", "sequence"]),
            (tables.session_agents, ["session_id", "agent_id"]),
            (tables.feedback, ["feedback_id"]),
            (tables.feedback_categories, ["feedback_id", "category"]),
            (tables.traces, ["trace_id"]),
            (tables.spans, ["trace_id", "span_id"]),
            (tables.trace_agents, ["trace_id", "agent_id"]),
            (tables.trace_models, ["trace_id", "model"]),
            (tables.governance_decisions, ["decision_id"]),
            (tables.governance_decision_policies, ["decision_id", "policy_id"]),
            (tables.governance_trust_events, ["event_id", "feedback_id"]),
            (tables.audit_events, ["event_id"]),
        ):
            rows = c.execute(
                sa.select(*[table.c[name] for name in columns]).where(
                    table.c.project_id == project_id
                )
            )
            found[table.name] = {tuple(row) for row in rows}
    return found


def without(rows: dict[str, set], fixture: Fixture) -> dict[str, set]:
    """What should remain of `rows` once the fixture's expired records are gone."""
    gone_sessions, gone_feedback = set(fixture.old_sessions), set(fixture.old_feedback)
    gone_traces = set(fixture.old_traces)
    expected = {}
    for name, keys_ in rows.items():
        if name in ("sessions", "messages", "session_agents"):
            expected[name] = {k for k in keys_ if k[0] not in gone_sessions}
        elif name in ("feedback", "feedback_categories"):
            expected[name] = {k for k in keys_ if k[0] not in gone_feedback}
        elif name.startswith("governance_decision"):
            expected[name] = {k for k in keys_ if k[0] not in fixture.old_decisions}
        elif name == "governance_trust_events":
            expected[name] = {
                k for k in keys_ if k[0] not in fixture.old_events and k[1] not in gone_feedback
            }
        elif name == "audit_events":
            expected[name] = {k for k in keys_ if k[0] not in fixture.old_audit}
        else:
            expected[name] = {k for k in keys_ if k[0] not in gone_traces}
    return expected


def removed_metric(metrics_port: int, table: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
    pattern = (
        r'^agentplane_housekeeping_rows_removed_total\{job="retention",table="'
        + re.escape(table)
        + r'"\} ([0-9.e+]+)$'
    )
    match = re.search(pattern, text.decode(), re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.fixture
def retention_server(make_server):  # type: ignore[no-untyped-def]
    return make_server(env={"AGENTPLANE_RETENTION_INTERVAL": "0.2"})


def test_retention_removes_exactly_the_expired_rows(retention_server) -> None:  # type: ignore[no-untyped-def]
    server = retention_server
    admin = admin_rpc.AdminServiceStub(server.channel())
    kept_forever, expiring = uid("forever"), uid("expiring")
    admin.CreateProject(
        admin_pb.CreateProjectRequest(project_id=kept_forever), metadata=server.metadata()
    )
    admin.CreateProject(
        admin_pb.CreateProjectRequest(
            project_id=expiring,
            settings=project_pb2.ProjectSettings(
                retention=project_pb2.RetentionSettings(
                    sessions=TWO_HOURS,
                    traces=TWO_HOURS,
                    feedback=TWO_HOURS,
                    decisions=TWO_HOURS,
                    audit_events=TWO_HOURS,
                )
            ),
        ),
        metadata=server.metadata(),
    )
    fixtures = [Fixture(server, expiring), Fixture(server, kept_forever)]
    url = server.database_url or f"sqlite:///{server.data_dir / 'agentplane.db'}"
    engine = sa.create_engine(sync_url(url))
    try:
        for fixture in fixtures:
            fixture.add_rows(engine)
        before = {f.project_id: keys(engine, f.project_id) for f in fixtures}
        assert before[expiring]["messages"] and before[expiring]["spans"]
        assert before[expiring]["feedback_categories"] and before[expiring]["trace_models"]
        for fixture in fixtures:
            fixture.age(engine)
        expected = without(before[expiring], fixtures[0])
        deadline = time.monotonic() + 20
        while keys(engine, expiring) != expected and time.monotonic() < deadline:
            time.sleep(0.2)
        assert keys(engine, expiring) == expected
        # The project without retention keeps everything, old or not.
        assert keys(engine, kept_forever) == before[kept_forever]
        # A second and third run find nothing more to remove.
        time.sleep(1.5)
        assert keys(engine, expiring) == expected
    finally:
        engine.dispose()
    removed = {name: len(before[expiring][name]) - len(expected[name]) for name in before[expiring]}
    assert removed["sessions"] == 2 and removed["messages"] == 5 and removed["spans"] == 5
    assert removed["feedback"] == 3 and removed["feedback_categories"] == 6
    assert removed["governance_decisions"] == 2 and removed["governance_decision_policies"] == 4
    # 2 old events without feedback + the 3 of the expired feedback; the 2 old ones of the kept
    # feedback stay.
    assert removed["governance_trust_events"] == 5 and removed["audit_events"] == 2
    for table, count in removed.items():
        assert removed_metric(server.metrics_port, table) == count, table
