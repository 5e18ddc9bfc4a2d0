/**
 * Wire compatibility at run time, not only by `buf breaking`: code generated from the released
 * contract (contract/baseline.binpb) must still work against the current server. The test
 * generates that stale TypeScript with buf and protoc-gen-es into a temporary directory,
 * compiles it with tsc together with test/fixtures/stale-client.ts (plain connect-es calls,
 * no SDK), and runs it against a real server.
 */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import {
  copyFileSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, test } from "node:test";

import { REPO_ROOT, SDK_DIR, TestServer } from "./server.js";

const run = promisify(execFile);
const bin = (name: string) => join(SDK_DIR, "node_modules", ".bin", name);

let server: TestServer;
let dir: string;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "agentplane-stale-sdk-"));
  server = await TestServer.start();
});
after(async () => {
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("a client generated from the baseline contract works against the current server", async () => {
  // 1. Generate the stale code, as protoc-gen-es generated it for the release.
  writeFileSync(
    join(dir, "buf.gen.yaml"),
    [
      "version: v2",
      "inputs:",
      `  - binary_image: ${join(REPO_ROOT, "contract", "baseline.binpb")}`,
      "    paths: [agentplane]",
      "plugins:",
      `  - local: ${bin("protoc-gen-es")}`,
      `    out: ${join(dir, "gen")}`,
      "    include_imports: true",
      "    opt: [target=ts, import_extension=js]",
      "",
    ].join("\n"),
  );
  await run(bin("buf"), ["generate", "--template", join(dir, "buf.gen.yaml")], { cwd: dir });
  assert.ok(readdirSync(join(dir, "gen", "agentplane")).includes("session"));

  // 2. Compile it with the client, against this package's connect-es and protobuf-es.
  copyFileSync(join(SDK_DIR, "test", "fixtures", "stale-client.ts"), join(dir, "stale-client.ts"));
  symlinkSync(join(SDK_DIR, "node_modules"), join(dir, "node_modules"), "dir");
  writeFileSync(join(dir, "package.json"), JSON.stringify({ type: "module", private: true }));
  writeFileSync(
    join(dir, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: {
        target: "ES2022",
        module: "NodeNext",
        moduleResolution: "NodeNext",
        strict: true,
        skipLibCheck: true,
        outDir: "out",
        types: ["node"],
      },
      include: ["stale-client.ts", "gen"],
    }),
  );
  await run(bin("tsc"), ["-p", join(dir, "tsconfig.json")], { cwd: dir }).catch(
    (error: { stdout?: string }) =>
      assert.fail(`the stale code does not compile:\n${error.stdout ?? ""}`),
  );

  // 3. Call the current server with it.
  const { stdout } = await run(process.execPath, [join(dir, "out", "stale-client.js")], {
    env: { ...process.env, AGENTPLANE_URL: server.url, AGENTPLANE_API_KEY: server.adminKey },
    timeout: 60_000,
  });
  const results = JSON.parse(stdout) as Record<string, unknown>;
  assert.equal(results["admin.getServerInfo"], "ok");
  assert.equal(results["sessions"], "ok");
  assert.deepEqual(results["sessions.notFound"], {
    code: "NotFound",
    details: ["google.rpc.ErrorInfo", "google.rpc.RequestInfo"],
  });
  // Services that have not landed answer Unimplemented; once served they must work.
  for (const name of ["registry", "governance", "feedback", "traces"]) {
    assert.ok(
      ["ok", "Unimplemented"].includes(String(results[name])),
      `${name}: ${JSON.stringify(results[name])}`,
    );
  }
  console.log(`stale client results: ${JSON.stringify(results)}`);
});
