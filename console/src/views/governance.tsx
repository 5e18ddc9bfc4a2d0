/** Governance: the approvals queue (live), one approval, the decision log, the policies. */

import { useState } from "preact/hooks";
import { useRoute } from "preact-iso";
import { governance as governancepb } from "@agentplane/sdk";

import { describeError } from "../api";
import { useClient, useSignedIn } from "../auth";
import { FilterBar, TIME_FIELDS, enumOptions, enumValue, timeRangeOf } from "../components/filters";
import { Badge, Empty, ErrorBox, Json, LiveDot, ScrollMore, Section } from "../components/ui";
import { durationMs, enumName, ms, time } from "../format";
import { useInterval, useLoad, usePages, useQueryFilters, useStream } from "../hooks";

const { ApprovalState, Decision, DecisionKind, PolicyEffect, Verdict } = governancepb;

function stateTone(state: governancepb.ApprovalState): string {
  switch (state) {
    case ApprovalState.PENDING:
      return "warn";
    case ApprovalState.APPROVED:
      return "good";
    case ApprovalState.REJECTED:
      return "bad";
    default:
      return "muted";
  }
}

function decisionTone(decision: governancepb.Decision): string {
  return decision === Decision.ALLOW ? "good" : decision === Decision.DENY ? "bad" : "warn";
}

/** Approve or reject with a comment; shown only to roles that may resolve approvals. */
function Resolve({ approval, onResolved }: { approval: governancepb.Approval; onResolved: (a: governancepb.Approval) => void }) {
  const client = useClient();
  const [comment, setComment] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const resolve = async (state: governancepb.ApprovalState) => {
    setBusy(true);
    setError("");
    try {
      const { approval: resolved } = await client.governance.resolveApproval({ approvalId: approval.approvalId, state, comment });
      if (resolved) onResolved(resolved);
    } catch (reason) {
      setError(describeError(reason));
    } finally {
      setBusy(false);
    }
  };
  return (
    <div class="resolve" data-testid="resolve">
      <input
        type="text"
        placeholder="comment"
        data-testid="comment"
        value={comment}
        onInput={(event) => setComment((event.target as HTMLInputElement).value)}
      />
      <button type="button" class="good" data-testid="approve" disabled={busy} onClick={() => void resolve(ApprovalState.APPROVED)}>
        Approve
      </button>
      <button type="button" class="bad" data-testid="reject" disabled={busy} onClick={() => void resolve(ApprovalState.REJECTED)}>
        Reject
      </button>
      <ErrorBox error={error} />
    </div>
  );
}

function ApprovalCard({ approval, onResolved }: { approval: governancepb.Approval; onResolved: (a: governancepb.Approval) => void }) {
  const { capabilities } = useSignedIn();
  return (
    <li class="approval card" data-testid="approval" data-approval={approval.approvalId} data-state={enumName(ApprovalState, approval.state)}>
      <div class="approval-head">
        <Badge tone={stateTone(approval.state)}>{enumName(ApprovalState, approval.state)}</Badge>
        <a class="badge agent" href={`/agents/${encodeURIComponent(approval.agentId)}`}>
          {approval.agentId}
        </a>
        <b>{approval.action}</b>
        {approval.resource && <span class="mono">{approval.resource}</span>}
        <a class="muted right" href={`/governance/approvals/${encodeURIComponent(approval.approvalId)}`}>
          {approval.approvalId}
        </a>
      </div>
      <div class="muted">
        policy {approval.policyId || "—"} · asked {time(approval.createTime)} · expires {time(approval.expireTime)}
        {approval.reviewer && (
          <>
            {" "}
            · {enumName(ApprovalState, approval.state)} by {approval.reviewer} {time(approval.resolveTime)}
          </>
        )}
      </div>
      {approval.reasons.length > 0 && (
        <ul class="reasons">
          {approval.reasons.map((r, i) => (
            <li key={i}>{r}</li>
          ))}
        </ul>
      )}
      {approval.comment && <p>“{approval.comment}”</p>}
      <Json value={approval.context} />
      {approval.state === ApprovalState.PENDING && capabilities.canReview && <Resolve approval={approval} onResolved={onResolved} />}
      {approval.state === ApprovalState.PENDING && !capabilities.canReview && (
        <p class="muted" data-testid="read-only">
          Your role may not resolve approvals.
        </p>
      )}
    </li>
  );
}

export function Approvals() {
  const client = useClient();
  const [query] = useQueryFilters();
  const state = query.state ? enumValue(ApprovalState, query.state) : ApprovalState.PENDING;
  const [version, setVersion] = useState(0);
  const pager = usePages(
    async (pageToken) => {
      const page = await client.governance.listApprovalsPage({
        pageSize: 50,
        pageToken,
        state,
        agentId: query.agent ?? "",
        policyId: query.policy ?? "",
        createTime: timeRangeOf(query),
      });
      return { items: page.approvals, nextPageToken: page.nextPageToken };
    },
    [client, JSON.stringify(query), version],
  );
  // There is no watch over the whole queue: the first page is re-read every few seconds, and
  // each open approval page follows its own WatchApproval.
  useInterval(() => {
    if (!pager.loading) setVersion((v) => v + 1);
  }, 3000);
  const [resolved, setResolved] = useState<Map<string, governancepb.Approval>>(new Map());
  return (
    <div>
      <h1>
        Approvals <LiveDot connected={!pager.error} />
      </h1>
      <FilterBar
        fields={[
          {
            name: "state",
            label: "State",
            type: "select",
            // The queue: pending unless another state (or any) is asked for.
            options: [["", "pending"], ["any", "any"], ...enumOptions(ApprovalState).slice(1).filter(([v]) => v !== "pending")],
          },
          { name: "agent", label: "Agent" },
          { name: "policy", label: "Policy" },
          ...TIME_FIELDS,
        ]}
      />
      {pager.items.length === 0 && pager.done && <Empty>No approvals match.</Empty>}
      <ul class="approvals" data-testid="approvals">
        {pager.items.map((a) => (
          <ApprovalCard
            key={a.approvalId}
            approval={resolved.get(a.approvalId) ?? a}
            onResolved={(r) => setResolved((m) => new Map(m).set(r.approvalId, r))}
          />
        ))}
      </ul>
      <ScrollMore pager={pager} />
    </div>
  );
}

export function ApprovalDetail() {
  const client = useClient();
  const { params } = useRoute();
  const approvalId = params.approvalId ?? "";
  const [approval, setApproval] = useState<governancepb.Approval | undefined>(undefined);
  const live = useStream(
    (signal) => client.governance.watchApproval({ approvalId }, { signal }),
    (response) => response.approval && setApproval(response.approval),
    [client, approvalId],
    { reopen: false },
  );
  return (
    <div>
      <h1>
        Approval <span class="mono">{approvalId}</span> <LiveDot connected={live.connected} />
      </h1>
      <ErrorBox error={live.error} />
      {approval && (
        <ul class="approvals">
          <ApprovalCard approval={approval} onResolved={setApproval} />
        </ul>
      )}
      {approval?.decisionId && (
        <p>
          <a href={`/governance/decisions?decision_id=${encodeURIComponent(approval.decisionId)}`}>The decision that asked for it</a>
        </p>
      )}
    </div>
  );
}

function DecisionRow({ d }: { d: governancepb.DecisionRecord }) {
  const [open, setOpen] = useState(false);
  const outcome =
    d.kind === DecisionKind.VALIDATE_OUTPUT ? (
      <Badge tone={d.verdict === Verdict.ACCEPT ? "good" : d.verdict === Verdict.REJECT ? "bad" : "warn"}>{enumName(Verdict, d.verdict)}</Badge>
    ) : (
      <Badge tone={decisionTone(d.decision)}>{enumName(Decision, d.decision)}</Badge>
    );
  return (
    <>
      <tr key={d.decisionId} onClick={() => setOpen(!open)} class="clickable" data-testid="decision">
        <td>{time(d.createTime)}</td>
        <td>{enumName(DecisionKind, d.kind)}</td>
        <td>{outcome}</td>
        <td>
          <a href={`/agents/${encodeURIComponent(d.agentId)}`}>{d.agentId}</a>
        </td>
        <td>{d.action}</td>
        <td class="mono">{d.resource}</td>
        <td>{d.decidingPolicyId && <a href={`/governance/policies?policy=${encodeURIComponent(d.decidingPolicyId)}`}>{d.decidingPolicyId}</a>}</td>
        <td class="wrap">{d.reasons.join("; ")}</td>
        <td class="num">{d.trustScore.toFixed(3)}</td>
        <td class="num">{ms(durationMs(d.latency))}</td>
      </tr>
      {open && (
        <tr class="detail">
          <td colSpan={10}>
            <dl class="facts">
              <dt>Decision</dt>
              <dd class="mono">{d.decisionId}</dd>
              <dt>Policies considered</dt>
              <dd>{d.policyIds.join(", ")}</dd>
              {d.approvalId && (
                <>
                  <dt>Approval</dt>
                  <dd>
                    <a href={`/governance/approvals/${encodeURIComponent(d.approvalId)}`}>{d.approvalId}</a>
                  </dd>
                </>
              )}
              {d.traceId && (
                <>
                  <dt>Trace</dt>
                  <dd>
                    <a href={`/traces/${d.traceId}`}>{d.traceId}</a>
                  </dd>
                </>
              )}
              {d.findings.length > 0 && (
                <>
                  <dt>Findings</dt>
                  <dd>{d.findings.map((f) => `${enumName(governancepb.Detector, f.detector)} (${enumName(governancepb.Severity, f.severity)})`).join(", ")}</dd>
                </>
              )}
            </dl>
            <Json value={d.requestSummary} />
          </td>
        </tr>
      )}
    </>
  );
}

export function Decisions() {
  const client = useClient();
  const [query] = useQueryFilters();
  const single = query.decision_id;
  const pager = usePages(
    async (pageToken) => {
      if (single) {
        const { decisionRecord } = await client.governance.getDecision({ decisionId: single });
        return { items: decisionRecord ? [decisionRecord] : [], nextPageToken: "" };
      }
      const page = await client.governance.listDecisionsPage({
        pageSize: 50,
        pageToken,
        agentId: query.agent ?? "",
        kind: enumValue(DecisionKind, query.kind),
        decision: enumValue(Decision, query.decision),
        verdict: enumValue(Verdict, query.verdict),
        action: query.action ?? "",
        policyId: query.policy ?? "",
        createTime: timeRangeOf(query),
      });
      return { items: page.decisionRecords, nextPageToken: page.nextPageToken };
    },
    [client, JSON.stringify(query)],
  );
  return (
    <div>
      <h1>Decision log</h1>
      <FilterBar
        fields={[
          { name: "agent", label: "Agent" },
          { name: "action", label: "Action" },
          { name: "policy", label: "Deciding policy" },
          { name: "kind", label: "Kind", type: "select", options: enumOptions(DecisionKind) },
          { name: "decision", label: "Decision", type: "select", options: enumOptions(Decision) },
          { name: "verdict", label: "Verdict", type: "select", options: enumOptions(Verdict) },
          ...TIME_FIELDS,
        ]}
      />
      <table class="list" data-testid="decisions">
        <thead>
          <tr>
            <th>When</th>
            <th>Kind</th>
            <th>Outcome</th>
            <th>Agent</th>
            <th>Action</th>
            <th>Resource</th>
            <th>Deciding policy</th>
            <th>Reasons</th>
            <th class="num">Trust</th>
            <th class="num">Latency</th>
          </tr>
        </thead>
        <tbody>
          {pager.items.map((d) => (
            <DecisionRow key={d.decisionId} d={d} />
          ))}
        </tbody>
      </table>
      <ScrollMore pager={pager} />
    </div>
  );
}

function PolicyCard({ policy: initial }: { policy: governancepb.Policy }) {
  const { client, capabilities } = useSignedIn();
  const [policy, setPolicy] = useState(initial);
  const [error, setError] = useState("");
  const enabled = policy.enabled !== false;
  const toggle = async () => {
    setError("");
    try {
      const { policy: updated } = await client.governance.updatePolicy({
        policy: { policyId: policy.policyId, enabled: !enabled, etag: policy.etag },
        updateMask: { paths: ["enabled"] },
      });
      if (updated) setPolicy(updated);
    } catch (reason) {
      setError(describeError(reason));
    }
  };
  const selector = policy.agents;
  return (
    <li class="card policy" data-testid="policy" data-policy={policy.policyId}>
      <div class="approval-head">
        <Badge tone={policy.effect === PolicyEffect.ALLOW ? "good" : policy.effect === PolicyEffect.DENY ? "bad" : "warn"}>
          {enumName(PolicyEffect, policy.effect)}
        </Badge>
        <b>{policy.name || policy.policyId}</b>
        <span class="muted">
          {policy.policyId} · priority {policy.priority} · v{String(policy.version)}
        </span>
        {!enabled && <Badge tone="muted">disabled</Badge>}
        {capabilities.canReview && (
          <button type="button" class="link right" onClick={() => void toggle()}>
            {enabled ? "Disable" : "Enable"}
          </button>
        )}
      </div>
      {policy.description && <p>{policy.description}</p>}
      <dl class="facts">
        <dt>Agents</dt>
        <dd>
          {[...(selector?.agentIds ?? []), ...(selector?.agentIdPatterns ?? [])].join(", ") || "all"}
          {Object.entries(selector?.labels ?? {}).map(([k, v]) => ` ${k}=${v}`)}
        </dd>
        <dt>Actions</dt>
        <dd>{policy.actions.join(", ") || "all"}</dd>
        <dt>Resources</dt>
        <dd>{policy.resources.join(", ") || "all"}</dd>
        {policy.minTrustScore > 0 && (
          <>
            <dt>Min trust</dt>
            <dd>{policy.minTrustScore}</dd>
          </>
        )}
        <dt>Condition (CEL)</dt>
        <dd>{policy.condition ? <pre class="cel" data-testid="cel">{policy.condition}</pre> : <span class="muted">none</span>}</dd>
        {policy.budgets.length > 0 && (
          <>
            <dt>Budgets</dt>
            <dd>
              {policy.budgets
                .map((b) => `${String(b.limit)} ${enumName(governancepb.BudgetMetric, b.metric)} per ${ms(durationMs(b.window))}${b.perAgent ? " per agent" : ""}`)
                .join("; ")}
            </dd>
          </>
        )}
        <dt>Log</dt>
        <dd>
          <a href={`/governance/decisions?policy=${encodeURIComponent(policy.policyId)}`}>decisions by this policy</a>
        </dd>
      </dl>
      <ErrorBox error={error} />
    </li>
  );
}

export function Policies() {
  const client = useClient();
  const [query] = useQueryFilters();
  const single = query.policy;
  const pager = usePages(
    async (pageToken) => {
      if (single) {
        const { policy } = await client.governance.getPolicy({ policyId: single });
        return { items: policy ? [policy] : [], nextPageToken: "" };
      }
      const page = await client.governance.listPoliciesPage({
        pageSize: 50,
        pageToken,
        agentId: query.agent ?? "",
        action: query.action ?? "",
        effect: enumValue(PolicyEffect, query.effect),
      });
      return { items: page.policies, nextPageToken: page.nextPageToken };
    },
    [client, JSON.stringify(query)],
  );
  return (
    <div>
      <h1>Policies</h1>
      <FilterBar
        fields={[
          { name: "policy", label: "Policy id" },
          { name: "agent", label: "Applies to agent" },
          { name: "action", label: "Action" },
          { name: "effect", label: "Effect", type: "select", options: enumOptions(PolicyEffect) },
        ]}
      />
      <ul class="policies" data-testid="policies">
        {pager.items.map((p) => (
          <PolicyCard key={`${p.policyId}:${p.etag}`} policy={p} />
        ))}
      </ul>
      <ScrollMore pager={pager} />
    </div>
  );
}
