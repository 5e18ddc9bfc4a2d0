"""TLS and mutual TLS for `agentplane serve`, and client certificates as credentials.

A throwaway PKI is made with `cryptography` per module: a client CA that signs the server
certificate (SAN 127.0.0.1 and localhost) and the client certificates, and a second, unrelated CA.
Servers are real `agentplane serve` processes from `make_server`; since ServerProcess waits for
readiness over a plaintext channel, the `tls` fixture swaps in a TLS readiness check for the test.
"""

from __future__ import annotations

import asyncio
import datetime
import http.client
import ipaddress
import json
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rpcutil import expect_error
from serverproc import ServerProcess

from agentplane.admin.v1 import admin_service_pb2, admin_service_pb2_grpc, api_key_pb2
from agentplane.session.v1 import session_service_pb2, session_service_pb2_grpc
from agentplane_server.auth.mtls import ClientCertificates, ClientPrincipalsError
from agentplane_server.config import Settings
from agentplane_server.context import Role

# --- a throwaway PKI ----------------------------------------------------------------------


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(*attributes: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path
    key_path: Path

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _pem_key(self.key)


class CA:
    def __init__(self, directory: Path, common_name: str) -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = _name((NameOID.COMMON_NAME, common_name))
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.path = directory / f"{common_name.replace(' ', '-')}.pem"
        self.path.write_bytes(self.pem)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        file_name: str,
        subject: x509.Name,
        *,
        server: bool = False,
        sans: list[x509.GeneralName] | None = None,
        not_after: datetime.datetime | None = None,
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=2))
            .not_valid_after(not_after or now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_path, key_path = (
            self.directory / f"{file_name}.pem",
            self.directory / f"{file_name}.key",
        )
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(_pem_key(key))
        key_path.chmod(0o600)
        return Issued(cert, key, cert_path, key_path)


@dataclass
class PKI:
    directory: Path
    ca: CA
    other_ca: CA
    server: Issued
    probe: Issued  # an unmapped client certificate, for readiness checks
    billing: Issued  # CN=billing-agent, mapped by CN to an agent
    dashboard: Issued  # CN=dashboard, mapped by CN to a reader
    ops: Issued  # CN=ops,OU=platform,O=Acme\, Inc, mapped by full subject to a project admin
    ops_elsewhere: Issued  # CN=ops,OU=elsewhere,O=Acme\, Inc: not mapped
    stranger: Issued  # CN=billing-agent, but issued by other_ca

    def write_principals(self, mapping: dict[str, Any], name: str = "principals.json") -> Path:
        path = self.directory / name
        path.write_text(json.dumps(mapping))
        return path


PRINCIPALS = {
    "CN=billing-agent": {"project_id": "default", "role": "agent", "agent_id": "billing"},
    "CN=dashboard": {"project_id": "default", "role": "reader"},
    "CN=ops,OU=platform,O=Acme\\, Inc": {"project_id": "default", "role": "project_admin"},
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    directory = tmp_path_factory.mktemp("pki")
    ca, other_ca = CA(directory, "agentplane test ca"), CA(directory, "other ca")

    def client(
        issuer: CA, file_name: str, *attributes: tuple[x509.ObjectIdentifier, str]
    ) -> Issued:
        return issuer.issue(file_name, _name(*attributes))

    acme = ((NameOID.ORGANIZATION_NAME, "Acme, Inc"),)
    return PKI(
        directory=directory,
        ca=ca,
        other_ca=other_ca,
        server=ca.issue(
            "server",
            _name((NameOID.COMMON_NAME, "agentplane")),
            server=True,
            sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        ),
        probe=client(ca, "probe", (NameOID.COMMON_NAME, "readiness-probe")),
        billing=client(ca, "billing", (NameOID.COMMON_NAME, "billing-agent")),
        dashboard=client(ca, "dashboard", (NameOID.COMMON_NAME, "dashboard")),
        ops=client(
            ca,
            "ops",
            *acme,
            (NameOID.ORGANIZATIONAL_UNIT_NAME, "platform"),
            (NameOID.COMMON_NAME, "ops"),
        ),
        ops_elsewhere=client(
            ca,
            "ops-elsewhere",
            *acme,
            (NameOID.ORGANIZATIONAL_UNIT_NAME, "elsewhere"),
            (NameOID.COMMON_NAME, "ops"),
        ),
        stranger=client(other_ca, "stranger", (NameOID.COMMON_NAME, "billing-agent")),
    )


# --- TLS servers and channels -------------------------------------------------------------


def tls_channel(
    address: str,
    root: bytes,
    client: Issued | None = None,
    options: tuple[tuple[str, Any], ...] = (),
) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=root,
        private_key=client.key_pem if client else None,
        certificate_chain=client.cert_pem if client else None,
    )
    return grpc.secure_channel(address, credentials, options=options)


def wait_ready_tls(server: ServerProcess, pki: PKI, timeout: float = 60) -> None:
    """ServerProcess.wait_ready over TLS (presenting the probe certificate, for mTLS servers)."""
    deadline = time.monotonic() + timeout
    with tls_channel(server.address, pki.ca.pem, pki.probe) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{server.logs()}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise TimeoutError(f"TLS server not ready in {timeout}s:\n{server.logs()}")


@pytest.fixture
def tls(  # type: ignore[no-untyped-def]
    make_server, pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., ServerProcess]]:
    """tls(mtls=False, principals=None) -> a TLS server; channels made by the test are closed."""
    monkeypatch.setattr(
        ServerProcess, "wait_ready", lambda self, timeout=60: wait_ready_tls(self, pki, timeout)
    )

    def start(mtls: bool = False, principals: dict[str, Any] | Path | None = None) -> ServerProcess:
        args = ["--tls-cert", str(pki.server.cert_path), "--tls-key", str(pki.server.key_path)]
        if mtls:
            args += ["--tls-client-ca", str(pki.ca.path)]
        if principals is not None:
            path = principals if isinstance(principals, Path) else pki.write_principals(principals)
            args += ["--tls-client-principals", str(path)]
        return make_server(extra_args=tuple(args))

    yield start


def server_info(
    channel: grpc.Channel, metadata: Any = ()
) -> admin_service_pb2.GetServerInfoResponse:
    admin = admin_service_pb2_grpc.AdminServiceStub(channel)
    return admin.GetServerInfo(
        admin_service_pb2.GetServerInfoRequest(), metadata=metadata, timeout=10
    )


# --- TLS ------------------------------------------------------------------------------------


def test_tls_server_accepts_tls_clients_and_refuses_plaintext(tls, pki: PKI) -> None:  # type: ignore[no-untyped-def]
    server = tls()
    for host in ("127.0.0.1", "localhost"):  # both are in the server certificate's SANs
        with tls_channel(f"{host}:{server.port}", pki.ca.pem) as channel:
            info = server_info(channel, server.metadata())
            assert info.principal.role == api_key_pb2.ROLE_ADMIN
            assert info.principal.key_id
            assert "tls" in info.features
            # TLS alone identifies nobody: without the API key the call is refused.
            expect_error(grpc.StatusCode.UNAUTHENTICATED, server_info, channel)
    with grpc.insecure_channel(server.address) as plaintext:
        expect_error(grpc.StatusCode.UNAVAILABLE, server_info, plaintext, server.metadata())
    # A client that does not trust the server's CA refuses the server.
    with tls_channel(server.address, pki.other_ca.pem) as untrusting:
        expect_error(grpc.StatusCode.UNAVAILABLE, server_info, untrusting, server.metadata())


def test_mtls_requires_a_client_certificate_from_the_client_ca(tls, pki: PKI) -> None:  # type: ignore[no-untyped-def]
    server = tls(mtls=True)
    with tls_channel(server.address, pki.ca.pem) as no_certificate:
        expect_error(grpc.StatusCode.UNAVAILABLE, server_info, no_certificate, server.metadata())
    with tls_channel(server.address, pki.ca.pem, pki.stranger) as other_ca:
        expect_error(grpc.StatusCode.UNAVAILABLE, server_info, other_ca, server.metadata())
    with grpc.insecure_channel(server.address) as plaintext:
        expect_error(grpc.StatusCode.UNAVAILABLE, server_info, plaintext, server.metadata())
    # A certificate from the client CA gets through the handshake; without a mapping for its
    # subject it still needs an API key.
    with tls_channel(server.address, pki.ca.pem, pki.billing) as channel:
        assert server_info(channel, server.metadata()).principal.role == api_key_pb2.ROLE_ADMIN
        expect_error(grpc.StatusCode.UNAUTHENTICATED, server_info, channel)


# --- client certificates as credentials (needs ClientCertificates wired into auth) ------------


def test_mapped_client_certificate_is_a_credential(tls, pki: PKI) -> None:  # type: ignore[no-untyped-def]
    server = tls(mtls=True, principals=PRINCIPALS)
    with tls_channel(server.address, pki.ca.pem, pki.billing) as channel:
        info = server_info(channel)  # no authorization header
        assert info.principal.role == api_key_pb2.ROLE_AGENT
        assert info.principal.agent_id == "billing"
        assert info.principal.project_id == "default"
        assert info.principal.credential_project_id == "default"
        assert info.principal.subject == "cert:CN=billing-agent"
        assert not info.principal.key_id
        expire_time = info.principal.expire_time.ToDatetime(datetime.UTC)
        assert expire_time == pki.billing.cert.not_valid_after_utc
        # An authorization header, when sent, is the credential.
        assert server_info(channel, server.metadata()).principal.role == api_key_pb2.ROLE_ADMIN

    with tls_channel(server.address, pki.ca.pem, pki.dashboard) as channel:
        assert server_info(channel).principal.role == api_key_pb2.ROLE_READER
        sessions = session_service_pb2_grpc.SessionServiceStub(channel)
        expect_error(
            grpc.StatusCode.PERMISSION_DENIED,
            sessions.CreateSession,
            session_service_pb2.CreateSessionRequest(),
            timeout=10,
        )

    with tls_channel(server.address, pki.ca.pem, pki.ops) as channel:  # full-subject key
        info = server_info(channel)
        assert info.principal.role == api_key_pb2.ROLE_PROJECT_ADMIN
        assert info.principal.subject == "cert:CN=ops,OU=platform,O=Acme\\, Inc"

    # Same CN, another OU: a full-subject key matches only that exact subject.
    for unmapped in (pki.ops_elsewhere, pki.probe):
        with tls_channel(server.address, pki.ca.pem, unmapped) as channel:
            error = expect_error(grpc.StatusCode.UNAUTHENTICATED, server_info, channel)
            assert error.reason == "ERROR_REASON_UNAUTHENTICATED"
            assert server_info(channel, server.metadata()).principal.role == api_key_pb2.ROLE_ADMIN


def test_bad_principals_file_stops_the_server_at_startup(tls, pki: PKI) -> None:  # type: ignore[no-untyped-def]
    bad = pki.write_principals(
        {"CN=billing-agent": {"project_id": "default", "role": "agent"}}, "bad.json"
    )
    with pytest.raises(RuntimeError, match="server exited early") as exited:
        tls(mtls=True, principals=bad)
    assert "role agent needs an agent_id" in str(exited.value)
    assert "CN=billing-agent" in str(exited.value)


# --- the mapping itself (no server) ---------------------------------------------------------


def _context(issued: Issued, **extra: list[bytes]) -> dict[str, list[bytes]]:
    """The auth_context grpc.aio gives a servicer on an mTLS call (the parts that matter)."""
    return {
        "transport_security_type": [b"ssl"],
        "x509_pem_cert": [issued.cert_pem],
        "x509_subject": [issued.cert.subject.rfc4514_string().encode()],
        **extra,
    }


def test_real_mtls_auth_context_maps_to_principal(pki: PKI) -> None:
    """Capture auth_context() from a real grpc.aio mTLS call and map it."""
    certificates = ClientCertificates.from_mapping(PRINCIPALS)

    async def capture(client: Issued) -> dict[str, list[bytes]]:
        seen: dict[str, list[bytes]] = {}

        async def handler(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            seen.update(context.auth_context())
            return b""

        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    "probe.Probe", {"Call": grpc.unary_unary_rpc_method_handler(handler)}
                )
            ]
        )
        credentials = grpc.ssl_server_credentials(
            [(pki.server.key_pem, pki.server.cert_pem)],
            root_certificates=pki.ca.pem,
            require_client_auth=True,
        )
        port = server.add_secure_port("127.0.0.1:0", credentials)
        await server.start()
        try:
            channel_credentials = grpc.ssl_channel_credentials(
                pki.ca.pem, client.key_pem, client.cert_pem
            )
            async with grpc.aio.secure_channel(f"127.0.0.1:{port}", channel_credentials) as ch:
                await ch.unary_unary("/probe.Probe/Call")(b"", timeout=10)
        finally:
            await server.stop(None)
        return seen

    context = asyncio.run(capture(pki.ops))
    assert context["transport_security_type"] == [b"ssl"]
    assert context["x509_subject"] == [b"CN=ops,OU=platform,O=Acme\\, Inc"]
    assert context["x509_common_name"] == [b"ops"]
    assert x509.load_pem_x509_certificate(context["x509_pem_cert"][0]) == pki.ops.cert
    principal = certificates.principal_for(context)
    assert principal is not None
    assert (principal.project_id, principal.role, principal.agent_id) == (
        "default",
        Role.PROJECT_ADMIN,
        "",
    )
    assert principal.subject == "cert:CN=ops,OU=platform,O=Acme\\, Inc"
    assert principal.credential_project_id == "default"


def test_mapping_by_common_name_and_full_subject(pki: PKI, tmp_path: Path) -> None:
    certificates = ClientCertificates.from_mapping(PRINCIPALS)
    billing = certificates.principal_for(_context(pki.billing))
    assert billing is not None
    assert (billing.role, billing.agent_id, billing.subject) == (
        Role.AGENT,
        "billing",
        "cert:CN=billing-agent",
    )
    assert billing.expire_time_us == int(pki.billing.cert.not_valid_after_utc.timestamp() * 1e6)
    assert certificates.principal_for(_context(pki.ops_elsewhere)) is None
    assert certificates.principal_for(_context(pki.probe)) is None
    # Not TLS, or TLS without a client certificate: nobody.
    assert certificates.principal_for({}) is None
    assert certificates.principal_for({"transport_security_type": [b"insecure"]}) is None
    assert certificates.principal_for({"transport_security_type": [b"ssl"]}) is None
    insecure = {**_context(pki.billing), "transport_security_type": [b"insecure"]}
    assert certificates.principal_for(insecure) is None
    # Without the PEM, the x509_subject string grpc gives (OpenSSL escaping) is used.
    by_subject = {
        "transport_security_type": [b"ssl"],
        "x509_subject": [b"CN=ops,OU=platform,O=Acme\\2C Inc"],
    }
    assert certificates.principal_for(by_subject).role is Role.PROJECT_ADMIN  # type: ignore[union-attr]

    # A subject with two common names never matches a CN key (which one would it be?).
    two = pki.ca.issue(
        "two-cns", _name((NameOID.COMMON_NAME, "billing-agent"), (NameOID.COMMON_NAME, "dashboard"))
    )
    assert certificates.principal_for(_context(two)) is None
    # Non-ASCII and escaped characters round-trip through the file.
    odd = pki.ca.issue(
        "odd", _name((NameOID.ORGANIZATION_NAME, "Zürich"), (NameOID.COMMON_NAME, 'agént+1="x"'))
    )
    mapped = ClientCertificates.from_mapping(
        {'CN=agént\\+1=\\"x\\",O=Z\\C3\\BCrich': {"project_id": "p1", "role": "reader"}}
    )
    assert mapped.principal_for(_context(odd)).project_id == "p1"  # type: ignore[union-attr]


def test_expired_certificate_is_nobody(pki: PKI) -> None:
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    expired = pki.ca.issue("expired", _name((NameOID.COMMON_NAME, "billing-agent")), not_after=past)
    certificates = ClientCertificates.from_mapping(PRINCIPALS)
    assert certificates.principal_for(_context(expired)) is None


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"CN=a": {"project_id": "default", "role": "owner"}}, "unknown role 'owner'"),
        ({"CN=a": {"project_id": "default", "role": "agent"}}, "role agent needs an agent_id"),
        (
            {"CN=a": {"project_id": "default", "role": "reader", "agent_id": "x"}},
            "agent_id is only for role agent",
        ),
        ({"CN=a": {"role": "reader"}}, "project_id is required"),
        ({"CN=a": {"project_id": "no spaces", "role": "reader"}}, "project_id is required"),
        ({"CN=a": {"project_id": "default"}}, "role is required"),
        (
            {"CN=a": {"project_id": "default", "role": "reader", "agentid": "x"}},
            "unknown field(s) agentid",
        ),
        ({"CN=a": "reader"}, "must be an object"),
        ({"billing-agent": {"project_id": "default", "role": "reader"}}, "not an RFC 4514"),
        ({"cn=a": {"project_id": "default", "role": "reader"}}, "not an RFC 4514"),
        ({"": {"project_id": "default", "role": "reader"}}, "the subject is empty"),
        (
            {
                "O=Acme\\, Inc": {"project_id": "default", "role": "reader"},
                "O=Acme\\2C Inc": {"project_id": "default", "role": "reader"},
            },
            "are the same subject",
        ),
        ({}, "non-empty JSON object"),
        ([], "non-empty JSON object"),
    ],
)
def test_principals_file_is_validated(mapping: Any, message: str) -> None:
    with pytest.raises(ClientPrincipalsError) as error:
        ClientCertificates.from_mapping(mapping, source="principals.json")
    assert message in str(error.value)
    assert str(error.value).startswith("principals.json")


def test_from_settings(tmp_path: Path, pki: PKI) -> None:
    assert ClientCertificates.from_settings(Settings()) is None
    path = tmp_path / "principals.json"
    path.write_text(json.dumps(PRINCIPALS))
    tls = {"tls_cert": pki.server.cert_path, "tls_key": pki.server.key_path}
    with pytest.raises(
        ClientPrincipalsError, match="needs --tls-cert, --tls-key and --tls-client-ca"
    ):
        ClientCertificates.from_settings(Settings(**tls, tls_client_principals=path))
    settings = Settings(**tls, tls_client_ca=pki.ca.path, tls_client_principals=path)
    certificates = ClientCertificates.from_settings(settings)
    assert certificates is not None
    assert certificates.principal_for(_context(pki.dashboard)).role is Role.READER  # type: ignore[union-attr]
    path.write_text('{"CN=a": {"project_id": "default", "role": "reader"}, "CN=a": {}}')
    with pytest.raises(ClientPrincipalsError, match="appears twice"):
        ClientCertificates.from_settings(settings)
    missing = settings.model_copy(update={"tls_client_principals": tmp_path / "missing.json"})
    with pytest.raises(ClientPrincipalsError, match=r"missing\.json: cannot read"):
        ClientCertificates.from_settings(missing)
    path.write_text("{not json")
    with pytest.raises(ClientPrincipalsError, match="not valid JSON"):
        ClientCertificates.from_settings(settings)


# --- the HTTP listener (Connect) with the same certificate flags ----------------------------


def _https_server_info(
    server: ServerProcess, pki: PKI, client: Issued | None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    context = ssl.create_default_context(cafile=str(pki.ca.path))
    if client is not None:
        context.load_cert_chain(str(client.cert_path), str(client.key_path))
    connection = http.client.HTTPSConnection(server.http_address, timeout=10, context=context)
    try:
        connection.request(
            "POST",
            "/agentplane.admin.v1.AdminService/GetServerInfo",
            body=b"{}",
            headers={"content-type": "application/json", **(headers or {})},
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_http_listener_serves_tls_and_maps_client_certificates(tls, pki: PKI) -> None:  # type: ignore[no-untyped-def]
    server = tls(mtls=True, principals=PRINCIPALS)
    assert server.http_url.startswith("https://")
    # A mapped client certificate is the credential over HTTP too, through the same pipeline.
    status, info = _https_server_info(server, pki, pki.billing)
    assert status == 200, info
    assert info["principal"]["role"] == "ROLE_AGENT"
    assert info["principal"]["agentId"] == "billing"
    assert info["principal"]["subject"] == "cert:CN=billing-agent"
    # An unmapped certificate gets through the handshake and still needs an API key.
    status, error = _https_server_info(server, pki, pki.probe)
    assert status == 401 and error["code"] == "unauthenticated"
    status, info = _https_server_info(
        server, pki, pki.probe, {"authorization": f"Bearer {server.admin_key}"}
    )
    assert status == 200 and info["principal"]["role"] == "ROLE_ADMIN"
    # No client certificate, or one from another CA: refused at the TLS layer, before any call.
    for client in (None, pki.stranger):
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            _https_server_info(server, pki, client, {"authorization": f"Bearer {server.admin_key}"})
    # Plaintext HTTP to the TLS listener gets no answer.
    plain = http.client.HTTPConnection(server.http_address, timeout=10)
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        plain.request("POST", "/agentplane.admin.v1.AdminService/GetServerInfo", body=b"{}")
        plain.getresponse().read()
    plain.close()
