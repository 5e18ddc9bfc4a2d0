/** Models: Triton's models as the inference service reports them, with their health. */

import { inference as inferencepb } from "@agentplane/sdk";

import { useClient } from "../auth";
import { Badge, Empty, ErrorBox } from "../components/ui";
import { enumName } from "../format";
import { useInterval, useLoad } from "../hooks";

export function Models() {
  const client = useClient();
  // One retry only: while Triton is down the answer is UNAVAILABLE, and the page should say so.
  const models = useLoad(
    () => client.inference.listModels({ pageSize: 100 }, { retry: { maxAttempts: 2 } }).toArray(1000),
    [client],
  );
  useInterval(models.reload, 10_000);
  return (
    <div>
      <h1>Models</h1>
      <ErrorBox error={models.error} />
      {models.loading && !models.data && !models.error && <p class="muted">Loading…</p>}
      {models.data && models.data.length === 0 && <Empty>No models.</Empty>}
      <table class="list" data-testid="models">
        <thead>
          <tr>
            <th>Model</th>
            <th>Task</th>
            <th>State</th>
            <th>Versions</th>
            <th>Backend</th>
            <th>Instances</th>
            <th class="num">Max batch</th>
            <th class="num">Dimension</th>
          </tr>
        </thead>
        <tbody>
          {(models.data ?? []).map((m) => (
            <tr key={m.name} data-model={m.name}>
              <td>{m.name}</td>
              <td>{enumName(inferencepb.ModelTask, m.task)}</td>
              <td>
                <Badge tone={m.state === inferencepb.ModelState.READY ? "good" : m.state === inferencepb.ModelState.UNAVAILABLE ? "bad" : "warn"}>
                  {enumName(inferencepb.ModelState, m.state)}
                </Badge>
                {m.stateReason && <div class="muted">{m.stateReason}</div>}
              </td>
              <td>
                {m.versions.map((v) => (
                  <div key={v.version}>
                    v{v.version} {enumName(inferencepb.ModelState, v.state)} {v.stateReason && <span class="muted">{v.stateReason}</span>}
                  </div>
                ))}
              </td>
              <td>
                {m.platform || m.backend}
                {m.decoupled && <span class="muted"> (streaming)</span>}
              </td>
              <td>{m.instanceGroups.map((g) => `${g.count}× ${enumName(inferencepb.InstanceKind, g.kind)}${g.gpus.length ? ` gpu ${g.gpus.join(",")}` : ""}`).join(", ")}</td>
              <td class="num">{m.maxBatchSize || ""}</td>
              <td class="num">{m.embeddingDimension || ""}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
