/** Sessions: the list with filters, and one session's timeline across agents, live. */

import { useState } from "preact/hooks";
import { useRoute } from "preact-iso";
import { session as sessionpb } from "@agentplane/sdk";

import { useClient } from "../auth";
import { FilterBar, TIME_FIELDS, enumOptions, enumValue, timeRangeOf } from "../components/filters";
import { Badge, Empty, ErrorBox, Json, LiveDot, ScrollMore, Section } from "../components/ui";
import { cost, enumName, time, tokens } from "../format";
import { useLoad, usePages, useQueryFilters, useStream } from "../hooks";

const PAGE_SIZE = 50;

export function SessionList() {
  const client = useClient();
  const [query] = useQueryFilters();
  const pager = usePages(
    async (pageToken) => {
      const page = await client.sessions.listSessionsPage({
        pageSize: PAGE_SIZE,
        pageToken,
        agentId: query.agent ?? "",
        userId: query.user ?? "",
        state: enumValue(sessionpb.SessionState, query.state),
        createTime: timeRangeOf(query),
      });
      return { items: page.sessions, nextPageToken: page.nextPageToken };
    },
    [client, JSON.stringify(query)],
  );
  return (
    <div>
      <h1>Sessions</h1>
      <FilterBar
        fields={[
          { name: "agent", label: "Agent", placeholder: "agent id" },
          { name: "user", label: "User", placeholder: "user id" },
          { name: "state", label: "State", type: "select", options: enumOptions(sessionpb.SessionState) },
          ...TIME_FIELDS,
        ]}
      />
      <table class="list" data-testid="sessions">
        <thead>
          <tr>
            <th>Session</th>
            <th>Title</th>
            <th>User</th>
            <th>Agents</th>
            <th class="num">Messages</th>
            <th class="num">Cost</th>
            <th>Updated</th>
          </tr>
        </thead>
        <tbody>
          {pager.items.map((s) => (
            <tr key={s.sessionId}>
              <td>
                <a href={`/sessions/${encodeURIComponent(s.sessionId)}`}>{s.sessionId}</a>
                {s.parentSessionId && <Badge tone="muted">fork</Badge>}
              </td>
              <td>{s.title}</td>
              <td>{s.userId}</td>
              <td>
                {s.agentIds.map((a) => (
                  <Badge key={a} tone="agent">
                    {a}
                  </Badge>
                ))}
              </td>
              <td class="num">{String(s.messageCount)}</td>
              <td class="num">{cost(s.usage)}</td>
              <td>{time(s.updateTime)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <ScrollMore pager={pager} />
    </div>
  );
}

function Usage({ sessionId, version }: { sessionId: string; version: number }) {
  const client = useClient();
  const usage = useLoad(() => client.sessions.getSessionUsage({ sessionId }), [client, sessionId, version]);
  const data = usage.data;
  return (
    <Section title="Usage and cost">
      <ErrorBox error={usage.error} />
      {data && (
        <div class="two">
          <table class="list" data-testid="usage-by-agent">
            <thead>
              <tr>
                <th>Agent</th>
                <th class="num">Messages</th>
                <th class="num">Tokens</th>
                <th class="num">Cost</th>
              </tr>
            </thead>
            <tbody>
              {data.byAgent.map((a) => (
                <tr key={a.agentId} data-agent={a.agentId}>
                  <td>
                    <a href={`/agents/${encodeURIComponent(a.agentId)}`}>{a.agentId || "(none)"}</a>
                  </td>
                  <td class="num">{String(a.messageCount)}</td>
                  <td class="num">{tokens(a.usage)}</td>
                  <td class="num cost">{cost(a.usage)}</td>
                </tr>
              ))}
              <tr class="total">
                <td>Total</td>
                <td />
                <td class="num">{tokens(data.total)}</td>
                <td class="num" data-testid="total-cost">
                  {cost(data.total)}
                </td>
              </tr>
            </tbody>
          </table>
          <table class="list" data-testid="usage-by-model">
            <thead>
              <tr>
                <th>Model</th>
                <th class="num">Messages</th>
                <th class="num">Tokens</th>
                <th class="num">Cost</th>
              </tr>
            </thead>
            <tbody>
              {data.byModel.map((m) => (
                <tr key={m.model}>
                  <td>{m.model || "(none)"}</td>
                  <td class="num">{String(m.messageCount)}</td>
                  <td class="num">{tokens(m.usage)}</td>
                  <td class="num">{cost(m.usage)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </Section>
  );
}

function MessageItem({ message }: { message: sessionpb.Message }) {
  return (
    <li class={`message role-${enumName(sessionpb.Role, message.role).replace(/ /g, "-")}`} data-testid="message" data-agent={message.agentId}>
      <div class="message-head">
        <span class="seq">#{String(message.sequence)}</span>
        <span class="role">{enumName(sessionpb.Role, message.role)}</span>
        {message.agentId ? (
          <a class="badge agent" data-testid="message-agent" href={`/agents/${encodeURIComponent(message.agentId)}`}>
            {message.agentId}
          </a>
        ) : (
          <span class="badge muted" data-testid="message-agent">
            no agent
          </span>
        )}
        {message.model && <span class="badge model">{message.model}</span>}
        {message.usage && (message.usage.inputTokens || message.usage.outputTokens || message.usage.costMicros) ? (
          <span class="muted">
            {tokens(message.usage)} · {cost(message.usage)}
          </span>
        ) : null}
        {message.traceId && (
          <a class="muted" href={`/traces/${message.traceId}`}>
            trace
          </a>
        )}
        <span class="muted right">{time(message.createTime)}</span>
      </div>
      {message.content && <div class="content">{message.content}</div>}
      {message.toolCalls.map((call) => (
        <div class="tool" key={call.toolCallId}>
          tool call <b>{call.name}</b> <code>{call.argumentsJson}</code>
        </div>
      ))}
      {message.toolCallId && <div class="muted">result of tool call {message.toolCallId}</div>}
    </li>
  );
}

export function SessionDetail() {
  const { params } = useRoute();
  const sessionId = params.sessionId ?? "";
  return <SessionPage key={sessionId} sessionId={sessionId} />;
}

function SessionPage({ sessionId }: { sessionId: string }) {
  const client = useClient();
  const session = useLoad(() => client.sessions.getSession({ sessionId }), [client, sessionId]);
  const forks = useLoad(
    () => client.sessions.listSessions({ parentSessionId: sessionId }).toArray(100),
    [client, sessionId],
  );
  const pager = usePages(
    async (pageToken) => {
      const page = await client.sessions.listMessagesPage({ sessionId, pageSize: 100, pageToken });
      return { items: page.messages, nextPageToken: page.nextPageToken };
    },
    [client, sessionId],
  );
  // Messages that arrived through WatchSession after the last page was read.
  const [live, setLive] = useState<sessionpb.Message[]>([]);
  const lastPaged = pager.items.length ? pager.items[pager.items.length - 1]!.sequence : 0n;
  const lastSeen = live.length ? live[live.length - 1]!.sequence : lastPaged;
  const watch = useStream(
    (signal) => client.sessions.watchSession({ sessionId, afterSequence: lastSeen }, { signal }),
    (response) => {
      const message = response.message;
      if (message) setLive((previous) => (previous.some((m) => m.sequence === message.sequence) ? previous : [...previous, message]));
    },
    [client, sessionId, lastPaged],
    // Live once every stored page is read, so new messages land after them in order.
    { enabled: pager.done && !session.error },
  );
  const s = session.data?.session;
  const messages = [...pager.items, ...live.filter((m) => m.sequence > lastPaged)];
  return (
    <div>
      <h1>
        Session <span data-testid="session-id">{sessionId}</span> <LiveDot connected={watch.connected} />
      </h1>
      <ErrorBox error={session.error} />
      {s && (
        <Section title="Overview">
          <dl class="facts">
            <dt>Title</dt>
            <dd>{s.title}</dd>
            <dt>User</dt>
            <dd>{s.userId}</dd>
            <dt>State</dt>
            <dd>{enumName(sessionpb.SessionState, s.state)}</dd>
            <dt>Agents</dt>
            <dd>
              {s.agentIds.map((a) => (
                <a key={a} class="badge agent" href={`/agents/${encodeURIComponent(a)}`}>
                  {a}
                </a>
              ))}
            </dd>
            <dt>Created</dt>
            <dd>{time(s.createTime)}</dd>
            {s.parentSessionId && (
              <>
                <dt>Forked from</dt>
                <dd>
                  <a href={`/sessions/${encodeURIComponent(s.parentSessionId)}`}>{s.parentSessionId}</a> at message #
                  {String(s.forkedAtSequence)}
                </dd>
              </>
            )}
            <dt>Forks</dt>
            <dd data-testid="forks">
              {(forks.data ?? []).length === 0
                ? "none"
                : forks.data!.map((f) => (
                    <a key={f.sessionId} class="badge" href={`/sessions/${encodeURIComponent(f.sessionId)}`}>
                      {f.sessionId}
                    </a>
                  ))}
            </dd>
            <dt>Related</dt>
            <dd>
              <a href={`/traces?session=${encodeURIComponent(sessionId)}`}>traces</a> ·{" "}
              <a href={`/feedback?session=${encodeURIComponent(sessionId)}`}>feedback</a>
            </dd>
          </dl>
          <Json value={s.metadata} />
        </Section>
      )}
      {s && <Usage sessionId={sessionId} version={messages.length} />}
      <Section title="Timeline">
        <ErrorBox error={watch.error} />
        {messages.length === 0 && pager.done && <Empty>No messages yet.</Empty>}
        <ol class="timeline" data-testid="timeline">
          {messages.map((m) => (
            <MessageItem key={m.messageId || String(m.sequence)} message={m} />
          ))}
        </ol>
        <ScrollMore pager={pager} />
      </Section>
    </div>
  );
}
