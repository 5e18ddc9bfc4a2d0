/** Traces: search, and one trace's span waterfall with its GenAI attributes. */

import { useState } from "preact/hooks";
import { useRoute } from "preact-iso";
import { feedback as feedbackpb, trace as tracepb } from "@agentplane/sdk";

import { useClient } from "../auth";
import { FilterBar, TIME_FIELDS, enumOptions, enumValue, timeRangeOf } from "../components/filters";
import { Badge, ErrorBox, Json, ScrollMore, Section } from "../components/ui";
import { cost, durationFromMs, durationMs, enumName, millis, ms, time, tokens } from "../format";
import { useLoad, usePages, useQueryFilters } from "../hooks";

export function TraceList() {
  const client = useClient();
  const [query] = useQueryFilters();
  const pager = usePages(
    async (pageToken) => {
      const minMs = Number(query.min_ms ?? "");
      const page = await client.traces.listTracesPage({
        pageSize: 50,
        pageToken,
        agentIds: query.agent ? query.agent.split(",").map((a) => a.trim()).filter(Boolean) : [],
        sessionId: query.session ?? "",
        status: enumValue(tracepb.TraceStatus, query.status),
        rootSpanName: query.name ?? "",
        startTime: timeRangeOf(query),
        minDuration: minMs > 0 ? durationFromMs(minMs) : undefined,
      });
      return { items: page.traces, nextPageToken: page.nextPageToken };
    },
    [client, JSON.stringify(query)],
  );
  return (
    <div>
      <h1>Traces</h1>
      <FilterBar
        fields={[
          { name: "agent", label: "Agents", placeholder: "a, b" },
          { name: "session", label: "Session", placeholder: "session id" },
          { name: "name", label: "Root span", placeholder: "name" },
          { name: "status", label: "Status", type: "select", options: enumOptions(tracepb.TraceStatus) },
          { name: "min_ms", label: "Min duration (ms)", placeholder: "0" },
          ...TIME_FIELDS,
        ]}
      />
      <table class="list" data-testid="traces">
        <thead>
          <tr>
            <th>Trace</th>
            <th>Root span</th>
            <th>Agents</th>
            <th>Session</th>
            <th>Status</th>
            <th class="num">Spans</th>
            <th class="num">Duration</th>
            <th class="num">Cost</th>
            <th>Started</th>
          </tr>
        </thead>
        <tbody>
          {pager.items.map((t) => (
            <tr key={t.traceId}>
              <td>
                <a class="mono" href={`/traces/${t.traceId}`}>
                  {t.traceId.slice(0, 12)}…
                </a>
              </td>
              <td>{t.rootSpanName}</td>
              <td>
                {t.agentIds.map((a) => (
                  <Badge key={a} tone="agent">
                    {a}
                  </Badge>
                ))}
              </td>
              <td>{t.sessionId && <a href={`/sessions/${encodeURIComponent(t.sessionId)}`}>{t.sessionId}</a>}</td>
              <td>
                <Badge tone={t.status === tracepb.TraceStatus.ERROR ? "bad" : "good"}>
                  {enumName(tracepb.TraceStatus, t.status)}
                </Badge>
              </td>
              <td class="num">{String(t.spanCount)}</td>
              <td class="num">{ms(durationMs(t.duration))}</td>
              <td class="num">{cost(t.usage)}</td>
              <td>{time(t.startTime)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <ScrollMore pager={pager} />
    </div>
  );
}

/** Spans in tree order (each after its parent, siblings by start), with their depth. */
function treeOrder(spans: tracepb.Span[]): [tracepb.Span, number][] {
  const ids = new Set(spans.map((s) => s.spanId));
  const children = new Map<string, tracepb.Span[]>();
  for (const span of spans) {
    const parent = span.parentSpanId && ids.has(span.parentSpanId) ? span.parentSpanId : "";
    children.set(parent, [...(children.get(parent) ?? []), span]);
  }
  for (const list of children.values()) list.sort((a, b) => millis(a.startTime) - millis(b.startTime));
  const ordered: [tracepb.Span, number][] = [];
  const visit = (parent: string, depth: number) => {
    for (const span of children.get(parent) ?? []) {
      ordered.push([span, depth]);
      visit(span.spanId, depth + 1);
    }
  };
  visit("", 0);
  return ordered;
}

function genAiAttributes(attributes: Record<string, unknown> | undefined): [string, unknown][] {
  return Object.entries(attributes ?? {}).filter(([key]) => key.startsWith("gen_ai.") || key.startsWith("agentplane."));
}

function Waterfall({ spans }: { spans: tracepb.Span[] }) {
  const [selected, setSelected] = useState<string>("");
  const ordered = treeOrder(spans);
  const start = Math.min(...spans.map((s) => millis(s.startTime)));
  const end = Math.max(...spans.map((s) => millis(s.endTime)));
  const total = Math.max(end - start, 0.001);
  return (
    <div class="waterfall" data-testid="waterfall">
      <div class="wf-scale">
        <span>0</span>
        <span>{ms(total / 2)}</span>
        <span>{ms(total)}</span>
      </div>
      {ordered.map(([span, depth]) => {
        const left = ((millis(span.startTime) - start) / total) * 100;
        const width = Math.max(((millis(span.endTime) - millis(span.startTime)) / total) * 100, 0.4);
        const open = selected === span.spanId;
        const gen = genAiAttributes(span.attributes as Record<string, unknown> | undefined);
        return (
          <div key={span.spanId} class={`wf-row ${open ? "open" : ""}`} data-testid="span" data-span-name={span.name}>
            <button type="button" class="wf-label" style={{ paddingLeft: `${depth * 14 + 4}px` }} onClick={() => setSelected(open ? "" : span.spanId)}>
              <span class="wf-name">{span.name}</span>
              {span.agentId && <span class="badge agent">{span.agentId}</span>}
              {span.model && <span class="badge model">{span.model}</span>}
            </button>
            <div class="wf-track">
              <div
                class={`wf-bar ${span.statusCode === tracepb.SpanStatusCode.ERROR ? "error" : ""}`}
                style={{ left: `${left}%`, width: `${width}%` }}
                title={`${span.name}: ${ms(millis(span.endTime) - millis(span.startTime))}`}
              />
            </div>
            <span class="wf-time">{ms(millis(span.endTime) - millis(span.startTime))}</span>
            {gen.length > 0 && !open && (
              <div class="wf-gen">
                {gen.slice(0, 4).map(([key, value]) => (
                  <span key={key} class="attr">
                    {key}={String(value)}
                  </span>
                ))}
              </div>
            )}
            {open && (
              <div class="wf-detail" data-testid="span-detail">
                <dl class="facts">
                  <dt>Span</dt>
                  <dd class="mono">{span.spanId}</dd>
                  <dt>Kind</dt>
                  <dd>{enumName(tracepb.SpanKind, span.kind)}</dd>
                  <dt>Status</dt>
                  <dd>
                    {enumName(tracepb.SpanStatusCode, span.statusCode)} {span.statusMessage}
                  </dd>
                  <dt>Service</dt>
                  <dd>{span.serviceName}</dd>
                  {span.sessionId && (
                    <>
                      <dt>Session</dt>
                      <dd>
                        <a href={`/sessions/${encodeURIComponent(span.sessionId)}`}>{span.sessionId}</a>
                      </dd>
                    </>
                  )}
                  {span.usage && (span.usage.inputTokens || span.usage.outputTokens || span.usage.costMicros) ? (
                    <>
                      <dt>Usage</dt>
                      <dd>
                        {tokens(span.usage)} · {cost(span.usage)}
                      </dd>
                    </>
                  ) : null}
                </dl>
                {gen.length > 0 && <h3>GenAI attributes</h3>}
                <table class="list attrs">
                  <tbody>
                    {gen.map(([key, value]) => (
                      <tr key={key}>
                        <td class="mono">{key}</td>
                        <td>{typeof value === "object" ? JSON.stringify(value) : String(value)}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
                <h3>All attributes</h3>
                <Json value={span.attributes} />
                {span.events.length > 0 && (
                  <>
                    <h3>Events</h3>
                    <ul>
                      {span.events.map((e, i) => (
                        <li key={i}>
                          {time(e.eventTime)} {e.name}
                        </li>
                      ))}
                    </ul>
                  </>
                )}
              </div>
            )}
          </div>
        );
      })}
    </div>
  );
}

export function TraceDetail() {
  const client = useClient();
  const { params } = useRoute();
  const traceId = params.traceId ?? "";
  const loaded = useLoad(() => client.traces.getTrace({ traceId }), [client, traceId]);
  const t = loaded.data?.trace;
  return (
    <div>
      <h1>
        Trace <span class="mono">{traceId}</span>
      </h1>
      <ErrorBox error={loaded.error} />
      {t && (
        <Section title="Overview">
          <dl class="facts">
            <dt>Root span</dt>
            <dd>{t.rootSpanName}</dd>
            <dt>Status</dt>
            <dd>{enumName(tracepb.TraceStatus, t.status)}</dd>
            <dt>Duration</dt>
            <dd>{ms(durationMs(t.duration))}</dd>
            <dt>Agents</dt>
            <dd>
              {t.agentIds.map((a) => (
                <a key={a} class="badge agent" href={`/agents/${encodeURIComponent(a)}`}>
                  {a}
                </a>
              ))}
            </dd>
            <dt>Models</dt>
            <dd>{t.models.join(", ")}</dd>
            <dt>Usage</dt>
            <dd>
              {tokens(t.usage)} · {cost(t.usage)}
            </dd>
            <dt>Session</dt>
            <dd>{t.sessionId ? <a href={`/sessions/${encodeURIComponent(t.sessionId)}`}>{t.sessionId}</a> : "none"}</dd>
            <dt>Feedback</dt>
            <dd>
              <a href={`/feedback?trace=${traceId}`}>{loaded.data!.feedback.length} on this trace</a>
              {loaded.data!.feedback.map((f) => (
                <Badge key={f.feedbackId} tone={f.rating === feedbackpb.Rating.THUMBS_DOWN ? "bad" : "good"}>
                  {enumName(feedbackpb.Rating, f.rating)}
                </Badge>
              ))}
            </dd>
          </dl>
        </Section>
      )}
      {loaded.data && (
        <Section title={`Spans (${loaded.data.spans.length}${loaded.data.spansTruncated ? ", truncated" : ""})`}>
          <Waterfall spans={loaded.data.spans} />
        </Section>
      )}
    </div>
  );
}
