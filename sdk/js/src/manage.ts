/**
 * The management API: the account's API keys (their settings and usage, never a key), minted
 * tokens, applications, users and grants. Each area needs its permission by name (`keys.read`,
 * `apps.write`, …): a full-access API key holds them all, a wildcard (`*.read`) none.
 */
import type { components } from "./openapi.js";

type Schemas = components["schemas"];
export type KeyView = Schemas["KeyView"];
export type KeyUsage = Schemas["KeyUsage"];
export type UsageDay = Schemas["UsageDay"];
export type TokenView = Schemas["TokenView"];
export type TokenPage = Schemas["TokenPage"];
export type AppView = Schemas["AppView"];
export type AppPatch = Schemas["AppPatch"];
export type NewApp = Schemas["NewAppBody"];
export type CreatedApp = Schemas["CreatedAppView"];
export type NewSecret = Schemas["NewSecret"];
export type UserView = Schemas["UserView"];
export type GrantView = Schemas["GrantView"];

/** How a client sends a JSON request (the `Keyfob` client's `request`). */
export type Send = <R>(method: string, path: string, body?: unknown) => Promise<R>;

const segment = (id: string): string => encodeURIComponent(id);

/** `keyfob.keys`: needs `keys.read`. No call makes a key: keys are made on the dashboard or the CLI. */
export class Keys {
  readonly #send: Send;
  constructor(send: Send) {
    this.#send = send;
  }

  /** `GET /api/keys`: every key of the account, revoked and expired ones included. */
  async list(): Promise<KeyView[]> {
    return (await this.#send<Schemas["KeyList"]>("GET", "/api/keys")).docs;
  }

  /** `GET /api/keys/{id}/usage`: requests per UTC day (1 to 90 days, default 30), oldest first. */
  usage(id: string, options: { days?: number } = {}): Promise<KeyUsage> {
    const query = options.days === undefined ? "" : `?days=${encodeURIComponent(String(options.days))}`;
    return this.#send<KeyUsage>("GET", `/api/keys/${segment(id)}/usage${query}`);
  }
}

/** What `keyfob.tokens.list` filters on, as the dashboard's tokens page. */
export interface TokenListOptions {
  /** Only tokens minted by this API key (its id). */
  key?: string;
  /** Only tokens carrying exactly this permission. */
  permission?: string;
  status?: "live" | "revoked" | "expired";
  /** Only tokens whose name or metadata contains this text. */
  q?: string;
  /** 1 to 100; default 50. */
  limit?: number;
  /** From 1. */
  page?: number;
}

/** `keyfob.tokens`: `tokens.read` to list, `tokens.write` to revoke. */
export class Tokens {
  readonly #send: Send;
  constructor(send: Send) {
    this.#send = send;
  }

  /** `GET /api/tokens`: a page of the account's minted tokens, newest first. */
  list(options: TokenListOptions = {}): Promise<TokenPage> {
    const query = new URLSearchParams();
    for (const [name, value] of Object.entries(options)) {
      if (value !== undefined) query.set(name, String(value));
    }
    const text = query.toString();
    return this.#send<TokenPage>("GET", `/api/tokens${text ? `?${text}` : ""}`);
  }

  /** `DELETE /api/tokens/{jti}`: the token is refused from now on. */
  async revoke(jti: string): Promise<void> {
    await this.#send("DELETE", `/api/tokens/${segment(jti)}`);
  }

  /** `POST /api/keys/{id}/revoke-tokens`: every token the key minted so far; the key stays live. */
  async revokeAllOfKey(keyId: string): Promise<void> {
    await this.#send("POST", `/api/keys/${segment(keyId)}/revoke-tokens`);
  }
}

/** `keyfob.apps`: `apps.read` to list and show, `apps.write` for the rest. */
export class Apps {
  readonly #send: Send;
  constructor(send: Send) {
    this.#send = send;
  }

  /** `GET /api/apps`. */
  async list(): Promise<AppView[]> {
    return (await this.#send<Schemas["AppList"]>("GET", "/api/apps")).docs;
  }

  /** `GET /api/apps/{client_id}`. */
  get(clientId: string): Promise<AppView> {
    return this.#send<AppView>("GET", `/api/apps/${segment(clientId)}`);
  }

  /** `POST /api/apps`: registers an application; a confidential one's `client_secret` is shown this once. */
  create(app: NewApp): Promise<CreatedApp> {
    return this.#send<CreatedApp>("POST", "/api/apps", app);
  }

  /** `PATCH /api/apps/{client_id}`: fields left out stay; a list given replaces the list; `null` clears a session limit. */
  update(clientId: string, changes: AppPatch): Promise<AppView> {
    return this.#send<AppView>("PATCH", `/api/apps/${segment(clientId)}`, changes);
  }

  /** `POST /api/apps/{client_id}/rotate-secret`: the new secret, this once; the old one works for `overlap` (`0s` to `30d`). */
  rotateSecret(clientId: string, options: { overlap: string }): Promise<NewSecret> {
    return this.#send<NewSecret>("POST", `/api/apps/${segment(clientId)}/rotate-secret`, { overlap: options.overlap });
  }

  /** `POST /api/apps/{client_id}/disable`: refused everywhere, its sessions ended. */
  async disable(clientId: string): Promise<void> {
    await this.#send("POST", `/api/apps/${segment(clientId)}/disable`);
  }

  /** `POST /api/apps/{client_id}/enable`. */
  async enable(clientId: string): Promise<void> {
    await this.#send("POST", `/api/apps/${segment(clientId)}/enable`);
  }

  /** `DELETE /api/apps/{client_id}`: its sessions end, its grants are revoked, for good. */
  async delete(clientId: string): Promise<void> {
    await this.#send("DELETE", `/api/apps/${segment(clientId)}`);
  }
}

/** `keyfob.users`: the users with grants to the account's applications (`users.read`, `users.write`). */
export class Users {
  readonly #send: Send;
  constructor(send: Send) {
    this.#send = send;
  }

  /** `GET /api/users`. */
  async list(): Promise<UserView[]> {
    return (await this.#send<Schemas["UserList"]>("GET", "/api/users")).docs;
  }

  /** `GET /api/users/{user_id}`. */
  get(userId: string): Promise<UserView> {
    return this.#send<UserView>("GET", `/api/users/${segment(userId)}`);
  }

  /** `POST /api/users/{user_id}/remove`: revokes the user's grants to the account's applications; answers how many. */
  async removeFromAccount(userId: string): Promise<number> {
    const removed = await this.#send<Schemas["Removed"]>("POST", `/api/users/${segment(userId)}/remove`);
    return removed.grants_revoked;
  }
}

/** `keyfob.grants`: `grants.read` to list, `grants.write` to revoke. */
export class Grants {
  readonly #send: Send;
  constructor(send: Send) {
    this.#send = send;
  }

  /** `GET /api/grants`: the grants to the account's applications, revoked ones included. */
  async list(): Promise<GrantView[]> {
    return (await this.#send<Schemas["GrantList"]>("GET", "/api/grants")).docs;
  }

  /** `DELETE /api/grants/{id}`: the grant is revoked and its sessions end. */
  async revoke(id: string): Promise<void> {
    await this.#send("DELETE", `/api/grants/${segment(id)}`);
  }
}
