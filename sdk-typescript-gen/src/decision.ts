/**
 * The governance decision rule, ported from the Python SDK's `agentplane.decision` (the module
 * the server decides with); a differential test keeps the server, Python and this port
 * identical. The rule:
 *
 * - a policy matches a request when it is enabled, its agent selector selects the agent
 *   (agentIds or agentIdPatterns, when any is given, and every label), one of its actions and
 *   one of its resources globs matches (empty lists match everything), the agent's trust score
 *   is at least minTrustScore, and its CEL condition holds;
 * - among matching policies the highest priority wins; at equal priority DENY beats
 *   REQUIRE_APPROVAL beats ALLOW; remaining ties go to the smallest policyId (then the smallest
 *   candidate index);
 * - no match: the project's default decision (DENY when unset).
 *
 * Conditions are evaluated by whoever passes `condition` (the server's CEL engine); without it
 * a condition is unknown. A trust score known only within a range can leave minTrustScore
 * unknown too. When a policy whose match is unknown could outrank every policy known to match,
 * the outcome is UNDECIDABLE (`undecidedBy` names it) and the caller asks the server.
 *
 * Globs: `*` any run of characters except "/", `**` any run, `?` one character except "/",
 * anything else itself; the whole string must match.
 *
 * PolicyState keeps one agent's WatchPolicies stream and decides locally from it.
 */

import { Decision as DecisionKind } from "./gen/agentplane/governance/v1/decision_pb.js";
import type { WatchPoliciesResponse } from "./gen/agentplane/governance/v1/governance_service_pb.js";
import { type Policy, PolicyEffect } from "./gen/agentplane/governance/v1/policy_pb.js";
import type { TrustScore } from "./gen/agentplane/governance/v1/trust_pb.js";

/** Outcome.decision when the rule cannot decide without the server. */
export const UNDECIDABLE = DecisionKind.UNSPECIFIED;

/** Smaller wins at equal priority. */
export const EFFECT_RANK: Readonly<Record<number, number>> = {
  [PolicyEffect.DENY]: 0,
  [PolicyEffect.REQUIRE_APPROVAL]: 1,
  [PolicyEffect.ALLOW]: 2,
};
const EFFECT_DECISION: Readonly<Record<number, DecisionKind>> = {
  [PolicyEffect.ALLOW]: DecisionKind.ALLOW,
  [PolicyEffect.DENY]: DecisionKind.DENY,
  [PolicyEffect.REQUIRE_APPROVAL]: DecisionKind.REQUIRE_APPROVAL,
};
const EFFECT_VERB: Readonly<Record<number, string>> = {
  [PolicyEffect.ALLOW]: "allows",
  [PolicyEffect.DENY]: "denies",
  [PolicyEffect.REQUIRE_APPROVAL]: "requires approval for",
};
const EFFECT_NAME: Readonly<Record<number, string>> = {
  [PolicyEffect.ALLOW]: "ALLOW",
  [PolicyEffect.DENY]: "DENY",
  [PolicyEffect.REQUIRE_APPROVAL]: "REQUIRE_APPROVAL",
};

/** True when the glob matches the whole string. */
export type Matcher = (text: string) => boolean;

const globs = new Map<string, Matcher>();
const MAX_GLOBS = 16384;

/** A glob as a matcher: string equality without wildcards, else a regular expression. */
export function compileGlob(pattern: string): Matcher {
  let matcher = globs.get(pattern);
  if (matcher !== undefined) return matcher;
  if (!pattern.includes("*") && !pattern.includes("?")) {
    matcher = (text) => text === pattern;
  } else {
    let source = "";
    // Iterate by code point: "?" is one character, as in Python (the "u" flag below).
    const chars = Array.from(pattern);
    for (let i = 0; i < chars.length; i++) {
      const ch = chars[i]!;
      if (ch === "*") {
        if (chars[i + 1] === "*") {
          source += "[^]*";
          i++;
        } else {
          source += "[^/]*";
        }
      } else if (ch === "?") {
        source += "[^/]";
      } else {
        source += ch.replace(/[\^$\\.*+?()[\]{}|/]/g, "\\$&");
      }
    }
    const regex = new RegExp(`^(?:${source})$`, "u");
    matcher = (text) => regex.test(text);
  }
  if (globs.size >= MAX_GLOBS) globs.clear();
  globs.set(pattern, matcher);
  return matcher;
}

export function globMatch(pattern: string, text: string): boolean {
  return compileGlob(pattern)(text);
}

/** A policy ready to decide with: globs compiled once. */
export class Rule {
  readonly policyId: string;
  readonly effect: PolicyEffect;
  readonly priority: number;
  readonly enabled: boolean;
  readonly agentIds: ReadonlySet<string>;
  readonly agentPatterns: readonly Matcher[];
  readonly labels: readonly (readonly [string, string])[];
  readonly actions: readonly Matcher[];
  /** The actions when every one is a plain string (RuleIndex buckets them), else undefined. */
  readonly literalActions: readonly string[] | undefined;
  readonly resources: readonly Matcher[];
  readonly minTrust: number;
  readonly hasCondition: boolean;

  constructor(
    readonly policy: Policy,
    /** Candidate index (EvaluatePolicies); -1 for stored policies. */
    readonly index = -1,
  ) {
    this.policyId = policy.policyId;
    this.effect = policy.effect;
    this.priority = policy.priority;
    this.enabled = policy.enabled ?? true;
    const selector = policy.agents;
    this.agentIds = new Set(selector?.agentIds ?? []);
    this.agentPatterns = (selector?.agentIdPatterns ?? []).map(compileGlob);
    this.labels = Object.entries(selector?.labels ?? {}).sort(([a], [b]) => compareStrings(a, b));
    this.actions = policy.actions.map(compileGlob);
    this.literalActions =
      policy.actions.length > 0 && !policy.actions.some((a) => a.includes("*") || a.includes("?"))
        ? [...policy.actions]
        : undefined;
    this.resources = policy.resources.map(compileGlob);
    this.minTrust = policy.minTrustScore;
    this.hasCondition = policy.condition !== "";
  }

  selects(agentId: string, labels: Readonly<Record<string, string>>): boolean {
    if (
      (this.agentIds.size > 0 || this.agentPatterns.length > 0) &&
      !(this.agentIds.has(agentId) || this.agentPatterns.some((m) => m(agentId)))
    ) {
      return false;
    }
    return this.labels.every(([k, v]) => Object.hasOwn(labels, k) && labels[k] === v);
  }

  actionMatches(action: string): boolean {
    return this.actions.length === 0 || this.actions.some((m) => m(action));
  }

  resourceMatches(resource: string): boolean {
    return this.resources.length === 0 || this.resources.some((m) => m(resource));
  }

  /** True/false when every score in [low, high] is / is not at least minTrustScore; undefined
   * when it depends on where in the range the score is. */
  trustMatches(low: number, high: number): boolean | undefined {
    if (low >= this.minTrust) return true;
    if (high < this.minTrust) return false;
    return undefined;
  }

  get label(): string {
    return this.policyId || `candidate_policies[${this.index}]`;
  }
}

/** Code point order (Python's str order). */
function compareStrings(a: string, b: string): number {
  if (a === b) return 0;
  const x = Array.from(a);
  const y = Array.from(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i]!.codePointAt(0)! - y[i]!.codePointAt(0)!;
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

/** Deciding order: priority (high first), effect rank, policyId, candidate index. */
export function compareRules(a: Rule, b: Rule): number {
  return (
    b.priority - a.priority ||
    (EFFECT_RANK[a.effect] ?? 3) - (EFFECT_RANK[b.effect] ?? 3) ||
    compareStrings(a.policyId, b.policyId) ||
    a.index - b.index
  );
}

/** [matched, error]: matched undefined when the condition cannot be evaluated here. */
export type ConditionResult = readonly [boolean | undefined, string];

export interface DecideRequest {
  agentId: string;
  labels: Readonly<Record<string, string>>;
  action: string;
  resource: string;
  /** The agent's score, or with trustCeiling the lowest score of the range it lies in. */
  trustScore: number;
  trustCeiling?: number;
  defaultDecision: DecisionKind;
  /** Evaluates a rule's condition; without it every condition is unknown. */
  condition?: (rule: Rule) => ConditionResult;
  /** The rules are known to be enabled, to select the agent and to match the action. */
  prefiltered?: boolean;
}

export interface Outcome {
  /** ALLOW, DENY, REQUIRE_APPROVAL, or UNDECIDABLE (see undecidedBy). */
  decision: DecisionKind;
  deciding: Rule | undefined;
  /** Deciding first, then in deciding order. */
  matched: Rule[];
  reasons: string[];
  undecidedBy: Rule | undefined;
  /** Rules whose match is unknown. */
  unknown: Rule[];
}

const unknownCondition = (): ConditionResult => [undefined, ""];

/** The decision for one request (agentplane.decision.decide). */
export function decide(rules: Iterable<Rule>, request: DecideRequest): Outcome {
  const { agentId, labels, action, resource, defaultDecision } = request;
  const condition = request.condition ?? unknownCondition;
  const low = request.trustScore;
  const high = request.trustCeiling ?? request.trustScore;
  const prefiltered = request.prefiltered ?? false;
  const matched: Rule[] = [];
  const unknown: Rule[] = [];
  const reasons: string[] = [];
  for (const rule of rules) {
    if (
      !prefiltered &&
      !(rule.enabled && rule.selects(agentId, labels) && rule.actionMatches(action))
    ) {
      continue;
    }
    if (!rule.resourceMatches(resource)) continue;
    const trustOk = rule.trustMatches(low, high);
    if (trustOk === false) continue;
    let ok: boolean | undefined = true;
    if (rule.hasCondition) {
      const [result, error] = condition(rule);
      ok = result;
      if (error) reasons.push(conditionErrorReason(rule, error));
    }
    if (trustOk === undefined || ok === undefined) unknown.push(rule);
    else if (ok) matched.push(rule);
  }
  if (matched.length > 1) matched.sort(compareRules);
  const where = resource ? `${action} on ${resource}` : action;
  if (unknown.length > 0) {
    const first = unknown.reduce((a, b) => (compareRules(b, a) < 0 ? b : a));
    if (matched.length === 0 || compareRules(first, matched[0]!) < 0) {
      reasons.unshift(
        `policy ${first.label} may decide ${where}, but whether it matches cannot be known here`,
      );
      return {
        decision: UNDECIDABLE,
        deciding: undefined,
        matched,
        reasons,
        undecidedBy: first,
        unknown,
      };
    }
  }
  if (matched.length === 0) {
    const decision = defaultDecision || DecisionKind.DENY;
    reasons.unshift(
      `no policy matches ${where}; the project's default decision is ${DecisionKind[decision]}`,
    );
    return { decision, deciding: undefined, matched, reasons, undecidedBy: undefined, unknown };
  }
  const deciding = matched[0]!;
  reasons.unshift(`policy ${deciding.label} ${EFFECT_VERB[deciding.effect]} ${where}`);
  return {
    decision: EFFECT_DECISION[deciding.effect] ?? DecisionKind.DENY,
    deciding,
    matched,
    reasons,
    undecidedBy: undefined,
    unknown,
  };
}

function conditionErrorReason(rule: Rule, error: string): string {
  const consequence = rule.effect === PolicyEffect.ALLOW ? "does not match" : "matches";
  return (
    `policy ${rule.label}: the condition could not be evaluated (${error}); ` +
    `the policy (effect ${EFFECT_NAME[rule.effect]}) therefore ${consequence}`
  );
}

/**
 * The enabled rules of one snapshot, indexed to decide many requests: rules whose actions are
 * all plain strings are bucketed by action and merged, once, with the rules that have glob
 * actions (or none); the rules matching an action are worked out once per action.
 */
export class RuleIndex {
  static readonly MAX_ACTIONS = 4096;
  readonly rules: readonly Rule[];
  private readonly globbed: readonly Rule[];
  private readonly byAction = new Map<string, readonly Rule[]>();
  private readonly selected = new Map<string, readonly Rule[]>();

  constructor(rules: Iterable<Rule>) {
    this.rules = [...rules].filter((r) => r.enabled).sort(compareRules);
    this.globbed = this.rules.filter((r) => r.literalActions === undefined);
    const buckets = new Map<string, Set<Rule>>();
    for (const rule of this.rules) {
      for (const action of rule.literalActions ?? []) {
        let bucket = buckets.get(action);
        if (bucket === undefined) buckets.set(action, (bucket = new Set()));
        bucket.add(rule);
      }
    }
    for (const [action, bucket] of buckets) {
      this.byAction.set(action, [...bucket, ...this.globbed].sort(compareRules));
    }
  }

  /** The rules matching `action`, in deciding order (for decide with prefiltered). */
  selecting(action: string): readonly Rule[] {
    let found = this.selected.get(action);
    if (found === undefined) {
      found = (this.byAction.get(action) ?? this.globbed).filter((r) => r.actionMatches(action));
      if (this.selected.size >= RuleIndex.MAX_ACTIONS) this.selected.clear();
      this.selected.set(action, found);
    }
    return found;
  }
}

/** The range the agent's score lies in until the next update: it decays from the last score
 * toward the baseline. Unknown (no score yet): anything from 0 up. */
export function trustRange(trust: TrustScore | undefined): [number, number] {
  if (trust === undefined) return [0, Infinity];
  return trust.score <= trust.baseline
    ? [trust.score, trust.baseline]
    : [trust.baseline, trust.score];
}

/** One agent's policy state, kept from a WatchPolicies stream (agentplane._policy.PolicyState). */
export class PolicyState {
  policies = new Map<string, Rule>();
  index = new RuleIndex([]);
  defaultDecision: DecisionKind = DecisionKind.DENY;
  trust: TrustScore | undefined;
  trustLow = 0;
  trustHigh = Infinity;
  /** How long local decisions stay usable after the stream is lost, in milliseconds. */
  cacheTtlMs = 0;
  snapshotVersion = 0n;
  haveSnapshot = false;
  connected = false;
  lostAt: number | undefined;

  constructor(private readonly now: () => number = () => performance.now()) {}

  apply(message: WatchPoliciesResponse): void {
    const change = message.change;
    switch (change.case) {
      case "snapshot": {
        const snapshot = change.value;
        this.policies = new Map(snapshot.policies.map((p) => [p.policyId, new Rule(p)]));
        this.defaultDecision = snapshot.defaultDecision || DecisionKind.DENY;
        this.setTrust(snapshot.trustScore);
        const ttl = snapshot.cacheTtl;
        this.cacheTtlMs = ttl ? Number(ttl.seconds) * 1000 + ttl.nanos / 1e6 : 0;
        this.haveSnapshot = true;
        this.connected = true;
        this.lostAt = undefined;
        break;
      }
      case "upsertedPolicy": {
        const policy = change.value;
        if (policy.enabled === false) this.policies.delete(policy.policyId);
        else this.policies.set(policy.policyId, new Rule(policy));
        break;
      }
      case "deletedPolicyId":
        this.policies.delete(change.value);
        break;
      case "trustScore":
        this.setTrust(change.value);
        break;
    }
    if (message.snapshotVersion > this.snapshotVersion) {
      this.snapshotVersion = message.snapshotVersion;
    }
    if (change.case !== "trustScore") this.index = new RuleIndex(this.policies.values());
  }

  private setTrust(trust: TrustScore | undefined): void {
    this.trust = trust;
    [this.trustLow, this.trustHigh] = trustRange(trust);
  }

  /** The stream is gone: local decisions stay usable for cacheTtlMs. */
  lost(): void {
    if (this.connected) {
      this.connected = false;
      this.lostAt = this.now();
    }
  }

  usable(): boolean {
    if (!this.haveSnapshot) return false;
    if (this.connected) return true;
    return this.lostAt !== undefined && this.now() - this.lostAt < this.cacheTtlMs;
  }

  /** The rule's outcome from this state (every policy here selects the agent; conditions are
   * unknown, and so is a minimum trust inside the range the score may have decayed to). */
  outcome(action: string, resource: string): Outcome {
    return decide(this.index.selecting(action), {
      agentId: "",
      labels: {},
      action,
      resource,
      trustScore: this.trustLow,
      trustCeiling: this.trustHigh,
      defaultDecision: this.defaultDecision,
      prefiltered: true,
    });
  }

  /**
   * The outcome when it is ALLOW or DENY as CheckPermission would decide it, or undefined to
   * ask the server: the rule cannot decide here, the outcome is REQUIRE_APPROVAL (the server
   * opens the approval), or a budget applies to an ALLOW (the server charges it).
   */
  local(action: string, resource: string): Outcome | undefined {
    if (!this.usable()) return undefined;
    const outcome = this.outcome(action, resource);
    if (outcome.decision === DecisionKind.DENY) return outcome;
    if (outcome.decision !== DecisionKind.ALLOW) return undefined;
    const budgeted = (r: Rule) => r.policy.budgets.length > 0 && r.effect !== PolicyEffect.DENY;
    if (outcome.matched.some(budgeted) || outcome.unknown.some(budgeted)) return undefined;
    return outcome;
  }
}
