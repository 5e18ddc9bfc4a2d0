/**
 * Governance on the path of every agent action: Governor and governed(), with the Python SDK's
 * semantics (agentplane._governed):
 *
 * - A check is answered from the decision cache when CheckPermission said (cache_ttl) that its
 *   decision may be reused for the same action, resource and context; otherwise by
 *   CheckPermission, with the governor's timeoutMs as the deadline of all attempts together.
 *   Checks that carry a usage estimate or an approval are never answered from the cache.
 * - When Agentplane cannot be reached in time (UNAVAILABLE, DEADLINE_EXCEEDED) the check fails
 *   closed with GovernanceUnavailable, unless failOpen is set. Other errors (bad input,
 *   credentials, UNIMPLEMENTED) always throw: they are bugs to fix, not outages to ride out.
 * - DENY throws ActionDenied; REQUIRE_APPROVAL throws ApprovalRequired, or with
 *   waitForApprovalMs watches the approval and checks again with it once approved.
 * - Execution reports (ReportExecution) leave the caller's path: they are queued and sent in the
 *   background, each with a request_id so retries count once; flush() waits for the queue.
 *
 * - With watch, a WatchPolicies stream keeps the agent's policies, and checks without context,
 *   usage estimate or approval are decided locally (PolicyState in decision.ts, the shared
 *   decision rule) whenever the answer is surely CheckPermission's: ALLOW or DENY with no
 *   condition, uncertain trust or budget involved; otherwise the server is asked. The cache is
 *   emptied whenever the stream reports a change.
 * - Null mode (a Governor made with a null client, and the default governor when AGENTPLANE_URL
 *   is not set): every check is ALLOW without a call, reports are dropped, validation accepts.
 */

import { AsyncLocalStorage } from "node:async_hooks";
import { create, type JsonObject, type MessageInitShape } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";

import type { AgentplaneClient } from "./client.js";
import { createAgentplaneClient } from "./client.js";
import { ENV_AGENT_ID, ENV_URL } from "./config.js";
import { type Outcome, PolicyState } from "./decision.js";
import {
  ActionDenied,
  ApprovalRequired,
  GovernanceUnavailable,
  OutputRejected,
  RpcError,
} from "./errors.js";
import type { UsageSchema } from "./gen/agentplane/common/v1/usage_pb.js";
import { ApprovalState } from "./gen/agentplane/governance/v1/approval_pb.js";
import {
  Decision as DecisionKind,
  Detector,
  Verdict,
} from "./gen/agentplane/governance/v1/decision_pb.js";
import {
  ReportExecutionRequestSchema,
  ValidateOutputResponseSchema,
  type CheckPermissionResponse,
  type ReportExecutionRequest,
  type ValidateOutputResponse,
} from "./gen/agentplane/governance/v1/governance_service_pb.js";
import { ExecutionOutcome } from "./gen/agentplane/governance/v1/trust_pb.js";

export { ExecutionOutcome, Verdict, Detector, DecisionKind, ApprovalState };

export const DEFAULT_CHECK_TIMEOUT_MS = 2000;

export type UsageInit = MessageInitShape<typeof UsageSchema>;

/** Where a decision came from: "local" is decided from the WatchPolicies state, "null" is null
 * mode (no server configured). */
export type DecisionSource = "server" | "cache" | "local" | "fail_open" | "null";

/** A permission decision and where it came from. */
export interface Decision {
  decision: DecisionKind;
  source: DecisionSource;
  reasons: string[];
  decisionId: string;
  decidingPolicyId: string;
  matchedPolicyIds: string[];
  approvalId: string;
  /** How long the server said the decision may be reused, in milliseconds (0: not at all). */
  cacheTtlMs: number;
  trustScore: number | undefined;
  /** True for ALLOW. */
  allowed: boolean;
  /** "DECISION_ALLOW", "DECISION_DENY", "DECISION_REQUIRE_APPROVAL" */
  name: string;
}

function decisionName(decision: DecisionKind): string {
  return `DECISION_${DecisionKind[decision] ?? "UNSPECIFIED"}`;
}

function fromResponse(response: CheckPermissionResponse): Decision {
  const ttl = response.cacheTtl;
  return {
    decision: response.decision,
    source: "server",
    reasons: [...response.reasons],
    decisionId: response.decisionId,
    decidingPolicyId: response.decidingPolicyId,
    matchedPolicyIds: [...response.matchedPolicyIds],
    approvalId: response.approvalId,
    cacheTtlMs: ttl ? Number(ttl.seconds) * 1000 + ttl.nanos / 1e6 : 0,
    trustScore: response.trustScore,
    allowed: response.decision === DecisionKind.ALLOW,
    name: decisionName(response.decision),
  };
}

/** JSON with sorted keys, so equal contexts give equal cache keys (Python: sort_keys=True). */
function fromLocal(outcome: Outcome, trustScore: number | undefined): Decision {
  return {
    decision: outcome.decision,
    source: "local",
    reasons: outcome.reasons,
    decisionId: "",
    decidingPolicyId: outcome.deciding?.policyId ?? "",
    matchedPolicyIds: outcome.matched.map((r) => r.policyId),
    approvalId: "",
    cacheTtlMs: 0,
    trustScore,
    allowed: outcome.decision === DecisionKind.ALLOW,
    name: decisionName(outcome.decision),
  };
}

function nullDecision(): Decision {
  return {
    decision: DecisionKind.ALLOW,
    source: "null",
    reasons: ["null mode: no Agentplane server configured"],
    decisionId: "",
    decidingPolicyId: "",
    matchedPolicyIds: [],
    approvalId: "",
    cacheTtlMs: 0,
    trustScore: undefined,
    allowed: true,
    name: decisionName(DecisionKind.ALLOW),
  };
}

/** The stream can report a change before every replica decides with it (the contract allows up
 * to a second): server decisions made in that window are not cached. */
const POLICY_PROPAGATION_MS = 1000;

function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value) ?? "null";
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
}

function cacheKey(action: string, resource: string, context: JsonObject | undefined): string {
  const hasContext = context !== undefined && Object.keys(context).length > 0;
  return JSON.stringify([action, resource, hasContext ? canonicalJson(context) : null]);
}

/** Server decisions by (action, resource, context), each until its cache_ttl runs out. */
export class DecisionCache {
  private readonly entries = new Map<string, { expires: number; decision: Decision }>();
  constructor(
    readonly maxEntries = 10_000,
    private readonly now: () => number = () => performance.now(),
  ) {}

  get(key: string): Decision | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.expires > this.now()) return entry.decision;
    this.entries.delete(key);
    return undefined;
  }

  put(key: string, decision: Decision, ttlMs: number): void {
    if (ttlMs <= 0) return;
    if (this.entries.size >= this.maxEntries) {
      const now = this.now();
      for (const [k, entry] of this.entries) if (entry.expires <= now) this.entries.delete(k);
      while (this.entries.size >= this.maxEntries) {
        this.entries.delete(this.entries.keys().next().value as string); // the oldest entry
      }
    }
    this.entries.delete(key);
    this.entries.set(key, { expires: this.now() + ttlMs, decision });
  }

  clear(): void {
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }
}

export interface GovernorOptions {
  /** The agent acting; empty means the credential's own agent (agent API keys). */
  agentId?: string;
  /** Deadline of each check, retries included (default 2000 ms). */
  timeoutMs?: number;
  /** Allow actions while Agentplane is unreachable (default false: fail closed). */
  failOpen?: boolean;
  /** Reuse decisions for their cache_ttl (default true). */
  cache?: boolean;
  /** Send execution reports (default true). */
  report?: boolean;
  /** Wait this long for a REQUIRE_APPROVAL to be resolved instead of throwing at once. */
  waitForApprovalMs?: number;
  maxQueuedReports?: number;
  /** Keep a WatchPolicies stream and decide locally when the answer is sure (default false). */
  watch?: boolean;
}

export interface CheckOptions {
  resource?: string;
  context?: JsonObject;
  usageEstimate?: UsageInit;
  approvalId?: string;
}

export interface AuthorizeOptions extends Omit<CheckOptions, "approvalId"> {
  waitForApprovalMs?: number;
}

export interface ValidateOptions {
  action?: string;
  contentType?: string;
  context?: JsonObject;
  checks?: Detector[];
}

export interface ReportOptions {
  durationMs?: number;
  decisionId?: string;
  usage?: UsageInit;
  message?: string;
  traceId?: string;
}

const UNREACHABLE = new Set([Code.Unavailable, Code.DeadlineExceeded]);
const FINAL_APPROVAL_STATES = new Set([
  ApprovalState.APPROVED,
  ApprovalState.REJECTED,
  ApprovalState.EXPIRED,
]);

/**
 * Permission checks, output validation and execution reports for one agent. A null client is
 * null mode: checks allow without a call, nothing is sent.
 */
export class Governor {
  readonly agentId: string;
  readonly timeoutMs: number;
  readonly failOpen: boolean;
  readonly cacheEnabled: boolean;
  readonly reportEnabled: boolean;
  readonly waitForApprovalMs: number | undefined;
  readonly maxQueuedReports: number;
  readonly cache = new DecisionCache();
  /** The WatchPolicies state that local decisions come from (see watch). */
  readonly policyState = new PolicyState();
  /** True in null mode. */
  readonly isNull: boolean;
  reportsSent = 0;
  reportsFailed = 0;
  private readonly queue: ReportExecutionRequest[] = [];
  private inFlight = 0;
  private worker: Promise<void> | undefined;
  private readonly nullLogged = new Set<string>();
  private settleUntil = 0;
  private watcher: Promise<void> | undefined;
  private watchAbort: AbortController | undefined;
  private watchReady: Promise<void> | undefined;
  private markWatchReady: (() => void) | undefined;

  constructor(
    private readonly clientOrNull: AgentplaneClient | null,
    options: GovernorOptions = {},
  ) {
    this.isNull = clientOrNull === null;
    this.agentId = options.agentId ?? "";
    this.timeoutMs = options.timeoutMs ?? DEFAULT_CHECK_TIMEOUT_MS;
    this.failOpen = options.failOpen ?? false;
    this.cacheEnabled = options.cache ?? true;
    this.reportEnabled = options.report ?? true;
    this.waitForApprovalMs = options.waitForApprovalMs;
    this.maxQueuedReports = options.maxQueuedReports ?? 10_000;
    if (options.watch && !this.isNull) void this.startWatch();
  }

  /** The client (throws in null mode, where there is none). */
  get client(): AgentplaneClient {
    if (this.clientOrNull === null) throw new Error("null mode: this Governor has no client");
    return this.clientOrNull;
  }

  /**
   * Keep a WatchPolicies stream (reconnecting with backoff) to decide locally; resolves true
   * once the first snapshot arrived, or false when waitMs passed first (0: do not wait).
   */
  async startWatch(waitMs = 0): Promise<boolean> {
    if (this.isNull) return false;
    if (this.watcher === undefined) {
      this.watchAbort = new AbortController();
      this.watchReady = new Promise((resolve) => (this.markWatchReady = resolve));
      this.watcher = this.watchLoop(this.watchAbort.signal);
    }
    if (this.policyState.haveSnapshot) return true;
    if (waitMs <= 0) return false;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), waitMs);
    });
    try {
      return await Promise.race([this.watchReady!.then(() => true), timedOut]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async watchLoop(signal: AbortSignal): Promise<void> {
    let backoffMs = 200;
    while (!signal.aborted) {
      try {
        for await (const message of this.client.governance.watchPolicies(
          { agentId: this.agentId },
          { signal, retry: false, timeoutMs: 0 },
        )) {
          this.policyState.apply(message);
          this.cache.clear(); // a cached decision may no longer be what the server would say
          this.settleUntil = performance.now() + POLICY_PROPAGATION_MS;
          this.markWatchReady?.();
          backoffMs = 200;
        }
      } catch (error) {
        if (!signal.aborted) {
          console.info(`agentplane: policy stream lost (${String(error)}); deciding remotely`);
        }
      } finally {
        this.policyState.lost();
      }
      if (signal.aborted) return;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, backoffMs);
        signal.addEventListener("abort", () => {
          clearTimeout(timer);
          resolve();
        });
      });
      backoffMs = Math.min(backoffMs * 2, 5000);
    }
  }

  /** Stop the WatchPolicies stream (close() does this too). */
  async stopWatch(): Promise<void> {
    this.watchAbort?.abort();
    await this.watcher?.catch(() => undefined);
    this.watcher = undefined;
  }

  /** The decision for an action (cached or from CheckPermission); never throws for DENY. */
  async check(
    action: string,
    options: CheckOptions & { failOpen?: boolean } = {},
  ): Promise<Decision> {
    if (this.isNull) return this.nullDecision(action);
    const resource = options.resource ?? "";
    const key = cacheKey(action, resource, options.context);
    const cacheable = !options.approvalId && !options.usageEstimate;
    if (cacheable && this.cacheEnabled) {
      const cached = this.cache.get(key);
      if (cached !== undefined) return { ...cached, source: "cache" };
    }
    const hasContext = options.context !== undefined && Object.keys(options.context).length > 0;
    if (cacheable && !hasContext && this.policyState.haveSnapshot) {
      // Context never changes a local answer (a condition that could read it makes the rule
      // undecidable here), but checks with context go to the server's decision log.
      const local = this.policyState.local(action, resource);
      if (local !== undefined) return fromLocal(local, this.policyState.trust?.score);
    }
    let response: CheckPermissionResponse;
    try {
      response = await this.client.governance.checkPermission(
        {
          agentId: this.agentId,
          action,
          resource,
          context: options.context,
          usageEstimate: options.usageEstimate,
          approvalId: options.approvalId ?? "",
        },
        { timeoutMs: this.timeoutMs },
      );
    } catch (error) {
      if (error instanceof RpcError && UNREACHABLE.has(error.code)) {
        return this.unreachable(action, error, options.failOpen ?? this.failOpen);
      }
      throw error;
    }
    const decision = fromResponse(response);
    if (
      cacheable &&
      this.cacheEnabled &&
      decision.cacheTtlMs > 0 &&
      performance.now() >= this.settleUntil
    ) {
      this.cache.put(key, decision, decision.cacheTtlMs);
    }
    return decision;
  }

  /**
   * The ALLOW decision for an action, or a throw: ActionDenied, ApprovalRequired (after waiting
   * waitForApprovalMs for a reviewer, when set), GovernanceUnavailable (fail closed).
   */
  async authorize(
    action: string,
    options: AuthorizeOptions & { failOpen?: boolean } = {},
  ): Promise<Decision> {
    let decision = await this.check(action, options);
    if (decision.allowed) return decision;
    const wait = options.waitForApprovalMs ?? this.waitForApprovalMs;
    if (decision.decision === DecisionKind.REQUIRE_APPROVAL && wait && decision.approvalId) {
      const state = await this.awaitApproval(decision.approvalId, wait);
      if (state === ApprovalState.APPROVED) {
        decision = await this.check(action, { ...options, approvalId: decision.approvalId });
        if (decision.allowed) return decision;
      }
    }
    throw refusal(action, decision);
  }

  /** Watch an approval until it is resolved or timeoutMs passes; its last state. */
  async awaitApproval(approvalId: string, timeoutMs: number): Promise<ApprovalState> {
    let state = ApprovalState.PENDING;
    try {
      for await (const message of this.client.governance.watchApproval(
        { approvalId },
        { timeoutMs },
      )) {
        state = message.approval?.state ?? state;
        if (FINAL_APPROVAL_STATES.has(state)) break;
      }
    } catch (error) {
      if (!(error instanceof RpcError && error.code === Code.DeadlineExceeded)) throw error;
    }
    return state;
  }

  /** ValidateOutput for this agent (never cached: every output is new). */
  async validateOutput(
    content: string,
    options: ValidateOptions = {},
  ): Promise<ValidateOutputResponse> {
    if (this.isNull) {
      return create(ValidateOutputResponseSchema, {
        verdict: Verdict.ACCEPT,
        redactedContent: content,
      });
    }
    return this.client.governance.validateOutput(
      {
        agentId: this.agentId,
        action: options.action ?? "",
        content,
        contentType: options.contentType ?? "",
        context: options.context,
        checks: options.checks ?? [],
      },
      { timeoutMs: this.timeoutMs },
    );
  }

  /** Queue a ReportExecution; it is sent in the background (see flush). */
  report(action: string, outcome: ExecutionOutcome, options: ReportOptions = {}): void {
    if (this.isNull || !this.reportEnabled) return;
    if (this.queue.length >= this.maxQueuedReports) {
      this.reportsFailed++;
      console.warn(`agentplane: report queue full, dropped the report for "${action}"`);
      return;
    }
    const durationMs = Math.max(0, options.durationMs ?? 0);
    this.queue.push(
      create(ReportExecutionRequestSchema, {
        agentId: this.agentId,
        action,
        outcome,
        duration: {
          seconds: BigInt(Math.floor(durationMs / 1000)),
          nanos: Math.round((durationMs % 1000) * 1e6),
        },
        decisionId: options.decisionId ?? "",
        usage: options.usage,
        message: (options.message ?? "").slice(0, 1024),
        traceId: options.traceId ?? "",
      }),
    );
    this.worker ??= this.sendReports().finally(() => {
      this.worker = undefined;
    });
  }

  private async sendReports(): Promise<void> {
    for (let request = this.queue.shift(); request; request = this.queue.shift()) {
      this.inFlight++;
      try {
        await this.client.governance.reportExecution(request, {
          timeoutMs: Math.max(this.timeoutMs, 5000),
        });
        this.reportsSent++;
      } catch (error) {
        this.reportsFailed++;
        console.warn(
          `agentplane: ReportExecution for "${request.action}" failed: ${String(error)}`,
        );
      } finally {
        this.inFlight--;
      }
    }
  }

  /** Wait until every queued report is sent (or failed); false if timeoutMs passed first. */
  async flush(timeoutMs = 10_000): Promise<boolean> {
    const worker = this.worker;
    if (worker === undefined) return this.queue.length === 0;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    try {
      return await Promise.race([
        worker.then(() => this.queue.length === 0 && this.inFlight === 0),
        timedOut,
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Send the queued reports (up to timeoutMs) and stop the policy stream. */
  async close(timeoutMs = 10_000): Promise<void> {
    await this.flush(timeoutMs);
    await this.stopWatch();
  }

  /** governed(options, fn) bound to this governor. */
  governed<A extends unknown[], R>(
    options: string | GovernedOptions<A>,
    fn: (...args: A) => R | Promise<R>,
  ): (...args: A) => Promise<Awaited<R>> {
    const spec = typeof options === "string" ? { action: options } : options;
    return governed({ ...spec, governor: this }, fn);
  }

  /** Run `body` as one governed execution of `action`; `body` gets the GovernedCall. */
  run<R>(
    options: string | GovernedOptions<[]>,
    body: (call: GovernedCall) => R | Promise<R>,
  ): Promise<Awaited<R>> {
    const spec = typeof options === "string" ? { action: options } : options;
    return governed({ ...spec, governor: this }, () => body(currentCall()!))();
  }

  private nullDecision(action: string): Decision {
    if (!this.nullLogged.has(action)) {
      this.nullLogged.add(action);
      console.info(`agentplane: null mode: "${action}" allowed without a permission check`);
    }
    return nullDecision();
  }

  private unreachable(action: string, error: RpcError, failOpen: boolean): Decision {
    if (failOpen) {
      console.warn(
        `agentplane: CheckPermission for "${action}" failed (${error.codeName}); allowing because failOpen is set`,
      );
      return {
        decision: DecisionKind.ALLOW,
        source: "fail_open",
        reasons: [`Agentplane unreachable: ${error.rawMessage}`],
        decisionId: "",
        decidingPolicyId: "",
        matchedPolicyIds: [],
        approvalId: "",
        cacheTtlMs: 0,
        trustScore: undefined,
        allowed: true,
        name: decisionName(DecisionKind.ALLOW),
      };
    }
    throw new GovernanceUnavailable(
      `could not check permission for "${action}": Agentplane did not answer within ` +
        `${this.timeoutMs} ms (${error.codeName}: ${error.rawMessage}); failing closed ` +
        "(set failOpen to allow actions while Agentplane is unreachable)",
      { action, cause: error },
    );
  }
}

function refusal(action: string, decision: Decision): Error {
  const reasons = decision.reasons.join("; ") || "no reason given";
  if (decision.decision === DecisionKind.REQUIRE_APPROVAL) {
    return new ApprovalRequired(
      `"${action}" requires approval ${decision.approvalId}: ${reasons}`,
      {
        action,
        decision,
      },
    );
  }
  return new ActionDenied(`"${action}" denied: ${reasons}`, { action, decision });
}

// --- the process-wide default governor ------------------------------------------------------

let defaultGovernor: Governor | undefined;

/** The governor governed() uses when it is given none (Agent.start sets its own). */
export function setDefaultGovernor(governor: Governor | undefined): void {
  defaultGovernor = governor;
}

/** Unset the default governor if it is `governor` (an Agent stopping). */
export function clearDefaultGovernor(governor: Governor): void {
  if (defaultGovernor === governor) defaultGovernor = undefined;
}

/**
 * The default governor: the running Agent's, else one from AGENTPLANE_* (made once): null mode
 * without AGENTPLANE_URL.
 */
export function getDefaultGovernor(): Governor {
  defaultGovernor ??= new Governor(process.env[ENV_URL] ? createAgentplaneClient() : null, {
    agentId: process.env[ENV_AGENT_ID] ?? "",
  });
  return defaultGovernor;
}

// --- governed ---------------------------------------------------------------------------------

/** One governed execution. Set usage / message / outcome before the body returns. */
export class GovernedCall {
  usage: UsageInit | undefined;
  message = "";
  outcome: ExecutionOutcome | undefined;
  validation: ValidateOutputResponse | undefined;
  readonly started = performance.now();

  constructor(
    readonly action: string,
    readonly governor: Governor,
    readonly decision: Decision,
    private readonly spec: GovernedOptions<never>,
  ) {}

  /** ValidateOutput on content; throws OutputRejected; returns the content to use. */
  async validate(content: string): Promise<string> {
    const checks = Array.isArray(this.spec.validateOutput) ? this.spec.validateOutput : [];
    const response = await this.governor.validateOutput(content, {
      action: this.action,
      contentType: this.spec.contentType ?? "",
      checks,
    });
    this.validation = response;
    const rejected =
      response.verdict === Verdict.REJECT ||
      (response.verdict === Verdict.FLAG_FOR_REVIEW && !this.spec.allowFlagged);
    if (rejected) {
      const verdict = `VERDICT_${Verdict[response.verdict]}`;
      const findings = response.findings
        .map((f) => `DETECTOR_${Detector[f.detector]}:${f.detectorName || f.message}`)
        .join(", ");
      this.outcome = ExecutionOutcome.FAILURE;
      this.message = `output ${verdict}: ${findings}`;
      throw new OutputRejected(
        `output of "${this.action}" was ${verdict} (${findings || "no findings"})`,
        {
          action: this.action,
          validation: response,
        },
      );
    }
    return this.spec.redact ? response.redactedContent : content;
  }

  /** Queue the execution report (called once, when the governed body ends). */
  finish(error?: unknown): void {
    if (this.spec.report === false) return;
    const outcome =
      this.outcome ?? (error === undefined ? ExecutionOutcome.SUCCESS : ExecutionOutcome.ERROR);
    let message = this.message;
    if (error !== undefined && !message) {
      message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    }
    this.governor.report(this.action, outcome, {
      durationMs: performance.now() - this.started,
      decisionId: this.decision.decisionId,
      usage: this.usage,
      message,
    });
  }
}

export interface GovernedOptions<A extends unknown[]> {
  /** What the agent does, e.g. "tool:db.query" (required). */
  action: string;
  /** What it acts on; a function receives the governed function's arguments. */
  resource?: string | ((...args: A) => string);
  /** Free-form JSON that policy conditions read; a function receives the arguments. */
  context?: JsonObject | ((...args: A) => JsonObject | undefined);
  usageEstimate?: UsageInit;
  /** Run ValidateOutput on the result (true: every detector; a list: those detectors). */
  validateOutput?: boolean | Detector[];
  /** Turns the result into the text to validate (default: the result when it is a string). */
  output?: (result: unknown) => string;
  contentType?: string;
  /** Accept FLAG_FOR_REVIEW verdicts (default: they throw OutputRejected). */
  allowFlagged?: boolean;
  /** Return the redacted text instead of the result (string results only). */
  redact?: boolean;
  /** Send an execution report (default true). */
  report?: boolean;
  waitForApprovalMs?: number;
  /** Overrides the governor's failOpen. */
  failOpen?: boolean;
  /** Default: the running Agent's governor, else one from the environment. */
  governor?: Governor;
}

const calls = new AsyncLocalStorage<GovernedCall>();

/** The GovernedCall of the governed function running now (to set usage, or validate). */
export function currentCall(): GovernedCall | undefined {
  return calls.getStore();
}

/**
 * Govern an action: wrap a function so that every call is checked first and reported after.
 *
 *     const query = governed({ action: "tool:db.query", resource: (table: string) => `db://${table}` },
 *       async (table: string) => db.query(table));
 *
 * Before: CheckPermission (cached, or asked); DENY throws ActionDenied and REQUIRE_APPROVAL
 * throws ApprovalRequired (or waits waitForApprovalMs for a reviewer); an unreachable server
 * throws GovernanceUnavailable unless failOpen. After: with validateOutput, ValidateOutput on the
 * result (REJECT, and FLAG_FOR_REVIEW unless allowFlagged, throw OutputRejected), then a queued
 * ReportExecution with the outcome (SUCCESS; ERROR when the function threw; FAILURE when its
 * output was rejected), the duration, and the usage set on currentCall().
 */
export function governed<A extends unknown[], R>(
  options: string | GovernedOptions<A>,
  fn: (...args: A) => R | Promise<R>,
): (...args: A) => Promise<Awaited<R>> {
  const spec: GovernedOptions<A> = typeof options === "string" ? { action: options } : options;
  if (!spec.action)
    throw new Error('governed() needs an action, e.g. governed({ action: "tool:search" }, fn)');
  return async (...args: A): Promise<Awaited<R>> => {
    const governor = spec.governor ?? getDefaultGovernor();
    const resource = typeof spec.resource === "function" ? spec.resource(...args) : spec.resource;
    const context = typeof spec.context === "function" ? spec.context(...args) : spec.context;
    const decision = await governor.authorize(spec.action, {
      resource,
      context,
      usageEstimate: spec.usageEstimate,
      waitForApprovalMs: spec.waitForApprovalMs,
      failOpen: spec.failOpen,
    });
    const call = new GovernedCall(spec.action, governor, decision, spec as GovernedOptions<never>);
    let result: Awaited<R>;
    try {
      result = await calls.run(call, async () => await fn(...args));
    } catch (error) {
      call.finish(error);
      throw error;
    }
    if (spec.validateOutput) {
      const text = spec.output
        ? spec.output(result)
        : typeof result === "string"
          ? result
          : undefined;
      if (text !== undefined) {
        try {
          const checked = await call.validate(text);
          if (spec.redact && typeof result === "string") result = checked as Awaited<R>;
        } catch (error) {
          call.finish(error);
          throw error;
        }
      }
    }
    call.finish();
    return result;
  };
}
