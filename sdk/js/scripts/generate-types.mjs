// `npm run generate`: starts the keyfob binary (KEYFOB_BIN, default ../../target/debug/keyfob)
// and rewrites src/openapi.ts from its /openapi.json.
import { writeFile } from "node:fs/promises";
import { startKeyfob } from "../test/support/server.js";
import { TYPES_FILE, generateTypes } from "./openapi-types.mjs";

const keyfob = await startKeyfob();
try {
  await writeFile(TYPES_FILE, await generateTypes(keyfob.base));
  console.log(`wrote ${TYPES_FILE}`);
} finally {
  await keyfob.close();
}
