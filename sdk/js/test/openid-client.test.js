// Keyfob as an OpenID Connect provider for a stock relying party: openid-client (the certified
// library most Node apps use) against a real `keyfob serve`, knowing nothing of Keyfob but its
// issuer URL. Discovery, the authorization code flow with PKCE and a nonce (the user logging in
// on Keyfob's own pages), the ID token checked by openid-client, userinfo, refresh, and the
// client_credentials grant.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import * as client from "openid-client";
import { authorize } from "./support/pages.js";
import { provision, startKeyfob } from "./support/server.js";

const REDIRECT_URI = "http://localhost:3000/callback";
let keyfob;
let setup;
let config;

before(async () => {
  keyfob = await startKeyfob();
  setup = await provision(keyfob, { redirectUri: REDIRECT_URI, confidential: true });
  // Plain http on loopback: openid-client asks to be told that this is meant.
  config = await client.discovery(
    new URL(keyfob.base),
    setup.clientId,
    setup.clientSecret,
    client.ClientSecretBasic(setup.clientSecret),
    { execute: [client.allowInsecureRequests] },
  );
});

after(async () => {
  await keyfob?.close();
});

test("discovery names Keyfob's endpoints", () => {
  const metadata = config.serverMetadata();
  assert.equal(metadata.issuer, keyfob.base);
  assert.equal(metadata.authorization_endpoint, `${keyfob.base}/auth`);
  assert.equal(metadata.token_endpoint, `${keyfob.base}/auth/token`);
  assert.equal(metadata.jwks_uri, `${keyfob.base}/.well-known/jwks.json`);
  assert.equal(metadata.userinfo_endpoint, `${keyfob.base}/auth/userinfo`);
  assert.ok(metadata.scopes_supported.includes("openid"));
  assert.ok(metadata.code_challenge_methods_supported.includes("S256"));
});

test("code flow with PKCE and a nonce: the ID token, userinfo, refresh", async () => {
  const verifier = client.randomPKCECodeVerifier();
  const nonce = client.randomNonce();
  const state = client.randomState();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: REDIRECT_URI,
    scope: "openid email deals.read",
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: "S256",
    nonce,
    state,
  });
  const back = await authorize(url.href, { email: setup.user, password: setup.password });

  // openid-client checks the answer (state, RFC 9207 `iss`), exchanges the code, and validates the
  // ID token: signature against the JWKS, iss, aud, exp, iat, nonce.
  const tokens = await client.authorizationCodeGrant(config, new URL(back), {
    pkceCodeVerifier: verifier,
    expectedNonce: nonce,
    expectedState: state,
  });
  assert.equal(tokens.token_type.toLowerCase(), "bearer");
  assert.ok(tokens.refresh_token);
  assert.match(tokens.scope, /\bopenid\b/);
  const claims = tokens.claims();
  assert.ok(claims.sub);
  assert.equal(claims.iss, keyfob.base);
  assert.equal(claims.aud, setup.clientId);
  assert.equal(claims.nonce, nonce);
  assert.equal(claims.email, setup.user);
  assert.equal(typeof claims.auth_time, "number");

  // Userinfo, with the subject checked against the ID token's.
  const info = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
  assert.equal(info.sub, claims.sub);
  assert.equal(info.email, setup.user);

  // Refresh: a new ID token for the same user, validated again.
  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
  assert.notEqual(refreshed.refresh_token, tokens.refresh_token);
  assert.equal(refreshed.claims()?.sub, claims.sub);
  const again = await client.fetchUserInfo(config, refreshed.access_token, claims.sub);
  assert.equal(again.sub, claims.sub);
});

test("client_credentials: the application's own token", async () => {
  const tokens = await client.clientCredentialsGrant(config, { scope: "deals.read" });
  assert.equal(tokens.token_type.toLowerCase(), "bearer");
  assert.equal(tokens.scope, "deals.read");
  assert.equal(tokens.refresh_token, undefined);
  assert.equal(tokens.expires_in, 600);
  const response = await fetch(`${keyfob.base}/auth/whoami`, { headers: { Authorization: `Bearer ${tokens.access_token}` } });
  assert.equal(response.status, 200);
  assert.equal((await response.json()).subject, setup.clientId);
});
