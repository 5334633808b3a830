-- Passkeys (WebAuthn credentials) of owners and end users. `holder_kind` is `owner` or `user`,
-- `holder_id` that owner's or user's id; `credential_id` is the authenticator's credential id
-- (base64url, unpadded), unique across the server.
--
-- `public_key` is the credential's static state (its public key and extensions) and
-- `dynamic_state` its dynamic state (user verification, backup, signature counter, attachment),
-- both base64 of the relying-party library's binary encoding; `sign_count` repeats the
-- counter so that it can be checked and advanced by one conditional UPDATE: of two sign-ins with
-- the same counter, only one is accepted.
CREATE TABLE passkeys (
    credential_id  TEXT PRIMARY KEY,
    holder_kind    TEXT NOT NULL,
    holder_id      TEXT NOT NULL,
    name           TEXT NOT NULL,
    public_key     TEXT NOT NULL,
    dynamic_state  TEXT NOT NULL,
    sign_count     BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    last_used_at   BIGINT
);

CREATE INDEX passkeys_holder ON passkeys (holder_kind, holder_id);
