/**
 * The example agent as the README runs it from the repository: `npm install` in
 * examples/agent (which links this SDK folder) and `npm start` (tsc, then node), against a
 * real server with an agent key and a policy that allows its action.
 */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, test } from "node:test";

import { admin, governance, type AgentplaneClient } from "@agentplane/sdk";

import { SDK_DIR, TestServer } from "./server.js";

const run = promisify(execFile);
const npm = process.platform === "win32" ? "npm.cmd" : "npm";
const EXAMPLE = join(SDK_DIR, "examples", "agent");

let server: TestServer;
let client: AgentplaneClient;

before(async () => {
  server = await TestServer.start();
  client = server.client();
});
after(async () => {
  await server?.stop();
});

test("npm install and npm start run the example agent from the repository", async () => {
  const agentId = `npm-example-${Date.now().toString(36)}`;
  await client.governance.createPolicy({
    policyId: `allow-${agentId}`,
    policy: {
      name: "the example agent may look up orders",
      effect: governance.PolicyEffect.ALLOW,
      actions: ["tool:orders.*"],
      agents: { agentIds: [agentId] },
    },
  });
  const { key } = await client.admin.createApiKey({ role: admin.Role.AGENT, agentId });
  await run(npm, ["install", "--no-audit", "--no-fund", "--silent"], { cwd: EXAMPLE, timeout: 180_000 });
  const { stdout } = await run(npm, ["start", "--silent"], {
    cwd: EXAMPLE,
    env: { ...process.env, AGENTPLANE_URL: server.url, AGENTPLANE_API_KEY: key, AGENTPLANE_AGENT_ID: agentId },
    timeout: 120_000,
  }).catch((error: { stdout?: string; stderr?: string }) => {
    assert.fail(`npm start failed:\n${error.stdout ?? ""}\n${error.stderr ?? ""}`);
  });
  const steps = stdout
    .trim()
    .split("\n")
    .filter((line) => line.startsWith("{"))
    .map((line) => (JSON.parse(line) as { step: string }).step);
  assert.deepEqual(steps, ["registered", "governed", "appended", "feedback", "done"]);
});
