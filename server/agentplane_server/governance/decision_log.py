"""The decision log: each decision is journaled before it is answered, then written behind.

What an answered CheckPermission or ValidateOutput guarantees about its decision record:

- Process crash (kill -9, out of memory, a bug): nothing is lost. Before the RPC answers, the
  record is appended to this process's journal file with one write(2), so it is in the kernel
  when the answer leaves. The next server started on the same data directory replays the
  journal into the database.
- Machine crash (power, kernel): at most the decisions answered within the last
  `sync_interval` seconds (setting `decision_journal_sync_interval`, default 0.05 s) plus the
  time one fdatasync takes. A background thread fdatasyncs the journal that often when it has
  grown (group commit), so a check never waits for the disk.
- Journal not writable (disk full, I/O error): the check answers UNAVAILABLE; nothing is
  answered that is not journaled.

The records also wait in a bounded in-memory queue; a background task inserts them into the
database in batches (every `flush_interval`, or sooner when a batch fills). While the database
is away the batch is kept and retried with backoff; when the queue is full checks are refused
with RESOURCE_EXHAUSTED and RetryInfo before anything is decided (backpressure). Inserts skip
decision ids already stored, so a batch retried after a lost commit acknowledgement, or a
journal replayed after its records reached the database, is stored once. Once everything
journaled is in the database (made durable there first) and the journal has grown past
ROTATE_BYTES, it is truncated; at a clean shutdown it is removed.

Journals live in `<data_dir>/decision-journal/`, one file per process (mode 0600), each locked
(flock) by its process while it runs. At start a process replays, then removes, every journal
whose lock is free: those of processes that died (a `--workers` child, the previous run). At
shutdown the queue is written for up to `decision_log_shutdown_deadline` seconds; what the
database did not take by then stays in the journal for the next start.

Replicas each own their journal, on their own volume. A replica whose volume is lost (an
emptyDir, a deleted disk) loses the decisions it had not yet written to the database: normally
the last flush interval's worth, but everything decided while the database was unreachable.
Give replicas a persistent data directory (a StatefulSet volume claim) to keep the guarantee
across rescheduling.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge

from agentplane.common.v1.error_reason_pb2 import ErrorReason
from agentplane.governance.v1 import decision_pb2
from agentplane_server.errors import ResourceExhausted, Unavailable
from agentplane_server.governance import store
from agentplane_server.storage.db import Database

log = logging.getLogger(__name__)

BACKLOG = Gauge(
    "agentplane_governance_decision_log_backlog",
    "Decisions made but not yet written to the decision log.",
    multiprocess_mode="livesum",
)
WRITTEN = Counter(
    "agentplane_governance_decision_log_written", "Decision log records written to the database."
)
REFUSED = Counter(
    "agentplane_governance_decision_log_refused",
    "Checks refused with RESOURCE_EXHAUSTED because the decision log queue was full.",
)
REPLAYED = Counter(
    "agentplane_governance_decision_log_replayed",
    "Decision records replayed from the journal of a process that had stopped.",
)
JOURNAL_DIR = "decision-journal"
JOURNAL_SUFFIX = ".journal"
# Truncate a fully drained journal once it is this large (smaller ones are kept growing: each
# truncation first makes the database's copy durable).
ROTATE_BYTES = 4 * 1024 * 1024

# A journal is a sequence of frames: <length u32><crc32 u32><payload>, payload =
# <record length u32><DecisionRecord bytes><charges JSON, possibly empty>. Hand-rolled because
# it is this small: the CRC and length let replay stop at a frame torn by a machine crash.
_FRAME = struct.Struct("<II")
_RECORD_LENGTH = struct.Struct("<I")


class DecisionJournal:
    """This process's append-only journal file, fdatasynced by a thread (group commit)."""

    def __init__(self, directory: Path, sync_interval: float) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory = directory
        name = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}{JOURNAL_SUFFIX}"
        self.path = directory / name
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        self._fd = os.open(self.path, flags, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # "alive": others leave it alone
        _fsync_directory(directory)  # the file itself survives a machine crash
        self.size = 0
        self.sync_interval = sync_interval
        self._appended = 0  # frames appended so far (the group-commit thread compares)
        self._stopping = threading.Event()
        self._syncer = threading.Thread(
            target=self._sync_loop, name="decision-journal-sync", daemon=True
        )
        self._syncer.start()

    def append(self, payload: bytes) -> None:
        """One write(2) of one frame; on failure the journal is left as it was."""
        frame = _FRAME.pack(len(payload), zlib.crc32(payload)) + payload
        try:
            written = os.write(self._fd, frame)
            if written != len(frame):  # regular files write short only when the disk is full
                raise OSError(errno.ENOSPC, "short write to the decision journal")
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self.size)  # no torn frame in front of later ones
            raise
        self.size += len(frame)
        self._appended += 1

    def truncate(self) -> None:
        """Empty the journal (everything in it is durable in the database)."""
        os.ftruncate(self._fd, 0)
        self.size = 0

    def _sync_loop(self) -> None:
        synced = 0
        while not self._stopping.wait(self.sync_interval):
            target = self._appended
            if target != synced:
                try:
                    os.fdatasync(self._fd)
                except OSError as exc:
                    log.error("decision journal fdatasync failed", extra={"error": str(exc)})
                    continue
                synced = target

    def close(self, *, remove: bool) -> None:
        self._stopping.set()
        self._syncer.join()
        with contextlib.suppress(OSError):
            os.fdatasync(self._fd)
        if remove:
            with contextlib.suppress(OSError):
                self.path.unlink()
        os.close(self._fd)  # releases the lock


def encode(record_bytes: bytes, charges: Any) -> bytes:
    tail = json.dumps(charges).encode() if charges else b""
    return _RECORD_LENGTH.pack(len(record_bytes)) + record_bytes + tail


def read_journal(data: bytes) -> Iterator[tuple[decision_pb2.DecisionRecord, Any, bytes]]:
    """The (record, charges, record bytes) of a journal, up to the first torn or corrupt
    frame."""
    offset = 0
    while offset + _FRAME.size <= len(data):
        length, crc = _FRAME.unpack_from(data, offset)
        payload = data[offset + _FRAME.size : offset + _FRAME.size + length]
        if len(payload) != length or zlib.crc32(payload) != crc:
            log.warning(
                "decision journal ends with a torn frame (a machine crash); ignored",
                extra={"offset": offset, "bytes": len(data) - offset},
            )
            return
        (record_length,) = _RECORD_LENGTH.unpack_from(payload)
        record_bytes = payload[_RECORD_LENGTH.size : _RECORD_LENGTH.size + record_length]
        tail = payload[_RECORD_LENGTH.size + record_length :]
        record = decision_pb2.DecisionRecord.FromString(record_bytes)
        yield record, json.loads(tail) if tail else None, record_bytes
        offset += _FRAME.size + length


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _claim_stopped_journals(directory: Path, own: Path) -> Iterator[tuple[Path, int]]:
    """(path, locked fd) of each journal whose process has stopped (its flock is free)."""
    for path in sorted(directory.glob(f"*{JOURNAL_SUFFIX}")):
        if path == own:
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # replayed by another process just now
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # its process is alive
            continue
        yield path, fd


# (record, budget charges, serialized record): rows are built by the writer, off the
# request path, from the bytes already serialized for the journal.
_Entry = tuple[decision_pb2.DecisionRecord, Any, bytes]


class DecisionLog:
    def __init__(
        self,
        db: Database,
        *,
        capacity: int,
        batch_size: int,
        flush_interval: float,
        journal_dir: Path,
        sync_interval: float = 0.05,
    ) -> None:
        self.db = db
        self.capacity = capacity
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.journal = DecisionJournal(journal_dir, sync_interval)
        self._queue: deque[_Entry] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._failures = 0
        self._closing = False
        self._journal_failing = False

    @property
    def backlog(self) -> int:
        return len(self._queue)

    def reserve(self) -> None:
        """Refuse a new decision while the queue is full (called before deciding)."""
        if len(self._queue) >= self.capacity:
            REFUSED.inc()
            raise ResourceExhausted(
                "the decision log is falling behind; retry shortly",
                reason=ErrorReason.ERROR_REASON_RATE_LIMITED,
                metadata={"backlog": str(len(self._queue))},
                retry_after=max(0.1, self.flush_interval * 4),
            )

    def append(self, record: decision_pb2.DecisionRecord, charges: Any = None) -> None:
        """Journal the decision (before it is answered) and queue it for the database."""
        data = record.SerializeToString()
        try:
            self.journal.append(encode(data, charges))
        except OSError as exc:
            if not self._journal_failing:
                log.error(
                    "the decision journal cannot be written; checks answer UNAVAILABLE",
                    extra={"path": str(self.journal.path), "error": str(exc)},
                )
            self._journal_failing = True
            raise Unavailable(
                "the decision log cannot record decisions on this server; retry",
                reason=ErrorReason.ERROR_REASON_STORAGE_UNAVAILABLE,
            ) from exc
        self._journal_failing = False
        self._queue.append((record, charges, data))
        BACKLOG.inc()
        if len(self._queue) >= self.batch_size:
            self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        await self._replay_stopped_journals()
        while not self._closing:
            if not self._queue:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            elif len(self._queue) < self.batch_size:
                # Let a batch gather for one interval, unless it fills first.
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            if self._closing:
                return
            if not await self.flush_once():
                await asyncio.sleep(self._backoff())
            elif not self._queue and self.journal.size >= ROTATE_BYTES:
                await self._truncate_journal()

    def _backoff(self) -> float:
        return min(2.0, 0.1 * 2 ** min(self._failures, 5))

    async def flush_once(self) -> bool:
        """Write one batch from the head of the queue; False when the database refused."""
        if not self._queue:
            return True
        count = min(self.batch_size, len(self._queue))
        if not await self._insert([self._queue[i] for i in range(count)]):
            return False
        for _ in range(count):
            self._queue.popleft()
        BACKLOG.dec(count)
        WRITTEN.inc(count)
        return True

    async def _insert(self, entries: list[_Entry]) -> bool:
        rows, policy_rows = _rows(entries)
        try:
            async with self.db.write() as c:
                await store.insert_decisions(c, rows, policy_rows)
        except Exception as exc:
            self._failures += 1
            log.warning(
                "decision log write failed; retrying",
                extra={"error": type(exc).__name__, "backlog": len(self._queue)},
            )
            return False
        self._failures = 0
        return True

    async def _truncate_journal(self) -> bool:
        """Truncate the journal if everything in it is durable in the database."""
        try:
            await self.db.make_durable()
        except Exception as exc:
            log.warning("decision journal kept: %s", type(exc).__name__)
            return False
        if self._queue:  # decided while the database synced: not in it yet
            return False
        self.journal.truncate()
        return True

    async def close(self, deadline_seconds: float) -> None:
        """Stop the background task, write what is queued (until the deadline), and remove the
        journal once all of it is in the database; otherwise leave it for the next start."""
        deadline = time.monotonic() + deadline_seconds
        if self._task is not None:
            # Never cancel a write in flight: a transaction abandoned mid-statement can keep
            # SQLite's write lock. The loop ends after its current batch.
            self._closing = True
            self._wake.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._task), deadline_seconds)
            if not self._task.done():
                self._task.cancel()
            self._task = None
        while self._queue and time.monotonic() < deadline:
            if not await self.flush_once():
                await asyncio.sleep(min(self._backoff(), max(0.0, deadline - time.monotonic())))
        drained = not self._queue and await self._truncate_journal()
        if not drained:
            log.error(
                "the database did not take every decision before shutdown; they stay in the "
                "decision journal and are written at the next start on this data directory",
                extra={"records": len(self._queue), "path": str(self.journal.path)},
            )
        BACKLOG.dec(len(self._queue))
        self.journal.close(remove=drained)

    # -- replay -----------------------------------------------------------------------------------

    async def _replay_stopped_journals(self) -> None:
        for path, fd in _claim_stopped_journals(self.journal.directory, self.journal.path):
            try:
                entries = list(read_journal(path.read_bytes()))
                for start in range(0, len(entries), self.batch_size):
                    while not await self._insert(entries[start : start + self.batch_size]):
                        if self._closing:
                            return  # the journal stays for the next start
                        await asyncio.sleep(self._backoff())
                path.unlink(missing_ok=True)
                REPLAYED.inc(len(entries))
                log.info(
                    "replayed the decision journal of a stopped process",
                    extra={"records": len(entries), "path": str(path)},
                )
            finally:
                os.close(fd)


def _rows(entries: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows, policy_rows = [], []
    for record, charges, data in entries:
        created = record.create_time.ToMicroseconds()
        rows.append(
            {
                "decision_id": record.decision_id,
                "project_id": record.project_id,
                "kind": record.kind,
                "agent_id": record.agent_id,
                "action": record.action,
                "decision": record.decision,
                "verdict": record.verdict,
                "record": data,
                "charges": charges,
                "create_time_us": created,
            }
        )
        for policy_id in dict.fromkeys(record.policy_ids):
            if policy_id:
                policy_rows.append(
                    {
                        "project_id": record.project_id,
                        "policy_id": policy_id,
                        "decision_id": record.decision_id,
                        "create_time_us": created,
                    }
                )
    return rows, policy_rows
