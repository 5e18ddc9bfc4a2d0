"""Client certificates (mutual TLS) as credentials: a verified certificate's subject -> a principal.

`agentplane serve --tls-cert server.pem --tls-key server.key --tls-client-ca clients-ca.pem
--tls-client-principals principals.json` makes every client present a certificate issued by
`clients-ca.pem` (gRPC refuses the handshake otherwise, before any RPC), and lets a client whose
certificate subject is in `principals.json` call without an `authorization` header:

    {
      "CN=billing-agent": {"project_id": "default", "role": "agent", "agent_id": "billing"},
      "CN=dashboard": {"project_id": "default", "role": "reader"},
      "CN=ops,OU=platform,O=Acme\\, Inc": {"project_id": "default", "role": "project_admin"}
    }

Keys are RFC 4514 distinguished names, most specific attribute first, as
`openssl x509 -noout -subject -nameopt RFC2253` and gRPC's `x509_subject` print them:
- a key that is one `CN=<common name>` matches every certificate whose subject has exactly that
  one common name, whatever its other attributes (a subject with two CNs never matches a CN key);
- any other key is a full subject and matches only a certificate with that exact subject (same
  attributes, same order); it is tried before the CN keys.
Attribute types are written as RFC 4514 and OpenSSL spell them (CN, O, OU, L, ST, C, STREET, DC,
UID, emailAddress or E) or as dotted OIDs; escapes (`\\,`, `\\2C`, `\\C3\\A9`) are decoded, and
values are compared exactly (case-sensitive). Values in the file follow the API key rules: `role`
is admin, project_admin, agent or reader (ROLE_AGENT also accepted); `agent_id` is required for
agent and refused for the other roles; ids are letters, digits, ".", "_", ":", "-". A mistake in
the file stops the server at startup with the file, the key and what is wrong.

The principal's `subject` is `cert:<the certificate's full RFC 4514 subject>` and its
`expire_time_us` is the certificate's notAfter: a call on a connection that outlived its
certificate is not authenticated by it. Revocation: remove the subject from the file and restart
(gRPC Python has no CRL support); prefer short-lived client certificates.

What grpc.aio's `ServicerContext.auth_context()` holds (grpcio 1.85, observed):
- plaintext: `transport_security_type: [b"insecure"]`, `security_level: [b"TSI_SECURITY_NONE"]`;
- TLS: `transport_security_type: [b"ssl"]`, `security_level: [b"TSI_PRIVACY_AND_INTEGRITY"]`,
  `ssl_tls_version`, `ssl_session_reused`, `ssl_negotiated_key_exchange_group`;
- mTLS adds the verified leaf certificate: `x509_pem_cert` (PEM), `x509_subject` (RFC 4514 by
  OpenSSL: non-ASCII escaped as `\\C3\\A9`, `emailAddress=`, multi-valued RDNs reordered),
  `x509_common_name` (the first CN only; `b""` without one), and for subjectAltNames
  `x509_subject_alternative_name` plus `peer_dns`, `peer_uri`, `peer_email`, `peer_ip`,
  `peer_spiffe_id`; `peer_identity_key()` is `x509_subject_alternative_name` when there are SANs.
This module parses `x509_pem_cert` itself (with `cryptography`) rather than trusting those strings,
so duplicate CNs and escaping differences cannot confuse the match; it falls back to
`x509_subject` when the PEM is absent. The `x509_*` properties are present only when gRPC verified
the chain against `--tls-client-ca` (grpc.ssl_server_credentials(require_client_auth=True));
gRPC Python has no mode that requests a certificate without verifying it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from agentplane_server.config import Settings
from agentplane_server.context import Principal, Role

SUBJECT_PREFIX = "cert:"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_FIELDS = {"project_id", "role", "agent_id"}
_PARSE_NAMES = {"emailAddress": NameOID.EMAIL_ADDRESS, "E": NameOID.EMAIL_ADDRESS}
_PRINT_NAMES = {NameOID.EMAIL_ADDRESS: "emailAddress"}
_CACHE_LIMIT = 4096


class ClientPrincipalsError(ValueError):
    """The --tls-client-principals file (or the TLS settings around it) is unusable."""


@dataclass(frozen=True, slots=True)
class _Mapped:
    project_id: str
    role: Role
    agent_id: str


@dataclass(frozen=True, slots=True)
class _Seen:
    principal: Principal | None
    expire_time_us: int | None


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(f"key {key!r} appears twice")
        result[key] = value
    return result


def parse_subject(text: str) -> x509.Name:
    """An RFC 4514 distinguished name (as OpenSSL, gRPC and `cryptography` print them)."""
    return x509.Name.from_rfc4514_string(text, attr_name_overrides=_PARSE_NAMES)


def format_subject(name: x509.Name) -> str:
    return name.rfc4514_string(attr_name_overrides=_PRINT_NAMES)


def _common_name(name: x509.Name) -> str | None:
    """The subject's one common name; None with none or several (ambiguous)."""
    names = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str):
        return None
    return names[0].value


def _role(value: Any) -> Role:
    if not isinstance(value, str):
        raise ValueError("role must be a string")
    name = value.strip().upper().removeprefix("ROLE_")
    if name not in Role.__members__:
        choices = ", ".join(r.name.lower() for r in Role)
        raise ValueError(f"unknown role {value!r} (one of {choices})")
    return Role[name]


def _mapped(value: Any) -> _Mapped:
    if not isinstance(value, dict):
        raise ValueError('must be an object like {"project_id": "default", "role": "reader"}')
    unknown = sorted(set(value) - _FIELDS)
    if unknown:
        raise ValueError(
            f"unknown field(s) {', '.join(unknown)} (allowed: project_id, role, agent_id)"
        )
    project_id = value.get("project_id")
    if not isinstance(project_id, str) or not _ID.match(project_id):
        raise ValueError(
            "project_id is required: 1-128 letters, digits, '.', '_', ':', '-', "
            "starting with a letter or digit"
        )
    if "role" not in value:
        raise ValueError("role is required (admin, project_admin, agent or reader)")
    role = _role(value["role"])
    agent_id = value.get("agent_id", "")
    if not isinstance(agent_id, str):
        raise ValueError("agent_id must be a string")
    if role is Role.AGENT and not agent_id:
        raise ValueError("role agent needs an agent_id")
    if role is not Role.AGENT and agent_id:
        raise ValueError(f"agent_id is only for role agent, not {role.name.lower()}")
    if agent_id and not _ID.match(agent_id):
        raise ValueError(
            "agent_id must be 1-128 letters, digits, '.', '_', ':', '-', "
            "starting with a letter or digit"
        )
    return _Mapped(project_id=project_id, role=role, agent_id=agent_id)


class ClientCertificates:
    """Maps verified client certificates to principals (see the module docstring)."""

    def __init__(
        self, by_subject: Mapping[x509.Name, _Mapped], by_common_name: Mapping[str, _Mapped]
    ) -> None:
        self._by_subject = dict(by_subject)
        self._by_common_name = dict(by_common_name)
        self._seen: dict[bytes, _Seen] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> ClientCertificates | None:
        """None unless --tls-client-principals is set; raises ClientPrincipalsError on any
        mistake in the file or in the TLS settings it needs."""
        path = settings.tls_client_principals
        if path is None:
            return None
        if settings.tls_cert is None or settings.tls_client_ca is None:
            raise ClientPrincipalsError(
                "--tls-client-principals needs --tls-cert, --tls-key and --tls-client-ca: "
                "only certificates verified against the client CA can name a principal"
            )
        return cls.load(path)

    @classmethod
    def load(cls, path: Path) -> ClientCertificates:
        try:
            document = json.loads(
                Path(path).read_text(encoding="utf-8"), object_pairs_hook=_no_duplicate_keys
            )
        except OSError as exc:
            raise ClientPrincipalsError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        except (UnicodeDecodeError, json.JSONDecodeError, _DuplicateKey) as exc:
            raise ClientPrincipalsError(f"{path}: not valid JSON: {exc}") from exc
        return cls.from_mapping(document, source=str(path))

    @classmethod
    def from_mapping(cls, document: Any, source: str = "client principals") -> ClientCertificates:
        if not isinstance(document, dict) or not document:
            raise ClientPrincipalsError(
                f'{source}: expected a non-empty JSON object {{"CN=<name>": {{"project_id": '
                '..., "role": ...}, ...}'
            )
        by_subject: dict[x509.Name, _Mapped] = {}
        by_common_name: dict[str, _Mapped] = {}
        written: dict[x509.Name, str] = {}
        for key, value in document.items():
            try:
                name = parse_subject(key)
            except ValueError as exc:
                raise ClientPrincipalsError(
                    f"{source}: {key!r} is not an RFC 4514 subject like 'CN=billing-agent' or "
                    f"'CN=billing-agent,O=Acme' (attribute types are upper-case: CN, O, OU, L, "
                    f"ST, C, DC, UID, emailAddress){': ' + str(exc) if str(exc) else ''}"
                ) from exc
            if len(name) == 0:
                raise ClientPrincipalsError(f"{source}: {key!r}: the subject is empty")
            if name in written:
                raise ClientPrincipalsError(
                    f"{source}: {key!r} and {written[name]!r} are the same subject"
                )
            written[name] = key
            try:
                mapped = _mapped(value)
            except ValueError as exc:
                raise ClientPrincipalsError(f"{source}: {key!r}: {exc}") from exc
            rdns = name.rdns
            if len(rdns) == 1 and len(rdns[0]) == 1 and _common_name(name) is not None:
                by_common_name[_common_name(name) or ""] = mapped
            else:
                by_subject[name] = mapped
        return cls(by_subject, by_common_name)

    def principal_for(self, auth_context: Mapping[str, Sequence[bytes]]) -> Principal | None:
        """The principal of the call's verified client certificate; None on a connection without
        one, for a subject that is not mapped, or once the certificate has expired."""
        if b"ssl" not in auth_context.get("transport_security_type", ()):
            return None
        pem = next(iter(auth_context.get("x509_pem_cert", ())), b"")
        subject = next(iter(auth_context.get("x509_subject", ())), b"")
        cache_key = pem or subject
        if not cache_key:
            return None
        seen = self._seen.get(cache_key)
        if seen is None:
            seen = self._resolve(pem, subject)
            if len(self._seen) >= _CACHE_LIMIT:
                self._seen.clear()
            self._seen[cache_key] = seen
        if seen.expire_time_us is not None and seen.expire_time_us <= time.time() * 1_000_000:
            return None
        return seen.principal

    def _resolve(self, pem: bytes, subject: bytes) -> _Seen:
        expire_time_us: int | None = None
        try:
            if pem:
                cert = x509.load_pem_x509_certificate(pem)
                name = cert.subject
                expire_time_us = int(cert.not_valid_after_utc.timestamp() * 1_000_000)
            else:
                name = parse_subject(subject.decode("utf-8"))
        except ValueError:
            return _Seen(None, None)
        mapped = self._by_subject.get(name)
        if mapped is None:
            common_name = _common_name(name)
            mapped = self._by_common_name.get(common_name) if common_name is not None else None
        if mapped is None:
            return _Seen(None, expire_time_us)
        principal = Principal(
            project_id=mapped.project_id,
            role=mapped.role,
            agent_id=mapped.agent_id,
            subject=SUBJECT_PREFIX + format_subject(name),
            credential_project_id=mapped.project_id,
            expire_time_us=expire_time_us,
        )
        return _Seen(principal, expire_time_us)
