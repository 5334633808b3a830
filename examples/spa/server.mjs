#!/usr/bin/env node
// The example app's web server: static files, the SDK's browser build, and the app's settings.
// Run it with `node server.mjs --keyfob http://127.0.0.1:8080 --client-id app_… [--port 3000]`
// (or KEYFOB_URL, KEYFOB_CLIENT_ID, PORT), then open http://localhost:3000.
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { dirname, extname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const here = dirname(fileURLToPath(import.meta.url));
const PUBLIC = join(here, "public");
const SDK_BUILD = resolve(here, "../../sdk/js/dist/browser/keyfob.js");

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".map": "application/json",
};

/**
 * Starts the example on `host:port` (port 0: any free one). Answers its URL and a `close()`.
 * @param {{ keyfob: string, clientId: string, port?: number, host?: string, permissions?: string[], scopes?: string[] }} options
 */
export async function startExample({ keyfob, clientId, port = 3000, host = "localhost", permissions, scopes }) {
  const settings = {
    keyfob: keyfob.replace(/\/+$/, ""),
    clientId,
    permissions: permissions ?? ["deals.read", "deals.write"],
    // OpenID Connect: an ID token telling who logged in, with their email.
    scopes: scopes ?? ["openid", "email"],
  };
  const server = createServer(async (request, response) => {
    const path = new URL(request.url ?? "/", "http://localhost").pathname;
    try {
      if (path === "/config.js") {
        return send(response, 200, ".js", `export default ${JSON.stringify(settings)};\n`);
      }
      if (path === "/sdk/keyfob.js" || path === "/sdk/keyfob.js.map") {
        const file = path.endsWith(".map") ? `${SDK_BUILD}.map` : SDK_BUILD;
        return send(response, 200, extname(file), await readFile(file));
      }
      // The app's pages: `/`, and `/callback` where Keyfob sends the user back.
      const name = path === "/" || path === "/callback" ? "index.html" : path.slice(1);
      if (!/^[\w.-]+$/.test(name)) return send(response, 404, ".html", "not found");
      return send(response, 200, extname(name), await readFile(join(PUBLIC, name)));
    } catch (err) {
      if (err && err.code === "ENOENT") {
        const hint = path.startsWith("/sdk/") ? "the SDK is not built: run `npm ci` in sdk/js" : "not found";
        return send(response, 404, ".html", hint);
      }
      return send(response, 500, ".html", String(err));
    }
  });
  await new Promise((resolveListen, reject) => {
    server.once("error", reject);
    server.listen(port, host === "localhost" ? "127.0.0.1" : host, resolveListen);
  });
  const url = `http://${host}:${server.address().port}`;
  return {
    url,
    close: () => new Promise((resolveClose) => server.close(() => resolveClose())),
  };
}

function send(response, status, extension, body) {
  response.writeHead(status, {
    "Content-Type": TYPES[extension] ?? "application/octet-stream",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; connect-src *; style-src 'self'",
  });
  response.end(body);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const { values } = parseArgs({
    options: {
      keyfob: { type: "string", default: process.env.KEYFOB_URL ?? "http://127.0.0.1:8080" },
      "client-id": { type: "string", default: process.env.KEYFOB_CLIENT_ID },
      port: { type: "string", default: process.env.PORT ?? "3000" },
    },
  });
  if (!values["client-id"]) {
    console.error("error: pass --client-id app_… (the client_id `keyfob apps create` printed)");
    process.exit(2);
  }
  const { url } = await startExample({
    keyfob: values.keyfob,
    clientId: values["client-id"],
    port: Number(values.port),
  });
  console.log(`Dealer portal: ${url} (Keyfob at ${values.keyfob})`);
}
