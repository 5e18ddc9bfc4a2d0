/**
 * The one place the console talks to the server: an AgentplaneClient (the TypeScript SDK) over
 * connect-web, to the origin that served the page and nowhere else, so the credential never
 * leaves that origin.
 */

import {
  Code,
  ConnectError,
  createAgentplaneClient,
  RpcError,
  type AgentplaneClient,
} from "@agentplane/sdk";
import type { Interceptor } from "@connectrpc/connect";

export type { AgentplaneClient };

/** What a signed-in tab holds: the API key or JWT, and the project an admin acts on. */
export interface Credential {
  token: string;
  /** Sent as x-agentplane-project when set (admin keys only). */
  project: string;
}

export interface ClientHooks {
  /** Called when the server stops accepting the credential (expired, revoked). */
  onUnauthenticated?: (error: ConnectError) => void;
}

/** The origin that served the page, with its port spelled out (the SDK's URLs need one). */
function ownOrigin(): string {
  const { protocol, hostname, port } = window.location;
  return `${protocol}//${hostname}:${port || (protocol === "https:" ? "443" : "80")}`;
}

export function makeClient(credential: Credential, hooks: ClientHooks = {}): AgentplaneClient {
  const onUnauthenticated: Interceptor = (next) => async (request) => {
    try {
      return await next(request);
    } catch (error) {
      if (error instanceof ConnectError && error.code === Code.Unauthenticated) {
        hooks.onUnauthenticated?.(error);
      }
      throw error;
    }
  };
  return createAgentplaneClient({
    // Same origin only: the page's own server, never a configurable address.
    url: ownOrigin(),
    protocol: "connect",
    runtime: "web",
    binaryFormat: true,
    apiKey: credential.token,
    project: credential.project || undefined,
    interceptors: [onUnauthenticated],
    timeoutMs: 15_000,
  });
}

/** A sentence for a person, from anything a call threw. */
export function describeError(error: unknown): string {
  if (error instanceof RpcError) {
    switch (error.code) {
      case Code.Unauthenticated:
        return "The server did not accept this API key or token: it is wrong, revoked or expired.";
      case Code.PermissionDenied:
        return `Your role may not do this (${error.rawMessage || "permission denied"}).`;
      case Code.Unavailable:
        return `Unavailable for now (try again shortly): ${error.rawMessage}`;
      case Code.NotFound:
        return `Not found: ${error.rawMessage}`;
      default: {
        const fields = Object.entries(error.violationsByField)
          .map(([field, text]) => `${field}: ${text}`)
          .join("; ");
        return `${error.codeName}: ${error.rawMessage}${fields ? ` (${fields})` : ""}`;
      }
    }
  }
  if (error instanceof TypeError) return `Could not reach the server at ${window.location.origin}.`;
  return error instanceof Error ? error.message : String(error);
}
