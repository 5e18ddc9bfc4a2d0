"""JWT bearer credentials from an identity provider (JWKS URL, JWKS file or PEM public key).

Only RS256 and ES256 are accepted, and the algorithm is bound to the key, not taken from the
token: that closes "alg: none" and the RSA-public-key-as-HMAC-secret confusion.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import time
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from agentplane_server.config import Settings
from agentplane_server.context import Principal, Role
from agentplane_server.errors import Unauthenticated

log = logging.getLogger("agentplane.auth")

ALGORITHMS = ("RS256", "ES256")
VERIFIED_CACHE_SIZE = 10_000
ROLES = {
    "admin": Role.ADMIN,
    "project_admin": Role.PROJECT_ADMIN,
    "agent": Role.AGENT,
    "reader": Role.READER,
}
# An unknown kid refetches at most this often, so forged kids cannot flood the IdP.
REFETCH_SECONDS = 10.0
MAX_AGE_SECONDS = 300.0  # keys the IdP withdrew stop verifying within this long
FETCH_TIMEOUT_SECONDS = 5.0
MAX_JWKS_BYTES = 1 << 20

Keys = dict[str | None, jwt.PyJWK]  # by kid; None for a key that has none (PEM)


def _fail(why: str) -> Unauthenticated:
    return Unauthenticated(f"invalid credentials: {why}")


def _shown(value: object) -> str:
    # Values from the token are echoed to help operators, but bounded.
    text = repr(value)
    return text if len(text) <= 66 else text[:62] + "...'"


def parse_jwks(document: dict[str, Any]) -> Keys:
    keys: Keys = {}
    for data in document.get("keys", []) if isinstance(document, dict) else []:
        if not isinstance(data, dict) or data.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(data)
        except (jwt.PyJWKError, jwt.InvalidKeyError):
            continue  # other key types are fine to publish; we just never use them
        # Dropping keys of other algorithms means an "oct" (HMAC) key can never verify here.
        if key.algorithm_name in ALGORITHMS:
            keys[data.get("kid")] = key
    return keys


def parse_pem(data: bytes) -> Keys:
    if b"-----BEGIN CERTIFICATE-----" in data:
        public = x509.load_pem_x509_certificate(data).public_key()
    else:
        public = serialization.load_pem_public_key(data)
    if isinstance(public, rsa.RSAPublicKey):
        return {None: jwt.PyJWK(RSAAlgorithm.to_jwk(public, as_dict=True), "RS256")}
    if isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP256R1):
        return {None: jwt.PyJWK(ECAlgorithm.to_jwk(public, as_dict=True), "ES256")}
    raise ValueError("the JWT public key must be RSA (RS256) or EC P-256 (ES256)")


def read_key_file(path: Path) -> Keys:
    data = path.read_bytes()
    if data.lstrip().startswith(b"{"):
        keys = parse_jwks(json.loads(data))
    else:
        keys = parse_pem(data)
    if not keys:
        raise ValueError(f"{path}: no RS256 or ES256 signing key in this JWKS")
    return keys


def fetch_jwks(url: str) -> Keys:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_SECONDS) as response:
        body = response.read(MAX_JWKS_BYTES + 1)
    if len(body) > MAX_JWKS_BYTES:
        raise ValueError("JWKS document too large")
    return parse_jwks(json.loads(body))


class JwtVerifier:
    """Verifies JWTs against the identity provider's keys and maps their claims to a Principal."""

    def __init__(
        self,
        load_keys: Callable[[], Keys],
        *,
        issuer: str | None = None,
        audience: str | None = None,
        project_claim: str = "project_id",
        role_claim: str = "role",
        agent_claim: str = "agent_id",
        leeway_seconds: float = 30.0,
        keys: Keys | None = None,
    ) -> None:
        self._load_keys = load_keys  # blocking; always run in a thread
        self._keys: Keys = keys or {}
        self._fetched = time.monotonic() if keys else float("-inf")
        self._lock = asyncio.Lock()
        self.refetch_seconds = REFETCH_SECONDS
        self.max_age_seconds = MAX_AGE_SECONDS
        self.issuer = issuer
        self.audience = audience
        self.project_claim = project_claim
        self.role_claim = role_claim
        self.agent_claim = agent_claim
        self.leeway_seconds = leeway_seconds
        # By SHA-256 of the token: a bounded number of small keys, whatever the tokens' size.
        self._verified: OrderedDict[bytes, tuple[Principal, str | None]] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Settings) -> JwtVerifier | None:
        url, path = settings.jwt_jwks_url, settings.jwt_key_file
        if url and path:
            raise ValueError("set jwt_jwks_url or jwt_key_file, not both")
        keys: Keys | None = None
        if url:
            if urllib.parse.urlsplit(url).scheme not in ("https", "http"):
                raise ValueError(f"jwt_jwks_url must be an http(s) URL, not {url!r}")
            # Fetched on first use: the IdP may start after this server.
            load = functools.partial(fetch_jwks, url)
        elif path:
            load = functools.partial(read_key_file, path)
            keys = load()  # a bad key file stops startup rather than failing every call
        else:
            return None
        return cls(
            load,
            keys=keys,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            project_claim=settings.jwt_project_claim,
            role_claim=settings.jwt_role_claim,
            agent_claim=settings.jwt_agent_claim,
            leeway_seconds=settings.jwt_leeway_seconds,
        )

    async def verify(self, token: str) -> Principal:
        # Gateways send the same token on many calls: a token verified once is trusted until
        # its exp, while its signing key is still in the key set (a withdrawn key or an expired
        # token goes through full verification again, which then fails with the reason).
        digest = hashlib.sha256(token.encode()).digest()
        cached = self._verified.get(digest)
        if cached is not None:
            principal, kid = cached
            key = self._lookup(kid)
            if (
                key is not None
                and not self._due(key)
                and (principal.expire_time_us or 0) > time.time() * 1_000_000
            ):
                self._verified.move_to_end(digest)
                return principal
            del self._verified[digest]
        principal, kid = await self._verify(token)
        self._verified[digest] = (principal, kid)
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return principal

    async def _verify(self, token: str) -> tuple[Principal, str | None]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise _fail("malformed JWT") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            raise _fail(f"algorithm not allowed: {_shown(alg)} (allowed: RS256, ES256)")
        if kid is not None and not isinstance(kid, str):
            raise _fail("malformed JWT: kid is not a string")
        key = await self._key(kid)
        if key.algorithm_name != alg:
            raise _fail(f"algorithm not allowed: {alg} with a {key.algorithm_name} key")
        claims = self._decode(token, key)
        return self._principal(claims), kid

    async def _key(self, kid: str | None) -> jwt.PyJWK:
        key = self._lookup(kid)
        if key is None or self._due(key):
            async with self._lock:
                # Another call may have refreshed while this one waited.
                key = self._lookup(kid)
                if self._due(key):
                    await self._refresh()
                    key = self._lookup(kid)
        if key is not None:
            return key
        if not self._keys:
            raise _fail("the identity provider's signing keys (JWKS) could not be loaded")
        if kid is None:
            raise _fail("the JWT has no signing key id (kid)")
        raise _fail(f"unknown signing key id (kid) {_shown(kid)}")

    def _due(self, key: jwt.PyJWK | None) -> bool:
        age = time.monotonic() - self._fetched
        return age > self.max_age_seconds or (key is None and age >= self.refetch_seconds)

    def _lookup(self, kid: str | None) -> jwt.PyJWK | None:
        key = self._keys.get(kid)
        if key is None and len(self._keys) == 1:
            # A lone key without a kid (a PEM file) verifies every token; a lone key with one
            # also verifies tokens that name none.
            only_kid, only = next(iter(self._keys.items()))
            if only_kid is None or kid is None:
                key = only
        return key

    async def _refresh(self) -> None:
        self._fetched = time.monotonic()  # failures count too, so a dead IdP is not hammered
        try:
            keys = await asyncio.to_thread(self._load_keys)
        except Exception as exc:  # keep serving with the keys we have
            log.warning("cannot load JWT signing keys: %s: %s", type(exc).__name__, exc)
            return
        if keys:
            self._keys = keys
        else:
            log.warning("the JWKS holds no RS256 or ES256 signing key; keeping the previous keys")

    def _decode(self, token: str, key: jwt.PyJWK) -> dict[str, Any]:
        require = ["exp"]
        if self.issuer:
            require.append("iss")
        if self.audience:
            require.append("aud")
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[key.algorithm_name],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_seconds,
                options={"require": require, "enforce_minimum_key_length": True},
            )
        except jwt.ExpiredSignatureError:
            raise _fail("the JWT has expired") from None
        except jwt.ImmatureSignatureError:
            raise _fail("the JWT is not valid yet (nbf/iat in the future)") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _fail(f"missing claim {exc.claim!r}") from None
        except jwt.InvalidAudienceError:
            if self.audience is None:
                raise _fail(
                    "wrong audience: the JWT names an audience and this server has none "
                    "configured (set jwt_audience)"
                ) from None
            raise _fail(f"wrong audience (expected {self.audience!r})") from None
        except jwt.InvalidIssuerError:
            raise _fail(f"wrong issuer (expected {self.issuer!r})") from None
        except jwt.InvalidSignatureError:
            raise _fail("bad signature") from None
        except jwt.InvalidAlgorithmError:
            raise _fail("algorithm not allowed") from None
        except jwt.InvalidKeyError:
            raise _fail("the signing key is too weak") from None
        except jwt.InvalidTokenError as exc:
            # PyJWT's own messages describe the claim or encoding at fault, never the token.
            raise _fail(f"malformed JWT: {exc}") from None

    def _principal(self, claims: dict[str, Any]) -> Principal:
        def text(name: str) -> str:
            value = claims.get(name)
            if not isinstance(value, str) or not value:
                raise _fail(f"missing claim {name!r}")
            return value

        project_id = text(self.project_claim)
        role_name = text(self.role_claim)
        role = ROLES.get(role_name)
        if role is None:
            raise _fail(f"unknown role {_shown(role_name)} (expected one of {', '.join(ROLES)})")
        agent_id = text(self.agent_claim) if role is Role.AGENT else ""
        subject, exp = claims.get("sub"), claims["exp"]
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            # PyJWT accepts int("123"); a string here would be repeated, not multiplied.
            raise _fail("malformed JWT: exp is not a number")
        return Principal(
            project_id=project_id,
            role=role,
            agent_id=agent_id,
            subject=subject if isinstance(subject, str) else "",
            credential_project_id=project_id,
            expire_time_us=int(exp * 1_000_000),
            key_id="",
        )
