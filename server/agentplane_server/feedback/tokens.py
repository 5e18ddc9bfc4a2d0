"""Feedback tokens: short-lived, signed grants to submit feedback on one message without an API key.

A token is `fbt1.<claims>.<signature>`: the claims (project, agent, session, message, trace,
user, expiry and a random token id) as compact JSON in base64url, and an HMAC-SHA256 of them
under a key every replica shares (signing.py: configured keys with rotation, else a secret in
the database), so any replica verifies what another minted and nothing is stored.
Hand-written rather than a JWT library: the server is both the only issuer and the only
verifier, so a fixed format with one fixed MAC algorithm leaves nothing to negotiate (no `alg`
header to downgrade) in ~40 lines.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass

from agentplane.common.v1.error_reason_pb2 import ErrorReason
from agentplane_server.errors import Unauthenticated
from agentplane_server.signing import SigningKeys

PREFIX = "fbt1"


@dataclass(frozen=True, slots=True)
class TokenClaims:
    project_id: str
    agent_id: str
    session_id: str
    message_id: str
    trace_id: str
    user_id: str
    expire_time_us: int
    token_id: str  # random; keys the feedback of a token that names no user


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def invalid(description: str) -> Unauthenticated:
    return Unauthenticated(
        f"invalid feedback token: {description}",
        reason=ErrorReason.ERROR_REASON_FEEDBACK_TOKEN_INVALID,
    )


class FeedbackTokens:
    def __init__(self, keys: SigningKeys | bytes) -> None:
        self._keys = keys if isinstance(keys, SigningKeys) else SigningKeys([keys])

    def _sign(self, body: str) -> str:
        return _b64(self._keys.sign(f"{PREFIX}.{body}".encode()))

    @staticmethod
    def new_token_id() -> str:
        return secrets.token_hex(12)

    def mint(self, claims: TokenClaims) -> str:
        payload = [
            claims.project_id,
            claims.agent_id,
            claims.session_id,
            claims.message_id,
            claims.trace_id,
            claims.user_id,
            claims.expire_time_us,
            claims.token_id,
        ]
        body = _b64(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())
        return f"{PREFIX}.{body}.{self._sign(body)}"

    def verify(self, token: str, now_us: int) -> TokenClaims:
        """The claims of a token this server minted that has not expired; else
        UNAUTHENTICATED with ERROR_REASON_FEEDBACK_TOKEN_INVALID."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != PREFIX:
            raise invalid("malformed")
        body, signature = parts[1], parts[2]
        try:
            mac = _unb64(signature)
        except ValueError:  # not base64url (binascii.Error) or not ASCII
            mac = b""
        # Only the one canonical spelling of the signature (the decoder skips stray characters).
        if _b64(mac) != signature or not self._keys.verify(f"{PREFIX}.{body}".encode(), mac):
            raise invalid("signature does not match")
        try:
            payload = json.loads(_unb64(body))
            claims = TokenClaims(*payload)
        except (ValueError, TypeError) as exc:
            raise invalid("malformed") from exc
        if claims.expire_time_us <= now_us:
            raise invalid("expired")
        return claims
