// The management clients against a real `keyfob serve`: keys and their usage, tokens, apps, users
// and grants, each needing its permission by name.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Keyfob, KeyfobError, MemoryStorage } from "../dist/index.js";
import { authorize } from "./support/pages.js";
import { provision, startKeyfob } from "./support/server.js";

const REDIRECT_URI = "http://localhost:3000/callback";
let keyfob;
let setup;
let server;

before(async () => {
  keyfob = await startKeyfob();
  setup = await provision(keyfob, { redirectUri: REDIRECT_URI, origin: "http://localhost:3000" });
  server = new Keyfob({ baseUrl: keyfob.base, apiKey: setup.apiKey });
});

after(async () => {
  await keyfob?.close();
});

/** A key of the test account restricted to `permissions`, made at the command line. */
async function restrictedKey(permissions) {
  const key = await keyfob.cli(["keys", "create", "--account", setup.owner, "--name", "restricted", "--permissions", permissions]);
  const client = new Keyfob({ baseUrl: keyfob.base, apiKey: key });
  for (let i = 0; i < 300; i++) {
    try {
      await client.whoami();
      return client;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error("the restricted key never became known");
}

describe("management", () => {
  test("keys: listed without the key, with their usage", async () => {
    const keys = await server.keys.list();
    const mine = keys.find((k) => setup.apiKey.startsWith(k.prefix));
    assert.ok(mine);
    assert.equal(mine.state, "active");
    assert.equal(mine.permissions, null);
    assert.ok(!JSON.stringify(keys).includes(setup.apiKey));
    const usage = await server.keys.usage(mine.id, { days: 7 });
    assert.equal(usage.days.length, 7);
    assert.equal(usage.days[6].day, new Date().toISOString().slice(0, 10));
    await assert.rejects(server.keys.usage(mine.id, { days: 0 }), { status: 400, code: "invalid_query" });
  });

  test("a wildcard key is refused, naming the permission", async () => {
    const wildcard = await restrictedKey("*.read,*.write");
    await assert.rejects(wildcard.keys.list(), (err) => {
      assert.ok(err instanceof KeyfobError);
      assert.equal(err.status, 403);
      assert.match(err.message, /keys\.read/);
      return true;
    });
    await assert.rejects(wildcard.apps.list(), { status: 403 });
    const named = await restrictedKey("apps.read");
    assert.equal((await named.apps.list()).length, 1);
  });

  test("tokens: listed with their name, revoked one by one and by key", async () => {
    const minted = await server.request("POST", "/auth", { permissions: ["deals.read"], name: "Nightly export" });
    const page = await server.tokens.list({ q: "Nightly", status: "live" });
    assert.equal(page.total, 1);
    const [token] = page.docs;
    assert.equal(token.name, "Nightly export");
    await server.tokens.revoke(token.jti);
    const reader = new Keyfob({ baseUrl: keyfob.base, token: minted.token });
    await assert.rejects(reader.whoami(), { status: 401 });
    await assert.rejects(server.tokens.revoke(token.jti), { status: 404, code: "not_found" });

    const other = await server.mintToken({ permissions: ["deals.read"] });
    const keyId = (await server.tokens.list({ limit: 1 })).docs[0].key_id;
    await server.tokens.revokeAllOfKey(keyId);
    await assert.rejects(new Keyfob({ baseUrl: keyfob.base, token: other.token }).whoami(), { status: 401 });
    await server.whoami();
  });

  test("apps: registered, with the secret shown once", async () => {
    const created = await server.apps.create({
      name: "Partner portal",
      redirect_uris: ["https://partner.example.com/cb"],
      max_permissions: ["deals.read"],
    });
    assert.match(created.client_id, /^app_/);
    assert.match(created.client_secret, /^kfs_/);
    assert.equal((await server.apps.get(created.client_id)).name, "Partner portal");
    await assert.rejects(
      server.apps.create({ name: "No redirect", max_permissions: ["deals.read"] }),
      { status: 400, code: "invalid_app" },
    );
    await server.apps.delete(created.client_id);
  });

  test("apps: shown, edited, rotated, disabled and enabled", async () => {
    const [app] = await server.apps.list();
    assert.equal(app.client_id, setup.clientId);
    const edited = await server.apps.update(app.client_id, { name: "Renamed portal", refresh_idle_secs: 3600 });
    assert.equal(edited.name, "Renamed portal");
    assert.deepEqual(edited.redirect_uris, [REDIRECT_URI]);
    await assert.rejects(server.apps.update(app.client_id, { redirect_uris: [] }), { status: 400, code: "invalid_app" });
    assert.equal((await server.apps.get(app.client_id)).name, "Renamed portal");
    // A public application has no secret to rotate.
    await assert.rejects(server.apps.rotateSecret(app.client_id, { overlap: "1h" }), { status: 400 });
    await server.apps.disable(app.client_id);
    assert.equal((await server.apps.get(app.client_id)).disabled, true);
    await server.apps.enable(app.client_id);
    await assert.rejects(server.apps.get("app_nothing"), { status: 404 });
  });

  test("users and grants: a user who logged in is listed, removed, and their grant revoked", async () => {
    const client = new Keyfob({
      baseUrl: keyfob.base,
      clientId: setup.clientId,
      redirectUri: REDIRECT_URI,
      transactionStorage: new MemoryStorage(),
    });
    const url = await client.loginUrl({ permissions: ["deals.read"] });
    await client.handleRedirect(await authorize(url, { email: setup.user, password: setup.password }));
    const [user] = await server.users.list();
    assert.equal(user.email, setup.user);
    assert.equal(user.grants.length, 1);
    assert.equal((await server.users.get(user.id)).id, user.id);
    const [grant] = await server.grants.list();
    assert.deepEqual(grant.permissions, ["deals.read"]);
    await server.grants.revoke(grant.id);
    assert.ok((await server.grants.list())[0].revoked);
    await assert.rejects(server.users.removeFromAccount(user.id), { status: 404 });
  });
});
