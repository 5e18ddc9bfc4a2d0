/**
 * @agentplane/sdk: the TypeScript SDK of Agentplane.
 *
 * - createAgentplaneClient({ url, apiKey, tls }): one client per service, over gRPC (HTTP/2).
 * - typed errors (RpcError and one subclass per status code) with the parsed google.rpc details.
 * - Agent (registration and lease), Governor and governed() (permission checks, output
 *   validation, execution reports, local decisions from WatchPolicies, null mode).
 * - The governance decision rule (decide, PolicyState), shared with the server and the Python
 *   SDK.
 * - The generated messages and enums, one namespace per contract package: `session`, `feedback`,
 *   `trace`, `registry`, `governance`, `inference`, `admin`, `common`.
 */

export {
  createAgentplaneClient,
  PageIterator,
  SERVICES,
  SDK_VERSION,
  DEFAULT_RETRY,
  CONTRACT_DIGEST,
  CONTRACT_VERSION,
  type AgentplaneClient,
  type AgentplaneClientOptions,
  type AgentplaneCallOptions,
  type PageItem,
  type RetryPolicy,
  type ServiceClient,
  type ServiceName,
} from "./client.js";
export {
  parseTarget,
  DEFAULT_TIMEOUT_MS,
  ENV_AGENT_ID,
  ENV_API_KEY,
  ENV_PROJECT,
  ENV_URL,
  type TlsOptions,
} from "./config.js";
export * from "./errors.js";
export {
  Governor,
  GovernedCall,
  DecisionCache,
  governed,
  currentCall,
  setDefaultGovernor,
  getDefaultGovernor,
  DEFAULT_CHECK_TIMEOUT_MS,
  type Decision,
  type DecisionSource,
  type GovernedOptions,
  type GovernorOptions,
  type CheckOptions,
  type AuthorizeOptions,
  type ValidateOptions,
  type ReportOptions,
  type UsageInit,
} from "./governed.js";
export { Agent, type AgentOptions, type AgentCardInit } from "./agent.js";
export {
  decide,
  compileGlob,
  compareRules,
  globMatch,
  trustRange,
  PolicyState,
  Rule,
  RuleIndex,
  UNDECIDABLE,
  EFFECT_RANK,
  type ConditionResult,
  type DecideRequest,
  type Matcher,
  type Outcome,
} from "./decision.js";

export * as session from "./types/session.js";
export * as feedback from "./types/feedback.js";
export * as trace from "./types/trace.js";
export * as registry from "./types/registry.js";
export * as governance from "./types/governance.js";
export * as inference from "./types/inference.js";
export * as admin from "./types/admin.js";
export * as common from "./types/common.js";

export { Code, ConnectError } from "@connectrpc/connect";
export { create, clone, equals, fromJson, toJson, isMessage } from "@bufbuild/protobuf";
