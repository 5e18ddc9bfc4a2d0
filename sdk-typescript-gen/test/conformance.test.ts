/**
 * Every scenario of tests/conformance/ through the TypeScript SDK, against a real server. The
 * Python SDK runs the same files (tests/test_conformance.py), so a difference fails CI.
 */

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";

import { createRouterTransport } from "@connectrpc/connect";
import { createAgentplaneClient, session, type AgentplaneClientOptions } from "@agentplane/sdk";

import { loadScenarios, match, runScenario, type Scenario } from "./conformance.js";
import { REPO_ROOT, TestServer } from "./server.js";

const scenarios = loadScenarios(join(REPO_ROOT, "tests", "conformance"));

describe("conformance", () => {
  let server: TestServer;
  before(async () => {
    server = await TestServer.start();
  });
  after(async () => {
    await server?.stop();
  });

  test("the suite has scenarios", () => {
    assert.ok(scenarios.length >= 10, `found ${scenarios.length} scenarios`);
  });

  test("the Python runner reads every scenario exactly as this one does", (t) => {
    const python = join(REPO_ROOT, ".venv", "bin", "python");
    if (!existsSync(python)) return t.skip(`${python} not found`);
    const dumped = execFileSync(python, [join(REPO_ROOT, "tests", "test_conformance.py")], {
      cwd: REPO_ROOT,
      encoding: "utf8",
      maxBuffer: 64 * 1024 * 1024,
    });
    assert.deepStrictEqual(JSON.parse(JSON.stringify(scenarios)), JSON.parse(dumped));
  });

  // Every scenario over every transport of the SDK: native gRPC to the gRPC listener, and the
  // Connect protocol (JSON, binary) and gRPC-Web to the HTTP listener, from Node's http modules
  // and from fetch (connect-web, as in browsers).
  const transports: [string, AgentplaneClientOptions][] = [
    ["grpc", {}],
    ["connect-json", { protocol: "connect" }],
    ["connect-binary", { protocol: "connect", binaryFormat: true }],
    ["grpc-web", { protocol: "grpc-web" }],
    ["connect-json over fetch", { protocol: "connect", runtime: "web" }],
  ];
  for (const [name, options] of transports) {
    describe(name, () => {
      for (const scenario of scenarios) {
        test(scenario.name, async (t) => {
          const url = options.protocol ? server.httpUrl : server.url;
          const client = server.client({ ...options, url });
          const outcome = await runScenario(scenario, client, server.adminKey);
          if (outcome.status === "skipped") t.skip(outcome.reason);
        });
      }
    });
  }
});

describe("the runner", () => {
  // A server that serves SessionService only: every other service answers UNIMPLEMENTED.
  const client = createAgentplaneClient({
    transport: createRouterTransport(({ service }) => {
      service(session.SessionService, {
        getSession: (request) => ({ session: { sessionId: request.sessionId } }),
      });
    }),
  });
  const scenario = (requires: string[]): Scenario => ({
    name: "probe",
    file: "probe.yaml",
    requires,
    steps: [
      {
        call: "SessionService.GetSession",
        request: { sessionId: "s-${uid}" },
        expect: { response: { session: { sessionId: { $regex: "^s-[0-9a-f]{8}$" } } } },
      },
      { call: "RegistryService.GetAgent", request: { agentId: "a" }, expect: { response: {} } },
    ],
  });

  test("skips a scenario whose required service answers UNIMPLEMENTED", async () => {
    assert.deepEqual(
      await runScenario(scenario(["SessionService", "RegistryService"]), client, "k"),
      {
        status: "skipped",
        reason: "RegistryService answers UNIMPLEMENTED (not served yet)",
      },
    );
  });

  test("fails, never passes, when the service is not in requires", async () => {
    await assert.rejects(
      runScenario(scenario(["SessionService"]), client, "k"),
      /UNIMPLEMENTED from RegistryService/,
    );
  });

  test("fails on a mismatch, naming the step and the path", async () => {
    const wrong: Scenario = {
      name: "wrong",
      file: "wrong.yaml",
      steps: [
        {
          name: "get",
          call: "SessionService.GetSession",
          request: { sessionId: "x" },
          expect: { response: { session: { sessionId: "y" } } },
        },
      ],
    };
    await assert.rejects(
      runScenario(wrong, client, "k"),
      /wrong step 1 \(get\)[\s\S]*response\.session\.sessionId: expected "y", got "x"/,
    );
  });

  test("the matching rules of tests/conformance/README.md", () => {
    assert.deepEqual(match({ a: 1 }, { a: "1", b: 2 }), []);
    assert.deepEqual(
      [match("", undefined), match(0, undefined), match(false, undefined)],
      [[], [], []],
    );
    assert.notDeepEqual(match([1, 2], ["1"]), []);
    assert.notDeepEqual(match({ $present: true }, ""), []);
    assert.deepEqual(match({ $present: false }, undefined), []);
    assert.deepEqual(match({ $len: { $gte: 2 } }, [1, 2, 3]), []);
    assert.deepEqual(match({ $contains: [{ x: 1 }] }, [{ x: 2 }, { x: 1, y: 0 }]), []);
    assert.deepEqual(match({ $contains: "bc" }, "abcd"), []);
    assert.deepEqual(match({ $regex: "^a.c$" }, "abc"), []);
    assert.notDeepEqual(match({ $regex: "^b" }, "abc"), []);
    assert.deepEqual(match({ $ne: "x" }, "y"), []);
    assert.notDeepEqual(match({ $ne: "x" }, "x"), []);
    assert.deepEqual(match({ $lte: 5 }, "5"), []);
    assert.notDeepEqual(match({ $gte: 6 }, "5"), []);
  });
});
