-- Each minted token's last use and its requests per UTC day (`day`: days since 1970-01-01),
-- counted in memory and written in batches like an API key's. `ok` counts 1xx-3xx answers,
-- `client_errors` 4xx other than 429, `limited` 429, `server_errors` 5xx.
ALTER TABLE tokens ADD COLUMN last_used_at INTEGER;

CREATE TABLE token_usage (
    jti            TEXT NOT NULL,
    day            INTEGER NOT NULL,
    ok             INTEGER NOT NULL DEFAULT 0,
    client_errors  INTEGER NOT NULL DEFAULT 0,
    limited        INTEGER NOT NULL DEFAULT 0,
    server_errors  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (jti, day)
);
