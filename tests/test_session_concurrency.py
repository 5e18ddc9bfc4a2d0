"""Ordering under concurrent appends, watch resumption, and appends across a SIGTERM — on
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import signal
import threading

import grpc
import pytest

from agentplane.session.v1 import session_pb2
from agentplane.session.v1 import session_service_pb2 as pb
from agentplane.session.v1 import session_service_pb2_grpc as rpc

AGENTS = 6
APPENDS_PER_AGENT = 15


def message(agent: str, n: int) -> pb.MessageInput:
    return pb.MessageInput(role=session_pb2.ROLE_ASSISTANT, content=f"{agent}:{n}", agent_id=agent)


async def test_concurrent_appends_from_several_agents_are_ordered_without_gaps(server) -> None:  # type: ignore[no-untyped-def]
    md = server.metadata()
    async with grpc.aio.insecure_channel(server.address) as channel:
        sessions = rpc.SessionServiceStub(channel)
        session_id = (
            await sessions.CreateSession(pb.CreateSessionRequest(), metadata=md)
        ).session.session_id

        async def agent(name: str) -> list[int]:
            sequences = []
            for n in range(APPENDS_PER_AGENT):
                reply = await sessions.AppendMessages(
                    pb.AppendMessagesRequest(
                        session_id=session_id, messages=[message(name, n), message(name, n)]
                    ),
                    metadata=md,
                )
                pair = [m.sequence for m in reply.messages]
                assert pair[1] == pair[0] + 1  # one append's messages stay together
                sequences += pair
            return sequences

        results = await asyncio.gather(*(agent(f"agent-{i}") for i in range(AGENTS)))
        listed = await sessions.ListMessages(
            pb.ListMessagesRequest(session_id=session_id, page_size=1000), metadata=md
        )
    total = AGENTS * APPENDS_PER_AGENT * 2
    assert sorted(s for r in results for s in r) == list(range(1, total + 1))
    assert [m.sequence for m in listed.messages] == list(range(1, total + 1))
    for i in range(AGENTS):  # each agent's own messages are in the order it sent them
        mine = [m.content for m in listed.messages if m.agent_id == f"agent-{i}"]
        assert mine == [f"agent-{i}:{n}" for n in range(APPENDS_PER_AGENT) for _ in (0, 1)]


async def test_watch_delivers_each_message_once_in_order_across_a_reconnect(server) -> None:  # type: ignore[no-untyped-def]
    md = server.metadata()
    total = 60
    async with grpc.aio.insecure_channel(server.address) as channel:
        sessions = rpc.SessionServiceStub(channel)
        session_id = (
            await sessions.CreateSession(pb.CreateSessionRequest(), metadata=md)
        ).session.session_id

        async def writer() -> None:
            for n in range(total):
                await sessions.AppendMessages(
                    pb.AppendMessagesRequest(session_id=session_id, messages=[message("w", n)]),
                    metadata=md,
                )
                await asyncio.sleep(0.005)

        received: list[int] = []

        async def watch_until(count: int) -> None:
            call = sessions.WatchSession(
                pb.WatchSessionRequest(
                    session_id=session_id, after_sequence=received[-1] if received else 0
                ),
                metadata=md,
            )
            async for event in call:
                received.append(event.message.sequence)
                if len(received) >= count:
                    call.cancel()  # drop the stream mid-way, like a network cut
                    return

        writing = asyncio.create_task(writer())
        await watch_until(total // 3)
        await watch_until(2 * total // 3)  # reconnect, resuming from the last sequence seen
        await watch_until(total)
        await writing
    assert received == list(range(1, total + 1))


@pytest.mark.slow
def test_sigterm_during_appends_keeps_every_acknowledged_append(
    make_server, backend, postgres
) -> None:  # type: ignore[no-untyped-def]
    from conftest import database_url_for

    url = database_url_for(backend, postgres)
    first = make_server(url)
    md = first.metadata()
    channel = first.channel()
    sessions = rpc.SessionServiceStub(channel)
    session_id = sessions.CreateSession(pb.CreateSessionRequest(), metadata=md).session.session_id
    acknowledged: list[str] = []
    failures: list[grpc.StatusCode] = []
    stop = threading.Event()

    def append_forever(worker: int) -> None:
        n = 0
        while not stop.is_set():
            content = f"{worker}:{n}"
            try:
                sessions.AppendMessages(
                    pb.AppendMessagesRequest(
                        session_id=session_id,
                        messages=[pb.MessageInput(role=session_pb2.ROLE_USER, content=content)],
                    ),
                    metadata=md,
                    timeout=10,
                )
                acknowledged.append(content)
            except grpc.RpcError as error:
                failures.append(error.code())
                return
            n += 1

    threads = [threading.Thread(target=append_forever, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    while len(acknowledged) < 40:
        threading.Event().wait(0.01)
    first.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(30)
    stop.set()
    assert first.process.wait(30) == 0, first.logs()
    assert "shutting down" in first.logs()

    second = make_server(url, data_dir=first.data_dir)
    listed = rpc.SessionServiceStub(second.channel()).ListMessages(
        pb.ListMessagesRequest(session_id=session_id, page_size=1000), metadata=second.metadata()
    )
    stored = [m.content for m in listed.messages]
    assert set(acknowledged) <= set(stored)
    assert len(stored) == len(set(stored))  # nothing stored twice
    assert [m.sequence for m in listed.messages] == list(range(1, len(stored) + 1))
    # Calls after the stop were refused as unavailable, not lost silently.
    assert set(failures) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
