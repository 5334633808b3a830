-- API keys beyond full access: a permission list (NULL: the whole account, as the guide's keys),
-- an expiry (also the end of a rolled key's overlap), a rate limit of `rate_limit_requests` per
-- `rate_limit_window_secs`, the key it was rolled from, and the address of its last use.
ALTER TABLE api_keys ADD COLUMN permissions TEXT;
ALTER TABLE api_keys ADD COLUMN expires_at INTEGER;
ALTER TABLE api_keys ADD COLUMN rate_limit_requests INTEGER;
ALTER TABLE api_keys ADD COLUMN rate_limit_window_secs INTEGER;
ALTER TABLE api_keys ADD COLUMN rolled_from TEXT;
ALTER TABLE api_keys ADD COLUMN last_used_ip TEXT;

-- A minted token's optional name and small metadata object (JSON text), shown and searched on
-- the tokens page and returned by introspection.
ALTER TABLE tokens ADD COLUMN name TEXT;
ALTER TABLE tokens ADD COLUMN metadata TEXT;

-- Requests per API key and UTC day (`day`: days since 1970-01-01), counted in memory and added
-- here in batches. `via` is `key` for requests made with the key itself and `token` for
-- requests made with tokens it minted. `ok` counts 1xx-3xx answers, `client_errors` 4xx other
-- than 429, `limited` 429, `server_errors` 5xx.
CREATE TABLE api_key_usage (
    key_id         TEXT NOT NULL,
    day            INTEGER NOT NULL,
    via            TEXT NOT NULL,
    ok             INTEGER NOT NULL DEFAULT 0,
    client_errors  INTEGER NOT NULL DEFAULT 0,
    limited        INTEGER NOT NULL DEFAULT 0,
    server_errors  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, day, via)
);
