-- Applications and end users after creation.
--
-- A rotated client secret: the one it replaced keeps working until `previous_secret_expires_at`
-- (the overlap the operator chose), then only the new one does. Both are kept as hashes only.
ALTER TABLE apps ADD COLUMN previous_secret_hash TEXT;
ALTER TABLE apps ADD COLUMN previous_secret_expires_at INTEGER;
-- A disabled application has `revoked_at` set (enabling it clears it again). A deleted one also
-- has `deleted_at`: its row stays, with no secret, so that its `client_id` is never issued
-- again and old grants and audit events still name it; it is never shown or accepted again.
ALTER TABLE apps ADD COLUMN deleted_at INTEGER;
-- A disabled end user cannot log in and has no session left; enabling clears it.
ALTER TABLE users ADD COLUMN disabled_at INTEGER;
