"""FeedbackService end to end against a real server, on SQLite and on PostgreSQL: create, replace,
idempotency, update, delete, cross-agent filters and summaries checked against expectations the
test computes on its own, feedback tokens without an API key, roles and projects.
"""

from __future__ import annotations

import datetime as dt
import random
import time
import uuid
from collections import defaultdict

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import duration_pb2, field_mask_pb2, struct_pb2, timestamp_pb2
from rpcutil import expect_error

from agentplane.admin.v1 import admin_service_pb2 as admin_pb
from agentplane.admin.v1 import admin_service_pb2_grpc as admin_rpc
from agentplane.admin.v1 import api_key_pb2
from agentplane.common.v1 import time_range_pb2
from agentplane.feedback.v1 import feedback_pb2
from agentplane.feedback.v1 import feedback_service_pb2 as pb
from agentplane.feedback.v1 import feedback_service_pb2_grpc as rpc
from agentplane_server.storage import tables
from agentplane_server.storage.db import sync_url

UP, DOWN = feedback_pb2.RATING_THUMBS_UP, feedback_pb2.RATING_THUMBS_DOWN
HUMAN, MODEL, CODE = (
    feedback_pb2.FEEDBACK_SOURCE_HUMAN,
    feedback_pb2.FEEDBACK_SOURCE_MODEL,
    feedback_pb2.FEEDBACK_SOURCE_CODE,
)


CATEGORIES = ["accuracy", "speed", "safety", "acme.tone"]


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Project:
    """A fresh project, its admin metadata, and keys of other roles."""

    def __init__(self, server) -> None:  # type: ignore[no-untyped-def]
        self.server = server
        self.project_id = uid("fb")
        channel = server.channel()
        admin = admin_rpc.AdminServiceStub(channel)
        admin.CreateProject(
            admin_pb.CreateProjectRequest(project_id=self.project_id), metadata=server.metadata()
        )
        self.md = server.metadata(**{"x-agentplane-project": self.project_id})
        self.agent_id = uid("agent")

        def key(role: int, **fields) -> tuple[tuple[str, str], ...]:  # type: ignore[no-untyped-def]
            created = admin.CreateApiKey(
                admin_pb.CreateApiKeyRequest(role=role, display_name=uid("k"), **fields),
                metadata=self.md,
            )
            return (("authorization", f"Bearer {created.key}"),)

        self.agent_md = key(api_key_pb2.ROLE_AGENT, agent_id=self.agent_id)
        self.reader_md = key(api_key_pb2.ROLE_READER)
        self.feedback = rpc.FeedbackServiceStub(channel)

    def create(self, **fields) -> pb.CreateFeedbackResponse:  # type: ignore[no-untyped-def]
        return self.feedback.CreateFeedback(pb.CreateFeedbackRequest(**fields), metadata=self.md)

    def list_all(self, **filters) -> list[feedback_pb2.Feedback]:  # type: ignore[no-untyped-def]
        found, token = [], ""
        while True:
            page = self.feedback.ListFeedback(
                pb.ListFeedbackRequest(page_size=7, page_token=token, **filters), metadata=self.md
            )
            found += list(page.feedback)
            token = page.next_page_token
            if not token:
                return found


@pytest.fixture(scope="module")
def project(server) -> Project:  # type: ignore[no-untyped-def]
    return Project(server)


def engine_for(server) -> sa.Engine:  # type: ignore[no-untyped-def]
    url = server.database_url or f"sqlite:///{server.data_dir / 'agentplane.db'}"
    return sa.create_engine(sync_url(url))


def test_create_get_update_delete(project: Project) -> None:
    metadata = struct_pb2.Struct()
    metadata.update({"browser": "firefox", "n": 3})
    created = project.create(
        rating=DOWN,
        score=0.25,
        comment="wrong order number",
        correction="Order 42 ships today.",
        categories=["accuracy", "acme:tone"],
        source=MODEL,
        user_id="judge-1",
        agent_id="orders",
        session_id="ses-1",
        message_id="msg-1",
        trace_id="a" * 32,
        metadata=metadata,
    )
    feedback = created.feedback
    assert not created.replaced
    assert feedback.feedback_id.startswith("fb_") and feedback.project_id == project.project_id
    assert (feedback.rating, feedback.score, feedback.source) == (DOWN, 0.25, MODEL)
    assert list(feedback.categories) == ["accuracy", "acme:tone"]
    assert feedback.metadata["browser"] == "firefox"
    assert feedback.create_time == feedback.update_time
    got = project.feedback.GetFeedback(
        pb.GetFeedbackRequest(feedback_id=feedback.feedback_id), metadata=project.md
    ).feedback
    assert got == feedback

    given = feedback_pb2.Feedback(
        feedback_id=feedback.feedback_id,
        rating=UP,
        comment="ignored: not in the mask",
        categories=["clarity"],
        source=CODE,
        agent_id="ignored",
    )
    updated = project.feedback.UpdateFeedback(
        pb.UpdateFeedbackRequest(
            feedback=given,
            update_mask=field_mask_pb2.FieldMask(paths=["rating", "score", "categories"]),
        ),
        metadata=project.md,
    ).feedback
    assert updated.rating == UP and not updated.HasField("score")  # named and unset: cleared
    assert list(updated.categories) == ["clarity"]
    assert updated.comment == "wrong order number" and updated.source == MODEL
    assert updated.agent_id == "orders" and updated.create_time == feedback.create_time
    assert updated.update_time.ToMicroseconds() > feedback.update_time.ToMicroseconds()
    assert [f.feedback_id for f in project.list_all(category="clarity")] == [feedback.feedback_id]
    assert project.list_all(category="accuracy", agent_ids=["orders"]) == []

    project.feedback.DeleteFeedback(
        pb.DeleteFeedbackRequest(feedback_id=feedback.feedback_id), metadata=project.md
    )
    for call, request in (
        (project.feedback.GetFeedback, pb.GetFeedbackRequest(feedback_id=feedback.feedback_id)),
        (
            project.feedback.DeleteFeedback,
            pb.DeleteFeedbackRequest(feedback_id=feedback.feedback_id),
        ),
        (
            project.feedback.UpdateFeedback,
            pb.UpdateFeedbackRequest(
                feedback=given, update_mask=field_mask_pb2.FieldMask(paths=["rating"])
            ),
        ),
    ):
        error = expect_error(grpc.StatusCode.NOT_FOUND, call, request, metadata=project.md)
        assert error.reason == "ERROR_REASON_RESOURCE_NOT_FOUND"
        assert error.metadata == {"resource_type": "feedback", "resource_id": given.feedback_id}
    assert project.list_all(category="clarity") == []


def test_second_rating_of_a_user_replaces_the_first(project: Project) -> None:
    message = uid("msg")
    first = project.create(
        rating=UP, user_id="u-1", message_id=message, agent_id="a1", categories=["speed"]
    )
    second = project.create(
        rating=DOWN, comment="changed my mind", user_id="u-1", message_id=message, agent_id="a2"
    )
    assert second.replaced and second.feedback.feedback_id == first.feedback.feedback_id
    assert second.feedback.rating == DOWN and second.feedback.comment == "changed my mind"
    assert list(second.feedback.categories) == []
    assert second.feedback.agent_id == "a1"  # the links stay those of the first feedback
    assert second.feedback.create_time == first.feedback.create_time
    assert (
        second.feedback.update_time.ToMicroseconds() > first.feedback.update_time.ToMicroseconds()
    )
    assert [f.feedback_id for f in project.list_all(message_id=message)] == [
        first.feedback.feedback_id
    ]
    assert project.list_all(category="speed", message_id=message) == []
    # Another user's rating, and ratings without a user, count on their own.
    other = project.create(rating=UP, user_id="u-2", message_id=message)
    anonymous = [project.create(rating=UP, message_id=message) for _ in range(2)]
    assert not other.replaced and not any(a.replaced for a in anonymous)
    assert len(project.list_all(message_id=message)) == 4


def test_create_is_idempotent_by_request_id(project: Project) -> None:
    request_id = uid("req")
    first = project.create(rating=UP, agent_id="idem", request_id=request_id)
    again = project.create(rating=UP, agent_id="idem", request_id=request_id)
    assert again == first
    error = expect_error(
        grpc.StatusCode.ALREADY_EXISTS,
        project.feedback.CreateFeedback,
        pb.CreateFeedbackRequest(rating=DOWN, agent_id="idem", request_id=request_id),
        metadata=project.md,
    )
    assert error.reason == "ERROR_REASON_REQUEST_ID_CONFLICT"
    assert len(project.list_all(agent_ids=["idem"])) == 1


def test_filters_match_an_independent_expectation(server) -> None:  # type: ignore[no-untyped-def]
    world = Project(server)
    rng = random.Random(7)
    agents = ["billing", "orders", "router", "search"]
    created: list[feedback_pb2.Feedback] = []
    for i in range(90):
        fields: dict = {
            "rating": rng.choice([0, UP, DOWN]),
            "source": rng.choice([0, HUMAN, MODEL, CODE]),
            "agent_id": rng.choice(agents),
            "session_id": rng.choice(["s1", "s2", ""]),
            "trace_id": rng.choice(["1" * 32, "2" * 32, ""]),
            "user_id": rng.choice(["ann", "bob", ""]),
            "message_id": f"m{i}",
            "categories": rng.sample(
                ["accuracy", "speed", "safety", "acme.tone"], rng.randint(0, 2)
            ),
        }
        if rng.random() < 0.5:
            fields["score"] = round(rng.random(), 3)
        if not fields["rating"] and "score" not in fields and not fields["categories"]:
            fields["comment"] = "no thumb"
        created.append(world.create(**fields).feedback)
    newest_first = sorted(
        created, key=lambda f: (f.create_time.ToMicroseconds(), f.feedback_id), reverse=True
    )
    middle = sorted(f.create_time.ToMicroseconds() for f in created)[30:61]
    window = time_range_pb2.TimeRange()
    window.start_time.FromMicroseconds(middle[0])
    window.end_time.FromMicroseconds(middle[-1])

    def expect(f: feedback_pb2.Feedback, filters: dict) -> bool:
        checks = {
            "agent_ids": lambda v: f.agent_id in v,
            "rating": lambda v: f.rating == v,
            "source": lambda v: f.source == v,
            "session_id": lambda v: f.session_id == v,
            "trace_id": lambda v: f.trace_id == v,
            "user_id": lambda v: f.user_id == v,
            "message_id": lambda v: f.message_id == v,
            "category": lambda v: v in f.categories,
            "create_time": lambda v: (
                v.start_time.ToMicroseconds()
                <= f.create_time.ToMicroseconds()
                < v.end_time.ToMicroseconds()
            ),
        }
        return all(checks[name](value) for name, value in filters.items())

    cases = [
        {},
        {"rating": DOWN},
        {"rating": UP, "agent_ids": ["orders", "router"]},
        {"agent_ids": ["billing"]},
        {"source": HUMAN},  # unspecified at creation is stored as HUMAN
        {"source": CODE, "rating": DOWN},
        {"session_id": "s1", "user_id": "ann"},
        {"trace_id": "2" * 32},
        {"category": "speed"},
        {"category": "acme.tone", "rating": UP},
        {"message_id": "m5"},
        {"create_time": window},
        {"create_time": window, "rating": DOWN, "agent_ids": ["search", "orders"]},
    ]
    for filters in cases:
        expected = [f.feedback_id for f in newest_first if expect(f, filters)]
        got = [f.feedback_id for f in world.list_all(**filters)]
        assert got == expected, filters
    assert sum(1 for f in created if f.source == HUMAN) > 0
    assert all(f.source != 0 for f in created)


def to_ts(micros: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(micros)
    return stamp


def window_start(micros: int, window: int) -> int:
    """The UTC window holding `micros`, computed with datetime (not the server's arithmetic)."""
    moment = dt.datetime.fromtimestamp(micros / 1e6, tz=dt.UTC)
    if window == pb.WINDOW_HOUR:
        start = moment.replace(minute=0, second=0, microsecond=0)
    else:
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        if window == pb.WINDOW_WEEK:
            start -= dt.timedelta(days=moment.isoweekday() - 1)  # back to Monday
    return int(start.timestamp()) * 1_000_000


def test_summaries_match_an_independent_expectation(server) -> None:  # type: ignore[no-untyped-def]
    world = Project(server)
    rng = random.Random(11)
    # Saturday 2026-03-07 00:00 UTC: the data crosses hours, days and an ISO week boundary.
    origin = int(dt.datetime(2026, 3, 7, tzinfo=dt.UTC).timestamp()) * 1_000_000
    rows = []
    for i in range(400):
        created = origin + rng.randrange(0, 4 * 86_400_000_000)  # four days
        score = round(rng.random(), 4) if rng.random() < 0.4 else None
        rows.append(
            {
                "project_id": world.project_id,
                "feedback_id": f"fb_sum_{i:04d}",
                "rating": rng.choice([0, UP, DOWN]),
                "score": score,
                "comment": "",
                "correction": "",
                "categories": [],
                "source": rng.choice([HUMAN, MODEL]),
                "user_id": "",
                "agent_id": rng.choice(["alpha", "beta", ""]),
                "session_id": "",
                "message_id": "",
                "trace_id": "",
                "metadata": None,
                "dedupe_key": None,
                "create_time_us": created,
                "update_time_us": created,
            }
        )
    engine = engine_for(server)
    with engine.begin() as connection:
        connection.execute(tables.feedback.insert(), rows)
    engine.dispose()

    def expected(start: int, end: int, window: int, agents=(), source=0) -> list[tuple]:  # type: ignore[no-untyped-def]
        buckets: dict[tuple[str, int], list] = defaultdict(lambda: [0, 0, [], 0])
        for row in rows:
            if not start <= row["create_time_us"] < end:
                continue
            if agents and row["agent_id"] not in agents:
                continue
            if source and row["source"] != source:
                continue
            bucket = buckets[(row["agent_id"], window_start(row["create_time_us"], window))]
            bucket[0] += row["rating"] == UP
            bucket[1] += row["rating"] == DOWN
            if row["score"] is not None:
                bucket[2].append(row["score"])
            bucket[3] += 1
        return [
            (agent, when, up, down, len(scores), sum(scores) / len(scores) if scores else None, n)
            for (agent, when), (up, down, scores, n) in sorted(buckets.items())
        ]

    def summarize(start: int, end: int, window: int, **kwargs) -> list[tuple]:  # type: ignore[no-untyped-def]
        reply = world.feedback.SummarizeFeedback(
            pb.SummarizeFeedbackRequest(
                time_range=time_range_pb2.TimeRange(start_time=to_ts(start), end_time=to_ts(end)),
                window=window,
                **kwargs,
            ),
            metadata=world.md,
        )
        return [
            (
                b.agent_id,
                b.window_start_time.ToMicroseconds(),
                b.up_count,
                b.down_count,
                b.score_count,
                b.mean_score if b.HasField("mean_score") else None,
                b.feedback_count,
            )
            for b in reply.buckets
        ]

    def same(got: list[tuple], want: list[tuple]) -> None:
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert g[:5] == w[:5] and g[6] == w[6], (g, w)
            assert (g[5] is None) == (w[5] is None) and (g[5] is None or abs(g[5] - w[5]) < 1e-9), (
                g,
                w,
            )

    hour = 3_600_000_000
    everything = (origin - 10 * 86_400_000_000, origin + 20 * 86_400_000_000)  # <= 31 days
    for window in (pb.WINDOW_HOUR, pb.WINDOW_DAY, pb.WINDOW_WEEK):
        same(summarize(*everything, window), expected(*everything, window))
    # Bounds off the window boundaries: partial first and last buckets.
    partial = (origin + 5 * hour + 123, origin + 60 * hour + 7)
    for window in (pb.WINDOW_HOUR, pb.WINDOW_DAY, pb.WINDOW_WEEK):
        same(summarize(*partial, window), expected(*partial, window))
    same(
        summarize(*everything, pb.WINDOW_DAY, agent_ids=["beta"], source=MODEL),
        expected(*everything, pb.WINDOW_DAY, agents=("beta",), source=MODEL),
    )
    weeks = summarize(*everything, pb.WINDOW_WEEK)
    assert {dt.datetime.fromtimestamp(w[1] / 1e6, tz=dt.UTC).isoweekday() for w in weeks} == {1}
    assert len({w[1] for w in weeks}) == 2  # Saturday to Tuesday spans two ISO weeks
    assert summarize(origin - 10 * hour, origin - hour, pb.WINDOW_HOUR) == []


def test_feedback_tokens_let_a_browser_submit_without_an_api_key(project: Project) -> None:
    session, message = uid("ses"), uid("msg")
    minted = project.feedback.CreateFeedbackToken(
        pb.CreateFeedbackTokenRequest(session_id=session, message_id=message, trace_id="c" * 32),
        metadata=project.agent_md,
    )
    remaining = minted.expire_time.ToSeconds() - time.time()
    assert 3500 < remaining <= 3600  # default: one hour
    browser = rpc.FeedbackServiceStub(project.server.channel())
    submitted = browser.SubmitFeedback(  # no metadata at all
        pb.SubmitFeedbackRequest(token=minted.token, rating=DOWN, categories=["safety"])
    )
    feedback = submitted.feedback
    assert not submitted.replaced
    assert feedback.project_id == project.project_id
    assert (feedback.agent_id, feedback.session_id, feedback.message_id) == (
        project.agent_id,
        session,
        message,
    )
    assert feedback.trace_id == "c" * 32 and feedback.source == HUMAN and feedback.user_id == ""
    again = browser.SubmitFeedback(
        pb.SubmitFeedbackRequest(token=minted.token, rating=UP, comment="fine after all")
    )
    assert again.replaced and again.feedback.feedback_id == feedback.feedback_id
    listed = project.list_all(message_id=message)
    assert [(f.feedback_id, f.rating) for f in listed] == [(feedback.feedback_id, UP)]

    # A token naming a user shares the user's one feedback on the message with CreateFeedback.
    by_api = project.create(rating=UP, user_id="end-user", message_id=message)
    user_token = project.feedback.CreateFeedbackToken(
        pb.CreateFeedbackTokenRequest(session_id=session, message_id=message, user_id="end-user"),
        metadata=project.agent_md,
    ).token
    replaced = browser.SubmitFeedback(pb.SubmitFeedbackRequest(token=user_token, rating=DOWN))
    assert replaced.replaced and replaced.feedback.feedback_id == by_api.feedback.feedback_id
    assert len(project.list_all(message_id=message)) == 2


def test_feedback_tokens_are_checked(project: Project) -> None:
    browser = rpc.FeedbackServiceStub(project.server.channel())
    error = expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        project.feedback.CreateFeedbackToken,
        pb.CreateFeedbackTokenRequest(session_id="s", message_id="m", agent_id="someone-else"),
        metadata=project.agent_md,
    )
    assert error.reason == "ERROR_REASON_AGENT_IDENTITY_MISMATCH"
    token = project.feedback.CreateFeedbackToken(
        pb.CreateFeedbackTokenRequest(session_id="s", message_id=uid("m"), agent_id="any"),
        metadata=project.md,  # an admin may mint for any agent
    ).token
    prefix, body, signature = token.split(".")
    forged_body = body[:-2] + ("AA" if body[-2:] != "AA" else "BB")
    forged_signature = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    for bad in (f"{prefix}.{forged_body}.{signature}", f"{prefix}.{body}.{forged_signature}", "x"):
        error = expect_error(
            grpc.StatusCode.UNAUTHENTICATED,
            browser.SubmitFeedback,
            pb.SubmitFeedbackRequest(token=bad, rating=UP),
        )
        assert error.reason == "ERROR_REASON_FEEDBACK_TOKEN_INVALID"
    short = project.feedback.CreateFeedbackToken(
        pb.CreateFeedbackTokenRequest(
            session_id="s", message_id=uid("m"), ttl=duration_pb2.Duration(nanos=1_000_000)
        ),
        metadata=project.agent_md,
    ).token
    time.sleep(0.01)
    error = expect_error(
        grpc.StatusCode.UNAUTHENTICATED,
        browser.SubmitFeedback,
        pb.SubmitFeedbackRequest(token=short, rating=UP),
    )
    assert error.reason == "ERROR_REASON_FEEDBACK_TOKEN_INVALID" and "expired" in error.message
    assert project.list_all(agent_ids=["any"]) == []
    # One token cannot be hammered: SubmitFeedback is rate limited per token.
    codes = []
    for _ in range(12):
        try:
            browser.SubmitFeedback(pb.SubmitFeedbackRequest(token=token, rating=UP))
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            codes.append(exc.code())
    assert codes[0] == grpc.StatusCode.OK
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    assert len(project.list_all(agent_ids=["any"])) == 1


def test_roles_and_projects(project: Project, server) -> None:  # type: ignore[no-untyped-def]
    mine = project.create(rating=UP, agent_id="iso").feedback
    error = expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        project.feedback.CreateFeedback,
        pb.CreateFeedbackRequest(rating=UP, agent_id="iso"),
        metadata=project.reader_md,
    )
    assert error.reason == "ERROR_REASON_PERMISSION_DENIED"
    read = project.feedback.GetFeedback(
        pb.GetFeedbackRequest(feedback_id=mine.feedback_id), metadata=project.reader_md
    )
    assert read.feedback == mine
    # An agent may give feedback on its own answers (e.g. a self-evaluation), never on
    # another agent's.
    by_agent = project.feedback.CreateFeedback(
        pb.CreateFeedbackRequest(score=0.9, agent_id=project.agent_id, source=MODEL),
        metadata=project.agent_md,
    )
    assert by_agent.feedback.project_id == project.project_id
    assert by_agent.feedback.agent_id == project.agent_id
    expect_error(
        grpc.StatusCode.PERMISSION_DENIED,
        project.feedback.CreateFeedback,
        pb.CreateFeedbackRequest(score=0.9, agent_id="iso", source=MODEL),
        metadata=project.agent_md,
    )
    # Another project sees none of it.
    error = expect_error(
        grpc.StatusCode.NOT_FOUND,
        project.feedback.GetFeedback,
        pb.GetFeedbackRequest(feedback_id=mine.feedback_id),
        metadata=server.metadata(),
    )
    listed = project.feedback.ListFeedback(
        pb.ListFeedbackRequest(agent_ids=["iso"]), metadata=server.metadata()
    )
    assert list(listed.feedback) == []
    expect_error(
        grpc.StatusCode.UNAUTHENTICATED,
        project.feedback.ListFeedback,
        pb.ListFeedbackRequest(),
    )


def test_concurrent_ratings_of_one_user_count_once(project: Project) -> None:
    from concurrent.futures import ThreadPoolExecutor

    message = uid("msg")

    def rate(i: int) -> pb.CreateFeedbackResponse:
        return project.create(rating=UP if i % 2 else DOWN, user_id="racer", message_id=message)

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(rate, range(16)))
    assert len({r.feedback.feedback_id for r in replies}) == 1
    assert sum(not r.replaced for r in replies) == 1
    assert len(project.list_all(message_id=message)) == 1
