"""Inference usage in the database (SQLAlchemy Core): the only place with inference queries."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from agentplane_server.storage import tables

U = tables.inference_usage
D = tables.inference_usage_daily


class UsageStore:
    def __init__(self, is_sqlite: bool) -> None:
        self.insert = sqlite.insert if is_sqlite else postgresql.insert

    async def quota_and_usage(
        self, c: AsyncConnection, project_id: str, day: int
    ) -> tuple[bool, int, int]:
        """(project exists, its inference_tokens_per_day quota or 0, tokens used on `day`)."""
        settings = await c.scalar(
            sa.select(tables.projects.c.settings).where(tables.projects.c.project_id == project_id)
        )
        used = (
            await c.execute(
                sa.select(D.c.input_tokens + D.c.output_tokens).where(
                    D.c.project_id == project_id, D.c.day == day
                )
            )
        ).scalar()
        quotas = (settings or {}).get("quotas", {})
        # Stored as the JSON form of ProjectSettings, where int64 values are strings.
        limit = int(quotas.get("inferenceTokensPerDay", 0) or 0)
        return settings is not None, limit, int(used or 0)

    async def add(self, c: AsyncConnection, rows: list[dict[str, Any]]) -> None:
        """Insert usage rows and add them to the daily totals, in the caller's transaction."""
        await c.execute(U.insert(), rows)
        totals: dict[tuple[str, int], list[int]] = {}
        for row in rows:
            day = row["create_time_us"] // 86_400_000_000
            total = totals.setdefault((row["project_id"], day), [0, 0, 0])
            total[0] += row["input_tokens"]
            total[1] += row["output_tokens"]
            total[2] += 1
        for (project_id, day), (input_tokens, output_tokens, requests) in sorted(totals.items()):
            statement = self.insert(D).values(
                project_id=project_id,
                day=day,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                requests=requests,
            )
            await c.execute(
                statement.on_conflict_do_update(
                    index_elements=[D.c.project_id, D.c.day],
                    set_={
                        "input_tokens": D.c.input_tokens + statement.excluded.input_tokens,
                        "output_tokens": D.c.output_tokens + statement.excluded.output_tokens,
                        "requests": D.c.requests + statement.excluded.requests,
                    },
                )
            )

    async def remove_before(self, c: AsyncConnection, cutoff_us: int) -> dict[str, int]:
        removed = await c.execute(sa.delete(U).where(U.c.create_time_us < cutoff_us))
        days = await c.execute(sa.delete(D).where(D.c.day < cutoff_us // 86_400_000_000))
        return {"inference_usage": removed.rowcount, "inference_usage_daily": days.rowcount}
