-- The vault (postgres): each account's data key (random 256 bits, sealed with the master key, the
-- account id bound as associated data) and its list of sensitive field names (a JSON array).
-- Sensitive values themselves live encrypted inside the records' documents.
CREATE TABLE account_vaults (
    account_id        TEXT PRIMARY KEY REFERENCES accounts(id),
    data_key          TEXT NOT NULL,
    sensitive_fields  TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);
