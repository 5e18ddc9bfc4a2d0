"""Feedback storage (SQLAlchemy Core): feedback rows, their categories, lists and summaries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from google.protobuf import struct_pb2
from sqlalchemy.ext.asyncio import AsyncConnection

from agentplane.feedback.v1 import feedback_pb2
from agentplane.feedback.v1 import feedback_service_pb2 as pb
from agentplane_server.storage import tables
from agentplane_server.storage.queries import insert_ignore, newest_first

F = tables.feedback
C = tables.feedback_categories

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
WEEK_US = 7 * DAY_US
# Windows are aligned to UTC: hours and days count from the epoch (1970-01-01 00:00 UTC, a day
# boundary); weeks from Monday 1969-12-29 00:00 UTC (ISO 8601 weeks start on Monday; the epoch
# was a Thursday).
WINDOWS = {
    pb.WINDOW_HOUR: (HOUR_US, 0),
    pb.WINDOW_DAY: (DAY_US, 0),
    pb.WINDOW_WEEK: (WEEK_US, -3 * DAY_US),
}

# Columns a replacing create/submit overwrites (feedback.proto: same feedback_id and
# create_time; links, user and source stay those of the first feedback).
REPLACED_COLUMNS = ("rating", "score", "comment", "correction", "categories", "metadata")


def _struct(value: dict | None) -> struct_pb2.Struct | None:
    if value is None:
        return None
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def feedback_from_row(row: Any) -> feedback_pb2.Feedback:
    feedback = feedback_pb2.Feedback(
        feedback_id=row.feedback_id,
        project_id=row.project_id,
        rating=row.rating,
        comment=row.comment,
        correction=row.correction,
        categories=row.categories or [],
        source=row.source,
        user_id=row.user_id,
        agent_id=row.agent_id,
        session_id=row.session_id,
        message_id=row.message_id,
        trace_id=row.trace_id,
        metadata=_struct(row.metadata),
    )
    if row.score is not None:
        feedback.score = row.score
    feedback.create_time.FromMicroseconds(row.create_time_us)
    feedback.update_time.FromMicroseconds(row.update_time_us)
    return feedback


@dataclass(frozen=True, slots=True)
class FeedbackFilter:
    agent_ids: tuple[str, ...] = ()
    rating: int = 0
    create_after_us: int | None = None
    create_before_us: int | None = None
    session_id: str = ""
    message_id: str = ""
    trace_id: str = ""
    user_id: str = ""
    source: int = 0
    category: str = ""


@dataclass(frozen=True, slots=True)
class Bucket:
    agent_id: str
    window_start_us: int
    up_count: int
    down_count: int
    score_count: int
    mean_score: float | None
    feedback_count: int


class FeedbackStore:
    """Every method takes the transaction to run in; logic decides read or write."""

    async def insert_or_replace(
        self, c: AsyncConnection, values: dict[str, Any]
    ) -> tuple[feedback_pb2.Feedback, bool]:
        """Insert a feedback; when its dedupe_key is taken, replace that feedback's judgement
        instead. Returns the stored feedback and whether it replaced one.

        Race-free on both databases: ON CONFLICT DO NOTHING waits for a concurrent insert of
        the same key to commit, and the UPDATE that follows then finds its row.
        """
        project_id = values["project_id"]
        inserted = (
            await c.execute(insert_ignore(c, F).values(**values).returning(F.c.feedback_id))
        ).first()
        replaced = inserted is None
        if replaced:
            feedback_id = await c.scalar(
                sa.update(F)
                .where(F.c.project_id == project_id, F.c.dedupe_key == values["dedupe_key"])
                .values(
                    **{k: values[k] for k in REPLACED_COLUMNS},
                    update_time_us=values["update_time_us"],
                )
                .returning(F.c.feedback_id)
            )
            if feedback_id is None:  # the conflict was not on dedupe_key: cannot happen
                raise RuntimeError("feedback insert conflicted without a dedupe_key match")
        else:
            feedback_id = inserted.feedback_id
        await self._set_categories(c, project_id, feedback_id, values["categories"], replaced)
        stored = await self.get(c, project_id, feedback_id)
        assert stored is not None
        return stored, replaced

    async def _set_categories(
        self,
        c: AsyncConnection,
        project_id: str,
        feedback_id: str,
        categories: list[str],
        replace: bool,
    ) -> None:
        if replace:
            await c.execute(
                sa.delete(C).where(C.c.project_id == project_id, C.c.feedback_id == feedback_id)
            )
        if categories:
            await c.execute(
                C.insert(),
                [
                    {"project_id": project_id, "feedback_id": feedback_id, "category": category}
                    for category in categories
                ],
            )

    async def project_exists(self, c: AsyncConnection, project_id: str) -> bool:
        P = tables.projects
        found = await c.scalar(sa.select(P.c.project_id).where(P.c.project_id == project_id))
        return found is not None

    async def get(
        self, c: AsyncConnection, project_id: str, feedback_id: str
    ) -> feedback_pb2.Feedback | None:
        row = (
            await c.execute(
                sa.select(F).where(F.c.project_id == project_id, F.c.feedback_id == feedback_id)
            )
        ).first()
        return None if row is None else feedback_from_row(row)

    async def author(self, c: AsyncConnection, project_id: str, feedback_id: str) -> str | None:
        """The agent whose credential wrote the feedback ("" for anyone else); None when
        there is no such feedback."""
        return await c.scalar(
            sa.select(F.c.author_agent_id).where(
                F.c.project_id == project_id, F.c.feedback_id == feedback_id
            )
        )

    async def message_agent(
        self, c: AsyncConnection, project_id: str, message_id: str
    ) -> str | None:
        """The agent that wrote a session message of the project; None when there is none."""
        M = tables.messages
        return await c.scalar(
            sa.select(M.c.agent_id).where(
                M.c.project_id == project_id, M.c.message_id == message_id
            )
        )

    async def update(
        self, c: AsyncConnection, project_id: str, feedback_id: str, values: dict[str, Any]
    ) -> bool:
        result = await c.execute(
            sa.update(F)
            .where(F.c.project_id == project_id, F.c.feedback_id == feedback_id)
            .values(**values)
        )
        if result.rowcount != 1:
            return False
        if "categories" in values:
            await self._set_categories(c, project_id, feedback_id, values["categories"], True)
        return True

    async def delete(self, c: AsyncConnection, project_id: str, feedback_id: str) -> bool:
        result = await c.execute(
            sa.delete(F).where(F.c.project_id == project_id, F.c.feedback_id == feedback_id)
        )
        if result.rowcount != 1:
            return False
        await c.execute(
            sa.delete(C).where(C.c.project_id == project_id, C.c.feedback_id == feedback_id)
        )
        return True

    @staticmethod
    def _where(query: Any, project_id: str, where: FeedbackFilter) -> Any:
        query = query.where(F.c.project_id == project_id)
        if where.agent_ids:
            if len(where.agent_ids) == 1:
                query = query.where(F.c.agent_id == where.agent_ids[0])
            else:
                query = query.where(F.c.agent_id.in_(where.agent_ids))
        if where.rating:
            query = query.where(F.c.rating == where.rating)
        if where.create_after_us is not None:
            query = query.where(F.c.create_time_us >= where.create_after_us)
        if where.create_before_us is not None:
            query = query.where(F.c.create_time_us < where.create_before_us)
        for column, value in (
            (F.c.session_id, where.session_id),
            (F.c.message_id, where.message_id),
            (F.c.trace_id, where.trace_id),
            (F.c.user_id, where.user_id),
        ):
            if value:
                query = query.where(column == value)
        if where.source:
            query = query.where(F.c.source == where.source)
        if where.category:
            query = query.where(
                sa.exists().where(
                    C.c.project_id == F.c.project_id,
                    C.c.feedback_id == F.c.feedback_id,
                    C.c.category == where.category,
                )
            )
        return query

    async def list(
        self,
        c: AsyncConnection,
        project_id: str,
        where: FeedbackFilter,
        after: tuple[int, str] | None,
        limit: int,
    ) -> list[feedback_pb2.Feedback]:
        """Newest first by (create_time, feedback_id): a keyset page."""
        query = self._where(sa.select(F), project_id, where)
        query = newest_first(query, F.c.create_time_us, F.c.feedback_id, after, limit)
        return [feedback_from_row(row) for row in await c.execute(query)]

    async def summarize(
        self,
        c: AsyncConnection,
        project_id: str,
        where: FeedbackFilter,
        window: int,
    ) -> list[Bucket]:
        """Counts per agent per UTC-aligned window, computed by the database in one query."""
        width, origin = WINDOWS[window]
        # Integer arithmetic on both databases (`//` on integers renders as integer division).
        # Feedback create times are server clock readings, after the origin, so truncating
        # division is floor division here.
        # The constants are inlined, so the GROUP BY expression is textually the SELECT one.
        width_sql = sa.literal_column(str(int(width)), sa.BigInteger)
        shift = sa.literal_column(str(int(-origin)), sa.BigInteger)  # >= 0
        start = ((F.c.create_time_us + shift) // width_sql) * width_sql - shift
        bucket = start.label("window_start_us")
        query = self._where(
            sa.select(
                F.c.agent_id,
                bucket,
                sa.func.sum(sa.case((F.c.rating == feedback_pb2.RATING_THUMBS_UP, 1), else_=0)),
                sa.func.sum(sa.case((F.c.rating == feedback_pb2.RATING_THUMBS_DOWN, 1), else_=0)),
                sa.func.count(F.c.score),
                sa.func.avg(F.c.score),
                sa.func.count(),
            ),
            project_id,
            where,
        )
        query = query.group_by(F.c.agent_id, bucket).order_by(F.c.agent_id, bucket)
        return [
            Bucket(
                agent_id=agent_id,
                window_start_us=int(window_start),
                up_count=int(up or 0),
                down_count=int(down or 0),
                score_count=int(scored),
                mean_score=None if not scored else float(mean),
                feedback_count=int(total),
            )
            for agent_id, window_start, up, down, scored, mean, total in await c.execute(query)
        ]
