"""Per-credential request rate limits: a token bucket per API key (or JWT/certificate subject).

Hand-written because the limit must be decided in-process on every call in well under a
microsecond budget; the maintained limiter libraries either need Redis or are synchronous
wrappers. Limits apply per server process: with N replicas a key can reach N times its rate,
which is documented in the README.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from cachetools import TTLCache

from agentplane_server.errors import ResourceExhausted

MAX_BUCKETS = 100_000
# A bucket holds at most one second of requests, so one idle this long is full again: dropping
# it loses nothing, and the buckets kept are only those of credentials calling right now.
IDLE_SECONDS = 2.0


@dataclass(slots=True)
class _Bucket:
    rate: float
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self) -> None:
        self._buckets: TTLCache[str, _Bucket] = TTLCache(MAX_BUCKETS, IDLE_SECONDS)

    def check(self, credential: str, requests_per_second: float | None) -> None:
        """Take one token for `credential`; raise RESOURCE_EXHAUSTED with RetryInfo if none."""
        if not requests_per_second:
            return
        now = time.monotonic()
        bucket = self._buckets.get(credential)
        if bucket is None or bucket.rate != requests_per_second:
            # Burst of one second's worth of requests.
            bucket = _Bucket(requests_per_second, requests_per_second, now)
        self._buckets[credential] = bucket  # (re)starts its idle time
        bucket.tokens = min(bucket.rate, bucket.tokens + (now - bucket.updated) * bucket.rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return
        retry_after = (1 - bucket.tokens) / bucket.rate
        raise ResourceExhausted(
            f"rate limit of {requests_per_second:g} requests/s exceeded for this credential",
            metadata={"limit_per_second": f"{requests_per_second:g}"},
            retry_after=retry_after,
        )
