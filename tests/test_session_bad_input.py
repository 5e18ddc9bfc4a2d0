"""Bad input across SessionService (missing, oversize and malformed fields, unknown ids, forged
page tokens, stale etags) gets the right code and stores nothing — on SQLite and PostgreSQL.

Every case names the RPC, the request, the exact status code, the ErrorInfo reason and, for
INVALID_ARGUMENT, the BadRequest field path (as interceptors/validation.py writes it:
`messages[0].trace_id`, `labels["BAD"]`). Before and after each case the test reads the target
session, its messages, the sessions of the test's own user and the project's session count, and
asserts none of them changed; it also asserts the server logged no unhandled error (INTERNAL).

"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2, timestamp_pb2
from google.protobuf.message import Message
from rpcutil import rich_error

from agentplane.common.v1 import time_range_pb2, usage_pb2
from agentplane.session.v1 import session_pb2
from agentplane.session.v1 import session_service_pb2 as pb
from agentplane.session.v1 import session_service_pb2_grpc as rpc

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
ABORTED = grpc.StatusCode.ABORTED
ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS

INVALID_REQUEST = "ERROR_REASON_INVALID_REQUEST"
INVALID_PAGE_TOKEN = "ERROR_REASON_INVALID_PAGE_TOKEN"
SESSION_NOT_FOUND = "ERROR_REASON_SESSION_NOT_FOUND"
ETAG_MISMATCH = "ERROR_REASON_ETAG_MISMATCH"

MIB = 1024 * 1024
USER = session_pb2.ROLE_USER


def uid(prefix: str = "s") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass(frozen=True)
class Target:
    """A fresh session per case (two messages, one label), plus page tokens to misuse."""

    session_id: str
    user_id: str
    etag: str  # current
    stale_etag: str  # the etag at creation, before the messages were appended
    last_sequence: int
    messages_token: str  # ListMessages token for this session (page_size=1)
    other_messages_token: str  # ListMessages token issued for another session
    sessions_token: str  # ListSessions token issued for the module's user filter
    sessions_token_user: str


# -- request builders -------------------------------------------------------------------------


def msg(**kwargs) -> pb.MessageInput:  # type: ignore[no-untyped-def]
    kwargs.setdefault("role", USER)
    kwargs.setdefault("content", "hello")
    return pb.MessageInput(**kwargs)


def big_struct(size: int = 64 * 1024) -> struct_pb2.Struct:
    """A Struct of about `size` bytes (the default is just over the 64 KiB limit)."""
    struct = struct_pb2.Struct()
    struct["blob"] = "x" * size
    return struct


def number_struct(value: float) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct["score"] = value
    return struct


def ts(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def create(t: Target, **kwargs) -> pb.CreateSessionRequest:  # type: ignore[no-untyped-def]
    kwargs.setdefault("user_id", t.user_id)  # so a stored session shows up in the scoped list
    return pb.CreateSessionRequest(**kwargs)


def append(t: Target, *messages: pb.MessageInput, **kwargs) -> pb.AppendMessagesRequest:  # type: ignore[no-untyped-def]
    kwargs.setdefault("session_id", t.session_id)
    return pb.AppendMessagesRequest(messages=list(messages) or [msg()], **kwargs)


def update(t: Target, paths: list[str] | None = None, **fields) -> pb.UpdateSessionRequest:  # type: ignore[no-untyped-def]
    fields.setdefault("session_id", t.session_id)
    return pb.UpdateSessionRequest(
        session=session_pb2.Session(**fields),
        update_mask=field_mask_pb2.FieldMask(paths=["title"] if paths is None else paths),
    )


def fork(t: Target, **kwargs) -> pb.ForkSessionRequest:  # type: ignore[no-untyped-def]
    kwargs.setdefault("session_id", t.session_id)
    kwargs.setdefault("at_sequence", 1)
    return pb.ForkSessionRequest(**kwargs)


def list_sessions(t: Target, **kwargs) -> pb.ListSessionsRequest:  # type: ignore[no-untyped-def]
    kwargs.setdefault("user_id", t.user_id)
    return pb.ListSessionsRequest(**kwargs)


def list_messages(t: Target, **kwargs) -> pb.ListMessagesRequest:  # type: ignore[no-untyped-def]
    kwargs.setdefault("session_id", t.session_id)
    return pb.ListMessagesRequest(**kwargs)


def tampered(token: str) -> str:
    """The token with its body changed (position moved on) and the old signature kept."""
    body_text, signature = token.split(".", 1)
    body = json.loads(base64.urlsafe_b64decode(body_text + "=" * (-len(body_text) % 4)))
    body[0][0] = body[0][0] + 1 if isinstance(body[0][0], int) else body[0][0]
    body[0][-1] = body[0][-1] + "x" if isinstance(body[0][-1], str) else body[0][-1] + 1
    text = base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode())
    return f"{text.rstrip(b'=').decode()}.{signature}"


def unsigned(token: str) -> str:
    """A well-formed body with a signature of the right length made up by the caller."""
    body_text = token.split(".", 1)[0]
    return f"{body_text}.{base64.urlsafe_b64encode(b'0' * 16).rstrip(b'=').decode()}"


def unknown_id() -> str:
    return uid("missing")


# -- the table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    request: Callable[[Target], Message]
    code: grpc.StatusCode
    reason: str
    field: str = ""  # the one BadRequest field path expected for INVALID_ARGUMENT


def bad(method: str, id: str, request, field: str, **kwargs) -> Case:  # type: ignore[no-untyped-def]
    return Case(id, method, request, INVALID, INVALID_REQUEST, field, **kwargs)


def missing(method: str, request) -> Case:  # type: ignore[no-untyped-def]
    return Case("unknown-session", method, request, NOT_FOUND, SESSION_NOT_FOUND)


def forged(method: str, id: str, request) -> Case:  # type: ignore[no-untyped-def]
    return Case(id, method, request, INVALID, INVALID_PAGE_TOKEN, "page_token")


C, G, L, U, D = "CreateSession", "GetSession", "ListSessions", "UpdateSession", "DeleteSession"
A, M, F, S, W = "AppendMessages", "ListMessages", "ForkSession", "GetSessionUsage", "WatchSession"

# fmt: off
CASES: list[Case] = [
    # CreateSession: session_id may be empty (generated) but must match the id pattern.
    bad(C, "session_id-leading-dash", lambda t: create(t, session_id="-bad"), "session_id"),
    bad(C, "session_id-space", lambda t: create(t, session_id="has space"), "session_id"),
    bad(C, "session_id-slash", lambda t: create(t, session_id="a/b"), "session_id"),
    bad(C, "session_id-non-ascii", lambda t: create(t, session_id="sés"), "session_id"),
    bad(C, "session_id-129", lambda t: create(t, session_id="s" * 129), "session_id"),
    bad(C, "title-513", lambda t: create(t, title="t" * 513), "title"),
    bad(C, "user_id-257", lambda t: create(t, user_id="u" * 257), "user_id"),
    bad(C, "agent_id-leading-dash", lambda t: create(t, agent_id="-agent"), "agent_id"),
    bad(C, "agent_id-129", lambda t: create(t, agent_id="a" * 129), "agent_id"),
    bad(C, "labels-65", lambda t: create(t, labels={f"k{i}": "v" for i in range(65)}), "labels"),
    bad(C, "label-key-upper", lambda t: create(t, labels={"BAD": "v"}), 'labels["BAD"]'),
    bad(C, "label-key-empty", lambda t: create(t, labels={"": "v"}), 'labels[""]'),
    bad(C, "label-key-leading-dash", lambda t: create(t, labels={"-k": "v"}), 'labels["-k"]'),
    bad(C, "label-key-64", lambda t: create(t, labels={"k" * 64: "v"}), f'labels["{"k" * 64}"]'),
    bad(C, "label-key-apostrophe", lambda t: create(t, labels={"it's": "v"}), 'labels["it\'s"]'),
    bad(C, "label-value-257", lambda t: create(t, labels={"k": "v" * 257}), 'labels["k"]'),
    bad(C, "metadata-over-64KiB", lambda t: create(t, metadata=big_struct()), "metadata"),
    bad(C, "metadata-nan", lambda t: create(t, metadata=number_struct(float("nan"))),
        'metadata.fields["score"]'),
    bad(C, "metadata-infinity", lambda t: create(t, metadata=number_struct(float("inf"))),
        'metadata.fields["score"]'),
    bad(C, "title-nul-byte", lambda t: create(t, title="a\x00b"), "title"),
    bad(C, "request_id-129", lambda t: create(t, request_id="r" * 129), "request_id"),
    Case("session_id-taken", C, lambda t: create(t, session_id=t.session_id), ALREADY_EXISTS,
         "ERROR_REASON_SESSION_ALREADY_EXISTS"),
    # GetSession
    bad(G, "session_id-missing", lambda t: pb.GetSessionRequest(), "session_id"),
    bad(G, "session_id-129", lambda t: pb.GetSessionRequest(session_id="s" * 129), "session_id"),
    missing(G, lambda t: pb.GetSessionRequest(session_id=unknown_id())),
    Case("malformed-id-is-unknown", G, lambda t: pb.GetSessionRequest(session_id="-no such"),
         NOT_FOUND, SESSION_NOT_FOUND),
    # ListSessions
    bad(L, "page_size-negative", lambda t: list_sessions(t, page_size=-1), "page_size"),
    bad(L, "page_token-1025", lambda t: list_sessions(t, page_token="p" * 1025), "page_token"),
    bad(L, "user_id-257", lambda t: list_sessions(t, user_id="u" * 257), "user_id"),
    bad(L, "agent_id-129", lambda t: list_sessions(t, agent_id="a" * 129), "agent_id"),
    bad(L, "parent_session_id-129", lambda t: list_sessions(t, parent_session_id="p" * 129),
        "parent_session_id"),
    bad(L, "state-unknown-enum", lambda t: list_sessions(t, state=7), "state"),
    bad(L, "create_time-end-before-start",
        lambda t: list_sessions(t, create_time=time_range_pb2.TimeRange(
            start_time=ts(2_000_000_000), end_time=ts(1_000_000_000))),
        "create_time"),
    bad(L, "create_time-end-equals-start",
        lambda t: list_sessions(t, create_time=time_range_pb2.TimeRange(
            start_time=ts(1_000_000_000), end_time=ts(1_000_000_000))),
        "create_time"),
    bad(L, "create_time-start-after-year-9999",
        lambda t: list_sessions(t, create_time=time_range_pb2.TimeRange(
            start_time=ts(253_402_300_800))),
        "create_time.start_time"),
    bad(L, "create_time-end-negative-nanos",
        lambda t: list_sessions(t, create_time=time_range_pb2.TimeRange(end_time=ts(1, -5))),
        "create_time.end_time"),
    forged(L, "page_token-garbage", lambda t: list_sessions(t, page_token="not-a-token")),
    forged(L, "page_token-two-dots", lambda t: list_sessions(t, page_token="a.b")),
    forged(L, "page_token-non-ascii", lambda t: list_sessions(t, page_token="é.é")),
    forged(L, "page_token-extra-char",
           lambda t: list_sessions(t, user_id=t.sessions_token_user,
                                   page_token=t.sessions_token + "x")),
    forged(L, "page_token-body-tampered",
           lambda t: list_sessions(t, user_id=t.sessions_token_user,
                                   page_token=tampered(t.sessions_token))),
    forged(L, "page_token-made-up-signature",
           lambda t: list_sessions(t, user_id=t.sessions_token_user,
                                   page_token=unsigned(t.sessions_token))),
    forged(L, "page_token-other-filters",
           lambda t: list_sessions(t, page_token=t.sessions_token)),
    forged(L, "page_token-from-ListMessages",
           lambda t: list_sessions(t, page_token=t.messages_token)),
    # UpdateSession
    bad(U, "session-missing", lambda t: pb.UpdateSessionRequest(
        update_mask=field_mask_pb2.FieldMask(paths=["title"])), "session"),
    bad(U, "update_mask-missing", lambda t: pb.UpdateSessionRequest(
        session=session_pb2.Session(session_id=t.session_id, title="x")), "update_mask"),
    bad(U, "session_id-missing", lambda t: update(t, session_id="", title="x"),
        "session.session_id"),
    bad(U, "session_id-129", lambda t: update(t, session_id="s" * 129, title="x"),
        "session.session_id"),
    bad(U, "update_mask-empty", lambda t: update(t, paths=[], title="x"), "update_mask"),
    bad(U, "update_mask-output-only", lambda t: update(t, paths=["message_count"]),
        "update_mask"),
    bad(U, "update_mask-unknown", lambda t: update(t, paths=["no_such_field"]), "update_mask"),
    bad(U, "update_mask-session_id", lambda t: update(t, paths=["session_id"]), "update_mask"),
    bad(U, "update_mask-subpath", lambda t: update(t, paths=["labels.team"]), "update_mask"),
    bad(U, "update_mask-one-bad-of-two", lambda t: update(t, paths=["title", "etag"], title="x"),
        "update_mask"),
    bad(U, "title-513", lambda t: update(t, title="t" * 513), "session.title"),
    bad(U, "user_id-257", lambda t: update(t, paths=["user_id"], user_id="u" * 257),
        "session.user_id"),
    bad(U, "labels-65", lambda t: update(t, paths=["labels"],
                                         labels={f"k{i}": "v" for i in range(65)}),
        "session.labels"),
    bad(U, "label-key-upper", lambda t: update(t, paths=["labels"], labels={"BAD": "v"}),
        'session.labels["BAD"]'),
    bad(U, "state-unknown-enum", lambda t: update(t, paths=["state"], state=9), "session.state"),
    bad(U, "metadata-over-64KiB", lambda t: update(t, paths=["metadata"], metadata=big_struct()),
        "session.metadata"),
    bad(U, "metadata-nan",
        lambda t: update(t, paths=["metadata"], metadata=number_struct(float("nan"))),
        'session.metadata.fields["score"]'),
    bad(U, "etag-129", lambda t: update(t, title="x", etag="1" * 129), "session.etag"),
    bad(U, "etag-not-a-number", lambda t: update(t, title="x", etag='W/"abc"'), "session.etag"),
    bad(U, "etag-beyond-int64", lambda t: update(t, title="x", etag="9" * 40), "session.etag"),
    missing(U, lambda t: update(t, session_id=unknown_id(), title="x")),
    Case("unknown-session-with-etag", U, lambda t: update(t, session_id=unknown_id(), title="x",
                                                          etag=t.etag),
         NOT_FOUND, SESSION_NOT_FOUND),
    Case("stale-etag", U, lambda t: update(t, title="x", etag=t.stale_etag), ABORTED,
         ETAG_MISMATCH),
    Case("future-etag", U, lambda t: update(t, title="x", etag=str(int(t.etag) + 1000)),
         ABORTED, ETAG_MISMATCH),
    # DeleteSession
    bad(D, "session_id-missing", lambda t: pb.DeleteSessionRequest(), "session_id"),
    bad(D, "session_id-129", lambda t: pb.DeleteSessionRequest(session_id="s" * 129),
        "session_id"),
    bad(D, "etag-129", lambda t: pb.DeleteSessionRequest(session_id=t.session_id, etag="1" * 129),
        "etag"),
    bad(D, "etag-not-a-number",
        lambda t: pb.DeleteSessionRequest(session_id=t.session_id, etag='W/"abc"'), "etag"),
    bad(D, "etag-negative",
        lambda t: pb.DeleteSessionRequest(session_id=t.session_id, etag="-1"), "etag"),
    bad(D, "etag-superscript-digit",
        lambda t: pb.DeleteSessionRequest(session_id=t.session_id, etag="\u00b2"), "etag"),
    bad(D, "etag-arabic-indic-digits",
        lambda t: pb.DeleteSessionRequest(session_id=t.session_id, etag="\u0661\u0662"), "etag"),
    bad(D, "etag-beyond-int64",
        lambda t: pb.DeleteSessionRequest(session_id=t.session_id, etag="9" * 40), "etag"),
    missing(D, lambda t: pb.DeleteSessionRequest(session_id=unknown_id())),
    Case("unknown-session-with-etag", D,
         lambda t: pb.DeleteSessionRequest(session_id=unknown_id(), etag=t.etag),
         NOT_FOUND, SESSION_NOT_FOUND),
    Case("stale-etag", D,
         lambda t: pb.DeleteSessionRequest(session_id=t.session_id, etag=t.stale_etag),
         ABORTED, ETAG_MISMATCH),
    # AppendMessages
    bad(A, "session_id-missing", lambda t: append(t, session_id=""), "session_id"),
    bad(A, "session_id-129", lambda t: append(t, session_id="s" * 129), "session_id"),
    bad(A, "messages-missing", lambda t: pb.AppendMessagesRequest(session_id=t.session_id),
        "messages"),
    bad(A, "messages-101", lambda t: append(t, *[msg(content=str(i)) for i in range(101)]),
        "messages"),
    bad(A, "role-unspecified", lambda t: append(t, msg(role=session_pb2.ROLE_UNSPECIFIED)),
        "messages[0].role"),
    bad(A, "role-unknown-enum", lambda t: append(t, msg(role=42)), "messages[0].role"),
    bad(A, "content-over-1MiB", lambda t: append(t, msg(content="x" * (MIB + 1))),
        "messages[0].content"),
    bad(A, "content-over-1MiB-in-bytes-not-chars",
        lambda t: append(t, msg(content="é" * (MIB // 2 + 1))), "messages[0].content"),
    bad(A, "content-nul-byte", lambda t: append(t, msg(content="a\x00b")), "messages[0].content"),
    bad(A, "agent_id-leading-dash", lambda t: append(t, msg(agent_id="-a")),
        "messages[0].agent_id"),
    bad(A, "agent_id-129", lambda t: append(t, msg(agent_id="a" * 129)), "messages[0].agent_id"),
    bad(A, "trace_id-upper-case", lambda t: append(t, msg(trace_id="A" * 32)),
        "messages[0].trace_id"),
    bad(A, "trace_id-31-digits", lambda t: append(t, msg(trace_id="a" * 31)),
        "messages[0].trace_id"),
    bad(A, "trace_id-not-hex", lambda t: append(t, msg(trace_id="g" * 32)),
        "messages[0].trace_id"),
    bad(A, "span_id-17-digits", lambda t: append(t, msg(span_id="b" * 17)),
        "messages[0].span_id"),
    bad(A, "span_id-dashed", lambda t: append(t, msg(span_id="0123-4567-89ab-c")),
        "messages[0].span_id"),
    bad(A, "tool_calls-129",
        lambda t: append(t, msg(tool_calls=[session_pb2.ToolCall(name="f")] * 129)),
        "messages[0].tool_calls"),
    bad(A, "tool_call_id-257", lambda t: append(t, msg(tool_call_id="c" * 257)),
        "messages[0].tool_call_id"),
    bad(A, "model-257", lambda t: append(t, msg(model="m" * 257)), "messages[0].model"),
    bad(A, "usage-negative-tokens",
        lambda t: append(t, msg(usage=usage_pb2.Usage(input_tokens=-1))),
        "messages[0].usage.input_tokens"),
    bad(A, "usage-negative-cost",
        lambda t: append(t, msg(usage=usage_pb2.Usage(cost_micros=-5))),
        "messages[0].usage.cost_micros"),
    bad(A, "currency-lower-case",
        lambda t: append(t, msg(usage=usage_pb2.Usage(cost_micros=1, cost_currency="usd"))),
        "messages[0].usage.cost_currency"),
    bad(A, "currency-four-letters",
        lambda t: append(t, msg(usage=usage_pb2.Usage(cost_micros=1, cost_currency="EURO"))),
        "messages[0].usage.cost_currency"),
    bad(A, "metadata-over-64KiB", lambda t: append(t, msg(metadata=big_struct())),
        "messages[0].metadata"),
    bad(A, "metadata-nan", lambda t: append(t, msg(metadata=number_struct(float("nan")))),
        'messages[0].metadata.fields["score"]'),
    bad(A, "third-of-three-bad",
        lambda t: append(t, msg(content="ok 1"), msg(content="ok 2"), msg(span_id="nope")),
        "messages[2].span_id"),
    bad(A, "request_id-129", lambda t: append(t, request_id="r" * 129), "request_id"),
    bad(A, "expected_last_sequence-negative", lambda t: append(t, expected_last_sequence=-1),
        "expected_last_sequence"),
    missing(A, lambda t: append(t, session_id=unknown_id())),
    Case("stale-expected_last_sequence", A,
         lambda t: append(t, expected_last_sequence=t.last_sequence - 1), ABORTED,
         "ERROR_REASON_SEQUENCE_CONFLICT"),
    # ListMessages
    bad(M, "session_id-missing", lambda t: pb.ListMessagesRequest(), "session_id"),
    bad(M, "session_id-129", lambda t: list_messages(t, session_id="s" * 129), "session_id"),
    bad(M, "page_size-negative", lambda t: list_messages(t, page_size=-1), "page_size"),
    bad(M, "page_token-1025", lambda t: list_messages(t, page_token="p" * 1025), "page_token"),
    bad(M, "after_sequence-negative", lambda t: list_messages(t, after_sequence=-1),
        "after_sequence"),
    missing(M, lambda t: list_messages(t, session_id=unknown_id())),
    forged(M, "page_token-garbage", lambda t: list_messages(t, page_token="not-a-token")),
    forged(M, "page_token-extra-char",
           lambda t: list_messages(t, page_token=t.messages_token + "x")),
    forged(M, "page_token-body-tampered",
           lambda t: list_messages(t, page_token=tampered(t.messages_token))),
    forged(M, "page_token-made-up-signature",
           lambda t: list_messages(t, page_token=unsigned(t.messages_token))),
    forged(M, "page_token-other-session",
           lambda t: list_messages(t, page_token=t.other_messages_token)),
    forged(M, "page_token-from-ListSessions",
           lambda t: list_messages(t, page_token=t.sessions_token)),
    forged(M, "page_token-unknown-session",
           lambda t: list_messages(t, session_id=unknown_id(),
                                   page_token=t.messages_token)),
    # ForkSession
    bad(F, "session_id-missing", lambda t: fork(t, session_id=""), "session_id"),
    bad(F, "session_id-129", lambda t: fork(t, session_id="s" * 129), "session_id"),
    bad(F, "at_sequence-missing", lambda t: fork(t, at_sequence=0), "at_sequence"),
    bad(F, "at_sequence-negative", lambda t: fork(t, at_sequence=-3), "at_sequence"),
    bad(F, "new_session_id-leading-dash", lambda t: fork(t, new_session_id="-fork"),
        "new_session_id"),
    bad(F, "new_session_id-129", lambda t: fork(t, new_session_id="f" * 129), "new_session_id"),
    bad(F, "title-513", lambda t: fork(t, title="t" * 513), "title"),
    bad(F, "title-nul-byte", lambda t: fork(t, title="a\x00b"), "title"),
    bad(F, "request_id-129", lambda t: fork(t, request_id="r" * 129), "request_id"),
    missing(F, lambda t: fork(t, session_id=unknown_id())),
    Case("at_sequence-past-the-end", F, lambda t: fork(t, at_sequence=t.last_sequence + 1),
         NOT_FOUND, "ERROR_REASON_SEQUENCE_NOT_FOUND"),
    Case("new_session_id-taken", F, lambda t: fork(t, new_session_id=t.session_id),
         ALREADY_EXISTS, "ERROR_REASON_SESSION_ALREADY_EXISTS"),
    # GetSessionUsage
    bad(S, "session_id-missing", lambda t: pb.GetSessionUsageRequest(), "session_id"),
    bad(S, "session_id-129", lambda t: pb.GetSessionUsageRequest(session_id="s" * 129),
        "session_id"),
    missing(S, lambda t: pb.GetSessionUsageRequest(session_id=unknown_id())),
    # WatchSession (the error comes as the stream's status, before any message)
    bad(W, "session_id-missing", lambda t: pb.WatchSessionRequest(), "session_id"),
    bad(W, "session_id-129", lambda t: pb.WatchSessionRequest(session_id="s" * 129),
        "session_id"),
    bad(W, "after_sequence-negative",
        lambda t: pb.WatchSessionRequest(session_id=t.session_id, after_sequence=-1),
        "after_sequence"),
    missing(W, lambda t: pb.WatchSessionRequest(session_id=unknown_id())),
]
# fmt: on


# -- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sessions(server):  # type: ignore[no-untyped-def]
    return rpc.SessionServiceStub(server.channel())


@pytest.fixture(scope="module")
def md(server):  # type: ignore[no-untyped-def]
    return server.metadata()


@pytest.fixture(scope="module")
def module_tokens(sessions, md) -> tuple[str, str, str]:  # type: ignore[no-untyped-def]
    """(ListSessions token for a user filter, that user, ListMessages token of another session)."""
    user = uid("token-user")
    for _ in range(2):
        sessions.CreateSession(pb.CreateSessionRequest(user_id=user), metadata=md)
    sessions_token = sessions.ListSessions(
        pb.ListSessionsRequest(user_id=user, page_size=1), metadata=md
    ).next_page_token
    other = sessions.CreateSession(pb.CreateSessionRequest(), metadata=md).session.session_id
    sessions.AppendMessages(
        pb.AppendMessagesRequest(session_id=other, messages=[msg(), msg()]), metadata=md
    )
    messages_token = sessions.ListMessages(
        pb.ListMessagesRequest(session_id=other, page_size=1), metadata=md
    ).next_page_token
    assert sessions_token and messages_token
    return sessions_token, user, messages_token


@pytest.fixture
def target(sessions, md, module_tokens) -> Target:  # type: ignore[no-untyped-def]
    user = uid("user")
    created = sessions.CreateSession(
        pb.CreateSessionRequest(
            session_id=uid(), title="before", user_id=user, labels={"case": user}
        ),
        metadata=md,
    ).session
    appended = sessions.AppendMessages(
        pb.AppendMessagesRequest(
            session_id=created.session_id, messages=[msg(content="one"), msg(content="two")]
        ),
        metadata=md,
    )
    session = sessions.GetSession(
        pb.GetSessionRequest(session_id=created.session_id), metadata=md
    ).session
    messages_token = sessions.ListMessages(
        pb.ListMessagesRequest(session_id=created.session_id, page_size=1), metadata=md
    ).next_page_token
    assert session.etag != created.etag and messages_token
    sessions_token, sessions_token_user, other_messages_token = module_tokens
    return Target(
        session_id=created.session_id,
        user_id=user,
        etag=session.etag,
        stale_etag=created.etag,
        last_sequence=appended.last_sequence,
        messages_token=messages_token,
        other_messages_token=other_messages_token,
        sessions_token=sessions_token,
        sessions_token_user=sessions_token_user,
    )


def count_sessions(sessions, md) -> int:  # type: ignore[no-untyped-def]
    total, token = 0, ""
    while True:
        page = sessions.ListSessions(
            pb.ListSessionsRequest(page_size=500, page_token=token), metadata=md
        )
        total += len(page.sessions)
        token = page.next_page_token
        if not token:
            return total


def snapshot(sessions, md, t: Target) -> dict:  # type: ignore[no-untyped-def]
    """What a wrongly accepted request would change."""
    return {
        "session": sessions.GetSession(
            pb.GetSessionRequest(session_id=t.session_id), metadata=md
        ).session,
        "messages": list(
            sessions.ListMessages(
                pb.ListMessagesRequest(session_id=t.session_id, page_size=1000), metadata=md
            ).messages
        ),
        "usage": sessions.GetSessionUsage(
            pb.GetSessionUsageRequest(session_id=t.session_id), metadata=md
        ),
        "user's sessions": [
            s.session_id
            for s in sessions.ListSessions(
                pb.ListSessionsRequest(user_id=t.user_id, page_size=500), metadata=md
            ).sessions
        ],
        "project's session count": count_sessions(sessions, md),
    }


def invoke(sessions, method: str, request: Message, md) -> None:  # type: ignore[no-untyped-def]
    if method == "WatchSession":
        next(sessions.WatchSession(request, metadata=md, timeout=10))
    else:
        getattr(sessions, method)(request, metadata=md, timeout=30)


# -- tests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[f"{c.method}-{c.id}" for c in CASES])
def test_bad_input_gets_the_right_code_and_stores_nothing(  # type: ignore[no-untyped-def]
    request, server, backend, sessions, md, target, case: Case
) -> None:
    log_start = len(server.logs())
    before = snapshot(sessions, md, target)

    with pytest.raises(grpc.RpcError) as caught:
        invoke(sessions, case.method, case.request(target), md)
    error = rich_error(caught.value)

    assert error.code != grpc.StatusCode.INTERNAL, f"INTERNAL: {error.message}"
    assert error.code == case.code, f"expected {case.code}, got {error.code}: {error.message}"
    assert error.reason == case.reason
    if case.code == INVALID:
        assert set(error.field_violations) == {case.field}, error.field_violations
        assert all(error.field_violations.values())  # each violation says what is wrong
    else:
        assert not error.field_violations
    assert error.request_id  # the log line for this call can be found

    assert snapshot(sessions, md, target) == before, "a refused request changed stored state"
    assert "unhandled error" not in server.logs()[log_start:]


def test_limits_are_inclusive(sessions, md) -> None:  # type: ignore[no-untyped-def]
    """The largest accepted values, one below each refused case in the table."""
    labels = {f"k{i:02d}" + "k" * 60: "v" * 256 for i in range(64)}
    metadata = big_struct(64 * 1024 - 100)
    assert metadata.ByteSize() <= 64 * 1024
    session_id = "S" + "s" * 127
    created = sessions.CreateSession(
        pb.CreateSessionRequest(
            session_id=f"{session_id[:-10]}{uuid.uuid4().hex[:10]}",
            title="t" * 512,
            user_id="u" * 256,
            agent_id="A" + "a" * 127,
            labels=labels,
            metadata=metadata,
            request_id="r" * 127 + uuid.uuid4().hex[:1],
        ),
        metadata=md,
    ).session
    assert len(created.session_id) == 128 and len(created.labels) == 64
    assert all(len(key) == 63 for key in created.labels)
    appended = sessions.AppendMessages(
        pb.AppendMessagesRequest(
            session_id=created.session_id,
            messages=[
                msg(
                    content="x" * MIB,
                    trace_id="0" * 32,
                    span_id="f" * 16,
                    model="m" * 256,
                    tool_call_id="c" * 256,
                    metadata=metadata,
                    tool_calls=[session_pb2.ToolCall(name="f")] * 128,
                    usage=usage_pb2.Usage(cost_micros=1, cost_currency="EUR"),
                )
            ]
            + [msg(content=str(i)) for i in range(99)],
        ),
        metadata=md,
    )
    assert appended.last_sequence == 100
    assert len(appended.messages[0].content) == MIB


@pytest.mark.parametrize("rpc_name", ["CreateSession", "AppendMessages", "ForkSession"])
def test_a_refused_request_leaves_its_request_id_unused(  # type: ignore[no-untyped-def]
    sessions, md, target, rpc_name: str
) -> None:
    """A request refused inside the transaction records no request_id: reusing the id for a
    different, valid request works instead of failing with REQUEST_ID_CONFLICT."""
    request_id = uid("req")
    refused, good = {
        "CreateSession": (
            pb.CreateSessionRequest(session_id=target.session_id, request_id=request_id),
            pb.CreateSessionRequest(user_id=target.user_id, request_id=request_id),
        ),
        "AppendMessages": (
            append(target, expected_last_sequence=0, request_id=request_id),
            append(target, request_id=request_id),
        ),
        "ForkSession": (
            fork(target, at_sequence=target.last_sequence + 1, request_id=request_id),
            fork(target, request_id=request_id),
        ),
    }[rpc_name]
    with pytest.raises(grpc.RpcError) as caught:
        getattr(sessions, rpc_name)(refused, metadata=md)
    assert caught.value.code() in (
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.NOT_FOUND,
    )
    getattr(sessions, rpc_name)(good, metadata=md)


def test_usage_bounds_keep_session_totals_inside_int64(  # type: ignore[no-untyped-def]
    backend, make_server
) -> None:
    """Totals are int64 sums of per-message usage. The contract bounds each message's usage, so
    usage past the bound is refused (never INTERNAL) and stores nothing, while a full append at
    the bound is stored and every read of the session and the project keeps working."""
    server = make_server()
    sessions = rpc.SessionServiceStub(server.channel())
    md = server.metadata()
    session_id = sessions.CreateSession(pb.CreateSessionRequest(), metadata=md).session.session_id
    past = usage_pb2.Usage(input_tokens=2**63 - 1, cost_micros=2**63 - 1)
    with pytest.raises(grpc.RpcError) as caught:
        sessions.AppendMessages(
            pb.AppendMessagesRequest(session_id=session_id, messages=[msg(usage=past)] * 2),
            metadata=md,
        )
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(error.field_violations) == {
        f"messages[{i}].usage.{field}" for i in (0, 1) for field in ("input_tokens", "cost_micros")
    }

    top = usage_pb2.Usage(input_tokens=10**12, output_tokens=10**12, cost_micros=10**15)
    for _ in range(3):
        sessions.AppendMessages(
            pb.AppendMessagesRequest(session_id=session_id, messages=[msg(usage=top)] * 100),
            metadata=md,
        )
    session = sessions.GetSession(pb.GetSessionRequest(session_id=session_id), metadata=md)
    assert session.session.message_count == 300
    assert session.session.usage.cost_micros == 300 * 10**15
    assert session.session.usage.input_tokens == 300 * 10**12
    usage = sessions.GetSessionUsage(pb.GetSessionUsageRequest(session_id=session_id), metadata=md)
    assert usage.total.output_tokens == 300 * 10**12
    sessions.ForkSession(pb.ForkSessionRequest(session_id=session_id, at_sequence=1), metadata=md)
    assert len(sessions.ListSessions(pb.ListSessionsRequest(), metadata=md).sessions) == 2
    assert "unhandled error" not in server.logs()
