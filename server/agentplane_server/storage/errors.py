"""Which storage exceptions mean "the database is unavailable right now" (one place).

The call pipeline answers these with UNAVAILABLE (never INTERNAL), housekeeping logs one warning
per outage, start-up retries, and the health probe reports NOT_SERVING.
"""

from __future__ import annotations

import sqlite3

import psycopg
import sqlalchemy.exc

from agentplane.common.v1.error_reason_pb2 import ErrorReason
from agentplane_server.errors import Unavailable

# SQLite errors that pass (contention, the disk), as opposed to errors in the statement.
_SQLITE_TRANSIENT = (
    "database is locked",
    "database table is locked",
    "database is busy",
    "disk i/o error",
    "database or disk is full",
    "unable to open database file",
)
# Busy elsewhere (a lock held, the pool in use): worth a retry after about this long.
CONTENTION_RETRY_AFTER = 1.0


class StorageTimeout(Exception):
    """A database operation outlived its deadline: the server stopped answering."""


def storage_unavailable(exc: BaseException) -> Unavailable | None:
    """The UNAVAILABLE answer for an exception that means the database is unavailable, else
    None (the exception is a bug or a bad statement)."""
    if isinstance(exc, StorageTimeout):
        return _unavailable("the database did not answer in time", "timeout")
    if isinstance(exc, sqlalchemy.exc.TimeoutError):  # every pooled connection is busy
        return _unavailable("the database is overloaded", "pool_exhausted", CONTENTION_RETRY_AFTER)
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        if _sqlite_contention(exc.orig):
            return _unavailable("the database is locked", "locked", CONTENTION_RETRY_AFTER)
        if isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
            return _unavailable("the database is unavailable", "unreachable")
        if exc.connection_invalidated:
            return _unavailable("the database connection was lost", "unreachable")
        return None
    if isinstance(exc, sqlite3.OperationalError):  # raised raw by BEGIN IMMEDIATE (db.py)
        if _sqlite_contention(exc):
            return _unavailable("the database is locked", "locked", CONTENTION_RETRY_AFTER)
        if str(exc).lower().startswith(_SQLITE_TRANSIENT):
            return _unavailable("the database is unavailable", "unreachable")
        return None
    if isinstance(exc, psycopg.OperationalError | sqlalchemy.exc.DisconnectionError | OSError):
        return _unavailable("the database is unavailable", "unreachable")
    return None


def describe(exc: BaseException) -> str:
    """One line naming a storage error (driver messages run over several lines)."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}".rstrip(": ")


def _sqlite_contention(exc: BaseException | None) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and str(exc).lower().startswith(
        ("database is locked", "database table is locked", "database is busy")
    )


def _unavailable(what: str, cause: str, retry_after: float | None = None) -> Unavailable:
    return Unavailable(
        f"{what}; retry with backoff",
        reason=ErrorReason.ERROR_REASON_STORAGE_UNAVAILABLE,
        metadata={"cause": cause},
        retry_after=retry_after,
    )
