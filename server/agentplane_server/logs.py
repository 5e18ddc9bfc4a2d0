"""Structured JSON logs; every record carries the request id and method of the call it is for."""

from __future__ import annotations

import logging
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


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s "
            "%(request_id)s %(method)s %(project_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    handler.addFilter(_CallContext())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))
