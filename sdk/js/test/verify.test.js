// verifyToken: offline checks against a cached JWKS; an unknown `kid` refetches it, rate limited.
import assert from "node:assert/strict";
import { test } from "node:test";
import { SignJWT, exportJWK, generateKeyPair } from "jose";
import { Keyfob, hasPermission } from "../dist/index.js";
import { FakeClock } from "./support/fakes.js";

const BASE = "https://keyfob.test";

async function signingKey(kid) {
  const { publicKey, privateKey } = await generateKeyPair("EdDSA", { crv: "Ed25519" });
  const jwk = { ...(await exportJWK(publicKey)), kid, alg: "EdDSA", use: "sig" };
  return { kid, jwk, privateKey };
}

function sign(key, clock, claims = {}) {
  const now = Math.floor(clock.now() / 1000);
  return new SignJWT({
    iss: BASE,
    aud: "keyfob",
    sub: "key_1",
    jti: "tok_1",
    iat: now,
    nbf: now,
    exp: now + 3600,
    permissions: ["deals.read"],
    account_id: "acc_1",
    ...claims,
  })
    .setProtectedHeader({ alg: "EdDSA", kid: key.kid })
    .sign(key.privateKey);
}

test("verifies offline, refetching the JWKS once for an unknown kid, at most every 30 s", async () => {
  const clock = new FakeClock();
  const first = await signingKey("k1");
  const next = await signingKey("k2");
  let published = [first.jwk];
  let fetches = 0;
  const fetch = async (url) => {
    assert.equal(String(url), `${BASE}/.well-known/jwks.json`);
    fetches += 1;
    return new Response(JSON.stringify({ keys: published }), { headers: { "Content-Type": "application/json" } });
  };
  const keyfob = new Keyfob({ baseUrl: BASE, fetch, clock });

  const claims = await keyfob.verifyToken(await sign(first, clock));
  assert.deepEqual(claims.permissions, ["deals.read"]);
  assert.equal(claims.account_id, "acc_1");
  await keyfob.verifyToken(await sign(first, clock));
  assert.equal(fetches, 1, "the key set is cached");

  // A token signed with a key not yet published: one refetch (the last fetch is 30 s old), then
  // refused.
  await clock.advance(30_000);
  const early = await sign(next, clock);
  await assert.rejects(keyfob.verifyToken(early), { code: "invalid_token" });
  assert.equal(fetches, 2);
  await assert.rejects(keyfob.verifyToken(early), { code: "invalid_token" });
  await assert.rejects(keyfob.verifyToken(early), { code: "invalid_token" });
  assert.equal(fetches, 2, "no refetch within 30 s");

  // Keyfob rotated: the new key is published; after 30 s one refetch finds it.
  published = [first.jwk, next.jwk];
  await clock.advance(29_000);
  await assert.rejects(keyfob.verifyToken(await sign(next, clock)), { code: "invalid_token" });
  assert.equal(fetches, 2);
  await clock.advance(1_000);
  assert.equal((await keyfob.verifyToken(await sign(next, clock))).sub, "key_1");
  assert.equal(fetches, 3);
  await keyfob.verifyToken(await sign(first, clock));
  assert.equal(fetches, 3);
});

test("refuses wrong issuer, audience, expired tokens, and missing permissions", async () => {
  const clock = new FakeClock();
  const key = await signingKey("k1");
  const fetch = async () => new Response(JSON.stringify({ keys: [key.jwk] }));
  const keyfob = new Keyfob({ baseUrl: BASE, fetch, clock });
  await assert.rejects(keyfob.verifyToken(await sign(key, clock, { iss: "https://elsewhere" })), { code: "invalid_token" });
  await assert.rejects(keyfob.verifyToken(await sign(key, clock, { aud: "other" })), { code: "invalid_token" });
  const token = await sign(key, clock);
  await clock.advance(3_601_000);
  await assert.rejects(keyfob.verifyToken(token), { code: "invalid_token" });
  await assert.rejects(keyfob.verifyToken("not a jwt"), { code: "invalid_token" });
  const wide = await sign(key, clock, { permissions: ["*.read"] });
  await keyfob.verifyToken(wide, { permissions: ["deals.read", "cars.read"] });
  await assert.rejects(keyfob.verifyToken(wide, { permissions: ["sensitive.read"] }), { status: 403, code: "forbidden" });
});

test("hasPermission follows Keyfob's rules", () => {
  assert.ok(hasPermission(["deals.read"], "deals.read"));
  assert.ok(!hasPermission(["deals.read"], "deals.write"));
  assert.ok(hasPermission(["*.write"], "cars.write"));
  assert.ok(!hasPermission(["*.read"], "sensitive.read"));
  assert.ok(!hasPermission(["*.read"], "audit.read"));
  assert.ok(hasPermission(["sensitive.read"], "sensitive.read"));
});

test("verifies tokens of a Keyfob that signs with ES256 or RS256", async () => {
  for (const [alg, options] of [["ES256", {}], ["RS256", { modulusLength: 2048 }]]) {
    const clock = new FakeClock();
    const { publicKey, privateKey } = await generateKeyPair(alg, options);
    const jwk = { ...(await exportJWK(publicKey)), kid: `k-${alg}`, alg, use: "sig" };
    const fetch = async () => new Response(JSON.stringify({ keys: [jwk] }));
    const keyfob = new Keyfob({ baseUrl: BASE, fetch, clock });
    const now = Math.floor(clock.now() / 1000);
    const token = await new SignJWT({ iss: BASE, aud: "keyfob", sub: "key_1", jti: "tok_1", iat: now, exp: now + 60, permissions: [], account_id: "acc_1" })
      .setProtectedHeader({ alg, kid: jwk.kid, typ: "at+jwt" })
      .sign(privateKey);
    assert.equal((await keyfob.verifyToken(token)).sub, "key_1", alg);
  }
});
