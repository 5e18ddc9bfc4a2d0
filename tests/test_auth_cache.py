"""Made-up credentials cannot grow the server: authentication caches are bounded and absurdly
long tokens are refused before any lookup. Real server, SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
import urllib.request
from pathlib import Path

import grpc
from prometheus_client.parser import text_string_to_metric_families
from rpcutil import expect_error

from agentplane.session.v1 import session_service_pb2 as pb
from agentplane.session.v1 import session_service_pb2_grpc as rpc
from agentplane_server.interceptors.auth import MAX_TOKEN_CHARS, UNKNOWN_KEY_CACHE_SIZE


def cache_entries(server) -> dict[str, float]:  # type: ignore[no-untyped-def]
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics") as reply:
        text = reply.read().decode()
    return {
        sample.labels["cache"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "agentplane_auth_cache_entries"
        for sample in family.samples
    }


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def call(stub, token: str) -> grpc.RpcError | None:  # type: ignore[no-untyped-def]
    try:
        stub.ListSessions(
            pb.ListSessionsRequest(), metadata=(("authorization", f"Bearer {token}"),), timeout=10
        )
    except grpc.RpcError as error:
        return error
    return None


def test_unknown_keys_are_cached_within_a_bound(server) -> None:  # type: ignore[no-untyped-def]
    stub = rpc.SessionServiceStub(server.channel())
    for _ in range(UNKNOWN_KEY_CACHE_SIZE + 500):
        error = call(stub, "apk_" + secrets.token_urlsafe(32))
        assert error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED
    entries = cache_entries(server)
    assert 0 < entries["unknown_api_keys"] <= UNKNOWN_KEY_CACHE_SIZE
    # A real key still works, and is cached apart from the unknown ones.
    assert call(stub, server.admin_key) is None
    assert cache_entries(server)["api_keys"] >= 1


def test_long_made_up_tokens_do_not_grow_the_server(server) -> None:  # type: ignore[no-untyped-def]
    stub = rpc.SessionServiceStub(server.channel())
    assert call(stub, server.admin_key) is None
    before = rss_bytes(server.process.pid)
    for _ in range(3000):  # 3,000 unique 7 KB keys: ~21 MB if they were kept
        error = call(stub, "apk_" + secrets.token_hex(3500))
        assert error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED
    growth = rss_bytes(server.process.pid) - before
    assert growth < 8 * 1024 * 1024, f"RSS grew {growth / 1e6:.1f} MB"
    assert cache_entries(server).get("unknown_api_keys", 0) <= UNKNOWN_KEY_CACHE_SIZE


def test_absurdly_long_token_is_refused_up_front(server) -> None:  # type: ignore[no-untyped-def]
    stub = rpc.SessionServiceStub(server.channel())
    # Sent over HTTP/2 metadata as large as the transport allows; refused by its length.
    token = "x" * (MAX_TOKEN_CHARS + 1)
    error = expect_error(
        grpc.StatusCode.UNAUTHENTICATED,
        stub.ListSessions,
        pb.ListSessionsRequest(),
        metadata=(("authorization", f"Bearer {token}"),),
    )
    assert str(MAX_TOKEN_CHARS) in error.message
