-- The audit log (SQLite). Append-only: the application has no way to change or delete an event,
-- and these triggers refuse it at the database too. Times are Unix milliseconds.
CREATE TABLE audit_events (
    id          TEXT PRIMARY KEY,
    account_id  TEXT,
    at          INTEGER NOT NULL,
    actor_kind  TEXT NOT NULL,
    actor_id    TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT,
    ip          TEXT,
    detail      TEXT
);
CREATE INDEX audit_events_account ON audit_events(account_id, at);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;

CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;
