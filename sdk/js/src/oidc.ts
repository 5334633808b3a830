/**
 * OpenID Connect for user sessions: the ID token that comes with a session started with the
 * `openid` scope, checked before its claims are believed, and what the userinfo endpoint answers.
 */
import type { JWTPayload } from "jose";
import { KeyfobError } from "./errors.js";
import type { JwksCache } from "./jwks.js";

/** The scopes that ask for the user's identity rather than a permission. */
export const IDENTITY_SCOPES = ["openid", "profile", "email"];

/** The claims of a checked ID token: who the user is, and when they logged in. */
export interface IdTokenClaims extends JWTPayload {
  /** Keyfob's URL (`issuer`). */
  iss: string;
  /** The user's id, the same for every application. */
  sub: string;
  /** This application's `client_id`. */
  aud: string | string[];
  exp: number;
  iat: number;
  /** When the user typed their password (seconds since the epoch). */
  auth_time?: number;
  /** The value the SDK sent in the login request (only in the token of the login itself). */
  nonce?: string;
  /** The party the token was issued to: this application. */
  azp?: string;
  at_hash?: string;
  /** The session. */
  sid?: string;
  /** With the `email` scope. */
  email?: string;
  email_verified?: boolean;
  /** With the `profile` scope: when the user's profile last changed (seconds since the epoch). */
  updated_at?: number;
}

/** What `GET /auth/userinfo` answers: `sub` always, the rest as the session's scopes allow. */
export interface UserInfo {
  sub: string;
  email?: string;
  email_verified?: boolean;
  /** When the user's profile last changed (seconds since the epoch). */
  updated_at?: number;
  [claim: string]: unknown;
}

/** Leeway for a browser's clock against Keyfob's when reading `exp` and `nbf`. */
const CLOCK_TOLERANCE_SEC = 60;

/** Whether a space-separated scope (or a list of scopes) has `openid` in it. */
export function hasOpenId(scope: string | readonly string[] | undefined): boolean {
  if (scope === undefined) return false;
  const list = typeof scope === "string" ? scope.split(/[\s,]+/) : scope;
  return list.includes("openid");
}

export interface IdTokenExpectations {
  issuer: string;
  clientId: string;
  /** The login's nonce: required and compared for the token of a login; absent after a refresh. */
  nonce?: string;
  /** After a refresh: the `sub` of the session's first ID token, which must not change. */
  sub?: string;
}

/**
 * Checks an ID token (OpenID Connect Core 1.0 §3.1.3.7, §12.2): the signature against Keyfob's
 * JWKS with EdDSA, ES256 or RS256; `iss` is Keyfob, `aud` is this application (and `azp`, when
 * present); `exp` not past; `nonce` the one sent at login; the same `sub` as before after a
 * refresh. Answers the claims; throws `KeyfobError` `invalid_id_token`, or `network_error` when
 * the JWKS cannot be fetched.
 */
export async function verifyIdToken(
  jwks: JwksCache,
  idToken: string,
  expected: IdTokenExpectations,
): Promise<IdTokenClaims> {
  const { payload, protectedHeader } = await jwks.verifyJwt(
    idToken,
    {
      issuer: expected.issuer,
      audience: expected.clientId,
      clockToleranceSec: CLOCK_TOLERANCE_SEC,
      requiredClaims: ["sub", "iat", "exp"],
    },
    "invalid_id_token",
    "ID token",
  );
  const invalid = (why: string) => new KeyfobError(0, "invalid_id_token", `the ID token is not valid: ${why}`);
  // An access token (RFC 9068) is no ID token, even when its audience would do.
  if (typeof protectedHeader.typ === "string" && protectedHeader.typ.toLowerCase().replace(/^application\//, "") === "at+jwt") {
    throw invalid("it is an access token");
  }
  if (typeof payload.sub !== "string" || !payload.sub) throw invalid("it names no subject");
  if (Array.isArray(payload.aud) && payload.aud.length > 1 && payload.azp === undefined) {
    throw invalid("it has several audiences and no azp");
  }
  if (payload.azp !== undefined && payload.azp !== expected.clientId) {
    throw invalid(`it was issued to ${String(payload.azp)}, not to ${expected.clientId}`);
  }
  if (expected.nonce !== undefined && payload.nonce !== expected.nonce) {
    throw invalid("its nonce is not the one this login sent");
  }
  if (expected.sub !== undefined && payload.sub !== expected.sub) {
    throw invalid("it names another user than the session's");
  }
  return payload as IdTokenClaims;
}
