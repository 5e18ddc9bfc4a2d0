"""Bad input across FeedbackService, on SQLite and PostgreSQL: every request type with missing,
oversize and malformed fields gets INVALID_ARGUMENT with a BadRequest field violation naming the
field (as interceptors/validation.py writes paths: `categories[0]`, `feedback.score`), and
stores nothing: the project's feedback and the target feedback are unchanged after each case.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2, struct_pb2, timestamp_pb2
from google.protobuf.message import Message
from rpcutil import rich_error

from agentplane.admin.v1 import admin_service_pb2 as admin_pb
from agentplane.admin.v1 import admin_service_pb2_grpc as admin_rpc
from agentplane.common.v1 import time_range_pb2
from agentplane.feedback.v1 import feedback_pb2
from agentplane.feedback.v1 import feedback_service_pb2 as pb
from agentplane.feedback.v1 import feedback_service_pb2_grpc as rpc

INVALID = grpc.StatusCode.INVALID_ARGUMENT
UP = feedback_pb2.RATING_THUMBS_UP
MIB = 1024 * 1024


@dataclass(frozen=True)
class Target:
    feedback: feedback_pb2.Feedback
    token: str
    list_token: str  # a ListFeedback page token issued for rating=THUMBS_UP


class Env:
    def __init__(self, server) -> None:  # type: ignore[no-untyped-def]
        self.server = server
        self.project = f"bad-fb-{uuid.uuid4().hex[:8]}"
        channel = server.channel()
        admin_rpc.AdminServiceStub(channel).CreateProject(
            admin_pb.CreateProjectRequest(project_id=self.project), metadata=server.metadata()
        )
        self.md = server.metadata(**{"x-agentplane-project": self.project})
        self.stub = rpc.FeedbackServiceStub(channel)

    def everything(self) -> list[feedback_pb2.Feedback]:
        found, token = [], ""
        while True:
            page = self.stub.ListFeedback(
                pb.ListFeedbackRequest(page_size=500, page_token=token), metadata=self.md
            )
            found += list(page.feedback)
            token = page.next_page_token
            if not token:
                return found

    def target(self) -> Target:
        feedback = self.stub.CreateFeedback(
            pb.CreateFeedbackRequest(
                rating=UP, user_id="u", message_id=uuid.uuid4().hex, categories=["speed"]
            ),
            metadata=self.md,
        ).feedback
        self.stub.CreateFeedback(
            pb.CreateFeedbackRequest(rating=UP, agent_id="second"), metadata=self.md
        )
        token = self.stub.CreateFeedbackToken(
            pb.CreateFeedbackTokenRequest(session_id="s", message_id=uuid.uuid4().hex),
            metadata=self.md,
        ).token
        page = self.stub.ListFeedback(
            pb.ListFeedbackRequest(page_size=1, rating=UP), metadata=self.md
        )
        assert page.next_page_token
        return Target(feedback, token, page.next_page_token)


@pytest.fixture(scope="module")
def env(server) -> Env:  # type: ignore[no-untyped-def]
    return Env(server)


# -- request builders ---------------------------------------------------------------------------


def big_struct(size: int = 64 * 1024) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct["blob"] = "x" * size
    return struct


def nan_struct() -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct["x"] = float("nan")
    return struct


def ts(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds)


def create(**fields) -> pb.CreateFeedbackRequest:  # type: ignore[no-untyped-def]
    fields.setdefault("rating", UP)
    fields.setdefault("agent_id", "agent")
    return pb.CreateFeedbackRequest(**fields)


def update(t: Target, paths: list[str] | None = None, **fields) -> pb.UpdateFeedbackRequest:  # type: ignore[no-untyped-def]
    feedback = feedback_pb2.Feedback(feedback_id=t.feedback.feedback_id, **fields)
    return pb.UpdateFeedbackRequest(
        feedback=feedback, update_mask=field_mask_pb2.FieldMask(paths=paths or ["rating"])
    )


def summarize(start: int = 0, end: int = 3600, **fields) -> pb.SummarizeFeedbackRequest:  # type: ignore[no-untyped-def]
    fields.setdefault("window", pb.WINDOW_DAY)
    return pb.SummarizeFeedbackRequest(
        time_range=time_range_pb2.TimeRange(start_time=ts(start), end_time=ts(end)), **fields
    )


def token_request(**fields) -> pb.CreateFeedbackTokenRequest:  # type: ignore[no-untyped-def]
    fields.setdefault("session_id", "s")
    fields.setdefault("message_id", "m")
    return pb.CreateFeedbackTokenRequest(**fields)


@dataclass(frozen=True)
class Case:
    name: str
    rpc: str
    build: Callable[[Target], Message]
    field: str
    reason: str = "ERROR_REASON_INVALID_REQUEST"
    anonymous: bool = False  # SubmitFeedback: no API key


CASES = [
    # CreateFeedback
    Case(
        "create: no judgement",
        "CreateFeedback",
        lambda t: pb.CreateFeedbackRequest(agent_id="a"),
        "(request)",
    ),
    Case(
        "create: no target",
        "CreateFeedback",
        lambda t: pb.CreateFeedbackRequest(rating=UP),
        "(request)",
    ),
    Case("create: undefined rating", "CreateFeedback", lambda t: create(rating=5), "rating"),
    Case("create: score above 1", "CreateFeedback", lambda t: create(score=1.5), "score"),
    Case("create: negative score", "CreateFeedback", lambda t: create(score=-0.1), "score"),
    Case("create: NaN score", "CreateFeedback", lambda t: create(score=float("nan")), "score"),
    Case(
        "create: comment too long",
        "CreateFeedback",
        lambda t: create(comment="c" * 16385),
        "comment",
    ),
    Case(
        "create: correction over 1 MiB",
        "CreateFeedback",
        lambda t: create(correction="c" * (MIB + 1)),
        "correction",
    ),
    Case(
        "create: 17 categories",
        "CreateFeedback",
        lambda t: create(categories=[f"c{i}" for i in range(17)]),
        "categories",
    ),
    Case(
        "create: repeated category",
        "CreateFeedback",
        lambda t: create(categories=["speed", "speed"]),
        "categories",
    ),
    Case(
        "create: category pattern",
        "CreateFeedback",
        lambda t: create(categories=["Speed"]),
        "categories[0]",
    ),
    Case(
        "create: empty category",
        "CreateFeedback",
        lambda t: create(categories=["ok", ""]),
        "categories[1]",
    ),
    Case(
        "create: category too long",
        "CreateFeedback",
        lambda t: create(categories=["a" * 65]),
        "categories[0]",
    ),
    Case("create: undefined source", "CreateFeedback", lambda t: create(source=9), "source"),
    Case("create: user too long", "CreateFeedback", lambda t: create(user_id="u" * 257), "user_id"),
    Case(
        "create: agent pattern", "CreateFeedback", lambda t: create(agent_id="-agent"), "agent_id"
    ),
    Case(
        "create: agent too long", "CreateFeedback", lambda t: create(agent_id="a" * 129), "agent_id"
    ),
    Case(
        "create: session pattern",
        "CreateFeedback",
        lambda t: create(session_id="a b"),
        "session_id",
    ),
    Case(
        "create: message too long",
        "CreateFeedback",
        lambda t: create(message_id="m" * 129),
        "message_id",
    ),
    Case(
        "create: trace upper case",
        "CreateFeedback",
        lambda t: create(trace_id="A" * 32),
        "trace_id",
    ),
    Case(
        "create: trace too short", "CreateFeedback", lambda t: create(trace_id="a" * 31), "trace_id"
    ),
    Case(
        "create: metadata over 64 KiB",
        "CreateFeedback",
        lambda t: create(metadata=big_struct()),
        "metadata",
    ),
    Case(
        "create: NaN in metadata",
        "CreateFeedback",
        lambda t: create(metadata=nan_struct()),
        'metadata.fields["x"]',
    ),
    Case(
        "create: request id too long",
        "CreateFeedback",
        lambda t: create(request_id="r" * 129),
        "request_id",
    ),
    Case("create: NUL in comment", "CreateFeedback", lambda t: create(comment="a\x00"), "comment"),
    # GetFeedback / DeleteFeedback
    Case("get: empty id", "GetFeedback", lambda t: pb.GetFeedbackRequest(), "feedback_id"),
    Case(
        "get: id too long",
        "GetFeedback",
        lambda t: pb.GetFeedbackRequest(feedback_id="f" * 129),
        "feedback_id",
    ),
    Case("delete: empty id", "DeleteFeedback", lambda t: pb.DeleteFeedbackRequest(), "feedback_id"),
    Case(
        "delete: NUL in id",
        "DeleteFeedback",
        lambda t: pb.DeleteFeedbackRequest(feedback_id=t.feedback.feedback_id + "\x00"),
        "feedback_id",
    ),
    # UpdateFeedback
    Case(
        "update: no feedback",
        "UpdateFeedback",
        lambda t: pb.UpdateFeedbackRequest(update_mask=field_mask_pb2.FieldMask(paths=["rating"])),
        "feedback",
    ),
    Case(
        "update: no mask",
        "UpdateFeedback",
        lambda t: pb.UpdateFeedbackRequest(feedback=t.feedback),
        "update_mask",
    ),
    Case(
        "update: empty mask",
        "UpdateFeedback",
        lambda t: pb.UpdateFeedbackRequest(
            feedback=t.feedback, update_mask=field_mask_pb2.FieldMask()
        ),
        "update_mask",
    ),
    Case(
        "update: immutable path",
        "UpdateFeedback",
        lambda t: update(t, ["source"], source=2),
        "update_mask",
    ),
    Case(
        "update: unknown path",
        "UpdateFeedback",
        lambda t: update(t, ["rating", "nope"]),
        "update_mask",
    ),
    Case(
        "update: no feedback id",
        "UpdateFeedback",
        lambda t: pb.UpdateFeedbackRequest(
            feedback=feedback_pb2.Feedback(rating=UP),
            update_mask=field_mask_pb2.FieldMask(paths=["rating"]),
        ),
        "(request)",
    ),
    Case(
        "update: score above 1",
        "UpdateFeedback",
        lambda t: update(t, ["score"], score=2.0),
        "feedback.score",
    ),
    Case(
        "update: undefined rating",
        "UpdateFeedback",
        lambda t: update(t, rating=4),
        "feedback.rating",
    ),
    Case(
        "update: bad category",
        "UpdateFeedback",
        lambda t: update(t, ["categories"], categories=["ok", "Not Ok"]),
        "feedback.categories[1]",
    ),
    Case(
        "update: metadata over 64 KiB",
        "UpdateFeedback",
        lambda t: update(t, ["metadata"], metadata=big_struct()),
        "feedback.metadata",
    ),
    Case(
        "update: comment too long",
        "UpdateFeedback",
        lambda t: update(t, ["comment"], comment="c" * 16385),
        "feedback.comment",
    ),
    # ListFeedback
    Case(
        "list: negative page size",
        "ListFeedback",
        lambda t: pb.ListFeedbackRequest(page_size=-1),
        "page_size",
    ),
    Case(
        "list: page token too long",
        "ListFeedback",
        lambda t: pb.ListFeedbackRequest(page_token="p" * 1025),
        "page_token",
    ),
    Case(
        "list: forged page token",
        "ListFeedback",
        lambda t: pb.ListFeedbackRequest(page_token="abc.def"),
        "page_token",
        "ERROR_REASON_INVALID_PAGE_TOKEN",
    ),
    Case(
        "list: page token of other filters",
        "ListFeedback",
        lambda t: pb.ListFeedbackRequest(page_token=t.list_token, rating=2),
        "page_token",
        "ERROR_REASON_INVALID_PAGE_TOKEN",
    ),
    Case(
        "list: empty agent",
        "ListFeedback",
        lambda t: pb.ListFeedbackRequest(agent_ids=[""]),
        "agent_ids[0]",
    ),
    Case(
        "list: repeated agent",
        "ListFeedback",
        lambda t: pb.ListFeedbackRequest(agent_ids=["a", "a"]),
        "agent_ids",
    ),
    Case(
        "list: 101 agents",
        "ListFeedback",
        lambda t: pb.ListFeedbackRequest(agent_ids=[f"a{i}" for i in range(101)]),
        "agent_ids",
    ),
    Case(
        "list: undefined rating",
        "ListFeedback",
        lambda t: pb.ListFeedbackRequest(rating=3),
        "rating",
    ),
    Case(
        "list: range backwards",
        "ListFeedback",
        lambda t: pb.ListFeedbackRequest(
            create_time=time_range_pb2.TimeRange(start_time=ts(10), end_time=ts(5))
        ),
        "create_time",
    ),
    Case(
        "list: session too long",
        "ListFeedback",
        lambda t: pb.ListFeedbackRequest(session_id="s" * 129),
        "session_id",
    ),
    Case(
        "list: bad trace id",
        "ListFeedback",
        lambda t: pb.ListFeedbackRequest(trace_id="xyz"),
        "trace_id",
    ),
    Case(
        "list: user too long",
        "ListFeedback",
        lambda t: pb.ListFeedbackRequest(user_id="u" * 257),
        "user_id",
    ),
    Case(
        "list: undefined source",
        "ListFeedback",
        lambda t: pb.ListFeedbackRequest(source=8),
        "source",
    ),
    Case(
        "list: category pattern",
        "ListFeedback",
        lambda t: pb.ListFeedbackRequest(category="Speed"),
        "category",
    ),
    # SummarizeFeedback
    Case(
        "summarize: no range",
        "SummarizeFeedback",
        lambda t: pb.SummarizeFeedbackRequest(window=pb.WINDOW_DAY),
        "time_range",
    ),
    Case("summarize: no window", "SummarizeFeedback", lambda t: summarize(window=0), "window"),
    Case(
        "summarize: undefined window", "SummarizeFeedback", lambda t: summarize(window=9), "window"
    ),
    Case(
        "summarize: open range",
        "SummarizeFeedback",
        lambda t: pb.SummarizeFeedbackRequest(
            time_range=time_range_pb2.TimeRange(start_time=ts(0)), window=pb.WINDOW_DAY
        ),
        "(request)",
    ),
    Case(
        "summarize: 32 days by hour",
        "SummarizeFeedback",
        lambda t: summarize(0, 32 * 86400, window=pb.WINDOW_HOUR),
        "(request)",
    ),
    Case(
        "summarize: 367 days by day",
        "SummarizeFeedback",
        lambda t: summarize(0, 367 * 86400, window=pb.WINDOW_DAY),
        "(request)",
    ),
    Case(
        "summarize: range backwards",
        "SummarizeFeedback",
        lambda t: summarize(100, 50),
        "time_range",
    ),
    Case(
        "summarize: repeated agent",
        "SummarizeFeedback",
        lambda t: summarize(agent_ids=["a", "a"]),
        "agent_ids",
    ),
    Case(
        "summarize: undefined source", "SummarizeFeedback", lambda t: summarize(source=6), "source"
    ),
    # CreateFeedbackToken
    Case(
        "token: no session",
        "CreateFeedbackToken",
        lambda t: token_request(session_id=""),
        "session_id",
    ),
    Case(
        "token: session pattern",
        "CreateFeedbackToken",
        lambda t: token_request(session_id="s/1"),
        "session_id",
    ),
    Case(
        "token: no message",
        "CreateFeedbackToken",
        lambda t: token_request(message_id=""),
        "message_id",
    ),
    Case(
        "token: message too long",
        "CreateFeedbackToken",
        lambda t: token_request(message_id="m" * 129),
        "message_id",
    ),
    Case(
        "token: zero ttl",
        "CreateFeedbackToken",
        lambda t: token_request(ttl=duration_pb2.Duration()),
        "ttl",
    ),
    Case(
        "token: ttl over a day",
        "CreateFeedbackToken",
        lambda t: token_request(ttl=duration_pb2.Duration(seconds=86401)),
        "ttl",
    ),
    Case(
        "token: agent pattern",
        "CreateFeedbackToken",
        lambda t: token_request(agent_id=".a"),
        "agent_id",
    ),
    Case(
        "token: bad trace",
        "CreateFeedbackToken",
        lambda t: token_request(trace_id="0" * 31),
        "trace_id",
    ),
    Case(
        "token: user too long",
        "CreateFeedbackToken",
        lambda t: token_request(user_id="u" * 257),
        "user_id",
    ),
    # SubmitFeedback (anonymous: the token is the credential)
    Case(
        "submit: no token",
        "SubmitFeedback",
        lambda t: pb.SubmitFeedbackRequest(rating=UP),
        "token",
        anonymous=True,
    ),
    Case(
        "submit: token too long",
        "SubmitFeedback",
        lambda t: pb.SubmitFeedbackRequest(token="t" * 4097, rating=UP),
        "token",
        anonymous=True,
    ),
    Case(
        "submit: no judgement",
        "SubmitFeedback",
        lambda t: pb.SubmitFeedbackRequest(token=t.token),
        "(request)",
        anonymous=True,
    ),
    Case(
        "submit: undefined rating",
        "SubmitFeedback",
        lambda t: pb.SubmitFeedbackRequest(token=t.token, rating=7),
        "rating",
        anonymous=True,
    ),
    Case(
        "submit: score above 1",
        "SubmitFeedback",
        lambda t: pb.SubmitFeedbackRequest(token=t.token, score=1.01),
        "score",
        anonymous=True,
    ),
    Case(
        "submit: bad category",
        "SubmitFeedback",
        lambda t: pb.SubmitFeedbackRequest(token=t.token, categories=["UP"]),
        "categories[0]",
        anonymous=True,
    ),
    Case(
        "submit: comment too long",
        "SubmitFeedback",
        lambda t: pb.SubmitFeedbackRequest(token=t.token, comment="c" * 16385),
        "comment",
        anonymous=True,
    ),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in CASES])
def test_bad_input_is_refused_and_stores_nothing(env: Env, case: Case) -> None:
    target = env.target()
    before = env.everything()
    request = case.build(target)
    call = getattr(env.stub, case.rpc)
    with pytest.raises(grpc.RpcError) as caught:
        call(request, metadata=() if case.anonymous else env.md)
    error = rich_error(caught.value)
    assert error.code == INVALID, (error.code, error.message)
    assert error.reason == case.reason
    assert case.field in error.field_violations, error.field_violations
    assert env.everything() == before
    stored = env.stub.GetFeedback(
        pb.GetFeedbackRequest(feedback_id=target.feedback.feedback_id), metadata=env.md
    ).feedback
    assert stored == target.feedback
