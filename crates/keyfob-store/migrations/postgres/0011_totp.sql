-- A second factor for owners and end users: a TOTP secret (RFC 6238) and single-use recovery
-- codes. `holder_kind` is `owner` or `user`, `holder_id` that owner's or user's id.
--
-- The secret is sealed with the master key (never stored in clear): it must be read back to
-- compute codes. `last_step` is the time step of the last code accepted; a code of the same or an
-- earlier step is refused (replay), by one conditional UPDATE so that two nodes cannot both
-- accept it. Recovery codes are kept only as SHA-256 hashes.
CREATE TABLE totp_factors (
    holder_kind  TEXT NOT NULL,
    holder_id    TEXT NOT NULL,
    secret       TEXT NOT NULL,
    last_step    BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (holder_kind, holder_id)
);

CREATE TABLE totp_recovery_codes (
    holder_kind  TEXT NOT NULL,
    holder_id    TEXT NOT NULL,
    code_hash    TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    used_at      BIGINT,
    PRIMARY KEY (holder_kind, holder_id, code_hash)
);

-- An account whose owners must all have a second factor before they may use the dashboard.
ALTER TABLE accounts ADD COLUMN mfa_required BOOLEAN NOT NULL DEFAULT FALSE;
