"""The trust boundary between agents, and robustness at the edges, on SQLite and PostgreSQL:
who may write feedback about whom and which feedback moves trust, who may report on a
decision, who may set quotas and manage which keys, and bad bytes or values that must answer
INVALID_ARGUMENT (never UNKNOWN or INTERNAL, never a traceback in the log)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from rpcutil import expect_error, rich_error
from test_governance_helpers import Project, uid

from agentplane.admin.v1 import admin_service_pb2 as admin_pb
from agentplane.admin.v1 import api_key_pb2, project_pb2
from agentplane.common.v1 import usage_pb2
from agentplane.feedback.v1 import feedback_pb2
from agentplane.feedback.v1 import feedback_service_pb2 as fb
from agentplane.feedback.v1 import feedback_service_pb2_grpc as fb_rpc
from agentplane.governance.v1 import decision_pb2 as D
from agentplane.governance.v1 import governance_service_pb2 as gov_pb
from agentplane.governance.v1 import policy_pb2, trust_pb2
from agentplane.session.v1 import session_pb2
from agentplane.session.v1 import session_service_pb2 as session_pb
from agentplane.session.v1 import session_service_pb2_grpc as session_rpc
from agentplane.trace.v1 import trace_service_pb2 as trace_pb
from agentplane.trace.v1 import trace_service_pb2_grpc as trace_rpc

UP, DOWN = feedback_pb2.RATING_THUMBS_UP, feedback_pb2.RATING_THUMBS_DOWN
MISMATCH = "ERROR_REASON_AGENT_IDENTITY_MISMATCH"


class Fleet(Project):
    """A project with two agents ("billing", "search") and feedback and session stubs."""

    def __init__(self, server) -> None:  # type: ignore[no-untyped-def]
        super().__init__(server, agent_id="billing")
        channel = server.channel()
        self.feedback = fb_rpc.FeedbackServiceStub(channel)
        self.sessions = session_rpc.SessionServiceStub(channel)
        self.other = self.key(api_key_pb2.ROLE_AGENT, agent_id="search")

    def trust(self, agent_id: str) -> trust_pb2.TrustScore:
        return self.gov.GetTrustScore(
            gov_pb.GetTrustScoreRequest(agent_id=agent_id), metadata=self.md
        ).trust_score

    def message(self, md) -> str:  # type: ignore[no-untyped-def]
        """A message written by the credential's agent; returns its id."""
        session_id = uid("s")
        self.sessions.CreateSession(
            session_pb.CreateSessionRequest(session_id=session_id), metadata=md
        )
        appended = self.sessions.AppendMessages(
            session_pb.AppendMessagesRequest(
                session_id=session_id,
                messages=[session_pb.MessageInput(role=session_pb2.ROLE_ASSISTANT, content="hi")],
            ),
            metadata=md,
        )
        return appended.messages[0].message_id

    def create(self, md, **fields) -> fb.CreateFeedbackResponse:  # type: ignore[no-untyped-def]
        return self.feedback.CreateFeedback(fb.CreateFeedbackRequest(**fields), metadata=md)


@pytest.fixture
def fleet(server) -> Fleet:  # type: ignore[no-untyped-def]
    return Fleet(server)


# -- feedback and trust --------------------------------------------------------------------------


def test_an_agent_cannot_write_feedback_about_another_agent(fleet: Fleet) -> None:
    before = fleet.trust("search")
    for _ in range(5):
        error = expect_error(
            grpc.StatusCode.PERMISSION_DENIED,
            fleet.create,
            fleet.agent,
            agent_id="search",
            rating=DOWN,
            source=feedback_pb2.FEEDBACK_SOURCE_MODEL,
        )
        assert error.reason == MISMATCH
    assert fleet.trust("search").score == pytest.approx(before.score)
    assert fleet.trust("search").event_count == 0
    listed = fleet.feedback.ListFeedback(fb.ListFeedbackRequest(), metadata=fleet.md)
    assert list(listed.feedback) == []  # nothing stored


def test_an_agent_naming_another_agents_message_is_refused(fleet: Fleet) -> None:
    theirs = fleet.message(fleet.other)
    error = expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        fleet.create,
        fleet.agent,
        message_id=theirs,
        rating=DOWN,
        source=feedback_pb2.FEEDBACK_SOURCE_CODE,
    )
    assert error.reason == MISMATCH
    error = expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        fleet.feedback.CreateFeedbackToken,
        fb.CreateFeedbackTokenRequest(session_id="s", message_id=theirs, user_id="u1"),
        metadata=fleet.agent,
    )
    assert error.reason == MISMATCH
    # Its own message is fine.
    mine = fleet.message(fleet.agent)
    token = fleet.feedback.CreateFeedbackToken(
        fb.CreateFeedbackTokenRequest(session_id="s", message_id=mine, user_id="u1"),
        metadata=fleet.agent,
    )
    assert token.token


def test_what_an_agent_says_about_itself_never_moves_its_trust(fleet: Fleet) -> None:
    error = expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        fleet.create,
        fleet.agent,
        agent_id="billing",
        rating=UP,
        source=feedback_pb2.FEEDBACK_SOURCE_HUMAN,
    )
    assert "feedback token" in error.message
    mine = fleet.message(fleet.agent)
    created = [
        fleet.create(fleet.agent, rating=UP, user_id=f"u{i}", message_id=mine).feedback
        for i in range(5)
    ]
    # Recorded, as a model's verdict, about itself...
    assert {(f.agent_id, f.source) for f in created} == {
        ("billing", feedback_pb2.FEEDBACK_SOURCE_MODEL)
    }
    # ...but the trust score has not moved.
    trust = fleet.trust("billing")
    assert trust.event_count == 0 and trust.score == pytest.approx(0.5)


def test_a_persons_verdict_and_an_operators_still_move_trust(fleet: Fleet) -> None:
    mine = fleet.message(fleet.agent)
    token = fleet.feedback.CreateFeedbackToken(
        fb.CreateFeedbackTokenRequest(session_id="s", message_id=mine, user_id="alice"),
        metadata=fleet.agent,
    ).token
    submitted = fleet.feedback.SubmitFeedback(fb.SubmitFeedbackRequest(token=token, rating=DOWN))
    assert submitted.feedback.source == feedback_pb2.FEEDBACK_SOURCE_HUMAN
    assert fleet.trust("billing").score < 0.5
    fleet.create(fleet.md, agent_id="search", rating=DOWN)
    assert fleet.trust("search").event_count == 1


def test_an_agent_changes_only_the_feedback_it_wrote(fleet: Fleet) -> None:
    about_it = fleet.create(fleet.md, agent_id="billing", rating=DOWN).feedback
    about_other = fleet.create(fleet.md, agent_id="search", rating=DOWN).feedback
    by_other = fleet.create(fleet.other, agent_id="search", rating=UP).feedback
    mask = field_mask_pb2.FieldMask(paths=["rating"])
    for target in (about_it, about_other, by_other):
        changed = feedback_pb2.Feedback(feedback_id=target.feedback_id, rating=UP)
        error = expect_error(
            grpc.StatusCode.PERMISSION_DENIED,
            fleet.feedback.UpdateFeedback,
            fb.UpdateFeedbackRequest(feedback=changed, update_mask=mask),
            metadata=fleet.agent,
        )
        assert error.reason == MISMATCH
        expect_error(
            grpc.StatusCode.PERMISSION_DENIED,
            fleet.feedback.DeleteFeedback,
            fb.DeleteFeedbackRequest(feedback_id=target.feedback_id),
            metadata=fleet.agent,
        )
        stored = fleet.feedback.GetFeedback(
            fb.GetFeedbackRequest(feedback_id=target.feedback_id), metadata=fleet.md
        ).feedback
        assert stored.rating == target.rating  # untouched
    own = fleet.create(fleet.agent, agent_id="billing", rating=DOWN).feedback
    changed = feedback_pb2.Feedback(feedback_id=own.feedback_id, rating=UP)
    updated = fleet.feedback.UpdateFeedback(
        fb.UpdateFeedbackRequest(feedback=changed, update_mask=mask), metadata=fleet.agent
    )
    assert updated.feedback.rating == UP
    fleet.feedback.DeleteFeedback(
        fb.DeleteFeedbackRequest(feedback_id=own.feedback_id), metadata=fleet.agent
    )


def test_an_agents_feedback_never_replaces_a_persons(fleet: Fleet) -> None:
    mine = fleet.message(fleet.agent)
    person = fleet.create(fleet.md, agent_id="billing", user_id="bob", message_id=mine, rating=DOWN)
    own = fleet.create(fleet.agent, user_id="bob", message_id=mine, rating=UP)
    assert not own.replaced and own.feedback.feedback_id != person.feedback.feedback_id
    kept = fleet.feedback.GetFeedback(
        fb.GetFeedbackRequest(feedback_id=person.feedback.feedback_id), metadata=fleet.md
    ).feedback
    assert kept.rating == DOWN


# -- decisions and budgets -----------------------------------------------------------------------


def test_only_the_agent_a_decision_was_made_for_reports_on_it(fleet: Fleet) -> None:
    calls = policy_pb2.Budget(metric=policy_pb2.BUDGET_METRIC_CALLS, limit=1, per_agent=True)
    calls.window.FromSeconds(3600)
    fleet.policy("one-call", policy_pb2.POLICY_EFFECT_ALLOW, actions=["llm:*"], budgets=[calls])
    first = fleet.check("llm:go", md=fleet.agent)
    assert first.decision == D.DECISION_ALLOW
    assert fleet.check("llm:go", md=fleet.agent).decision == D.DECISION_DENY  # spent
    refund = gov_pb.ReportExecutionRequest(
        action="llm:go",
        outcome=trust_pb2.EXECUTION_OUTCOME_SUCCESS,
        decision_id=first.decision_id,
        usage=usage_pb2.Usage(),
    )
    error = expect_error(
        grpc.StatusCode.PERMISSION_DENIED, fleet.gov.ReportExecution, refund, metadata=fleet.other
    )
    assert error.reason == MISMATCH
    # An operator naming the wrong agent is refused too.
    named = gov_pb.ReportExecutionRequest()
    named.CopyFrom(refund)
    named.agent_id = "search"
    expect_error(
        grpc.StatusCode.INVALID_ARGUMENT, fleet.gov.ReportExecution, named, metadata=fleet.md
    )
    # The budget was not refunded, and search's trust did not move.
    assert fleet.check("llm:go", md=fleet.agent).decision == D.DECISION_DENY
    assert fleet.trust("search").event_count == 0


# -- quotas, retention masks and keys ------------------------------------------------------------


def test_project_masks_apply_and_only_admins_set_quotas(fleet: Fleet) -> None:
    stub, project_id = fleet.admin_stub, fleet.project_id

    def update(md, *paths: str, **settings) -> project_pb2.Project:  # type: ignore[no-untyped-def]
        return stub.UpdateProject(
            admin_pb.UpdateProjectRequest(
                project=project_pb2.Project(
                    project_id=project_id, settings=project_pb2.ProjectSettings(**settings)
                ),
                update_mask=field_mask_pb2.FieldMask(paths=list(paths)),
            ),
            metadata=md,
        ).project

    admin = fleet.server.metadata(**{"x-agentplane-project": project_id})
    quotas = project_pb2.ProjectQuotas(max_api_keys=40, inference_tokens_per_day=7)
    assert update(admin, "settings.quotas", quotas=quotas).settings.quotas == quotas
    only = update(admin, "settings.quotas.max_api_keys", quotas=project_pb2.ProjectQuotas())
    assert only.settings.quotas.max_api_keys == 0
    assert only.settings.quotas.inference_tokens_per_day == 7  # other quotas kept
    retention = project_pb2.RetentionSettings(sessions=duration_pb2.Duration(seconds=7200))
    changed = update(fleet.md, "settings.retention.sessions", retention=retention)
    assert changed.settings.retention.sessions.seconds == 7200
    assert changed.settings.quotas.inference_tokens_per_day == 7
    for paths in (["settings.quotas"], ["settings.quotas.max_api_keys"], ["settings"]):
        expect_error(
            grpc.StatusCode.PERMISSION_DENIED,
            update,
            fleet.md,
            *paths,
            quotas=project_pb2.ProjectQuotas(max_api_keys=1000),
        )
    assert update(admin, "display_name").settings.quotas.inference_tokens_per_day == 7
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, update, admin, "settings.nothing")
    assert "update_mask" in error.field_violations


def test_a_project_admin_manages_only_keys_below_its_role(fleet: Fleet) -> None:
    stub = fleet.admin_stub
    operator = fleet.server.metadata(**{"x-agentplane-project": fleet.project_id})
    for role in (api_key_pb2.ROLE_ADMIN, api_key_pb2.ROLE_PROJECT_ADMIN):
        expect_error(
            grpc.StatusCode.PERMISSION_DENIED,
            stub.CreateApiKey,
            admin_pb.CreateApiKeyRequest(role=role, display_name="x"),
            metadata=fleet.md,
        )
        above = stub.CreateApiKey(
            admin_pb.CreateApiKeyRequest(role=role, display_name=uid("k")), metadata=operator
        ).api_key
        expect_error(
            grpc.StatusCode.PERMISSION_DENIED,
            stub.RevokeApiKey,
            admin_pb.RevokeApiKeyRequest(key_id=above.key_id),
            metadata=fleet.md,
        )
        still = stub.GetApiKey(admin_pb.GetApiKeyRequest(key_id=above.key_id), metadata=operator)
        assert still.api_key.state == api_key_pb2.API_KEY_STATE_ACTIVE
    agent_key = stub.CreateApiKey(
        admin_pb.CreateApiKeyRequest(role=api_key_pb2.ROLE_AGENT, agent_id="x", display_name="a"),
        metadata=fleet.md,
    ).api_key
    revoked = stub.RevokeApiKey(
        admin_pb.RevokeApiKeyRequest(key_id=agent_key.key_id), metadata=fleet.md
    ).api_key
    assert revoked.state == api_key_pb2.API_KEY_STATE_REVOKED


# -- values past their types' range -------------------------------------------------------------


def test_out_of_range_values_answer_invalid_argument(fleet: Fleet) -> None:
    huge = duration_pb2.Duration(seconds=2**62)
    error = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        fleet.admin_stub.CreateProject,
        admin_pb.CreateProjectRequest(
            project_id=uid("p"),
            settings=project_pb2.ProjectSettings(
                retention=project_pb2.RetentionSettings(traces=huge)
            ),
        ),
        metadata=fleet.server.metadata(),
    )
    assert "settings.retention.traces" in error.field_violations
    traces = trace_rpc.TraceServiceStub(fleet.server.channel())
    error = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        traces.ListTraces,
        trace_pb.ListTracesRequest(min_duration=huge),
        metadata=fleet.md,
    )
    assert "min_duration" in error.field_violations
    # Within the well-known type's range, the largest duration is a filter like any other.
    most = trace_pb.ListTracesRequest(min_duration=duration_pb2.Duration(seconds=315_576_000_000))
    assert list(traces.ListTraces(most, metadata=fleet.md).traces) == []


def test_a_feedback_token_with_foreign_characters_is_just_invalid(fleet: Fleet) -> None:
    token = fleet.feedback.CreateFeedbackToken(
        fb.CreateFeedbackTokenRequest(session_id="s", message_id="m", user_id="u"),
        metadata=fleet.agent,
    ).token
    head, _, signature = token.rpartition(".")
    for forged in (f"{head}.{signature[:-2]}é✓", f"{head}.ü", "fbt1.é.é"):
        error = expect_error(
            grpc.StatusCode.UNAUTHENTICATED,
            fleet.feedback.SubmitFeedback,
            fb.SubmitFeedbackRequest(token=forged, rating=UP),
        )
        assert error.reason == "ERROR_REASON_FEEDBACK_TOKEN_INVALID"


# -- bytes that do not parse ---------------------------------------------------------------------


def contract_methods() -> list[tuple[str, bool, object]]:
    """(path, server-streaming, request descriptor) of every method the server serves under
    the pipeline: the contract's services and the OTLP trace service."""
    from google.protobuf import descriptor_pool

    from agentplane.contract import contract_services
    from agentplane_server.trace.servicer import OTLP_TRACE_SERVICE

    pool = descriptor_pool.Default()
    return [
        (f"/{name}/{method.name}", method.server_streaming, method.input_type)
        for name in [*(s.full_name for s in contract_services()), OTLP_TRACE_SERVICE]
        for method in pool.FindServiceByName(name).methods
    ]


def _deep_nesting(depth: int = 200) -> bytes:
    """A Struct-in-Value chain (google.protobuf.Struct field 1 is a map of Values) nested
    past the parser's recursion limit, as raw bytes."""
    inner = b""
    for _ in range(depth):
        value = b"\x2a" + _varint(len(inner)) + inner  # Value.struct_value = 5
        entry = b"\x0a\x01k" + b"\x12" + _varint(len(value)) + value  # map entry key, value
        inner = b"\x0a" + _varint(len(entry)) + entry  # Struct.fields = 1
    return inner


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_bytes_that_do_not_parse_answer_invalid_argument_on_every_rpc(fleet: Fleet) -> None:
    channel = fleet.server.channel()
    corrupt = {
        "truncated varint": b"\x08\xff\xff\xff",
        "length past the end": b"\x0a\x7fabc",
        "wire type 7": b"\x0f",
    }
    from grpc_health.v1 import health_pb2

    health = ("/grpc.health.v1.Health/Check", False, health_pb2.HealthCheckRequest.DESCRIPTOR)
    seen = 0
    for path, streaming, request_type in [*contract_methods(), health]:
        payloads = dict(corrupt)
        text = next((f for f in request_type.fields if f.type == f.TYPE_STRING), None)
        if text is not None:  # invalid UTF-8 in a string field
            payloads["invalid UTF-8"] = _varint(text.number << 3 | 2) + b"\x02\xc3\x28"
        for name, payload in payloads.items():
            with pytest.raises(grpc.RpcError) as caught:
                if streaming:
                    list(channel.unary_stream(path)(payload, metadata=fleet.md, timeout=10))
                else:
                    channel.unary_unary(path)(payload, metadata=fleet.md, timeout=10)
            error = rich_error(caught.value)
            assert error.code == grpc.StatusCode.INVALID_ARGUMENT, (path, name, error)
            if not path.startswith("/grpc."):
                assert error.reason == "ERROR_REASON_INVALID_REQUEST", (path, name)
                assert error.request_id, (path, name)
                assert "(request)" in error.field_violations
            seen += 1
    assert seen > 4 * 50  # every method of every service, several payloads each
    # A Struct nested past the parser's limit, in a request that carries one.
    nested = b"\x0a\x03t:x" + b"\x1a" + _varint(len(_deep_nesting())) + _deep_nesting()
    check = channel.unary_unary("/agentplane.governance.v1.GovernanceService/CheckPermission")
    with pytest.raises(grpc.RpcError) as caught:
        check(nested, metadata=fleet.md, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Without credentials too, and the log holds no traceback, only rate-limited warnings.
    for _ in range(50):
        with pytest.raises(grpc.RpcError) as caught:
            check(b"\x0a\x02\xc3\x28", timeout=10)
        assert caught.value.code() in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.UNAUTHENTICATED,
        )
    logs = fleet.server.logs()
    assert "Traceback" not in logs
    assert logs.count("malformed request bytes") <= 3, "the warning is rate-limited"


def test_public_methods_still_answer_behind_the_malformed_bytes_check(fleet: Fleet) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(fleet.server.channel())
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=5)
    first = next(watch)  # Watch writes through its context rather than yielding
    watch.cancel()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    check = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert check.status == health_pb2.HealthCheckResponse.SERVING
