-- Keyfob core schema (PostgreSQL). Times are Unix milliseconds; ids are UUID text.
CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE owners (
    id             TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL REFERENCES accounts(id),
    email          TEXT NOT NULL UNIQUE,
    password_hash  TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);
CREATE INDEX owners_account ON owners(account_id);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts(id),
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    key_hash      TEXT NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT,
    revoked_at    BIGINT
);
CREATE INDEX api_keys_account ON api_keys(account_id, created_at);

CREATE TABLE tokens (
    jti          TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts(id),
    api_key_id   TEXT,
    subject      TEXT NOT NULL,
    permissions  TEXT NOT NULL,
    issued_at    BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);
CREATE INDEX tokens_account ON tokens(account_id, issued_at);
CREATE INDEX tokens_revoked ON tokens(revoked_at, expires_at);

CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY,
    alg           TEXT NOT NULL,
    private_key   TEXT NOT NULL,
    public_jwk    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    activates_at  BIGINT NOT NULL,
    retires_at    BIGINT,
    expires_at    BIGINT
);

CREATE TABLE records (
    id             TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL REFERENCES accounts(id),
    resource       TEXT NOT NULL,
    owner_user_id  TEXT,
    doc            JSONB NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX records_list ON records(account_id, resource, created_at);

CREATE TABLE dashboard_sessions (
    id_hash     TEXT PRIMARY KEY,
    owner_id    TEXT NOT NULL REFERENCES owners(id),
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    csrf_token  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

CREATE TABLE changes (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX changes_created ON changes(created_at);

CREATE TABLE settings (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
