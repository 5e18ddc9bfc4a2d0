"""The Python SDK's governance path against a real `agentplane serve` (SQLite), beside the raw
generated stub measured in the same run. Prints one JSON document.

    .venv/bin/python bench/bench_sdk.py            # about 20 s
    .venv/bin/python bench/bench_sdk.py --quick    # about 8 s

- cached: Governor.check answered from the decision cache (the server's cache_ttl), and a
  @governed no-op function around it (report=False: the decision path alone). Target p50 <= 10 us.
- local: Governor.check decided from the WatchPolicies state (no cache entry, no call).
- uncached: Governor.check with the cache off, i.e. CheckPermission through the SDK (request
  building, deadline, retry policy, typed errors), beside the same CheckPermission through the raw
  generated stub on the same channel: their difference is the SDK's own cost per call.
One call in flight (sync client), p50/p99/mean in microseconds. The client is this process; the
server is a child process; both share the host's cores (see "host").
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from _common import ServerProcess, host_info, percentile

import agentplane
from agentplane.governance.v1 import governance_service_pb2 as gpb
from agentplane.governance.v1 import governance_service_pb2_grpc as grpc_gov


def measure(call: Callable[[int], object], calls: int, warmup: int) -> dict[str, float]:
    for i in range(warmup):
        call(i)
    clock = time.perf_counter_ns
    samples = []
    for i in range(calls):
        start = clock()
        call(i)
        samples.append((clock() - start) / 1000)
    samples.sort()
    return {
        "calls": calls,
        "p50_us": round(percentile(samples, 0.50), 2),
        "p99_us": round(percentile(samples, 0.99), 2),
        "mean_us": round(statistics.fmean(samples), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    fast_calls, slow_calls = (20_000, 500) if args.quick else (100_000, 2_000)

    result: dict[str, object] = {"benchmark": "sdk_governance", "host": host_info()}
    server = ServerProcess(None)
    try:
        admin = agentplane.Client.connect(server.address, api_key=server.admin_key)
        admin.governance.create_policy(
            policy_id="allow-tools",
            policy={"name": "tools", "effect": "POLICY_EFFECT_ALLOW", "actions": ["tool:*"]},
        )
        agent_key = admin.admin.create_api_key(role="ROLE_AGENT", agent_id="bench-agent").key
        client = agentplane.Client.connect(server.address, api_key=agent_key)

        # Cached: the first check asks the server, the rest reuse its decision.
        cached = agentplane.Governor(client)
        first = cached.check("tool:search", "web://q")
        assert first.allowed and first.cache_ttl > 0, first
        assert cached.check("tool:search", "web://q").source == "cache"
        result["cached_check"] = measure(
            lambda i: cached.check("tool:search", "web://q"), fast_calls, 1000
        )

        @agentplane.governed(
            action="tool:search", resource="web://q", governor=cached, report=False
        )
        def noop() -> None:
            return None

        result["cached_governed_call"] = measure(lambda i: noop(), fast_calls, 1000)

        # Local: decided from the WatchPolicies snapshot.
        local = agentplane.Governor(client, cache=False, watch=True)
        if local.start_watch(wait=10) and local.check("tool:local").source == "local":
            result["local_check"] = measure(lambda i: local.check("tool:local"), fast_calls, 1000)
        local.close()

        # Uncached through the SDK, and the raw stub on the same channel, interleaved so that
        # both see the same server state (decision log write-behind, GC, CPU frequency).
        uncached = agentplane.Governor(client, cache=False)
        stub = grpc_gov.GovernanceServiceStub(client.channel)
        metadata = (("authorization", f"Bearer {agent_key}"),)
        request = gpb.CheckPermissionRequest(action="tool:search", resource="web://q")

        def raw(i: int) -> object:
            return stub.CheckPermission(request, timeout=10, metadata=metadata)

        assert raw(0).decision == first.decision
        sdk_samples: list[dict[str, float]] = []
        raw_samples: list[dict[str, float]] = []
        rounds = 5
        for _ in range(rounds):
            raw_samples.append(measure(raw, slow_calls // rounds, 50))
            sdk_samples.append(
                measure(
                    lambda i: uncached.check("tool:search", "web://q"), slow_calls // rounds, 50
                )
            )

        def merge(parts: list[dict[str, float]]) -> dict[str, float]:
            return {
                "calls": sum(p["calls"] for p in parts),
                "p50_us": round(statistics.median(p["p50_us"] for p in parts), 1),
                "p99_us": round(max(p["p99_us"] for p in parts), 1),
                "mean_us": round(statistics.fmean(p["mean_us"] for p in parts), 1),
            }

        result["uncached_check_sdk"] = merge(sdk_samples)
        result["uncached_check_raw_stub"] = merge(raw_samples)
        result["sdk_overhead_p50_us"] = round(
            result["uncached_check_sdk"]["p50_us"] - result["uncached_check_raw_stub"]["p50_us"], 1
        )
        result["target_cached_p50_us"] = 10
        result["cached_meets_target"] = result["cached_check"]["p50_us"] <= 10
        client.close()
        admin.close()
    finally:
        server.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
