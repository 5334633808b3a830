// The example app: a single-page app that logs its user in through Keyfob (with OpenID Connect:
// it knows who is signed in from the checked ID token), lists and adds the user's deals with the
// user's own token, and lets the SDK keep the session alive (refresh ahead of expiry, after a 401,
// across tabs).
import { Keyfob } from "/sdk/keyfob.js";
import config from "/config.js";

const keyfob = new Keyfob({
  baseUrl: config.keyfob,
  clientId: config.clientId,
  redirectUri: `${location.origin}/callback`,
  // Shared by every tab of the app: one login, one session, refreshed by one tab at a time.
  storage: "localStorage",
});
const deals = keyfob.collection("deals");

const $ = (id) => document.getElementById(id);
const events = [];

function log(text) {
  const entry = `${new Date().toLocaleTimeString()} ${text}`;
  events.push(text);
  const item = document.createElement("li");
  item.textContent = entry;
  $("events").prepend(item);
}

function showError(err) {
  $("error").hidden = !err;
  $("error").textContent = err ? `${err.code ?? "error"}: ${err.message}` : "";
}

function render() {
  const session = keyfob.session;
  $("signed-in").hidden = !session;
  $("signed-out").hidden = Boolean(session);
  if (!session) {
    $("status").textContent = "Not logged in.";
    return;
  }
  const left = Math.round((session.expiresAt - Date.now()) / 1000);
  $("status").textContent = `Logged in (${session.scope}). Access token expires in ${Math.max(0, left)} s.`;
  // Who: the claims of the ID token the SDK checked (signature, issuer, audience, nonce, expiry).
  const user = keyfob.user;
  $("user").textContent = user
    ? `Signed in as ${user.email ?? user.sub}${user.email ? ` (${user.email_verified ? "verified" : "not verified"})` : ""} · sub ${user.sub}`
    : "";
}

/** Asks Keyfob who the token belongs to, now (`GET /auth/userinfo`). */
async function whoAmI() {
  const info = await keyfob.getUser();
  $("userinfo").hidden = false;
  $("userinfo").textContent = JSON.stringify(info, null, 2);
  return info;
}

async function listDeals() {
  const page = await deals.find({ limit: 20 });
  $("count").textContent = `(${page.totalDocs})`;
  $("deals").replaceChildren(
    ...page.docs.map((deal) => {
      const item = document.createElement("li");
      item.textContent = `${deal.title} — ${deal.amount}`;
      return item;
    }),
  );
  return page;
}

async function addDeal(title, amount) {
  const deal = await deals.create({ title, amount });
  await listDeals();
  return deal;
}

/** For the demo: make the stored access token look expired, as it will be after 10 minutes. */
function expireAccessToken() {
  const key = `keyfob:session:${config.clientId}`;
  const stored = JSON.parse(localStorage.getItem(key));
  localStorage.setItem(key, JSON.stringify({ ...stored, expiresAt: Date.now() - 1000 }));
  log("access token made to look expired");
}

keyfob.on("session", ({ reason }) => {
  log({ login: "logged in", refresh: "this tab refreshed the session", peer: "another tab refreshed the session" }[reason] ?? reason);
  render();
});
keyfob.on("session-ended", ({ reason }) => {
  log(`session ended (${reason})`);
  render();
});
keyfob.on("refresh-error", ({ error, retryInMs }) => log(`refresh failed (${error.code}), retrying in ${retryInMs} ms`));

$("login").addEventListener("click", () =>
  keyfob.login({ permissions: config.permissions, scopes: config.scopes, state: "/" }).catch(showError),
);
$("logout").addEventListener("click", () => keyfob.logout().catch(showError));
$("reload").addEventListener("click", () => listDeals().then(() => showError(null), showError));
$("expire").addEventListener("click", () => expireAccessToken());
$("whoami").addEventListener("click", () => whoAmI().then(() => showError(null), showError));
$("new-deal").addEventListener("submit", (event) => {
  event.preventDefault();
  addDeal($("title").value, Number($("amount").value)).then(() => {
    $("title").value = "";
    showError(null);
  }, showError);
});

async function start() {
  try {
    const result = await keyfob.handleRedirect();
    if (result) history.replaceState(null, "", result.state ?? "/");
  } catch (err) {
    showError(err);
    history.replaceState(null, "", "/");
  }
  render();
  if (keyfob.isLoggedIn) await listDeals().catch(showError);
  document.body.dataset.ready = "true";
}

setInterval(render, 1000);
// For trying things in the console (and for the SDK's browser test).
window.demo = { keyfob, listDeals, addDeal, expireAccessToken, whoAmI, events };
start();
