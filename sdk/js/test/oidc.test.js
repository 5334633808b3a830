// OpenID Connect without a server: the nonce a login with `openid` sends, the ID token checks at
// login and at refresh, userinfo, and the client_credentials request.
import assert from "node:assert/strict";
import { test } from "node:test";
import { SignJWT, exportJWK, generateKeyPair } from "jose";
import { Keyfob, MemoryStorage } from "../dist/index.js";
import { FakeClock } from "./support/fakes.js";

const BASE = "https://keyfob.test";
const CLIENT_ID = "app_1";
const REDIRECT_URI = "https://app.test/callback";

async function signingKey(alg, kid = `k-${alg}`) {
  const options = alg === "EdDSA" ? { crv: "Ed25519" } : alg === "RS256" ? { modulusLength: 2048 } : {};
  const { publicKey, privateKey } = await generateKeyPair(alg, options);
  return { alg, kid, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: "sig" }, privateKey };
}

function json(status, body, headers = {}) {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json", ...headers } });
}

/**
 * A Keyfob that answers the token endpoint with an ID token (or not), publishes its keys, and
 * answers userinfo; `idToken` shapes the next ID token, `userinfo` the next userinfo answer.
 */
class FakeProvider {
  n = 0;
  requests = [];
  /** Claims to put in (or, when undefined, take out of) the next ID tokens. */
  claims = {};
  /** Header of the next ID tokens. */
  header = { typ: "JWT" };
  /** When false, the token endpoint answers no ID token. */
  withIdToken = true;
  jwksDown = false;
  userinfo = () => json(200, { sub: "usr_1", email: "ada@example.com", email_verified: true });

  constructor(clock, key) {
    this.clock = clock;
    this.key = key;
    this.signer = key;
  }

  async idToken(nonce) {
    const now = Math.floor(this.clock.now() / 1000);
    const claims = {
      iss: BASE,
      sub: "usr_1",
      aud: CLIENT_ID,
      azp: CLIENT_ID,
      iat: now,
      exp: now + 600,
      auth_time: now - 5,
      sid: "ses_1",
      email: "ada@example.com",
      email_verified: true,
      ...(nonce ? { nonce } : {}),
      ...this.claims,
    };
    for (const [name, value] of Object.entries(claims)) if (value === undefined) delete claims[name];
    return new SignJWT(claims)
      .setProtectedHeader({ alg: this.signer.alg, kid: this.signer.kid, ...this.header })
      .sign(this.signer.privateKey);
  }

  fetch = async (input, init = {}) => {
    const url = new URL(String(input));
    this.requests.push({ path: url.pathname, init });
    if (url.pathname === "/.well-known/jwks.json") {
      if (this.jwksDown) throw new TypeError("fetch failed");
      return json(200, { keys: [this.key.jwk] });
    }
    if (url.pathname === "/auth/userinfo") return this.userinfo(init);
    if (url.pathname === "/auth/token") {
      const form = new URLSearchParams(init.body);
      this.n += 1;
      const answer = {
        access_token: `at-${this.n}`,
        token_type: "Bearer",
        expires_in: 600,
        refresh_token: `kfr_${this.n}`,
        scope: "openid email deals.read",
        token: `at-${this.n}`,
        expires: new Date(this.clock.now() + 600_000).toISOString(),
      };
      if (this.withIdToken) {
        answer.id_token = await this.idToken(form.get("grant_type") === "authorization_code" ? this.nonce : undefined);
      }
      return json(200, answer);
    }
    return json(404, { error: "not_found", message: "no such endpoint" });
  };
}

async function setup({ alg = "EdDSA", storage = new MemoryStorage() } = {}) {
  const clock = new FakeClock();
  const provider = new FakeProvider(clock, await signingKey(alg));
  const transactions = new MemoryStorage();
  const keyfob = new Keyfob({
    baseUrl: BASE,
    clientId: CLIENT_ID,
    redirectUri: REDIRECT_URI,
    transactionStorage: transactions,
    storage,
    fetch: provider.fetch,
    clock,
    locks: null,
    channel: null,
    autoRefresh: false,
  });
  return { keyfob, provider, transactions, clock, storage };
}

/** Starts a login with `openid email` and answers the redirect back, the provider primed with its nonce. */
async function loginUrlAndBack(keyfob, provider) {
  const url = new URL(await keyfob.loginUrl({ permissions: ["deals.read"], scopes: ["openid", "email"] }));
  provider.nonce = url.searchParams.get("nonce");
  return { url, back: `${REDIRECT_URI}?code=c0de&state=${url.searchParams.get("state")}&iss=${encodeURIComponent(BASE)}` };
}

test("a login with openid asks for it in `scope` and sends a nonce, kept with the PKCE verifier", async () => {
  const { keyfob, transactions } = await setup();
  const url = new URL(await keyfob.loginUrl({ permissions: ["deals.read", "deals.write"], scopes: ["openid", "email"] }));
  const q = url.searchParams;
  assert.equal(q.get("scope"), "openid email deals.read deals.write");
  assert.equal(q.get("permissions"), null);
  const saved = JSON.parse(transactions.getItem(`keyfob:login:${CLIENT_ID}`));
  assert.ok(saved.verifier && saved.state);
  assert.ok(saved.nonce.length >= 20);
  assert.equal(q.get("nonce"), saved.nonce);
  const again = new URL(await keyfob.loginUrl({ permissions: [], scopes: ["openid"] }));
  assert.equal(again.searchParams.get("scope"), "openid");
  assert.notEqual(again.searchParams.get("nonce"), saved.nonce);
  keyfob.close();
});

test("a session without openid sends no nonce and exposes no user claims", async () => {
  const { keyfob, provider, transactions } = await setup();
  const url = new URL(await keyfob.loginUrl({ permissions: ["deals.read"] }));
  assert.equal(url.searchParams.get("nonce"), null);
  assert.equal(url.searchParams.get("scope"), null);
  assert.equal(url.searchParams.get("permissions"), "deals.read");
  assert.equal(JSON.parse(transactions.getItem(`keyfob:login:${CLIENT_ID}`)).nonce, undefined);
  // Even an ID token Keyfob would send unasked is not believed: there is no nonce to check it by.
  const { session } = await keyfob.handleRedirect(`${REDIRECT_URI}?code=c0de&state=${url.searchParams.get("state")}`);
  assert.deepEqual(Object.keys(session).sort(), ["accessToken", "expiresAt", "refreshToken", "scope"]);
  assert.equal(keyfob.user, null);
  const refreshed = await keyfob.refresh();
  assert.equal(refreshed.idToken, undefined);
  assert.equal(refreshed.user, undefined);
  assert.equal(keyfob.user, null);
  keyfob.close();
});

for (const alg of ["EdDSA", "ES256", "RS256"]) {
  test(`the ID token of a login is checked (${alg}) and its claims become session.user`, async () => {
    const { keyfob, provider, storage } = await setup({ alg });
    const { back } = await loginUrlAndBack(keyfob, provider);
    const { session } = await keyfob.handleRedirect(back);
    assert.equal(session.user.sub, "usr_1");
    assert.equal(session.user.email, "ada@example.com");
    assert.equal(session.user.email_verified, true);
    assert.equal(session.user.nonce, provider.nonce);
    assert.equal(typeof session.user.auth_time, "number");
    assert.match(session.idToken, /^[\w-]+\.[\w-]+\.[\w-]+$/);
    assert.deepEqual(keyfob.user, session.user);
    // Stored with the session, so that other tabs and reloads know the user too.
    const stored = JSON.parse(storage.getItem(`keyfob:session:${CLIENT_ID}`));
    assert.equal(stored.user.sub, "usr_1");
    keyfob.close();
  });
}

const refused = [
  ["another nonce", (p) => (p.claims = { nonce: "replayed" }), /nonce/],
  ["no nonce", (p) => (p.claims = { nonce: undefined }), /nonce/],
  ["another audience", (p) => (p.claims = { aud: "app_2", azp: "app_2" }), /aud/],
  ["another azp", (p) => (p.claims = { aud: [CLIENT_ID, "app_2"], azp: "app_2" }), /app_2/],
  ["another issuer", (p) => (p.claims = { iss: "https://evil.test" }), /iss/],
  ["an expired token", (p) => (p.claims = { exp: Math.floor(p.clock.now() / 1000) - 120 }), /exp/],
  ["an access token", (p) => (p.header = { typ: "at+jwt" }), /access token/],
  ["a key Keyfob did not publish", async (p) => (p.signer = await signingKey("EdDSA", p.key.kid)), /signature/],
  ["no ID token at all", (p) => (p.withIdToken = false), /no ID token/],
];
for (const [what, tamper, message] of refused) {
  test(`a login whose ID token has ${what} is refused`, async () => {
    const { keyfob, provider } = await setup();
    const { back } = await loginUrlAndBack(keyfob, provider);
    await tamper(provider);
    await assert.rejects(keyfob.handleRedirect(back), (err) => {
      assert.equal(err.code, "invalid_id_token");
      assert.match(err.message, message);
      return true;
    });
    assert.equal(keyfob.isLoggedIn, false);
    assert.equal(keyfob.user, null);
    keyfob.close();
  });
}

test("a refresh checks its new ID token (no nonce), keeps the claims without one, and ends the session for another user", async () => {
  const { keyfob, provider, clock } = await setup();
  const { back } = await loginUrlAndBack(keyfob, provider);
  const login = (await keyfob.handleRedirect(back)).session;

  await clock.advance(60_000);
  provider.claims = { email: "ada@new.example.com" };
  const refreshed = await keyfob.refresh();
  assert.notEqual(refreshed.idToken, login.idToken);
  assert.equal(refreshed.user.email, "ada@new.example.com");
  assert.equal(refreshed.user.nonce, undefined);
  assert.equal(refreshed.user.sub, login.user.sub);

  // No ID token this time: the last checked claims stay.
  provider.withIdToken = false;
  const plain = await keyfob.refresh();
  assert.notEqual(plain.accessToken, refreshed.accessToken);
  assert.equal(plain.idToken, refreshed.idToken);
  assert.deepEqual(plain.user, refreshed.user);

  // The JWKS cannot be fetched (a key it has not seen): the tokens are kept, the claims too.
  provider.withIdToken = true;
  provider.signer = await signingKey("EdDSA", "k-next");
  provider.jwksDown = true;
  await clock.advance(31_000);
  const offline = await keyfob.refresh();
  assert.notEqual(offline.accessToken, plain.accessToken);
  assert.equal(offline.idToken, plain.idToken);
  assert.deepEqual(offline.user, plain.user);

  // Another user in the ID token of a refresh: nothing of it is believed, the session ends.
  provider.signer = provider.key;
  provider.jwksDown = false;
  provider.claims = { sub: "usr_2" };
  const ended = [];
  keyfob.on("session-ended", (e) => ended.push(e));
  await assert.rejects(keyfob.refresh(), { code: "invalid_id_token", message: /another user/ });
  assert.equal(ended.length, 1);
  assert.equal(ended[0].reason, "invalid_id_token");
  assert.equal(keyfob.isLoggedIn, false);
  keyfob.close();
});

test("getUser asks userinfo with the access token; its errors are typed", async () => {
  const { keyfob, provider } = await setup();
  const { back } = await loginUrlAndBack(keyfob, provider);
  const { session } = await keyfob.handleRedirect(back);
  const info = await keyfob.getUser();
  assert.deepEqual(info, { sub: "usr_1", email: "ada@example.com", email_verified: true });
  const asked = provider.requests.find((r) => r.path === "/auth/userinfo");
  assert.equal(new Headers(asked.init.headers).get("authorization"), `Bearer ${session.accessToken}`);

  provider.userinfo = () => json(200, { sub: "usr_2" });
  await assert.rejects(keyfob.getUser(), { code: "invalid_response", message: /another user/ });

  provider.userinfo = () =>
    new Response(null, {
      status: 403,
      headers: { "WWW-Authenticate": 'Bearer error="insufficient_scope", error_description="the openid scope is needed"' },
    });
  await assert.rejects(keyfob.getUser(), { status: 403, code: "insufficient_scope", message: /openid/ });

  // A 401 refreshes once and retries once; refused again, it is the caller's error.
  let calls = 0;
  provider.userinfo = () => {
    calls += 1;
    return new Response(null, {
      status: 401,
      headers: { "WWW-Authenticate": 'Bearer realm="keyfob", error="invalid_token", error_description="the token has expired"' },
    });
  };
  await assert.rejects(keyfob.getUser(), { status: 401, code: "invalid_token", message: "the token has expired" });
  assert.equal(calls, 2);
  keyfob.close();
});

test("clientCredentials sends client_secret_basic and answers the token response; OAuth errors are typed", async () => {
  const seen = [];
  let answer = () => json(200, { access_token: "jwt.a.b", token_type: "Bearer", expires_in: 600, scope: "deals.read" });
  const keyfob = new Keyfob({
    baseUrl: BASE,
    clientId: "app_1",
    clientSecret: "s3cr:t é+/",
    storage: new MemoryStorage(),
    fetch: async (input, init) => {
      seen.push({ url: String(input), headers: new Headers(init.headers), body: new URLSearchParams(init.body) });
      return answer();
    },
  });
  const token = await keyfob.clientCredentials({ permissions: ["deals.read", "deals.write"] });
  assert.equal(token.access_token, "jwt.a.b");
  assert.equal(token.expires_in, 600);
  const [request] = seen;
  assert.equal(request.url, `${BASE}/auth/token`);
  const basic = Buffer.from(request.headers.get("authorization").replace(/^Basic /, ""), "base64").toString();
  assert.equal(basic, "app_1:s3cr%3At+%C3%A9%2B%2F");
  assert.deepEqual(Object.fromEntries(request.body), { grant_type: "client_credentials", scope: "deals.read deals.write" });

  await keyfob.clientCredentials();
  assert.deepEqual(Object.fromEntries(seen[1].body), { grant_type: "client_credentials" });

  answer = () => json(401, { error: "invalid_client", error_description: "client authentication failed" }, { "WWW-Authenticate": 'Basic realm="keyfob"' });
  await assert.rejects(keyfob.clientCredentials(), { status: 401, code: "invalid_client", message: "client authentication failed" });
  answer = () => json(400, { error: "invalid_scope", error_description: "beyond the application's maximum: deals.delete" });
  await assert.rejects(keyfob.clientCredentials({ permissions: ["deals.delete"] }), { status: 400, code: "invalid_scope" });
  await assert.rejects(new Keyfob({ baseUrl: BASE, clientId: "app_1" }).clientCredentials(), TypeError);
  keyfob.close();
});
