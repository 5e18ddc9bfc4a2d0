/**
 * The client against a real server: typed calls, page iterators, deadlines, retries, typed
 * errors with their google.rpc details, credentials, projects and TLS.
 */

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import {
  AbortedError,
  admin,
  Code,
  CONTRACT_DIGEST,
  CONTRACT_VERSION,
  createAgentplaneClient,
  DeadlineExceededError,
  InvalidArgumentError,
  NotFoundError,
  parseTarget,
  RpcError,
  SDK_VERSION,
  session,
  UnauthenticatedError,
  UnavailableError,
  common,
  type AgentplaneClient,
} from "@agentplane/sdk";
import type { Interceptor } from "@connectrpc/connect";

import { freePort, SDK_DIR, TestServer } from "./server.js";

describe("parseTarget", () => {
  test("host:port is plaintext; grpcs and https are TLS; ports default by scheme", () => {
    assert.deepEqual(parseTarget("127.0.0.1:50051", undefined), {
      baseUrl: "http://127.0.0.1:50051",
      authority: "127.0.0.1:50051",
      tls: undefined,
    });
    assert.equal(parseTarget("grpc://agentplane", undefined).baseUrl, "http://agentplane:50051");
    assert.equal(
      parseTarget("grpcs://agentplane.example.com", undefined).baseUrl,
      "https://agentplane.example.com:443",
    );
    assert.equal(parseTarget("https://h:8443/", undefined).authority, "h:8443");
    assert.equal(parseTarget("[::1]:7000", undefined).baseUrl, "http://[::1]:7000");
    assert.deepEqual(parseTarget("h:1", true).tls, {});
    assert.equal(parseTarget("grpcs://h:1", false).tls, undefined);
    assert.throws(() => parseTarget("ftp://h:1", undefined), /unsupported scheme/);
    assert.throws(() => parseTarget("h:1/path", undefined), /host:port/);
  });

  test("a client needs a url, from the options or AGENTPLANE_URL", () => {
    assert.throws(() => createAgentplaneClient({ env: {} }), /needs a url/);
    const client = createAgentplaneClient({
      env: { AGENTPLANE_URL: "127.0.0.1:1", AGENTPLANE_API_KEY: "k" },
    });
    assert.equal(client.target, "127.0.0.1:1");
    client.close();
  });
});

test("every generated module is exported through a package namespace", () => {
  // src/types/<package>.ts re-export the generated files; a new .proto must be added there.
  const gen = join(SDK_DIR, "src", "gen", "agentplane");
  for (const pkg of readdirSync(gen)) {
    const index = readFileSync(join(SDK_DIR, "src", "types", `${pkg}.ts`), "utf8");
    for (const file of readdirSync(join(gen, pkg, "v1"))) {
      const module = `../gen/agentplane/${pkg}/v1/${file.replace(/\.ts$/, ".js")}`;
      assert.ok(index.includes(`"${module}"`), `src/types/${pkg}.ts does not export ${module}`);
    }
  }
  assert.equal(session.Role[session.Role.USER], "USER");
  assert.equal(common.ErrorReason.SESSION_NOT_FOUND, 11);
  assert.equal(admin.Role.READER, 4);
  assert.match(CONTRACT_VERSION, /^\d+\.\d+\.\d+/);
  const pkg = JSON.parse(readFileSync(join(SDK_DIR, "package.json"), "utf8")) as {
    version: string;
  };
  assert.equal(SDK_VERSION, pkg.version, "SDK_VERSION follows package.json");
});

describe("against a server", () => {
  let server: TestServer;
  let client: AgentplaneClient;
  const calls: string[] = [];
  const counting: Interceptor = (next) => async (request) => {
    calls.push(request.method.name);
    return next(request);
  };

  before(async () => {
    server = await TestServer.start();
    client = server.client({ interceptors: [counting] });
  });
  after(async () => {
    await server?.stop();
  });

  test("the server speaks this SDK's contract", async () => {
    const info = await client.serverInfo();
    assert.equal(info.contractVersion, CONTRACT_VERSION);
    assert.equal(info.contractDigest, CONTRACT_DIGEST);
    assert.equal(await client.checkContract(), true);
    assert.equal(info.principal?.projectId, "default");
  });

  test("sessions: create, append, list lazily page by page, watch", async () => {
    const { session: created } = await client.sessions.createSession({
      title: "ts",
      labels: { sdk: "ts" },
    });
    assert.ok(created?.sessionId.startsWith("ses_"));
    const sessionId = created!.sessionId;
    const appended = await client.sessions.appendMessages({
      sessionId,
      messages: Array.from({ length: 5 }, (_, i) => ({
        role: session.Role.USER,
        content: `m${i + 1}`,
        agentId: "ts-agent",
        usage: { inputTokens: 2n, costMicros: 5n },
      })),
    });
    assert.equal(appended.lastSequence, 5n);

    calls.length = 0;
    const iterator = client.sessions.listMessages({ sessionId, pageSize: 2 });
    assert.deepEqual(calls, [], "a list iterator sends nothing before it is read");
    const contents = [];
    for await (const message of iterator) contents.push(message.content);
    assert.deepEqual(contents, ["m1", "m2", "m3", "m4", "m5"]);
    assert.deepEqual(calls, ["ListMessages", "ListMessages", "ListMessages"], "three pages of two");

    const pages = [];
    for await (const page of client.sessions.listMessages({ sessionId, pageSize: 4 }).pages())
      pages.push(page.messages.length);
    assert.deepEqual(pages, [4, 1]);
    assert.equal((await client.sessions.listMessages({ sessionId }).toArray(3)).length, 3);

    const page = await client.sessions.listMessagesPage({ sessionId, pageSize: 2 });
    assert.equal(page.messages.length, 2);
    assert.notEqual(page.nextPageToken, "");

    const usage = await client.sessions.getSessionUsage({ sessionId });
    assert.equal(usage.total?.inputTokens, 10n);
    assert.equal(usage.total?.costMicros, 25n);

    const watched = [];
    for await (const event of client.sessions.watchSession({ sessionId, afterSequence: 3n })) {
      watched.push(event.message?.sequence);
      if (watched.length === 2) break;
    }
    assert.deepEqual(watched, [4n, 5n]);

    const raw = await client.sessions.raw.getSession({ sessionId }, { timeoutMs: 5000 });
    assert.equal(raw.session?.messageCount, 5n);
  });

  test("errors are typed and carry ErrorInfo, BadRequest and RequestInfo", async () => {
    const missing = await client.sessions
      .getSession({ sessionId: "nope-ts" })
      .catch((e: unknown) => e);
    assert.ok(missing instanceof NotFoundError);
    assert.ok(missing instanceof RpcError);
    assert.equal(missing.code, Code.NotFound);
    assert.equal(missing.codeName, "NOT_FOUND");
    assert.equal(missing.reason, "ERROR_REASON_SESSION_NOT_FOUND");
    assert.equal(missing.errorReason, common.ErrorReason.SESSION_NOT_FOUND);
    assert.equal(missing.domain, "agentplane.dev");
    assert.deepEqual(missing.metadata, { session_id: "nope-ts" });
    assert.match(missing.requestId, /.+/);
    assert.equal(missing.method, "agentplane.session.v1.SessionService/GetSession");
    assert.match(
      missing.message,
      /^NOT_FOUND: .*reason=ERROR_REASON_SESSION_NOT_FOUND request_id=/,
    );

    const bad = await client.sessions
      .createSession({ sessionId: "-bad", title: "x".repeat(600) })
      .catch((e: unknown) => e);
    assert.ok(bad instanceof InvalidArgumentError);
    assert.equal(bad.reason, "ERROR_REASON_INVALID_REQUEST");
    assert.deepEqual(Object.keys(bad.violationsByField).sort(), ["session_id", "title"]);
    assert.equal(
      bad.fieldViolations.find((v) => v.field === "session_id")?.reason,
      "string.pattern",
    );

    const { session: s } = await client.sessions.createSession({});
    const first = s!.etag;
    await client.sessions.updateSession({
      session: { sessionId: s!.sessionId, title: "a", etag: first },
      updateMask: { paths: ["title"] },
    });
    const stale = await client.sessions
      .updateSession({
        session: { sessionId: s!.sessionId, title: "b", etag: first },
        updateMask: { paths: ["title"] },
      })
      .catch((e: unknown) => e);
    assert.ok(stale instanceof AbortedError);
    assert.equal(stale.reason, "ERROR_REASON_ETAG_MISMATCH");
  });

  test("credentials and projects", async () => {
    const denied = await client
      .withOptions({ apiKey: "ap_wrong" })
      .serverInfo()
      .catch((e: unknown) => e);
    assert.ok(denied instanceof UnauthenticatedError);

    const { key } = await client.admin.createApiKey({
      role: admin.Role.READER,
      displayName: "ts reader",
    });
    const reader = client.withOptions({ apiKey: key });
    assert.equal((await reader.serverInfo()).principal?.role, admin.Role.READER);

    const projectId = `ts-${Date.now().toString(36)}`;
    await client.admin.createProject({ projectId });
    const inProject = client.withOptions({ project: projectId });
    const { session: s } = await inProject.sessions.createSession({ sessionId: "in-project" });
    assert.equal(s?.projectId, projectId);
    await assert.rejects(client.sessions.getSession({ sessionId: "in-project" }), NotFoundError);
  });

  test("a deadline ends a call with DeadlineExceededError", async () => {
    const { session: s } = await client.sessions.createSession({});
    const started = Date.now();
    const error = await (async () => {
      for await (const _ of client.sessions.watchSession(
        { sessionId: s!.sessionId },
        { timeoutMs: 300 },
      )) {
        // no messages: the stream waits until the deadline
      }
    })().catch((e: unknown) => e);
    assert.ok(error instanceof DeadlineExceededError, String(error));
    assert.ok(Date.now() - started < 5000);
  });

  test("an AbortSignal cancels a call", async () => {
    const { session: s } = await client.sessions.createSession({});
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 100);
    const error = await (async () => {
      for await (const _ of client.sessions.watchSession(
        { sessionId: s!.sessionId },
        { signal: controller.signal },
      )) {
        // nothing arrives
      }
    })().catch((e: unknown) => e);
    assert.ok(error instanceof RpcError && error.codeName === "CANCELLED", String(error));
  });
});

describe("retries", () => {
  test("an unreachable server: idempotent calls and calls with a request_id are retried within the deadline, others are not", async () => {
    const port = await freePort(); // nothing listens there
    const sent: string[] = [];
    const recorder: Interceptor = (next) => async (request) => {
      sent.push(
        `${request.method.name}:${(request.message as { requestId?: string }).requestId ?? ""}`,
      );
      return next(request);
    };
    const retried: number[] = [];
    const client = createAgentplaneClient({
      url: `127.0.0.1:${port}`,
      apiKey: "k",
      interceptors: [recorder],
      retry: {
        maxAttempts: 3,
        initialBackoffMs: 10,
        jitter: 0,
        onRetry: (_e, attempt) => retried.push(attempt),
      },
    });
    try {
      await assert.rejects(client.sessions.getSession({ sessionId: "x" }), UnavailableError);
      assert.deepEqual(retried, [1, 2], "GetSession is NO_SIDE_EFFECTS: three attempts");

      retried.length = 0;
      sent.length = 0;
      await assert.rejects(client.sessions.createSession({ title: "t" }), UnavailableError);
      assert.equal(sent.length, 3, "CreateSession carries a request_id: retried");
      const ids = new Set(sent.map((s) => s.split(":")[1]));
      assert.equal(ids.size, 1, "every attempt of one call shares its request_id");
      assert.match([...ids][0]!, /^[0-9a-f]{32}$/);

      retried.length = 0;
      await assert.rejects(
        client.sessions.updateSession({
          session: { sessionId: "x" },
          updateMask: { paths: ["title"] },
        }),
        UnavailableError,
      );
      assert.deepEqual(retried, [], "UpdateSession is neither idempotent nor has a request_id");

      retried.length = 0;
      await assert.rejects(
        client.sessions.getSession({ sessionId: "x" }, { retry: false }),
        UnavailableError,
      );
      assert.deepEqual(retried, []);

      sent.length = 0;
      await assert.rejects(
        client.admin.createApiKey({ role: admin.Role.READER }),
        UnavailableError,
      );
      assert.equal(
        sent.length,
        1,
        "CreateApiKey never gets an automatic request_id (its secret is shown once)",
      );
    } finally {
      client.close();
    }
  });
});

describe("TLS", () => {
  let server: TestServer | undefined;
  let ca: Buffer;
  before(async () => {
    const dir = mkdtempSync(join(tmpdir(), "agentplane-ts-tls-"));
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        join(dir, "key.pem"),
        "-out",
        join(dir, "cert.pem"),
        "-days",
        "1",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
      ],
      { stdio: "ignore" },
    );
    ca = readFileSync(join(dir, "cert.pem"));
    server = await TestServer.start(
      ["--tls-cert", join(dir, "cert.pem"), "--tls-key", join(dir, "key.pem")],
      { ca },
    );
  });
  after(async () => {
    await server?.stop();
  });

  test("grpcs:// with the server's CA", async () => {
    const client = createAgentplaneClient({
      url: `grpcs://${server!.url}`,
      apiKey: server!.adminKey,
      tls: { ca },
    });
    try {
      assert.equal((await client.serverInfo()).contractDigest, CONTRACT_DIGEST);
    } finally {
      client.close();
    }
  });

  test("a certificate the client does not trust is refused", async () => {
    const client = createAgentplaneClient({
      url: `grpcs://${server!.url}`,
      apiKey: server!.adminKey,
      retry: false,
    });
    try {
      await assert.rejects(client.serverInfo({ timeoutMs: 5000 }), RpcError);
    } finally {
      client.close();
    }
  });
});
