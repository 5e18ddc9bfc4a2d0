/**
 * Connection settings, from createAgentplaneClient's options or AGENTPLANE_* environment
 * variables (the same names and defaults as the Python SDK).
 */

import { readFileSync } from "node:fs";

export const ENV_URL = "AGENTPLANE_URL";
export const ENV_API_KEY = "AGENTPLANE_API_KEY";
export const ENV_PROJECT = "AGENTPLANE_PROJECT";
export const ENV_AGENT_ID = "AGENTPLANE_AGENT_ID";
export const ENV_CA_CERT = "AGENTPLANE_CA_CERT";
export const ENV_CLIENT_CERT = "AGENTPLANE_CLIENT_CERT";
export const ENV_CLIENT_KEY = "AGENTPLANE_CLIENT_KEY";
export const ENV_TIMEOUT = "AGENTPLANE_TIMEOUT";

export const DEFAULT_PORT = 50051;
export const DEFAULT_TLS_PORT = 443;
/** The default deadline of a unary call, in milliseconds. */
export const DEFAULT_TIMEOUT_MS = 10_000;

/**
 * TLS toward the server. Every field is optional: `{}` (or `tls: true`) uses the system roots.
 * `cert`/`key` (PEM) authenticate this client by mutual TLS; `serverName` overrides the name
 * checked in the server certificate.
 */
export interface TlsOptions {
  ca?: string | Buffer;
  cert?: string | Buffer;
  key?: string | Buffer;
  serverName?: string;
}

/** Where and how to connect: the resolved form of the options. */
export interface ResolvedTarget {
  /** "http://host:port" or "https://host:port": the transport's base URL. */
  baseUrl: string;
  /** "host:port" */
  authority: string;
  tls: TlsOptions | undefined;
}

/**
 * Parse an Agentplane URL: "host:port", "grpc://host:port" or "http://..." (plaintext),
 * "grpcs://host:port" or "https://..." (TLS). An explicit `tls` wins over the scheme; without a
 * port, 50051 is used for plaintext and 443 for TLS.
 */
export function parseTarget(url: string, tls: boolean | TlsOptions | undefined): ResolvedTarget {
  let rest = url.trim();
  let scheme = "";
  const match = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\//.exec(rest);
  if (match) {
    scheme = match[1]!.toLowerCase();
    rest = rest.slice(match[0].length);
    if (!["grpc", "http", "grpcs", "https"].includes(scheme)) {
      throw new Error(`unsupported scheme "${scheme}" in Agentplane URL ${url}`);
    }
  }
  rest = rest.replace(/\/+$/, "");
  if (rest === "" || rest.includes("/")) {
    throw new Error(`an Agentplane URL is host:port, optionally with a scheme; got ${url}`);
  }
  const secure = scheme === "grpcs" || scheme === "https";
  let tlsOptions: TlsOptions | undefined;
  if (typeof tls === "object") tlsOptions = tls;
  else if (tls === true || (tls === undefined && secure)) tlsOptions = {};
  const authority = hasPort(rest)
    ? rest
    : `${rest}:${tlsOptions !== undefined ? DEFAULT_TLS_PORT : DEFAULT_PORT}`;
  return {
    baseUrl: `${tlsOptions !== undefined ? "https" : "http"}://${authority}`,
    authority,
    tls: tlsOptions,
  };
}

function hasPort(host: string): boolean {
  if (host.startsWith("[")) return /\]:\d+$/.test(host); // [::1]:50051
  const parts = host.split(":");
  return parts.length === 2 && /^\d+$/.test(parts[1]!);
}

/** TLS settings from AGENTPLANE_CA_CERT / _CLIENT_CERT / _CLIENT_KEY (file paths), if any. */
export function tlsFromEnv(env: NodeJS.ProcessEnv): TlsOptions | undefined {
  const ca = env[ENV_CA_CERT];
  const cert = env[ENV_CLIENT_CERT];
  const key = env[ENV_CLIENT_KEY];
  if (!ca && !cert && !key) return undefined;
  return {
    ca: ca ? readFileSync(ca) : undefined,
    cert: cert ? readFileSync(cert) : undefined,
    key: key ? readFileSync(key) : undefined,
  };
}
