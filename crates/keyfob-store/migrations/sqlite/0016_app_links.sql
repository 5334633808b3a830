-- What the consent page shows of an application besides its name: its logo, its home page and its
-- privacy policy (HTTPS addresses, or HTTP on localhost; NULL: none registered).
ALTER TABLE apps ADD COLUMN logo_uri TEXT;
ALTER TABLE apps ADD COLUMN homepage_uri TEXT;
ALTER TABLE apps ADD COLUMN policy_uri TEXT;
