// The TypeScript types of Keyfob's API, generated with openapi-typescript from the `/openapi.json`
// of a running server.
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** Where the generated types are committed. */
export const TYPES_FILE = join(root, "src", "openapi.ts");

/** The generated types for the server at `base`, as text. */
export async function generateTypes(base) {
  const response = await fetch(`${base}/openapi.json`);
  if (!response.ok) throw new Error(`GET ${base}/openapi.json answered ${response.status}`);
  const document = await response.text();
  const dir = await mkdtemp(join(tmpdir(), "keyfob-openapi-"));
  try {
    const input = join(dir, "openapi.json");
    const output = join(dir, "openapi.ts");
    await writeFile(input, document);
    const cli = join(root, "node_modules", "openapi-typescript", "bin", "cli.js");
    await promisify(execFile)(process.execPath, [cli, input, "--output", output]);
    return await readFile(output, "utf8");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
