/**
 * @agentplane/sdk/web: the client for browsers, over the server's HTTP listener.
 *
 *     const client = createAgentplaneClient({ url: "https://agentplane.example.com", protocol: "connect" });
 *
 * The same clients, errors and messages as the package's main entry, without what needs Node
 * (Agent, Governor and governed(), which keep per-call state in AsyncLocalStorage). Bundlers pick
 * the browser stand-ins through package.json's "browser" field.
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
export * from "./errors.js";

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
