// The SDK's types are generated from Keyfob's own OpenAPI document: a server change that alters
// the API fails here until `npm run generate` is run and the SDK is checked against the new types
// (`npm run typecheck`, part of `npm test`).
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { test } from "node:test";
import { TYPES_FILE, generateTypes } from "../scripts/openapi-types.mjs";
import { startKeyfob } from "./support/server.js";

test("src/openapi.ts matches the running server's /openapi.json", async () => {
  const keyfob = await startKeyfob();
  try {
    const fresh = await generateTypes(keyfob.base);
    const committed = await readFile(TYPES_FILE, "utf8");
    assert.ok(
      fresh === committed,
      "src/openapi.ts is out of date with the server's /openapi.json: run `npm run generate`, then `npm test`",
    );
  } finally {
    await keyfob.close();
  }
});
