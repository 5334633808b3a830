// Test doubles for the unit tests: a fake clock, a lock manager and BroadcastChannel shared by
// several SDK instances (tabs), and a model of Keyfob's token endpoint with its rotation, grace
// window and reuse detection.

/** Lets every pending promise callback and immediate run. */
export async function settle() {
  for (let i = 0; i < 10; i += 1) await new Promise((resolve) => setImmediate(resolve));
}

/** Time that moves only when the test says so. */
export class FakeClock {
  t = Date.UTC(2027, 0, 1);
  #timers = [];
  #seq = 0;

  now() {
    return this.t;
  }

  setTimeout(callback, ms) {
    const id = ++this.#seq;
    this.#timers.push({ id, at: this.t + Math.max(0, ms), callback });
    return id;
  }

  clearTimeout(id) {
    this.#timers = this.#timers.filter((timer) => timer.id !== id);
  }

  /** How many timers are waiting. */
  get pending() {
    return this.#timers.length;
  }

  /** Moves time forward by `ms`, firing the timers that fall due, in order. */
  async advance(ms) {
    const end = this.t + ms;
    for (;;) {
      await settle();
      const due = this.#timers.filter((timer) => timer.at <= end).sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!due) break;
      this.#timers = this.#timers.filter((timer) => timer !== due);
      this.t = Math.max(this.t, due.at);
      due.callback();
    }
    this.t = end;
    await settle();
  }
}

/** `navigator.locks` shared by several tabs: one holder per name, the others queue. */
export class FakeLocks {
  #tails = new Map();
  requests = 0;

  async request(name, callback) {
    this.requests += 1;
    const previous = this.#tails.get(name) ?? Promise.resolve();
    let release;
    const mine = new Promise((resolve) => (release = resolve));
    this.#tails.set(name, previous.then(() => mine));
    await previous;
    try {
      return await callback({ name });
    } finally {
      release();
    }
  }
}

/** BroadcastChannels of several tabs: a message reaches every other channel of the same name. */
export class FakeChannels {
  #open = new Set();
  sent = [];

  factory = (name) => {
    const listeners = [];
    const hub = this;
    const channel = {
      name,
      postMessage(message) {
        hub.sent.push(message);
        const copy = structuredClone(message);
        for (const other of hub.#open) {
          if (other !== channel && other.name === name) {
            setImmediate(() => other.deliver(copy));
          }
        }
      },
      addEventListener(type, listener) {
        if (type === "message") listeners.push(listener);
      },
      close() {
        hub.#open.delete(channel);
      },
      deliver(data) {
        for (const listener of listeners) listener({ data });
      },
    };
    this.#open.add(channel);
    return channel;
  };
}

function json(status, body, headers = {}) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json", ...headers },
  });
}

/**
 * Keyfob's `/auth/token` and `/auth/revoke` as the SDK sees them: refresh tokens rotate on every
 * use; the same token again within `graceMs` answers the same new pair; after that it is reuse and
 * the session ends. Also `/api/*`, which accepts the session's live access tokens.
 */
export class FakeKeyfob {
  base = "https://keyfob.test";
  graceMs = 30_000;
  /** Throw like a failed fetch (offline). */
  offline = false;
  /** Answer each token request after this long (on the fake clock); other requests at once. */
  latencyMs = 0;
  /** Answers to give the next token requests instead of the real one: `{ status, body, headers }`. */
  failures = [];
  refreshes = 0;
  reuses = 0;
  requests = [];
  #n = 0;
  #refresh = new Map();
  #access = new Set();
  #families = new Map();

  constructor(clock) {
    this.clock = clock;
  }

  /** A new session (as a login would start): a token response. */
  login() {
    const family = { id: `sid-${++this.#n}`, ended: false };
    this.#families.set(family.id, family);
    return this.#issue(family);
  }

  /** A session in the SDK's stored form, from a fresh login. */
  loginSession() {
    const pair = this.login();
    return {
      accessToken: pair.access_token,
      refreshToken: pair.refresh_token,
      expiresAt: this.clock.now() + pair.expires_in * 1000,
      scope: pair.scope,
    };
  }

  isLive(refreshToken) {
    const row = this.#refresh.get(refreshToken);
    return Boolean(row && !row.usedAt && !row.family.ended);
  }

  #issue(family) {
    const n = ++this.#n;
    const pair = {
      access_token: `at-${n}`,
      token_type: "Bearer",
      expires_in: 600,
      refresh_token: `kfr_${n}`,
      scope: "deals.read deals.write",
      token: `at-${n}`,
      expires: new Date(this.clock.now() + 600_000).toISOString(),
    };
    this.#refresh.set(pair.refresh_token, { family, usedAt: null, next: null });
    this.#access.add(pair.access_token);
    family.access = pair.access_token;
    return pair;
  }

  fetch = async (input, init = {}) => {
    const url = new URL(String(input));
    this.requests.push({ path: url.pathname, init });
    if (this.offline) throw new TypeError("fetch failed");
    if (url.pathname === "/auth/token") {
      if (this.latencyMs) await new Promise((resolve) => this.clock.setTimeout(resolve, this.latencyMs));
      if (this.offline) throw new TypeError("fetch failed");
      return this.#token(new URLSearchParams(init.body));
    }
    if (url.pathname === "/auth/revoke") {
      const row = this.#refresh.get(new URLSearchParams(init.body).get("token"));
      if (row) row.family.ended = true;
      return new Response(null, { status: 200 });
    }
    if (url.pathname.startsWith("/api/")) {
      const credential = new Headers(init.headers).get("authorization")?.replace(/^Bearer /, "");
      if (!this.#access.has(credential)) return json(401, { error: "unauthorized", message: "the token is not valid" });
      return json(200, { docs: [], totalDocs: 0, limit: 10, page: 1, totalPages: 0, hasNextPage: false });
    }
    return json(404, { error: "not_found", message: "no such endpoint" });
  };

  /** Makes an access token unknown (revoked), so that the API answers 401. */
  revokeAccess(token) {
    this.#access.delete(token);
  }

  #token(form) {
    const failure = this.failures.shift();
    if (failure) return json(failure.status, failure.body, failure.headers);
    const invalid = (description) => json(400, { error: "invalid_grant", error_description: description });
    const row = this.#refresh.get(form.get("refresh_token"));
    if (!row) return invalid("the refresh token is unknown");
    if (row.family.ended) return invalid("the session has ended");
    const now = this.clock.now();
    if (!row.usedAt) {
      row.usedAt = now;
      this.refreshes += 1;
      row.next = this.#issue(row.family);
      return json(200, row.next);
    }
    if (now - row.usedAt <= this.graceMs) return json(200, row.next);
    this.reuses += 1;
    row.family.ended = true;
    return invalid("the refresh token was already used");
  }
}
