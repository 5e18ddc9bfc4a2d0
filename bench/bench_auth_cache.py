"""Server memory across many made-up credentials: RSS before and after 100,000 calls, each with
a unique bogus API key (half of them 47 characters like a real key, half 7 KB), beside calls
with one valid key (the baseline; 20,000 by default), in the same run against one server on
SQLite. Also reports the authentication cache sizes from /metrics. Prints one JSON document.

    .venv/bin/python bench/bench_auth_cache.py [--calls N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
import urllib.request
from pathlib import Path

import grpc
from _common import ServerProcess, host_info
from prometheus_client.parser import text_string_to_metric_families

from agentplane.session.v1 import session_service_pb2 as pb
from agentplane.session.v1 import session_service_pb2_grpc as rpc

CONCURRENCY = 32


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def cache_entries(server: ServerProcess) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics") as reply:
        text = reply.read().decode()
    return {
        sample.labels["cache"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "agentplane_auth_cache_entries"
        for sample in family.samples
    }


async def run_calls(server: ServerProcess, calls: int, token_for) -> dict[str, object]:  # type: ignore[no-untyped-def]
    codes: dict[str, int] = {}
    counter = iter(range(calls))
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = rpc.SessionServiceStub(channel)
        request = pb.ListSessionsRequest(page_size=1)

        async def worker() -> None:
            for i in counter:
                try:
                    await stub.ListSessions(
                        request, metadata=(("authorization", f"Bearer {token_for(i)}"),), timeout=30
                    )
                    code = "OK"
                except grpc.aio.AioRpcError as error:
                    code = error.code().name
                codes[code] = codes.get(code, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        seconds = time.perf_counter() - started
    return {"calls": calls, "seconds": round(seconds, 1), "codes": codes}


def phase(server: ServerProcess, calls: int, token_for) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """`calls` calls in five steps, RSS after each."""
    before = rss_mb(server.process.pid)
    step = max(1, calls // 5)
    samples, seconds, codes = [], 0.0, {}
    for done in range(0, calls, step):
        result = asyncio.run(run_calls(server, min(step, calls - done), token_for))
        seconds += result["seconds"]
        for code, count in result["codes"].items():
            codes[code] = codes.get(code, 0) + count
        samples.append({"calls": done + result["calls"], "rss_mb": rss_mb(server.process.pid)})
    after = samples[-1]["rss_mb"]
    return {
        "calls": calls,
        "seconds": round(seconds, 1),
        "codes": codes,
        "rss_before_mb": before,
        "rss_after_mb": after,
        "rss_growth_mb": round(after - before, 1),
        "rss_samples": samples,
        "auth_cache_entries": cache_entries(server),
    }


def bogus(i: int) -> str:
    # Unique every time; every other one as long as a gRPC header comfortably carries.
    return "apk_" + (secrets.token_urlsafe(32) if i % 2 else secrets.token_hex(3500))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=100_000, help="bogus-key calls")
    parser.add_argument("--baseline-calls", type=int, default=20_000, help="valid-key calls")
    args = parser.parse_args()
    server = ServerProcess(None, extra_args=("--no-access-log",))
    try:
        valid = server.admin_key
        phase(server, 2_000, lambda i: valid)  # warm up: caches, pools, allocator
        baseline = phase(server, args.baseline_calls, lambda i: valid)
        made_up = phase(server, args.calls, bogus)
    finally:
        server.stop()
    print(
        json.dumps(
            {
                "bench": "auth_cache",
                "baseline_one_valid_key": baseline,
                "unique_bogus_keys": made_up,
                "host": host_info(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
