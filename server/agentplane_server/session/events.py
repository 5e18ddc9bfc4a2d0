"""Wake-ups for WatchSession streams in this process when a session changes.

Watchers also poll the database (Settings.watch_poll_interval), so appends made through other
worker processes or replicas reach them too; the wake-up only makes local appends immediate.
"""

from __future__ import annotations

import asyncio


class SessionEvents:
    def __init__(self) -> None:
        self._waiters: dict[tuple[str, str], asyncio.Event] = {}

    def waiter(self, project_id: str, session_id: str) -> asyncio.Event:
        """An event set by the next notify() for this session. Take it *before* reading the
        database, so an append committed between the read and the wait is not missed."""
        key = (project_id, session_id)
        event = self._waiters.get(key)
        if event is None or event.is_set():
            event = self._waiters[key] = asyncio.Event()
        return event

    def notify(self, project_id: str, session_id: str) -> None:
        event = self._waiters.pop((project_id, session_id), None)
        if event is not None:
            event.set()
