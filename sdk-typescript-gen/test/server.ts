/**
 * A real Agentplane server for the tests: `agentplane serve` from the repository's .venv in a
 * child process, on free ports, with its own data directory (SQLite), exactly as an operator
 * starts it (the TypeScript twin of tests/serverproc.py).
 */

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import {
  createAgentplaneClient,
  type AgentplaneClient,
  type AgentplaneClientOptions,
} from "@agentplane/sdk";

/** sdk-typescript-gen/ (tests run from .test-build/test/). */
export const SDK_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const REPO_ROOT = resolve(SDK_DIR, "..");

export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolvePort(typeof address === "object" && address ? address.port : 0));
    });
  });
}

export class TestServer {
  readonly url: string;
  adminKey = "";
  private readonly clients: AgentplaneClient[] = [];

  private constructor(
    readonly process: ChildProcess,
    readonly port: number,
    readonly httpPort: number,
    readonly dataDir: string,
    readonly logPath: string,
  ) {
    this.url = `127.0.0.1:${port}`;
  }

  /** Base URL of the HTTP listener (Connect, gRPC-Web); TLS when the gRPC listener has it. */
  get httpUrl(): string {
    return `${this.tls ? "https" : "http"}://127.0.0.1:${this.httpPort}`;
  }

  /** TLS options of the clients (when the server was started with TLS flags). */
  tls: AgentplaneClientOptions["tls"] = undefined;

  static async start(
    extraArgs: string[] = [],
    tls?: AgentplaneClientOptions["tls"],
  ): Promise<TestServer> {
    const bin = process.env.AGENTPLANE_BIN ?? join(REPO_ROOT, ".venv", "bin", "agentplane");
    if (!existsSync(bin)) {
      throw new Error(
        `${bin} not found: run \`make setup\` in ${REPO_ROOT} (or set AGENTPLANE_BIN)`,
      );
    }
    const dataDir = mkdtempSync(join(tmpdir(), "agentplane-ts-test-"));
    const port = await freePort();
    const metricsPort = await freePort();
    const httpPort = await freePort();
    const logPath = join(dataDir, "server.log");
    const log = openSync(logPath, "w");
    const child = spawn(
      bin,
      [
        "serve",
        "--listen",
        `127.0.0.1:${port}`,
        "--data-dir",
        dataDir,
        "--metrics-listen",
        `127.0.0.1:${metricsPort}`,
        "--http-listen",
        `127.0.0.1:${httpPort}`,
        "--shutdown-grace",
        "2",
        ...extraArgs,
      ],
      { cwd: dataDir, stdio: ["ignore", log, log], env: { ...process.env, PYTHONUNBUFFERED: "1" } },
    );
    const server = new TestServer(child, port, httpPort, dataDir, logPath);
    server.tls = tls;
    try {
      await server.waitReady();
    } catch (error) {
      await server.stop();
      throw error;
    }
    return server;
  }

  private async waitReady(timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const keyPath = join(this.dataDir, "admin.key");
    while (Date.now() < deadline) {
      if (this.process.exitCode !== null) throw new Error(`server exited early:\n${this.logs()}`);
      if (existsSync(keyPath)) {
        this.adminKey = readFileSync(keyPath, "utf8").trim();
        const probe = createAgentplaneClient({
          url: this.url,
          apiKey: this.adminKey,
          retry: false,
          tls: this.tls,
        });
        try {
          await probe.serverInfo({ timeoutMs: 1000 });
          return;
        } catch {
          // not serving yet
        } finally {
          probe.close();
        }
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`server not ready in ${timeoutMs} ms:\n${this.logs()}`);
  }

  /** A client of this server (admin key unless another is given), closed by stop(). */
  client(options: AgentplaneClientOptions = {}): AgentplaneClient {
    const client = createAgentplaneClient({
      url: this.url,
      apiKey: this.adminKey,
      tls: this.tls,
      ...options,
    });
    this.clients.push(client);
    return client;
  }

  logs(): string {
    return existsSync(this.logPath) ? readFileSync(this.logPath, "utf8") : "";
  }

  async stop(): Promise<void> {
    for (const client of this.clients) client.close();
    if (this.process.exitCode === null) {
      const exited = new Promise((r) => this.process.once("exit", r));
      this.process.kill("SIGTERM");
      const timer = setTimeout(() => this.process.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(timer);
    }
    if (!process.env.AGENTPLANE_KEEP_TEST_DATA)
      rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/** True when `service` answers UNIMPLEMENTED on this server (not landed yet). */
export async function isUnimplemented(call: () => Promise<unknown>): Promise<boolean> {
  try {
    await call();
    return false;
  } catch (error) {
    return (error as { codeName?: string }).codeName === "UNIMPLEMENTED";
  }
}
