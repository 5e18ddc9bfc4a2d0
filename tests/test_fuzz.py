"""Property-based fuzzing of every RPC, driven by the message descriptors, on SQLite and
PostgreSQL.

For each method of every contract service (and OTLP Export) hypothesis draws requests from the
request type's descriptor — fields left out, values at and past their types' edges, oversize
strings, NUL characters, undefined enum values, out-of-range Timestamps and Durations, random
Structs and field masks — and raw bytes that may not parse at all. Every answer must be a
deliberate one: never INTERNAL or UNKNOWN; the server stays up; and a write the server refused
stored nothing (row counts of every table, read straight from the database, are unchanged).
It prints the count of answers by code.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Callable
from typing import Any

import grpc
import psycopg
from google.protobuf import descriptor, descriptor_pb2, message_factory
from google.protobuf.descriptor import FieldDescriptor as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_governance_helpers import Project
from test_trust_boundaries import contract_methods

EXAMPLES_PER_METHOD = 8
RAW_EXAMPLES_PER_METHOD = 3
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
# Written behind, after the call that caused them has answered: a later call's row counts
# would see them. The decision log has its own durability tests.
WRITTEN_BEHIND = {"governance_decisions", "governance_decision_policies"}
OVERSIZE = "x" * 70_000
IDS = ["", "a", "default", "billing", "tool:db.query", "x" * 129, "bad id!", "ünï", "a\x00b"]

INT_RANGES = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = [v for v in (low, high, 0, 1, -1, 2**31 - 1, 2**62) if low <= v <= high]
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def _scalar(field: descriptor.FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == F.TYPE_STRING:
        return st.one_of(st.sampled_from(IDS), st.text(max_size=40), st.just(OVERSIZE))
    if kind == F.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == F.TYPE_BOOL:
        return st.booleans()
    if kind == F.TYPE_ENUM:
        defined = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(defined), st.integers(-3, 10_000))
    if kind == F.TYPE_FLOAT:
        return st.floats(width=32)
    if kind == F.TYPE_DOUBLE:
        return st.floats()
    return _integers(*INT_RANGES[kind])


_JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def messages(draw: Callable, desc: descriptor.Descriptor, depth: int = 0) -> Any:
    """A message of type `desc` with a random subset of its fields set."""
    message = message_factory.GetMessageClass(desc)()
    name = desc.full_name
    if name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
        message.seconds = draw(_integers(-(2**63), 2**63 - 1))
        message.nanos = draw(_integers(-(2**31), 2**31 - 1))
        return message
    if name == "google.protobuf.Struct":
        message.update(draw(st.dictionaries(st.text(max_size=8), _JSON, max_size=4)))
        return message
    if name == "google.protobuf.FieldMask":
        message.paths.extend(draw(st.lists(st.text(max_size=12), max_size=3)))
        return message
    if name in ("google.protobuf.Value", "google.protobuf.ListValue", "google.protobuf.Any"):
        return message
    if depth > 3 or not desc.fields:
        return message
    chosen = draw(st.lists(st.sampled_from(list(desc.fields)), unique_by=lambda f: f.number))
    for field in chosen:
        _set(draw, message, field, depth)
    return message


def _set(draw: Callable, message: Any, field: descriptor.FieldDescriptor, depth: int) -> None:
    target = getattr(message, field.name)
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
        for _ in range(draw(st.integers(0, 3))):
            key = draw(_scalar(key_field))
            if value_field.message_type is not None:
                target[key].CopyFrom(draw(messages(value_field.message_type, depth + 1)))
            else:
                target[key] = draw(_scalar(value_field))
        return
    if field.is_repeated:
        for _ in range(draw(st.integers(0, 3))):
            if entry is not None:
                target.add().CopyFrom(draw(messages(entry, depth + 1)))
            else:
                target.append(draw(_scalar(field)))
        return
    if entry is not None:
        target.CopyFrom(draw(messages(entry, depth + 1)))
    else:
        setattr(message, field.name, draw(_scalar(field)))


class RowCounts:
    """Rows per table, read straight from the server's database."""

    def __init__(self, server) -> None:  # type: ignore[no-untyped-def]
        if server.database_url:
            url = server.database_url.replace("postgresql+psycopg://", "postgresql://")
            self.conn: Any = psycopg.connect(url, autocommit=True)
        else:
            self.conn = sqlite3.connect(server.data_dir / "agentplane.db")
        from agentplane_server.storage import tables

        self.tables = sorted(t.name for t in tables.metadata.sorted_tables)
        self.tables = [t for t in self.tables if t not in WRITTEN_BEHIND]

    def __call__(self) -> dict[str, int]:
        query = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in self.tables)
        return dict(self.conn.execute(query).fetchall())

    def close(self) -> None:
        self.conn.close()


def _read_only(path: str) -> bool:
    from google.protobuf import descriptor_pool

    service, method = path.strip("/").split("/")
    found = descriptor_pool.Default().FindMethodByName(f"{service}.{method}")
    return found.GetOptions().idempotency_level == descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS


def test_every_rpc_answers_every_request_deliberately(server, capsys) -> None:  # type: ignore[no-untyped-def]
    project = Project(server, agent_id="fuzz")
    credentials = [project.md, project.agent, project.reader]
    channel = server.channel()
    counts = RowCounts(server)
    codes: collections.Counter[str] = collections.Counter()
    try:
        for path, streaming, request_type in contract_methods():
            writes = not _read_only(path)

            def send(
                payload: bytes,
                md: Any,
                path: str = path,
                streaming: bool = streaming,
                writes: bool = writes,
            ) -> None:
                before = counts() if writes else None
                try:
                    if streaming:  # a watch may wait for changes: a short deadline ends it
                        for _ in channel.unary_stream(path)(payload, metadata=md, timeout=1.5):
                            pass
                    else:
                        channel.unary_unary(path)(payload, metadata=md, timeout=15)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as error:
                    code = error.code()  # type: ignore[attr-defined]
                    assert code not in NEVER, f"{path} answered {code}: {error.details()}"  # type: ignore[attr-defined]
                codes[code.name] += 1
                if before is not None and code not in (
                    grpc.StatusCode.OK,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                ):
                    assert counts() == before, f"{path} refused ({code.name}) but stored rows"

            @settings(
                max_examples=EXAMPLES_PER_METHOD,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(messages(request_type), st.sampled_from(credentials))
            def drawn(message: Any, md: Any) -> None:
                send(message.SerializeToString(), md)

            @settings(
                max_examples=RAW_EXAMPLES_PER_METHOD,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(st.binary(min_size=1, max_size=200), st.sampled_from(credentials))
            def raw(payload: bytes, md: Any) -> None:
                send(payload, md)

            send(b"", project.md)  # every field missing
            drawn()
            raw()
    finally:
        counts.close()
    assert server.process.poll() is None, "the server died"
    server.wait_ready(timeout=10)
    assert "Traceback" not in server.logs()
    with capsys.disabled():
        print(f"\nfuzz answers by code ({'postgres' if server.database_url else 'sqlite'}):")
        for code, count in sorted(codes.items()):
            print(f"  {code:<20} {count}")
    assert codes["INVALID_ARGUMENT"] > 0 and sum(codes.values()) > 400
