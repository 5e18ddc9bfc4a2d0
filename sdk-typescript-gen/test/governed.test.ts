/**
 * governed() and Governor: the Python SDK's semantics (cached decisions for the server's
 * cache_ttl, fail closed, DENY / REQUIRE_APPROVAL refusals, approvals, output validation,
 * background execution reports). The first part runs against an in-process GovernanceService
 * (connect-es createRouterTransport) that counts calls and can fail on demand; the last part
 * against a real server.
 */

import assert from "node:assert/strict";
import { after, before, beforeEach, describe, test } from "node:test";

import { Code, ConnectError, createRouterTransport } from "@connectrpc/connect";
import {
  ActionDenied,
  Agent,
  ApprovalRequired,
  createAgentplaneClient,
  currentCall,
  governance,
  GovernanceUnavailable,
  governed,
  Governor,
  OutputRejected,
  PermissionDeniedError,
  setDefaultGovernor,
  type AgentplaneClient,
} from "@agentplane/sdk";

import { freePort, isUnimplemented, TestServer } from "./server.js";

const { Decision, ApprovalState, ExecutionOutcome, Verdict, GovernanceService } = governance;

interface Fake {
  decision: governance.Decision;
  cacheTtlSeconds: bigint;
  fail?: Code;
  delayMs?: number;
  checks: governance.CheckPermissionRequest[];
  reports: governance.ReportExecutionRequest[];
  verdict: governance.Verdict;
}

function fakeClient(fake: Fake): AgentplaneClient {
  const transport = createRouterTransport(({ service }) => {
    service(GovernanceService, {
      async checkPermission(request) {
        fake.checks.push(request);
        if (fake.delayMs) await new Promise((r) => setTimeout(r, fake.delayMs));
        if (fake.fail !== undefined) throw new ConnectError("down", fake.fail);
        if (request.approvalId === "approval-1") {
          return {
            decision: Decision.ALLOW,
            decisionId: `d${fake.checks.length}`,
            approvalId: "approval-1",
          };
        }
        return {
          decision: fake.decision,
          decisionId: `d${fake.checks.length}`,
          reasons: [`fake says ${Decision[fake.decision]}`],
          approvalId: fake.decision === Decision.REQUIRE_APPROVAL ? "approval-1" : "",
          cacheTtl: { seconds: fake.cacheTtlSeconds, nanos: 0 },
        };
      },
      async *watchApproval(request) {
        yield { approval: { approvalId: request.approvalId, state: ApprovalState.PENDING } };
        await new Promise((r) => setTimeout(r, 50));
        yield { approval: { approvalId: request.approvalId, state: ApprovalState.APPROVED } };
      },
      async reportExecution(request) {
        fake.reports.push(request);
        return {};
      },
      async validateOutput(request) {
        return {
          verdict: fake.verdict,
          decisionId: "v1",
          redactedContent: request.content.replace(/\S+@\S+/g, "j***@e****.com"),
          findings:
            fake.verdict === Verdict.ACCEPT
              ? []
              : [{ detector: governance.Detector.SECRET, detectorName: "aws_access_key" }],
        };
      },
    });
  });
  return createAgentplaneClient({ transport, retry: { initialBackoffMs: 5, jitter: 0 } });
}

describe("governed() against an in-process GovernanceService", () => {
  let fake: Fake;
  let governor: Governor;
  beforeEach(() => {
    fake = {
      decision: Decision.ALLOW,
      cacheTtlSeconds: 60n,
      checks: [],
      reports: [],
      verdict: Verdict.ACCEPT,
    };
    governor = new Governor(fakeClient(fake), { agentId: "a1", timeoutMs: 1000 });
  });

  test("ALLOW runs the function; the decision is cached for cache_ttl per action, resource and context", async () => {
    const search = governed(
      {
        action: "tool:search",
        resource: (q: string) => `idx://${q}`,
        context: (q: string) => ({ q, n: 1 }),
        governor,
      },
      async (q: string) => `results for ${q}`,
    );
    assert.equal(await search("a"), "results for a");
    assert.equal(await search("a"), "results for a");
    assert.equal(fake.checks.length, 1, "the second call was answered from the cache");
    await search("b");
    assert.equal(fake.checks.length, 2, "another resource and context is asked again");
    assert.equal(fake.checks[1]!.resource, "idx://b");
    assert.equal(fake.checks[1]!.agentId, "a1");

    const first = await governor.check("tool:x", { context: { a: 1, b: [1, 2] } });
    const again = await governor.check("tool:x", { context: { b: [1, 2], a: 1 } });
    assert.equal(first.source, "server");
    assert.equal(again.source, "cache", "key order does not matter");
    assert.equal(again.decisionId, first.decisionId);
  });

  test("a zero cache_ttl, a usage estimate or cache: false always ask the server", async () => {
    fake.cacheTtlSeconds = 0n;
    await governor.check("tool:x");
    await governor.check("tool:x");
    assert.equal(fake.checks.length, 2);
    fake.cacheTtlSeconds = 60n;
    await governor.check("tool:y", { usageEstimate: { inputTokens: 5n } });
    await governor.check("tool:y", { usageEstimate: { inputTokens: 5n } });
    assert.equal(fake.checks.length, 4);
    const uncached = new Governor(governor.client, { cache: false });
    await uncached.check("tool:z");
    await uncached.check("tool:z");
    assert.equal(fake.checks.length, 6);
  });

  test("the cache expires after cache_ttl", async () => {
    fake.cacheTtlSeconds = 0n;
    const decision = await governor.check("tool:t");
    governor.cache.put(JSON.stringify(["tool:t", "", null]), decision, 30);
    assert.equal((await governor.check("tool:t")).source, "cache");
    await new Promise((r) => setTimeout(r, 50));
    assert.equal((await governor.check("tool:t")).source, "server");
  });

  test("DENY throws ActionDenied and REQUIRE_APPROVAL throws ApprovalRequired; the function never runs", async () => {
    let ran = 0;
    const act = governed({ action: "tool:delete", governor }, () => ran++);
    fake.decision = Decision.DENY;
    const denied = await act().catch((e: unknown) => e);
    assert.ok(denied instanceof ActionDenied);
    assert.match(denied.message, /"tool:delete" denied: fake says DENY/);
    fake.decision = Decision.REQUIRE_APPROVAL;
    governor.cache.clear();
    const held = await act().catch((e: unknown) => e);
    assert.ok(held instanceof ApprovalRequired);
    assert.equal(held.approvalId, "approval-1");
    assert.equal(ran, 0);
    assert.equal(fake.reports.length, 0, "refused actions are not reported as executions");
  });

  test("waitForApprovalMs watches the approval, then checks again with it", async () => {
    fake.decision = Decision.REQUIRE_APPROVAL;
    const act = governed(
      { action: "tool:refund", governor, waitForApprovalMs: 2000 },
      () => "refunded",
    );
    assert.equal(await act(), "refunded");
    assert.equal(fake.checks.length, 2);
    assert.equal(fake.checks[1]!.approvalId, "approval-1");
  });

  test("fails closed when Agentplane is unreachable: GovernanceUnavailable, after retries within the deadline", async () => {
    fake.fail = Code.Unavailable;
    let ran = 0;
    const act = governed({ action: "tool:pay", governor }, () => ran++);
    const error = await act().catch((e: unknown) => e);
    assert.ok(error instanceof GovernanceUnavailable, String(error));
    assert.equal(ran, 0);
    assert.ok(fake.checks.length > 1, "CheckPermission (it has a request_id) was retried");
    assert.equal(new Set(fake.checks.map((c) => c.requestId)).size, 1, "with one request_id");

    fake.delayMs = 300;
    fake.fail = undefined;
    const slow = new Governor(governor.client, { timeoutMs: 50 });
    assert.ok(
      (await slow.check("tool:pay").catch((e: unknown) => e)) instanceof GovernanceUnavailable,
    );
  });

  test("failOpen allows while unreachable, per governor or per governed()", async () => {
    fake.fail = Code.Unavailable;
    const act = governed({ action: "tool:read", governor, failOpen: true }, () => "ok");
    assert.equal(await act(), "ok");
    const open = new Governor(governor.client, { failOpen: true, timeoutMs: 100 });
    const decision = await open.check("tool:read");
    assert.equal(decision.source, "fail_open");
    assert.equal(decision.allowed, true);
  });

  test("other errors are bugs to fix, not outages: they are thrown as they are", async () => {
    fake.fail = Code.PermissionDenied;
    await assert.rejects(governor.check("tool:x"), PermissionDeniedError);
  });

  test("executions are reported in the background: outcome, duration, decision and usage", async () => {
    const work = governed({ action: "tool:llm", governor }, async (prompt: string) => {
      const call = currentCall()!;
      call.usage = { inputTokens: 12n, outputTokens: 3n };
      await new Promise((r) => setTimeout(r, 20));
      return prompt.toUpperCase();
    });
    assert.equal(await work("hi"), "HI");
    const failing = governed({ action: "tool:llm", governor }, async () => {
      throw new TypeError("boom");
    });
    await assert.rejects(failing(), TypeError);
    assert.equal(await governor.flush(), true);
    assert.equal(fake.reports.length, 2);
    const [ok, failed] = fake.reports;
    assert.equal(ok!.outcome, ExecutionOutcome.SUCCESS);
    assert.equal(ok!.decisionId, "d1");
    assert.equal(ok!.usage?.inputTokens, 12n);
    assert.ok(Number(ok!.duration?.nanos ?? 0) + Number(ok!.duration?.seconds ?? 0n) * 1e9 >= 15e6);
    assert.match(
      ok!.requestId,
      /^[0-9a-f]{32}$/,
      "each report has a request_id, so retries count once",
    );
    assert.equal(failed!.outcome, ExecutionOutcome.ERROR);
    assert.equal(failed!.message, "TypeError: boom");
    assert.equal(governor.reportsSent, 2);
  });

  test("validateOutput: REJECT throws OutputRejected and reports FAILURE; redact returns the redacted text", async () => {
    const reply = governed(
      { action: "output:reply", governor, validateOutput: true, redact: true },
      () => "mail jane@example.com",
    );
    assert.equal(await reply(), "mail j***@e****.com");
    fake.verdict = Verdict.REJECT;
    const error = await reply().catch((e: unknown) => e);
    assert.ok(error instanceof OutputRejected);
    assert.match(error.message, /VERDICT_REJECT \(DETECTOR_SECRET:aws_access_key\)/);
    await governor.flush();
    assert.deepEqual(
      fake.reports.map((r) => r.outcome),
      [ExecutionOutcome.SUCCESS, ExecutionOutcome.FAILURE],
    );
  });

  test("governor.run and the default governor", async () => {
    assert.equal(await governor.run("tool:run", (call) => call.decision.name), "DECISION_ALLOW");
    setDefaultGovernor(governor);
    try {
      assert.equal(await governed("tool:default", () => 7)(), 7);
    } finally {
      setDefaultGovernor(undefined);
    }
    assert.throws(() => governed("", () => 1), /needs an action/);
  });
});

describe("Agent and governed() against a real server", () => {
  let server: TestServer;
  let client: AgentplaneClient;
  let skip = "";
  before(async () => {
    server = await TestServer.start();
    client = server.client();
    if (await isUnimplemented(() => client.registry.listAgentsPage({})))
      skip = "RegistryService answers UNIMPLEMENTED (not served yet)";
    else if (await isUnimplemented(() => client.governance.getGovernanceSettings({})))
      skip = "GovernanceService answers UNIMPLEMENTED (not served yet)";
  });
  after(async () => {
    await server?.stop();
  });

  test("an agent registers, renews its lease, runs governed actions with cached decisions, deregisters", async (t) => {
    if (skip) return t.skip(skip);
    const agentId = `ts-agent-${Date.now().toString(36)}`;
    await client.governance.createPolicy({
      policyId: `allow-${agentId}`,
      policy: {
        name: "allow lookups",
        effect: governance.PolicyEffect.ALLOW,
        actions: ["tool:lookup"],
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
    const agent = new Agent(counted, {
      agentId,
      card: { name: "TS test agent", version: "1.0.0" },
      leaseDurationMs: 5000,
    });
    const registered = await agent.start();
    assert.equal(registered.card?.sdkLanguage, "typescript");
    assert.equal(registered.status, 1);
    await agent.heartbeat();
    assert.equal(agent.heartbeats, 1);

    const lookup = agent.governed({ action: "tool:lookup" }, async (id: string) => `order ${id}`);
    // Policies reach decisions within a second.
    const deadline = Date.now() + 5000;
    for (;;) {
      try {
        assert.equal(await lookup("1"), "order 1");
        break;
      } catch (error) {
        if (!(error instanceof ActionDenied) || Date.now() > deadline) throw error;
        agent.governor.cache.clear();
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    const before = checks;
    assert.equal(await lookup("2"), "order 2");
    assert.equal(checks, before, "the ALLOW was reused for the server's cache_ttl");
    await assert.rejects(agent.governed({ action: "tool:drop-tables" }, () => 1)(), ActionDenied);

    await agent.stop();
    assert.ok(agent.governor.reportsSent >= 2);
    const gone = await client.registry.getAgent({ agentId }).catch((e: unknown) => e);
    assert.equal((gone as { codeName?: string }).codeName, "NOT_FOUND");
  });

  test("fails closed when the server cannot be reached", async () => {
    const dead = createAgentplaneClient({ url: `127.0.0.1:${await freePort()}`, apiKey: "k" });
    try {
      const act = new Governor(dead, { agentId: "x", timeoutMs: 300 }).governed(
        "tool:anything",
        () => "ran",
      );
      await assert.rejects(act(), GovernanceUnavailable);
    } finally {
      dead.close();
    }
  });
});
