"""Client request ids: a create-style call retried with the same request_id returns the result
of the first call instead of doing the work twice; reused with a different request it fails."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import sqlalchemy as sa
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncConnection

from agentplane_server.errors import request_id_conflict
from agentplane_server.storage import tables
from agentplane_server.storage.db import Database, now_us

K = tables.idempotency_keys
ResponseT = TypeVar("ResponseT", bound=Message)


async def run_idempotent(
    db: Database,
    project_id: str,
    method: str,
    request_id: str,
    request: Message,
    response_type: type[ResponseT],
    work: Callable[[AsyncConnection], Awaitable[ResponseT]],
) -> tuple[ResponseT, bool]:
    """Run `work` in a write transaction, once per (project, method, request_id).

    Returns the response and whether `work` ran now (False: a stored result was replayed).
    """
    if not request_id:
        async with db.write() as connection:
            return await work(connection), True
    request_hash = hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()
    key = (K.c.project_id == project_id, K.c.method == method, K.c.request_id == request_id)
    for attempt in (1, 2):
        try:
            async with db.write() as connection:
                prior = (
                    await connection.execute(sa.select(K.c.request_hash, K.c.response).where(*key))
                ).first()
                if prior is not None:
                    if prior.request_hash != request_hash:
                        raise request_id_conflict(request_id)
                    return response_type.FromString(bytes(prior.response)), False
                response = await work(connection)
                await connection.execute(
                    K.insert().values(
                        project_id=project_id,
                        method=method,
                        request_id=request_id,
                        request_hash=request_hash,
                        response=response.SerializeToString(),
                        create_time_us=now_us(),
                    )
                )
                return response, True
        except sa.exc.IntegrityError:
            # A concurrent call with the same request_id committed first; replay its result.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")
