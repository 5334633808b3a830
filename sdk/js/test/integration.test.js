// The SDK against a real `keyfob serve`: server use with an API key, a user session through
// Keyfob's own pages, refresh, the grace window, logout, and offline verification.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Keyfob, KeyfobError, MemoryStorage } from "../dist/index.js";
import { authorize } from "./support/pages.js";
import { provision, startKeyfob } from "./support/server.js";

const REDIRECT_URI = "http://localhost:3000/callback";
let keyfob;
let setup;

before(async () => {
  keyfob = await startKeyfob();
  setup = await provision(keyfob, { redirectUri: REDIRECT_URI, origin: "http://localhost:3000" });
});

after(async () => {
  await keyfob?.close();
});

/** A browser-like client for the test app, its session logged in through Keyfob's pages. */
async function loggedIn(options = {}) {
  const client = new Keyfob({
    baseUrl: keyfob.base,
    clientId: setup.clientId,
    redirectUri: REDIRECT_URI,
    transactionStorage: new MemoryStorage(),
    ...options,
  });
  const url = await client.loginUrl({ permissions: ["deals.read", "deals.write"], state: "/deals" });
  const back = await authorize(url, { email: setup.user, password: setup.password });
  const result = await client.handleRedirect(back);
  return { client, result, back };
}

describe("server use with an API key", () => {
  test("whoami describes the key", async () => {
    const server = new Keyfob({ baseUrl: keyfob.base, apiKey: setup.apiKey });
    const me = await server.whoami();
    assert.equal(me.kind, "api_key");
    assert.deepEqual(me.permissions, ["*"]);
    assert.ok(me.account_id);
  });

  test("mints a token that reads deals only, and verifies it offline", async () => {
    const server = new Keyfob({ baseUrl: keyfob.base, apiKey: setup.apiKey });
    const expires = new Date(Date.now() + 3_600_000);
    const minted = await server.mintToken({ permissions: ["deals.read"], expires });
    assert.match(minted.token, /^[\w-]+\.[\w-]+\.[\w-]+$/);
    assert.ok(Math.abs(Date.parse(minted.expires) - expires.getTime()) < 2_000);

    const reader = new Keyfob({ baseUrl: keyfob.base, token: minted.token });
    const me = await reader.whoami();
    assert.equal(me.kind, "jwt");
    assert.deepEqual(me.permissions, ["deals.read"]);
    await reader.collection("deals").find();
    await assert.rejects(reader.collection("deals").create({ title: "nope" }), (err) => {
      assert.ok(err instanceof KeyfobError);
      assert.equal(err.status, 403);
      assert.equal(err.code, "forbidden");
      assert.match(err.message, /deals\.write/);
      return true;
    });

    const verifier = new Keyfob({ baseUrl: keyfob.base });
    const claims = await verifier.verifyToken(minted.token, { permissions: ["deals.read"] });
    assert.deepEqual(claims.permissions, ["deals.read"]);
    assert.equal(claims.iss, keyfob.base);
    assert.equal(claims.account_id, me.account_id);
    await assert.rejects(verifier.verifyToken(minted.token, { permissions: ["deals.write"] }), { code: "forbidden" });
    const [head, body, signature] = minted.token.split(".");
    const forged = `${head}.${body}.${signature.slice(0, -4)}AAAA`;
    await assert.rejects(verifier.verifyToken(forged), { code: "invalid_token" });
  });

  test("bad input comes back as a typed error naming the problem", async () => {
    const server = new Keyfob({ baseUrl: keyfob.base, apiKey: setup.apiKey });
    await assert.rejects(server.mintToken({ permissions: ["deals.delete"] }), (err) => {
      assert.ok(err instanceof KeyfobError);
      assert.equal(err.status, 400);
      assert.equal(err.code, "invalid_permission");
      assert.match(err.message, /deals\.delete/);
      return true;
    });
    const stranger = new Keyfob({ baseUrl: keyfob.base, apiKey: `kf_${"0".repeat(64)}` });
    await assert.rejects(stranger.whoami(), { status: 401, code: "unauthorized" });
  });

  test("resource helpers: create, find with filters and sort, findOne, update, delete", async () => {
    const server = new Keyfob({ baseUrl: keyfob.base, apiKey: setup.apiKey });
    const cars = server.collection("cars");
    const a = await cars.create({ make: "Renault", price: 12000, dealer: { city: "Lyon" } });
    const b = await cars.create({ make: "Peugeot", price: 9000, dealer: { city: "Lyon" } });
    await cars.create({ make: "Renault", price: 15000, dealer: { city: "Paris" } });
    assert.ok(a.id && a.createdAt && a.updatedAt);

    const renaults = await cars.find({ where: { make: "Renault" }, sort: "price" });
    assert.equal(renaults.totalDocs, 2);
    assert.deepEqual(renaults.docs.map((d) => d.price), [12000, 15000]);
    const lyon = await cars.find({ where: { "dealer.city": { equals: "Lyon" } }, sort: "-price", limit: 1 });
    assert.equal(lyon.totalDocs, 2);
    assert.equal(lyon.totalPages, 2);
    assert.equal(lyon.hasNextPage, true);
    assert.equal(lyon.docs[0].make, "Renault");
    const second = await cars.find({ where: { "dealer.city": "Lyon" }, sort: "-price", limit: 1, page: 2 });
    assert.equal(second.docs[0].id, b.id);

    assert.equal((await cars.findOne(a.id)).make, "Renault");
    const patched = await cars.update(a.id, { price: 11000, dealer: null });
    assert.equal(patched.price, 11000);
    assert.equal(patched.dealer, undefined);
    await cars.delete(a.id);
    await assert.rejects(cars.findOne(a.id), { status: 404, code: "not_found" });
  });
});

describe("an application's own token (client_credentials)", () => {
  let app;
  before(async () => {
    app = await provision(keyfob, { redirectUri: REDIRECT_URI, confidential: true });
  });

  test("a confidential app gets a token for itself, within its permissions", async () => {
    const server = new Keyfob({ baseUrl: keyfob.base, clientId: app.clientId, clientSecret: app.clientSecret });
    const token = await server.clientCredentials();
    assert.equal(token.token_type, "Bearer");
    assert.equal(token.expires_in, 600);
    assert.equal(token.scope, "deals.read deals.write");
    assert.equal(token.refresh_token, undefined);
    const claims = await server.verifyToken(token.access_token, { permissions: ["deals.write"] });
    assert.equal(claims.sub, app.clientId);
    assert.equal(claims.client_id, app.clientId);
    assert.equal(claims.gty, "client_credentials");

    const narrow = await server.clientCredentials({ permissions: ["deals.read"] });
    assert.equal(narrow.scope, "deals.read");
    const reader = new Keyfob({ baseUrl: keyfob.base, token: narrow.access_token });
    const me = await reader.whoami();
    assert.equal(me.subject, app.clientId);
    assert.deepEqual(me.permissions, ["deals.read"]);
    assert.equal((await reader.collection("deals").find()).page, 1);
    await assert.rejects(reader.collection("deals").create({ title: "nope" }), { status: 403, code: "forbidden" });
    server.close();
  });

  test("OAuth errors come back typed: invalid_client, invalid_scope, unauthorized_client", async () => {
    const wrong = new Keyfob({ baseUrl: keyfob.base, clientId: app.clientId, clientSecret: "not the secret" });
    await assert.rejects(wrong.clientCredentials(), (err) => {
      assert.ok(err instanceof KeyfobError);
      assert.equal(err.status, 401);
      assert.equal(err.code, "invalid_client");
      assert.ok(err.message);
      return true;
    });
    const server = new Keyfob({ baseUrl: keyfob.base, clientId: app.clientId, clientSecret: app.clientSecret });
    await assert.rejects(server.clientCredentials({ permissions: ["cars.read"] }), (err) => {
      assert.equal(err.status, 400);
      assert.equal(err.code, "invalid_scope");
      assert.match(err.message, /cars\.read/);
      return true;
    });
    // A public application has no secret to authenticate with.
    const spa = new Keyfob({ baseUrl: keyfob.base, clientId: setup.clientId, clientSecret: "" });
    await assert.rejects(spa.clientCredentials(), (err) => {
      assert.ok(["unauthorized_client", "invalid_client"].includes(err.code), err.code);
      return true;
    });
    for (const c of [wrong, server, spa]) c.close();
  });
});

describe("user sessions", () => {
  test("login with PKCE, records of the user, refresh, logout", async () => {
    const { client, result, back } = await loggedIn();
    assert.match(back, /^http:\/\/localhost:3000\/callback\?code=/);
    assert.equal(result.state, "/deals");
    assert.equal(result.session.scope, "deals.read deals.write");
    assert.ok(result.session.refreshToken.startsWith("kfr_"));
    assert.ok(result.session.expiresAt > Date.now() + 590_000);
    assert.ok(client.isLoggedIn);

    const deals = client.collection("deals");
    const created = await deals.create({ title: "Fleet renewal", amount: 1200 });
    assert.equal(created.title, "Fleet renewal");
    assert.equal((await deals.find()).totalDocs, 1);
    const claims = await client.verifyToken(client.session.accessToken, { permissions: ["deals.write"] });
    assert.equal(claims.client_id, setup.clientId);
    assert.ok(claims.sid);

    const before = client.session;
    const events = [];
    client.on("session", (e) => events.push(e.reason));
    const refreshed = await client.refresh();
    assert.notEqual(refreshed.refreshToken, before.refreshToken);
    assert.notEqual(refreshed.accessToken, before.accessToken);
    assert.deepEqual(events, ["refresh"]);
    assert.equal((await deals.find()).totalDocs, 1);

    const ended = [];
    client.on("session-ended", (e) => ended.push(e.reason));
    await client.logout();
    assert.deepEqual(ended, ["logout"]);
    assert.equal(client.isLoggedIn, false);
    await assert.rejects(deals.find(), { code: "not_logged_in" });
    // The revoked session's tokens are refused by Keyfob.
    const stale = new Keyfob({ baseUrl: keyfob.base, token: refreshed.accessToken });
    let status = 200;
    for (let i = 0; i < 100 && status === 200; i += 1) {
      status = await stale.fetch("/api/deals").then((r) => r.status);
      if (status === 200) await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(status, 401);
    client.close();
  });

  test("the fragment form (response_type=token) works for an app that allows it", async () => {
    const fragment = await provision(keyfob, { redirectUri: REDIRECT_URI, allowFragment: true });
    const client = new Keyfob({
      baseUrl: keyfob.base,
      clientId: fragment.clientId,
      redirectUri: REDIRECT_URI,
      transactionStorage: new MemoryStorage(),
    });
    const url = await client.loginUrl({ permissions: ["deals.read"], responseType: "token" });
    const back = await authorize(url, { email: fragment.user, password: fragment.password });
    assert.match(back, /#token=/);
    const { session } = await client.handleRedirect(back);
    assert.ok(session.refreshToken.startsWith("kfr_"));
    assert.equal((await client.whoami()).client_id, fragment.clientId);
    client.close();
  });

  test("an app without fragment mode is answered unauthorized_client, with no token", async () => {
    const client = new Keyfob({
      baseUrl: keyfob.base,
      clientId: setup.clientId,
      redirectUri: REDIRECT_URI,
      transactionStorage: new MemoryStorage(),
    });
    const url = await client.loginUrl({ permissions: ["deals.read"], responseType: "token" });
    const back = await authorize(url, { email: setup.user, password: setup.password });
    assert.match(back, /#.*error=unauthorized_client/);
    assert.doesNotMatch(back, /token=/);
    await assert.rejects(client.handleRedirect(back), { status: 0, code: "unauthorized_client" });
    assert.equal(client.isLoggedIn, false);
    client.close();
  });

  test("handling the same redirect twice exchanges the code once", async () => {
    const client = new Keyfob({
      baseUrl: keyfob.base,
      clientId: setup.clientId,
      redirectUri: REDIRECT_URI,
      transactionStorage: new MemoryStorage(),
    });
    const url = await client.loginUrl({ permissions: ["deals.read"] });
    const back = await authorize(url, { email: setup.user, password: setup.password });
    const [one, two] = await Promise.all([client.handleRedirect(back), client.handleRedirect(back)]);
    assert.equal(one, two);
    assert.equal((await client.collection("deals").find()).page, 1);
    await client.refresh();
    client.close();
  });

  test("a user who declines comes back with access_denied", async () => {
    // A user of their own, who has granted nothing yet, so that the consent page is shown.
    const fresh = await provision(keyfob, { redirectUri: REDIRECT_URI });
    const client = new Keyfob({
      baseUrl: keyfob.base,
      clientId: fresh.clientId,
      redirectUri: REDIRECT_URI,
      transactionStorage: new MemoryStorage(),
    });
    const url = await client.loginUrl({ permissions: ["deals.read"] });
    const back = await authorize(url, { email: fresh.user, password: fresh.password, decision: "deny" });
    assert.match(back, /[?&]error=access_denied/);
    await assert.rejects(client.handleRedirect(back), { status: 0, code: "access_denied" });
    assert.equal(client.isLoggedIn, false);
    client.close();
  });

  test("a forged state is refused", async () => {
    const client = new Keyfob({
      baseUrl: keyfob.base,
      clientId: setup.clientId,
      redirectUri: REDIRECT_URI,
      transactionStorage: new MemoryStorage(),
    });
    await client.loginUrl({ permissions: ["deals.read"] });
    await assert.rejects(client.handleRedirect(`${REDIRECT_URI}?code=abc&state=forged`), { code: "invalid_state" });
    assert.equal(await client.handleRedirect(REDIRECT_URI), null);
    client.close();
  });

  test("an expired-looking token is refreshed before the call; a refused one after a 401", async () => {
    const storage = new MemoryStorage();
    const { client } = await loggedIn({ storage });
    const key = `keyfob:session:${setup.clientId}`;
    const reasons = [];
    client.on("session", (e) => reasons.push(e.reason));

    // Looks expired: refreshed before the request goes out.
    const first = JSON.parse(storage.getItem(key));
    storage.setItem(key, JSON.stringify({ ...first, expiresAt: Date.now() - 1000 }));
    assert.equal((await client.collection("deals").find()).page, 1);
    const second = client.session;
    assert.notEqual(second.refreshToken, first.refreshToken);

    // Refused by Keyfob (a garbled token): one refresh, one retry.
    storage.setItem(key, JSON.stringify({ ...second, accessToken: `${second.accessToken}x` }));
    const response = await client.fetch("/api/deals");
    assert.equal(response.status, 200);
    assert.notEqual(client.session.refreshToken, second.refreshToken);
    assert.deepEqual(reasons, ["refresh", "refresh"]);
    client.close();
  });

  test("two clients holding the same refresh token both stay logged in (grace window)", async () => {
    const { client: a } = await loggedIn({ storage: new MemoryStorage() });
    const b = new Keyfob({ baseUrl: keyfob.base, clientId: setup.clientId, storage: new MemoryStorage() });
    // b holds a copy of a's session (a duplicated tab with its own storage).
    const copy = JSON.stringify(a.session);
    const bStorage = new MemoryStorage();
    bStorage.setItem(`keyfob:session:${setup.clientId}`, copy);
    const b2 = new Keyfob({ baseUrl: keyfob.base, clientId: setup.clientId, storage: bStorage });
    const [ra, rb] = await Promise.all([a.refresh(), b2.refresh()]);
    assert.equal(ra.refreshToken, rb.refreshToken);
    assert.equal(ra.accessToken, rb.accessToken);
    assert.equal((await a.collection("deals").find()).page, 1);
    assert.equal((await b2.collection("deals").find()).page, 1);
    // And the pair keeps working.
    await a.refresh();
    for (const c of [a, b, b2]) c.close();
  });

  test("a refresh token replayed after the grace window ends the session with session-ended", async () => {
    // A server with a one-second grace window, to get past it quickly.
    const quick = await startKeyfob({ config: "refresh_grace_secs = 1\n" });
    try {
      const quickSetup = await provision(quick, { redirectUri: REDIRECT_URI });
      const client = new Keyfob({
        baseUrl: quick.base,
        clientId: quickSetup.clientId,
        redirectUri: REDIRECT_URI,
        transactionStorage: new MemoryStorage(),
      });
      const url = await client.loginUrl({ permissions: ["deals.read"] });
      await client.handleRedirect(await authorize(url, { email: quickSetup.user, password: quickSetup.password }));
      const spent = client.session;
      await client.refresh();
      await new Promise((r) => setTimeout(r, 1_300));

      // A copy still holding the spent token (a stale tab, a thief) presents it: that is reuse.
      const storage = new MemoryStorage();
      storage.setItem(`keyfob:session:${quickSetup.clientId}`, JSON.stringify(spent));
      const stale = new Keyfob({ baseUrl: quick.base, clientId: quickSetup.clientId, storage });
      const ended = [];
      stale.on("session-ended", (e) => ended.push(e));
      await assert.rejects(stale.refresh(), { status: 400, code: "invalid_grant" });
      assert.equal(ended.length, 1);
      assert.equal(ended[0].reason, "invalid_grant");
      assert.equal(ended[0].error.code, "invalid_grant");
      assert.equal(stale.isLoggedIn, false);

      // Keyfob ended the whole session: the honest client's next refresh is refused as well.
      const honestEnded = [];
      client.on("session-ended", (e) => honestEnded.push(e.reason));
      await assert.rejects(client.refresh(), { code: "invalid_grant" });
      assert.deepEqual(honestEnded, ["invalid_grant"]);
      client.close();
      stale.close();
    } finally {
      await quick.close();
    }
  });
});

describe("OpenID Connect", () => {
  /** A client for the test app, logged in with `scopes` beside deals.read. */
  async function loggedInWith(scopes, options = {}) {
    const client = new Keyfob({
      baseUrl: keyfob.base,
      clientId: setup.clientId,
      redirectUri: REDIRECT_URI,
      transactionStorage: new MemoryStorage(),
      ...options,
    });
    const url = new URL(await client.loginUrl({ permissions: ["deals.read"], scopes, state: "/me" }));
    const back = await authorize(url.href, { email: setup.user, password: setup.password });
    const result = await client.handleRedirect(back);
    return { client, result, url };
  }

  test("the checked ID token says who logged in; userinfo agrees; a refresh keeps the user", async () => {
    const started = Math.floor(Date.now() / 1000);
    const { client, result, url } = await loggedInWith(["openid", "email"]);
    assert.equal(url.searchParams.get("scope"), "openid email deals.read");
    assert.ok(url.searchParams.get("nonce"));
    assert.equal(result.state, "/me");
    const { session } = result;
    assert.match(session.scope, /\bopenid\b/);
    assert.match(session.idToken, /^[\w-]+\.[\w-]+\.[\w-]+$/);

    const user = client.user;
    assert.deepEqual(user, session.user);
    assert.equal(user.iss, keyfob.base);
    assert.equal(user.aud, setup.clientId);
    assert.equal(user.nonce, url.searchParams.get("nonce"));
    assert.equal(user.email, setup.user);
    assert.equal(typeof user.email_verified, "boolean");
    assert.ok(user.auth_time >= started - 5 && user.auth_time <= Math.ceil(Date.now() / 1000) + 5, String(user.auth_time));
    // The same user as the access token's, in the same session.
    const access = await client.verifyToken(session.accessToken);
    assert.equal(user.sub, access.sub);
    assert.equal(user.sid, access.sid);

    const info = await client.getUser();
    assert.equal(info.sub, user.sub);
    assert.equal(info.email, setup.user);
    assert.equal(info.email_verified, user.email_verified);

    const refreshed = await client.refresh();
    assert.notEqual(refreshed.idToken, session.idToken, "a refresh brings a new ID token");
    assert.equal(refreshed.user.sub, user.sub);
    assert.equal(refreshed.user.nonce, undefined);
    assert.equal(refreshed.user.auth_time, user.auth_time, "the time of the login, not of the refresh");
    assert.equal((await client.getUser()).sub, user.sub);

    await client.logout();
    assert.equal(client.user, null);
    await assert.rejects(client.getUser(), { code: "not_logged_in" });
    client.close();
  });

  test("without the email scope the ID token and userinfo carry no email", async () => {
    const { client } = await loggedInWith(["openid"]);
    assert.ok(client.user.sub);
    assert.equal(client.user.email, undefined);
    const info = await client.getUser();
    assert.equal(info.sub, client.user.sub);
    assert.equal(info.email, undefined);
    client.close();
  });

  test("a session without openid has no user, needs no nonce, and userinfo answers insufficient_scope", async () => {
    const { client, result } = await loggedIn();
    assert.equal(client.user, null);
    assert.deepEqual(Object.keys(result.session).sort(), ["accessToken", "expiresAt", "refreshToken", "scope"]);
    assert.equal(result.session.scope, "deals.read deals.write");
    await assert.rejects(client.getUser(), (err) => {
      assert.ok(err instanceof KeyfobError);
      assert.equal(err.status, 403);
      assert.equal(err.code, "insufficient_scope");
      assert.match(err.message, /openid/);
      return true;
    });
    const refreshed = await client.refresh();
    assert.equal(refreshed.idToken, undefined);
    assert.equal(client.user, null);
    client.close();
  });

  test("userinfo refuses a token it does not know with 401", async () => {
    const stranger = new Keyfob({ baseUrl: keyfob.base, token: "eyJhbGciOiJFZERTQSJ9.e30.AAAA" });
    await assert.rejects(stranger.getUser(), (err) => {
      assert.equal(err.status, 401);
      assert.ok(["invalid_token", "unauthorized"].includes(err.code), err.code);
      return true;
    });
  });
});
