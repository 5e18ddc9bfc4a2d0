/**
 * Browser stand-ins for the Node modules the TypeScript SDK imports at its top level. The console
 * hands createAgentplaneClient its own connect-web transport, so the gRPC transport and the
 * file reads are never reached; randomUUID (request ids) and AsyncLocalStorage (the governed()
 * call context) get the browser's equivalents.
 */

export function randomUUID(): string {
  return crypto.randomUUID();
}

export function readFileSync(): never {
  throw new Error("reading files is not available in the browser");
}

/** One synchronous context at a time is all the browser needs (the console never nests calls). */
export class AsyncLocalStorage<T> {
  private store: T | undefined;
  getStore(): T | undefined {
    return this.store;
  }
  run<R>(store: T, callback: () => R): R {
    const previous = this.store;
    this.store = store;
    try {
      return callback();
    } finally {
      this.store = previous;
    }
  }
}

export function createGrpcTransport(): never {
  throw new Error("the gRPC transport is not available in the browser; use connect-web");
}

export class Http2SessionManager {
  constructor() {
    throw new Error("HTTP/2 sessions are not available in the browser");
  }
}
