"""Trace storage: span ingestion in bulk, trace summaries, and the reads of TraceService.

Ingestion writes a whole Export batch with a handful of statements, whatever its size:
- PostgreSQL: one `INSERT ... SELECT FROM unnest(<one array per column>)` per table. The
  arrays travel as 18 parameters, so the statement is parsed once and the server does the
  per-row work; `ON CONFLICT DO NOTHING RETURNING` tells which spans are new (an exporter may
  resend a batch whose answer it lost), and only those are added to the summaries.
- SQLite: `executemany` of one prepared statement (a C loop in the sqlite3 module), after
  reading which of the batch's spans are stored already (the write lock is held, so that read
  stays true until commit).
The trace summaries are upserted once per batch (one row per trace, merged in SQL with the
stored row), never once per span. PostgreSQL parameters go in binary format (`%b`): integers
and bytea travel without text conversion or escaping, which measured about half the cost of
text parameters. This is hand-written SQL rather than SQLAlchemy Core because Core's
executemany handles each row's parameters in Python, on the hot path of every Export.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from agentplane_server.storage import tables
from agentplane_server.storage.queries import newest_first
from agentplane_server.trace.ingest import SPAN, SPAN_COLUMNS, TRACE, SpanRow, TraceSummary

S = tables.spans
T = tables.traces
TA = tables.trace_agents
TM = tables.trace_models

_SPAN_PG_TYPES = (
    "text",  # trace_id
    "text",  # span_id
    "text",  # parent_span_id
    "text",  # name
    "int2",  # kind
    "int8",  # start_time_us
    "int8",  # end_time_us
    "int2",  # status_code
    "text",  # status_message
    "text",  # agent_id
    "text",  # session_id
    "text",  # service_name
    "text",  # model
    "int8",  # input_tokens
    "int8",  # output_tokens
    "int8",  # cost_micros
    "text",  # cost_currency
    "bytea",  # payload
)
_SPAN_INSERT_COLUMNS = ", ".join(("project_id", *SPAN_COLUMNS, "create_time_us"))

_PG_INSERT_SPANS = (
    f"INSERT INTO spans ({_SPAN_INSERT_COLUMNS}) "
    f"SELECT %b, u.*, %b FROM unnest({', '.join(f'%b::{t}[]' for t in _SPAN_PG_TYPES)}) AS u "
    "ON CONFLICT DO NOTHING RETURNING trace_id, span_id"
)
_SQLITE_INSERT_SPANS = (
    f"INSERT OR IGNORE INTO spans ({_SPAN_INSERT_COLUMNS}) "
    f"VALUES ({', '.join('?' for _ in range(len(SPAN_COLUMNS) + 2))})"
)

_SUMMARY_COLUMNS = (
    "trace_id",
    "root_span_name",
    "root_start_us",
    "session_id",
    "session_start_us",
    "start_time_us",
    "end_time_us",
    "span_count",
    "error_count",
    "input_tokens",
    "output_tokens",
    "cost_micros",
    "cost_currency",
)
_SUMMARY_PG_TYPES = (
    "text",
    "text",
    "int8",
    "text",
    "int8",
    "int8",
    "int8",
    "int8",
    "int8",
    "int8",
    "int8",
    "int8",
    "text",
)


def _summary_merge(least: str, greatest: str) -> str:
    """The ON CONFLICT clause that merges a batch's summary into the stored one. Every
    expression reads the stored row's old values, so the order of assignments is irrelevant."""
    earlier_root = (
        "excluded.root_start_us IS NOT NULL AND (traces.root_start_us IS NULL "
        "OR excluded.root_start_us < traces.root_start_us)"
    )
    earlier_session = (
        "excluded.session_start_us IS NOT NULL AND (traces.session_start_us IS NULL "
        "OR excluded.session_start_us < traces.session_start_us)"
    )
    return (
        "ON CONFLICT (project_id, trace_id) DO UPDATE SET "
        f"root_span_name = CASE WHEN {earlier_root} THEN excluded.root_span_name "
        "ELSE traces.root_span_name END, "
        f"root_start_us = CASE WHEN {earlier_root} THEN excluded.root_start_us "
        "ELSE traces.root_start_us END, "
        f"session_id = CASE WHEN {earlier_session} THEN excluded.session_id "
        "ELSE traces.session_id END, "
        f"session_start_us = CASE WHEN {earlier_session} THEN excluded.session_start_us "
        "ELSE traces.session_start_us END, "
        f"start_time_us = {least}(traces.start_time_us, excluded.start_time_us), "
        f"end_time_us = {greatest}(traces.end_time_us, excluded.end_time_us), "
        "span_count = traces.span_count + excluded.span_count, "
        "error_count = traces.error_count + excluded.error_count, "
        "input_tokens = traces.input_tokens + excluded.input_tokens, "
        "output_tokens = traces.output_tokens + excluded.output_tokens, "
        "cost_micros = traces.cost_micros + excluded.cost_micros, "
        "cost_currency = CASE WHEN traces.cost_currency = '' THEN excluded.cost_currency "
        "ELSE traces.cost_currency END, "
        "update_time_us = excluded.update_time_us"
    )


_SUMMARY_INSERT_COLUMNS = ", ".join(
    ("project_id", *_SUMMARY_COLUMNS, "create_time_us", "update_time_us")
)
_PG_UPSERT_SUMMARIES = (
    f"INSERT INTO traces ({_SUMMARY_INSERT_COLUMNS}) "
    f"SELECT %b, u.*, %b, %b FROM unnest({', '.join(f'%b::{t}[]' for t in _SUMMARY_PG_TYPES)}) "
    f"AS u {_summary_merge('LEAST', 'GREATEST')}"
)
_SQLITE_UPSERT_SUMMARIES = (
    f"INSERT INTO traces ({_SUMMARY_INSERT_COLUMNS}) "
    f"VALUES ({', '.join('?' for _ in range(len(_SUMMARY_COLUMNS) + 3))}) "
    f"{_summary_merge('MIN', 'MAX')}"
)


def _first_seen_upsert(table: str, column: str, postgres: bool) -> str:
    if postgres:
        return (
            f"INSERT INTO {table} (project_id, trace_id, {column}, first_start_us) "
            "SELECT %b, u.* FROM unnest(%b::text[], %b::text[], %b::int8[]) AS u "
            f"ON CONFLICT (project_id, trace_id, {column}) DO UPDATE SET "
            f"first_start_us = LEAST({table}.first_start_us, excluded.first_start_us)"
        )
    return (
        f"INSERT INTO {table} (project_id, trace_id, {column}, first_start_us) "
        "VALUES (?, ?, ?, ?) "
        f"ON CONFLICT (project_id, trace_id, {column}) DO UPDATE SET "
        f"first_start_us = MIN({table}.first_start_us, excluded.first_start_us)"
    )


_UPSERT_AGENTS = {p: _first_seen_upsert("trace_agents", "agent_id", p) for p in (True, False)}
_UPSERT_MODELS = {p: _first_seen_upsert("trace_models", "model", p) for p in (True, False)}


def _columns(rows: list[tuple]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)]


@dataclass(frozen=True, slots=True)
class TraceFilter:
    agent_ids: tuple[str, ...] = ()
    session_id: str = ""
    start_after_us: int | None = None
    start_before_us: int | None = None
    error: bool | None = None
    root_span_name: str = ""
    min_duration_us: int = 0


class TraceStore:
    # -- ingestion --------------------------------------------------------------------------

    async def insert_spans(
        self, c: AsyncConnection, project_id: str, rows: list[SpanRow], now: int
    ) -> list[SpanRow]:
        """Store the spans not stored yet; returns those (a resent span is not stored twice)."""
        rows.sort(key=lambda r: (r[TRACE], r[SPAN]))  # one lock order for concurrent batches
        if c.dialect.name == "postgresql":
            result = await c.exec_driver_sql(_PG_INSERT_SPANS, (project_id, now, *_columns(rows)))
            inserted = {(r[0], r[1]) for r in result.fetchall()}
            if len(inserted) == len(rows):
                return rows
            new_rows: list[SpanRow] = []
            for row in rows:
                key = (row[TRACE], row[SPAN])
                if key in inserted:
                    inserted.discard(key)  # a span repeated within the batch counts once
                    new_rows.append(row)
            return new_rows
        trace_ids = sorted({r[TRACE] for r in rows})
        stored: set[tuple[str, str]] = set()
        for start in range(0, len(trace_ids), 500):  # SQLite bound-parameter limits
            chunk = trace_ids[start : start + 500]
            found = await c.execute(
                sa.select(S.c.trace_id, S.c.span_id).where(
                    S.c.project_id == project_id, S.c.trace_id.in_(chunk)
                )
            )
            stored.update((r.trace_id, r.span_id) for r in found)
        new_rows = []
        for row in rows:
            key = (row[TRACE], row[SPAN])
            if key not in stored:
                stored.add(key)
                new_rows.append(row)
        if new_rows:
            await c.exec_driver_sql(
                _SQLITE_INSERT_SPANS, [(project_id, *row, now) for row in new_rows]
            )
        return new_rows

    async def upsert_summaries(
        self,
        c: AsyncConnection,
        project_id: str,
        summaries: list[TraceSummary],
        agents: list[tuple[str, str, int]],
        models: list[tuple[str, str, int]],
        now: int,
    ) -> None:
        postgres = c.dialect.name == "postgresql"
        values = [
            (
                s.trace_id,
                s.root_span_name,
                s.root_start_us,
                s.session_id,
                s.session_start_us,
                s.start_time_us,
                s.end_time_us,
                s.span_count,
                s.error_count,
                s.input_tokens,
                s.output_tokens,
                s.cost_micros,
                s.cost_currency,
            )
            for s in summaries
        ]
        if postgres:
            await c.exec_driver_sql(_PG_UPSERT_SUMMARIES, (project_id, now, now, *_columns(values)))
        else:
            await c.exec_driver_sql(
                _SQLITE_UPSERT_SUMMARIES, [(project_id, *v, now, now) for v in values]
            )
        for statement, items in (
            (_UPSERT_AGENTS[postgres], agents),
            (_UPSERT_MODELS[postgres], models),
        ):
            if not items:
                continue
            if postgres:
                await c.exec_driver_sql(statement, (project_id, *_columns(items)))
            else:
                await c.exec_driver_sql(statement, [(project_id, *item) for item in items])

    # -- reads ------------------------------------------------------------------------------

    async def get_summary(self, c: AsyncConnection, project_id: str, trace_id: str) -> Any:
        return (
            await c.execute(
                sa.select(T).where(T.c.project_id == project_id, T.c.trace_id == trace_id)
            )
        ).first()

    async def list_summaries(
        self,
        c: AsyncConnection,
        project_id: str,
        where: TraceFilter,
        after: tuple[int, str] | None,
        limit: int,
    ) -> list[Any]:
        query = sa.select(T).where(T.c.project_id == project_id)
        if where.session_id:
            query = query.where(T.c.session_id == where.session_id)
        if where.start_after_us is not None:
            query = query.where(T.c.start_time_us >= where.start_after_us)
        if where.start_before_us is not None:
            query = query.where(T.c.start_time_us < where.start_before_us)
        if where.error is True:
            query = query.where(T.c.error_count > 0)
        elif where.error is False:
            query = query.where(T.c.error_count == 0)
        if where.root_span_name:
            query = query.where(T.c.root_span_name == where.root_span_name)
        if where.min_duration_us:
            query = query.where(T.c.end_time_us - T.c.start_time_us >= where.min_duration_us)
        if where.agent_ids:
            query = query.where(
                sa.exists().where(
                    TA.c.project_id == T.c.project_id,
                    TA.c.trace_id == T.c.trace_id,
                    TA.c.agent_id.in_(where.agent_ids),
                )
            )
        query = newest_first(query, T.c.start_time_us, T.c.trace_id, after, limit)
        return list((await c.execute(query)).all())

    async def agents_and_models(
        self, c: AsyncConnection, project_id: str, trace_ids: list[str]
    ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """Each trace's agents and models, in order of their first span's start."""
        found: list[dict[str, list[str]]] = []
        for table, column in ((TA, TA.c.agent_id), (TM, TM.c.model)):
            by_trace: dict[str, list[str]] = {}
            if trace_ids:
                rows = await c.execute(
                    sa.select(table.c.trace_id, column)
                    .where(table.c.project_id == project_id, table.c.trace_id.in_(trace_ids))
                    .order_by(table.c.trace_id, table.c.first_start_us, column)
                )
                for trace_id, value in rows:
                    by_trace.setdefault(trace_id, []).append(value)
            found.append(by_trace)
        return found[0], found[1]

    async def spans(
        self, c: AsyncConnection, project_id: str, trace_id: str, limit: int
    ) -> list[Any]:
        rows = await c.execute(
            sa.select(*[S.c[name] for name in SPAN_COLUMNS])
            .where(S.c.project_id == project_id, S.c.trace_id == trace_id)
            .order_by(S.c.start_time_us, S.c.span_id)
            .limit(limit)
        )
        return list(rows.all())
