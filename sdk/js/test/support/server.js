// Starts a real `keyfob serve` on a free port with a temporary data directory, and drives its
// command line to make an account, an API key, an application and a user.
import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

/** The keyfob binary: `KEYFOB_BIN`, else `../../target/debug/keyfob` from sdk/js. */
export const KEYFOB_BIN = process.env.KEYFOB_BIN
  ? resolve(process.env.KEYFOB_BIN)
  : resolve(here, "../../../../target/debug/keyfob");

export const PASSWORD = "amber lantern over the quiet harbour 42";

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

/** Runs `keyfob ARGS --data-dir DIR` with `input` on stdin; answers trimmed stdout. */
function run(dataDir, args, input = "") {
  return new Promise((resolveRun, reject) => {
    const child = spawn(KEYFOB_BIN, [...args, "--data-dir", dataDir], { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => (stdout += chunk));
    child.stderr.on("data", (chunk) => (stderr += chunk));
    child.on("error", reject);
    child.on("close", (code) => {
      if (code === 0) resolveRun(stdout.trim());
      else reject(new Error(`keyfob ${args.join(" ")} exited with ${code}: ${stderr.trim()}`));
    });
    // A command that reads nothing may exit before its input is written: the exit code tells.
    child.stdin.on("error", () => {});
    child.stdin.end(input);
  });
}

/**
 * A running Keyfob, with `config` (TOML) if given. `close()` stops it and removes its data.
 * @returns {Promise<{ base: string, dataDir: string, cli: (args: string[], input?: string) => Promise<string>, close: () => Promise<void>, log: () => string }>}
 */
export async function startKeyfob({ config } = {}) {
  if (!existsSync(KEYFOB_BIN)) {
    throw new Error(`no keyfob binary at ${KEYFOB_BIN}: run \`cargo build -p keyfob\` or set KEYFOB_BIN`);
  }
  const dataDir = await mkdtemp(join(tmpdir(), "keyfob-sdk-"));
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const args = ["serve", "--listen", `127.0.0.1:${port}`, "--data-dir", dataDir];
  if (config) {
    const file = join(dataDir, "keyfob.toml");
    await writeFile(file, config);
    args.push("--config", file);
  }
  const child = spawn(KEYFOB_BIN, args, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" },
  });
  let output = "";
  child.stdout.on("data", (chunk) => (output += chunk));
  child.stderr.on("data", (chunk) => (output += chunk));
  let exited = false;
  child.on("exit", () => (exited = true));
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited) throw new Error(`keyfob serve exited:\n${output}`);
    try {
      const response = await fetch(`${base}/readyz`);
      if (response.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill();
      throw new Error(`keyfob serve did not get ready in 30 s:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    base,
    dataDir,
    cli: (args, input) => run(dataDir, args, input),
    log: () => output,
    async close() {
      if (!exited) {
        const gone = new Promise((r) => child.once("exit", r));
        child.kill("SIGTERM");
        await gone;
      }
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

let counter = 0;

/**
 * An account with an API key, a public application allowed `origin` and `redirectUri` (and tokens
 * in the URL fragment with `allowFragment`; a confidential one with a `clientSecret` with
 * `confidential`), and an end user, all made with the command line.
 */
export async function provision(
  keyfob,
  { redirectUri, origin, maxPermissions = "deals.read,deals.write", allowFragment = false, confidential = false },
) {
  counter += 1;
  const tag = `${process.pid}-${counter}`;
  const owner = `owner-${tag}@example.com`;
  await keyfob.cli(["accounts", "create", "--email", owner], `${PASSWORD}\n`);
  const apiKey = await keyfob.cli(["keys", "create", "--account", owner, "--name", "sdk tests"]);
  const args = ["apps", "create", "--account", owner, "--name", "Dealer portal", "--redirect-uri", redirectUri];
  if (origin) args.push("--origin", origin);
  if (!confidential) args.push("--public");
  args.push("--max-permissions", maxPermissions);
  if (allowFragment) args.push("--allow-fragment");
  const { client_id: clientId, client_secret: clientSecret } = JSON.parse(await keyfob.cli(args));
  const user = `user-${tag}@example.com`;
  await keyfob.cli(["users", "create", "--email", user], `${PASSWORD}\n`);
  // A running server learns of keys and origins made on the command line within its sync interval.
  await eventually(`the API key is known to ${keyfob.base}`, async () => {
    const response = await fetch(`${keyfob.base}/auth/whoami`, { headers: { Authorization: `Bearer ${apiKey}` } });
    return response.ok;
  });
  if (origin) {
    await eventually(`${keyfob.base} allows the origin ${origin}`, async () => {
      const response = await fetch(`${keyfob.base}/auth/token`, {
        method: "OPTIONS",
        headers: { Origin: origin, "Access-Control-Request-Method": "POST" },
      });
      return response.headers.get("access-control-allow-origin") === origin;
    });
  }
  return { owner, apiKey, clientId, clientSecret, user, password: PASSWORD };
}

/** Polls `check` until it answers true, for up to 15 s. */
export async function eventually(what, check) {
  const deadline = Date.now() + 15_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
