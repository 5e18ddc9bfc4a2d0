"""Shared bench helpers: the tests' real-server helpers, an echo gRPC baseline, and measuring.

The echo baseline is a minimal grpc.aio server in its own process with one generic unary method
that returns the request bytes; a bench reports its figures beside it, measured in the same run.
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import grpc  # noqa: E402
from serverproc import Postgres, ServerProcess, free_port  # noqa: E402,F401

ECHO_METHOD = "/bench.Echo/Echo"


# --- echo server ---------------------------------------------------------------------------


async def _serve_echo(port: int) -> None:
    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo",
        {"Echo": grpc.unary_unary_rpc_method_handler(echo)},  # no (de)serializers: raw bytes
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


class EchoServer:
    """The echo server in a child process (`python bench/_common.py echo PORT`)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.process = subprocess.Popen([sys.executable, __file__, "echo", str(self.port)])
        with grpc.insecure_channel(self.address) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --- measuring -----------------------------------------------------------------------------

Call = Callable[[int], Awaitable[object]]  # call(i) makes the i-th call
_TICK = os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds used by one process (user+system, from /proc) and by the whole host."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid

    def process_seconds(self) -> float:
        if self.pid is None:
            return 0.0
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime

    @staticmethod
    def host_seconds() -> float:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return (sum(values[:8]) - idle) / _TICK

    def snapshot(self) -> tuple[float, float]:
        return self.process_seconds(), self.host_seconds()

    def per_call(self, before: tuple[float, float], calls: int) -> dict[str, float]:
        process, host = self.snapshot()
        calls = max(calls, 1)
        return {
            "server_cpu_us_per_call": round((process - before[0]) / calls * 1e6, 1),
            "host_cpu_us_per_call": round((host - before[1]) / calls * 1e6, 1),
        }


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def latency(call: Call, calls: int, warmup: int, cpu: CpuMeter) -> dict[str, float]:
    """One call in flight: p50/p99/mean in microseconds, and CPU per call."""
    for i in range(warmup):
        await call(i)
    before = cpu.snapshot()
    samples = []
    clock = time.perf_counter_ns
    for i in range(warmup, warmup + calls):
        start = clock()
        await call(i)
        samples.append((clock() - start) / 1000)
    samples.sort()
    return {
        "calls": calls,
        "p50_us": round(percentile(samples, 0.50), 1),
        "p99_us": round(percentile(samples, 0.99), 1),
        "mean_us": round(statistics.fmean(samples), 1),
        **cpu.per_call(before, calls),
    }


async def throughput(
    call: Call, concurrency: int, seconds: float, cpu: CpuMeter, warmup_seconds: float = 0.5
) -> dict[str, float]:
    """`concurrency` tasks calling back to back for `seconds`: calls/s, errors by code."""
    counter = [0]
    done = [0]
    errors: dict[str, int] = {}
    samples: list[float] = []
    measuring = [False]
    stop_at = [float("inf")]

    async def worker() -> None:
        clock = time.perf_counter
        while clock() < stop_at[0]:
            i = counter[0] = counter[0] + 1
            start = clock()
            try:
                await call(i)
            except grpc.aio.AioRpcError as error:
                if measuring[0]:
                    errors[error.code().name] = errors.get(error.code().name, 0) + 1
                continue
            if measuring[0] and clock() < stop_at[0]:
                done[0] += 1
                samples.append(clock() - start)

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await asyncio.sleep(warmup_seconds)
    measuring[0] = True
    before = cpu.snapshot()
    begin = time.perf_counter()
    stop_at[0] = begin + seconds
    await asyncio.sleep(max(0.0, stop_at[0] - time.perf_counter()))
    cpu_figures = cpu.per_call(before, done[0])  # the window only, not the tasks' last calls
    await asyncio.gather(*tasks)
    samples.sort()
    return {
        "concurrency": concurrency,
        "seconds": seconds,
        "calls_per_s": round(done[0] / seconds, 1),
        "p50_us": round(percentile(samples, 0.50) * 1e6, 1),
        "p99_us": round(percentile(samples, 0.99) * 1e6, 1),
        "errors": errors,
        **cpu_figures,
    }


def host_info() -> dict[str, object]:
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor()
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "note": "client (this process, one asyncio loop), server and PostgreSQL share these cores",
    }


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "echo":
    asyncio.run(_serve_echo(int(sys.argv[2])))
