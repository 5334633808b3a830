// The login request the SDK builds, and how it reads the answer, without a server.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { test } from "node:test";
import { Keyfob, MemoryStorage } from "../dist/index.js";
import { FakeClock, FakeKeyfob } from "./support/fakes.js";

function client(overrides = {}) {
  const clock = new FakeClock();
  const server = new FakeKeyfob(clock);
  const transactions = new MemoryStorage();
  const keyfob = new Keyfob({
    baseUrl: `${server.base}/`,
    clientId: "app_1",
    redirectUri: "https://app.test/callback",
    transactionStorage: transactions,
    fetch: server.fetch,
    clock,
    ...overrides,
  });
  return { keyfob, server, transactions, clock };
}

test("login asks for a code with PKCE S256 and a fresh state", async () => {
  const { keyfob, transactions } = client();
  const url = new URL(await keyfob.loginUrl({ permissions: ["deals.read", "deals.write"], state: "/deals/7" }));
  assert.equal(`${url.origin}${url.pathname}`, "https://keyfob.test/auth");
  const q = url.searchParams;
  assert.equal(q.get("client_id"), "app_1");
  assert.equal(q.get("redirect_uri"), "https://app.test/callback");
  assert.equal(q.get("response_type"), "code");
  assert.equal(q.get("permissions"), "deals.read,deals.write");
  assert.equal(q.get("code_challenge_method"), "S256");
  const saved = JSON.parse(transactions.getItem("keyfob:login:app_1"));
  assert.match(saved.verifier, /^[A-Za-z0-9_-]{43}$/);
  const challenge = createHash("sha256").update(saved.verifier).digest("base64url");
  assert.equal(q.get("code_challenge"), challenge);
  assert.equal(q.get("state"), saved.state);
  assert.notEqual(q.get("state"), "/deals/7", "the app's state stays in the browser");
  assert.ok(saved.state.length >= 20);
  const again = new URL(await keyfob.loginUrl({ permissions: ["deals.read"] }));
  assert.notEqual(again.searchParams.get("state"), q.get("state"));
  keyfob.close();
});

test("the code is exchanged with the verifier and the redirect URI, and the app's state returned", async () => {
  const { keyfob, server, transactions } = client();
  const url = new URL(await keyfob.loginUrl({ permissions: ["deals.read"], state: "/deals/7" }));
  const { verifier } = JSON.parse(transactions.getItem("keyfob:login:app_1"));
  const pair = server.login();
  const seen = [];
  const result = await new Keyfob({
    baseUrl: server.base,
    clientId: "app_1",
    transactionStorage: transactions,
    clock: server.clock,
    fetch: async (input, init) => {
      seen.push(Object.fromEntries(new URLSearchParams(init.body)));
      return new Response(JSON.stringify(pair), { headers: { "Content-Type": "application/json" } });
    },
  }).handleRedirect(`https://app.test/callback?code=c0de&state=${url.searchParams.get("state")}`);
  assert.deepEqual(seen, [
    {
      grant_type: "authorization_code",
      code: "c0de",
      redirect_uri: "https://app.test/callback",
      code_verifier: verifier,
      client_id: "app_1",
    },
  ]);
  assert.equal(result.state, "/deals/7");
  assert.equal(result.session.refreshToken, pair.refresh_token);
  assert.equal(transactions.getItem("keyfob:login:app_1"), null, "the transaction is used once");
  keyfob.close();
});

test("the fragment form is read, and a login answer is used once", async () => {
  const { keyfob, clock, server } = client();
  const url = new URL(await keyfob.loginUrl({ permissions: ["deals.read"], responseType: "token" }));
  assert.equal(url.searchParams.get("response_type"), "token");
  assert.equal(url.searchParams.get("code_challenge"), null);
  const state = url.searchParams.get("state");
  const expires = new Date(clock.now() + 600_000).toISOString();
  const back = `https://app.test/callback#token=jwt.a.b&refresh_token=kfr_1&expires=${encodeURIComponent(expires)}&scope=deals.read&state=${state}&iss=${encodeURIComponent(server.base)}`;
  const { session } = await keyfob.handleRedirect(back);
  assert.deepEqual(session, { accessToken: "jwt.a.b", refreshToken: "kfr_1", expiresAt: clock.now() + 600_000, scope: "deals.read" });
  assert.deepEqual(keyfob.session, session);
  await assert.rejects(keyfob.handleRedirect(`${back}&again=1`), { code: "invalid_state" });
  keyfob.close();
});

test("an error answer is thrown with its code; an unrelated address answers null", async () => {
  const { keyfob } = client();
  const url = new URL(await keyfob.loginUrl({ permissions: ["deals.read"] }));
  const state = url.searchParams.get("state");
  assert.equal(await keyfob.handleRedirect("https://app.test/callback?page=2"), null);
  await assert.rejects(
    keyfob.handleRedirect(`https://app.test/callback?error=access_denied&error_description=the+user+said+no&state=${state}`),
    { status: 0, code: "access_denied", message: "the user said no" },
  );
  assert.equal(keyfob.isLoggedIn, false);
  keyfob.close();
});

test("an answer naming another issuer is refused (RFC 9207)", async () => {
  const { keyfob } = client();
  const url = new URL(await keyfob.loginUrl({ permissions: ["deals.read"] }));
  const state = url.searchParams.get("state");
  await assert.rejects(
    keyfob.handleRedirect(`https://app.test/callback?code=c0de&state=${state}&iss=https%3A%2F%2Fevil.test`),
    { code: "invalid_issuer" },
  );
  assert.equal(keyfob.isLoggedIn, false);
  keyfob.close();
});

test("options are checked", () => {
  assert.throws(() => new Keyfob({}), TypeError);
  const plain = new Keyfob({ baseUrl: "https://keyfob.test" });
  assert.throws(() => plain.refresh(), /clientId/);
  assert.throws(() => plain.collection("no spaces"), TypeError);
  assert.throws(() => new Keyfob({ baseUrl: "https://keyfob.test", clientId: "a", storage: "localStorage" }), /localStorage/);
});
