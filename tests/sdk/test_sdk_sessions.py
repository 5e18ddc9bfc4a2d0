"""client.sessions (SessionService) through the SDK, sync and async, against a real server:
every RPC, paging through iterators, conditional updates, idempotent appends, watch."""

from __future__ import annotations

import asyncio
import threading

import pytest

from agentplane import AbortedError, AlreadyExistsError, FailedPreconditionError, NotFoundError
from agentplane.session.v1 import session_pb2
from sdk.sdkutil import uid


def say(text: str, agent: str, **extra: object) -> dict[str, object]:
    return {"role": "ROLE_USER", "content": text, "agent_id": agent, **extra}


def test_session_lifecycle_across_two_agents(client) -> None:  # type: ignore[no-untyped-def]
    sessions = client.sessions
    session_id = uid("s")
    created = sessions.create_session(
        session_id=session_id,
        title="Order question",
        user_id="u-7",
        agent_id="router",
        labels={"team": "support"},
        metadata={"channel": "web", "priority": 2},
    ).session
    assert created.session_id == session_id
    assert created.metadata["channel"] == "web"
    appended = sessions.append_messages(
        session_id=session_id,
        messages=[
            say("Where is my order?", "router"),
            {
                "role": session_pb2.ROLE_ASSISTANT,
                "content": "It ships today.",
                "agent_id": "orders",
                "model": "gpt-4o",
                "usage": {"input_tokens": 12, "output_tokens": 5, "cost_micros": 90},
            },
        ],
    )
    assert [m.sequence for m in appended.messages] == [1, 2]
    assert appended.last_sequence == 2
    session = sessions.get_session(session_id=session_id).session
    assert list(session.agent_ids) == ["router", "orders"]
    assert session.message_count == 2
    usage = sessions.get_session_usage(session_id=session_id)
    assert usage.total.cost_micros == 90
    assert {a.agent_id: a.message_count for a in usage.by_agent} == {"router": 1, "orders": 1}
    assert "gpt-4o" in [m.model for m in usage.by_model]


def test_list_iterators_hide_page_tokens(client) -> None:  # type: ignore[no-untyped-def]
    user = uid("user")
    ids = [client.sessions.create_session(user_id=user).session.session_id for _ in range(5)]
    listed = client.sessions.list_sessions(user_id=user, page_size=2)
    assert [s.session_id for s in listed] == list(reversed(ids))  # newest first, 3 pages
    page = client.sessions.list_sessions_page(user_id=user, page_size=2)
    assert len(page.sessions) == 2 and page.next_page_token
    rest = client.sessions.list_sessions_page(
        user_id=user, page_size=10, page_token=page.next_page_token
    )
    assert [s.session_id for s in rest.sessions] == list(reversed(ids))[2:]
    assert rest.next_page_token == ""

    session_id = ids[0]
    client.sessions.append_messages(
        session_id=session_id, messages=[say(f"m{i}", "a") for i in range(7)]
    )
    sequences = [
        m.sequence for m in client.sessions.list_messages(session_id=session_id, page_size=3)
    ]
    assert sequences == list(range(1, 8))
    after = client.sessions.list_messages(session_id=session_id, after_sequence=5)
    assert [m.sequence for m in after] == [6, 7]


def test_update_delete_with_etags(client) -> None:  # type: ignore[no-untyped-def]
    created = client.sessions.create_session(title="before").session
    updated = client.sessions.update_session(
        session={"session_id": created.session_id, "title": "after", "etag": created.etag},
        update_mask=["title"],
    ).session
    assert updated.title == "after" and updated.etag != created.etag
    with pytest.raises(AbortedError) as caught:
        client.sessions.update_session(
            session={"session_id": created.session_id, "title": "stale", "etag": created.etag},
            update_mask="title",
        )
    assert caught.value.reason == "ERROR_REASON_ETAG_MISMATCH"
    closed = client.sessions.update_session(
        session={"session_id": created.session_id, "state": "SESSION_STATE_CLOSED"},
        update_mask=["state"],
    ).session
    assert closed.state == session_pb2.SESSION_STATE_CLOSED
    with pytest.raises(FailedPreconditionError) as caught:
        client.sessions.append_messages(session_id=created.session_id, messages=[say("x", "a")])
    assert caught.value.reason == "ERROR_REASON_SESSION_CLOSED"
    with pytest.raises(AbortedError):
        client.sessions.delete_session(session_id=created.session_id, etag=created.etag)
    client.sessions.delete_session(session_id=created.session_id, etag=closed.etag)
    with pytest.raises(NotFoundError):
        client.sessions.get_session(session_id=created.session_id)


def test_append_idempotent_and_conditional(client) -> None:  # type: ignore[no-untyped-def]
    session_id = client.sessions.create_session().session.session_id
    request_id = uid("req")
    first = client.sessions.append_messages(
        session_id=session_id, messages=[say("once", "a")], request_id=request_id
    )
    again = client.sessions.append_messages(
        session_id=session_id, messages=[say("once", "a")], request_id=request_id
    )
    assert again.messages[0].message_id == first.messages[0].message_id
    with pytest.raises(AlreadyExistsError) as caught:
        client.sessions.append_messages(
            session_id=session_id, messages=[say("different", "a")], request_id=request_id
        )
    assert caught.value.reason == "ERROR_REASON_REQUEST_ID_CONFLICT"
    with pytest.raises(AbortedError) as caught:
        client.sessions.append_messages(
            session_id=session_id, messages=[say("x", "a")], expected_last_sequence=0
        )
    assert caught.value.reason == "ERROR_REASON_SEQUENCE_CONFLICT"
    assert caught.value.metadata["last_sequence"] == "1"


def test_fork_and_watch(client) -> None:  # type: ignore[no-untyped-def]
    session_id = client.sessions.create_session(title="parent").session.session_id
    client.sessions.append_messages(
        session_id=session_id, messages=[say(f"m{i}", "a") for i in range(3)]
    )
    fork = client.sessions.fork_session(session_id=session_id, at_sequence=2).session
    assert fork.parent_session_id == session_id and fork.message_count == 2
    assert [s.session_id for s in client.sessions.list_sessions(parent_session_id=session_id)] == [
        fork.session_id
    ]

    received: list[int] = []
    with client.sessions.watch_session(session_id=session_id, after_sequence=1) as stream:
        appender = threading.Timer(
            0.3,
            lambda: client.sessions.append_messages(
                session_id=session_id, messages=[say("live", "b")]
            ),
        )
        appender.start()
        for event in stream:
            received.append(event.message.sequence)
            if event.message.sequence == 4:
                break
        appender.join()
    assert received == [2, 3, 4]


async def test_sessions_async(aclient) -> None:  # type: ignore[no-untyped-def]
    sessions = aclient.sessions
    user = uid("user")
    created = [
        (await sessions.create_session(user_id=user, title=f"t{i}")).session for i in range(3)
    ]
    listed = [s.session_id async for s in sessions.list_sessions(user_id=user, page_size=1)]
    assert listed == [s.session_id for s in reversed(created)]
    session_id = created[0].session_id
    await sessions.append_messages(session_id=session_id, messages=[say("a", "x"), say("b", "y")])
    assert [m.content async for m in sessions.list_messages(session_id=session_id)] == ["a", "b"]
    updated = await sessions.update_session(
        session={"session_id": session_id, "labels": {"k": "v"}}, update_mask=["labels"]
    )
    assert dict(updated.session.labels) == {"k": "v"}
    usage = await sessions.get_session_usage(session_id=session_id)
    assert sorted(a.agent_id for a in usage.by_agent) == ["x", "y"]
    fork = await sessions.fork_session(session_id=session_id, at_sequence=1, title="fork")
    assert fork.session.message_count == 1

    async def append_later() -> None:
        await asyncio.sleep(0.2)
        await sessions.append_messages(session_id=session_id, messages=[say("live", "z")])

    task = asyncio.create_task(append_later())
    seen = []
    async with sessions.watch_session(session_id=session_id) as stream:
        async for event in stream:
            seen.append(event.message.content)
            if len(seen) == 3:
                break
    await task
    assert seen == ["a", "b", "live"]
    await sessions.delete_session(session_id=session_id)
    with pytest.raises(NotFoundError):
        await sessions.get_session(session_id=session_id)
