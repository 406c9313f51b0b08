-- The embedded fast path (a node that records a run and has a free slot inserts its queue row already claimed) checks the
-- tenant's ceiling across the cluster as sbx_claim_runs does: under the tenant's transaction-scoped advisory lock, counting
-- claimed rows. Called inside the write-ahead commit, before the claimed row is inserted; at the ceiling it raises SBX01
-- and the whole commit rolls back, so the node records the run again as queued for any executor.
CREATE OR REPLACE FUNCTION sandbox.sbx_room_on_enqueue(run_tenant text, max_per_tenant integer) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('sbx_run_queue:' || run_tenant));
    IF (SELECT count(*) FROM sandbox.run_queue WHERE tenant = run_tenant AND state = 'claimed') >= max_per_tenant THEN
        RAISE EXCEPTION 'tenant % already runs % sandboxes across the cluster', run_tenant, max_per_tenant USING ERRCODE = 'SBX01';
    END IF;
END
$$;

GRANT EXECUTE ON FUNCTION sandbox.sbx_room_on_enqueue(text, integer) TO sandbox_app;
