"""TraceService servicer, and the standard OTLP TraceService/Export on the same server."""

from __future__ import annotations

import grpc
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp

from agentplane.trace.v1 import trace_service_pb2_grpc as rpc
from agentplane_server.context import current_principal
from agentplane_server.errors import InvalidArgument
from agentplane_server.trace.logic import TraceLogic

OTLP_TRACE_SERVICE = otlp.DESCRIPTOR.services_by_name["TraceService"].full_name


class TraceServicer(rpc.TraceServiceServicer):
    def __init__(self, logic: TraceLogic) -> None:
        self.logic = logic

    async def ListTraces(self, request, context):  # type: ignore[no-untyped-def]
        return await self.logic.list(current_principal(), request)

    async def GetTrace(self, request, context):  # type: ignore[no-untyped-def]
        return await self.logic.get(current_principal(), request.trace_id)


class OtlpTraceServicer:
    """opentelemetry.proto.collector.trace.v1.TraceService/Export.

    Registered with a raw-bytes request deserializer, so the call pipeline authenticates it
    like any call (agents send their API key in the exporter's headers) but skips the generic
    request validation: that validation rejects a whole request for one bad value, while OTLP
    asks for partial success, span by span (ingest.convert does that validation).
    """

    def __init__(self, logic: TraceLogic) -> None:
        self.logic = logic

    async def Export(
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> otlp.ExportTraceServiceResponse:
        try:
            parsed = otlp.ExportTraceServiceRequest.FromString(request)
        except DecodeError as exc:
            raise InvalidArgument.field(
                "(request)", "is not a valid opentelemetry ExportTraceServiceRequest"
            ) from exc
        return await self.logic.export(current_principal(), parsed)


def otlp_handler(logic: TraceLogic) -> grpc.GenericRpcHandler:
    """OTLP Export, served beside TraceService with its logic (and span budget)."""
    servicer = OtlpTraceServicer(logic)
    handler = grpc.unary_unary_rpc_method_handler(
        servicer.Export,
        request_deserializer=None,  # raw bytes: see OtlpTraceServicer
        response_serializer=otlp.ExportTraceServiceResponse.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(OTLP_TRACE_SERVICE, {"Export": handler})
