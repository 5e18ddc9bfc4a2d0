/**
 * The SDK in a real browser: headless Chromium (Debian's `chromium`, driven by playwright-core)
 * loads a page served from localhost, whose script (test/fixtures/browser/page.js, bundled with
 * esbuild from @agentplane/sdk/web) calls the server's HTTP listener from another origin, as a
 * web page does: CORS, the Connect protocol over fetch, no API key where a feedback token is the
 * credential, and a live WatchSession stream.
 */

import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { build } from "esbuild";
import { chromium, type BrowserContext, type Page } from "playwright-core";

import { feedback, session, type AgentplaneClient } from "@agentplane/sdk";

import { freePort, SDK_DIR, TestServer } from "./server.js";

const CHROMIUM = process.env.AGENTPLANE_CHROMIUM ?? "/usr/bin/chromium";
// Without the networking flags Chromium's own outbound attempts are refused in bulk here.
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

async function pageServer(port: number): Promise<Server> {
  const bundle = await build({
    entryPoints: [join(SDK_DIR, "test", "fixtures", "browser", "page.js")],
    bundle: true,
    platform: "browser",
    format: "esm",
    write: false,
    // client.js imports connect-node for Node; package.json's "browser" field empties it here.
    logOverride: { "import-is-undefined": "silent" },
  });
  const script = bundle.outputFiles[0]!.text;
  const html =
    '<!doctype html><title>Agentplane</title><p id="status">loading</p><ul id="log"></ul>' +
    '<script type="module" src="/app.js"></script>';
  const server = createServer((request, response) => {
    const path = (request.url ?? "/").split("?")[0];
    if (path === "/app.js") {
      response.writeHead(200, { "content-type": "text/javascript" }).end(script);
    } else if (path === "/") {
      response.writeHead(200, { "content-type": "text/html" }).end(html);
    } else {
      response.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  return server;
}

describe("in Chromium", () => {
  let server: TestServer;
  let web: Server;
  let context: BrowserContext;
  let page: Page;
  let admin: AgentplaneClient;
  let userDataDir: string;
  const authorizations: (string | undefined)[] = [];

  before(async () => {
    assert.ok(
      existsSync(CHROMIUM),
      `${CHROMIUM} not found: install Debian's chromium (apt-get install chromium)`,
    );
    const pagePort = await freePort();
    const origin = `http://localhost:${pagePort}`;
    web = await pageServer(pagePort);
    server = await TestServer.start(["--http-cors-origins", origin]);
    admin = server.client();
    userDataDir = mkdtempSync(join(tmpdir(), "agentplane-chromium-"));
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
    });
    page = context.pages()[0] ?? (await context.newPage());
    page.on("request", (request) => {
      if (request.url().endsWith("/SubmitFeedback")) {
        authorizations.push(request.headers()["authorization"]);
      }
    });
    await page.goto(`${origin}/?api=${encodeURIComponent(server.httpUrl)}`);
    await page.waitForFunction(() => document.getElementById("status")?.textContent === "ready");
  });

  after(async () => {
    await context?.close();
    await server?.stop();
    await new Promise((resolve) => web?.close(resolve));
    if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
  });

  test("an end user submits feedback with a signed token and no API key", async () => {
    const { session: created } = await admin.sessions.createSession({});
    const { messages } = await admin.sessions.appendMessages({
      sessionId: created!.sessionId,
      messages: [{ role: session.Role.ASSISTANT, content: "the answer" }],
    });
    const messageId = messages[0]!.messageId;
    const { token } = await admin.feedback.createFeedbackToken({
      sessionId: created!.sessionId,
      messageId,
    });

    const result = (await page.evaluate(
      (t) => (window as never as Page_).submitFeedback(t),
      token,
    )) as { ok: boolean; feedbackId?: string; messageId?: string; code?: string; message?: string };
    assert.ok(result.ok, `SubmitFeedback failed in the browser: ${result.code} ${result.message}`);
    assert.equal(result.messageId, messageId);
    assert.deepEqual(authorizations, [undefined], "the page sent no API key");

    const { feedback: stored } = await admin.feedback.getFeedback({
      feedbackId: result.feedbackId!,
    });
    assert.equal(stored!.rating, feedback.Rating.THUMBS_UP);
    assert.equal(stored!.comment, "helpful, sent from a browser");
    assert.equal(stored!.sessionId, created!.sessionId);

    // The same token from the page once more, with a forged one: the server refuses the
    // forgery with its typed error, and the page reads it (CORS exposes the status).
    const forged = (await page.evaluate(
      (t) => (window as never as Page_).submitFeedback(t),
      `${token.slice(0, -4)}AAAA`,
    )) as { ok: boolean; code?: string };
    assert.equal(forged.ok, false);
    assert.ok(["UNAUTHENTICATED", "PERMISSION_DENIED", "INVALID_ARGUMENT"].includes(forged.code!));
  });

  for (const binaryFormat of [false, true]) {
    const format = binaryFormat ? "binary" : "JSON";
    test(`follows WatchSession live while another client appends (${format})`, async () => {
      const { session: created } = await admin.sessions.createSession({});
      const sessionId = created!.sessionId;
      await admin.sessions.appendMessages({
        sessionId,
        messages: [{ role: session.Role.USER, content: "before the page watched" }],
      });
      await page.evaluate(() => {
        (window as never as Page_).watched.length = 0;
      });
      await page.evaluate(
        ([id, key, binary]) => (window as never as Page_).watchSession(id, key, binary),
        [sessionId, server.adminKey, binaryFormat] as const,
      );
      await page.waitForFunction(() => (window as never as Page_).watched.length >= 1);
      for (const content of ["live one", "live two"]) {
        await admin.sessions.appendMessages({
          sessionId,
          messages: [{ role: session.Role.ASSISTANT, content }],
        });
      }
      await page.waitForFunction(() => (window as never as Page_).watched.length >= 3, null, {
        timeout: 15_000,
      });
      const watched = await page.evaluate(() => (window as never as Page_).watched);
      assert.deepEqual(watched.slice(0, 3), [
        { sequence: 1, content: "before the page watched" },
        { sequence: 2, content: "live one" },
        { sequence: 3, content: "live two" },
      ]);
      assert.equal(await page.evaluate(() => (window as never as Page_).watchError), null);
    });
  }
});

/** What page.js puts on window. */
interface Page_ {
  submitFeedback(token: string): Promise<unknown>;
  watchSession(sessionId: string, apiKey: string, binaryFormat: boolean): void;
  watched: { sequence: number; content: string }[];
  watchError: string | null;
}
