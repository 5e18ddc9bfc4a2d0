/**
 * The decision rule (decision.ts, the port of agentplane.decision), local decisions from the
 * WatchPolicies stream against a real server, and null mode. The differential test
 * (tests/test_decision_differential.py) compares this port with the server and Python at scale.
 */

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { create } from "@bufbuild/protobuf";
import {
  decide,
  getDefaultGovernor,
  globMatch,
  governance,
  Governor,
  PolicyState,
  Rule,
  setDefaultGovernor,
  UNDECIDABLE,
  type AgentplaneClient,
} from "@agentplane/sdk";

import { TestServer } from "./server.js";

const { Decision, PolicyEffect, PolicySchema, WatchPoliciesResponseSchema } = governance;
type PolicyInit = Parameters<typeof create<typeof PolicySchema>>[1];

function state(
  policies: PolicyInit[],
  options: { default?: governance.Decision; trust?: number; baseline?: number } = {},
): PolicyState {
  const result = new PolicyState();
  result.apply(
    create(WatchPoliciesResponseSchema, {
      snapshotVersion: 1n,
      change: {
        case: "snapshot",
        value: {
          policies: policies.map((p) => create(PolicySchema, p)),
          defaultDecision: options.default ?? Decision.DENY,
          trustScore: { score: options.trust ?? 0.5, baseline: options.baseline ?? 0.5 },
          cacheTtl: { seconds: 30n, nanos: 0 },
        },
      },
    }),
  );
  return result;
}

const allow = (policyId: string, more: PolicyInit = {}): PolicyInit => ({
  policyId,
  effect: PolicyEffect.ALLOW,
  ...more,
});
const deny = (policyId: string, more: PolicyInit = {}): PolicyInit => ({
  policyId,
  effect: PolicyEffect.DENY,
  ...more,
});

describe("the decision rule", () => {
  test("globs: * stops at /, ** crosses it, ? is one character, the rest is literal", () => {
    const cases: [string, string, boolean][] = [
      ["tool:db.*", "tool:db.query", true],
      ["tool:db.*", "tool:db/x", false],
      ["db://prod/**", "db://prod/users/1", true],
      ["db://prod/*", "db://prod/users/1", false],
      ["tool:?", "tool:a", true],
      ["tool:?", "tool:/", false],
      ["tool:?", "tool:\u{1F600}", true], // one character, not one UTF-16 unit
      ["a.b", "axb", false],
      ["a(b)[c]{1}|d^$", "a(b)[c]{1}|d^$", true],
      ["x*", "x\nline", true],
      ["exact", "exactly", false],
    ];
    for (const [pattern, value, expected] of cases) {
      assert.equal(globMatch(pattern, value), expected, `${pattern} ~ ${value}`);
    }
  });

  test("priority, then DENY over REQUIRE_APPROVAL over ALLOW, then policy_id", () => {
    const s = state([
      allow("a", { actions: ["tool:*"], priority: 5 }),
      deny("d", { actions: ["tool:x"] }),
    ]);
    assert.equal(s.local("tool:x", "")?.decision, Decision.ALLOW);
    const t = state([allow("a", { actions: ["tool:*"] }), deny("d", { actions: ["tool:x"] })]);
    const denied = t.local("tool:x", "")!;
    assert.equal(denied.decision, Decision.DENY);
    assert.deepEqual(
      denied.matched.map((r) => r.policyId),
      ["d", "a"],
    );
    assert.equal(t.local("tool:y", "")?.decision, Decision.ALLOW);
    assert.equal(t.local("other", "")?.decision, Decision.DENY); // the default
    assert.equal(state([], { default: Decision.ALLOW }).local("x", "")?.decision, Decision.ALLOW);
    const ties = state([deny("b"), deny("a"), deny("c")]);
    assert.equal(ties.outcome("x", "").deciding?.policyId, "a");
    const r = state([allow("r", { resources: ["db://prod/**"] })]);
    assert.equal(r.local("q", "db://prod/t")?.decision, Decision.ALLOW);
    assert.equal(r.local("q", "db://dev/t")?.decision, Decision.DENY);
  });

  test("selectors, labels and trust with a known score", () => {
    const rules = [
      new Rule(
        create(PolicySchema, allow("by-label", { agents: { labels: { team: "billing" } } })),
      ),
      new Rule(
        create(PolicySchema, allow("by-glob", { agents: { agentIdPatterns: ["billing:*"] } })),
      ),
      new Rule(create(PolicySchema, deny("trusted", { minTrustScore: 0.8 }))),
      new Rule(create(PolicySchema, deny("off", { enabled: false }))),
    ];
    const request = {
      agentId: "billing:1",
      labels: { team: "billing" },
      action: "x",
      resource: "",
      trustScore: 0.5,
      defaultDecision: Decision.DENY,
    };
    const outcome = decide(rules, request);
    assert.deepEqual(
      outcome.matched.map((r) => r.policyId),
      ["by-glob", "by-label"],
    );
    assert.equal(decide(rules, { ...request, trustScore: 0.9 }).deciding?.policyId, "trusted");
    assert.deepEqual(decide(rules, { ...request, agentId: "ops:1", labels: {} }).matched, []);
    // The server's conditions, injected: an ALLOW whose condition fails does not match.
    const conditional = new Rule(create(PolicySchema, allow("c", { condition: "context.n > 1" })));
    const evaluated = decide([conditional], { ...request, condition: () => [false, ""] });
    assert.equal(evaluated.decision, Decision.DENY);
    assert.equal(
      decide([conditional], { ...request, condition: () => [true, ""] }).decision,
      Decision.ALLOW,
    );
  });

  test("defers to the server when unsure", () => {
    const c = state([allow("c", { actions: ["pay"], condition: "context.amount < 100" })]);
    assert.equal(c.outcome("pay", "").decision, UNDECIDABLE);
    assert.equal(c.outcome("pay", "").undecidedBy?.policyId, "c");
    assert.equal(c.local("pay", ""), undefined);
    const outranked = state([
      deny("d", { actions: ["pay"], priority: 9 }),
      allow("c", { actions: ["pay"], condition: "x" }),
    ]);
    assert.equal(outranked.local("pay", "")?.decision, Decision.DENY);
    assert.equal(
      state([{ policyId: "h", effect: PolicyEffect.REQUIRE_APPROVAL }]).local("pay", ""),
      undefined,
    );
    const budget = { limit: 5n, window: { seconds: 60n, nanos: 0 } };
    assert.equal(state([allow("b", { budgets: [budget] })]).local("pay", ""), undefined);
    assert.equal(state([], { default: Decision.REQUIRE_APPROVAL }).local("x", ""), undefined);
    // A minimum trust between the score and the baseline it decays toward: unsure.
    assert.equal(
      state([allow("t", { minTrustScore: 0.6 })], { trust: 0.7, baseline: 0.5 }).local("x", ""),
      undefined,
    );
    assert.equal(
      state([allow("t", { minTrustScore: 0.6 })], { trust: 0.9, baseline: 0.7 }).local("x", "")
        ?.decision,
      Decision.ALLOW,
    );
    assert.equal(
      state([allow("t", { minTrustScore: 0.6 })], { trust: 0.4 }).local("x", "")?.decision,
      Decision.DENY,
    );
  });

  test("stream changes, and staleness after the stream is lost", () => {
    let now = 0;
    const s = new PolicyState(() => now);
    const message = (version: bigint, change: governance.WatchPoliciesResponse["change"]) =>
      create(WatchPoliciesResponseSchema, { snapshotVersion: version, change });
    s.apply(
      message(1n, {
        case: "snapshot",
        value: create(governance.PolicySnapshotSchema, {
          policies: [create(PolicySchema, allow("a", { actions: ["x"] }))],
          defaultDecision: Decision.DENY,
          cacheTtl: { seconds: 30n, nanos: 0 },
        }),
      }),
    );
    assert.equal(s.local("x", "")?.decision, Decision.ALLOW);
    s.apply(
      message(2n, {
        case: "upsertedPolicy",
        value: create(PolicySchema, deny("d", { actions: ["x"] })),
      }),
    );
    assert.equal(s.local("x", "")?.decision, Decision.DENY);
    s.apply(message(3n, { case: "deletedPolicyId", value: "d" }));
    assert.equal(s.local("x", "")?.decision, Decision.ALLOW);
    s.apply(
      message(4n, {
        case: "upsertedPolicy",
        value: create(PolicySchema, allow("a", { actions: ["x"], enabled: false })),
      }),
    );
    assert.equal(s.local("x", "")?.decision, Decision.DENY);
    assert.equal(s.snapshotVersion, 4n);
    s.lost();
    now = 29_000;
    assert.notEqual(s.local("x", ""), undefined);
    now = 31_000;
    assert.equal(s.local("x", ""), undefined);
    assert.equal(new PolicyState().local("x", ""), undefined);
  });
});

describe("null mode", () => {
  test("a Governor without a client allows without calls and sends nothing", async () => {
    const governor = new Governor(null, { agentId: "a" });
    assert.equal(governor.isNull, true);
    const decision = await governor.check("tool:x");
    assert.equal(decision.source, "null");
    assert.equal(decision.allowed, true);
    assert.equal((await governor.authorize("tool:y")).source, "null");
    const validation = await governor.validateOutput("mail me at a@b.example");
    assert.equal(validation.verdict, governance.Verdict.ACCEPT);
    assert.equal(validation.redactedContent, "mail me at a@b.example");
    governor.report("tool:x", governance.ExecutionOutcome.SUCCESS);
    assert.equal(await governor.flush(100), true);
    assert.equal(await governor.startWatch(10), false);
    assert.equal(await governor.governed("tool:z", () => 3)(), 3);
    assert.throws(() => governor.client, /null mode/);
  });

  test("the default governor is in null mode without AGENTPLANE_URL", async () => {
    const saved = process.env.AGENTPLANE_URL;
    delete process.env.AGENTPLANE_URL;
    setDefaultGovernor(undefined);
    try {
      assert.equal(getDefaultGovernor().isNull, true);
    } finally {
      setDefaultGovernor(undefined);
      if (saved !== undefined) process.env.AGENTPLANE_URL = saved;
    }
  });
});

describe("local decisions against a real server", () => {
  let server: TestServer;
  let client: AgentplaneClient;
  before(async () => {
    server = await TestServer.start();
    client = server.client();
  });
  after(async () => {
    await server?.stop();
  });

  test("decides from the WatchPolicies stream as CheckPermission does, and follows changes", async () => {
    const agentId = `ts-local-${Date.now().toString(36)}`;
    await client.governance.createPolicy({
      policyId: `allow-${agentId}`,
      policy: {
        name: "reads",
        effect: PolicyEffect.ALLOW,
        actions: ["tool:read.*"],
        agents: { agentIds: [agentId] },
      },
    });
    await client.governance.createPolicy({
      policyId: `cond-${agentId}`,
      policy: {
        name: "payments under 100",
        effect: PolicyEffect.ALLOW,
        actions: ["tool:pay"],
        condition: "context.amount < 100",
        agents: { agentIds: [agentId] },
      },
    });
    let checks = 0;
    const counted = server.client({
      interceptors: [
        (next) => async (request) => {
          if (request.method.name === "CheckPermission") checks++;
          return next(request);
        },
      ],
    });
    const governor = new Governor(counted, { agentId, cache: false, watch: true });
    try {
      assert.equal(await governor.startWatch(10_000), true);
      const local = await governor.check("tool:read.file", { resource: "doc://1" });
      const remote = await client.governance.checkPermission({
        agentId,
        action: "tool:read.file",
        resource: "doc://1",
      });
      assert.equal(local.source, "local");
      assert.equal(checks, 0, "decided without CheckPermission");
      assert.equal(local.decision, remote.decision);
      assert.equal(local.decidingPolicyId, remote.decidingPolicyId);
      assert.deepEqual(local.reasons, remote.reasons);
      assert.deepEqual(local.matchedPolicyIds, remote.matchedPolicyIds);

      const denied = await governor.check("tool:write");
      assert.equal(denied.source, "local");
      assert.equal(denied.decision, Decision.DENY); // the default decision

      // A condition is the server's to evaluate.
      const pay = await governor.check("tool:pay");
      assert.equal(pay.source, "server");
      assert.equal(checks, 1);

      // A change reaches the local state through the stream.
      await client.governance.createPolicy({
        policyId: `deny-${agentId}`,
        policy: {
          name: "no secrets",
          effect: PolicyEffect.DENY,
          actions: ["tool:read.secret"],
          agents: { agentIds: [agentId] },
        },
      });
      const deadline = Date.now() + 5000;
      let secret = await governor.check("tool:read.secret");
      while (secret.decision !== Decision.DENY && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
        secret = await governor.check("tool:read.secret");
      }
      assert.equal(secret.source, "local");
      assert.equal(secret.decidingPolicyId, `deny-${agentId}`);
    } finally {
      await governor.close(1000);
    }
  });
});
