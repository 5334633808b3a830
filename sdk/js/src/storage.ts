/**
 * Where a session is kept: anything shaped like the Web Storage API. The SDK stores one JSON value
 * per application under `keyfob:session:<clientId>`.
 */
export interface KeyValueStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** The default: the session lives as long as the page (or the Node process). */
export class MemoryStorage implements KeyValueStorage {
  readonly #items = new Map<string, string>();

  getItem(key: string): string | null {
    return this.#items.get(key) ?? null;
  }

  setItem(key: string, value: string): void {
    this.#items.set(key, value);
  }

  removeItem(key: string): void {
    this.#items.delete(key);
  }
}

/**
 * `"memory"` (default), `"sessionStorage"` (survives reloads, one tab), `"localStorage"` (shared
 * by every tab of the origin, survives restarts), or your own {@link KeyValueStorage}.
 */
export type StorageOption = "memory" | "sessionStorage" | "localStorage" | KeyValueStorage;

export function resolveStorage(option: StorageOption | undefined): KeyValueStorage {
  if (option === undefined || option === "memory") return new MemoryStorage();
  if (option === "sessionStorage" || option === "localStorage") {
    const storage = (globalThis as Record<string, unknown>)[option] as KeyValueStorage | undefined;
    if (!storage) throw new TypeError(`${option} is not available here; pass "memory" or your own storage`);
    return storage;
  }
  return option;
}

/** The storage for the login transaction (PKCE verifier, state): it must outlive the redirect. */
export function transactionStorage(sessionStorage: KeyValueStorage): KeyValueStorage {
  const browser = (globalThis as Record<string, unknown>).sessionStorage as KeyValueStorage | undefined;
  return browser ?? sessionStorage;
}
