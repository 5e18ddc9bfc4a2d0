/**
 * Agent: an agent's registration in the registry, kept alive by heartbeats, and its governor.
 *
 *     const agent = new Agent(client, { agentId: "billing:pod-7", card: { name: "Billing", version: "1.0.0" } });
 *     await agent.start();          // RegisterAgent, heartbeats every third of the lease
 *     const refund = agent.governed({ action: "tool:refund" }, async (orderId: string) => ...);
 *     ...
 *     await agent.stop();           // flush reports, stop heartbeats, DeregisterAgent
 *
 * A heartbeat answered NOT_FOUND means the server removed the agent (its lease ran out while it
 * was unreachable): the agent registers again, as the contract asks. Other heartbeat failures
 * are retried at the next beat. Timers are unref'd, so a running Agent never keeps Node alive by
 * itself.
 */

import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";

import { SDK_VERSION, type AgentplaneClient } from "./client.js";
import { RpcError } from "./errors.js";
import type {
  Agent as AgentResource,
  AgentCardSchema,
} from "./gen/agentplane/registry/v1/agent_pb.js";
import {
  Governor,
  clearDefaultGovernor,
  governed,
  setDefaultGovernor,
  type GovernedOptions,
  type GovernorOptions,
} from "./governed.js";

export type AgentCardInit = MessageInitShape<typeof AgentCardSchema>;

export interface AgentOptions {
  /** The agent's id in the project (letters, digits, ".", "_", ":", "-"). */
  agentId: string;
  /** The agent's card (name and version required); sdkLanguage/sdkVersion are filled in. */
  card: AgentCardInit;
  /** How long each registration or heartbeat keeps the agent ACTIVE (5 s to 1 h; default 30 s). */
  leaseDurationMs?: number;
  /** Options of the agent's Governor (its agentId is the agent's). */
  governor?: Omit<GovernorOptions, "agentId">;
  /** Make the agent's governor the default of governed() (default true). */
  setDefault?: boolean;
  /** Called when a heartbeat fails (the next beat retries). */
  onHeartbeatError?: (error: unknown) => void;
}

const DEFAULT_LEASE_MS = 30_000;

function durationInit(ms: number) {
  return { seconds: BigInt(Math.floor(ms / 1000)), nanos: Math.round((ms % 1000) * 1e6) };
}

export class Agent {
  readonly agentId: string;
  readonly governor: Governor;
  /** The registered agent as the server last returned it. */
  registration: AgentResource | undefined;
  heartbeats = 0;
  private readonly card: AgentCardInit;
  private readonly leaseDurationMs: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private intervalMs = DEFAULT_LEASE_MS / 3;
  private running = false;
  private beating: Promise<void> | undefined;

  constructor(
    readonly client: AgentplaneClient,
    private readonly options: AgentOptions,
  ) {
    this.agentId = options.agentId;
    this.card = { sdkLanguage: "typescript", sdkVersion: SDK_VERSION, ...options.card };
    this.leaseDurationMs = options.leaseDurationMs;
    this.governor = new Governor(client, { ...options.governor, agentId: options.agentId });
  }

  get isRunning(): boolean {
    return this.running;
  }

  /** RegisterAgent (safe to repeat), then heartbeats every third of the lease. */
  async start(): Promise<AgentResource> {
    const agent = await this.register();
    this.running = true;
    if (this.options.setDefault !== false) setDefaultGovernor(this.governor);
    this.schedule();
    return agent;
  }

  private async register(): Promise<AgentResource> {
    const response = await this.client.registry.registerAgent({
      agentId: this.agentId,
      card: this.card,
      leaseDuration:
        this.leaseDurationMs === undefined ? undefined : durationInit(this.leaseDurationMs),
    });
    this.registration = response.agent;
    const lease = response.agent?.leaseDuration;
    const leaseMs = lease ? Number(lease.seconds) * 1000 + lease.nanos / 1e6 : DEFAULT_LEASE_MS;
    this.intervalMs = Math.max(1000, leaseMs / 3);
    return response.agent!;
  }

  private schedule(): void {
    if (!this.running) return;
    this.timer = setTimeout(() => {
      this.beating = this.heartbeat()
        .catch((error: unknown) => this.options.onHeartbeatError?.(error))
        .finally(() => {
          this.beating = undefined;
          this.schedule();
        });
    }, this.intervalMs);
    this.timer.unref();
  }

  /** One heartbeat now (re-registers when the server no longer knows the agent). */
  async heartbeat(): Promise<void> {
    try {
      const response = await this.client.registry.heartbeatAgent({ agentId: this.agentId });
      this.heartbeats++;
      const lease = response.leaseDuration;
      if (lease)
        this.intervalMs = Math.max(1000, (Number(lease.seconds) * 1000 + lease.nanos / 1e6) / 3);
    } catch (error) {
      if (error instanceof RpcError && error.code === Code.NotFound && this.running) {
        await this.register();
        return;
      }
      throw error;
    }
  }

  /** governed(options, fn) with this agent's governor. */
  governed<A extends unknown[], R>(
    options: string | GovernedOptions<A>,
    fn: (...args: A) => R | Promise<R>,
  ): (...args: A) => Promise<Awaited<R>> {
    const spec = typeof options === "string" ? { action: options } : options;
    return governed({ ...spec, governor: this.governor }, fn);
  }

  /** Flush execution reports, stop heartbeats and DeregisterAgent (NOT_FOUND is fine). */
  async stop(options: { flushTimeoutMs?: number } = {}): Promise<void> {
    this.running = false;
    clearTimeout(this.timer);
    await this.beating;
    await this.governor.close(options.flushTimeoutMs ?? 10_000);
    try {
      await this.client.registry.deregisterAgent({ agentId: this.agentId });
    } catch (error) {
      if (!(error instanceof RpcError && error.code === Code.NotFound)) throw error;
    } finally {
      clearDefaultGovernor(this.governor);
    }
  }
}
