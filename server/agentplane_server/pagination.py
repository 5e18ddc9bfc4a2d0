"""The one list helper every List RPC uses: opaque, signed page tokens and page-size clamping
(PageTokens.page -> Page).

A token carries the keyset position of the last row returned and a digest of the query's
filters, signed with a key every replica shares (signing.py: configured keys with rotation,
else a secret in the database). A forged or altered token, or one reused
with different filters, is refused with INVALID_ARGUMENT. (Hand-written: no maintained library
does signed keyset cursors for SQLAlchemy Core; it is ~40 lines.)
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from agentplane.common.v1.error_reason_pb2 import ErrorReason
from agentplane_server.errors import FieldViolation, InvalidArgument
from agentplane_server.signing import SigningKeys

SIGNATURE_BYTES = 16
T = TypeVar("T")


class ListRequest(Protocol):
    page_size: int
    page_token: str


def clamp_page_size(requested: int, default: int, maximum: int) -> int:
    if requested <= 0:
        return default
    return min(requested, maximum)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PageTokens:
    def __init__(self, keys: SigningKeys | bytes) -> None:
        self._keys = keys if isinstance(keys, SigningKeys) else SigningKeys([keys])

    @staticmethod
    def _digest(query: str, filters: Mapping[str, Any]) -> str:
        canonical = json.dumps([query, filters], sort_keys=True, default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def page(
        self, query: str, request: ListRequest, filters: Mapping[str, Any], sizes: tuple[int, int]
    ) -> Page:
        """The page a List request asks for: its page_token checked against the query and
        filters (INVALID_ARGUMENT otherwise), its page_size clamped to sizes (default, maximum)."""
        position = self.decode(request.page_token, query, filters)
        return Page(self, query, filters, position, clamp_page_size(request.page_size, *sizes))

    def encode(self, query: str, filters: Mapping[str, Any], position: list[Any]) -> str:
        body = json.dumps([position, self._digest(query, filters)], separators=(",", ":")).encode()
        return f"{_b64(body)}.{_b64(self._keys.sign(body)[:SIGNATURE_BYTES])}"

    def decode(self, token: str, query: str, filters: Mapping[str, Any]) -> list[Any] | None:
        """The position in `token`, or None for an empty token (the first page)."""
        if not token:
            return None
        try:
            body_text, signature_text = token.split(".", 1)
            body = _unb64(body_text)
            if not self._keys.verify(body, _unb64(signature_text), SIGNATURE_BYTES):
                raise ValueError("bad signature")
            position, digest = json.loads(body)
        except ValueError as exc:
            raise self._invalid("page_token is not one this server issued") from exc
        if digest != self._digest(query, filters) or not isinstance(position, list):
            raise self._invalid("page_token was issued for a different query or filters")
        return position

    @staticmethod
    def _invalid(description: str) -> InvalidArgument:
        return InvalidArgument(
            description,
            reason=ErrorReason.ERROR_REASON_INVALID_PAGE_TOKEN,
            field_violations=[FieldViolation("page_token", description)],
        )


@dataclass(frozen=True)
class Page:
    """One List call's page: where it starts (the keyset position of its token, None on the
    first page) and how many items it returns. Fetch `fetch` rows (one more than `size`, to
    learn whether another page follows) and pass them to finish()."""

    tokens: PageTokens
    query: str
    filters: Mapping[str, Any]
    position: list[Any] | None
    size: int

    @property
    def fetch(self) -> int:
        return self.size + 1

    def finish(
        self, rows: Sequence[T], position: Callable[[T], list[Any]]
    ) -> tuple[Sequence[T], str]:
        """This page's rows, and the next page's token ("" when no page follows)."""
        if len(rows) <= self.size:
            return rows, ""
        page = rows[: self.size]
        return page, self.tokens.encode(self.query, self.filters, position(page[-1]))
