-- Where an application may send the browser after logging the user out (OpenID Connect
-- RP-Initiated Logout), matched exactly: a JSON list, as `redirect_uris` is.
ALTER TABLE apps ADD COLUMN post_logout_redirect_uris TEXT NOT NULL DEFAULT '[]';
