-- User sessions (PostgreSQL): applications, end users, their grants, authorization codes and
-- rotating refresh tokens. Times are Unix milliseconds.
CREATE TABLE apps (
    client_id               TEXT PRIMARY KEY,
    account_id              TEXT NOT NULL REFERENCES accounts(id),
    name                    TEXT NOT NULL,
    public                  BIGINT NOT NULL,
    client_secret_hash      TEXT,
    redirect_uris           TEXT NOT NULL,
    origins                 TEXT NOT NULL,
    max_permissions         TEXT NOT NULL,
    refresh_idle_secs       BIGINT,
    refresh_absolute_secs   BIGINT,
    created_at              BIGINT NOT NULL,
    revoked_at              BIGINT
);
CREATE INDEX apps_account ON apps(account_id, created_at);

CREATE TABLE users (
    id                   TEXT PRIMARY KEY,
    email                TEXT NOT NULL UNIQUE,
    password_hash        TEXT NOT NULL,
    created_at           BIGINT NOT NULL,
    password_changed_at  BIGINT NOT NULL
);

CREATE TABLE grants (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id),
    client_id    TEXT NOT NULL REFERENCES apps(client_id),
    account_id   TEXT NOT NULL REFERENCES accounts(id),
    permissions  TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);
CREATE UNIQUE INDEX grants_user_client ON grants(user_id, client_id);
CREATE INDEX grants_account ON grants(account_id);

CREATE TABLE auth_codes (
    code_hash       TEXT PRIMARY KEY,
    client_id       TEXT NOT NULL REFERENCES apps(client_id),
    user_id         TEXT NOT NULL REFERENCES users(id),
    grant_id        TEXT NOT NULL REFERENCES grants(id),
    redirect_uri    TEXT NOT NULL,
    permissions     TEXT NOT NULL,
    code_challenge  TEXT,
    -- The session the exchange started, so a replayed code can end it.
    family_id       TEXT,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    used_at         BIGINT
);

-- A family is one login session of one user in one app: every refresh token rotated from the
-- first shares it, and access tokens carry its id as `sid`.
CREATE TABLE refresh_families (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id),
    client_id     TEXT NOT NULL REFERENCES apps(client_id),
    grant_id      TEXT NOT NULL REFERENCES grants(id),
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT NOT NULL,
    revoked_at    BIGINT
);
CREATE INDEX refresh_families_user ON refresh_families(user_id);
CREATE INDEX refresh_families_grant ON refresh_families(grant_id);
CREATE INDEX refresh_families_revoked ON refresh_families(revoked_at);

CREATE TABLE refresh_tokens (
    token_hash   TEXT PRIMARY KEY,
    family_id    TEXT NOT NULL REFERENCES refresh_families(id),
    permissions  TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    used_at      BIGINT,
    -- The pair issued when this token was used, sealed with the master key, so a retry within
    -- the grace window gets the same answer. Cleared once the window has passed.
    next_sealed  TEXT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens(family_id);

CREATE TABLE user_sessions (
    id_hash     TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id),
    csrf_token  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
