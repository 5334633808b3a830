// The refresh machinery on a fake clock: the scheduler, single flight, backoff, giving up only on
// invalid_grant, the retry after a 401, and several tabs sharing one session.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Keyfob, MemoryStorage } from "../dist/index.js";
import { FakeChannels, FakeClock, FakeKeyfob, FakeLocks, settle } from "./support/fakes.js";

const CLIENT_ID = "app_test";
const KEY = `keyfob:session:${CLIENT_ID}`;

/** A fake Keyfob with one logged-in session in `storage`. */
function world() {
  const clock = new FakeClock();
  const server = new FakeKeyfob(clock);
  const storage = new MemoryStorage();
  storage.setItem(KEY, JSON.stringify(server.loginSession()));
  return { clock, server, storage };
}

/** One tab of the app. */
function tab({ clock, server, storage }, options = {}) {
  const client = new Keyfob({
    baseUrl: server.base,
    clientId: CLIENT_ID,
    storage,
    fetch: server.fetch,
    clock,
    locks: null,
    channel: null,
    refreshJitterMs: 0,
    random: () => 1,
    ...options,
  });
  const events = [];
  client.on("session", (e) => events.push(`session:${e.reason}`));
  client.on("session-ended", (e) => events.push(`ended:${e.reason}`));
  client.on("refresh-error", (e) => events.push(`retry:${e.retryInMs}`));
  return { client, events };
}

describe("the refresh scheduler", () => {
  test("refreshes 60 s before expiry, then again 10 minutes later", async () => {
    const w = world();
    const { client, events } = tab(w);
    const first = client.session;
    await w.clock.advance(539_000);
    assert.equal(w.server.refreshes, 0);
    await w.clock.advance(1_000);
    assert.equal(w.server.refreshes, 1);
    assert.notEqual(client.session.refreshToken, first.refreshToken);
    assert.equal(client.session.expiresAt, w.clock.now() + 600_000);
    await w.clock.advance(540_000);
    assert.equal(w.server.refreshes, 2);
    assert.deepEqual(events, ["session:refresh", "session:refresh"]);
    client.close();
    assert.equal(w.clock.pending, 0, "close() stops the timer");
  });

  test("spreads the tabs' refreshes with jitter", async () => {
    const w = world();
    const { client } = tab(w, { refreshJitterMs: 10_000, random: () => 0.5 });
    await w.clock.advance(534_999);
    assert.equal(w.server.refreshes, 0);
    await w.clock.advance(1);
    assert.equal(w.server.refreshes, 1);
    client.close();
  });

  test("with autoRefresh off, refreshes only when a call needs a token", async () => {
    const w = world();
    const { client } = tab(w, { autoRefresh: false });
    await w.clock.advance(700_000);
    assert.equal(w.server.refreshes, 0);
    const token = await client.accessToken();
    assert.equal(w.server.refreshes, 1);
    assert.equal(token, client.session.accessToken);
    client.close();
  });

  test("a token inside the refresh-ahead window is used while the refresh runs", async () => {
    const w = world();
    const { client } = tab(w, { autoRefresh: false });
    const old = client.session.accessToken;
    w.server.latencyMs = 2_000;
    await w.clock.advance(550_000);
    assert.equal(await client.accessToken(), old, "no wait: the token is good for 50 s more");
    await w.clock.advance(2_000);
    assert.equal(w.server.refreshes, 1);
    assert.notEqual(await client.accessToken(), old);
    client.close();
  });
});

describe("single flight", () => {
  test("concurrent calls share one refresh", async () => {
    const w = world();
    const { client } = tab(w, { autoRefresh: false });
    w.server.latencyMs = 500;
    await w.clock.advance(600_000);
    const calls = Array.from({ length: 5 }, () => client.accessToken());
    calls.push(client.refresh().then((s) => s.accessToken));
    calls.push(client.collection("deals").find().then(() => client.session.accessToken));
    await w.clock.advance(500);
    const tokens = await Promise.all(calls);
    assert.equal(w.server.refreshes, 1);
    assert.equal(new Set(tokens).size, 1);
    assert.equal(w.server.requests.filter((r) => r.path === "/auth/token").length, 1);
    client.close();
  });
});

describe("failures", () => {
  test("network failures are retried with backoff, and the session is kept", async () => {
    const w = world();
    const { client, events } = tab(w, { autoRefresh: false });
    await w.clock.advance(600_000);
    w.server.offline = true;
    // The caller gets the network error at once; the refresh goes on in the background.
    await assert.rejects(client.accessToken(), { status: 0, code: "network_error" });
    await assert.rejects(client.collection("deals").find(), { code: "network_error" });
    await w.clock.advance(1_000 + 2_000 + 4_000 + 8_000 + 16_000 + 30_000 + 30_000);
    assert.deepEqual(events, [
      "retry:1000",
      "retry:2000",
      "retry:4000",
      "retry:8000",
      "retry:16000",
      "retry:30000",
      "retry:30000",
      "retry:30000",
    ]);
    assert.ok(client.isLoggedIn, "still logged in while offline");
    w.server.offline = false;
    await w.clock.advance(30_000);
    assert.equal(w.server.refreshes, 1);
    assert.equal(events.at(-1), "session:refresh");
    assert.equal(await client.accessToken(), client.session.accessToken);
    assert.equal(w.server.refreshes, 1);
    client.close();
  });

  test("Retry-After of a 503 or 429 is honoured", async () => {
    const w = world();
    const { client, events } = tab(w, { autoRefresh: false });
    w.server.failures.push(
      { status: 503, body: { error: "temporarily_unavailable", error_description: "storage is unavailable" }, headers: { "Retry-After": "7" } },
      { status: 429, body: { error: "rate_limited", message: "slow down" }, headers: { "Retry-After": "3" } },
    );
    const pending = client.refresh();
    await w.clock.advance(10_000);
    const session = await pending;
    assert.deepEqual(events, ["retry:7000", "retry:3000", "session:refresh"]);
    assert.equal(session.refreshToken, client.session.refreshToken);
    client.close();
  });

  test("invalid_grant ends the session with session-ended, without retrying", async () => {
    const w = world();
    const { client, events } = tab(w, { autoRefresh: false });
    w.server.failures.push({ status: 400, body: { error: "invalid_grant", error_description: "the session has ended" } });
    await assert.rejects(client.refresh(), (err) => {
      assert.equal(err.status, 400);
      assert.equal(err.code, "invalid_grant");
      assert.equal(err.message, "the session has ended");
      return true;
    });
    assert.deepEqual(events, ["ended:invalid_grant"]);
    assert.equal(w.storage.getItem(KEY), null);
    assert.equal(client.isLoggedIn, false);
    await assert.rejects(client.accessToken(), { code: "not_logged_in" });
    client.close();
  });

  test("another client error is reported but does not end the session", async () => {
    const w = world();
    const { client, events } = tab(w, { autoRefresh: false });
    w.server.failures.push({ status: 400, body: { error: "invalid_request", error_description: "`grant_type` is required" } });
    await assert.rejects(client.refresh(), { code: "invalid_request" });
    assert.deepEqual(events, []);
    assert.ok(client.isLoggedIn);
    client.close();
  });

  test("a 401 from the API refreshes once and retries once", async () => {
    const w = world();
    const { client } = tab(w, { autoRefresh: false });
    const refused = client.session.accessToken;
    w.server.revokeAccess(refused);
    const response = await client.fetch("/api/deals");
    assert.equal(response.status, 200);
    assert.equal(w.server.refreshes, 1);
    assert.notEqual(client.session.accessToken, refused);

    // Refused again after the refresh: the 401 comes back, no loop.
    w.server.revokeAccess(client.session.accessToken);
    w.server.revokeAccess(`at-4`);
    w.server.failures.push({ status: 200, body: { access_token: "at-bad", refresh_token: "kfr_bad", expires_in: 600, scope: "" } });
    const second = await client.fetch("/api/deals");
    assert.equal(second.status, 401);
    assert.equal(w.server.requests.filter((r) => r.path === "/auth/token").length, 2);
    client.close();
  });
});

describe("several tabs", () => {
  test("with a shared storage and Web Locks, only one tab refreshes; the others adopt its result", async () => {
    const w = world();
    const locks = new FakeLocks();
    const channels = new FakeChannels();
    const tabs = [1, 2, 3].map(() => tab(w, { locks, channel: channels.factory, autoRefresh: false }));
    w.server.latencyMs = 300;
    const results = tabs.map(({ client }) => client.refresh());
    await w.clock.advance(300);
    const sessions = await Promise.all(results);
    assert.equal(w.server.refreshes, 1);
    assert.equal(w.server.reuses, 0);
    assert.equal(new Set(sessions.map((s) => s.refreshToken)).size, 1);
    assert.deepEqual(tabs[0].events, ["session:refresh"]);
    assert.deepEqual(tabs[1].events, ["session:peer"]);
    assert.deepEqual(tabs[2].events, ["session:peer"]);
    assert.ok(w.server.isLive(sessions[0].refreshToken));
    for (const { client } of tabs) client.close();
  });

  test("timers of several tabs firing together refresh once", async () => {
    const w = world();
    const locks = new FakeLocks();
    const channels = new FakeChannels();
    const tabs = [1, 2].map(() => tab(w, { locks, channel: channels.factory }));
    w.server.latencyMs = 100;
    for (let round = 1; round <= 3; round += 1) {
      await w.clock.advance(540_000 + 100);
      assert.equal(w.server.refreshes, round);
    }
    assert.equal(w.server.reuses, 0);
    assert.equal(tabs[0].client.session.refreshToken, tabs[1].client.session.refreshToken);
    for (const { client } of tabs) client.close();
  });

  test("a tab whose timer fires after another tab refreshed does not refresh again", async () => {
    const w = world();
    const early = tab(w, { refreshJitterMs: 10_000, random: () => 1 });
    const late = tab(w, { refreshJitterMs: 10_000, random: () => 0 });
    await w.clock.advance(530_000);
    assert.equal(w.server.refreshes, 1);
    await w.clock.advance(10_000);
    assert.equal(w.server.refreshes, 1, "the late tab found the session fresh");
    assert.deepEqual(late.events, ["session:peer"]);
    await w.clock.advance(530_000);
    assert.equal(w.server.refreshes, 2);
    assert.equal(w.server.reuses, 0);
    early.client.close();
    late.client.close();
  });

  test("without Web Locks, a tab waits for the one that announced its refresh", async () => {
    const w = world();
    const channels = new FakeChannels();
    const a = tab(w, { channel: channels.factory, autoRefresh: false });
    const b = tab(w, { channel: channels.factory, autoRefresh: false });
    w.server.latencyMs = 2_000;
    const first = a.client.refresh();
    await w.clock.advance(100);
    assert.ok(channels.sent.some((m) => m.type === "refreshing"));
    const second = b.client.refresh();
    await w.clock.advance(2_000);
    const [sa, sb] = await Promise.all([first, second]);
    assert.equal(w.server.refreshes, 1);
    assert.equal(w.server.requests.filter((r) => r.path === "/auth/token").length, 1);
    assert.equal(sa.refreshToken, sb.refreshToken);
    assert.deepEqual(b.events, ["session:peer"]);
    a.client.close();
    b.client.close();
  });

  test("without Web Locks, tabs refreshing at the same instant both keep the session (grace window)", async () => {
    const w = world();
    const channels = new FakeChannels();
    const a = tab(w, { channel: channels.factory, autoRefresh: false });
    const b = tab(w, { channel: channels.factory, autoRefresh: false });
    const [sa, sb] = await Promise.all([a.client.refresh(), b.client.refresh()]);
    assert.equal(sa.refreshToken, sb.refreshToken);
    assert.equal(w.server.reuses, 0);
    assert.ok(w.server.isLive(sa.refreshToken));
    a.client.close();
    b.client.close();
  });

  test("tabs with storages of their own (a duplicated tab) pick up each other's rotation", async () => {
    const w = world();
    const channels = new FakeChannels();
    const locks = new FakeLocks();
    const copy = new MemoryStorage();
    copy.setItem(KEY, w.storage.getItem(KEY));
    const a = tab(w, { channel: channels.factory, locks, autoRefresh: false });
    const b = tab({ ...w, storage: copy }, { channel: channels.factory, locks, autoRefresh: false });
    await a.client.refresh();
    await settle();
    assert.deepEqual(b.events, ["session:peer"]);
    assert.equal(copy.getItem(KEY), w.storage.getItem(KEY));
    // Long after the grace window, b refreshes with the token it learnt, not the spent one.
    await w.clock.advance(120_000);
    await b.client.refresh();
    assert.equal(w.server.reuses, 0);
    a.client.close();
    b.client.close();
  });

  test("a tab that slept past the grace window reads the newest token before refreshing", async () => {
    const w = world();
    const a = tab(w, { autoRefresh: false });
    const b = tab(w, { autoRefresh: false });
    const stale = b.client.session;
    await a.client.refresh();
    await w.clock.advance(300_000);
    // b never heard of it (no channel), but its storage is shared with a.
    assert.notEqual(b.client.session.refreshToken, stale.refreshToken);
    await w.clock.advance(300_000);
    await b.client.accessToken();
    assert.equal(w.server.reuses, 0);
    assert.equal(w.server.refreshes, 2);
    a.client.close();
    b.client.close();
  });

  test("logging out in one tab ends the session in the others", async () => {
    const w = world();
    const channels = new FakeChannels();
    const own = new MemoryStorage();
    own.setItem(KEY, w.storage.getItem(KEY));
    const a = tab(w, { channel: channels.factory, autoRefresh: false });
    const b = tab({ ...w, storage: own }, { channel: channels.factory, autoRefresh: false });
    await a.client.logout();
    await settle();
    assert.deepEqual(a.events, ["ended:logout"]);
    assert.deepEqual(b.events, ["ended:elsewhere"]);
    assert.equal(b.client.isLoggedIn, false);
    a.client.close();
    b.client.close();
  });
});
