import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const sdkSource = fileURLToPath(new URL("../sdk-typescript-gen/src/index.ts", import.meta.url));
const nodeShims = fileURLToPath(new URL("./src/sdk-node-shims.ts", import.meta.url));

// The console bundles the TypeScript SDK from its sources, so it always speaks the contract of
// this checkout. The SDK's runtime libraries are resolved from the console's own node_modules
// (dedupe) so the bundle holds one copy of protobuf-es and connect-es.
export default defineConfig({
  base: "/",
  resolve: {
    alias: [
      { find: /^@agentplane\/sdk$/, replacement: sdkSource },
      // The SDK's Node-only modules, which the console never calls (it brings its own
      // connect-web transport): see src/sdk-node-shims.ts.
      { find: /^(node:crypto|node:fs|node:async_hooks|@connectrpc\/connect-node)$/, replacement: nodeShims },
    ],
    dedupe: ["@bufbuild/protobuf", "@connectrpc/connect"],
  },
  oxc: {
    jsx: { runtime: "automatic", importSource: "preact" },
  },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    chunkSizeWarningLimit: 1500,
  },
});
