"""Retries with exponential backoff, for calls that are safe to repeat.

A call is retried only when repeating it cannot do twice what was meant once:
- the RPC is marked ``idempotency_level = NO_SIDE_EFFECTS`` or ``IDEMPOTENT`` in the contract, or
- its request carries a ``request_id`` (the server then returns the first result to a repeat).
  The SDK fills an empty ``request_id`` with a fresh one per logical call (``auto_request_id``),
  so every attempt of one call shares it.
Only transient failures are retried: UNAVAILABLE, and RESOURCE_EXHAUSTED when the server sent a
``RetryInfo`` (rate limits, ingestion backpressure; a spent budget or quota has no RetryInfo and
is not retried). The call's timeout is one deadline for all its attempts together.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import grpc

from agentplane._errors import RpcError

RETRYABLE_CODES: frozenset[grpc.StatusCode] = frozenset({grpc.StatusCode.UNAVAILABLE})
RETRY_INFO_CODES: frozenset[grpc.StatusCode] = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED})


@dataclass(frozen=True)
class RetryPolicy:
    """How a retryable call is repeated.

    ``max_attempts`` counts the first attempt. The n-th retry waits
    ``min(max_backoff, initial_backoff * multiplier ** (n - 1))`` seconds, randomised by
    ``jitter`` (a fraction), or the server's RetryInfo delay when it sent one.
    ``on_retry(error, attempt, delay)`` is called before each wait (for logs and metrics).
    """

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.2
    retryable_codes: Collection[grpc.StatusCode] = RETRYABLE_CODES
    retry_info_codes: Collection[grpc.StatusCode] = RETRY_INFO_CODES
    # Fill an empty request_id so that calls carrying one may be retried.
    auto_request_id: bool = True
    on_retry: Callable[[RpcError, int, float], None] | None = field(default=None, compare=False)

    def should_retry(self, error: RpcError, attempt: int) -> bool:
        if attempt >= self.max_attempts:
            return False
        if error.code in self.retryable_codes:
            return True
        return error.code in self.retry_info_codes and error.retry_delay is not None

    def backoff(self, error: RpcError, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1``."""
        if error.retry_delay is not None:
            return max(0.0, error.retry_delay.total_seconds())
        delay = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        if self.jitter:
            delay *= 1 + random.uniform(-self.jitter, self.jitter)
        return max(0.0, delay)


NO_RETRY = RetryPolicy(max_attempts=1)
