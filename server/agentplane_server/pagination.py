"""Opaque, signed page tokens and page-size clamping for every List RPC.

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
from collections.abc import Mapping
from typing import Any

from agentplane.common.v1.error_reason_pb2 import ErrorReason
from agentplane_server.errors import FieldViolation, InvalidArgument
from agentplane_server.signing import SigningKeys

SIGNATURE_BYTES = 16


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
