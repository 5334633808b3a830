-- Tokens in the URL fragment (`response_type=token`) only for applications that turn it on.
ALTER TABLE apps ADD COLUMN allow_fragment BOOLEAN NOT NULL DEFAULT FALSE;
