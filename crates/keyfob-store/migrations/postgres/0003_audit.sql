-- The audit log (PostgreSQL). Append-only: the application has no way to change or delete an
-- event, and this trigger refuses it at the database too. Times are Unix milliseconds.
CREATE TABLE audit_events (
    id          TEXT PRIMARY KEY,
    account_id  TEXT,
    at          BIGINT NOT NULL,
    actor_kind  TEXT NOT NULL,
    actor_id    TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT,
    ip          TEXT,
    detail      TEXT
);
CREATE INDEX audit_events_account ON audit_events(account_id, at);

CREATE FUNCTION audit_events_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change();
