/** The Keyfob client: one class for a Node back end (API key) and for a browser app (sessions). */
import type { Clock } from "./clock.js";
import { systemClock } from "./clock.js";
import { Collection } from "./collection.js";
import type { ChannelFactory, LockManagerLike } from "./coordination.js";
import { defaultChannel, defaultLocks } from "./coordination.js";
import { KeyfobError, errorFromResponse, networkError } from "./errors.js";
import { JwksCache, hasPermission } from "./jwks.js";
import type { KeyfobClaims } from "./jwks.js";
import { Apps, Grants, Keys, Tokens, Users } from "./manage.js";
import { hasOpenId, verifyIdToken } from "./oidc.js";
import type { IdTokenClaims, UserInfo } from "./oidc.js";
import type { components } from "./openapi.js";
import { base64, pkcePair, randomString } from "./pkce.js";
import type { KeyfobEvents, Session, TokenResponse } from "./session.js";
import { SessionManager, requestTokens, sessionFromTokens } from "./session.js";
import type { KeyValueStorage, StorageOption } from "./storage.js";
import { resolveStorage } from "./storage.js";

export type MintResponse = components["schemas"]["MintResponse"];
export type WhoAmI = components["schemas"]["WhoAmI"];
/** What `clientCredentials()` answers: an access token for the application itself, no refresh token. */
export type ClientCredentialsResponse = Omit<TokenResponse, "refresh_token" | "id_token">;

export interface KeyfobOptions {
  /** Where Keyfob answers, e.g. `https://keyfob.example.com` (no trailing path). */
  baseUrl: string;
  /** An API key (`kf_…`), for a back end: full access to the account. Never ship it to a browser. */
  apiKey?: string;
  /** A fixed JWT to send instead (one minted with `mintToken`, say). */
  token?: string;
  /** The application's `client_id`, for user sessions. */
  clientId?: string;
  /** A confidential application's secret (back ends only). */
  clientSecret?: string;
  /** Where Keyfob sends the user back; default: the current page (without query and fragment). */
  redirectUri?: string;
  /** Where the session is kept; default `"memory"`. Use `"localStorage"` to share it across tabs. */
  storage?: StorageOption;
  /** Where `login()` keeps the PKCE verifier until the redirect comes back; default `sessionStorage` in a browser. */
  transactionStorage?: KeyValueStorage;
  /** The `fetch` to use; default the global one. */
  fetch?: typeof globalThis.fetch;
  /** Time, injectable for tests. */
  clock?: Clock;
  /** Cross-tab lock; default `navigator.locks` when present. `null` turns it off. */
  locks?: LockManagerLike | null;
  /** Cross-tab messages; default `BroadcastChannel` in a browser. `null` turns them off. */
  channel?: ChannelFactory | null;
  /** Refresh this long before the access token expires; default 60 s (tokens last 10 min). */
  refreshAheadMs?: number;
  /** Spread the scheduled refreshes of several tabs over this much more; default 10 s. */
  refreshJitterMs?: number;
  /** Refresh on a timer ahead of expiry (default); when false, only when a call needs a token. */
  autoRefresh?: boolean;
  /** Backoff of refresh retries after a network failure: first wait and cap; default 1 s and 30 s. */
  retry?: { initialMs?: number; maxMs?: number };
  /** The `iss` that `verifyToken` and `handleRedirect` require; default `baseUrl`. */
  issuer?: string;
  /** The `aud` that `verifyToken` requires; default `keyfob`. */
  audience?: string;
  /** An unknown `kid` refetches the JWKS at most this often; default 30 s. */
  jwksRefetchIntervalMs?: number;
  /** Randomness for jitter, injectable for tests; default `Math.random`. */
  random?: () => number;
}

export interface LoginOptions {
  /** What to ask the user for, e.g. `["deals.read", "deals.write"]`; within the app's maximum. */
  permissions: string[];
  /**
   * OpenID Connect scopes to ask for beside the permissions: `openid` (an ID token, checked by
   * the SDK, whose claims become `session.user`), `email` (the user's email in it), `profile`.
   */
  scopes?: string[];
  /**
   * Anything the app wants back after the login (the page to return to, say); `handleRedirect()`
   * answers it. The SDK adds its own random value to the OAuth `state` against forgery.
   */
  state?: string;
  /** Overrides the client's `redirectUri`. */
  redirectUri?: string;
  /** `code` (default, with PKCE) or `token` (tokens in the fragment). */
  responseType?: "code" | "token";
}

/** What `handleRedirect()` answers after a login. */
export interface LoginResult {
  session: Session;
  /** The `state` given to `login()`, if any. */
  state?: string;
}

/** What `login()` leaves behind for `handleRedirect()`. */
interface LoginTransaction {
  state: string;
  verifier?: string;
  /** Sent with the `openid` scope; the ID token must carry it back. */
  nonce?: string;
  redirectUri: string;
  appState?: string;
}

type Listener<K extends keyof KeyfobEvents> = (detail: KeyfobEvents[K]) => void;

const LOGIN_RESPONSE_PARAMS = ["code", "state", "error", "error_description", "error_uri", "iss"];

/**
 * A Keyfob client.
 *
 * - With `apiKey`: mint tokens, read and write records, ask `whoami` (a Node back end).
 * - With `clientId`: log a user in (`login`, `handleRedirect`), call Keyfob or your API with the
 *   user's token (`fetch`, `collection`), and keep the session fresh by itself.
 * - Either way: `verifyToken` checks a Keyfob JWT offline against the cached JWKS.
 */
export class Keyfob {
  readonly baseUrl: string;
  readonly #options: KeyfobOptions;
  readonly #fetch: typeof globalThis.fetch;
  readonly #clock: Clock;
  readonly #listeners = new Map<keyof KeyfobEvents, Set<Listener<keyof KeyfobEvents>>>();
  readonly #sessions: SessionManager | null;
  readonly #transactions: KeyValueStorage | null;
  #jwks: JwksCache | null = null;
  #redirect: { href: string; result: Promise<LoginResult | null> } | null = null;

  constructor(options: KeyfobOptions) {
    if (!options || typeof options.baseUrl !== "string" || !options.baseUrl) {
      throw new TypeError("Keyfob needs a baseUrl, e.g. new Keyfob({ baseUrl: \"http://127.0.0.1:8080\" })");
    }
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.#options = options;
    const fetchImpl = options.fetch ?? globalThis.fetch;
    if (typeof fetchImpl !== "function") throw new TypeError("no fetch: pass one in the options");
    this.#fetch = (input, init) => fetchImpl(input, init);
    this.#clock = options.clock ?? systemClock;
    if (options.clientId) {
      const storage = resolveStorage(options.storage);
      const browserSessionStorage = (globalThis as { sessionStorage?: KeyValueStorage }).sessionStorage;
      this.#transactions = options.transactionStorage ?? browserSessionStorage ?? storage;
      this.#sessions = new SessionManager({
        baseUrl: this.baseUrl,
        clientId: options.clientId,
        ...(options.clientSecret === undefined ? {} : { clientSecret: options.clientSecret }),
        storage,
        clock: this.#clock,
        fetch: this.#fetch,
        ...optional("locks", options.locks === null ? undefined : (options.locks ?? defaultLocks())),
        ...optional("channel", options.channel === null ? undefined : (options.channel ?? defaultChannel())),
        refreshAheadMs: options.refreshAheadMs ?? 60_000,
        jitterMs: options.refreshJitterMs ?? 10_000,
        minValidityMs: 5_000,
        retryInitialMs: options.retry?.initialMs ?? 1_000,
        retryMaxMs: options.retry?.maxMs ?? 30_000,
        autoRefresh: options.autoRefresh ?? true,
        random: options.random ?? Math.random,
        emit: (type, detail) => this.#emit(type, detail),
        accept: (next, previous) => this.#acceptRefreshed(next, previous),
      });
    } else {
      this.#sessions = null;
      this.#transactions = null;
    }
  }

  // ---- Events ------------------------------------------------------------------------------

  /** Listens to `session`, `session-ended` or `refresh-error`; answers a function that stops listening. */
  on<K extends keyof KeyfobEvents>(type: K, listener: Listener<K>): () => void {
    let set = this.#listeners.get(type);
    if (!set) {
      set = new Set();
      this.#listeners.set(type, set);
    }
    set.add(listener as Listener<keyof KeyfobEvents>);
    return () => set.delete(listener as Listener<keyof KeyfobEvents>);
  }

  #emit<K extends keyof KeyfobEvents>(type: K, detail: KeyfobEvents[K]): void {
    for (const listener of [...(this.#listeners.get(type) ?? [])]) {
      try {
        (listener as Listener<K>)(detail);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }

  // ---- Requests ----------------------------------------------------------------------------

  /**
   * `fetch` with the credential added as `Authorization: Bearer …`: the API key, the fixed token,
   * or the user's access token (refreshed when due, and once more after a 401). A relative URL is
   * resolved against `baseUrl`; an absolute one (your own API) is used as is.
   */
  async fetch(input: string | URL | Request, init: RequestInit = {}): Promise<Response> {
    const target = typeof input === "string" && input.startsWith("/") ? `${this.baseUrl}${input}` : input;
    const spare = target instanceof Request ? target.clone() : null;
    const credential = await this.#credential();
    const first = await this.#send(target, init, credential);
    if (first.status !== 401 || !this.#sessions || credential === null || this.#options.apiKey || this.#options.token) {
      return first;
    }
    if (init.body instanceof ReadableStream) return first;
    // The access token was refused (revoked, or the clock is off): refresh once and retry.
    let next: Session;
    try {
      next = await this.#sessions.refreshForCall({ failedAccessToken: credential });
    } catch {
      return first;
    }
    return this.#send(spare ?? target, init, next.accessToken);
  }

  async #credential(): Promise<string | null> {
    if (this.#options.apiKey) return this.#options.apiKey;
    if (this.#options.token) return this.#options.token;
    if (this.#sessions) return this.#sessions.accessToken();
    return null;
  }

  async #send(target: string | URL | Request, init: RequestInit, credential: string | null): Promise<Response> {
    const headers = new Headers(target instanceof Request ? target.headers : undefined);
    new Headers(init.headers).forEach((value, name) => headers.set(name, value));
    if (credential !== null) headers.set("Authorization", `Bearer ${credential}`);
    try {
      return await this.#fetch(target, { ...init, headers });
    } catch (err) {
      throw networkError(err);
    }
  }

  /** A JSON request to Keyfob; throws a `KeyfobError` on an error status. */
  async request<R>(method: string, path: string, body?: unknown): Promise<R> {
    const init: RequestInit = { method, headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers = { Accept: "application/json", "Content-Type": "application/json" };
      init.body = JSON.stringify(body);
    }
    const response = await this.fetch(path, init);
    if (!response.ok) throw await errorFromResponse(response);
    if (response.status === 204) return undefined as R;
    const text = await response.text();
    if (!text) return undefined as R;
    try {
      return JSON.parse(text) as R;
    } catch (err) {
      throw new KeyfobError(response.status, "invalid_response", `Keyfob answered ${path} with something other than JSON`, {
        cause: err,
      });
    }
  }

  /** `POST /auth`: a JWT with these permissions (needs an API key). `expires` defaults to a year. */
  mintToken(options: { permissions: string[]; expires?: string | Date }): Promise<MintResponse> {
    const body: components["schemas"]["MintRequest"] = { permissions: options.permissions };
    if (options.expires !== undefined) {
      body.expires = options.expires instanceof Date ? options.expires.toISOString() : options.expires;
    }
    return this.request<MintResponse>("POST", "/auth", body);
  }

  /** `GET /auth/whoami`: what Keyfob makes of the credential. */
  whoami(): Promise<WhoAmI> {
    return this.request<WhoAmI>("GET", "/auth/whoami");
  }

  /** The account's API keys and their usage (`keys.read`); never a key. */
  get keys(): Keys {
    return new Keys((method, path, body) => this.request(method, path, body));
  }

  /** The account's minted tokens: list (`tokens.read`), revoke (`tokens.write`). */
  get tokens(): Tokens {
    return new Tokens((method, path, body) => this.request(method, path, body));
  }

  /** The account's applications (`apps.read`, `apps.write`). */
  get apps(): Apps {
    return new Apps((method, path, body) => this.request(method, path, body));
  }

  /** The users with grants to the account's applications (`users.read`, `users.write`). */
  get users(): Users {
    return new Users((method, path, body) => this.request(method, path, body));
  }

  /** The grants to the account's applications (`grants.read`, `grants.write`). */
  get grants(): Grants {
    return new Grants((method, path, body) => this.request(method, path, body));
  }

  /** The records of one resource: `find`, `findOne`, `create`, `update`, `replace`, `delete`. */
  collection<T extends object = Record<string, unknown>>(name: string): Collection<T> {
    return new Collection<T>(name, (method, path, body) => this.request(method, path, body));
  }

  // ---- Offline verification ----------------------------------------------------------------

  /**
   * Verifies a Keyfob JWT offline: signature against the cached JWKS (an unknown `kid` refetches
   * it, at most once per 30 s), `iss`, `aud`, `exp`, `nbf`; and, if given, that it grants every
   * permission in `permissions`. Answers the claims; throws `KeyfobError` `invalid_token` (or
   * `forbidden` for a missing permission). It cannot know of a revocation: ask `whoami` for that.
   */
  async verifyToken(jwt: string, options: { permissions?: string[] } = {}): Promise<KeyfobClaims> {
    const claims = await this.#keys().verify(jwt, {
      issuer: this.#issuer(),
      audience: this.#options.audience ?? "keyfob",
    });
    for (const needed of options.permissions ?? []) {
      if (!hasPermission(claims.permissions, needed)) {
        throw new KeyfobError(403, "forbidden", `the token lacks the permission \`${needed}\``);
      }
    }
    return claims;
  }

  #keys(): JwksCache {
    this.#jwks ??= new JwksCache(
      `${this.baseUrl}/.well-known/jwks.json`,
      this.#fetch,
      this.#clock,
      this.#options.jwksRefetchIntervalMs ?? 30_000,
    );
    return this.#jwks;
  }

  #issuer(): string {
    return this.#options.issuer ?? this.baseUrl;
  }

  // ---- Applications (back ends) ------------------------------------------------------------

  /**
   * `POST /auth/token` with `grant_type=client_credentials`: an access token for the application
   * itself (no user), for a confidential application (`clientId` and `clientSecret`, sent as HTTP
   * Basic). `permissions` within the application's maximum; all of them when left out. The token
   * lasts 10 minutes and comes with no refresh token: ask again when it expires. Throws
   * `KeyfobError` with the OAuth error: `invalid_client` (401: a wrong secret, an unknown
   * application), `invalid_scope` (a permission beyond the maximum), `unauthorized_client` (a
   * public application).
   */
  async clientCredentials(options: { permissions?: string[] } = {}): Promise<ClientCredentialsResponse> {
    const { clientId, clientSecret } = this.#options;
    if (!clientId || clientSecret === undefined) {
      throw new TypeError("clientCredentials needs a confidential application: clientId and clientSecret in the Keyfob options");
    }
    const body = new URLSearchParams({ grant_type: "client_credentials" });
    if (options.permissions?.length) body.set("scope", options.permissions.join(" "));
    let response: Response;
    try {
      response = await this.#fetch(`${this.baseUrl}/auth/token`, {
        method: "POST",
        headers: {
          // RFC 6749 §2.3.1: each part form-encoded, then Base64.
          Authorization: `Basic ${basicCredentials(clientId, clientSecret)}`,
          "Content-Type": "application/x-www-form-urlencoded",
          Accept: "application/json",
        },
        body,
      });
    } catch (err) {
      throw networkError(err);
    }
    if (!response.ok) throw await errorFromResponse(response);
    let answer: ClientCredentialsResponse;
    try {
      answer = (await response.json()) as ClientCredentialsResponse;
    } catch (err) {
      throw new KeyfobError(response.status, "invalid_response", "the token response is not JSON", { cause: err });
    }
    if (typeof answer?.access_token !== "string" || !answer.access_token) {
      throw new KeyfobError(response.status, "invalid_response", "the token response has no access token");
    }
    return answer;
  }

  // ---- User sessions -----------------------------------------------------------------------

  #requireSessions(): SessionManager {
    if (!this.#sessions) throw new TypeError("user sessions need a clientId in the Keyfob options");
    return this.#sessions;
  }

  #redirectUri(override?: string): string {
    const uri = override ?? this.#options.redirectUri;
    if (uri) return uri;
    const location = (globalThis as { location?: Location }).location;
    if (location) return `${location.origin}${location.pathname}`;
    throw new TypeError("pass a redirectUri");
  }

  #transactionKey(): string {
    return `keyfob:login:${this.#options.clientId}`;
  }

  /**
   * The `GET /auth` address that starts a login, with PKCE S256 and a fresh `state`; the verifier
   * waits in the transaction storage for `handleRedirect()`.
   */
  async loginUrl(options: LoginOptions): Promise<string> {
    this.#requireSessions();
    const scopes = options?.scopes ?? [];
    if (!Array.isArray(options?.permissions) || !Array.isArray(scopes) || options.permissions.length + scopes.length === 0) {
      throw new TypeError("login needs the permissions to ask for, e.g. [\"deals.read\"]");
    }
    const responseType = options.responseType ?? "code";
    const transaction: LoginTransaction = {
      state: randomString(16),
      redirectUri: this.#redirectUri(options.redirectUri),
      ...optional("appState", options.state),
    };
    const query = new URLSearchParams({
      client_id: this.#options.clientId!,
      redirect_uri: transaction.redirectUri,
      response_type: responseType,
    });
    if (scopes.length === 0) {
      query.set("permissions", options.permissions.join(","));
    } else {
      // OpenID Connect scopes and permissions together, in the one `scope` parameter.
      query.set("scope", [...scopes, ...options.permissions].join(" "));
    }
    query.set("state", transaction.state);
    if (hasOpenId(scopes)) {
      // Binds the ID token to this login: a token replayed from another one is refused.
      transaction.nonce = randomString(16);
      query.set("nonce", transaction.nonce);
    }
    if (responseType === "code") {
      const { verifier, challenge } = await pkcePair();
      transaction.verifier = verifier;
      query.set("code_challenge", challenge);
      query.set("code_challenge_method", "S256");
    }
    this.#transactions!.setItem(this.#transactionKey(), JSON.stringify(transaction));
    return `${this.baseUrl}/auth?${query}`;
  }

  /** Sends the browser to Keyfob's login (see `loginUrl`). */
  async login(options: LoginOptions): Promise<void> {
    const url = await this.loginUrl(options);
    const location = (globalThis as { location?: Location }).location;
    if (!location) throw new TypeError("login() navigates a browser; in Node use loginUrl()");
    location.assign(url);
  }

  /**
   * On the redirect URI: finishes the login. Reads `?code=…&state=…` (exchanged at
   * `/auth/token` with the PKCE verifier) or `#token=…&refresh_token=…&expires=…&state=…`, checks
   * `state`, stores the session and takes the values out of the address bar. Answers null when
   * the address carries no login response; throws `KeyfobError` when the user declined
   * (`access_denied`), the state does not match (`invalid_state`), or the exchange fails.
   */
  handleRedirect(url?: string | URL): Promise<LoginResult | null> {
    const location = (globalThis as { location?: Location }).location;
    const href = String(url ?? location?.href ?? "");
    if (!href) return Promise.reject(new TypeError("pass the URL Keyfob redirected to"));
    // Called twice for one answer (a framework running an effect twice): one exchange, one result.
    if (this.#redirect?.href === href) return this.#redirect.result;
    const result = this.#finishLogin(href, url === undefined);
    this.#redirect = { href, result };
    return result;
  }

  async #finishLogin(href: string, inAddressBar: boolean): Promise<LoginResult | null> {
    const sessions = this.#requireSessions();
    const address = new URL(href);
    const fragment = new URLSearchParams(address.hash.replace(/^#/, ""));
    const fromFragment = fragment.has("token") || fragment.has("access_token") || fragment.has("error");
    const params = fromFragment ? fragment : address.searchParams;
    if (!params.has("code") && !params.has("token") && !params.has("access_token") && !params.has("error")) {
      return null;
    }
    if (inAddressBar) this.#cleanAddress(address, fromFragment);

    const key = this.#transactionKey();
    const raw = this.#transactions!.getItem(key);
    this.#transactions!.removeItem(key);
    let transaction: LoginTransaction | null = null;
    try {
      transaction = raw ? (JSON.parse(raw) as LoginTransaction) : null;
    } catch {
      transaction = null;
    }
    if (!transaction || params.get("state") !== transaction.state) {
      throw new KeyfobError(0, "invalid_state", "this login answer does not belong to a login this browser started");
    }
    // RFC 9207: Keyfob names itself in every login answer; one from another server is a mix-up.
    const issuer = params.get("iss");
    const expectedIssuer = this.#issuer().replace(/\/+$/, "");
    if (issuer !== null && issuer.replace(/\/+$/, "") !== expectedIssuer) {
      throw new KeyfobError(0, "invalid_issuer", `this login answer comes from ${issuer}, not from ${expectedIssuer}`);
    }
    const error = params.get("error");
    if (error) {
      throw new KeyfobError(0, error, params.get("error_description") ?? `the login failed: ${error}`);
    }
    let session: Session;
    const code = params.get("code");
    if (code !== null) {
      const exchange: Record<string, string> = {
        grant_type: "authorization_code",
        code,
        redirect_uri: transaction.redirectUri,
      };
      if (transaction.verifier) exchange.code_verifier = transaction.verifier;
      session = await requestTokens(
        {
          baseUrl: this.baseUrl,
          clientId: this.#options.clientId!,
          ...optional("clientSecret", this.#options.clientSecret),
          clock: this.#clock,
          fetch: this.#fetch,
        },
        exchange,
      );
      if (transaction.nonce !== undefined && !session.idToken && hasOpenId(session.scope)) {
        throw new KeyfobError(0, "invalid_id_token", "Keyfob granted the openid scope but answered no ID token");
      }
    } else {
      const expiresIn = params.get("expires_in");
      session = sessionFromTokens(
        {
          access_token: params.get("access_token") ?? params.get("token") ?? "",
          refresh_token: params.get("refresh_token") ?? "",
          scope: params.get("scope") ?? "",
          expires: params.get("expires") ?? "",
          ...(expiresIn !== null && Number.isFinite(Number(expiresIn)) ? { expires_in: Number(expiresIn) } : {}),
        },
        this.#clock.now(),
      );
    }
    if (session.idToken !== undefined) {
      if (transaction.nonce === undefined) {
        // The login did not ask for one: nothing to compare it with, so nothing to believe.
        delete session.idToken;
      } else {
        session.user = await verifyIdToken(this.#keys(), session.idToken, {
          issuer: this.#issuer(),
          clientId: this.#options.clientId!,
          nonce: transaction.nonce,
        });
      }
    }
    sessions.start(session);
    return { session, ...optional("state", transaction.appState) };
  }

  #cleanAddress(address: URL, fromFragment: boolean): void {
    const history = (globalThis as { history?: History }).history;
    if (!history?.replaceState) return;
    const clean = new URL(address.href);
    clean.hash = "";
    if (!fromFragment) for (const name of LOGIN_RESPONSE_PARAMS) clean.searchParams.delete(name);
    history.replaceState(history.state, "", `${clean.pathname}${clean.search}`);
  }

  /** The current session, or null. */
  get session(): Session | null {
    return this.#sessions?.current() ?? null;
  }

  /**
   * Who is logged in: the claims of the session's checked ID token (`sub`, `email`,
   * `email_verified`, `auth_time`, …), or null without a session or without the `openid` scope.
   */
  get user(): IdTokenClaims | null {
    return this.session?.user ?? null;
  }

  /**
   * `GET /auth/userinfo` with the session's access token: the user's claims as Keyfob has them
   * now (`sub`, and `email`, `email_verified`, `updated_at` as the scopes allow). Throws
   * `KeyfobError` 401 (`invalid_token`) for an access token Keyfob refuses even after a refresh,
   * 403 `insufficient_scope` for a session without the `openid` scope, and `invalid_response`
   * when the answer names another user than the session's ID token.
   */
  async getUser(): Promise<UserInfo> {
    const response = await this.fetch("/auth/userinfo", { headers: { Accept: "application/json" } });
    if (!response.ok) {
      const error = await errorFromResponse(response);
      if (error.code === "insufficient_scope") {
        throw new KeyfobError(error.status, error.code, "the session has no openid scope: log in with scopes: [\"openid\"]", {
          body: error.body,
        });
      }
      throw error;
    }
    let info: UserInfo;
    try {
      info = (await response.json()) as UserInfo;
    } catch (err) {
      throw new KeyfobError(response.status, "invalid_response", "the userinfo answer is not JSON", { cause: err });
    }
    if (!info || typeof info.sub !== "string") {
      throw new KeyfobError(response.status, "invalid_response", "the userinfo answer names no subject");
    }
    // OpenID Connect Core §5.3.2: not the session's user, not to be used.
    const expected = this.user?.sub;
    if (expected !== undefined && info.sub !== expected) {
      throw new KeyfobError(response.status, "invalid_response", "the userinfo answer names another user than the session's");
    }
    return info;
  }

  /**
   * A refresh's answer, before it is stored: a new ID token is checked like the login's (but for
   * the nonce) and must name the same user; without one, the session keeps the claims it had.
   * When the JWKS cannot be fetched, the new tokens are kept with the claims checked before. A
   * session whose login brought no checked ID token (no `openid`) takes none from a refresh.
   */
  async #acceptRefreshed(next: Session, previous: Session): Promise<Session> {
    const kept: Session = { ...next };
    delete kept.idToken;
    if (previous.idToken !== undefined) kept.idToken = previous.idToken;
    if (previous.user !== undefined) kept.user = previous.user;
    if (next.idToken === undefined || previous.user === undefined) return kept;
    try {
      const user = await verifyIdToken(this.#keys(), next.idToken, {
        issuer: this.#issuer(),
        clientId: this.#options.clientId!,
        ...optional("sub", previous.user?.sub),
      });
      return { ...next, user };
    } catch (err) {
      if (err instanceof KeyfobError && err.code === "invalid_id_token") throw err;
      return kept;
    }
  }

  /** Whether a user is logged in (a session is stored). */
  get isLoggedIn(): boolean {
    return this.session !== null;
  }

  /** An access token good for a few more seconds at least; refreshes when due. */
  accessToken(): Promise<string> {
    return this.#requireSessions().accessToken();
  }

  /**
   * Refreshes the session now (or takes what another tab just refreshed). Concurrent calls share
   * one refresh. Rejects with `invalid_grant` when the session is over.
   */
  refresh(): Promise<Session> {
    return this.#requireSessions().refresh();
  }

  /**
   * Ends the session: revokes it at `/auth/revoke` (every Keyfob node refuses its tokens within a
   * second) and forgets it here and in the other tabs. Forgets it even when Keyfob cannot be
   * reached.
   */
  async logout(): Promise<void> {
    const sessions = this.#requireSessions();
    const session = sessions.current();
    const token = session?.refreshToken ?? session?.accessToken;
    try {
      if (token) {
        const body = new URLSearchParams({ token, client_id: this.#options.clientId! });
        if (this.#options.clientSecret !== undefined) body.set("client_secret", this.#options.clientSecret);
        const response = await this.#fetch(`${this.baseUrl}/auth/revoke`, {
          method: "POST",
          headers: { "Content-Type": "application/x-www-form-urlencoded" },
          body,
        });
        if (!response.ok) throw await errorFromResponse(response);
      }
    } catch (err) {
      if (!(err instanceof KeyfobError) && !(err instanceof TypeError)) throw err;
    } finally {
      sessions.end("logout");
    }
  }

  /** Stops the refresh timer and the cross-tab listeners. */
  close(): void {
    this.#sessions?.close();
  }
}

/** HTTP Basic credentials of a client (RFC 6749 §2.3.1: form-encoded, then Base64). */
function basicCredentials(clientId: string, clientSecret: string): string {
  const encode = (value: string) => new URLSearchParams([["", value]]).toString().slice(1);
  return base64(new TextEncoder().encode(`${encode(clientId)}:${encode(clientSecret)}`));
}

function optional<K extends string, V>(key: K, value: V | undefined): { [P in K]?: V } {
  return (value === undefined ? {} : { [key]: value }) as { [P in K]?: V };
}
