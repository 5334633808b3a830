/**
 * A user session that refreshes itself: ahead of expiry, and once after a 401; one refresh at a
 * time per tab (single flight) and per application across tabs (a Web Lock, or announcements on a
 * BroadcastChannel where there are no locks); network failures retried with backoff; the session
 * dropped only when Keyfob answers `invalid_grant` (or `invalid_client`).
 *
 * Keyfob rotates the refresh token on every use and answers a second use of the same token within
 * its grace window (30 s by default) with the same new pair. So two tabs that refresh at once both
 * stay logged in, and a tab must never present a refresh token another tab rotated long ago: it
 * re-reads the storage after taking the lock, and adopts what it finds there.
 */
import type { Clock } from "./clock.js";
import { sleep } from "./clock.js";
import type { ChannelFactory, ChannelLike, LockManagerLike } from "./coordination.js";
import { LocalMutex } from "./coordination.js";
import { KeyfobError, errorFromResponse, networkError } from "./errors.js";
import type { IdTokenClaims } from "./oidc.js";
import type { components } from "./openapi.js";
import type { KeyValueStorage } from "./storage.js";

/**
 * What `POST /auth/token` answers; `id_token` when the grant includes the `openid` scope (code
 * exchange and refresh).
 */
export type TokenResponse = components["schemas"]["TokenResponse"];

/** A logged-in user's tokens, as the SDK stores them. */
export interface Session {
  /** The JWT to send as `Authorization: Bearer …`. */
  accessToken: string;
  /** The refresh token (`kfr_…`); rotated on every refresh. */
  refreshToken: string | null;
  /** When the access token expires: milliseconds since the epoch, by this machine's clock. */
  expiresAt: number;
  /** The granted permissions (and OpenID Connect scopes), space-separated. */
  scope: string;
  /** The last checked ID token, for a session started with the `openid` scope. */
  idToken?: string;
  /** Who the user is: the claims of the checked ID token (`sub`, `email`, `auth_time`, …). */
  user?: IdTokenClaims;
}

/** Why a session ended. */
export type SessionEndReason = "invalid_grant" | "invalid_id_token" | "logout" | "elsewhere";

/** The events a {@link Keyfob} client emits, and what each carries. */
export interface KeyfobEvents {
  /** A session started or changed: `login`, `refresh` (this tab refreshed), `peer` (another tab did). */
  session: { session: Session; reason: "login" | "refresh" | "peer" };
  /**
   * The session is gone: Keyfob refused its refresh token (`invalid_grant`: revoked, reused or
   * expired), a refresh brought an ID token that failed its checks (`invalid_id_token`: another
   * user, a bad signature), the app called `logout()`, or another tab logged out (`elsewhere`).
   */
  "session-ended": { reason: SessionEndReason; error?: KeyfobError };
  /** A refresh failed for a reason worth retrying; the next try is in `retryInMs`. */
  "refresh-error": { error: KeyfobError; attempt: number; retryInMs: number };
}

/** What a refresh is for. */
export interface RefreshOptions {
  /** After a 401 with this token: nothing to do if the stored access token is another one. */
  failedAccessToken?: string;
  /** Ahead of expiry: nothing to do if, by the time this tab holds the lock, it is not due. */
  ifDue?: boolean;
}

export type Emit = <K extends keyof KeyfobEvents>(type: K, detail: KeyfobEvents[K]) => void;

/** What the tabs tell each other. */
type Message =
  | { type: "rotated"; from: string; session: Session }
  | { type: "ended"; refreshToken: string }
  | { type: "refreshing"; from: string };

/** How long a tab without Web Locks waits for another tab that announced it is refreshing. */
const PEER_WAIT_MS = 10_000;

export interface SessionManagerOptions {
  baseUrl: string;
  clientId: string;
  clientSecret?: string;
  storage: KeyValueStorage;
  clock: Clock;
  fetch: typeof globalThis.fetch;
  locks?: LockManagerLike;
  channel?: ChannelFactory;
  /** Refresh this long before the access token expires. */
  refreshAheadMs: number;
  /** Spread the tabs' scheduled refreshes over this much more. */
  jitterMs: number;
  /** A token with less than this left is not used: callers wait for the refresh. */
  minValidityMs: number;
  retryInitialMs: number;
  retryMaxMs: number;
  autoRefresh: boolean;
  random: () => number;
  emit: Emit;
  /**
   * Checks what a refresh brought before it is stored: its ID token, against the session it
   * replaces. Throws `invalid_id_token` to end the session.
   */
  accept?: (next: Session, previous: Session) => Promise<Session>;
}

/** Calls `POST /auth/token` with `params` (plus the client's credentials) and reads a session. */
export async function requestTokens(
  options: Pick<SessionManagerOptions, "baseUrl" | "clientId" | "clientSecret" | "clock" | "fetch">,
  params: Record<string, string>,
): Promise<Session> {
  const body = new URLSearchParams(params);
  body.set("client_id", options.clientId);
  if (options.clientSecret !== undefined) body.set("client_secret", options.clientSecret);
  const started = options.clock.now();
  let response: Response;
  try {
    response = await options.fetch(`${options.baseUrl}/auth/token`, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" },
      body,
    });
  } catch (err) {
    throw networkError(err);
  }
  if (!response.ok) throw await errorFromResponse(response);
  let answer: TokenResponse;
  try {
    answer = (await response.json()) as TokenResponse;
  } catch (err) {
    throw new KeyfobError(response.status, "invalid_response", "the token response is not JSON", { cause: err });
  }
  return sessionFromTokens(answer, started);
}

/** A session from a token response; `started` is when the request left, by the local clock. */
export function sessionFromTokens(answer: Partial<TokenResponse>, started: number): Session {
  const accessToken = answer.access_token ?? answer.token;
  if (typeof accessToken !== "string" || !accessToken) {
    throw new KeyfobError(0, "invalid_response", "the token response has no access token");
  }
  let expiresAt: number;
  if (typeof answer.expires_in === "number" && Number.isFinite(answer.expires_in)) {
    expiresAt = started + answer.expires_in * 1000;
  } else if (typeof answer.expires === "string" && !Number.isNaN(Date.parse(answer.expires))) {
    expiresAt = Date.parse(answer.expires);
  } else {
    expiresAt = started + 600_000;
  }
  const session: Session = {
    accessToken,
    refreshToken: typeof answer.refresh_token === "string" && answer.refresh_token ? answer.refresh_token : null,
    expiresAt,
    scope: typeof answer.scope === "string" ? answer.scope : "",
  };
  // Not believed yet: the client checks it (and adds `user`) before the session is stored.
  if (typeof answer.id_token === "string" && answer.id_token) session.idToken = answer.id_token;
  return session;
}

function parseSession(raw: string | null): Session | null {
  if (!raw) return null;
  try {
    const value = JSON.parse(raw) as Partial<Session>;
    if (typeof value.accessToken !== "string" || typeof value.expiresAt !== "number") return null;
    const session: Session = {
      accessToken: value.accessToken,
      refreshToken: typeof value.refreshToken === "string" ? value.refreshToken : null,
      expiresAt: value.expiresAt,
      scope: typeof value.scope === "string" ? value.scope : "",
    };
    if (typeof value.idToken === "string") session.idToken = value.idToken;
    if (value.user && typeof value.user === "object" && typeof value.user.sub === "string") session.user = value.user;
    return session;
  } catch {
    return null;
  }
}

function notLoggedIn(message = "no user is logged in"): KeyfobError {
  return new KeyfobError(0, "not_logged_in", message);
}

function asKeyfobError(err: unknown): KeyfobError {
  return err instanceof KeyfobError ? err : networkError(err);
}

export class SessionManager {
  readonly #o: SessionManagerOptions;
  readonly #key: string;
  readonly #lockName: string;
  readonly #mutex = new LocalMutex();
  readonly #channel: ChannelLike | undefined;
  readonly #wakers = new Set<() => void>();
  /** Callers waiting for a token, told when a refresh attempt fails and will be retried. */
  readonly #attemptFailed = new Set<(error: KeyfobError) => void>();
  readonly #cleanups: Array<() => void> = [];
  /** The raw stored value last seen, to notice another tab's writes. */
  #raw: string | null = null;
  #session: Session | null = null;
  #inflight: Promise<Session> | null = null;
  /** While the refresh waits to retry: the error that made it wait. */
  #retrying: KeyfobError | null = null;
  #timer: unknown = undefined;
  #peerRefreshing: { from: string; until: number } | null = null;
  #closed = false;

  constructor(options: SessionManagerOptions) {
    this.#o = options;
    this.#key = `keyfob:session:${options.clientId}`;
    const scope = `${options.baseUrl}|${options.clientId}`;
    this.#lockName = `keyfob-refresh|${scope}`;
    if (options.channel) {
      const channel = options.channel(`keyfob|${scope}`);
      channel.addEventListener("message", (event) => this.#onMessage(event.data));
      this.#channel = channel;
    }
    this.#listenToBrowser();
    this.#sync(false);
  }

  /** The stored session, re-read from storage (another tab may have changed it), or null. */
  current(): Session | null {
    return this.#sync(true);
  }

  /** Stores the session a login produced. */
  start(session: Session): void {
    this.#write(session);
    this.#o.emit("session", { session, reason: "login" });
  }

  /** Forgets the session here and in the other tabs. */
  end(reason: SessionEndReason, error?: KeyfobError): void {
    const session = this.current();
    this.#write(null);
    if (session?.refreshToken) this.#post({ type: "ended", refreshToken: session.refreshToken });
    if (session) this.#o.emit("session-ended", error ? { reason, error } : { reason });
  }

  /**
   * An access token good for at least `minValidityMs`: the stored one, or a refreshed one. A token
   * inside the refresh-ahead window is still handed out while a refresh starts in the background.
   * When the refresh fails for a passing reason (no network), this rejects with that error and
   * the refresh keeps retrying in the background.
   */
  async accessToken(): Promise<string> {
    const session = this.current();
    if (!session) throw notLoggedIn();
    const left = session.expiresAt - this.#o.clock.now();
    if (left > this.#o.refreshAheadMs) return session.accessToken;
    if (left > this.#o.minValidityMs) {
      this.refresh({ ifDue: true }).catch(() => {});
      return session.accessToken;
    }
    return (await this.refreshForCall({ ifDue: true })).accessToken;
  }

  /**
   * `refresh()` for a call that waits on it, but not through its retries: the first failed
   * attempt is the caller's error, while the refresh goes on retrying and the session is kept.
   */
  refreshForCall(options: RefreshOptions = {}): Promise<Session> {
    if (this.#inflight && this.#retrying) return Promise.reject(this.#retrying);
    return new Promise<Session>((resolve, reject) => {
      const stop = () => this.#attemptFailed.delete(onFailure);
      const onFailure = (error: KeyfobError) => {
        stop();
        reject(error);
      };
      this.#attemptFailed.add(onFailure);
      this.refresh(options).then(
        (next) => {
          stop();
          resolve(next);
        },
        (error: unknown) => {
          stop();
          reject(error);
        },
      );
    });
  }

  /**
   * Refreshes the session, or picks up what another tab refreshed meanwhile. Concurrent calls
   * share one refresh.
   */
  refresh(options: RefreshOptions = {}): Promise<Session> {
    if (this.#inflight) return this.#inflight;
    const seen = this.current();
    if (!seen) return Promise.reject(notLoggedIn());
    const run = () => this.#refreshHoldingLock(seen, options);
    const locks = this.#o.locks;
    const flight = (locks ? locks.request(this.#lockName, run) : this.#mutex.run(run)).finally(() => {
      if (this.#inflight === flight) this.#inflight = null;
    });
    this.#inflight = flight;
    return flight;
  }

  /** Stops the timer and the listeners. */
  close(): void {
    this.#closed = true;
    this.#clearTimer();
    this.#wakeAll();
    for (const cleanup of this.#cleanups) cleanup();
    this.#channel?.close();
  }

  async #refreshHoldingLock(seen: Session, options: RefreshOptions): Promise<Session> {
    const { clock } = this.#o;
    const { failedAccessToken, ifDue } = options;
    let attempt = 0;
    for (;;) {
      // Another tab may have refreshed while this one waited for the lock or slept: never send a
      // refresh token that is no longer the newest.
      const session = this.current();
      if (!session) throw notLoggedIn("the session ended");
      if (session.refreshToken !== seen.refreshToken) return session;
      if (failedAccessToken !== undefined && session.accessToken !== failedAccessToken) return session;
      if (ifDue && session.expiresAt - clock.now() > this.#o.refreshAheadMs + this.#o.jitterMs) return session;
      const refreshToken = session.refreshToken;
      if (!refreshToken) throw notLoggedIn("the session has no refresh token");
      const peer = this.#peerRefreshing;
      if (!this.#o.locks && peer && peer.from === refreshToken && peer.until > clock.now()) {
        // No Web Locks: another tab said it is refreshing this token. Wait for its answer.
        await this.#pause(peer.until - clock.now());
        this.#peerRefreshing = null;
        continue;
      }
      if (!this.#o.locks) this.#post({ type: "refreshing", from: refreshToken });
      let error: KeyfobError;
      try {
        const answered = await requestTokens(this.#o, { grant_type: "refresh_token", refresh_token: refreshToken });
        const next = this.#o.accept ? await this.#o.accept(answered, session) : answered;
        if (this.#closed) return next;
        this.#write(next);
        this.#post({ type: "rotated", from: refreshToken, session: next });
        this.#o.emit("session", { session: next, reason: "refresh" });
        return next;
      } catch (err) {
        error = asKeyfobError(err);
      }
      if (error.code === "invalid_grant" || error.code === "invalid_client") {
        const now = this.current();
        if (now && now.refreshToken !== refreshToken) return now;
        this.end("invalid_grant", error);
        throw error;
      }
      if (error.code === "invalid_id_token") {
        // Keyfob answered, but with an ID token that fails its checks: believe nothing of it.
        this.end("invalid_id_token", error);
        throw error;
      }
      if (!error.transient || this.#closed) throw error;
      attempt += 1;
      const backoff = Math.min(this.#o.retryMaxMs, this.#o.retryInitialMs * 2 ** (attempt - 1));
      const retryInMs = Math.round(error.retryAfterMs ?? backoff * (0.5 + 0.5 * this.#o.random()));
      this.#o.emit("refresh-error", { error, attempt, retryInMs });
      for (const notify of [...this.#attemptFailed]) notify(error);
      this.#retrying = error;
      try {
        await this.#pause(retryInMs);
      } finally {
        this.#retrying = null;
      }
      if (this.#closed) throw error;
    }
  }

  /** Reads the storage; when another tab changed it, says so and reschedules. */
  #sync(emit: boolean): Session | null {
    let raw: string | null = null;
    try {
      raw = this.#o.storage.getItem(this.#key);
    } catch {
      raw = this.#raw;
    }
    if (raw === this.#raw) return this.#session;
    const before = this.#session;
    this.#raw = raw;
    this.#session = parseSession(raw);
    if (emit) {
      // Another tab logged in or rotated the session; other edits (a changed expiry) say nothing.
      const session = this.#session;
      if (session && session.refreshToken !== before?.refreshToken) {
        this.#o.emit("session", { session, reason: "peer" });
      } else if (!session && before) {
        this.#o.emit("session-ended", { reason: "elsewhere" });
      }
    }
    this.#wakeAll();
    this.#schedule();
    return this.#session;
  }

  #write(session: Session | null): void {
    const raw = session ? JSON.stringify(session) : null;
    try {
      if (raw === null) this.#o.storage.removeItem(this.#key);
      else this.#o.storage.setItem(this.#key, raw);
    } catch {
      // A full or disabled storage: the session still lives in memory.
    }
    this.#raw = raw;
    this.#session = session;
    this.#schedule();
  }

  #onMessage(data: unknown): void {
    if (!data || typeof data !== "object") return;
    const message = data as Message;
    const session = this.current();
    if (message.type === "rotated") {
      if (this.#peerRefreshing?.from === message.from) this.#peerRefreshing = null;
      const next = parseSession(JSON.stringify(message.session));
      if (next && session && session.refreshToken === message.from) {
        this.#write(next);
        this.#o.emit("session", { session: next, reason: "peer" });
      }
      this.#wakeAll();
    } else if (message.type === "ended") {
      if (session && session.refreshToken === message.refreshToken) {
        this.#write(null);
        this.#o.emit("session-ended", { reason: "elsewhere" });
      }
      this.#wakeAll();
    } else if (message.type === "refreshing") {
      this.#peerRefreshing = { from: message.from, until: this.#o.clock.now() + PEER_WAIT_MS };
    }
  }

  #post(message: Message): void {
    try {
      this.#channel?.postMessage(message);
    } catch {
      // A closed channel: the other tabs still see the storage.
    }
  }

  /** Sleeps, but wakes early when something changes (a message, storage, back online). */
  async #pause(ms: number): Promise<void> {
    const { done, wake } = sleep(this.#o.clock, Math.max(0, ms));
    this.#wakers.add(wake);
    try {
      await done;
    } finally {
      this.#wakers.delete(wake);
    }
  }

  #wakeAll(): void {
    for (const wake of [...this.#wakers]) wake();
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) this.#o.clock.clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Sets the timer for the next refresh ahead of expiry. */
  #schedule(): void {
    this.#clearTimer();
    const session = this.#session;
    if (this.#closed || !this.#o.autoRefresh || !session?.refreshToken) return;
    const due = session.expiresAt - this.#o.refreshAheadMs - this.#o.random() * this.#o.jitterMs;
    const delay = Math.max(0, due - this.#o.clock.now());
    this.#timer = this.#o.clock.setTimeout(() => {
      this.#timer = undefined;
      this.refresh({ ifDue: true }).catch(() => {});
    }, delay);
  }

  /** In a browser: another tab's storage writes, coming back online, the page shown again. */
  #listenToBrowser(): void {
    const g = globalThis as {
      addEventListener?: (type: string, listener: (event: { key?: string | null }) => void) => void;
      removeEventListener?: (type: string, listener: (event: { key?: string | null }) => void) => void;
      document?: { visibilityState?: string; addEventListener?: (t: string, l: () => void) => void; removeEventListener?: (t: string, l: () => void) => void };
      window?: unknown;
    };
    if (g.window === undefined || typeof g.addEventListener !== "function") return;
    const onStorage = (event: { key?: string | null }) => {
      if (event.key === this.#key || event.key === null) this.#sync(true);
    };
    const onOnline = () => this.#wakeAll();
    const onVisible = () => {
      if (g.document?.visibilityState === "visible") {
        // Timers of hidden pages are throttled: look again at what is due.
        this.#sync(true);
        this.#schedule();
      }
    };
    g.addEventListener("storage", onStorage);
    g.addEventListener("online", onOnline);
    g.document?.addEventListener?.("visibilitychange", onVisible);
    this.#cleanups.push(() => {
      g.removeEventListener?.("storage", onStorage);
      g.removeEventListener?.("online", onOnline);
      g.document?.removeEventListener?.("visibilitychange", onVisible);
    });
  }
}
