-- OpenID Connect: the identity scopes (`openid`, `profile`, `email`, space-separated) a grant,
-- an authorization code and a session hold beside their permissions; the code's `nonce`; and the
-- time the user logged in (Unix milliseconds), for the id_token's `auth_time`.
ALTER TABLE grants ADD COLUMN identity TEXT NOT NULL DEFAULT '';
ALTER TABLE auth_codes ADD COLUMN identity TEXT NOT NULL DEFAULT '';
ALTER TABLE auth_codes ADD COLUMN nonce TEXT;
ALTER TABLE auth_codes ADD COLUMN auth_time INTEGER;
ALTER TABLE refresh_families ADD COLUMN identity TEXT NOT NULL DEFAULT '';
ALTER TABLE refresh_families ADD COLUMN auth_time INTEGER;
