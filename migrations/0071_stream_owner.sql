-- Audit queries that stay flat as the record grows. The rule is unchanged: a stream belongs to the tenant (and
-- subject) of its first event's caller. That owner never changes once the first event is written, so it is
-- stored next to every event by a trigger: one row per event (sequence, owner, type), insert-only and derivable
-- from the events alone (verification may recompute and compare it). Paged queries then walk the composite
-- indexes (tenant, seq_id), (tenant, type, seq_id), (tenant, subject, seq_id) in sequence order and stop after a
-- page, instead of walking every stream of the tenant and sorting.
SET ROLE sandbox_owner;

CREATE TABLE IF NOT EXISTS sandbox.audit_event_owner (
    seq_id    bigint NOT NULL PRIMARY KEY,
    stream_id uuid   NOT NULL,
    tenant    text   NULL,
    subject   text   NULL,
    type      text   NOT NULL
);
CREATE INDEX IF NOT EXISTS sbx_event_owner_tenant ON sandbox.audit_event_owner (tenant, seq_id);
CREATE INDEX IF NOT EXISTS sbx_event_owner_tenant_type ON sandbox.audit_event_owner (tenant, type, seq_id);
CREATE INDEX IF NOT EXISTS sbx_event_owner_tenant_subject ON sandbox.audit_event_owner (tenant, subject, seq_id);
-- Runs by subject: first events of a tenant and subject, in sequence order.
CREATE INDEX IF NOT EXISTS sbx_events_first_caller_subject
    ON sandbox.mt_events ((data -> 'caller' ->> 'tenant'), (data -> 'caller' ->> 'subject'), seq_id) WHERE version = 1;

-- AFTER ROW: sees the stream's first event even when it came in the same statement (a COPY, a batch).
CREATE OR REPLACE FUNCTION sandbox.sbx_record_event_owner() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    first jsonb;
BEGIN
    IF NEW.version = 1 THEN
        first := NEW.data;
    ELSE
        SELECT f.data INTO first FROM sandbox.mt_events f WHERE f.stream_id = NEW.stream_id AND f.version = 1;
    END IF;
    INSERT INTO sandbox.audit_event_owner (seq_id, stream_id, tenant, subject, type)
    VALUES (NEW.seq_id, NEW.stream_id, first -> 'caller' ->> 'tenant', first -> 'caller' ->> 'subject', NEW.type);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS sbx_events_record_owner ON sandbox.mt_events;
CREATE TRIGGER sbx_events_record_owner AFTER INSERT ON sandbox.mt_events
    FOR EACH ROW EXECUTE FUNCTION sandbox.sbx_record_event_owner();

-- Events recorded before this migration (idempotent: rows already there are kept).
INSERT INTO sandbox.audit_event_owner (seq_id, stream_id, tenant, subject, type)
SELECT e.seq_id, e.stream_id, f.data -> 'caller' ->> 'tenant', f.data -> 'caller' ->> 'subject', e.type
FROM sandbox.mt_events e JOIN sandbox.mt_events f ON f.stream_id = e.stream_id AND f.version = 1
ON CONFLICT (seq_id) DO NOTHING;

CREATE OR REPLACE FUNCTION sandbox.sbx_refuse_owner_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'sandbox.audit_event_owner is append-only: % is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege', HINT = 'A stream''s owner is its first event''s caller; it never changes.';
END
$$;
DROP TRIGGER IF EXISTS sbx_event_owner_no_update_delete ON sandbox.audit_event_owner;
CREATE TRIGGER sbx_event_owner_no_update_delete BEFORE UPDATE OR DELETE ON sandbox.audit_event_owner
    FOR EACH ROW EXECUTE FUNCTION sandbox.sbx_refuse_owner_change();
DROP TRIGGER IF EXISTS sbx_event_owner_no_truncate ON sandbox.audit_event_owner;
CREATE TRIGGER sbx_event_owner_no_truncate BEFORE TRUNCATE ON sandbox.audit_event_owner
    FOR EACH STATEMENT EXECUTE FUNCTION sandbox.sbx_refuse_owner_change();

RESET ROLE;

REVOKE ALL ON sandbox.audit_event_owner FROM sandbox_app, sandbox_auditor;
GRANT SELECT, INSERT ON sandbox.audit_event_owner TO sandbox_app;
GRANT SELECT ON sandbox.audit_event_owner TO sandbox_auditor;
