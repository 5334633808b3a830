/** The account's records: `/api/{resource}`. */
import type { components } from "./openapi.js";

/** What every record carries besides its own fields. */
export interface RecordMeta {
  id: string;
  /** RFC 3339. */
  createdAt: string;
  /** RFC 3339. */
  updatedAt: string;
}

/** A stored record: your fields plus `id`, `createdAt`, `updatedAt`. */
export type StoredRecord<T> = T & RecordMeta;

type ListResponseBody = components["schemas"]["ListResponse"];

/** A page of records (`GET /api/{resource}`). */
export type ListResponse<T> = Omit<ListResponseBody, "docs"> & { docs: StoredRecord<T>[] };

/** A value a filter compares with (as text). */
export type FilterValue = string | number | boolean;

export interface FindOptions {
  /**
   * Equality filters, all of which must hold: `{ status: "open" }` or
   * `{ "dealer.city": { equals: "Lyon" } }`.
   */
  where?: Record<string, FilterValue | { equals: FilterValue }>;
  /** 1 to 100; Keyfob's default is 10. */
  limit?: number;
  /** From 1. */
  page?: number;
  /** A field name, `-` first for descending (`-price`); default newest first. */
  sort?: string;
}

/** The query string of a `find`. */
export function findQuery(options: FindOptions = {}): URLSearchParams {
  const query = new URLSearchParams();
  if (options.limit !== undefined) query.set("limit", String(options.limit));
  if (options.page !== undefined) query.set("page", String(options.page));
  if (options.sort !== undefined) query.set("sort", options.sort);
  for (const [field, condition] of Object.entries(options.where ?? {})) {
    const value = typeof condition === "object" && condition !== null ? condition.equals : condition;
    query.append(`where[${field}][equals]`, String(value));
  }
  return query;
}

/** Sends a request and decodes the JSON answer; throws a `KeyfobError` on an error status. */
export type Requester = <R>(method: string, path: string, body?: unknown) => Promise<R>;

/** The records of one resource, e.g. `keyfob.collection("deals")`. */
export class Collection<T extends object = Record<string, unknown>> {
  readonly name: string;
  readonly #request: Requester;
  readonly #path: string;

  constructor(name: string, request: Requester) {
    if (!/^[A-Za-z][A-Za-z0-9_-]{0,63}$/.test(name)) {
      throw new TypeError(`\`${name}\` is not a resource name: a letter, then up to 63 letters, digits, _ or -`);
    }
    this.name = name;
    this.#request = request;
    this.#path = `/api/${name}`;
  }

  /** `GET /api/{resource}`: a page of records (needs `{resource}.read`). */
  find(options: FindOptions = {}): Promise<ListResponse<T>> {
    const query = findQuery(options).toString();
    return this.#request("GET", query ? `${this.#path}?${query}` : this.#path);
  }

  /** `GET /api/{resource}/{id}`. */
  findOne(id: string): Promise<StoredRecord<T>> {
    return this.#request("GET", this.#recordPath(id));
  }

  /** `POST /api/{resource}` (needs `{resource}.write`). */
  create(doc: T): Promise<StoredRecord<T>> {
    return this.#request("POST", this.#path, doc);
  }

  /** `PATCH /api/{resource}/{id}`: a JSON merge patch (`null` removes a field). */
  update(id: string, patch: { [K in keyof T]?: T[K] | null }): Promise<StoredRecord<T>> {
    return this.#request("PATCH", this.#recordPath(id), patch);
  }

  /** `PUT /api/{resource}/{id}`: replaces the document. */
  replace(id: string, doc: T): Promise<StoredRecord<T>> {
    return this.#request("PUT", this.#recordPath(id), doc);
  }

  /** `DELETE /api/{resource}/{id}`. */
  async delete(id: string): Promise<void> {
    await this.#request<unknown>("DELETE", this.#recordPath(id));
  }

  #recordPath(id: string): string {
    return `${this.#path}/${encodeURIComponent(id)}`;
  }
}
