/**
 * Offline verification of Keyfob JWTs against its JWKS (`/.well-known/jwks.json`), with `jose`.
 * The key set is fetched once and cached; a token whose `kid` is not in the cache (Keyfob rotated
 * its signing key) triggers one refetch, at most once per `minRefetchMs`.
 */
import { createLocalJWKSet, errors as joseErrors, jwtVerify } from "jose";
import type { JSONWebKeySet, JWTHeaderParameters, JWTPayload } from "jose";
import type { Clock } from "./clock.js";
import { KeyfobError, errorFromResponse, networkError } from "./errors.js";

/** The claims of a Keyfob JWT. */
export interface KeyfobClaims extends JWTPayload {
  iss: string;
  sub: string;
  aud: string | string[];
  exp: number;
  iat: number;
  jti: string;
  /** `deals.read`, `*.write`, … */
  permissions: string[];
  account_id: string;
  /** The application, for a user-session token. */
  client_id?: string;
  /** The session, for a user-session token. */
  sid?: string;
}

/** The algorithms Keyfob signs with (`--signing-alg`: EdDSA by default, ES256 or RS256). */
export const ALGORITHMS = ["EdDSA", "ES256", "RS256"];

/** Capabilities, and the management API's resources, that a wildcard never grants. */
const RESERVED = new Set(["sensitive", "audit", "keys", "tokens", "apps", "users", "grants"]);

/** Whether `permissions` (a token's claim) grants `needed` (`deals.read`), as Keyfob decides it. */
export function hasPermission(permissions: readonly string[], needed: string): boolean {
  if (permissions.includes(needed)) return true;
  const dot = needed.lastIndexOf(".");
  if (dot <= 0) return false;
  const resource = needed.slice(0, dot);
  const action = needed.slice(dot + 1);
  return !RESERVED.has(resource) && permissions.includes(`*.${action}`);
}

export class JwksCache {
  readonly #url: string;
  readonly #fetch: typeof globalThis.fetch;
  readonly #clock: Clock;
  readonly #minRefetchMs: number;
  #keys: ReturnType<typeof createLocalJWKSet> | null = null;
  #kids = new Set<string>();
  #fetchedAt = Number.NEGATIVE_INFINITY;
  #loading: Promise<void> | null = null;
  /** How many times the key set was fetched (for tests and metrics). */
  fetches = 0;

  constructor(url: string, fetch: typeof globalThis.fetch, clock: Clock, minRefetchMs: number) {
    this.#url = url;
    this.#fetch = fetch;
    this.#clock = clock;
    this.#minRefetchMs = minRefetchMs;
  }

  /** Verifies `jwt`'s signature, `iss`, `aud`, `exp` and `nbf`; answers its claims. */
  async verify(jwt: string, expected: { issuer: string; audience: string }): Promise<KeyfobClaims> {
    const { payload } = await this.verifyJwt(jwt, expected, "invalid_token", "token");
    if (!Array.isArray(payload.permissions) || typeof payload.account_id !== "string") {
      throw new KeyfobError(0, "invalid_token", "the token is not a Keyfob token: it lacks permissions or account_id");
    }
    return payload as KeyfobClaims;
  }

  /**
   * Verifies any JWT Keyfob signed: the signature against the key set, `iss`, `aud`, `exp` and
   * `nbf` (with `clockToleranceSec` of leeway), and that `requiredClaims` are present. Failures are
   * `KeyfobError`s with `code`, their message naming the `what` that failed; a JWKS that cannot
   * be fetched is `network_error` (or Keyfob's error), so that callers can tell "not valid" from
   * "could not check".
   */
  async verifyJwt(
    jwt: string,
    expected: { issuer: string; audience: string; clockToleranceSec?: number; requiredClaims?: string[] },
    code: string,
    what: string,
  ): Promise<{ payload: JWTPayload; protectedHeader: JWTHeaderParameters }> {
    try {
      return await jwtVerify(jwt, (header, token) => this.#key(header, token), {
        algorithms: ALGORITHMS,
        issuer: expected.issuer,
        audience: expected.audience,
        currentDate: new Date(this.#clock.now()),
        ...(expected.clockToleranceSec === undefined ? {} : { clockTolerance: expected.clockToleranceSec }),
        ...(expected.requiredClaims === undefined ? {} : { requiredClaims: expected.requiredClaims }),
      });
    } catch (err) {
      if (err instanceof KeyfobError) throw err;
      if (err instanceof joseErrors.JOSEError) {
        throw new KeyfobError(0, code, `the ${what} is not valid: ${err.message}`, { cause: err });
      }
      throw new KeyfobError(0, code, `the ${what} is not valid`, { cause: err });
    }
  }

  async #key(...args: Parameters<ReturnType<typeof createLocalJWKSet>>) {
    const [header] = args;
    const kid = header?.kid;
    const unknownKid = kid !== undefined && !this.#kids.has(kid);
    if (!this.#keys || (unknownKid && this.#clock.now() - this.#fetchedAt >= this.#minRefetchMs)) {
      await this.#load();
    }
    return this.#keys!(...args);
  }

  #load(): Promise<void> {
    this.#loading ??= this.#fetchKeys().finally(() => {
      this.#loading = null;
    });
    return this.#loading;
  }

  async #fetchKeys(): Promise<void> {
    this.#fetchedAt = this.#clock.now();
    this.fetches += 1;
    let response: Response;
    try {
      response = await this.#fetch(this.#url, { headers: { Accept: "application/json" } });
    } catch (err) {
      throw networkError(err);
    }
    if (!response.ok) throw await errorFromResponse(response);
    const set = (await response.json()) as JSONWebKeySet;
    if (!set || !Array.isArray(set.keys)) {
      throw new KeyfobError(response.status, "invalid_response", "the JWKS has no keys");
    }
    this.#keys = createLocalJWKSet(set);
    this.#kids = new Set(set.keys.map((key) => key.kid).filter((kid): kid is string => typeof kid === "string"));
  }
}
