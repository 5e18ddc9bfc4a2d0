"""TraceService behaviour (ListTraces, GetTrace) and OTLP ingestion (Export) with backpressure."""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.trace.v1 import trace_pb2 as otlp_trace
from prometheus_client import Counter

from agentplane.common.v1 import usage_pb2
from agentplane.common.v1.error_reason_pb2 import ErrorReason
from agentplane.trace.v1 import trace_pb2
from agentplane.trace.v1 import trace_service_pb2 as pb
from agentplane_server.context import Principal
from agentplane_server.errors import NotFound, ResourceExhausted
from agentplane_server.feedback.store import FeedbackFilter, FeedbackStore
from agentplane_server.pagination import PageTokens
from agentplane_server.storage.db import Database, now_us
from agentplane_server.trace.attributes import to_struct
from agentplane_server.trace.ingest import convert, count_spans, summarize
from agentplane_server.trace.store import TraceFilter, TraceStore

log = logging.getLogger(__name__)

TRACES_PAGE = (50, 500)  # default, maximum
MAX_SPANS_RETURNED = 10_000
MAX_FEEDBACK_RETURNED = 100

SPANS = Counter(
    "agentplane_otlp_spans",
    "OTLP spans received, by outcome: stored, duplicate (resent, already stored), rejected "
    "(invalid, reported as partial success), refused (backpressure, to be retried).",
    ["outcome"],
)


class SpanBudget:
    """A bound on the spans this process holds between receiving an Export and committing it.

    Ingestion memory stays bounded under any load: a request that does not fit is refused at
    once (RESOURCE_EXHAUSTED with RetryInfo, which OTLP exporters honour) instead of queueing.
    A request larger than the whole budget is still let in when nothing else is in flight, so
    it can always succeed eventually.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_flight = 0

    def try_acquire(self, spans: int) -> bool:
        if self.in_flight and self.in_flight + spans > self.capacity:
            return False
        self.in_flight += spans
        return True

    def release(self, spans: int) -> None:
        self.in_flight -= spans


def trace_not_found(trace_id: str) -> NotFound:
    return NotFound(
        f"trace {trace_id!r} not found",
        metadata={"resource_type": "trace", "resource_id": trace_id},
    )


def trace_from_row(row: Any, agent_ids: list[str], models: list[str]) -> trace_pb2.Trace:
    trace = trace_pb2.Trace(
        trace_id=row.trace_id,
        project_id=row.project_id,
        agent_ids=agent_ids,
        root_span_name=row.root_span_name,
        session_id=row.session_id,
        span_count=row.span_count,
        status=trace_pb2.TRACE_STATUS_ERROR if row.error_count else trace_pb2.TRACE_STATUS_OK,
        usage=usage_pb2.Usage(
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            cost_micros=row.cost_micros,
            cost_currency=row.cost_currency,
        ),
        models=models,
    )
    trace.start_time.FromMicroseconds(row.start_time_us)
    trace.end_time.FromMicroseconds(row.end_time_us)
    trace.duration.FromMicroseconds(row.end_time_us - row.start_time_us)
    trace.create_time.FromMicroseconds(row.create_time_us)
    trace.update_time.FromMicroseconds(row.update_time_us)
    return trace


def span_from_row(row: Any) -> trace_pb2.Span:
    received = otlp_trace.Span.FromString(row.payload)
    span = trace_pb2.Span(
        trace_id=row.trace_id,
        span_id=row.span_id,
        parent_span_id=row.parent_span_id,
        name=row.name,
        kind=row.kind,
        status_code=row.status_code,
        status_message=row.status_message,
        agent_id=row.agent_id,
        session_id=row.session_id,
        service_name=row.service_name,
        attributes=to_struct(received.attributes),
        model=row.model,
        usage=usage_pb2.Usage(
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            cost_micros=row.cost_micros,
            cost_currency=row.cost_currency,
        ),
    )
    span.start_time.FromMicroseconds(row.start_time_us)
    span.end_time.FromMicroseconds(row.end_time_us)
    for event in sorted(received.events, key=lambda e: e.time_unix_nano):
        converted = span.events.add(name=event.name, attributes=to_struct(event.attributes))
        converted.event_time.FromNanoseconds(event.time_unix_nano)
    for link in received.links:
        span.links.add(
            trace_id=link.trace_id.hex(),
            span_id=link.span_id.hex(),
            attributes=to_struct(link.attributes),
        )
    return span


class TraceLogic:
    def __init__(
        self,
        db: Database,
        page_tokens: PageTokens,
        budget: SpanBudget,
        retry_after: float,
    ) -> None:
        self.db = db
        self.store = TraceStore()
        self.feedback = FeedbackStore()
        self.page_tokens = page_tokens
        self.budget = budget
        self.retry_after = retry_after

    # -- ingestion ----------------------------------------------------------------------------

    async def export(
        self, who: Principal, request: otlp.ExportTraceServiceRequest
    ) -> otlp.ExportTraceServiceResponse:
        """Store every valid span of the request before answering (so the traces are
        searchable when Export returns); invalid spans are counted in partial_success."""
        total = count_spans(request)
        if not self.budget.try_acquire(total):
            SPANS.labels("refused").inc(total)
            raise ResourceExhausted(
                f"trace ingestion is full ({self.budget.in_flight} spans in flight); "
                "retry after the delay in RetryInfo",
                reason=ErrorReason.ERROR_REASON_INGESTION_BACKPRESSURE,
                metadata={"spans_in_flight": str(self.budget.in_flight)},
                retry_after=self.retry_after,
            )
        try:
            batch = convert(request, who)
            stored = 0
            if batch.rows:
                now = now_us()
                async with self.db.write() as c:
                    new_rows = await self.store.insert_spans(c, who.project_id, batch.rows, now)
                    if new_rows:
                        summaries, agents, models = summarize(new_rows)
                        await self.store.upsert_summaries(
                            c, who.project_id, summaries, agents, models, now
                        )
                stored = len(new_rows)
        finally:
            self.budget.release(total)
        SPANS.labels("stored").inc(stored)
        if len(batch.rows) > stored:
            SPANS.labels("duplicate").inc(len(batch.rows) - stored)
        response = otlp.ExportTraceServiceResponse()
        if batch.rejected:
            SPANS.labels("rejected").inc(batch.rejected)
            response.partial_success.rejected_spans = batch.rejected
            response.partial_success.error_message = batch.error_message()
        return response

    # -- reads --------------------------------------------------------------------------------

    async def list(self, who: Principal, request: pb.ListTracesRequest) -> pb.ListTracesResponse:
        where = TraceFilter(
            agent_ids=tuple(sorted(request.agent_ids)),
            session_id=request.session_id,
            start_after_us=(
                request.start_time.start_time.ToMicroseconds()
                if request.start_time.HasField("start_time")
                else None
            ),
            start_before_us=(
                request.start_time.end_time.ToMicroseconds()
                if request.start_time.HasField("end_time")
                else None
            ),
            error=(None if not request.status else request.status == trace_pb2.TRACE_STATUS_ERROR),
            root_span_name=request.root_span_name,
            min_duration_us=(
                request.min_duration.ToMicroseconds() if request.HasField("min_duration") else 0
            ),
        )
        filters = {
            "project": who.project_id,
            "agents": list(where.agent_ids),
            "session": where.session_id,
            "after": where.start_after_us,
            "before": where.start_before_us,
            "error": where.error,
            "root": where.root_span_name,
            "min_duration": where.min_duration_us,
        }
        page = self.page_tokens.page("ListTraces", request, filters, TRACES_PAGE)
        after = (int(page.position[0]), str(page.position[1])) if page.position else None
        async with self.db.read() as c:
            rows = await self.store.list_summaries(c, who.project_id, where, after, page.fetch)
            summaries, token = page.finish(rows, lambda r: [r.start_time_us, r.trace_id])
            agents, models = await self.store.agents_and_models(
                c, who.project_id, [r.trace_id for r in summaries]
            )
        return pb.ListTracesResponse(
            traces=[
                trace_from_row(r, agents.get(r.trace_id, []), models.get(r.trace_id, []))
                for r in summaries
            ],
            next_page_token=token,
        )

    async def get(self, who: Principal, trace_id: str) -> pb.GetTraceResponse:
        async with self.db.read() as c:
            row = await self.store.get_summary(c, who.project_id, trace_id)
            if row is None:
                raise trace_not_found(trace_id)
            agents, models = await self.store.agents_and_models(c, who.project_id, [trace_id])
            span_rows = await self.store.spans(c, who.project_id, trace_id, MAX_SPANS_RETURNED + 1)
            feedback = await self.feedback.list(
                c,
                who.project_id,
                FeedbackFilter(trace_id=trace_id),
                None,
                MAX_FEEDBACK_RETURNED,
            )
        return pb.GetTraceResponse(
            trace=trace_from_row(row, agents.get(trace_id, []), models.get(trace_id, [])),
            spans=[span_from_row(r) for r in span_rows[:MAX_SPANS_RETURNED]],
            spans_truncated=len(span_rows) > MAX_SPANS_RETURNED,
            feedback=feedback,
        )
