import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

// The SDK's browser entry (no Node modules), from its sources, so the console always speaks the
// contract of this checkout. The SDK's package.json "browser" field drops its Node-only imports.
const sdkSource = fileURLToPath(new URL("../sdk-typescript-gen/src/web.ts", import.meta.url));

// The SDK's runtime libraries are resolved from the console's own node_modules (dedupe), so the
// bundle holds one copy of protobuf-es and connect-es.
export default defineConfig({
  base: "/",
  resolve: {
    alias: [{ find: /^@agentplane\/sdk$/, replacement: sdkSource }],
    dedupe: ["@bufbuild/protobuf", "@connectrpc/connect", "@connectrpc/connect-web"],
  },
  // `npm run dev`: the page from Vite (hot reload), the calls to a running server's HTTP
  // listener, so they stay on the page's origin as in production.
  server: {
    proxy: {
      "^/[A-Za-z_]\\w*(\\.\\w+)+/\\w+$": process.env.AGENTPLANE_HTTP_URL ?? "http://127.0.0.1:8080",
    },
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
