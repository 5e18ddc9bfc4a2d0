/** Feedback across agents: filters, and per-agent summaries per day or week drawn as charts. */

import { useMemo } from "preact/hooks";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { feedback as feedbackpb } from "@agentplane/sdk";

import { useClient } from "../auth";
import { Chart } from "../components/chart";
import { FilterBar, TIME_FIELDS, enumOptions, enumValue } from "../components/filters";
import { Badge, ErrorBox, ScrollMore, Section } from "../components/ui";
import { enumName, millis, parseLocalTime, time } from "../format";
import { useLoad, usePages, useQueryFilters } from "../hooks";

const DAY_MS = 86_400_000;

function agentsOf(query: Record<string, string>): string[] {
  return (query.agent ?? "")
    .split(",")
    .map((a) => a.trim())
    .filter(Boolean);
}

/** The summary's span: the filter's from/to, else the last 30 days (day) or 26 weeks (week). */
function summaryRange(query: Record<string, string>, week: boolean): { start: Date; end: Date } {
  const end = parseLocalTime(query.to) ?? new Date(Date.now() + 60_000);
  const start = parseLocalTime(query.from) ?? new Date(end.getTime() - (week ? 26 * 7 : 30) * DAY_MS);
  return { start, end };
}

function Summary({ query }: { query: Record<string, string> }) {
  const client = useClient();
  const week = query.window === "week";
  // Fixed per filter, so the chart's span does not move on every render.
  const { start, end } = useMemo(() => summaryRange(query, week), [JSON.stringify(query)]);
  const summary = useLoad(async () => {
    return client.feedback.summarizeFeedback({
      timeRange: { startTime: timestampFromDate(start), endTime: timestampFromDate(end) },
      window: week ? feedbackpb.Window.WEEK : feedbackpb.Window.DAY,
      agentIds: agentsOf(query),
      source: enumValue(feedbackpb.FeedbackSource, query.source),
    });
  }, [client, JSON.stringify(query)]);
  const byAgent = new Map<string, feedbackpb.FeedbackBucket[]>();
  for (const bucket of summary.data?.buckets ?? []) {
    byAgent.set(bucket.agentId, [...(byAgent.get(bucket.agentId) ?? []), bucket]);
  }
  return (
    <Section title={`Summary per ${week ? "week" : "day"}`}>
      <ErrorBox error={summary.error} />
      {summary.data && byAgent.size === 0 && <p class="muted">No feedback in this span.</p>}
      <div class="charts">
        {[...byAgent.entries()].map(([agentId, buckets]) => {
          buckets.sort((a, b) => millis(a.windowStartTime) - millis(b.windowStartTime));
          return (
            <div class="chart-card" key={agentId} data-testid="summary-agent" data-agent={agentId}>
              <h3>{agentId || "(no agent)"}</h3>
              <Chart
                testId="summary-chart"
                bars
                height={180}
                xRange={[start.getTime() / 1000 - (week ? 7 : 1) * 43_200, end.getTime() / 1000]}
                data={[
                  buckets.map((b) => millis(b.windowStartTime) / 1000),
                  buckets.map((b) => Number(b.upCount)),
                  buckets.map((b) => Number(b.downCount)),
                ]}
                series={[
                  { label: "thumbs up", stroke: "#2f855a", fill: "rgba(47,133,90,0.5)" },
                  { label: "thumbs down", stroke: "#c53030", fill: "rgba(197,48,48,0.5)" },
                ]}
              />
              <table class="list compact" data-testid="summary-table">
                <thead>
                  <tr>
                    <th>{week ? "Week of" : "Day"}</th>
                    <th class="num">Up</th>
                    <th class="num">Down</th>
                    <th class="num">Total</th>
                    <th class="num">Mean score</th>
                  </tr>
                </thead>
                <tbody>
                  {buckets.map((b) => (
                    <tr
                      key={millis(b.windowStartTime)}
                      data-testid="summary-bucket"
                      data-start={String(b.windowStartTime?.seconds ?? 0n)}
                      data-up={String(b.upCount)}
                      data-down={String(b.downCount)}
                      data-count={String(b.feedbackCount)}
                    >
                      <td>{time(b.windowStartTime).slice(0, 10)}</td>
                      <td class="num">{String(b.upCount)}</td>
                      <td class="num">{String(b.downCount)}</td>
                      <td class="num">{String(b.feedbackCount)}</td>
                      <td class="num">{b.meanScore === undefined ? "" : b.meanScore.toFixed(2)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          );
        })}
      </div>
    </Section>
  );
}

export function FeedbackView() {
  const client = useClient();
  const [query] = useQueryFilters();
  const pager = usePages(
    async (pageToken) => {
      const range = query.from || query.to ? summaryRange(query, false) : undefined;
      const page = await client.feedback.listFeedbackPage({
        pageSize: 50,
        pageToken,
        agentIds: agentsOf(query),
        rating: enumValue(feedbackpb.Rating, query.rating),
        sessionId: query.session ?? "",
        traceId: query.trace ?? "",
        userId: query.user ?? "",
        source: enumValue(feedbackpb.FeedbackSource, query.source),
        category: query.category ?? "",
        createTime: range && {
          ...(query.from ? { startTime: timestampFromDate(range.start) } : {}),
          ...(query.to ? { endTime: timestampFromDate(range.end) } : {}),
        },
      });
      return { items: page.feedback, nextPageToken: page.nextPageToken };
    },
    [client, JSON.stringify(query)],
  );
  return (
    <div>
      <h1>Feedback</h1>
      <FilterBar
        fields={[
          { name: "agent", label: "Agents", placeholder: "a, b" },
          { name: "rating", label: "Rating", type: "select", options: enumOptions(feedbackpb.Rating) },
          { name: "source", label: "Source", type: "select", options: enumOptions(feedbackpb.FeedbackSource) },
          { name: "session", label: "Session", placeholder: "session id" },
          { name: "trace", label: "Trace", placeholder: "trace id" },
          { name: "user", label: "User", placeholder: "user id" },
          { name: "category", label: "Category" },
          {
            name: "window",
            label: "Chart by",
            type: "select",
            options: [
              ["", "day"],
              ["week", "week"],
            ],
          },
          ...TIME_FIELDS,
        ]}
      />
      <Summary query={query} />
      <Section title="Feedback">
        <table class="list" data-testid="feedback">
          <thead>
            <tr>
              <th>Rating</th>
              <th>Agent</th>
              <th>Comment</th>
              <th>Categories</th>
              <th>Source</th>
              <th>User</th>
              <th>Session</th>
              <th>Trace</th>
              <th>Created</th>
            </tr>
          </thead>
          <tbody>
            {pager.items.map((f) => (
              <tr key={f.feedbackId} data-testid="feedback-row" data-agent={f.agentId}>
                <td>
                  <Badge tone={f.rating === feedbackpb.Rating.THUMBS_DOWN ? "bad" : f.rating === feedbackpb.Rating.THUMBS_UP ? "good" : ""}>
                    {f.rating ? enumName(feedbackpb.Rating, f.rating) : f.score !== undefined ? `score ${f.score.toFixed(2)}` : "—"}
                  </Badge>
                </td>
                <td>{f.agentId && <a href={`/agents/${encodeURIComponent(f.agentId)}`}>{f.agentId}</a>}</td>
                <td class="wrap">{f.comment}</td>
                <td>{f.categories.join(", ")}</td>
                <td>{enumName(feedbackpb.FeedbackSource, f.source)}</td>
                <td>{f.userId}</td>
                <td>{f.sessionId && <a href={`/sessions/${encodeURIComponent(f.sessionId)}`}>{f.sessionId}</a>}</td>
                <td>
                  {f.traceId && (
                    <a class="mono" href={`/traces/${f.traceId}`}>
                      {f.traceId.slice(0, 8)}…
                    </a>
                  )}
                </td>
                <td>{time(f.createTime)}</td>
              </tr>
            ))}
          </tbody>
        </table>
        <ScrollMore pager={pager} />
      </Section>
    </div>
  );
}
