-- Email: verified addresses, the one-time links sent by mail (verification, password reset,
-- change of email), an account's rule on unverified users, and what an owner sees of their own
-- dashboard logins.
ALTER TABLE owners ADD COLUMN email_verified_at INTEGER;
ALTER TABLE users ADD COLUMN email_verified_at INTEGER;
-- Whether end users whose email is not verified may sign in to the account's applications.
ALTER TABLE accounts ADD COLUMN require_verified_users INTEGER NOT NULL DEFAULT 0;
ALTER TABLE dashboard_sessions ADD COLUMN ip TEXT;
ALTER TABLE dashboard_sessions ADD COLUMN user_agent TEXT;

-- A link sent by mail, kept as the SHA-256 of its token. `purpose` is verify, reset or
-- change_email; `subject_kind` owner or user; `email` the address it was sent to (for
-- change_email, the new address); `next` where the person goes on afterwards (an end user's
-- authorization request). Used once: `used_at` is set by the statement that uses it.
CREATE TABLE email_tokens (
    token_hash    TEXT PRIMARY KEY,
    purpose       TEXT NOT NULL,
    subject_kind  TEXT NOT NULL,
    subject_id    TEXT NOT NULL,
    email         TEXT NOT NULL,
    next          TEXT,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    used_at       INTEGER
);
CREATE INDEX email_tokens_subject ON email_tokens(subject_id, purpose);
CREATE INDEX email_tokens_expiry ON email_tokens(expires_at);
