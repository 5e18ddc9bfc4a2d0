""" "All thumbs-down feedback this week, across all agents" over 1,000,000 feedback rows, through a
real `agentplane serve` on PostgreSQL and SQLite, beside an echo gRPC server answering the same
number of bytes in the same run. Prints one JSON document.

    .venv/bin/python bench/bench_feedback.py                # full run, 1,000,000 rows
    .venv/bin/python bench/bench_feedback.py --quick        # smoke run, 100,000 rows

The rows are bulk-loaded straight into the database (PostgreSQL COPY, SQLite executemany),
spread evenly over the last 8 weeks, 40 agents, a third of them thumbs-down; then ANALYZE. The
query is the RPC a dashboard makes: ListFeedback(rating=THUMBS_DOWN, create_time from Monday
00:00 UTC of this week), first page (50, newest first), one call in flight. The same query is
also timed with SummarizeFeedback (this week, by day) and the database's own plan is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import sqlite3
import sys
import time

import grpc
import psycopg
from _common import (
    ECHO_METHOD,
    CpuMeter,
    EchoServer,
    Postgres,
    ServerProcess,
    host_info,
    latency,
)
from google.protobuf import timestamp_pb2

from agentplane.common.v1 import time_range_pb2
from agentplane.feedback.v1 import feedback_pb2
from agentplane.feedback.v1 import feedback_service_pb2 as pb
from agentplane.feedback.v1 import feedback_service_pb2_grpc as rpc

WEEK_US = 7 * 86_400_000_000
AGENTS = [f"agent-{i:02d}" for i in range(40)]
COLUMNS = (
    "project_id",
    "feedback_id",
    "rating",
    "score",
    "comment",
    "correction",
    "categories",
    "source",
    "user_id",
    "agent_id",
    "session_id",
    "message_id",
    "trace_id",
    "metadata",
    "dedupe_key",
    "create_time_us",
    "update_time_us",
)


def week_start_us(now_us: int) -> int:
    now = dt.datetime.fromtimestamp(now_us / 1e6, tz=dt.UTC)
    monday = (now - dt.timedelta(days=now.weekday())).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    return int(monday.timestamp()) * 1_000_000


def rows(count: int, now_us: int):  # type: ignore[no-untyped-def]
    rng = random.Random(1)
    span = 8 * WEEK_US
    for i in range(count):
        created = now_us - rng.randrange(span)
        rating = (feedback_pb2.RATING_THUMBS_UP, feedback_pb2.RATING_THUMBS_DOWN, 0)[i % 3]
        yield (
            "default",
            f"fb_bench{i:012d}",
            rating,
            round(rng.random(), 3) if i % 4 == 0 else None,
            "The answer missed the order number." if rating == 2 else "",
            "",
            "[]",
            feedback_pb2.FEEDBACK_SOURCE_HUMAN,
            f"user-{rng.randrange(5000)}",
            AGENTS[i % len(AGENTS)],
            f"ses-{i // 7}",
            f"msg-{i}",
            "",
            None,
            None,
            created,
            created,
        )


def load_postgres(url: str, count: int, now_us: int) -> dict:
    began = time.perf_counter()
    with psycopg.connect(url) as connection:
        with connection.cursor() as cursor:
            with cursor.copy(f"COPY feedback ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for row in rows(count, now_us):
                    copy.write_row(row)
        connection.commit()
        connection.execute("ANALYZE feedback")
        connection.commit()
    return {"rows": count, "load_s": round(time.perf_counter() - began, 1), "method": "COPY"}


def load_sqlite(path: str, count: int, now_us: int) -> dict:
    began = time.perf_counter()
    with sqlite3.connect(path, timeout=60) as connection:
        statement = (
            f"INSERT INTO feedback ({', '.join(COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in COLUMNS)})"
        )
        connection.executemany(statement, rows(count, now_us))
        connection.commit()
        connection.execute("ANALYZE")
    return {"rows": count, "load_s": round(time.perf_counter() - began, 1), "method": "executemany"}


def plan(server: ServerProcess, start_us: int) -> dict:
    """The database's plan and execution time for the query ListFeedback sends."""
    sql = (
        "SELECT * FROM feedback WHERE project_id = 'default' AND rating = 2 "
        f"AND create_time_us >= {start_us} "
        "ORDER BY create_time_us DESC, feedback_id DESC LIMIT 51"
    )
    if server.database_url:
        url = server.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(url) as connection:
            lines = [
                r[0] for r in connection.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}").fetchall()
            ]
            return {"plan": lines}
    with sqlite3.connect(server.data_dir / "agentplane.db") as connection:
        lines = [r[-1] for r in connection.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()]
        began = time.perf_counter()
        for _ in range(20):
            connection.execute(sql).fetchall()
        return {"plan": lines, "execution_ms": round((time.perf_counter() - began) / 20 * 1000, 2)}


def timestamp(micros: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(micros)
    return stamp


async def bench_server(args: argparse.Namespace, server: ServerProcess, now_us: int) -> dict:
    if server.database_url:
        url = server.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
        loaded = load_postgres(url, args.rows, now_us)
    else:
        loaded = load_sqlite(str(server.data_dir / "agentplane.db"), args.rows, now_us)
    start_us = week_start_us(now_us)
    this_week = time_range_pb2.TimeRange(start_time=timestamp(start_us))
    list_request = pb.ListFeedbackRequest(
        rating=feedback_pb2.RATING_THUMBS_DOWN, create_time=this_week
    )
    summary_request = pb.SummarizeFeedbackRequest(
        time_range=time_range_pb2.TimeRange(
            start_time=timestamp(start_us), end_time=timestamp(start_us + WEEK_US)
        ),
        window=pb.WINDOW_DAY,
    )
    md = server.metadata()
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = rpc.FeedbackServiceStub(channel)
        first = await stub.ListFeedback(list_request, metadata=md)
        assert len(first.feedback) == 50 and first.next_page_token
        assert all(f.rating == feedback_pb2.RATING_THUMBS_DOWN for f in first.feedback)
        assert first.feedback[-1].create_time.ToMicroseconds() >= start_us

        async def list_call(i: int) -> object:
            return await stub.ListFeedback(list_request, metadata=md)

        async def summary_call(i: int) -> object:
            return await stub.SummarizeFeedback(summary_request, metadata=md)

        cpu = CpuMeter(server.process.pid)
        figures = {
            "database": "postgresql" if server.database_url else "sqlite",
            "load": loaded,
            "this_week_thumbs_down_first_page": {
                "response_bytes": first.ByteSize(),
                **await latency(list_call, args.calls, args.warmup, cpu),
            },
            "database_plan": plan(server, start_us),
        }
        summary = await stub.SummarizeFeedback(summary_request, metadata=md)
        figures["summarize_this_week_by_day"] = {
            "buckets": len(summary.buckets),
            "feedback_counted": sum(b.feedback_count for b in summary.buckets),
            **await latency(summary_call, args.summary_calls, 2, cpu),
        }
        return figures, first.ByteSize()


async def bench_echo(args: argparse.Namespace, response_bytes: int) -> dict:
    payload = b"x" * response_bytes
    echo = EchoServer()
    try:
        async with grpc.aio.insecure_channel(echo.address) as channel:
            call_echo = channel.unary_unary(ECHO_METHOD)

            async def call(i: int) -> object:
                return await call_echo(payload)

            return {
                "payload_bytes": response_bytes,
                **await latency(call, args.calls, args.warmup, CpuMeter(echo.process.pid)),
            }
    finally:
        echo.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, 100,000 rows")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--backends", default="postgres,sqlite")
    args = parser.parse_args()
    args.rows = args.rows or (100_000 if args.quick else 1_000_000)
    args.calls, args.warmup, args.summary_calls = (100, 10, 5) if args.quick else (500, 30, 20)
    began = time.monotonic()
    now_us = time.time_ns() // 1000
    report: dict = {
        "bench": "feedback",
        "mode": "quick" if args.quick else "full",
        "host": host_info(),
        "method": {
            "data": f"{args.rows} feedback rows over the last 8 weeks, {len(AGENTS)} agents, "
            "a third thumbs-down, bulk-loaded then ANALYZE",
            "query": "ListFeedback(rating=RATING_THUMBS_DOWN, create_time.start_time=Monday "
            "00:00 UTC this week): first page of 50, newest first",
            "latency": f"{args.calls} calls after {args.warmup} warm-up, one in flight, "
            "grpc.aio client",
            "echo": "grpc.aio generic unary handler returning a payload of the response's size",
            "server": "agentplane serve, defaults (1 worker, access log on), child process",
        },
    }
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    postgres = Postgres.find() if "postgres" in backends else None
    response_bytes = 0
    try:
        for backend in backends:
            url = postgres.create_database() if backend == "postgres" and postgres else None
            server = ServerProcess(url)
            try:
                report[backend], response_bytes = await bench_server(args, server, now_us)
            finally:
                server.stop()
        report["echo"] = await bench_echo(args, response_bytes)
    finally:
        if postgres:
            postgres.close()
    report["summary"] = {
        backend: {
            "p50_ms": round(
                report[backend]["this_week_thumbs_down_first_page"]["p50_us"] / 1000, 2
            ),
            "p99_ms": round(
                report[backend]["this_week_thumbs_down_first_page"]["p99_us"] / 1000, 2
            ),
            "echo_p50_ms": round(report["echo"]["p50_us"] / 1000, 3),
        }
        for backend in backends
    }
    if "postgres" in backends:
        report["summary"]["postgres_target_p50_under_20ms_met"] = (
            report["summary"]["postgres"]["p50_ms"] < 20
        )
    report["wall_s"] = round(time.monotonic() - began, 1)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    asyncio.run(main())
