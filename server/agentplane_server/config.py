"""Server settings: every field is a flag of `agentplane serve` and an AGENTPLANE_* variable."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Settings for one server (all its worker processes share them)."""

    model_config = SettingsConfigDict(env_prefix="AGENTPLANE_", extra="ignore")

    listen: str = Field("127.0.0.1:50051", description="gRPC address (host:port; port 0 picks one)")
    data_dir: Path = Field(Path(".agentplane"), description="SQLite file and bootstrap admin key")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL; default sqlite in data_dir. "
        "PostgreSQL: postgresql+psycopg://user@host/db",
    )
    metrics_listen: str = Field("127.0.0.1:9464", description="Prometheus /metrics (empty: off)")
    triton_url: str = Field("127.0.0.1:8001", description="Triton gRPC address for inference")
    workers: int = Field(1, ge=1, le=64, description="processes sharing the port (SO_REUSEPORT)")
    tls_cert: Path | None = Field(None, description="server certificate (PEM); enables TLS")
    tls_key: Path | None = Field(None, description="server private key (PEM)")
    tls_client_ca: Path | None = Field(None, description="CA for client certificates (mTLS)")
    tls_client_principals: Path | None = Field(
        None,
        description="JSON file mapping client certificate subjects to principals "
        '({"CN=billing": {"project_id": "default", "role": "agent", "agent_id": "billing"}})',
    )
    jwt_jwks_url: str | None = Field(None, description="JWKS URL of the identity provider")
    jwt_key_file: Path | None = Field(None, description="JWKS JSON or PEM public key file")
    jwt_issuer: str | None = Field(None, description="required `iss` of JWTs")
    jwt_audience: str | None = Field(None, description="required `aud` of JWTs")
    jwt_project_claim: str = Field("project_id", description="claim naming the project")
    jwt_role_claim: str = Field(
        "role", description="claim naming the role (admin, project_admin, agent, reader)"
    )
    jwt_agent_claim: str = Field("agent_id", description="claim naming the agent (role agent)")
    jwt_leeway_seconds: float = Field(30.0, ge=0, description="clock skew allowed on exp/nbf")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    access_log: bool = Field(True, description="one JSON log line per RPC")
    shutdown_grace: float = Field(10.0, ge=0, description="seconds to drain calls on SIGTERM")
    watch_poll_interval: float = Field(
        0.5, gt=0, description="seconds between database polls of a watch stream (other replicas)"
    )
    otel_traces: bool = Field(
        False,
        description="export server spans with the OTLP exporter configured by the standard "
        "OTEL_EXPORTER_OTLP_* variables",
    )
    max_message_bytes: int = Field(8 * 1024 * 1024, description="largest request accepted")

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'agentplane.db'}"

    @property
    def admin_key_path(self) -> Path:
        return self.data_dir / "admin.key"
