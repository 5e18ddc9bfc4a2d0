/**
 * createAgentplaneClient: one typed client per service, over one of three transports:
 * - "grpc" (default): native gRPC on one HTTP/2 connection to the gRPC listener (connect-node);
 * - "connect" or "grpc-web": the Connect protocol (JSON, or binary Protobuf) or gRPC-Web over
 *   HTTP/1.1 to the server's HTTP listener (default port 8080), with connect-node in Node and
 *   with fetch (connect-web) in browsers (`runtime: "web"`; import "@agentplane/sdk/web").
 *
 * Layers, as in the Python SDK: the generated protobuf-es descriptors (src/gen) -> connect-es
 * clients made from them (`client.<service>.raw`) -> the call layer here, which adds a deadline
 * to every call, retries what is safe to repeat, turns failures into typed RpcErrors with the
 * parsed google.rpc details, and hides page tokens behind async iterators.
 */

import {
  Code,
  createClient,
  type CallOptions,
  type Client,
  type Interceptor,
  type Transport,
} from "@connectrpc/connect";
import {
  createConnectTransport as createNodeConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport as createNodeGrpcWebTransport,
  Http2SessionManager,
} from "@connectrpc/connect-node";
import {
  createConnectTransport as createWebConnectTransport,
  createGrpcWebTransport as createWebGrpcWebTransport,
} from "@connectrpc/connect-web";
import {
  clone,
  create,
  isMessage,
  type DescField,
  type DescMessage,
  type DescMethod,
  type DescMethodServerStreaming,
  type DescMethodUnary,
  type DescService,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";

import {
  DEFAULT_TIMEOUT_MS,
  ENV_API_KEY,
  ENV_PROJECT,
  ENV_TIMEOUT,
  ENV_URL,
  parseTarget,
  tlsFromEnv,
  type ResolvedTarget,
  type TlsOptions,
} from "./config.js";
import { CancelledError, fromConnectError, type RpcError } from "./errors.js";
import { CONTRACT_DIGEST, CONTRACT_VERSION } from "./gen/contract.js";
import type { GetServerInfoResponse } from "./gen/agentplane/admin/v1/admin_service_pb.js";
import { SERVICES } from "./gen/services.js";

export const SDK_VERSION = "0.1.0";

// Each service, under the name its client has on AgentplaneClient: derived from the contract.
export { SERVICES };

export type ServiceName = keyof typeof SERVICES;

// --- retries ---------------------------------------------------------------------------------

/**
 * How a retryable call is repeated. A call is retried only when repeating it cannot do twice
 * what was meant once: its RPC is NO_SIDE_EFFECTS or IDEMPOTENT in the contract, or its request
 * carries a request_id (filled with a fresh one per logical call when empty, unless
 * `autoRequestId` is false). Only UNAVAILABLE, and RESOURCE_EXHAUSTED with a RetryInfo, are
 * retried. The call's timeoutMs is one deadline for all its attempts together.
 */
export interface RetryPolicy {
  /** Attempts in all, the first included (1 = no retry). */
  maxAttempts: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
  multiplier: number;
  /** Randomises each backoff by this fraction. */
  jitter: number;
  autoRequestId: boolean;
  /** Called before each wait, for logs and metrics. */
  onRetry?: (error: RpcError, attempt: number, delayMs: number) => void;
}

export const DEFAULT_RETRY: RetryPolicy = {
  maxAttempts: 5,
  initialBackoffMs: 100,
  maxBackoffMs: 5000,
  multiplier: 2,
  jitter: 0.2,
  autoRequestId: true,
};

// CreateApiKey returns the secret only in the first response: a retry answered from the
// server's idempotency record would hand back a key without its secret, so never fill its
// request_id (the Python SDK makes the same exception).
const NO_AUTO_REQUEST_ID = new Set(["agentplane.admin.v1.AdminService.CreateApiKey"]);

function shouldRetry(error: RpcError, attempt: number, policy: RetryPolicy): boolean {
  if (attempt >= policy.maxAttempts) return false;
  if (error.code === Code.Unavailable) return true;
  return error.code === Code.ResourceExhausted && error.retryDelayMs !== undefined;
}

function backoffMs(error: RpcError, attempt: number, policy: RetryPolicy): number {
  if (error.retryDelayMs !== undefined) return Math.max(0, error.retryDelayMs);
  let delay = Math.min(
    policy.maxBackoffMs,
    policy.initialBackoffMs * policy.multiplier ** (attempt - 1),
  );
  if (policy.jitter) delay *= 1 + (Math.random() * 2 - 1) * policy.jitter;
  return Math.max(0, delay);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

// --- options -----------------------------------------------------------------------------------

export interface AgentplaneClientOptions {
  /**
   * "host:port", "grpc://host:port" (plaintext) or "grpcs://host:port" / "https://..." (TLS).
   * Default: AGENTPLANE_URL.
   */
  url?: string;
  /** Sent as `authorization: Bearer <apiKey>`. Default: AGENTPLANE_API_KEY. */
  apiKey?: string;
  /**
   * true for TLS with the system roots, an object for custom roots or mutual TLS, false for
   * plaintext. Default: by the URL's scheme, or AGENTPLANE_CA_CERT / _CLIENT_CERT / _CLIENT_KEY.
   */
  tls?: boolean | TlsOptions;
  /** Sends `x-agentplane-project` (an admin key acting on another project). */
  project?: string;
  /**
   * Default deadline of every unary call and each page of a list, in milliseconds (default
   * 10 000, or AGENTPLANE_TIMEOUT seconds). Watch streams have none unless a call sets one.
   */
  timeoutMs?: number;
  /** Default retry policy (partial values are merged over DEFAULT_RETRY), or false. */
  retry?: Partial<RetryPolicy> | false;
  /** Extra metadata sent with every call. */
  headers?: Record<string, string>;
  /** connect-es interceptors, run on every call (outermost first). */
  interceptors?: Interceptor[];
  /** Environment to read AGENTPLANE_* from (default process.env; none in browsers). */
  env?: NodeJS.ProcessEnv;
  /**
   * "grpc" (default): native gRPC to the gRPC listener (url "host:50051"). "connect" or
   * "grpc-web": the server's HTTP listener (url "http://host:8080"), over HTTP/1.1.
   */
  protocol?: "grpc" | "connect" | "grpc-web";
  /** Connect only: binary Protobuf bodies instead of JSON (default false: JSON). */
  binaryFormat?: boolean;
  /**
   * "node" (Node's http modules, connect-node) or "web" (fetch, connect-web: browsers, and
   * Node too). Default: "node" in Node, "web" elsewhere. "web" needs protocol connect or grpc-web.
   */
  runtime?: "node" | "web";
  /**
   * A connect-es transport to use instead of the gRPC transport made from url and tls, e.g.
   * createRouterTransport() in tests. It is used as it is: apiKey, project, headers and
   * interceptors are then the transport's business.
   */
  transport?: Transport;
}

/** Options of one call: connect-es CallOptions plus the retry policy. */
export interface AgentplaneCallOptions extends CallOptions {
  /** This call's retry policy (merged over the client's), or false for a single attempt. */
  retry?: Partial<RetryPolicy> | false;
}

interface ResolvedOptions {
  target: ResolvedTarget | undefined;
  transport: Transport | undefined;
  protocol: "grpc" | "connect" | "grpc-web";
  binaryFormat: boolean;
  runtime: "node" | "web";
  apiKey: string | undefined;
  project: string | undefined;
  timeoutMs: number;
  retry: RetryPolicy | false;
  headers: Record<string, string>;
  interceptors: Interceptor[];
}

function resolveOptions(options: AgentplaneClientOptions): ResolvedOptions {
  const inNode = typeof process !== "undefined" && process.versions?.node !== undefined;
  const env = options.env ?? (inNode ? process.env : {});
  const protocol = options.protocol ?? "grpc";
  const runtime = options.runtime ?? (inNode ? "node" : "web");
  if (runtime === "web" && protocol === "grpc" && options.transport === undefined) {
    throw new Error(
      'native gRPC needs HTTP/2 trailers, which fetch cannot read: use protocol "connect" or "grpc-web" with the HTTP listener',
    );
  }
  const url = options.url ?? env[ENV_URL];
  if (!url && options.transport === undefined) {
    throw new Error(
      `createAgentplaneClient needs a url (or ${ENV_URL}), e.g. "127.0.0.1:50051" or "grpcs://agentplane.example.com"`,
    );
  }
  const tls = options.tls ?? tlsFromEnv(env);
  const envTimeout = env[ENV_TIMEOUT] ? Number(env[ENV_TIMEOUT]) * 1000 : undefined;
  return {
    target: url ? parseTarget(url, tls) : undefined,
    transport: options.transport,
    protocol,
    binaryFormat: options.binaryFormat ?? false,
    runtime,
    apiKey: options.apiKey ?? (env[ENV_API_KEY] || undefined),
    project: options.project ?? (env[ENV_PROJECT] || undefined),
    timeoutMs: options.timeoutMs ?? envTimeout ?? DEFAULT_TIMEOUT_MS,
    retry: options.retry === false ? false : { ...DEFAULT_RETRY, ...options.retry },
    headers: { ...options.headers },
    interceptors: options.interceptors ?? [],
  };
}

// --- the call layer ----------------------------------------------------------------------------

/** Every item of every page, page tokens hidden; no request is sent before the first read. */
export class PageIterator<Item, Page> implements AsyncIterable<Item> {
  constructor(
    private readonly fetchPages: () => AsyncGenerator<Page>,
    private readonly itemsOf: (page: Page) => Item[],
  ) {}

  /** The pages themselves (each a List response), in order. */
  pages(): AsyncIterable<Page> {
    return { [Symbol.asyncIterator]: () => this.fetchPages() };
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Item> {
    for await (const page of this.fetchPages()) yield* this.itemsOf(page);
  }

  /** Every item in one array (at most `limit` items when given). */
  async toArray(limit = Infinity): Promise<Item[]> {
    const items: Item[] = [];
    if (limit <= 0) return items;
    for await (const item of this) {
      items.push(item);
      if (items.length >= limit) break;
    }
    return items;
  }
}

type PublicKeys<T> = Exclude<keyof T, `$${string}`>;
/** The element type of a List response's repeated field (each List response has exactly one). */
export type PageItem<Page> = {
  [K in PublicKeys<Page>]: Page[K] extends readonly (infer E)[] ? E : never;
}[PublicKeys<Page>];

type UnaryFn<I extends DescMessage, O extends DescMessage> = (
  request?: MessageInitShape<I>,
  options?: AgentplaneCallOptions,
) => Promise<MessageShape<O>>;
type ListFn<I extends DescMessage, O extends DescMessage> = (
  request?: MessageInitShape<I>,
  options?: AgentplaneCallOptions,
) => PageIterator<PageItem<MessageShape<O>>, MessageShape<O>>;
type StreamFn<I extends DescMessage, O extends DescMessage> = (
  request?: MessageInitShape<I>,
  options?: AgentplaneCallOptions,
) => AsyncIterable<MessageShape<O>>;

type IsPaged<I extends DescMessage, O extends DescMessage> =
  MessageShape<I> extends { pageToken: string }
    ? MessageShape<O> extends { nextPageToken: string }
      ? true
      : false
    : false;

type Methods<S extends DescService> = S["method"];

/**
 * A service's client. Unary methods return a Promise of the response. List methods
 * (`listSessions`, ...) return a PageIterator over the items of every page, and `<name>Page`
 * returns one page. Server streams (`watchSession`, ...) are async iterables. Every method takes
 * the request (a message or its fields) and AgentplaneCallOptions (timeoutMs, signal, headers,
 * retry); failures are thrown as RpcError subclasses. `raw` is the plain connect-es client.
 */
export type ServiceClient<S extends DescService> = {
  [K in keyof Methods<S>]: Methods<S>[K] extends DescMethodUnary<infer I, infer O>
    ? IsPaged<I, O> extends true
      ? ListFn<I, O>
      : UnaryFn<I, O>
    : Methods<S>[K] extends DescMethodServerStreaming<infer I, infer O>
      ? StreamFn<I, O>
      : never;
} & {
  [K in keyof Methods<S> as Methods<S>[K] extends DescMethodUnary<infer I, infer O>
    ? IsPaged<I, O> extends true
      ? `${K & string}Page`
      : never
    : never]: Methods<S>[K] extends DescMethodUnary<infer I, infer O> ? UnaryFn<I, O> : never;
} & {
  /** The plain connect-es client of the service (no deadline, retry or typed errors). */
  readonly raw: Client<S>;
  /** The service descriptor. */
  readonly service: S;
};

function field(message: DescMessage, localName: string): DescField | undefined {
  return message.fields.find((f) => f.localName === localName);
}

class CallLayer {
  constructor(readonly options: ResolvedOptions) {}

  policyFor(override: Partial<RetryPolicy> | false | undefined): RetryPolicy | false {
    if (override === false || (this.options.retry === false && override === undefined))
      return false;
    const base = this.options.retry === false ? DEFAULT_RETRY : this.options.retry;
    const policy = { ...base, ...override };
    return policy.maxAttempts > 1 ? policy : false;
  }

  /** The request to send (request_id filled in when that makes retries safe) and the policy. */
  prepare<I extends DescMessage>(
    method: DescMethod & { input: I },
    init: MessageInitShape<I> | undefined,
    override: Partial<RetryPolicy> | false | undefined,
  ): [MessageShape<I>, RetryPolicy | false] {
    const owned = !isMessage(init, method.input);
    let request = (owned ? create(method.input, init) : init) as MessageShape<I>;
    const policy = this.policyFor(override);
    if (policy === false) return [request, false];
    const idempotent = method.idempotency !== MethodOptions_IdempotencyLevel.IDEMPOTENCY_UNKNOWN;
    const requestIdField = field(method.input, "requestId");
    if (requestIdField === undefined) return [request, idempotent ? policy : false];
    const holder = request as unknown as { requestId: string };
    if (holder.requestId) return [request, policy];
    if (
      !policy.autoRequestId ||
      NO_AUTO_REQUEST_ID.has(`${method.parent.typeName}.${method.name}`)
    ) {
      return [request, idempotent ? policy : false];
    }
    // Never change the caller's message: it may be reused for another call.
    if (!owned) request = clone(method.input, request) as MessageShape<I>;
    (request as unknown as { requestId: string }).requestId = globalThis.crypto.randomUUID().replaceAll("-", "");
    return [request, policy];
  }

  async unary<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    call: (request: MessageShape<I>, options: CallOptions) => Promise<MessageShape<O>>,
    init: MessageInitShape<I> | undefined,
    options: AgentplaneCallOptions = {},
  ): Promise<MessageShape<O>> {
    const { retry, ...callOptions } = options;
    const [request, policy] = this.prepare(method, init, retry);
    const timeoutMs = callOptions.timeoutMs ?? this.options.timeoutMs;
    const name = `${method.parent.typeName}/${method.name}`;
    const deadline = timeoutMs > 0 ? Date.now() + timeoutMs : Infinity;
    for (let attempt = 1; ; attempt++) {
      const remaining = deadline === Infinity ? 0 : Math.max(1, deadline - Date.now());
      try {
        return await call(request, { ...callOptions, timeoutMs: remaining });
      } catch (reason) {
        const error = fromConnectError(reason, name);
        if (
          policy === false ||
          error instanceof CancelledError ||
          !shouldRetry(error, attempt, policy)
        ) {
          throw error;
        }
        const delay = backoffMs(error, attempt, policy);
        if (Date.now() + delay >= deadline) throw error;
        policy.onRetry?.(error, attempt, delay);
        await sleep(delay, callOptions.signal);
      }
    }
  }

  stream<I extends DescMessage, O extends DescMessage>(
    method: DescMethodServerStreaming<I, O>,
    call: (request: MessageShape<I>, options: CallOptions) => AsyncIterable<MessageShape<O>>,
    init: MessageInitShape<I> | undefined,
    options: AgentplaneCallOptions = {},
  ): AsyncIterable<MessageShape<O>> {
    const { retry: _retry, ...callOptions } = options;
    const request = (
      isMessage(init, method.input) ? init : create(method.input, init)
    ) as MessageShape<I>;
    // Watch streams are long-lived: no deadline unless the caller sets one. Generate streams
    // get 5 minutes, as in the Python SDK.
    const timeoutMs = callOptions.timeoutMs ?? (method.name.startsWith("Watch") ? 0 : 300_000);
    const name = `${method.parent.typeName}/${method.name}`;
    return {
      async *[Symbol.asyncIterator]() {
        try {
          yield* call(request, { ...callOptions, timeoutMs });
        } catch (reason) {
          throw fromConnectError(reason, name);
        }
      },
    };
  }
}

function makeServiceClient<S extends DescService>(
  service: S,
  transport: Transport,
  layer: CallLayer,
): ServiceClient<S> {
  const raw = createClient(service, transport);
  const target: Record<string, unknown> = { raw, service };
  const rawMethods = raw as unknown as Record<string, (...args: unknown[]) => never>;
  for (const method of service.methods) {
    const rawCall = rawMethods[method.localName]!.bind(raw);
    if (method.methodKind === "unary") {
      const unary = (init?: unknown, options?: AgentplaneCallOptions) =>
        layer.unary(method as DescMethodUnary, rawCall as never, init as never, options);
      const pageToken = field(method.input, "pageToken");
      const nextToken = field(method.output, "nextPageToken");
      const items = method.output.fields.find((f) => f.fieldKind === "list");
      if (pageToken && nextToken && items) {
        target[`${method.localName}Page`] = unary;
        target[method.localName] = (init?: unknown, options?: AgentplaneCallOptions) => {
          async function* pages() {
            const request = create(
              method.input,
              isMessage(init, method.input) ? clone(method.input, init) : (init as never),
            ) as unknown as { pageToken: string };
            for (;;) {
              const page = (await unary(request, options)) as unknown as { nextPageToken: string };
              yield page;
              if (!page.nextPageToken) return;
              request.pageToken = page.nextPageToken;
            }
          }
          return new PageIterator(
            pages,
            (page) => (page as unknown as Record<string, unknown[]>)[items.localName]!,
          );
        };
      } else {
        target[method.localName] = unary;
      }
    } else if (method.methodKind === "server_streaming") {
      target[method.localName] = (init?: unknown, options?: AgentplaneCallOptions) =>
        layer.stream(method as DescMethodServerStreaming, rawCall as never, init as never, options);
    }
  }
  return target as ServiceClient<S>;
}

// --- the client --------------------------------------------------------------------------------

export type AgentplaneClient = {
  readonly [K in ServiceName]: ServiceClient<(typeof SERVICES)[K]>;
} & {
  /** The connect-es transport every service client uses. */
  readonly transport: Transport;
  /** "host:port" of the server. */
  readonly target: string;
  /** GetServerInfo: the server's version, contract, services and the caller's identity. */
  serverInfo(options?: AgentplaneCallOptions): Promise<GetServerInfoResponse>;
  /** True when the server speaks the contract this SDK was generated from. */
  checkContract(options?: AgentplaneCallOptions): Promise<boolean>;
  /** A client on the same connection with other settings (apiKey, project, timeoutMs, ...). */
  withOptions(
    changes: Pick<
      AgentplaneClientOptions,
      "apiKey" | "project" | "timeoutMs" | "retry" | "headers"
    >,
  ): AgentplaneClient;
  /** Closes the connection (of this client and every withOptions() sibling). */
  close(): void;
};

function authInterceptor(options: ResolvedOptions): Interceptor {
  const headers: [string, string][] = [];
  if (options.apiKey) headers.push(["authorization", `Bearer ${options.apiKey}`]);
  if (options.project) headers.push(["x-agentplane-project", options.project]);
  for (const [key, value] of Object.entries(options.headers))
    headers.push([key.toLowerCase(), value]);
  return (next) => async (request) => {
    for (const [key, value] of headers) {
      if (!request.header.has(key)) request.header.set(key, value);
    }
    return next(request);
  };
}

function buildClient(
  options: ResolvedOptions,
  sessions: Http2SessionManager | undefined,
): AgentplaneClient {
  const interceptors = [authInterceptor(options), ...options.interceptors];
  const transport = options.transport ?? makeTransport(options, sessions, interceptors);
  const layer = new CallLayer(options);
  const client: Record<string, unknown> = {
    transport,
    target: options.target?.authority ?? "",
  };
  for (const [name, service] of Object.entries(SERVICES)) {
    client[name] = makeServiceClient(service, transport, layer);
  }
  const typed = client as AgentplaneClient;
  client.serverInfo = (callOptions?: AgentplaneCallOptions) =>
    typed.admin.getServerInfo({}, callOptions);
  client.checkContract = async (callOptions?: AgentplaneCallOptions) => {
    const info = await typed.serverInfo(callOptions);
    return info.contractDigest === CONTRACT_DIGEST;
  };
  client.withOptions = (
    changes: Pick<
      AgentplaneClientOptions,
      "apiKey" | "project" | "timeoutMs" | "retry" | "headers"
    >,
  ) =>
    buildClient(
      {
        ...options,
        apiKey: changes.apiKey ?? options.apiKey,
        project: changes.project ?? options.project,
        timeoutMs: changes.timeoutMs ?? options.timeoutMs,
        retry:
          changes.retry === false
            ? false
            : changes.retry
              ? { ...DEFAULT_RETRY, ...changes.retry }
              : options.retry,
        headers: { ...options.headers, ...changes.headers },
      },
      sessions,
    );
  client.close = () => sessions?.abort();
  return typed;
}

function makeTransport(
  options: ResolvedOptions,
  sessions: Http2SessionManager | undefined,
  interceptors: Interceptor[],
): Transport {
  const baseUrl = options.target!.baseUrl;
  const useBinaryFormat = options.binaryFormat;
  if (options.runtime === "web") {
    return options.protocol === "connect"
      ? createWebConnectTransport({ baseUrl, interceptors, useBinaryFormat })
      : createWebGrpcWebTransport({ baseUrl, interceptors });
  }
  if (options.protocol === "grpc") {
    return createGrpcTransport({ baseUrl, sessionManager: sessions, interceptors });
  }
  // The HTTP listener speaks HTTP/1.1.
  const nodeOptions = { ...nodeTlsOptions(options.target!.tls) };
  const common = { baseUrl, interceptors, httpVersion: "1.1" as const, nodeOptions };
  return options.protocol === "connect"
    ? createNodeConnectTransport({ ...common, useBinaryFormat })
    : createNodeGrpcWebTransport({ ...common, useBinaryFormat: true });
}

function nodeTlsOptions(tls: TlsOptions | undefined) {
  if (tls === undefined) return {};
  return {
    ca: tls.ca,
    cert: tls.cert,
    key: tls.key,
    servername: tls.serverName,
  };
}

/**
 * Connect to Agentplane. Nothing is sent until the first call.
 *
 *     const client = createAgentplaneClient({ url: "127.0.0.1:50051", apiKey });
 *     const { session } = await client.sessions.createSession({ title: "hello" });
 *     for await (const message of client.sessions.listMessages({ sessionId: session!.sessionId })) ...
 */
export function createAgentplaneClient(options: AgentplaneClientOptions = {}): AgentplaneClient {
  const resolved = resolveOptions(options);
  const sessions =
    resolved.transport === undefined && resolved.protocol === "grpc"
      ? new Http2SessionManager(resolved.target!.baseUrl, {}, nodeTlsOptions(resolved.target!.tls))
      : undefined;
  return buildClient(resolved, sessions);
}

export { CONTRACT_DIGEST, CONTRACT_VERSION };
