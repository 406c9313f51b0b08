-- The event table is append-only for everyone, whatever their grants: UPDATE, DELETE and TRUNCATE are
-- refused by triggers. (A superuser can still disable a trigger; the hash chain makes that detectable.)
SET ROLE sandbox_owner;

CREATE OR REPLACE FUNCTION sandbox.sbx_refuse_event_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'sandbox.mt_events is append-only: % is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege', HINT = 'Recorded events can never be changed or removed.';
END
$$;

CREATE TRIGGER sbx_events_no_update_delete BEFORE UPDATE OR DELETE ON sandbox.mt_events
    FOR EACH ROW EXECUTE FUNCTION sandbox.sbx_refuse_event_change();
CREATE TRIGGER sbx_events_no_truncate BEFORE TRUNCATE ON sandbox.mt_events
    FOR EACH STATEMENT EXECUTE FUNCTION sandbox.sbx_refuse_event_change();

-- Deleting a stream would cascade into its events; streams are append-only in the same way.
CREATE OR REPLACE FUNCTION sandbox.sbx_refuse_stream_removal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'sandbox.mt_streams rows can never be removed: % is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER sbx_streams_no_delete BEFORE DELETE ON sandbox.mt_streams
    FOR EACH ROW EXECUTE FUNCTION sandbox.sbx_refuse_stream_removal();
CREATE TRIGGER sbx_streams_no_truncate BEFORE TRUNCATE ON sandbox.mt_streams
    FOR EACH STATEMENT EXECUTE FUNCTION sandbox.sbx_refuse_stream_removal();

-- Audit queries by type and by run.
CREATE INDEX IF NOT EXISTS sbx_events_type ON sandbox.mt_events (type, seq_id);

RESET ROLE;
REVOKE DELETE, TRUNCATE ON sandbox.mt_streams FROM sandbox_app;
