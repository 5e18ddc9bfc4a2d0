"""SessionService end to end against a real server, on SQLite and on PostgreSQL."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2
from rpcutil import expect_error

from agentplane.common.v1 import time_range_pb2, usage_pb2
from agentplane.session.v1 import session_pb2
from agentplane.session.v1 import session_service_pb2 as pb
from agentplane.session.v1 import session_service_pb2_grpc as rpc


@pytest.fixture(scope="module")
def sessions(server):  # type: ignore[no-untyped-def]
    return rpc.SessionServiceStub(server.channel())


@pytest.fixture(scope="module")
def md(server):  # type: ignore[no-untyped-def]
    return server.metadata()


def uid(prefix: str = "s") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def user_message(text: str, agent: str = "", **kwargs) -> pb.MessageInput:  # type: ignore[no-untyped-def]
    return pb.MessageInput(role=session_pb2.ROLE_USER, content=text, agent_id=agent, **kwargs)


def test_create_get_with_caller_id(sessions, md) -> None:  # type: ignore[no-untyped-def]
    session_id = uid()
    created = sessions.CreateSession(
        pb.CreateSessionRequest(
            session_id=session_id,
            title="Support",
            user_id="u-1",
            agent_id="router",
            labels={"team": "support"},
        ),
        metadata=md,
    ).session
    assert created.session_id == session_id
    assert created.project_id == "default"
    assert created.state == session_pb2.SESSION_STATE_ACTIVE
    assert list(created.agent_ids) == ["router"]
    assert created.etag
    fetched = sessions.GetSession(pb.GetSessionRequest(session_id=session_id), metadata=md).session
    assert fetched == created


def test_generated_id_and_duplicate_id(sessions, md) -> None:  # type: ignore[no-untyped-def]
    generated = sessions.CreateSession(pb.CreateSessionRequest(), metadata=md).session
    assert generated.session_id.startswith("ses_")
    error = expect_error(
        grpc.StatusCode.ALREADY_EXISTS,
        sessions.CreateSession,
        pb.CreateSessionRequest(session_id=generated.session_id),
        metadata=md,
    )
    assert error.reason == "ERROR_REASON_SESSION_ALREADY_EXISTS"


def test_create_is_idempotent_by_request_id(sessions, md) -> None:  # type: ignore[no-untyped-def]
    request = pb.CreateSessionRequest(title="once", request_id=uid("req"))
    first = sessions.CreateSession(request, metadata=md).session
    again = sessions.CreateSession(request, metadata=md).session
    assert again.session_id == first.session_id
    request.title = "different"
    error = expect_error(
        grpc.StatusCode.ALREADY_EXISTS, sessions.CreateSession, request, metadata=md
    )
    assert error.reason == "ERROR_REASON_REQUEST_ID_CONFLICT"


def test_conversation_across_agents_reads_back_as_one_session(sessions, md) -> None:  # type: ignore[no-untyped-def]
    session_id = sessions.CreateSession(pb.CreateSessionRequest(), metadata=md).session.session_id
    turns = [
        ("user", session_pb2.ROLE_USER, "router", "Where is my order?"),
        ("router", session_pb2.ROLE_ASSISTANT, "router", "Routing you to orders."),
        ("orders", session_pb2.ROLE_ASSISTANT, "orders-agent", "Order 42 ships today."),
        ("billing", session_pb2.ROLE_ASSISTANT, "billing-agent", "Invoice sent."),
    ]
    for _, role, agent, text in turns:
        sessions.AppendMessages(
            pb.AppendMessagesRequest(
                session_id=session_id,
                messages=[
                    pb.MessageInput(
                        role=role,
                        content=text,
                        agent_id=agent,
                        model="m-1",
                        usage=usage_pb2.Usage(input_tokens=10, output_tokens=5, cost_micros=7),
                        trace_id="a" * 32,
                        span_id="b" * 16,
                        tool_calls=[
                            session_pb2.ToolCall(
                                tool_call_id="c1", name="lookup", arguments_json='{"id": 42}'
                            )
                        ],
                    )
                ],
            ),
            metadata=md,
        )
    listed = sessions.ListMessages(pb.ListMessagesRequest(session_id=session_id), metadata=md)
    assert [m.sequence for m in listed.messages] == [1, 2, 3, 4]
    assert [m.agent_id for m in listed.messages] == [t[2] for t in turns]
    assert [m.content for m in listed.messages] == [t[3] for t in turns]
    assert listed.messages[0].tool_calls[0].arguments_json == '{"id": 42}'
    assert listed.messages[0].trace_id == "a" * 32
    session = sessions.GetSession(pb.GetSessionRequest(session_id=session_id), metadata=md).session
    assert list(session.agent_ids) == ["router", "orders-agent", "billing-agent"]
    assert session.message_count == 4 and session.last_sequence == 4
    assert (session.usage.input_tokens, session.usage.output_tokens) == (40, 20)
    assert session.usage.cost_micros == 28

    usage = sessions.GetSessionUsage(pb.GetSessionUsageRequest(session_id=session_id), metadata=md)
    assert usage.total.cost_micros == 28
    by_agent = {a.agent_id: (a.message_count, a.usage.input_tokens) for a in usage.by_agent}
    assert by_agent == {"router": (2, 20), "orders-agent": (1, 10), "billing-agent": (1, 10)}
    assert [(m.model, m.message_count) for m in usage.by_model] == [("m-1", 4)]

    by_agent_filter = sessions.ListSessions(
        pb.ListSessionsRequest(agent_id="billing-agent", page_size=500), metadata=md
    )
    assert session_id in {s.session_id for s in by_agent_filter.sessions}


def test_append_is_idempotent_and_conditional(sessions, md) -> None:  # type: ignore[no-untyped-def]
    session_id = sessions.CreateSession(pb.CreateSessionRequest(), metadata=md).session.session_id
    request = pb.AppendMessagesRequest(
        session_id=session_id, messages=[user_message("a"), user_message("b")], request_id="r-1"
    )
    first = sessions.AppendMessages(request, metadata=md)
    retry = sessions.AppendMessages(request, metadata=md)
    assert [m.message_id for m in retry.messages] == [m.message_id for m in first.messages]
    assert retry.last_sequence == 2
    count = sessions.GetSession(pb.GetSessionRequest(session_id=session_id), metadata=md)
    assert count.session.message_count == 2

    stale = pb.AppendMessagesRequest(
        session_id=session_id, messages=[user_message("c")], expected_last_sequence=1
    )
    error = expect_error(grpc.StatusCode.ABORTED, sessions.AppendMessages, stale, metadata=md)
    assert error.reason == "ERROR_REASON_SEQUENCE_CONFLICT"
    assert error.metadata["last_sequence"] == "2"
    stale.expected_last_sequence = 2
    assert sessions.AppendMessages(stale, metadata=md).last_sequence == 3


def test_list_messages_pages_and_after_sequence(sessions, md) -> None:  # type: ignore[no-untyped-def]
    session_id = sessions.CreateSession(pb.CreateSessionRequest(), metadata=md).session.session_id
    sessions.AppendMessages(
        pb.AppendMessagesRequest(
            session_id=session_id, messages=[user_message(str(i)) for i in range(25)]
        ),
        metadata=md,
    )
    seen, token = [], ""
    while True:
        page = sessions.ListMessages(
            pb.ListMessagesRequest(session_id=session_id, page_size=10, page_token=token),
            metadata=md,
        )
        seen += [m.sequence for m in page.messages]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(range(1, 26))
    after = sessions.ListMessages(
        pb.ListMessagesRequest(session_id=session_id, after_sequence=20), metadata=md
    )
    assert [m.content for m in after.messages] == ["20", "21", "22", "23", "24"]


def test_list_sessions_filters_and_pages(sessions, md) -> None:  # type: ignore[no-untyped-def]
    user = uid("user")
    made = [
        sessions.CreateSession(
            pb.CreateSessionRequest(user_id=user, title=str(i)), metadata=md
        ).session.session_id
        for i in range(7)
    ]
    sessions.CreateSession(pb.CreateSessionRequest(user_id=uid("other")), metadata=md)
    seen, token = [], ""
    while True:
        page = sessions.ListSessions(
            pb.ListSessionsRequest(user_id=user, page_size=3, page_token=token), metadata=md
        )
        assert len(page.sessions) <= 3
        seen += [s.session_id for s in page.sessions]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(made))  # newest first, each once

    # A token is bound to its filters; a forged one is refused.
    first = sessions.ListSessions(pb.ListSessionsRequest(user_id=user, page_size=3), metadata=md)
    for token in (first.next_page_token + "x", "bm90LWEtdG9rZW4", "a.b"):
        error = expect_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            sessions.ListSessions,
            pb.ListSessionsRequest(user_id=user, page_token=token),
            metadata=md,
        )
        assert error.reason == "ERROR_REASON_INVALID_PAGE_TOKEN"
        assert "page_token" in error.field_violations
    error = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        sessions.ListSessions,
        pb.ListSessionsRequest(user_id="someone-else", page_token=first.next_page_token),
        metadata=md,
    )
    assert error.reason == "ERROR_REASON_INVALID_PAGE_TOKEN"

    # Time range: nothing was created in the future.
    future = timestamp_pb2.Timestamp()
    future.GetCurrentTime()
    future.seconds += 3600
    none = sessions.ListSessions(
        pb.ListSessionsRequest(
            user_id=user, create_time=time_range_pb2.TimeRange(start_time=future)
        ),
        metadata=md,
    )
    assert list(none.sessions) == []


def test_update_with_mask_and_etag(sessions, md) -> None:  # type: ignore[no-untyped-def]
    created = sessions.CreateSession(
        pb.CreateSessionRequest(title="old", user_id="u"), metadata=md
    ).session
    update = pb.UpdateSessionRequest(
        session=session_pb2.Session(
            session_id=created.session_id, title="new", user_id="ignored", etag=created.etag
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["title"]),
    )
    updated = sessions.UpdateSession(update, metadata=md).session
    assert (updated.title, updated.user_id) == ("new", "u")
    assert updated.etag != created.etag
    error = expect_error(grpc.StatusCode.ABORTED, sessions.UpdateSession, update, metadata=md)
    assert error.reason == "ERROR_REASON_ETAG_MISMATCH"
    bad_mask = pb.UpdateSessionRequest(
        session=session_pb2.Session(session_id=created.session_id),
        update_mask=field_mask_pb2.FieldMask(paths=["message_count"]),
    )
    error = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT, sessions.UpdateSession, bad_mask, metadata=md
    )
    assert "update_mask" in error.field_violations

    closed = sessions.UpdateSession(
        pb.UpdateSessionRequest(
            session=session_pb2.Session(
                session_id=created.session_id, state=session_pb2.SESSION_STATE_CLOSED
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["state"]),
        ),
        metadata=md,
    ).session
    assert closed.state == session_pb2.SESSION_STATE_CLOSED
    error = expect_error(
        grpc.StatusCode.FAILED_PRECONDITION,
        sessions.AppendMessages,
        pb.AppendMessagesRequest(session_id=created.session_id, messages=[user_message("x")]),
        metadata=md,
    )
    assert error.reason == "ERROR_REASON_SESSION_CLOSED"


def test_delete_with_etag(sessions, md) -> None:  # type: ignore[no-untyped-def]
    created = sessions.CreateSession(pb.CreateSessionRequest(), metadata=md).session
    sessions.AppendMessages(
        pb.AppendMessagesRequest(session_id=created.session_id, messages=[user_message("x")]),
        metadata=md,
    )
    error = expect_error(
        grpc.StatusCode.ABORTED,
        sessions.DeleteSession,
        pb.DeleteSessionRequest(session_id=created.session_id, etag=created.etag),
        metadata=md,
    )
    assert error.reason == "ERROR_REASON_ETAG_MISMATCH"
    sessions.DeleteSession(pb.DeleteSessionRequest(session_id=created.session_id), metadata=md)
    for call, request in (
        (sessions.GetSession, pb.GetSessionRequest(session_id=created.session_id)),
        (sessions.ListMessages, pb.ListMessagesRequest(session_id=created.session_id)),
        (sessions.DeleteSession, pb.DeleteSessionRequest(session_id=created.session_id)),
    ):
        error = expect_error(grpc.StatusCode.NOT_FOUND, call, request, metadata=md)
        assert error.reason == "ERROR_REASON_SESSION_NOT_FOUND"


def test_fork_copies_up_to_a_message(sessions, md) -> None:  # type: ignore[no-untyped-def]
    parent = sessions.CreateSession(pb.CreateSessionRequest(title="p"), metadata=md).session
    sessions.AppendMessages(
        pb.AppendMessagesRequest(
            session_id=parent.session_id,
            messages=[
                user_message(f"m{i}", agent=f"agent-{i % 2}", usage=usage_pb2.Usage(input_tokens=i))
                for i in range(1, 6)
            ],
        ),
        metadata=md,
    )
    fork_id = uid("fork")
    fork = sessions.ForkSession(
        pb.ForkSessionRequest(session_id=parent.session_id, at_sequence=3, new_session_id=fork_id),
        metadata=md,
    ).session
    assert fork.session_id == fork_id
    assert (fork.parent_session_id, fork.forked_at_sequence) == (parent.session_id, 3)
    assert (fork.title, fork.message_count, fork.last_sequence) == ("p", 3, 3)
    assert fork.usage.input_tokens == 1 + 2 + 3
    assert list(fork.agent_ids) == ["agent-1", "agent-0"]
    copied = sessions.ListMessages(pb.ListMessagesRequest(session_id=fork_id), metadata=md)
    assert [m.content for m in copied.messages] == ["m1", "m2", "m3"]
    appended = sessions.AppendMessages(
        pb.AppendMessagesRequest(session_id=fork_id, messages=[user_message("branch")]),
        metadata=md,
    )
    assert appended.messages[0].sequence == 4
    original = sessions.ListMessages(
        pb.ListMessagesRequest(session_id=parent.session_id), metadata=md
    )
    assert [m.content for m in original.messages] == ["m1", "m2", "m3", "m4", "m5"]
    forks = sessions.ListSessions(
        pb.ListSessionsRequest(parent_session_id=parent.session_id), metadata=md
    )
    assert [s.session_id for s in forks.sessions] == [fork_id]
    error = expect_error(
        grpc.StatusCode.NOT_FOUND,
        sessions.ForkSession,
        pb.ForkSessionRequest(session_id=parent.session_id, at_sequence=6),
        metadata=md,
    )
    assert error.reason == "ERROR_REASON_SEQUENCE_NOT_FOUND"


def test_watch_streams_backlog_then_live(server, sessions, md) -> None:  # type: ignore[no-untyped-def]
    session_id = sessions.CreateSession(pb.CreateSessionRequest(), metadata=md).session.session_id
    sessions.AppendMessages(
        pb.AppendMessagesRequest(session_id=session_id, messages=[user_message("old")]),
        metadata=md,
    )
    stream = sessions.WatchSession(pb.WatchSessionRequest(session_id=session_id), metadata=md)
    first = next(stream)
    assert (first.message.sequence, first.message.content) == (1, "old")
    sessions.AppendMessages(
        pb.AppendMessagesRequest(session_id=session_id, messages=[user_message("new")]),
        metadata=md,
    )
    second = next(stream)
    assert (second.message.sequence, second.message.content) == (2, "new")
    stream.cancel()
    error = expect_error(
        grpc.StatusCode.NOT_FOUND,
        lambda: next(
            sessions.WatchSession(pb.WatchSessionRequest(session_id=uid("missing")), metadata=md)
        ),
    )
    assert error.reason == "ERROR_REASON_SESSION_NOT_FOUND"
