/**
 * What `npm pack` would publish: the compiled SDK (lib/) with its type declarations, and no
 * sources, tests, examples or build leftovers. Runs on the lib/ that `npm test` builds first.
 */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { test } from "node:test";

import { SDK_DIR } from "./server.js";

const run = promisify(execFile);

interface Packed {
  name: string;
  files: { path: string }[];
}

test("npm pack ships lib/ with types and nothing else", async () => {
  const npm = process.platform === "win32" ? "npm.cmd" : "npm";
  const { stdout } = await run(npm, ["pack", "--dry-run", "--json", "--ignore-scripts"], {
    cwd: SDK_DIR,
    maxBuffer: 16 * 1024 * 1024,
  });
  const [packed] = JSON.parse(stdout) as Packed[];
  const manifest = JSON.parse(readFileSync(join(SDK_DIR, "package.json"), "utf8")) as {
    name: string;
    main: string;
    types: string;
    exports: Record<string, { types: string; import: string }>;
  };
  assert.equal(packed!.name, "@agentplane/sdk");
  const paths = packed!.files.map((f) => f.path);
  const outside = paths.filter(
    (p) => !p.startsWith("lib/") && !["package.json", "README.md", "LICENSE"].includes(p),
  );
  assert.deepEqual(outside, [], "only lib/, package.json, README.md and LICENSE are shipped");
  for (const junk of ["src/", "test/", ".test-build/", "examples/", "node_modules/"]) {
    assert.ok(!paths.some((p) => p.includes(junk)), `nothing under ${junk}`);
  }
  assert.ok(!paths.some((p) => p.endsWith(".tsbuildinfo") || p.endsWith(".test.js")));

  // The entry points named by package.json are in the tarball, with declarations beside them.
  const entries = [manifest.main, manifest.types, manifest.exports["."]!.types, manifest.exports["."]!.import];
  for (const entry of entries) assert.ok(paths.includes(entry.replace(/^\.\//, "")), entry);
  const scripts = paths.filter((p) => p.endsWith(".js"));
  assert.ok(scripts.length > 10 && scripts.some((p) => p.startsWith("lib/gen/")));
  for (const script of scripts) {
    assert.ok(paths.includes(script.replace(/\.js$/, ".d.ts")), `${script} has types`);
  }
});
