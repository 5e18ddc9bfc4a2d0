"""OTLP trace ingestion into a real `agentplane serve`, on SQLite and PostgreSQL, in 512-span
Export batches, beside an echo gRPC server receiving the same bytes in the same run. Prints one
JSON document.

    .venv/bin/python bench/bench_otlp.py            # full run, about 90 s
    .venv/bin/python bench/bench_otlp.py --quick    # smoke run, about 25 s

Raw Export calls: `--concurrency` asyncio tasks on one grpc.aio channel send pre-encoded
ExportTraceServiceRequests back to back (each with fresh trace ids, so every span is new and
stored); spans/s counts only spans the server acknowledged, and the stored rows are counted
afterwards. The spans look like GenAI agent spans: 8 per trace (a root and 7 children), ten
attributes each (session, models, tokens, cost, a prompt preview), an event on every root.
A second figure runs the real opentelemetry-sdk (BatchSpanProcessor, 512-span batches, the
OTLP gRPC exporter) in a child process creating spans as fast as it can: the rate one agent
process reaches, bounded by the SDK's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

import grpc
import psycopg
from _common import (
    ECHO_METHOD,
    CpuMeter,
    EchoServer,
    Postgres,
    ServerProcess,
    host_info,
    latency,
    throughput,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
BATCH = 512
SPANS_PER_TRACE = 8
MARKER = b"\xa7\x1b\x3c\x99\x5e\x02\xd4\x6f"  # the first 8 bytes of every trace id


def _kv(key: str, value: object) -> common_pb2.KeyValue:
    if isinstance(value, str):
        any_value = common_pb2.AnyValue(string_value=value)
    else:
        any_value = common_pb2.AnyValue(int_value=int(value))  # type: ignore[call-overload]
    return common_pb2.KeyValue(key=key, value=any_value)


def request_template() -> bytes:
    """One 512-span request; each trace id starts with MARKER, which every call replaces with
    fresh bytes so that no span repeats."""
    now = time.time_ns()
    spans = []
    for i in range(BATCH):
        trace = i // SPANS_PER_TRACE
        first = trace * SPANS_PER_TRACE + 1
        root = i % SPANS_PER_TRACE == 0
        span = trace_pb2.Span(
            trace_id=MARKER + trace.to_bytes(8, "big"),
            span_id=(i + 1).to_bytes(8, "big"),
            parent_span_id=b"" if root else first.to_bytes(8, "big"),
            name="agent.run" if root else "llm.chat",
            kind=trace_pb2.Span.SPAN_KIND_SERVER if root else trace_pb2.Span.SPAN_KIND_CLIENT,
            start_time_unix_nano=now + i * 1000,
            end_time_unix_nano=now + i * 1000 + 250_000_000,
            attributes=[
                _kv("session.id", f"session-{trace % 97}"),
                _kv("gen_ai.system", "openai"),
                _kv("gen_ai.operation.name", "chat"),
                _kv("gen_ai.request.model", "gpt-4o"),
                _kv("gen_ai.response.model", "gpt-4o-2024-08-06"),
                _kv("gen_ai.usage.input_tokens", 812 + i),
                _kv("gen_ai.usage.output_tokens", 96),
                _kv("agentplane.cost_micros", 2_150),
                _kv("agentplane.cost_currency", "USD"),
                _kv("gen_ai.prompt.preview", "Summarise the customer's last three orders " * 2),
            ],
            status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_OK),
        )
        if root:
            span.events.add(name="handoff", time_unix_nano=now + i * 1000 + 1000)
        spans.append(span)
    request = otlp.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=resource_pb2.Resource(
                    attributes=[_kv("service.name", "bench-agent"), _kv("host.name", "bench")]
                ),
                scope_spans=[trace_pb2.ScopeSpans(spans=spans)],
            )
        ]
    )
    payload = request.SerializeToString()
    assert payload.count(MARKER) == BATCH // SPANS_PER_TRACE * SPANS_PER_TRACE
    return payload


def fresh(template: bytes) -> bytes:
    return template.replace(MARKER, os.urandom(8))


async def bench_echo(args: argparse.Namespace, template: bytes) -> dict:
    echo = EchoServer()
    try:
        async with grpc.aio.insecure_channel(
            echo.address, options=[("grpc.max_receive_message_length", 64 << 20)]
        ) as channel:
            call_echo = channel.unary_unary(ECHO_METHOD)

            async def call(i: int) -> object:
                return await call_echo(fresh(template))

            cpu = CpuMeter(echo.process.pid)
            result = await throughput(call, args.concurrency, args.seconds, cpu, args.ramp)
            result["spans_per_s_equivalent"] = round(result["calls_per_s"] * BATCH)
            return {"request_bytes": len(template), "throughput": result}
    finally:
        echo.stop()


def stored_spans(server: ServerProcess) -> int:
    if server.database_url:
        url = server.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(url) as connection:
            return connection.execute("SELECT count(*) FROM spans").fetchone()[0]  # type: ignore[index]
    import sqlite3

    with sqlite3.connect(server.data_dir / "agentplane.db", timeout=30) as connection:
        return connection.execute("SELECT count(*) FROM spans").fetchone()[0]


async def bench_raw(args: argparse.Namespace, server: ServerProcess, template: bytes) -> dict:
    md = server.metadata()
    acknowledged = [0]
    async with grpc.aio.insecure_channel(server.address) as channel:
        export = channel.unary_unary(
            EXPORT, response_deserializer=otlp.ExportTraceServiceResponse.FromString
        )

        async def call(i: int) -> object:
            reply = await export(fresh(template), metadata=md)
            assert not reply.partial_success.rejected_spans, reply.partial_success
            acknowledged[0] += BATCH
            return reply

        cpu = CpuMeter(server.process.pid)
        one_in_flight = await latency(call, args.calls, args.warmup, cpu)
        result = await throughput(call, args.concurrency, args.seconds, cpu, args.ramp)
    result["spans_per_s"] = round(result["calls_per_s"] * BATCH)
    for key in ("server_cpu_us_per_call", "host_cpu_us_per_call"):
        result[key.replace("call", "span")] = round(result.pop(key) / BATCH, 2)
    stored = stored_spans(server)
    return {
        "export_latency_one_in_flight": one_in_flight,
        "sustained": result,
        "spans_acknowledged": acknowledged[0],
        "spans_stored": stored,
        "all_acknowledged_spans_stored": stored == acknowledged[0],
    }


SDK_AGENT = r"""
import json, os, sys, time
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult

class Counting(OTLPSpanExporter):
    exported = 0
    failed = 0
    def export(self, spans):
        result = super().export(spans)
        if result is SpanExportResult.SUCCESS:
            Counting.exported += len(spans)
        else:
            Counting.failed += len(spans)
        return result

seconds = float(sys.argv[1])
provider = TracerProvider(resource=Resource.create({"service.name": "bench-sdk-agent"}))
provider.add_span_processor(BatchSpanProcessor(
    Counting(), max_queue_size=65536, max_export_batch_size=512, schedule_delay_millis=50))
tracer = provider.get_tracer("bench")
attributes = {"session.id": "s-1", "gen_ai.request.model": "gpt-4o",
              "gen_ai.usage.input_tokens": 812, "gen_ai.usage.output_tokens": 96,
              "agentplane.cost_micros": 2150}
began = time.perf_counter()
created = 0
while time.perf_counter() - began < seconds:
    with tracer.start_as_current_span("agent.run", attributes=attributes):
        for _ in range(7):
            with tracer.start_as_current_span("llm.chat", attributes=attributes):
                pass
    created += 8
provider.shutdown()
elapsed = time.perf_counter() - began
# The SDK drops spans that do not fit its queue (creation outpacing export): counted here.
print(json.dumps({"spans_created": created, "spans_exported": Counting.exported,
                  "spans_failed": Counting.failed,
                  "spans_dropped_by_sdk_queue": created - Counting.exported - Counting.failed,
                  "seconds": round(elapsed, 2),
                  "spans_per_s": round(Counting.exported / elapsed)}))
"""


def bench_sdk(args: argparse.Namespace, server: ServerProcess) -> dict:
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{server.address}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer%20{server.admin_key}",
    }
    done = subprocess.run(
        [sys.executable, "-c", SDK_AGENT, str(args.sdk_seconds)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, about 25 s")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    quick, full = (10, 3, 3.0, 0.5, 3.0), (40, 5, 15.0, 1.0, 8.0)
    args.calls, args.warmup, args.seconds, args.ramp, args.sdk_seconds = (
        quick if args.quick else full
    )
    began = time.monotonic()
    template = request_template()
    report: dict = {
        "bench": "otlp",
        "mode": "quick" if args.quick else "full",
        "host": host_info(),
        "method": {
            "batch": f"{BATCH} spans per Export ({SPANS_PER_TRACE} per trace, 10 attributes "
            f"each), {len(template)} bytes encoded",
            "sustained": f"{args.concurrency} asyncio tasks on one grpc.aio channel, raw "
            f"Export calls back to back, {args.seconds} s after {args.ramp} s warm-up",
            "latency": f"{args.calls} Export calls after {args.warmup} warm-up, one in flight",
            "sdk": f"opentelemetry-sdk BatchSpanProcessor + OTLP gRPC exporter in a child "
            f"process, creating spans for {args.sdk_seconds} s",
            "server": "agentplane serve, defaults (1 worker, access log on), child process",
            "echo": "grpc.aio generic unary handler returning the request bytes, child process",
        },
    }
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    postgres = Postgres.find() if "postgres" in backends else None
    try:
        report["echo"] = await bench_echo(args, template)
        for backend in backends:
            url = postgres.create_database() if backend == "postgres" and postgres else None
            server = ServerProcess(url)
            try:
                figures = await bench_raw(args, server, template)
                figures["database"] = "postgresql" if url else "sqlite"
                figures["otel_sdk_exporter"] = bench_sdk(args, server)
                report[backend] = figures
            finally:
                server.stop()
    finally:
        if postgres:
            postgres.close()
    echo_rate = report["echo"]["throughput"]["spans_per_s_equivalent"]
    report["summary"] = {
        backend: {
            "spans_per_s": report[backend]["sustained"]["spans_per_s"],
            "echo_spans_per_s_equivalent": echo_rate,
            "over_echo": round(report[backend]["sustained"]["spans_per_s"] / echo_rate, 3),
            "export_p50_ms_one_in_flight": round(
                report[backend]["export_latency_one_in_flight"]["p50_us"] / 1000, 2
            ),
            "sdk_exporter_spans_per_s": report[backend]["otel_sdk_exporter"].get("spans_per_s"),
        }
        for backend in backends
    }
    if "postgres" in backends:
        report["summary"]["postgres_target_10k_spans_per_s_met"] = (
            report["postgres"]["sustained"]["spans_per_s"] >= 10_000
        )
    report["wall_s"] = round(time.monotonic() - began, 1)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    asyncio.run(main())
