"""The web console in real headless Chromium (Debian's, driven by playwright-core) against a real
server, served by that server's HTTP listener.

People's paths through the console: a reader follows a session written by two agents; a
reviewer approves an agent's governed call while the agent waits; a reader cannot approve; spans
from the stock OpenTelemetry exporter read as a waterfall; feedback filtered to one agent
matches the summary RPC. Each checks that no credential reaches local storage, a URL or the
server log.

CI has 2 cores, so the browser is started once per module and reused (a fresh context per
scenario). Every scenario runs on SQLite; the representative one (a reader signs in and reads a
session across two agents, live) also runs on PostgreSQL. Screenshots of every page are written
to a folder printed at the start (pytest -s shows it), or to AGENTPLANE_SCREENSHOTS.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from serverproc import AGENTPLANE, ROOT, Postgres, ServerProcess, free_port
from test_jwt import AUDIENCE, ISSUER, jwk, mint, rsa_key

import agentplane
from agentplane import Governor, governed
from agentplane.admin.v1 import api_key_pb2
from agentplane.feedback.v1 import feedback_pb2, feedback_service_pb2
from agentplane.governance.v1 import approval_pb2
from agentplane.session.v1 import session_pb2

CHROMIUM = os.environ.get("AGENTPLANE_TEST_CHROMIUM", "/usr/bin/chromium")
CONSOLE = ROOT / "console"
DRIVER = CONSOLE / "e2e" / "driver.mjs"


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- the browser -------------------------------------------------------------------------------


class Browser:
    """console/e2e/driver.mjs in a child process: one Chromium, one JSON command per line."""

    def __init__(self, screenshots: Path) -> None:
        if not Path(CHROMIUM).exists():
            raise RuntimeError(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
        if not (CONSOLE / "dist" / "index.html").exists():
            raise RuntimeError("console/dist is not built: run make setup")
        self.screenshots = screenshots
        self.process = subprocess.Popen(
            ["node", str(DRIVER)],
            cwd=CONSOLE,
            env={**os.environ, "SCREENSHOT_DIR": str(screenshots), "CHROMIUM": CHROMIUM},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put("")

    def run(
        self,
        op: str,
        server: ServerProcess,
        prefix: str = "",
        on_event: Callable[[dict], None] | None = None,
        timeout: float = 90,
        **args: Any,
    ) -> dict:
        """Runs one scenario of the driver against `server`'s console; returns what it saw."""
        assert self.process.stdin
        command = {"op": op, "baseUrl": server.http_url, "prefix": prefix, **args}
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if not line:
                raise RuntimeError(f"the browser driver exited ({self.process.wait()})")
            answer = json.loads(line)
            if "event" in answer:
                if on_event:
                    on_event(answer)
                continue
            if not answer["ok"]:
                raise AssertionError(f"{op} failed in the browser:\n{answer['error']}")
            return answer["result"]

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin
            self.process.stdin.write('{"op": "close"}\n')
            self.process.stdin.flush()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    folder = os.environ.get("AGENTPLANE_SCREENSHOTS") or tempfile.mkdtemp(prefix="console-shots-")
    screenshots = Path(folder)
    print(f"\nconsole screenshots: {screenshots}")
    instance = Browser(screenshots)
    yield instance
    instance.close()
    print(f"\nconsole screenshots: {screenshots}")


# --- servers and what the agents wrote ----------------------------------------------------------


class Fleet:
    """A project on a real server: credentials for people and agents, and what agents wrote."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.admin = agentplane.Client.connect(server.address, api_key=server.admin_key)
        self.reader_key = self.key(api_key_pb2.ROLE_READER)
        self.reviewer_key = self.key(api_key_pb2.ROLE_PROJECT_ADMIN)
        self.clients: list[agentplane.Client] = [self.admin]

    def key(self, role: int, agent_id: str = "") -> str:
        return self.admin.admin.create_api_key(
            role=role, agent_id=agent_id, display_name=agent_id or uid("person")
        ).key

    def agent(self, agent_id: str) -> agentplane.Client:
        """A client with the agent's own key: the server labels its writes with its id."""
        client = agentplane.Client.connect(
            self.server.address, api_key=self.key(api_key_pb2.ROLE_AGENT, agent_id)
        )
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def secrets(self) -> list[str]:
        return [self.server.admin_key, self.reader_key, self.reviewer_key]


def start_server(database_url: str | None, *extra_args: str) -> ServerProcess:
    # An unused Triton address: the models page shows the inference service unavailable.
    triton = ("--triton-url", f"127.0.0.1:{free_port()}")
    return ServerProcess(database_url, extra_args=(*triton, *extra_args))


@pytest.fixture(scope="module")
def jwt_signing_key() -> Any:
    """An identity provider's signing key; the SQLite server trusts its JWKS."""
    return rsa_key()


@pytest.fixture(scope="module")
def sqlite_server(
    jwt_signing_key: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    jwks = tmp_path_factory.mktemp("jwks") / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk(jwt_signing_key, "console")]}))
    args = ("--jwt-key-file", str(jwks), "--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE)
    process = start_server(None, *args)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def postgres_server(postgres: Postgres) -> Iterator[ServerProcess]:
    process = start_server(postgres.create_database())
    yield process
    process.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def either_server(request: pytest.FixtureRequest) -> ServerProcess:
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture(scope="module")
def sqlite_fleet(sqlite_server: ServerProcess) -> Iterator[Fleet]:
    fleet = Fleet(sqlite_server)
    yield fleet
    fleet.close()


def assert_no_credential_leaked(
    browser: Browser, server: ServerProcess, secrets: list[str], storages: list[dict]
) -> None:
    """No secret in local storage, cookies, any URL requested or visited, the page's console, or
    the server's log; and every request that carried one of them went to the server's origin."""
    audit = browser.run("audit", server)
    for storage in storages:
        assert storage["local"] == {}, storage["local"]
        assert storage["cookies"] == ""
        assert not any(secret in storage["url"] for secret in secrets)
    for request in audit["requests"]:
        assert not any(secret in request["url"] for secret in secrets), request["url"]
        if any(secret in request["authorization"] for secret in secrets):
            assert request["url"].startswith(server.http_url + "/"), request["url"]
    for line in audit["consoleLines"]:
        assert not any(secret in line for secret in secrets), line
    log = server.logs()
    assert not any(secret in log for secret in secrets)


# --- the scenarios -----------------------------------------------------------------------------


def test_reader_follows_a_session_across_two_agents(
    browser: Browser, either_server: ServerProcess
) -> None:
    server = either_server
    fleet = Fleet(server)
    router_id, billing_id = uid("router"), uid("billing")
    router, billing = fleet.agent(router_id), fleet.agent(billing_id)
    session_id = uid("support")
    router.sessions.create_session(session_id=session_id, title="Charged twice", user_id="u-42")
    router.sessions.append_messages(
        session_id=session_id,
        messages=[
            {"role": session_pb2.ROLE_USER, "content": "I was charged twice for order 42."},
            {
                "role": session_pb2.ROLE_ASSISTANT,
                "content": "Routing you to billing.",
                "model": "gpt-4o-mini",
                "usage": {"input_tokens": 20, "output_tokens": 8, "cost_micros": 1500},
            },
        ],
    )
    billing.sessions.append_messages(
        session_id=session_id,
        messages=[
            {
                "role": session_pb2.ROLE_ASSISTANT,
                "content": "I refunded the second charge.",
                "model": "gpt-4o",
                "usage": {"input_tokens": 120, "output_tokens": 40, "cost_micros": 42000},
            }
        ],
    )

    fork = router.sessions.fork_session(session_id=session_id, at_sequence=2).session

    def append_live(_event: dict) -> None:
        billing.sessions.append_messages(
            session_id=session_id,
            messages=[{"role": session_pb2.ROLE_ASSISTANT, "content": "Anything else?"}],
        )

    seen = browser.run(
        "session",
        server,
        prefix="postgres-" if server.database_url else "",
        token=fleet.reader_key,
        sessionId=session_id,
        liveContent="Anything else?",
        on_event=append_live,
    )
    assert seen["role"] == "reader"
    assert [(m["agent"], m["content"]) for m in seen["messages"]] == [
        (router_id, "I was charged twice for order 42."),
        (router_id, "Routing you to billing."),
        (billing_id, "I refunded the second charge."),
    ]
    assert seen["liveAgent"] == billing_id  # appended while the page was open, no reload
    assert fork.session_id in seen["forks"]
    costs = {row["agent"]: row["cost"] for row in seen["costs"]}
    assert costs == {router_id: "$0.001500", billing_id: "$0.042000"}
    assert_no_credential_leaked(browser, server, fleet.secrets(), [seen["storage"]])
    fleet.close()


def test_wrong_key_shows_a_clear_message(browser: Browser, sqlite_fleet: Fleet) -> None:
    server = sqlite_fleet.server
    seen = browser.run("badCredential", server, token="apk_wrong_" + uuid.uuid4().hex)
    assert "wrong, revoked or expired" in seen["error"]
    assert seen["storage"]["session"] == {}  # a refused credential is not kept
    # An expired one reads the same.
    expired = sqlite_fleet.admin.admin.create_api_key(
        role=api_key_pb2.ROLE_READER, display_name="short", ttl={"seconds": 1}
    ).key
    time.sleep(1.5)
    seen = browser.run("badCredential", server, token=expired)
    assert "wrong, revoked or expired" in seen["error"]


def test_sign_in_with_a_jwt(browser: Browser, sqlite_fleet: Fleet, jwt_signing_key: Any) -> None:
    server = sqlite_fleet.server
    token = mint(
        jwt_signing_key,
        "console",
        sub="ana@example.com",
        role="reader",
        project_id="default",
        agent_id=None,
    )
    seen = browser.run("whoami", server, token=token)
    assert seen["role"] == "reader"
    assert "ana@example.com" in seen["whoami"]
    assert "Read only" in seen["whoami"]
    assert seen["storage"]["local"] == {}
    expired = mint(
        jwt_signing_key,
        "console",
        role="reader",
        project_id="default",
        agent_id=None,
        exp=int(time.time()) - 3600,
    )
    refused = browser.run("badCredential", server, token=expired)
    assert "wrong, revoked or expired" in refused["error"]
    assert_no_credential_leaked(browser, server, [token, expired], [seen["storage"]])


def test_reviewer_approves_a_waiting_governed_call(browser: Browser, sqlite_fleet: Fleet) -> None:
    fleet, server = sqlite_fleet, sqlite_fleet.server
    agent_id = uid("payments")
    agent = fleet.agent(agent_id)
    fleet.admin.governance.create_policy(
        policy={
            "name": "refunds need a human",
            "effect": "POLICY_EFFECT_REQUIRE_APPROVAL",
            "agents": {"agent_ids": [agent_id]},
            "actions": ["tool:refund"],
            "condition": "context.amount > 10",
        }
    )
    governor = Governor(agent, wait_for_approval=90)
    outcome: dict[str, Any] = {}

    @governed("tool:refund", resource="order://42", context={"amount": 12}, governor=governor)
    def refund() -> str:
        return "refunded"

    def run_agent() -> None:
        try:
            outcome["result"] = refund()
        except Exception as error:  # reported by the assertion below
            outcome["error"] = error

    waiting = threading.Thread(target=run_agent)
    waiting.start()
    try:
        approval = _pending_approval(fleet, agent_id)
        # A reader sees the request but no approve button, and the server refuses a forced call.
        reader = browser.run(
            "readerApproval", server, token=fleet.reader_key, approvalId=approval.approval_id
        )
        assert reader["approveButtons"] == 0 and reader["readOnly"] == 1
        assert reader["forced"]["status"] == 403
        assert reader["forced"]["body"]["code"] == "permission_denied"
        assert waiting.is_alive()  # the agent still waits
        state = fleet.admin.governance.get_approval(approval_id=approval.approval_id).approval
        assert state.state == approval_pb2.APPROVAL_STATE_PENDING

        seen = browser.run(
            "approve", server, token=fleet.reviewer_key, agentId=agent_id, comment="ok, order 42"
        )
        assert seen["approvalId"] == approval.approval_id
        waiting.join(30)
        assert not waiting.is_alive()
        assert outcome == {"result": "refunded"}  # the agent proceeded
        assert seen["detailState"] in ("approved", "approved ")
        resolved = fleet.admin.governance.get_approval(approval_id=approval.approval_id).approval
        assert resolved.state == approval_pb2.APPROVAL_STATE_APPROVED
        assert resolved.comment == "ok, order 42"
    finally:
        waiting.join(1)
        governor.close()
    assert_no_credential_leaked(browser, server, fleet.secrets(), [])


def _pending_approval(fleet: Fleet, agent_id: str) -> approval_pb2.Approval:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pending = list(
            fleet.admin.governance.list_approvals(
                agent_id=agent_id, state=approval_pb2.APPROVAL_STATE_PENDING
            )
        )
        if pending:
            return pending[0]
        time.sleep(0.1)
    raise AssertionError(f"no pending approval for {agent_id}")


def test_exported_spans_read_as_a_waterfall(browser: Browser, sqlite_fleet: Fleet) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind, set_span_in_context

    fleet, server = sqlite_fleet, sqlite_fleet.server
    agent_id = uid("planner")
    key = fleet.key(api_key_pb2.ROLE_AGENT, agent_id)
    exporter = OTLPSpanExporter(
        endpoint=server.address, insecure=True, headers=(("authorization", f"Bearer {key}"),)
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "planner-svc"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("console-test")
    base = time.time_ns()
    ms = 1_000_000
    root = tracer.start_span("handle_request", kind=SpanKind.SERVER, start_time=base)
    context = set_span_in_context(root)
    llm = tracer.start_span(
        "chat gpt-4o",
        context=context,
        kind=SpanKind.CLIENT,
        start_time=base + 10 * ms,
        attributes={
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.output_tokens": 20,
        },
    )
    llm.end(end_time=base + 60 * ms)
    tool = tracer.start_span("tool.search", context=context, start_time=base + 70 * ms)
    tool.end(end_time=base + 90 * ms)
    root.end(end_time=base + 100 * ms)
    provider.shutdown()
    trace_id = format(root.get_span_context().trace_id, "032x")

    seen = browser.run(
        "trace", server, token=fleet.reader_key, traceId=trace_id, open="chat gpt-4o"
    )
    spans = {s["name"]: s for s in seen["spans"]}
    assert [s["name"] for s in seen["spans"]] == ["handle_request", "chat gpt-4o", "tool.search"]
    assert spans["chat gpt-4o"]["indent"] > spans["handle_request"]["indent"]
    assert spans["handle_request"]["left"] == 0 and spans["handle_request"]["width"] == 100
    assert spans["chat gpt-4o"]["left"] == pytest.approx(10, abs=0.5)
    assert spans["chat gpt-4o"]["width"] == pytest.approx(50, abs=0.5)
    assert spans["tool.search"]["left"] == pytest.approx(70, abs=0.5)
    assert "gen_ai.request.model=gpt-4o" in spans["chat gpt-4o"]["attributes"]
    assert "gen_ai.usage.input_tokens=100" in spans["chat gpt-4o"]["attributes"]
    # The opened span shows all its GenAI attributes and the usage the server derived from them.
    assert "gen_ai.usage.output_tokens20" in seen["detail"]
    assert "100 in / 20 out" in seen["detail"]


def test_feedback_filtered_to_one_agent_matches_the_summary(
    browser: Browser, sqlite_fleet: Fleet
) -> None:
    fleet, server = sqlite_fleet, sqlite_fleet.server
    ids = [uid("search"), uid("writer")]
    for agent_id, (up, down) in zip(ids, [(3, 2), (1, 4)], strict=True):
        agent = fleet.agent(agent_id)
        for i in range(up + down):
            agent.feedback.create_feedback(
                rating=feedback_pb2.RATING_THUMBS_UP if i < up else feedback_pb2.RATING_THUMBS_DOWN,
                comment=f"{agent_id} #{i}",
                user_id=f"u-{i}",
                agent_id=agent_id,
            )
    wanted = ids[0]
    seen = browser.run("feedback", server, token=fleet.reader_key, agentId=wanted)
    assert f"agent={wanted}" in seen["url"]  # the filter is in the shareable URL
    assert seen["rows"] == [wanted] * 5
    assert [chart["agent"] for chart in seen["charts"]] == [wanted]
    assert seen["charts"][0]["canvases"] >= 1

    # The chart's data is the summary RPC's answer for that agent, bucket for bucket.
    shown = seen["charts"][0]["buckets"]
    now = datetime.now(UTC)
    summary = fleet.admin.feedback.summarize_feedback(
        time_range={"start_time": _at(now - timedelta(days=30)), "end_time": _at(now)},
        window=feedback_service_pb2.WINDOW_DAY,
        agent_ids=[wanted],
    )
    expected = [
        {
            "start": str(b.window_start_time.seconds),
            "up": str(b.up_count),
            "down": str(b.down_count),
            "count": str(b.feedback_count),
        }
        for b in sorted(summary.buckets, key=lambda b: b.window_start_time.seconds)
    ]
    assert shown == expected
    assert sum(int(b["up"]) for b in shown) == 3 and sum(int(b["down"]) for b in shown) == 2


def _at(when: datetime) -> Any:
    from google.protobuf import timestamp_pb2

    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


def test_long_lists_page_as_you_scroll(browser: Browser, sqlite_fleet: Fleet) -> None:
    fleet, server = sqlite_fleet, sqlite_fleet.server
    agent_id = uid("busy")
    agent = fleet.agent(agent_id)
    for i in range(57):
        agent.feedback.create_feedback(
            rating=feedback_pb2.RATING_THUMBS_UP, agent_id=agent_id, comment=f"#{i}"
        )
    seen = browser.run(
        "scrollFeedback", server, token=fleet.reader_key, agentId=agent_id, expected=57
    )
    assert seen == {"first": 50, "all": 57}  # pages of 50: the second came on scrolling


def test_admin_chooses_a_project(browser: Browser, sqlite_fleet: Fleet) -> None:
    fleet, server = sqlite_fleet, sqlite_fleet.server
    project_id = uid("team")
    fleet.admin.admin.create_project(project_id=project_id, display_name="Team")
    other = fleet.admin.with_options(project=project_id)
    session_id = other.sessions.create_session(title="in the other project").session.session_id
    seen = browser.run(
        "adminProject", server, token=server.admin_key, projectId=project_id, sessionId=session_id
    )
    assert seen["role"] == "admin"
    assert seen["rows"] == 1  # only the chosen project's sessions (x-agentplane-project)
    assert seen["chosen"] == project_id  # kept across a reload, in this tab's session storage
    assert seen["storage"]["local"] == {}
    assert_no_credential_leaked(browser, server, fleet.secrets(), [seen["storage"]])


def test_every_page_renders(browser: Browser, sqlite_fleet: Fleet) -> None:
    """The remaining pages render without an error, for the screenshots: the agents (live: one
    registered while the page is open appears), an agent's trust history, the decision log,
    policies and models."""
    fleet, server = sqlite_fleet, sqlite_fleet.server
    agent_id = uid("helpdesk")
    agent = fleet.agent(agent_id)
    card = {
        "name": "Helpdesk",
        "version": "1.0.0",
        "description": "Answers support questions",
        "framework": "custom",
        "skills": [{"id": "answer", "name": "Answer", "tags": ["support"]}],
    }
    agent.registry.register_agent(agent_id=agent_id, card=card)
    for outcome in ("EXECUTION_OUTCOME_SUCCESS", "EXECUTION_OUTCOME_FAILURE"):
        agent.governance.report_execution(agent_id=agent_id, action="tool:lookup", outcome=outcome)
    policy = fleet.admin.governance.create_policy(
        policy={
            "name": "lookups in business hours",
            "effect": "POLICY_EFFECT_DENY",
            "agents": {"agent_ids": [agent_id]},
            "actions": ["tool:lookup"],
            "condition": "context.hour < 8 || context.hour > 18",
        }
    ).policy
    agent.governance.check_permission(agent_id=agent_id, action="tool:lookup", context={"hour": 22})
    late_id = uid("latecomer")
    late = fleet.agent(late_id)

    def register_late(_event: dict) -> None:
        late.registry.register_agent(agent_id=late_id, card={**card, "name": "Latecomer"})

    seen = browser.run(
        "tour",
        server,
        token=fleet.reviewer_key,
        agentId=agent_id,
        lateAgentId=late_id,
        disablePolicyId=policy.policy_id,
        on_event=register_late,
    )
    updated = fleet.admin.governance.get_policy(policy_id=policy.policy_id).policy
    assert updated.HasField("enabled") and not updated.enabled  # turned off from the page
    for name, page in seen["pages"].items():
        errors = page["errors"]
        if name == "models":  # no Triton in this test: the page says the service is unavailable
            assert len(errors) == 1 and "unavailable" in errors[0].lower(), errors
        else:
            assert errors == [], (name, errors)
    assert seen["storage"]["local"] == {}


def test_console_files_and_deep_links(sqlite_server: ServerProcess) -> None:
    """The HTTP listener serves the console at / with deep links, and never a page for an RPC
    path or a missing asset."""
    base = sqlite_server.http_url

    def get(path: str, method: str = "GET") -> tuple[int, str, dict]:
        request = urllib.request.Request(base + path, method=method)
        try:
            with urllib.request.urlopen(request) as reply:
                return reply.status, reply.read().decode(errors="replace"), dict(reply.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace"), dict(error.headers)

    status, body, headers = get("/sessions/support-42")
    assert status == 200 and '<div id="app">' in body
    assert headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in headers["content-security-policy"]
    assert headers["referrer-policy"] == "no-referrer"
    index = (CONSOLE / "dist" / "index.html").read_text()
    script = index.split('src="', 1)[1].split('"', 1)[0]
    status, _, headers = get(script)
    assert status == 200 and "javascript" in headers["content-type"]
    assert "immutable" in headers["cache-control"]
    for path in (
        "/assets/missing.js",
        "/favicon.ico",
        "/agentplane.session.v1.SessionService/NoSuchMethod",
    ):
        assert get(path)[0] == 404, path
    assert get("/sessions", method="POST")[0] == 404
    assert shutil.which("node")


def test_a_console_dir_without_a_build_is_refused_at_start(tmp_path: Path) -> None:
    args = ["--data-dir", str(tmp_path), "--console-dir", str(tmp_path / "nothing-built")]
    ports = ["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--metrics-listen", ""]
    result = subprocess.run(
        [str(AGENTPLANE), "serve", *args, *ports], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "holds no index.html (build it: make console)" in result.stderr
    assert "Traceback" not in result.stderr
