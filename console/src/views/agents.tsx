/** Agents: the registry live through WatchAgents, and each agent's card and trust history. */

import { useState } from "preact/hooks";
import { useRoute } from "preact-iso";
import { governance as governancepb, registry as registrypb } from "@agentplane/sdk";

import { useClient } from "../auth";
import { Chart } from "../components/chart";
import { FilterBar } from "../components/filters";
import { Badge, Empty, ErrorBox, Json, LiveDot, ScrollMore, Section } from "../components/ui";
import { enumName, millis, time } from "../format";
import { useInterval, useLoad, usePages, useQueryFilters, useStream } from "../hooks";

function statusTone(status: registrypb.AgentStatus): string {
  return status === registrypb.AgentStatus.ACTIVE ? "good" : status === registrypb.AgentStatus.STALE ? "warn" : "";
}

function TrustBadge({ score }: { score: governancepb.TrustScore | undefined }) {
  if (!score) return <span class="muted">—</span>;
  const tone = score.tier >= governancepb.TrustTier.HIGH ? "good" : score.tier <= governancepb.TrustTier.LOW ? "bad" : "warn";
  return (
    <Badge tone={tone}>
      {score.score.toFixed(3)} · {enumName(governancepb.TrustTier, score.tier)}
    </Badge>
  );
}

export function AgentList() {
  const client = useClient();
  const [query] = useQueryFilters();
  const [agents, setAgents] = useState<Map<string, registrypb.Agent>>(new Map());
  const [removed, setRemoved] = useState<string[]>([]);
  const filter = {
    skillTag: query.tag ?? "",
    framework: query.framework ?? "",
    status: query.status === "stale" ? registrypb.AgentStatus.STALE : query.status === "active" ? registrypb.AgentStatus.ACTIVE : 0,
  };
  const live = useStream(
    (signal) => {
      setAgents(new Map());
      return client.registry.watchAgents({ filter, sendInitialSnapshot: true }, { signal });
    },
    (event) => {
      const agent = event.agent;
      if (!agent || event.type === registrypb.AgentEventType.SNAPSHOT_COMPLETE) return;
      setAgents((previous) => {
        const next = new Map(previous);
        if (event.type === registrypb.AgentEventType.REMOVED) {
          next.delete(agent.agentId);
          setRemoved((r) => [agent.agentId, ...r.filter((id) => id !== agent.agentId)].slice(0, 20));
        } else next.set(agent.agentId, agent);
        return next;
      });
    },
    [client, JSON.stringify(query)],
  );
  const [trust, setTrust] = useState<Map<string, governancepb.TrustScore>>(new Map());
  const loadTrust = () =>
    client.governance
      .listTrustScores({ pageSize: 500 })
      .toArray(5000)
      .then((scores) => setTrust(new Map(scores.map((s) => [s.agentId, s]))), () => undefined);
  useLoad(loadTrust, [client]);
  useInterval(loadTrust, 15_000);
  const sorted = [...agents.values()].sort((a, b) => a.agentId.localeCompare(b.agentId));
  return (
    <div>
      <h1>
        Agents <LiveDot connected={live.connected} />
      </h1>
      <FilterBar
        fields={[
          {
            name: "status",
            label: "Status",
            type: "select",
            options: [
              ["", "any"],
              ["active", "active"],
              ["stale", "stale"],
            ],
          },
          { name: "tag", label: "Skill tag" },
          { name: "framework", label: "Framework" },
        ]}
      />
      <ErrorBox error={live.error} />
      <table class="list" data-testid="agents">
        <thead>
          <tr>
            <th>Agent</th>
            <th>Name</th>
            <th>Status</th>
            <th>Lease expires</th>
            <th>Framework</th>
            <th>Skills</th>
            <th>Trust</th>
          </tr>
        </thead>
        <tbody>
          {sorted.map((a) => (
            <tr key={a.agentId} data-agent={a.agentId}>
              <td>
                <a href={`/agents/${encodeURIComponent(a.agentId)}`}>{a.agentId}</a>
              </td>
              <td>{a.card?.name}</td>
              <td>
                <Badge tone={statusTone(a.status)}>{enumName(registrypb.AgentStatus, a.status)}</Badge>
              </td>
              <td>{time(a.leaseExpireTime)}</td>
              <td>
                {a.card?.framework} {a.card?.sdkLanguage && <span class="muted">({a.card.sdkLanguage})</span>}
              </td>
              <td>
                {(a.card?.skills ?? []).map((s) => (
                  <Badge key={s.id}>{s.name || s.id}</Badge>
                ))}
              </td>
              <td>
                <TrustBadge score={trust.get(a.agentId)} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {sorted.length === 0 && <Empty>No registered agents match.</Empty>}
      {removed.length > 0 && <p class="muted">Removed while watching: {removed.join(", ")}</p>}
    </div>
  );
}

function TrustHistory({ agentId }: { agentId: string }) {
  const client = useClient();
  const score = useLoad(() => client.governance.getTrustScore({ agentId }), [client, agentId]);
  const pager = usePages(
    async (pageToken) => {
      const page = await client.governance.listTrustEventsPage({ agentId, pageSize: 200, pageToken });
      return { items: page.trustEvents, nextPageToken: page.nextPageToken };
    },
    [client, agentId],
  );
  // Events come newest first; the chart reads oldest to newest.
  const points = [...pager.items].reverse();
  const current = score.data?.trustScore;
  return (
    <Section title="Trust score">
      <ErrorBox error={score.error} />
      {current && (
        <p>
          <TrustBadge score={current} /> <span class="muted">baseline {current.baseline.toFixed(3)} · {String(current.eventCount)} events · updated {time(current.updateTime)}</span>
        </p>
      )}
      {points.length > 0 && (
        <Chart
          testId="trust-chart"
          height={220}
          yRange={[0, 1]}
          data={[points.map((e) => millis(e.createTime) / 1000), points.map((e) => e.scoreAfter)]}
          series={[{ label: "score", stroke: "#3056d3", width: 2, points: { show: true, size: 5 } }]}
        />
      )}
      <h3>Events that moved it</h3>
      <table class="list" data-testid="trust-events">
        <thead>
          <tr>
            <th>When</th>
            <th>Cause</th>
            <th class="num">Delta</th>
            <th class="num">Score after</th>
            <th>Action</th>
            <th>By</th>
            <th>Comment</th>
            <th>Decision</th>
          </tr>
        </thead>
        <tbody>
          {pager.items.map((e) => (
            <tr key={e.eventId}>
              <td>{time(e.createTime)}</td>
              <td>{enumName(governancepb.TrustEventCause, e.cause)}</td>
              <td class={`num ${e.delta < 0 ? "neg" : "pos"}`}>{e.delta >= 0 ? "+" : ""}{e.delta.toFixed(3)}</td>
              <td class="num">{e.scoreAfter.toFixed(3)}</td>
              <td>{e.action}</td>
              <td>{e.actor}</td>
              <td>{e.comment}</td>
              <td>{e.decisionId && <a href={`/governance/decisions?decision_id=${encodeURIComponent(e.decisionId)}`}>{e.decisionId.slice(0, 10)}</a>}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <ScrollMore pager={pager} />
    </Section>
  );
}

export function AgentDetail() {
  const client = useClient();
  const { params } = useRoute();
  const agentId = params.agentId ?? "";
  const [agent, setAgent] = useState<registrypb.Agent | undefined>(undefined);
  const [gone, setGone] = useState(false);
  const live = useStream(
    (signal) => client.registry.watchAgents({ filter: { agentIds: [agentId] }, sendInitialSnapshot: true }, { signal }),
    (event) => {
      if (event.type === registrypb.AgentEventType.SNAPSHOT_COMPLETE) return;
      if (event.type === registrypb.AgentEventType.REMOVED) setGone(true);
      else if (event.agent) {
        setGone(false);
        setAgent(event.agent);
      }
    },
    [client, agentId],
  );
  const card = agent?.card;
  return (
    <div>
      <h1>
        Agent <span data-testid="agent-id">{agentId}</span> <LiveDot connected={live.connected} />
      </h1>
      <ErrorBox error={live.error} />
      <p class="muted">
        <a href={`/sessions?agent=${encodeURIComponent(agentId)}`}>sessions</a> ·{" "}
        <a href={`/traces?agent=${encodeURIComponent(agentId)}`}>traces</a> ·{" "}
        <a href={`/feedback?agent=${encodeURIComponent(agentId)}`}>feedback</a> ·{" "}
        <a href={`/governance/decisions?agent=${encodeURIComponent(agentId)}`}>decisions</a>
      </p>
      {gone && <div class="notice">This agent is not registered (deregistered or its lease expired).</div>}
      {agent && (
        <Section title="Registration">
          <dl class="facts">
            <dt>Name</dt>
            <dd>{card?.name}</dd>
            <dt>Description</dt>
            <dd>{card?.description}</dd>
            <dt>Status</dt>
            <dd>
              <Badge tone={statusTone(agent.status)}>{enumName(registrypb.AgentStatus, agent.status)}</Badge>
            </dd>
            <dt>Lease</dt>
            <dd>
              expires {time(agent.leaseExpireTime)} · last heartbeat {time(agent.lastHeartbeatTime)}
            </dd>
            <dt>Version</dt>
            <dd>{card?.version}</dd>
            <dt>Framework</dt>
            <dd>
              {card?.framework} {card?.sdkLanguage} {card?.sdkVersion}
            </dd>
            <dt>Interfaces</dt>
            <dd>
              {(card?.interfaces ?? []).map((i) => (
                <div key={i.url} class="mono">
                  {i.transport} {i.url}
                </div>
              ))}
            </dd>
            <dt>Labels</dt>
            <dd>
              {Object.entries(card?.labels ?? {}).map(([k, v]) => (
                <Badge key={k}>
                  {k}={v}
                </Badge>
              ))}
            </dd>
          </dl>
          <h3>Skills</h3>
          <ul class="skills">
            {(card?.skills ?? []).map((s) => (
              <li key={s.id}>
                <b>{s.name || s.id}</b> <span class="muted">{s.description}</span>{" "}
                {s.tags.map((t) => (
                  <Badge key={t}>{t}</Badge>
                ))}
              </li>
            ))}
          </ul>
          <Json value={card?.capabilities} />
        </Section>
      )}
      <TrustHistory agentId={agentId} />
    </div>
  );
}
