"""The SDK README's first-policy example, run as written against a real server: the default
is DENY, the README's policy turns the quick start's action into ALLOW, and running it twice
is safe."""

from __future__ import annotations

import re
from pathlib import Path

import agentplane

README = Path(__file__).resolve().parents[2] / "sdk-python" / "README.md"


def first_policy_block() -> str:
    text = README.read_text()
    after = text.split("**Governance denies by default.**", 1)[1]
    return re.search(r"```python\n(.*?)```", after, re.S).group(1)  # type: ignore[union-attr]


def test_default_is_deny_and_the_readme_policy_allows(
    server, client, monkeypatch, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    governor = agentplane.Governor(client, agent_id="orders")
    assert governor.check("tool:db.query", "db://prod/orders").allowed is False

    monkeypatch.chdir(tmp_path)  # the example reads .agentplane/admin.key, as beside a server
    (tmp_path / ".agentplane").mkdir()
    (tmp_path / ".agentplane" / "admin.key").write_text(server.admin_key + "\n")
    code = first_policy_block().replace("127.0.0.1:50051", server.address)
    exec(compile(code, str(README), "exec"), {})
    exec(compile(code, str(README), "exec"), {})  # re-running the setup is safe

    decision = agentplane.Governor(client, agent_id="orders").check(
        "tool:db.query", "db://prod/orders"
    )
    assert decision.allowed is True
    listed = client.governance.list_policies(page_size=100)
    assert [p.policy_id for p in listed] == ["orders-read-db"]
