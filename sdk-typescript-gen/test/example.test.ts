/**
 * The example agent (examples/agent/agent.ts, compiled with the tests) against a real server,
 * run as its container runs it: a separate Node process configured by AGENTPLANE_* variables,
 * with an agent API key. It must register, run a governed action, append to a session and send
 * feedback; the test then reads all of it back with an admin key.
 */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, test } from "node:test";

import { admin, feedback, governance, session, type AgentplaneClient } from "@agentplane/sdk";

import { isUnimplemented, SDK_DIR, TestServer } from "./server.js";

const run = promisify(execFile);

let server: TestServer;
let client: AgentplaneClient;
let missing: string[] = [];

before(async () => {
  server = await TestServer.start();
  client = server.client();
  const probes: [string, () => Promise<unknown>][] = [
    ["RegistryService", () => client.registry.listAgentsPage({})],
    ["GovernanceService", () => client.governance.getGovernanceSettings({})],
    ["FeedbackService", () => client.feedback.listFeedbackPage({})],
  ];
  for (const [name, probe] of probes) if (await isUnimplemented(probe)) missing.push(name);
});
after(async () => {
  await server?.stop();
});

test("the example agent registers, runs a governed action, appends to a session and sends feedback", async (t) => {
  if (missing.length > 0)
    return t.skip(`${missing.join(", ")} answer UNIMPLEMENTED (not served yet)`);
  const agentId = `example-${Date.now().toString(36)}`;
  await client.governance.createPolicy({
    policyId: `allow-${agentId}`,
    policy: {
      name: "the example agent may look up orders",
      effect: governance.PolicyEffect.ALLOW,
      actions: ["tool:orders.*"],
      agents: { agentIds: [agentId] },
    },
  });
  // Policies reach decisions within a second: wait until this one does.
  const deadline = Date.now() + 5000;
  while (
    (await client.governance.checkPermission({ agentId, action: "tool:orders.lookup" }))
      .decision !== governance.Decision.ALLOW
  ) {
    assert.ok(Date.now() < deadline, "the ALLOW policy never took effect");
    await new Promise((r) => setTimeout(r, 100));
  }
  const { key } = await client.admin.createApiKey({
    role: admin.Role.AGENT,
    agentId,
    displayName: "example agent",
  });

  const script = join(SDK_DIR, ".test-build", "examples", "agent", "agent.js");
  const { stdout } = await run(process.execPath, [script], {
    env: {
      ...process.env,
      AGENTPLANE_URL: server.url,
      AGENTPLANE_API_KEY: key,
      AGENTPLANE_AGENT_ID: agentId,
    },
    timeout: 60_000,
  }).catch((error: { stdout?: string; stderr?: string }) => {
    assert.fail(`the example failed:\n${error.stdout ?? ""}\n${error.stderr ?? ""}`);
  });
  const lines = stdout
    .trim()
    .split("\n")
    .map((line) => JSON.parse(line) as Record<string, unknown>);
  assert.deepEqual(
    lines.map((l) => l.step),
    ["registered", "governed", "appended", "feedback", "done"],
  );
  const done = lines.at(-1)!;
  assert.ok(Number(done.reportsSent) >= 1, "the governed action was reported");

  const sessionId = String(done.sessionId);
  const messages = await client.sessions.listMessages({ sessionId }).toArray();
  assert.equal(messages.length, 2);
  assert.equal(messages[1]!.role, session.Role.ASSISTANT);
  assert.equal(messages[1]!.agentId, agentId);
  assert.equal(messages[1]!.content, "Order 7 has shipped.");

  const { feedback: stored } = await client.feedback.getFeedback({
    feedbackId: String(done.feedbackId),
  });
  assert.equal(stored?.agentId, agentId);
  assert.equal(stored?.messageId, String(done.messageId));
  assert.equal(stored?.source, feedback.FeedbackSource.HUMAN, "a person's verdict, by token");

  const gone = await client.registry.getAgent({ agentId }).catch((e: unknown) => e);
  assert.equal(
    (gone as { codeName?: string }).codeName,
    "NOT_FOUND",
    "the agent deregistered on exit",
  );
});
