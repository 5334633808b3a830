-- Each minted token's last use and its requests per UTC day (`day`: days since 1970-01-01),
-- counted in memory and written in batches like an API key's. `ok` counts 1xx-3xx answers,
-- `client_errors` 4xx other than 429, `limited` 429, `server_errors` 5xx.
ALTER TABLE tokens ADD COLUMN last_used_at BIGINT;

CREATE TABLE token_usage (
    jti            TEXT NOT NULL,
    day            BIGINT NOT NULL,
    ok             BIGINT NOT NULL DEFAULT 0,
    client_errors  BIGINT NOT NULL DEFAULT 0,
    limited        BIGINT NOT NULL DEFAULT 0,
    server_errors  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (jti, day)
);
