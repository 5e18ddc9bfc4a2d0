"""Prometheus metrics per RPC (prometheus-client; multiprocess-safe when --workers > 1)."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram

RPC_REQUESTS = Counter(
    "agentplane_rpc_requests",
    "RPCs handled, by service, method and status code.",
    ["service", "method", "code"],
)
RPC_DURATION = Histogram(
    "agentplane_rpc_duration_seconds",
    "Time to handle an RPC (streams: until the stream ends).",
    ["service", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
)


# The labelled children, looked up once per (service, method, code) rather than on every call
# (labels() takes a lock and builds its key each time). Bounded: methods and codes are finite.
_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def observe(service: str, method: str, code: str, seconds: float) -> None:
    key = (service, method, code)
    children = _children.get(key)
    if children is None:
        children = _children[key] = (
            RPC_REQUESTS.labels(service, method, code),
            RPC_DURATION.labels(service, method),
        )
    children[0].inc()
    children[1].observe(seconds)
