// The console's browser driver for the end-to-end tests (tests/test_console.py): one headless
// Chromium (Debian's, driven by playwright-core) reused by every scenario, each in a fresh
// context (so a fresh sessionStorage). It reads one JSON command per line on stdin and answers
// one JSON line on stdout, so the Python test can act as agents between steps and assert on
// what the page showed. Screenshots go to SCREENSHOT_DIR.
//
//   SCREENSHOT_DIR=/tmp/shots node console/e2e/driver.mjs
//   {"op": "session", "baseUrl": "http://127.0.0.1:8080", "token": "...", "sessionId": "support-42"}

import { createInterface } from "node:readline";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const shots = process.env.SCREENSHOT_DIR;
if (!shots) throw new Error("SCREENSHOT_DIR is required");
// The server and the screenshot name prefix of the scenario being run.
let baseUrl = "";
let label = "";
mkdirSync(shots, { recursive: true });

// Without the networking flags Chromium's own outbound attempts (updates, sync, QUIC probes) are
// refused in bulk on machines without internet, and slow everything down.
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

/** Every request any page made, with the origin and whether it carried a credential. */
const requests = [];
/** Console messages and page errors, to find a logged credential or a crash. */
const consoleLines = [];

async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  const page = await context.newPage();
  page.on("request", (request) => {
    const headers = request.headers();
    requests.push({ url: request.url(), authorization: headers.authorization ?? "" });
  });
  page.on("console", (message) => consoleLines.push(message.text()));
  page.on("pageerror", (error) => consoleLines.push(`pageerror: ${error.message}`));
  page.setDefaultTimeout(20_000);
  return { context, page };
}

async function shot(page, name) {
  const path = join(shots, `${label}${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/** Opens `path` (a deep link) signed out, signs in there, and waits for the header. */
async function signIn(page, token, path) {
  await page.goto(new URL(path, baseUrl).toString());
  await page.getByTestId("credential").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByTestId("role").waitFor();
}

async function storageOf(page) {
  return page.evaluate(() => ({
    local: Object.fromEntries(Object.entries(localStorage)),
    session: Object.fromEntries(Object.entries(sessionStorage)),
    url: location.href,
    cookies: document.cookie,
  }));
}

const scenarios = {
  /** A wrong or expired credential: the message the sign-in form shows. */
  async badCredential({ token }) {
    const { context, page } = await newPage();
    await page.goto(new URL("/sessions", baseUrl).toString());
    await page.getByTestId("credential").fill(token);
    await page.getByRole("button", { name: "Sign in" }).click();
    const error = await page.getByTestId("signin-error").textContent();
    const screenshot = await shot(page, "signin-error");
    const storage = await storageOf(page);
    await context.close();
    return { error, storage, screenshot };
  },

  /** Signs in on the home page: the role and identity the header shows. */
  async whoami({ token }) {
    const { context, page } = await newPage();
    await signIn(page, token, "/");
    await page.waitForURL(/\/sessions$/);
    const role = await page.getByTestId("role").textContent();
    const whoami = await page.getByTestId("whoami").textContent();
    const storage = await storageOf(page);
    await context.close();
    return { role, whoami, storage };
  },

  /** A session's timeline and cost per agent, opened by its deep link. */
  async session({ token, sessionId, liveContent }) {
    const { context, page } = await newPage();
    await signIn(page, token, `/sessions/${encodeURIComponent(sessionId)}`);
    await page.getByTestId("message").first().waitFor();
    await page.getByTestId("usage-by-agent").waitFor();
    await page.getByTestId("live").filter({ hasText: /^live$/ }).waitFor();
    const storedMessages = await page.getByTestId("message").count();
    const role = await page.getByTestId("role").textContent();
    const messages = await page.getByTestId("message").evaluateAll((items) =>
      items.map((item) => ({
        agent: item.querySelector('[data-testid="message-agent"]')?.textContent ?? "",
        content: item.querySelector(".content")?.textContent ?? "",
      })),
    );
    const costs = await page.locator('[data-testid="usage-by-agent"] tr[data-agent]').evaluateAll((rows) =>
      rows.map((row) => ({ agent: row.getAttribute("data-agent"), cost: row.querySelector(".cost")?.textContent ?? "" })),
    );
    // The caller appends a message now; it must appear without a reload (WatchSession).
    process.stdout.write(`${JSON.stringify({ event: "watching" })}\n`);
    const live = page.getByTestId("message").nth(storedMessages);
    await live.filter({ hasText: liveContent }).waitFor();
    const liveAgent = await live.getByTestId("message-agent").textContent();
    const forks = await page.getByTestId("forks").textContent();
    await page.getByTestId("usage-by-agent").locator("tr[data-agent]").first().waitFor();
    const screenshot = await shot(page, "session");
    const list = await (async () => {
      await page.getByRole("link", { name: "Sessions", exact: true }).click();
      await page.getByTestId("sessions").locator("tbody tr").first().waitFor();
      return shot(page, "sessions");
    })();
    const storage = await storageOf(page);
    await context.close();
    return { role, messages, costs, liveAgent, forks, storage, screenshots: [screenshot, list] };
  },

  /** A reviewer resolves the pending approval of `agentId` from the queue. */
  async approve({ token, agentId, comment, state = "approve" }) {
    const { context, page } = await newPage();
    await signIn(page, token, "/governance/approvals");
    const card = page.locator(`[data-testid="approval"]`).filter({ hasText: agentId }).first();
    await card.waitFor();
    const approvalId = await card.getAttribute("data-approval");
    await card.getByTestId("comment").fill(comment);
    await shot(page, "approvals-pending");
    await card.getByTestId(state).click();
    const done = page.locator(`[data-approval="${approvalId}"]`);
    await done.filter({ has: page.locator(".badge", { hasText: state === "approve" ? "approved" : "rejected" }) }).first().waitFor();
    const screenshot = await shot(page, "approvals-resolved");
    // The approval's own page follows it through WatchApproval.
    await page.goto(new URL(`/governance/approvals/${approvalId}`, baseUrl).toString());
    await page.getByTestId("approval").waitFor();
    const detailState = await page.getByTestId("approval").getAttribute("data-state");
    const detail = await shot(page, "approval");
    await context.close();
    return { approvalId, detailState, screenshots: [screenshot, detail] };
  },

  /** A reader sees the queue with no approve button; a call forced from the page is refused. */
  async readerApproval({ token, approvalId }) {
    const { context, page } = await newPage();
    await signIn(page, token, "/governance/approvals");
    const card = page.locator(`[data-approval="${approvalId}"]`);
    await card.waitFor();
    const approveButtons = await page.getByTestId("approve").count();
    const readOnly = await card.getByTestId("read-only").count();
    const screenshot = await shot(page, "approvals-reader");
    // What a user could type in the devtools console: the reader's own credential, the
    // contract's JSON, straight to the server.
    const forced = await page.evaluate(async (id) => {
      const stored = JSON.parse(sessionStorage.getItem("agentplane.console.credential") ?? "{}");
      const response = await fetch("/agentplane.governance.v1.GovernanceService/ResolveApproval", {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${stored.token}` },
        body: JSON.stringify({ approvalId: id, state: "APPROVAL_STATE_APPROVED", comment: "forced" }),
      });
      return { status: response.status, body: await response.json() };
    }, approvalId);
    await context.close();
    return { approveButtons, readOnly, forced, screenshot };
  },

  /** A trace's waterfall: its spans in tree order with their depth and GenAI attributes. */
  async trace({ token, traceId, open }) {
    const { context, page } = await newPage();
    await signIn(page, token, `/traces/${traceId}`);
    await page.getByTestId("span").first().waitFor();
    const spans = await page.getByTestId("span").evaluateAll((rows) =>
      rows.map((row) => {
        const label = row.querySelector(".wf-label");
        const bar = row.querySelector(".wf-bar");
        return {
          name: row.getAttribute("data-span-name"),
          indent: parseInt(label?.style.paddingLeft ?? "0", 10),
          left: parseFloat(bar?.style.left ?? "0"),
          width: parseFloat(bar?.style.width ?? "0"),
          attributes: [...row.querySelectorAll(".wf-gen .attr")].map((a) => a.textContent),
        };
      }),
    );
    await page.locator(`[data-span-name="${open}"] .wf-label`).click();
    await page.getByTestId("span-detail").waitFor();
    const detail = await page.getByTestId("span-detail").textContent();
    const screenshot = await shot(page, "trace");
    await page.getByRole("link", { name: "Traces", exact: true }).click();
    await page.getByTestId("traces").locator("tbody tr").first().waitFor();
    const list = await shot(page, "traces");
    await context.close();
    return { spans, detail, screenshots: [screenshot, list] };
  },

  /** Feedback filtered to one agent (through the filter bar): the rows and the chart's data. */
  async feedback({ token, agentId }) {
    const { context, page } = await newPage();
    await signIn(page, token, "/feedback");
    await page.getByTestId("filters").locator('input[name="agent"]').fill(agentId);
    await page.getByTestId("filters").getByRole("button", { name: "Apply" }).click();
    await page.waitForURL((url) => url.searchParams.get("agent") === agentId);
    await page.getByTestId("feedback-row").first().waitFor();
    await page.getByTestId("summary-chart").locator("canvas").first().waitFor();
    const rows = await page.getByTestId("feedback-row").evaluateAll((items) => items.map((i) => i.getAttribute("data-agent")));
    const charts = await page.getByTestId("summary-agent").evaluateAll((cards) =>
      cards.map((card) => ({
        agent: card.getAttribute("data-agent"),
        canvases: card.querySelectorAll("canvas").length,
        buckets: [...card.querySelectorAll('[data-testid="summary-bucket"]')].map((b) => ({
          start: b.getAttribute("data-start"),
          up: b.getAttribute("data-up"),
          down: b.getAttribute("data-down"),
          count: b.getAttribute("data-count"),
        })),
      })),
    );
    const url = page.url();
    const screenshot = await shot(page, "feedback");
    await context.close();
    return { rows, charts, url, screenshot };
  },

  /** A long list, opened by a filtered link: one page first, the next as the end scrolls in. */
  async scrollFeedback({ token, agentId, expected }) {
    const { context, page } = await newPage();
    await signIn(page, token, `/feedback?agent=${encodeURIComponent(agentId)}`);
    await page.getByTestId("feedback-row").first().waitFor();
    await page.getByText(/Load more|End of list/).waitFor();
    const first = await page.getByTestId("feedback-row").count();
    await page.locator(".more").last().scrollIntoViewIfNeeded();
    await page.getByTestId("feedback-row").nth(expected - 1).waitFor();
    await page.getByText("End of list.").last().waitFor();
    const all = await page.getByTestId("feedback-row").count();
    await context.close();
    return { first, all };
  },

  /** An admin picks another project: the views show that project's records (and keep it). */
  async adminProject({ token, projectId, sessionId }) {
    const { context, page } = await newPage();
    await signIn(page, token, "/sessions");
    const role = await page.getByTestId("role").textContent();
    await page.getByTestId("project").locator(`option[value="${projectId}"]`).waitFor({ state: "attached" });
    await page.getByTestId("project").selectOption(projectId);
    await page.getByRole("link", { name: sessionId }).waitFor();
    const rows = await page.getByTestId("sessions").locator("tbody tr").count();
    await page.reload();
    await page.getByRole("link", { name: sessionId }).waitFor();
    const chosen = await page.getByTestId("project").inputValue();
    const screenshot = await shot(page, "admin-project");
    const storage = await storageOf(page);
    await context.close();
    return { role, rows, chosen, storage, screenshot };
  },

  /** Every other page, for the screenshots: they must render without an error box. */
  async tour({ token, agentId, lateAgentId, disablePolicyId }) {
    const { context, page } = await newPage();
    await signIn(page, token, "/agents");
    const pages = {};
    const visit = async (name, path, ready) => {
      await page.goto(new URL(path, baseUrl).toString());
      await page.getByTestId(ready).waitFor({ state: "attached" });
      await page.getByText("Loading…").waitFor({ state: "detached" });
      await page.waitForTimeout(300); // charts and live streams settle
      pages[name] = { screenshot: await shot(page, name), errors: await page.getByRole("alert").allTextContents() };
    };
    await visit("agents", "/agents", "agents");
    await page.locator(`[data-testid="agents"] tr[data-agent="${agentId}"]`).waitFor();
    // The caller registers another agent now: it must appear without a reload (WatchAgents).
    process.stdout.write(`${JSON.stringify({ event: "agents-open" })}\n`);
    await page.locator(`[data-testid="agents"] tr[data-agent="${lateAgentId}"]`).waitFor();
    pages.agents.screenshot = await shot(page, "agents");
    await visit("agent", `/agents/${encodeURIComponent(agentId)}`, "trust-events");
    await visit("decisions", "/governance/decisions", "decisions");
    await visit("policies", "/governance/policies", "policies");
    await page.getByTestId("cel").first().waitFor();
    pages.policies.screenshot = await shot(page, "policies");
    // A project admin may turn a policy off (UpdatePolicy with its etag).
    const policy = page.locator(`[data-policy="${disablePolicyId}"]`);
    await policy.getByRole("button", { name: "Disable" }).click();
    await policy.getByText("disabled", { exact: true }).waitFor();
    await visit("models", "/models", "models");
    const storage = await storageOf(page);
    await context.close();
    return { pages, storage };
  },

  /** Everything the pages requested and logged since the last audit (credential checks). */
  async audit() {
    return { requests: requests.splice(0), consoleLines: consoleLines.splice(0) };
  },
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const { op, baseUrl: url, prefix, ...args } = JSON.parse(line);
  baseUrl = url ?? baseUrl;
  label = prefix ?? "";
  let answer;
  try {
    if (op === "close") break;
    answer = { ok: true, result: await scenarios[op](args) };
  } catch (error) {
    answer = { ok: false, error: String(error?.stack ?? error) };
  }
  process.stdout.write(`${JSON.stringify(answer)}\n`);
}
await browser.close();
