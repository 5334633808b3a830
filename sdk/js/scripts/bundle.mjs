// The browser build: one ES module with its dependencies, for a page to import directly.
import { build } from "esbuild";

await build({
  entryPoints: ["src/index.ts"],
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["es2022"],
  sourcemap: true,
  outfile: "dist/browser/keyfob.js",
  logLevel: "warning",
});
