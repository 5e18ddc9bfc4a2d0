"""Builds TraceService and the standard OTLP TraceService/Export beside it (sharing its logic
and span budget); registers trace retention."""

from __future__ import annotations

from typing import Any

from agentplane.trace.v1 import trace_service_pb2
from agentplane_server.runtime import Runtime
from agentplane_server.trace.logic import SpanBudget, TraceLogic
from agentplane_server.trace.retention import expire_traces
from agentplane_server.trace.servicer import OTLP_TRACE_SERVICE, TraceServicer, otlp_handler

SERVICE = trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name


def build(runtime: Runtime) -> dict[str, Any]:
    settings = runtime.settings
    logic = TraceLogic(
        runtime.db,
        runtime.page_tokens,
        SpanBudget(settings.otlp_max_inflight_spans),
        settings.otlp_retry_after,
    )
    runtime.add_retention("traces", expire_traces)
    runtime.extra_services[OTLP_TRACE_SERVICE] = otlp_handler(logic)
    return {SERVICE: TraceServicer(logic)}
