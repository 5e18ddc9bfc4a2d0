"""The pure parts of governance, in-process: the decision function (with hypothesis property
tests), globs, CEL conditions, detectors, the trust model, and record_feedback_trust against a
real database on both backends."""

from __future__ import annotations

import asyncio
import random
import tempfile
from pathlib import Path

import pytest
from conftest import database_url_for
from hypothesis import given, settings
from hypothesis import strategies as st

from agentplane.governance.v1 import decision_pb2, policy_pb2, trust_pb2
from agentplane_server.governance import detectors, store, trust
from agentplane_server.governance.conditions import ConditionError, compile_condition
from agentplane_server.governance.evaluate import (
    AgentView,
    CompiledPolicy,
    Subject,
    decide,
    trust_tier,
)
from agentplane_server.governance.globs import glob_match
from agentplane_server.storage.db import Database, migrate

ALLOW = policy_pb2.POLICY_EFFECT_ALLOW
DENY = policy_pb2.POLICY_EFFECT_DENY
REVIEW = policy_pb2.POLICY_EFFECT_REQUIRE_APPROVAL


def policy(policy_id: str, effect: int, priority: int = 0, **fields) -> CompiledPolicy:  # type: ignore[no-untyped-def]
    return CompiledPolicy(
        policy_pb2.Policy(policy_id=policy_id, effect=effect, priority=priority, **fields)
    )


def subject(action: str = "tool:db.query", resource: str = "db://prod/users", **kw) -> Subject:  # type: ignore[no-untyped-def]
    agent = kw.pop("agent", AgentView("billing:1", True, "ACTIVE", {"team": "billing"}))
    return Subject(agent=agent, action=action, resource=resource, **kw)


# -- the decision ------------------------------------------------------------------------------

policies_strategy = st.lists(
    st.tuples(
        st.sampled_from([ALLOW, DENY, REVIEW]),
        st.integers(-3, 3),
        st.sampled_from([[], ["tool:*"], ["tool:db.*"], ["tool:http.*"], ["**"]]),
        st.sampled_from([[], ["db://prod/**"], ["db://staging/*"]]),
        st.sampled_from([0.0, 0.4, 0.9]),
        st.sampled_from(["", "context.env == 'prod'", "context.missing == 1", "trust.score > 0.3"]),
        st.booleans(),
    ),
    min_size=0,
    max_size=12,
)


def build(specs: list) -> list[CompiledPolicy]:  # type: ignore[type-arg]
    return [
        CompiledPolicy(
            policy_pb2.Policy(
                policy_id=f"p{i:02d}",
                effect=effect,
                priority=priority,
                actions=actions,
                resources=resources,
                min_trust_score=min_trust,
                condition=condition,
                enabled=enabled,
            )
        )
        for i, (effect, priority, actions, resources, min_trust, condition, enabled) in enumerate(
            specs
        )
    ]


def context(**values):  # type: ignore[no-untyped-def]
    from google.protobuf import struct_pb2

    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


@settings(max_examples=300, deadline=None)
@given(specs=policies_strategy, seed=st.integers(0, 2**32 - 1), score=st.floats(0, 1))
def test_decision_does_not_depend_on_policy_order(specs, seed, score) -> None:  # type: ignore[no-untyped-def]
    policies = build(specs)
    shuffled = list(policies)
    random.Random(seed).shuffle(shuffled)
    default = decision_pb2.DECISION_DENY
    one = decide(policies, subject(context=context(env="prod"), trust_score=score), default)
    two = decide(shuffled, subject(context=context(env="prod"), trust_score=score), default)
    assert one.decision == two.decision
    assert [p.policy_id for p in one.matched] == [p.policy_id for p in two.matched]
    assert (one.deciding and one.deciding.policy_id) == (two.deciding and two.deciding.policy_id)
    assert sorted(one.reasons) == sorted(two.reasons)


@settings(max_examples=300, deadline=None)
@given(specs=policies_strategy, deny_priority=st.integers(4, 10), score=st.floats(0, 1))
def test_a_matching_deny_at_higher_priority_always_wins(specs, deny_priority, score) -> None:  # type: ignore[no-untyped-def]
    policies = [*build(specs), policy("zz-deny", DENY, deny_priority, actions=["tool:**"])]
    outcome = decide(
        policies,
        subject(context=context(env="prod"), trust_score=score),
        decision_pb2.DECISION_ALLOW,
    )
    assert outcome.decision == decision_pb2.DECISION_DENY
    assert outcome.deciding is not None and outcome.deciding.policy_id == "zz-deny"
    assert outcome.matched[0].policy_id == "zz-deny"


@settings(max_examples=200, deadline=None)
@given(priority=st.integers(-5, 5), effects=st.permutations([ALLOW, DENY, REVIEW]))
def test_at_equal_priority_deny_beats_approval_beats_allow(priority, effects) -> None:  # type: ignore[no-untyped-def]
    policies = [policy(f"p{i}", e, priority) for i, e in enumerate(effects)]
    assert decide(policies, subject(), 0).decision == decision_pb2.DECISION_DENY
    without_deny = [p for p in policies if p.effect != DENY]
    assert decide(without_deny, subject(), 0).decision == decision_pb2.DECISION_REQUIRE_APPROVAL


def test_no_match_uses_the_default_decision() -> None:
    outcome = decide([policy("other", ALLOW, actions=["llm:*"])], subject(), 0)
    assert outcome.decision == decision_pb2.DECISION_DENY and outcome.deciding is None
    assert "default decision is DENY" in outcome.reasons[0]
    allowed = decide([], subject(), decision_pb2.DECISION_ALLOW)
    assert allowed.decision == decision_pb2.DECISION_ALLOW


def test_a_stored_policy_that_no_longer_compiles_fails_closed() -> None:
    def broken(policy_id: str, effect: int) -> CompiledPolicy:
        stored = policy_pb2.Policy(policy_id=policy_id, effect=effect, condition="1 +")
        return CompiledPolicy.uncompilable(stored, "syntax error")

    allow = policy("allow-all", ALLOW)
    denied = decide([allow, broken("deny", DENY)], subject(), decision_pb2.DECISION_ALLOW)
    assert denied.decision == decision_pb2.DECISION_DENY  # the DENY still applies
    assert any("no longer compiles" in r for r in denied.reasons)
    allowed_only_by_broken = decide([broken("allow", ALLOW)], subject(), 0)
    assert allowed_only_by_broken.decision == decision_pb2.DECISION_DENY  # never wider


def test_criteria_selectors_trust_and_disabled() -> None:
    by_label = policy("label", ALLOW, agents=policy_pb2.AgentSelector(labels={"team": "billing"}))
    by_glob = policy(
        "glob", ALLOW, agents=policy_pb2.AgentSelector(agent_id_patterns=["billing:*"])
    )
    by_id = policy("id", ALLOW, agents=policy_pb2.AgentSelector(agent_ids=["other"]))
    trusted = policy("trusted", ALLOW, min_trust_score=0.8)
    disabled = policy("off", DENY, enabled=False)
    outcome = decide([by_label, by_glob, by_id, trusted, disabled], subject(trust_score=0.5), 0)
    assert [p.policy_id for p in outcome.matched] == ["glob", "label"]
    unregistered = subject(agent=AgentView("billing:2"))
    assert [p.policy_id for p in decide([by_label, by_glob], unregistered, 0).matched] == ["glob"]


def test_condition_errors_never_widen_access() -> None:
    broken = "context.missing == 'x'"
    allow = policy("allow", ALLOW, 5, condition=broken)
    deny = policy("deny", DENY, 1, condition=broken)
    outcome = decide(
        [allow, deny], subject(context=context(env="prod")), decision_pb2.DECISION_ALLOW
    )
    assert outcome.decision == decision_pb2.DECISION_DENY
    assert [p.policy_id for p in outcome.matched] == ["deny"]
    assert any("could not be evaluated" in r and "allow" in r for r in outcome.reasons)


def test_conditions_see_request_context_agent_and_trust() -> None:
    condition = (
        'request.action.startsWith("tool:") && context.ticket.priority > 2 && '
        'agent.labels["team"] == "billing" && "refund" in agent.skill_ids && '
        'trust.tier == "MEDIUM" && request.usage_estimate.input_tokens < 100'
    )
    p = policy("cond", ALLOW, condition=condition)
    agent = AgentView("billing:1", True, "ACTIVE", {"team": "billing"}, skill_ids=("refund",))
    ok = subject(
        agent=agent, context=context(ticket={"priority": 3}), trust_score=0.6, input_tokens=5
    )
    assert decide([p], ok, 0).decision == decision_pb2.DECISION_ALLOW
    low = subject(agent=agent, context=context(ticket={"priority": 1}), trust_score=0.6)
    assert decide([p], low, 0).decision == decision_pb2.DECISION_DENY


@pytest.mark.parametrize(
    ("source", "position", "words"),
    [
        ("contxt.env == 'prod'", "line 1, column", "undeclared reference to 'contxt"),
        ("request.actoin == 'x'", "line 1, column 8", "undefined field 'actoin'"),
        ("context.env == 'prod' &&\n  (", "line 2, column", "Syntax error"),
        ("1 + 2", "line 1, column 1", "must be a bool"),
        ("request.action", "line 1, column 1", "must be a bool"),
    ],
)
def test_conditions_that_do_not_compile_name_the_position(source, position, words) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConditionError) as caught:
        compile_condition(source)
    assert caught.value.description.startswith(position)
    assert words in caught.value.description


def test_globs() -> None:
    assert glob_match("tool:db.*", "tool:db.query")
    assert not glob_match("tool:db.*", "tool:db.query/x")
    assert glob_match("db://prod/**", "db://prod/a/b/c")
    assert not glob_match("db://prod/*", "db://prod/a/b")
    assert glob_match("a?c", "abc") and not glob_match("a?c", "a/c")
    assert glob_match("a.b+c[d]", "a.b+c[d]") and not glob_match("a.b", "axb")


def test_tiers() -> None:
    assert [trust_tier(x) for x in (0, 0.19, 0.2, 0.49, 0.5, 0.79, 0.8, 1)] == [
        trust_pb2.TRUST_TIER_UNTRUSTED,
        trust_pb2.TRUST_TIER_UNTRUSTED,
        trust_pb2.TRUST_TIER_LOW,
        trust_pb2.TRUST_TIER_LOW,
        trust_pb2.TRUST_TIER_MEDIUM,
        trust_pb2.TRUST_TIER_MEDIUM,
        trust_pb2.TRUST_TIER_HIGH,
        trust_pb2.TRUST_TIER_HIGH,
    ]


def test_trust_steps_and_decay() -> None:
    assert trust.step(0.5, trust_pb2.TRUST_EVENT_CAUSE_EXECUTION_SUCCESS) == pytest.approx(0.525)
    assert trust.step(0.5, trust_pb2.TRUST_EVENT_CAUSE_EXECUTION_VIOLATION) == pytest.approx(0.35)
    week = 7 * 86_400_000_000
    assert trust.decayed(0.9, 0, week, 0.5, week) == pytest.approx(0.7)
    assert trust.decayed(0.1, 0, 2 * week, 0.5, week) == pytest.approx(0.4)


@settings(max_examples=200, deadline=None)
@given(
    score=st.floats(0, 1),
    causes=st.lists(st.sampled_from(sorted(trust.STEPS)), max_size=30),
)
def test_trust_stays_between_zero_and_one(score, causes) -> None:  # type: ignore[no-untyped-def]
    for cause in causes:
        score = trust.step(score, cause)
        assert 0.0 <= score <= 1.0


def test_detectors_find_with_byte_offsets() -> None:
    text = "é mail a.b@example.com card 4111-1111-1111-1111 not 4111-1111-1111-1112"
    hits = detectors.run(
        text, [decision_pb2.DETECTOR_EMAIL, decision_pb2.DETECTOR_CARD_NUMBER]
    ).hits
    assert [h.name for h in hits] == ["email", "card_number"]
    offsets = detectors.byte_offsets(text, [hits[0].start])
    assert offsets[hits[0].start] == hits[0].start + 1  # "é" is two bytes
    assert detectors.mask("4111-1111-1111-1111") == "****-****-****-1111"
    assert detectors.luhn_valid("4111111111111111") and not detectors.luhn_valid("4111111111111112")


# -- record_feedback_trust (the FeedbackService calls it in its own transaction) ---------------


def test_record_feedback_trust(backend, postgres) -> None:  # type: ignore[no-untyped-def]
    url = database_url_for(backend, postgres) or (
        f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'feedback.db'}"
    )
    migrate(url)

    async def scenario() -> None:
        db = Database(url)
        try:
            async with db.write() as c:
                await trust.record_feedback_trust(c, "proj", "billing", True, "fb-1")
            async with db.write() as c:  # the same feedback again counts once
                await trust.record_feedback_trust(c, "proj", "billing", True, "fb-1")
            async with db.write() as c:
                await trust.record_feedback_trust(c, "proj", "billing", False, "fb-2")
            async with db.read() as c:
                row = await store.get_trust_row(c, "proj", "billing")
                events = await store.list_trust_events(
                    c, "proj", "billing", 0, None, None, None, 10
                )
                revisions = await store.revisions(c, ["proj"])
            up = 0.5 + 0.03 * 0.5
            assert row.event_count == 2
            assert row.score == pytest.approx(up - 0.05 * up, abs=1e-6)
            causes = [e.cause for e in events]
            assert causes == [
                trust_pb2.TRUST_EVENT_CAUSE_FEEDBACK_DOWN,
                trust_pb2.TRUST_EVENT_CAUSE_FEEDBACK_UP,
            ]
            assert [e.feedback_id for e in events] == ["fb-2", "fb-1"]
            assert events[1].delta == pytest.approx(0.015, abs=1e-6)
            assert revisions["proj"][1] == 2  # trust revision: replicas reload the score
            # A rolled-back feedback transaction leaves no trace.
            with pytest.raises(RuntimeError):
                async with db.write() as c:
                    await trust.record_feedback_trust(c, "proj", "billing", True, "fb-3")
                    raise RuntimeError("feedback insert failed")
            async with db.read() as c:
                assert (await store.get_trust_row(c, "proj", "billing")).event_count == 2
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_decay_events_are_recorded_once_a_day(backend, postgres) -> None:  # type: ignore[no-untyped-def]
    url = database_url_for(backend, postgres) or (
        f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'decay.db'}"
    )
    migrate(url)
    day = trust.DAY_US

    async def scenario() -> None:
        db = Database(url)
        try:
            async with db.write() as c:
                await trust.record_event(
                    c, "proj", "a1", trust_pb2.TRUST_EVENT_CAUSE_MANUAL, set_score=0.9, at_us=day
                )
            await trust.record_decay_events(db, at_us=day + day // 2)  # not a day yet
            await trust.record_decay_events(db, at_us=day + 7 * day)  # a week: half way back
            await trust.record_decay_events(db, at_us=day + 7 * day + day // 2)  # same day
            async with db.read() as c:
                events = await store.list_trust_events(c, "proj", "a1", 0, None, None, None, 10)
            assert [e.cause for e in events] == [
                trust_pb2.TRUST_EVENT_CAUSE_DECAY,
                trust_pb2.TRUST_EVENT_CAUSE_MANUAL,
            ]
            assert events[0].score_after == pytest.approx(0.7, abs=1e-6)
            assert events[0].delta == pytest.approx(-0.2, abs=1e-6)
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_decision_journal_keeps_what_the_database_did_not_take_and_replays_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil
    import stat

    from agentplane_server.governance.decision_log import DecisionLog

    url = f"sqlite+aiosqlite:///{tmp_path / 'log.db'}"
    migrate(url)
    journal_dir = tmp_path / "journal"

    def record(i: int) -> decision_pb2.DecisionRecord:
        r = decision_pb2.DecisionRecord(
            decision_id=f"dec_{i}", project_id="p", kind=1, agent_id="a", policy_ids=["x"]
        )
        r.create_time.FromMicroseconds(1_000_000 + i)
        return r

    async def stored_ids(db: Database) -> list[str]:
        async with db.read() as c:
            stored = await store.list_decisions(
                c,
                "p",
                agent_id="",
                kind=0,
                decision=0,
                verdict=0,
                action="",
                policy_id="x",
                start_us=None,
                end_us=None,
                after=None,
                limit=100,
            )
        return sorted(r.decision_id for r in stored)

    async def replay(db: Database) -> None:
        log = DecisionLog(
            db, capacity=10, batch_size=5, flush_interval=0.01, journal_dir=journal_dir
        )
        log.start()
        await log.close(deadline_seconds=5)

    async def scenario() -> None:
        away = Database("postgresql+psycopg://nobody@127.0.0.1:1/none")  # nothing listens there
        log = DecisionLog(
            away, capacity=10, batch_size=5, flush_interval=0.01, journal_dir=journal_dir
        )
        log.start()
        for i in range(7):
            log.reserve()
            log.append(record(i), [["1|2", 0, 5]] if i == 0 else None)
        await log.close(deadline_seconds=0.3)
        await away.dispose()
        (journal,) = journal_dir.glob("*.journal")
        assert stat.S_IMODE(journal.stat().st_mode) == 0o600
        kept = shutil.copy(journal, tmp_path / "kept.journal")

        db = Database(url)
        try:
            await replay(db)
            assert await stored_ids(db) == [f"dec_{i}" for i in range(7)]
            assert not list(journal_dir.glob("*.journal"))
            async with db.read() as c:
                row = await store.get_decision_row(c, "p", "dec_0")
            assert row is not None and row.charges == [["1|2", 0, 5]]
            # A journal whose decisions are in the database already stores nothing twice.
            shutil.copy(kept, journal_dir / "again.journal")
            await replay(db)
            assert await stored_ids(db) == [f"dec_{i}" for i in range(7)]
            assert not list(journal_dir.glob("*.journal"))
        finally:
            await db.dispose()

    asyncio.run(scenario())
