"""Structured JSON logs; every record carries the request id and method of the call it is for."""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys

from pythonjsonlogger.json import JsonFormatter

from agentplane_server.context import method_var, principal_var, request_id_var


class _CallContext(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.method = method_var.get()
        principal = principal_var.get()
        record.project_id = principal.project_id if principal else ""
        return True


class _Handoff(logging.handlers.QueueHandler):
    """Hands records to the writer thread. The standard prepare() formats the message and
    copies every record so that it can cross a process boundary; this queue stays in the
    process, so a record with nothing to render (no args, exception or stack, as the access
    log's) is passed as it is, and the others as the standard handler prepares them."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if record.args or record.exc_info or record.stack_info:
            return super().prepare(record)
        return record


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr. Records are formatted and written by a background thread
    (QueueListener), so the event loop serving calls never waits on the terminal or a pipe;
    the call context is captured before the record leaves the calling task."""
    global _listener
    output = logging.StreamHandler(sys.stderr)
    output.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s "
            "%(request_id)s %(method)s %(project_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    handoff = _Handoff(queue.SimpleQueue())
    handoff.addFilter(_CallContext())
    if _listener is not None:
        _listener.stop()
    _listener = logging.handlers.QueueListener(handoff.queue, output)
    _listener.start()
    root = logging.getLogger()
    root.handlers[:] = [handoff]
    root.setLevel(level.upper())
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))


def flush_logs() -> None:
    """Write out every queued record (at exit)."""
    if _listener is not None:
        _listener.stop()


_listener: logging.handlers.QueueListener | None = None
atexit.register(flush_logs)
