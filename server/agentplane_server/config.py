"""Server settings: every field is a flag of `agentplane serve` and an AGENTPLANE_* variable."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Settings for one server (all its worker processes share them)."""

    model_config = SettingsConfigDict(env_prefix="AGENTPLANE_", extra="ignore")

    listen: str = Field("127.0.0.1:50051", description="gRPC address (host:port; port 0 picks one)")
    http_listen: str = Field(
        "127.0.0.1:8080",
        description="HTTP address for the Connect protocol and gRPC-Web (host:port; port 0 "
        "picks one; empty: no HTTP listener)",
    )
    http_cors_origins: str = Field(
        "",
        description="comma-separated browser origins allowed to call the HTTP listener "
        "(e.g. https://console.example.com); empty: none",
    )
    console_dir: str = Field(
        "",
        description="built web console served at / on the HTTP listener (default: console/dist "
        "of this checkout, when built; 'off': no console)",
    )
    data_dir: Path = Field(Path(".agentplane"), description="SQLite file and bootstrap admin key")
    bootstrap_admin_key: Path | None = Field(
        None,
        description="file holding the admin key the first start registers (e.g. a mounted "
        "Secret), instead of minting one into data_dir/admin.key",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL; default sqlite in data_dir. "
        "PostgreSQL: postgresql+psycopg://user@host/db",
    )
    database_timeout: float = Field(
        5.0,
        gt=0,
        description="seconds any wait on the database may take (SQLite busy timeout; "
        "PostgreSQL connect, pool and statement timeouts) before the call answers UNAVAILABLE",
    )
    database_startup_timeout: float = Field(
        60.0,
        ge=0,
        description="seconds `serve` keeps retrying (with backoff) while the database cannot "
        "be reached at start, before it exits",
    )
    database_probe_interval: float = Field(
        2.0,
        gt=0,
        description="seconds between database probes; storage-backed services report "
        "NOT_SERVING in health while the database is unreachable",
    )
    metrics_listen: str = Field("127.0.0.1:9464", description="Prometheus /metrics (empty: off)")
    triton_url: str = Field("127.0.0.1:8001", description="Triton gRPC address for inference")
    triton_timeout: float = Field(
        60.0, gt=0, description="seconds a Triton call may take when the caller set no deadline"
    )
    triton_health_interval: float = Field(
        1.0, gt=0, description="seconds between Triton liveness checks (inference health status)"
    )
    inference_usage_retention_days: int = Field(
        400, ge=0, description="days inference usage records are kept (0: forever)"
    )
    workers: int = Field(1, ge=1, le=64, description="processes sharing the port (SO_REUSEPORT)")
    tls_cert: Path | None = Field(None, description="server certificate (PEM); enables TLS")
    tls_key: Path | None = Field(None, description="server private key (PEM)")
    tls_client_ca: Path | None = Field(None, description="CA for client certificates (mTLS)")
    tls_client_principals: Path | None = Field(
        None,
        description="JSON file mapping client certificate subjects to principals "
        '({"CN=billing": {"project_id": "default", "role": "agent", "agent_id": "billing"}})',
    )
    signing_keys_file: Path | None = Field(
        None,
        description="file of HMAC keys for feedback and page tokens, one a line: the first "
        "signs, all verify (rotation); default: random keys kept in the database",
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
    registry_removal_grace: float = Field(
        300.0, gt=0, description="seconds a STALE agent is kept before it is removed"
    )
    registry_housekeeping_interval: float = Field(
        1.0, gt=0, description="seconds between lease expiry runs (marks STALE, removes)"
    )
    governance_poll_interval: float = Field(
        0.2,
        gt=0,
        description="seconds between checks for policy, trust and registry changes made "
        "through other replicas (also the budget spend sync)",
    )
    governance_housekeeping_interval: float = Field(
        10.0, gt=0, description="seconds between approval expiry and trust decay runs"
    )
    decision_log_capacity: int = Field(
        100_000,
        ge=1,
        description="decisions queued for the decision log before checks are refused "
        "with RESOURCE_EXHAUSTED",
    )
    decision_log_batch: int = Field(1000, ge=1, description="decision log rows per insert")
    decision_log_flush_interval: float = Field(
        0.1, gt=0, description="seconds a decision log batch may wait to fill"
    )
    decision_log_shutdown_deadline: float = Field(
        5.0,
        ge=0,
        description="seconds after the shutdown grace to keep writing queued decisions to the "
        "database; what remains stays in the decision journal for the next start. The process "
        "exits at most this long plus 2 s after the grace, even with the database hung",
    )
    decision_journal_sync_interval: float = Field(
        0.05,
        gt=0,
        description="seconds between fdatasyncs of the decision journal (group commit): what "
        "a machine crash can lose at most; a process crash loses nothing",
    )
    otel_traces: bool = Field(
        False,
        description="export server spans with the OTLP exporter configured by the standard "
        "OTEL_EXPORTER_OTLP_* variables",
    )
    max_message_bytes: int = Field(8 * 1024 * 1024, description="largest request accepted")
    otlp_max_inflight_spans: int = Field(
        16384,
        ge=1,
        description="spans one process holds between receiving an OTLP Export and storing it; "
        "beyond it Export answers RESOURCE_EXHAUSTED with RetryInfo (backpressure)",
    )
    otlp_retry_after: float = Field(
        1.0, gt=0, description="retry delay (seconds) OTLP exporters are given under backpressure"
    )
    retention_interval: float = Field(
        600.0,
        gt=0,
        description="seconds between runs of the retention job (per-project retention of "
        "sessions, traces and feedback)",
    )

    @property
    def cors_origins(self) -> list[str]:
        return [o.strip() for o in self.http_cors_origins.split(",") if o.strip()]

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'agentplane.db'}"

    @property
    def admin_key_path(self) -> Path:
        return self.data_dir / "admin.key"
