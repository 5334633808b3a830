// The example app (examples/spa) in real headless Chromium: a user logs in through Keyfob's own
// pages with OpenID Connect (the app shows who from the checked ID token, and asks userinfo), then
// two tabs of the app, on another origin than Keyfob, refresh the shared session at the same
// moment. Both stay logged in, only one refresh reaches Keyfob, and Keyfob sees no reuse.
// Last, a logout in one tab revokes the session and ends it in the other.
//
// Skipped with a note when Chromium is missing, unless KEYFOB_REQUIRE_BROWSER is set.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { after, before, test } from "node:test";
import { startExample } from "../../../examples/spa/server.mjs";
import { freePort, provision, startKeyfob } from "./support/server.js";

const CHROMIUM = process.env.KEYFOB_CHROMIUM ?? "/usr/bin/chromium";
const required = Boolean(process.env.KEYFOB_REQUIRE_BROWSER);
const missing = !existsSync(CHROMIUM);
if (missing) {
  const note = `no Chromium at ${CHROMIUM} (apt-get install chromium, or set KEYFOB_CHROMIUM)`;
  if (required) throw new Error(`KEYFOB_REQUIRE_BROWSER is set but there is ${note}`);
  console.log(`# skipping the browser test: ${note}`);
}

let keyfob;
let example;
let browser;
let setup;

before(async () => {
  if (missing) return;
  keyfob = await startKeyfob();
  // The app on `localhost`, Keyfob on `127.0.0.1`: two origins, so every call is cross-origin.
  const port = await freePort();
  const origin = `http://localhost:${port}`;
  setup = await provision(keyfob, { redirectUri: `${origin}/callback`, origin });
  example = await startExample({ keyfob: keyfob.base, clientId: setup.clientId, port });
  const puppeteer = (await import("puppeteer-core")).default;
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    protocolTimeout: 30_000,
    args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
});

after(async () => {
  await browser?.close();
  await example?.close();
  await keyfob?.close();
});

async function introspect(token) {
  const response = await fetch(`${keyfob.base}/auth/introspect`, {
    method: "POST",
    headers: { Authorization: `Bearer ${setup.apiKey}`, "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ token }),
  });
  assert.equal(response.status, 200);
  return response.json();
}

/** The stored session as a tab sees it. */
function sessionOf(page) {
  return page.evaluate(() => window.demo.keyfob.session);
}

function eventsOf(page) {
  return page.evaluate(() => [...window.demo.events]);
}

async function openApp(page) {
  await page.goto(`${example.url}/`);
  await page.waitForSelector("body[data-ready=true]", { timeout: 20_000 });
}

test("two tabs on another origin refresh one session at the same moment and both stay logged in", { skip: missing }, async () => {
  const first = await browser.newPage();
  first.on("pageerror", (err) => console.log(`# page error: ${err.message}`));
  await openApp(first);
  assert.equal(await first.$eval("#status", (el) => el.textContent), "Not logged in.");
  assert.equal(await first.evaluate(() => Boolean(navigator.locks)), true, "Web Locks in a secure context");

  // Log in through Keyfob's own pages: login form, then consent.
  await Promise.all([first.waitForNavigation(), first.click("#login")]);
  await first.waitForSelector("form[action='/auth/login']", { timeout: 20_000 });
  assert.equal(new URL(first.url()).origin, keyfob.base);
  await first.type("#email", setup.user);
  await first.type("#password", setup.password);
  await Promise.all([first.waitForNavigation(), first.click("form[action='/auth/login'] button[type=submit]")]);
  await first.waitForSelector("form[action='/auth/consent']", { timeout: 20_000 });
  await Promise.all([first.waitForNavigation(), first.click("button[name=decision][value=allow]")]);
  await first.waitForSelector("body[data-ready=true]", { timeout: 20_000 });
  assert.equal(first.url(), `${example.url}/`, "the code left the address bar");
  const status = await first.$eval("#status", (el) => el.textContent);
  assert.match(status, /^Logged in \((.* )?deals\.read deals\.write\)/);
  assert.match(status, /\bopenid\b/);

  // Who: the claims of the ID token the SDK checked, and Keyfob's userinfo, across origins.
  const user = await first.evaluate(() => window.demo.keyfob.user);
  assert.equal(user.email, setup.user);
  assert.ok(user.sub);
  assert.match(await first.$eval("#user", (el) => el.textContent), new RegExp(`Signed in as ${setup.user.replace(/[.]/g, "\\.")}`));
  await first.click("#whoami");
  await first.waitForFunction(() => !document.getElementById("userinfo").hidden, { polling: 50, timeout: 10_000 });
  const info = JSON.parse(await first.$eval("#userinfo", (el) => el.textContent));
  assert.equal(info.sub, user.sub);
  assert.equal(info.email, setup.user);

  // A protected resource, with the user's token, across origins.
  const created = await first.evaluate(() => window.demo.addDeal("Fleet renewal", 1200));
  assert.equal(created.title, "Fleet renewal");

  // A second tab of the app: already logged in (the session is in localStorage).
  const second = await browser.newPage();
  second.on("pageerror", (err) => console.log(`# page error: ${err.message}`));
  await openApp(second);
  assert.match(await second.$eval("#status", (el) => el.textContent), /^Logged in/);
  const login = await sessionOf(first);
  assert.deepEqual(await sessionOf(second), login);

  // Round 1: the access token looks expired, and both tabs call the API at the same moment.
  await first.evaluate(() => window.demo.expireAccessToken());
  const [listedFirst, listedSecond] = await Promise.all([
    first.evaluate(() => window.demo.listDeals().then((page) => page.totalDocs)),
    second.evaluate(() => window.demo.listDeals().then((page) => page.totalDocs)),
  ]);
  assert.equal(listedFirst, 1);
  assert.equal(listedSecond, 1);
  const afterExpiry = await sessionOf(first);
  assert.notEqual(afterExpiry.refreshToken, login.refreshToken);
  assert.deepEqual(await sessionOf(second), afterExpiry);

  // Round 2: both tabs are told to refresh at the same moment. The first tab holds the SDK's
  // refresh lock meanwhile, so that both refreshes are certainly waiting at once; then lets go.
  const lockName = `keyfob-refresh|${keyfob.base}|${setup.clientId}`;
  await first.evaluate((name) => {
    navigator.locks.request(name, () => new Promise((release) => (window.releaseRefreshLock = release)));
  }, lockName);
  const forced = [first, second].map((page) =>
    page.evaluate(() => window.demo.keyfob.refresh().then((session) => session.refreshToken)),
  );
  await first.waitForFunction(
    (name) => navigator.locks.query().then((state) => state.pending.filter((lock) => lock.name === name).length === 2),
    { polling: 50, timeout: 10_000 },
    lockName,
  );
  await first.evaluate(() => window.releaseRefreshLock());
  const [tokenFirst, tokenSecond] = await Promise.all(forced);
  assert.equal(tokenFirst, tokenSecond, "both tabs hold the same new session");
  assert.notEqual(tokenFirst, afterExpiry.refreshToken);

  // Both tabs still reach the resource; neither saw its session end.
  for (const page of [first, second]) {
    assert.equal(await page.evaluate(() => window.demo.listDeals().then((p) => p.totalDocs)), 1);
  }
  const events = [...(await eventsOf(first)), ...(await eventsOf(second))];
  assert.ok(!events.some((e) => e.startsWith("session ended")), events.join("\n"));
  // One refresh per round reached Keyfob: the other tab took its result.
  const refreshes = events.filter((e) => e === "this tab refreshed the session").length;
  const adopted = events.filter((e) => e === "another tab refreshed the session").length;
  assert.equal(refreshes, 2, events.join("\n"));
  assert.ok(adopted >= 2, events.join("\n"));

  // Keyfob saw no reuse: the newest refresh token is alive, the spent ones are not.
  const final = await sessionOf(second);
  assert.equal((await introspect(final.refreshToken)).active, true);
  assert.equal((await introspect(login.refreshToken)).active, false);
  const claims = await introspect(final.accessToken);
  assert.equal(claims.active, true);
  assert.equal(claims.client_id, setup.clientId);

  // Logging out in one tab revokes the session at Keyfob (across origins) and ends it in both.
  await first.bringToFront();
  await first.click("#logout");
  await second.waitForFunction(() => window.demo.events.includes("session ended (elsewhere)"), {
    polling: 50,
    timeout: 10_000,
  });
  assert.ok((await eventsOf(first)).includes("session ended (logout)"));
  assert.equal(await second.$eval("#status", (el) => el.textContent), "Not logged in.");
  assert.equal((await introspect(final.refreshToken)).active, false);
});
