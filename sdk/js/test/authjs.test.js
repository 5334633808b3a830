// Keyfob as the OpenID Connect provider of an Auth.js app: `Auth(request, config)` from
// @auth/core, the function the Next.js, SvelteKit and Express integrations wrap, with the provider
// configuration docs/INTEGRATING.md shows, against a real `keyfob serve`. The app's origin is
// http://localhost:3000 but nothing listens there: the test hands Auth() the requests a browser
// would send it, keeping the cookies itself, and goes through Keyfob's login and consent pages in
// between. Auth.js discovers Keyfob, sends PKCE, state and a nonce, exchanges the code and checks
// the ID token; the session then names the Keyfob user.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Auth } from "@auth/core";
import { getToken } from "@auth/core/jwt";
import { decodeJwt } from "jose";
import { authorize } from "./support/pages.js";
import { provision, startKeyfob } from "./support/server.js";

const APP = "http://localhost:3000";
const CALLBACK = `${APP}/auth/callback/keyfob`;

/** The Auth.js configuration of docs/INTEGRATING.md, for a Keyfob at `issuer`. */
function authConfig({ issuer, clientId, clientSecret }) {
  return {
    providers: [
      {
        id: "keyfob",
        name: "Keyfob",
        type: "oidc",
        issuer,
        clientId,
        clientSecret,
        authorization: { params: { scope: "openid email deals.read" } },
        checks: ["pkce", "state", "nonce"],
      },
    ],
    callbacks: {
      // At sign-in `profile` is the ID token's claims and `account` the token response.
      jwt({ token, profile, account }) {
        if (profile) {
          token.sub = profile.sub; // the Keyfob user id
          token.accessToken = account.access_token; // for Keyfob's API, as this user
        }
        return token;
      },
      session({ session, token }) {
        session.user.id = token.sub;
        return session;
      },
    },
    secret: "a test secret of at least thirty-two characters",
    trustHost: true,
    basePath: "/auth",
  };
}

/** A browser at the app's origin: sends requests to Auth() and keeps the cookies it sets. */
function browser(config) {
  const cookies = new Map();
  return {
    cookies,
    async send(path, init = {}) {
      const headers = new Headers(init.headers);
      if (cookies.size) headers.set("Cookie", [...cookies].map(([k, v]) => `${k}=${v}`).join("; "));
      const url = new URL(path, APP).href;
      const response = await Auth(new Request(url, { ...init, headers }), config);
      for (const cookie of response.headers.getSetCookie()) {
        const [pair, ...attributes] = cookie.split(";");
        const at = pair.indexOf("=");
        const name = pair.slice(0, at).trim();
        const expired = attributes.some((a) => /^\s*max-age=0\s*$/i.test(a) || /^\s*expires=thu, 01 jan 1970/i.test(a));
        if (expired) cookies.delete(name);
        else cookies.set(name, pair.slice(at + 1).trim());
      }
      return response;
    },
  };
}

/** Runs `body` against a fresh `keyfob serve` (with `config`), stopped afterwards. */
async function withKeyfob(options, body) {
  const keyfob = await startKeyfob(options);
  try {
    await body(keyfob);
  } finally {
    await keyfob.close();
  }
}

async function signInThroughKeyfob(keyfob, expectedAlg) {
  const discovery = await (await fetch(`${keyfob.base}/.well-known/openid-configuration`)).json();
  assert.deepEqual(discovery.id_token_signing_alg_values_supported, [expectedAlg]);

  // The app is registered with Auth.js's callback URL as its redirect URI.
  const setup = await provision(keyfob, { redirectUri: CALLBACK, confidential: true });
  const config = authConfig({ issuer: keyfob.base, clientId: setup.clientId, clientSecret: setup.clientSecret });
  const app = browser(config);

  // The sign-in button: a form posting the CSRF token to /auth/signin/keyfob.
  const { csrfToken } = await (await app.send("/auth/csrf")).json();
  assert.ok(csrfToken);
  const signin = await app.send("/auth/signin/keyfob", {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ csrfToken, callbackUrl: `${APP}/deals` }),
  });
  assert.equal(signin.status, 302);
  const authorization = new URL(signin.headers.get("location"));
  assert.equal(authorization.origin + authorization.pathname, `${keyfob.base}/auth`);
  const params = authorization.searchParams;
  assert.equal(params.get("client_id"), setup.clientId);
  assert.equal(params.get("redirect_uri"), CALLBACK);
  assert.equal(params.get("response_type"), "code");
  assert.equal(params.get("scope"), "openid email deals.read");
  assert.equal(params.get("code_challenge_method"), "S256");
  assert.ok(params.get("code_challenge") && params.get("state") && params.get("nonce"));

  // The user logs in and consents on Keyfob's pages, which send them back to the callback.
  const back = new URL(await authorize(authorization.href, { email: setup.user, password: setup.password }));
  assert.equal(back.origin + back.pathname, CALLBACK);
  assert.ok(back.searchParams.get("code"));
  assert.equal(back.searchParams.get("state"), params.get("state"));
  assert.equal(back.searchParams.get("iss"), keyfob.base);

  // Auth.js exchanges the code, checks the ID token (iss, aud, exp, nonce, alg) and sets the
  // session cookie before sending the user on to where they started.
  const callback = await app.send(back.pathname + back.search);
  assert.equal(callback.status, 302, await callback.clone().text());
  assert.equal(callback.headers.get("location"), `${APP}/deals`);
  assert.ok(app.cookies.has("authjs.session-token"), [...app.cookies.keys()].join(", "));

  const session = await (await app.send("/auth/session")).json();
  assert.equal(session.user.email, setup.user);

  // The subject is the Keyfob user id, and the access token kept in the session JWT carries the
  // granted permission: userinfo, asked with it, names the same user.
  const token = await sessionToken(app, config);
  assert.equal(token.sub, session.user.id);
  assert.deepEqual(decodeJwt(token.accessToken).scope.split(" ").sort(), ["deals.read", "email", "openid"]);
  const response = await fetch(`${keyfob.base}/auth/userinfo`, { headers: { Authorization: `Bearer ${token.accessToken}` } });
  assert.equal(response.status, 200);
  const userinfo = await response.json();
  assert.equal(userinfo.email, setup.user);
  assert.equal(session.user.id, userinfo.sub);
}

/** The app's server reading its session JWT (the cookie is encrypted with `secret`). */
async function sessionToken(app, config) {
  const cookie = [...app.cookies].map(([k, v]) => `${k}=${v}`).join("; ");
  return getToken({ req: new Request(`${APP}/deals`, { headers: { Cookie: cookie } }), secret: config.secret });
}

test("Auth.js signs a user in through Keyfob (EdDSA, the default)", async () => {
  await withKeyfob({}, (keyfob) => signInThroughKeyfob(keyfob, "EdDSA"));
});

test("Auth.js signs a user in through a Keyfob that signs with RS256", async () => {
  await withKeyfob({ config: 'signing_alg = "RS256"\n' }, (keyfob) => signInThroughKeyfob(keyfob, "RS256"));
});

test("a declined consent brings the user back to sign in, signed out", async () => {
  await withKeyfob({}, async (keyfob) => {
    const setup = await provision(keyfob, { redirectUri: CALLBACK, confidential: true });
    const errors = [];
    const config = {
      ...authConfig({ issuer: keyfob.base, clientId: setup.clientId, clientSecret: setup.clientSecret }),
      logger: { error: (error) => errors.push(error) },
    };
    const app = browser(config);
    const { csrfToken } = await (await app.send("/auth/csrf")).json();
    const signin = await app.send("/auth/signin/keyfob", {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ csrfToken }),
    });
    const back = new URL(
      await authorize(signin.headers.get("location"), { email: setup.user, password: setup.password, decision: "deny" }),
    );
    assert.equal(back.searchParams.get("error"), "access_denied");
    const callback = await app.send(back.pathname + back.search);
    assert.equal(callback.status, 302);
    assert.equal(callback.headers.get("location"), `${APP}/auth/signin?error=OAuthCallbackError`);
    assert.equal(errors.length, 1);
    assert.equal(errors[0].type, "OAuthCallbackError");
    assert.ok(!app.cookies.has("authjs.session-token"));
    assert.equal(await (await app.send("/auth/session")).json(), null);
  });
});

test("an issuer other than Keyfob's public URL is refused before the user leaves the app", async () => {
  await withKeyfob({}, async (keyfob) => {
    const setup = await provision(keyfob, { redirectUri: CALLBACK, confidential: true });
    const errors = [];
    // The same server, named by another host: its discovery document says another issuer.
    const issuer = keyfob.base.replace("127.0.0.1", "localhost");
    const config = {
      ...authConfig({ issuer, clientId: setup.clientId, clientSecret: setup.clientSecret }),
      logger: { error: (error) => errors.push(error) },
    };
    const app = browser(config);
    const { csrfToken } = await (await app.send("/auth/csrf")).json();
    const signin = await app.send("/auth/signin/keyfob", {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ csrfToken }),
    });
    assert.equal(signin.status, 302);
    assert.equal(signin.headers.get("location"), `${APP}/auth/error?error=Configuration`);
    assert.equal(errors.length, 1);
    assert.equal(errors[0].code, "OAUTH_JSON_ATTRIBUTE_COMPARISON_FAILED");
    assert.match(errors[0].message, /"issuer"/);
  });
});
