/**
 * Every failure the SDK reports is a {@link KeyfobError}: an HTTP error from Keyfob (with its
 * status and machine code), or one of the SDK's own codes (`network_error`, `not_logged_in`, …)
 * with status 0.
 */
export class KeyfobError extends Error {
  /** The HTTP status, or 0 when Keyfob did not answer (network failure, or a check in the SDK). */
  readonly status: number;
  /**
   * The machine code: Keyfob's `error` (`unauthorized`, `forbidden`, `invalid_permission`, …),
   * an OAuth error (`invalid_grant`, `invalid_client`, …), or one of the SDK's:
   * `network_error`, `not_logged_in`, `invalid_state`, `invalid_issuer`, `invalid_response`,
   * `invalid_token`, `invalid_id_token`.
   */
  readonly code: string;
  /** The parsed response body, when there was one. */
  readonly body?: unknown;
  /** What `Retry-After` asked for, in milliseconds (429, 503). */
  readonly retryAfterMs?: number;

  constructor(
    status: number,
    code: string,
    message: string,
    options: { body?: unknown; cause?: unknown; retryAfterMs?: number } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "KeyfobError";
    this.status = status;
    this.code = code;
    if (options.body !== undefined) this.body = options.body;
    if (options.retryAfterMs !== undefined) this.retryAfterMs = options.retryAfterMs;
  }

  /** True for failures worth retrying: no answer, 408, 429 and 5xx. */
  get transient(): boolean {
    if (this.status === 0) return this.code === "network_error";
    return this.status === 408 || this.status === 429 || this.status >= 500;
  }
}

/**
 * Builds the error for a response that is not OK. Reads Keyfob's `{"error", "message"}` or the
 * OAuth endpoints' `{"error", "error_description"}`.
 */
export async function errorFromResponse(response: Response): Promise<KeyfobError> {
  let body: unknown;
  let text = "";
  try {
    text = await response.text();
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = text || undefined;
  }
  let code = `http_${response.status}`;
  let message = `Keyfob answered ${response.status}${response.statusText ? ` ${response.statusText}` : ""}`;
  if (body && typeof body === "object") {
    const fields = body as Record<string, unknown>;
    if (typeof fields.error === "string") code = fields.error;
    const detail = fields.message ?? fields.error_description;
    if (typeof detail === "string" && detail) message = detail;
  }
  if (code === `http_${response.status}`) {
    // RFC 6750 §3: a protected resource (userinfo) may say what is wrong in the challenge only.
    const challenge = bearerChallenge(response.headers.get("www-authenticate"));
    if (challenge.error) code = challenge.error;
    if (challenge.error_description) message = challenge.error_description;
  }
  const retryAfter = response.headers.get("retry-after");
  const retryAfterMs = retryAfter === null ? undefined : parseRetryAfter(retryAfter);
  return new KeyfobError(response.status, code, message, { body, retryAfterMs });
}

/** The parameters of a `Bearer` challenge in `WWW-Authenticate` (`error`, `error_description`, …). */
export function bearerChallenge(header: string | null): Record<string, string> {
  const params: Record<string, string> = {};
  const bearer = header?.match(/(?:^|,)\s*Bearer\s+(.*)$/i)?.[1];
  if (!bearer) return params;
  for (const match of bearer.matchAll(/([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))/g)) {
    const name = match[1]!;
    if (!(name in params)) params[name] = match[2]?.replace(/\\(.)/g, "$1") ?? match[3] ?? "";
  }
  return params;
}

/** `Retry-After` as milliseconds (seconds or an HTTP date); undefined when unreadable. */
export function parseRetryAfter(value: string): number | undefined {
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

/** Wraps a failed `fetch` (DNS, refused connection, offline, CORS) as `network_error`. */
export function networkError(cause: unknown): KeyfobError {
  const detail = cause instanceof Error ? cause.message : String(cause);
  return new KeyfobError(0, "network_error", `could not reach Keyfob: ${detail}`, { cause });
}
