"""JwtVerifier: signatures, claims and keys, with keys made here and a real JWKS server."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from base64 import urlsafe_b64encode
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from serverproc import free_port

from agentplane_server.auth.jwt import JwtVerifier
from agentplane_server.config import Settings
from agentplane_server.context import Principal, Role
from agentplane_server.errors import Unauthenticated

ISSUER = "https://idp.example.test/"
AUDIENCE = "agentplane"
ROLE_LIST = "(expected one of admin, project_admin, agent, reader)"


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def jwk(private: Any, kid: str, **extra: str) -> dict[str, Any]:
    algorithm = RSAAlgorithm if isinstance(private, rsa.RSAPrivateKey) else ECAlgorithm
    return {**algorithm.to_jwk(private.public_key(), as_dict=True), "kid": kid, **extra}


def pem(private: Any) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def mint(private: Any, kid: str | None, alg: str = "RS256", **claims: Any) -> str:
    """A token with good defaults; a claim given as None is left out."""
    now = int(time.time())
    payload = {
        "sub": "user-1",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
        "project_id": "proj-a",
        "role": "agent",
        "agent_id": "billing",
        **claims,
    }
    payload = {k: v for k, v in payload.items() if v is not None}
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(payload, private, algorithm=alg, headers=headers)


def b64(data: bytes) -> str:
    return urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], payload: dict[str, Any], secret: bytes | None) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = (
        b"" if secret is None else hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    )
    return f"{signing_input}.{b64(signature)}"


async def rejected(verifier: JwtVerifier, token: str) -> str:
    with pytest.raises(Unauthenticated) as caught:
        await verifier.verify(token)
    message = caught.value.message
    for part in token.split("."):
        assert len(part) < 8 or part not in message  # never echo the token
    return message


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    return {"rsa": rsa_key(), "ec": ec_key(), "other_rsa": rsa_key(), "b": rsa_key()}


@pytest.fixture
def jwks_file(tmp_path: Path, keys: dict[str, Any]) -> Path:
    path = tmp_path / "jwks.json"
    document = {
        "keys": [
            jwk(keys["rsa"], "rsa-1", alg="RS256", use="sig"),
            jwk(keys["ec"], "ec-1"),
            {"kty": "oct", "kid": "hmac", "k": b64(b"s" * 32), "alg": "HS256"},
            jwk(keys["other_rsa"], "enc-1", use="enc"),
        ]
    }
    path.write_text(json.dumps(document))
    return path


@pytest.fixture
def verifier(jwks_file: Path) -> JwtVerifier:
    made = JwtVerifier.from_settings(
        Settings(jwt_key_file=jwks_file, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    )
    assert made is not None
    return made


# --- configuration --------------------------------------------------------------------------


def test_no_jwt_settings_no_verifier() -> None:
    assert JwtVerifier.from_settings(Settings()) is None


def test_bad_configuration_stops_startup(tmp_path: Path, jwks_file: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        JwtVerifier.from_settings(
            Settings(jwt_key_file=jwks_file, jwt_jwks_url="https://idp.example.test/jwks")
        )
    with pytest.raises(ValueError, match="http"):
        JwtVerifier.from_settings(Settings(jwt_jwks_url="file:///etc/passwd"))
    empty = tmp_path / "empty.json"
    empty.write_text('{"keys": []}')
    with pytest.raises(ValueError, match="no RS256 or ES256 signing key"):
        JwtVerifier.from_settings(Settings(jwt_key_file=empty))
    p384 = tmp_path / "p384.pem"
    p384.write_bytes(pem(ec.generate_private_key(ec.SECP384R1())))
    with pytest.raises(ValueError, match="EC P-256"):
        JwtVerifier.from_settings(Settings(jwt_key_file=p384))


# --- valid tokens ---------------------------------------------------------------------------


async def test_rs256_token_maps_to_principal(verifier: JwtVerifier, keys: dict[str, Any]) -> None:
    exp = int(time.time()) + 600
    principal = await verifier.verify(mint(keys["rsa"], "rsa-1", exp=exp))
    assert principal == Principal(
        project_id="proj-a",
        role=Role.AGENT,
        agent_id="billing",
        subject="user-1",
        credential_project_id="proj-a",
        expire_time_us=exp * 1_000_000,
        key_id="",
    )


async def test_es256_token_maps_to_principal(verifier: JwtVerifier, keys: dict[str, Any]) -> None:
    token = mint(keys["ec"], "ec-1", "ES256", role="reader", project_id="proj-b", agent_id=None)
    principal = await verifier.verify(token)
    assert (principal.project_id, principal.role, principal.agent_id) == ("proj-b", Role.READER, "")
    assert principal.credential_project_id == "proj-b" and principal.subject == "user-1"


@pytest.mark.parametrize(
    ("name", "role"),
    [("admin", Role.ADMIN), ("project_admin", Role.PROJECT_ADMIN), ("reader", Role.READER)],
)
async def test_roles(verifier: JwtVerifier, keys: dict[str, Any], name: str, role: Role) -> None:
    principal = await verifier.verify(mint(keys["rsa"], "rsa-1", role=name))
    assert principal.role is role
    assert principal.agent_id == ""  # only agent credentials speak for an agent


async def test_custom_claim_names_and_leeway(jwks_file: Path, keys: dict[str, Any]) -> None:
    verifier = JwtVerifier.from_settings(
        Settings(
            jwt_key_file=jwks_file,
            jwt_project_claim="tenant",
            jwt_role_claim="ap_role",
            jwt_agent_claim="ap_agent",
            jwt_leeway_seconds=60,
        )
    )
    assert verifier is not None
    token = mint(
        keys["rsa"],
        "rsa-1",
        aud=None,
        iss=None,
        project_id=None,
        role=None,
        agent_id=None,
        tenant="t1",
        ap_role="agent",
        ap_agent="a1",
        exp=int(time.time()) - 30,
    )
    principal = await verifier.verify(token)  # expired 30 s ago, within the 60 s leeway
    assert (principal.project_id, principal.role, principal.agent_id) == ("t1", Role.AGENT, "a1")


# --- rejected tokens ------------------------------------------------------------------------


async def test_expired(verifier: JwtVerifier, keys: dict[str, Any]) -> None:
    token = mint(keys["rsa"], "rsa-1", exp=int(time.time()) - 120, iat=int(time.time()) - 600)
    assert await rejected(verifier, token) == "invalid credentials: the JWT has expired"


async def test_not_yet_valid(verifier: JwtVerifier, keys: dict[str, Any]) -> None:
    token = mint(keys["rsa"], "rsa-1", nbf=int(time.time()) + 120)
    assert await rejected(verifier, token) == (
        "invalid credentials: the JWT is not valid yet (nbf/iat in the future)"
    )


async def test_wrong_and_missing_audience(verifier: JwtVerifier, keys: dict[str, Any]) -> None:
    wrong = mint(keys["rsa"], "rsa-1", aud="some-other-service")
    assert await rejected(verifier, wrong) == (
        "invalid credentials: wrong audience (expected 'agentplane')"
    )
    missing = mint(keys["rsa"], "rsa-1", aud=None)
    assert await rejected(verifier, missing) == "invalid credentials: missing claim 'aud'"
    listed = mint(keys["rsa"], "rsa-1", aud=["x", AUDIENCE])
    assert (await verifier.verify(listed)).project_id == "proj-a"


async def test_audience_without_configured_audience(jwks_file: Path, keys: dict[str, Any]) -> None:
    verifier = JwtVerifier.from_settings(Settings(jwt_key_file=jwks_file))
    assert verifier is not None
    message = await rejected(verifier, mint(keys["rsa"], "rsa-1"))
    assert message.startswith("invalid credentials: wrong audience: the JWT names an audience")


async def test_wrong_and_missing_issuer(verifier: JwtVerifier, keys: dict[str, Any]) -> None:
    wrong = mint(keys["rsa"], "rsa-1", iss="https://evil.example.test/")
    assert await rejected(verifier, wrong) == (
        "invalid credentials: wrong issuer (expected 'https://idp.example.test/')"
    )
    missing = mint(keys["rsa"], "rsa-1", iss=None)
    assert await rejected(verifier, missing) == "invalid credentials: missing claim 'iss'"


async def test_unknown_kid(verifier: JwtVerifier, keys: dict[str, Any]) -> None:
    token = mint(keys["b"], "rotated-2")
    assert await rejected(verifier, token) == (
        "invalid credentials: unknown signing key id (kid) 'rotated-2'"
    )
    # Keys published for encryption are not signing keys.
    assert await rejected(verifier, mint(keys["other_rsa"], "enc-1")) == (
        "invalid credentials: unknown signing key id (kid) 'enc-1'"
    )
    assert await rejected(verifier, mint(keys["rsa"], None)) == (
        "invalid credentials: the JWT has no signing key id (kid)"
    )


async def test_bad_signature(verifier: JwtVerifier, keys: dict[str, Any]) -> None:
    forged = mint(keys["other_rsa"], "rsa-1")
    assert await rejected(verifier, forged) == "invalid credentials: bad signature"
    header, payload, signature = mint(keys["rsa"], "rsa-1").split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    claims["role"] = "admin"
    tampered = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
    assert await rejected(verifier, tampered) == "invalid credentials: bad signature"


async def test_algorithms_not_allowed(verifier: JwtVerifier, keys: dict[str, Any]) -> None:
    claims = jwt.decode(mint(keys["rsa"], "rsa-1"), options={"verify_signature": False})
    none = hand_made({"alg": "none", "kid": "rsa-1"}, claims, None)
    assert await rejected(verifier, none) == (
        "invalid credentials: algorithm not allowed: 'none' (allowed: RS256, ES256)"
    )
    # The classic confusion: HMAC keyed with the RSA public key the server trusts.
    hs256 = hand_made({"alg": "HS256", "kid": "rsa-1"}, claims, pem(keys["rsa"]))
    assert await rejected(verifier, hs256) == (
        "invalid credentials: algorithm not allowed: 'HS256' (allowed: RS256, ES256)"
    )
    # An HMAC key in the JWKS is never used, whatever the token claims.
    oct_signed = hand_made({"alg": "RS256", "kid": "hmac"}, claims, b"s" * 32)
    assert await rejected(verifier, oct_signed) == (
        "invalid credentials: unknown signing key id (kid) 'hmac'"
    )
    rs384 = mint(keys["rsa"], "rsa-1", "RS384")
    assert await rejected(verifier, rs384) == (
        "invalid credentials: algorithm not allowed: 'RS384' (allowed: RS256, ES256)"
    )
    swapped = mint(keys["ec"], "rsa-1", "ES256")  # an EC signature under the RSA key's kid
    assert await rejected(verifier, swapped) == (
        "invalid credentials: algorithm not allowed: ES256 with a RS256 key"
    )


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"project_id": None}, "missing claim 'project_id'"),
        ({"project_id": ""}, "missing claim 'project_id'"),
        ({"project_id": 7}, "missing claim 'project_id'"),
        ({"role": None}, "missing claim 'role'"),
        ({"agent_id": None}, "missing claim 'agent_id'"),
        ({"exp": None}, "missing claim 'exp'"),
        ({"role": "root"}, f"unknown role 'root' {ROLE_LIST}"),
        ({"role": "x" * 500}, f"unknown role '{'x' * 61}...' {ROLE_LIST}"),
        # Far ahead: the parameters are made at collection, minutes before the test runs.
        ({"exp": str(int(time.time()) + 365 * 86400)}, "malformed JWT: exp is not a number"),
    ],
)
async def test_bad_claims(
    verifier: JwtVerifier, keys: dict[str, Any], claims: dict[str, Any], message: str
) -> None:
    token = mint(keys["ec"], "ec-1", "ES256", **claims)
    assert await rejected(verifier, token) == f"invalid credentials: {message}"


@pytest.mark.parametrize("token", ["not-a-jwt", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30", ""])
async def test_malformed(verifier: JwtVerifier, token: str) -> None:
    assert (await rejected(verifier, token)).startswith("invalid credentials: malformed JWT")


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
async def test_weak_rsa_key(tmp_path: Path) -> None:
    weak = rsa_key(1024)
    path = tmp_path / "weak.pem"
    path.write_bytes(pem(weak))
    verifier = JwtVerifier.from_settings(Settings(jwt_key_file=path))
    assert verifier is not None
    token = mint(weak, None, aud=None)
    assert await rejected(verifier, token) == "invalid credentials: the signing key is too weak"


# --- PEM key files --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "alg", "other"), [("rsa", "RS256", "ES256"), ("ec", "ES256", "RS256")]
)
async def test_pem_key_file(
    tmp_path: Path, keys: dict[str, Any], kind: str, alg: str, other: str
) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(pem(keys[kind]))
    verifier = JwtVerifier.from_settings(
        Settings(jwt_key_file=path, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    )
    assert verifier is not None
    # A PEM key has no kid: it verifies tokens that name one and tokens that do not.
    for kid in (None, "whatever"):
        principal = await verifier.verify(mint(keys[kind], kid, alg))
        assert (principal.project_id, principal.role) == ("proj-a", Role.AGENT)
    wrong_kind = keys["ec" if kind == "rsa" else "rsa"]
    assert await rejected(verifier, mint(wrong_kind, None, other)) == (
        f"invalid credentials: algorithm not allowed: {other} with a {alg} key"
    )
    assert await rejected(verifier, mint(rsa_key() if kind == "rsa" else ec_key(), None, alg)) == (
        "invalid credentials: bad signature"
    )


# --- JWKS over HTTP -------------------------------------------------------------------------


class JwksServer:
    """A real HTTP identity provider endpoint on 127.0.0.1 whose JWKS a test can swap."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.requests = 0
        self.delay = 0.0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                time.sleep(outer.delay)
                body = json.dumps(outer.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def publish(self, *jwks: dict[str, Any]) -> None:
        self.document = {"keys": list(jwks)}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def idp() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.close()


def url_verifier(url: str) -> JwtVerifier:
    verifier = JwtVerifier.from_settings(
        Settings(jwt_jwks_url=url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    )
    assert verifier is not None
    return verifier


async def test_jwks_url_fetched_once_and_cached(idp: JwksServer, keys: dict[str, Any]) -> None:
    idp.publish(jwk(keys["rsa"], "a"), jwk(keys["ec"], "e"))
    verifier = url_verifier(idp.url)
    assert idp.requests == 0  # nothing is fetched until a token arrives
    assert (await verifier.verify(mint(keys["rsa"], "a"))).role is Role.AGENT
    assert (await verifier.verify(mint(keys["ec"], "e", "ES256"))).role is Role.AGENT
    assert idp.requests == 1


async def test_key_rotation_refetches_rate_limited(idp: JwksServer, keys: dict[str, Any]) -> None:
    key_a, key_b = keys["rsa"], keys["b"]
    idp.publish(jwk(key_a, "a"))
    verifier = url_verifier(idp.url)
    verifier.refetch_seconds = 0.5
    assert (await verifier.verify(mint(key_a, "a"))).project_id == "proj-a"
    assert idp.requests == 1

    idp.publish(jwk(key_b, "b"))  # the IdP rotates to key B
    token_b = mint(key_b, "b")
    # Within the rate limit an unknown kid does not reach the IdP (forged kids cannot flood it).
    assert await rejected(verifier, token_b) == (
        "invalid credentials: unknown signing key id (kid) 'b'"
    )
    assert idp.requests == 1

    await asyncio.sleep(0.6)
    # Many calls with the new kid at once: one refetch, and all of them verify.
    principals = await asyncio.gather(*(verifier.verify(token_b) for _ in range(5)))
    assert {p.project_id for p in principals} == {"proj-a"}
    assert idp.requests == 2

    await asyncio.sleep(0.6)
    # Key A was withdrawn: after a refetch it no longer verifies.
    assert await rejected(verifier, mint(key_a, "a")) == (
        "invalid credentials: unknown signing key id (kid) 'a'"
    )
    assert idp.requests == 3


async def test_jwks_refreshed_when_old(idp: JwksServer, keys: dict[str, Any]) -> None:
    idp.publish(jwk(keys["rsa"], "a"))
    verifier = url_verifier(idp.url)
    verifier.max_age_seconds = 0.3
    token = mint(keys["rsa"], "a")
    await verifier.verify(token)
    idp.publish(jwk(keys["b"], "b"))  # A withdrawn, e.g. compromised
    await asyncio.sleep(0.4)
    assert (
        await rejected(verifier, token) == "invalid credentials: unknown signing key id (kid) 'a'"
    )
    assert idp.requests == 2


async def test_fetch_does_not_block_event_loop(idp: JwksServer, keys: dict[str, Any]) -> None:
    idp.publish(jwk(keys["rsa"], "a"))
    idp.delay = 0.5
    verifier = url_verifier(idp.url)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    try:
        await verifier.verify(mint(keys["rsa"], "a"))
    finally:
        ticker.cancel()
    assert ticks >= 20  # the loop kept running while the JWKS was fetched


async def test_jwks_unreachable(keys: dict[str, Any]) -> None:
    verifier = url_verifier(f"http://127.0.0.1:{free_port()}/jwks")
    token = mint(keys["rsa"], "a")
    assert await rejected(verifier, token) == (
        "invalid credentials: the identity provider's signing keys (JWKS) could not be loaded"
    )


async def test_jwks_outage_keeps_known_keys(idp: JwksServer, keys: dict[str, Any]) -> None:
    idp.publish(jwk(keys["rsa"], "a"))
    verifier = url_verifier(idp.url)
    verifier.max_age_seconds = 0.1
    token = mint(keys["rsa"], "a")
    await verifier.verify(token)
    idp.close()
    await asyncio.sleep(0.2)
    assert (await verifier.verify(token)).project_id == "proj-a"


async def test_a_verified_token_is_reused_until_it_expires(
    verifier: JwtVerifier, keys: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[str] = []
    original = verifier._decode

    def counting(token: str, key: Any) -> dict[str, Any]:
        decoded.append(token)
        return original(token, key)

    monkeypatch.setattr(verifier, "_decode", counting)
    token = mint(keys["rsa"], "rsa-1", exp=int(time.time()) + 2)
    first = await verifier.verify(token)
    assert await verifier.verify(token) == first
    assert len(decoded) == 1  # the second call did not verify the signature again
    # Past exp (here still inside the verifier's leeway), the cache is not trusted: the token
    # is verified again.
    monkeypatch.setattr(time, "time", lambda: first.expire_time_us / 1_000_000 + 5)
    await verifier.verify(token)
    assert len(decoded) == 2
