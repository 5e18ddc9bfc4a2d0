// The TypeScript decision rule for tests/test_decision_differential.py: one long-lived process
// reading one JSON command per line on stdin and writing one JSON answer per line on stdout.
// Messages travel as base64 protobuf binary, so both languages decode the same values.
//
//   {"op": "watch", "id": "k", "message": b64 WatchPoliciesResponse}        -> {"ok": true}
//   {"op": "local", "id": "k", "requests": [[action, resource], ...]}       -> {"answers": [...]}
//   {"op": "rule", "policies": b64 PolicySnapshot, "requests": [{...}]}    -> {"answers": [...]}
//
// An answer is [decision, deciding policy_id, undecided_by policy_id, matched policy_ids,
// reasons]. "rule" requests carry agentId, labels, action, resource, trust, trustCeiling (or
// unbounded: true for Infinity, which JSON lacks), defaultDecision and conditions: {policy_id: [matched or null, error]} (what the caller's
// condition engine would say).
import { createInterface } from "node:readline";

import { fromBinary } from "@bufbuild/protobuf";

import { decide, governance, PolicyState, Rule } from "../lib/index.js";

const states = new Map();
const bytes = (b64) => new Uint8Array(Buffer.from(b64, "base64"));
const answer = (outcome) => [
  outcome.decision,
  outcome.deciding?.policyId ?? "",
  outcome.undecidedBy?.policyId ?? "",
  outcome.matched.map((r) => r.policyId),
  outcome.reasons,
];

function handle(command) {
  switch (command.op) {
    case "watch": {
      const message = fromBinary(governance.WatchPoliciesResponseSchema, bytes(command.message));
      let state = states.get(command.id);
      if (state === undefined) states.set(command.id, (state = new PolicyState()));
      state.apply(message);
      return { ok: true };
    }
    case "local": {
      const state = states.get(command.id);
      return { answers: command.requests.map(([a, r]) => answer(state.outcome(a, r))) };
    }
    case "rule": {
      const snapshot = fromBinary(governance.PolicySnapshotSchema, bytes(command.policies));
      const rules = snapshot.policies.map((p, i) => new Rule(p, i));
      return {
        answers: command.requests.map((request) => {
          const conditions = request.conditions ?? {};
          return answer(
            decide(rules, {
              agentId: request.agentId,
              labels: request.labels,
              action: request.action,
              resource: request.resource,
              trustScore: request.trust,
              trustCeiling: request.unbounded ? Infinity : (request.trustCeiling ?? undefined),
              defaultDecision: request.defaultDecision,
              condition: (rule) => {
                const [matched, error] = conditions[rule.policyId] ?? [null, ""];
                return [matched ?? undefined, error];
              },
            }),
          );
        }),
      };
    }
    default:
      throw new Error(`unknown op ${command.op}`);
  }
}

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  let reply;
  try {
    reply = handle(JSON.parse(line));
  } catch (error) {
    reply = { error: String(error?.stack ?? error) };
  }
  process.stdout.write(`${JSON.stringify(reply)}\n`);
}
