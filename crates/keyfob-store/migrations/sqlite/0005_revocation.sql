-- Revocation by key and retirement of signing keys (SQLite). Times are Unix milliseconds.

-- Tokens an API key minted at or before this instant are refused ("revoke all tokens of this
-- key"); the key itself stays live. A revoked key's tokens are all refused whatever this says.
ALTER TABLE api_keys ADD COLUMN tokens_revoked_before INTEGER;

-- A signing key retired by the operator (compromised): it left the JWKS then, and every token it
-- signed is refused.
ALTER TABLE signing_keys ADD COLUMN revoked_at INTEGER;

-- Listing and filtering an account's tokens by the key that minted them.
CREATE INDEX tokens_key ON tokens(api_key_id, issued_at);
