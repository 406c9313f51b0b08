-- Fewer empty claims (issue 16, dispatch figure): a claim also says whether it left queued runs behind (a tenant at its
-- cluster-wide ceiling, or one another claimer was serving), so that an executor whose claim came back short with nothing
-- left behind knows the queue held nothing for it, and claims again only when new runs are announced (NOTIFY, poll), not
-- every time one of its slots comes free. Same rules as sbx_claim_runs (0084): oldest first, FOR UPDATE SKIP LOCKED,
-- the tenant ceiling counted under the tenant's transaction-scoped advisory lock. The claimed rows come first; then, when
-- runs were left behind, one row with no run.
SET ROLE sandbox_owner;

CREATE OR REPLACE FUNCTION sandbox.sbx_claim_queued(claimer text, max_per_tenant integer, lease_seconds integer, max_runs integer)
RETURNS TABLE (run_id uuid, tenant text, payload jsonb, enqueued_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    wanted integer := max_runs;
    taken integer;
    ids uuid[];
    tenants text[];
    locked text[] := '{}';     -- tenants whose advisory lock this transaction holds
    skipped text[] := '{}';    -- tenants that are full, or whose lock another claimer holds after the first round
    t record;
BEGIN
    FOR round IN 1..4 LOOP
        EXIT WHEN wanted <= 0;
        SELECT array_agg(c.run_id), array_agg(DISTINCT c.tenant) INTO ids, tenants FROM (
            SELECT q.run_id, q.tenant FROM sandbox.run_queue q
            WHERE q.state = 'queued' AND NOT (q.tenant = ANY (skipped))
            ORDER BY q.enqueued_at LIMIT wanted FOR UPDATE SKIP LOCKED) c;
        EXIT WHEN ids IS NULL;
        -- Locks are taken in one global order (by key) so that two batch claimers never wait on each other in a cycle;
        -- a later round only tries, since it already holds locks out of that order.
        FOR t IN SELECT u.name FROM unnest(tenants) u(name) WHERE NOT (u.name = ANY (locked))
                 ORDER BY hashtext('sbx_run_queue:' || u.name), u.name LOOP
            IF round = 1 THEN
                PERFORM pg_advisory_xact_lock(hashtext('sbx_run_queue:' || t.name));
                locked := locked || t.name;
            ELSIF pg_try_advisory_xact_lock(hashtext('sbx_run_queue:' || t.name)) THEN
                locked := locked || t.name;
            ELSE
                skipped := skipped || t.name;
            END IF;
        END LOOP;
        -- Each locked tenant gets its oldest candidates up to its room; rows this transaction claimed already count.
        RETURN QUERY
            WITH room AS (
                SELECT l.name, max_per_tenant - (SELECT count(*) FROM sandbox.run_queue c WHERE c.tenant = l.name AND c.state = 'claimed') AS free
                FROM unnest(locked) l(name)),
            ranked AS (
                SELECT q.run_id, row_number() OVER (PARTITION BY q.tenant ORDER BY q.enqueued_at) AS n, r.free
                FROM sandbox.run_queue q JOIN room r ON r.name = q.tenant
                WHERE q.run_id = ANY (ids) AND q.state = 'queued')
            UPDATE sandbox.run_queue q
            SET state = 'claimed', node_id = claimer, claimed_at = now(), lease_until = now() + make_interval(secs => lease_seconds)
            FROM ranked WHERE q.run_id = ranked.run_id AND ranked.n <= ranked.free
            RETURNING q.run_id, q.tenant, q.payload, q.enqueued_at;
        GET DIAGNOSTICS taken = ROW_COUNT;
        wanted := wanted - taken;
        -- The queue had no more than this round saw, and all of it was taken.
        EXIT WHEN taken = array_length(ids, 1) AND taken < wanted + taken;
        -- A candidate still queued belongs to a full tenant or one another claimer is serving: look past it.
        skipped := skipped || ARRAY(SELECT DISTINCT q.tenant FROM sandbox.run_queue q WHERE q.run_id = ANY (ids) AND q.state = 'queued');
    END LOOP;
    -- Queued runs this claim looked past: a slot coming free (a tenant's room with it) is worth another claim.
    IF cardinality(skipped) > 0 THEN
        RETURN QUERY SELECT NULL::uuid, NULL::text, NULL::jsonb, NULL::timestamptz;
    END IF;
END;
$$;

-- Nodes of the previous version keep calling sbx_claim_runs: the same claim, without the marker row.
CREATE OR REPLACE FUNCTION sandbox.sbx_claim_runs(claimer text, max_per_tenant integer, lease_seconds integer, max_runs integer)
RETURNS TABLE (run_id uuid, tenant text, payload jsonb, enqueued_at timestamptz)
LANGUAGE sql AS $$
    SELECT c.run_id, c.tenant, c.payload, c.enqueued_at FROM sandbox.sbx_claim_queued(claimer, max_per_tenant, lease_seconds, max_runs) c
    WHERE c.run_id IS NOT NULL
$$;

RESET ROLE;

GRANT EXECUTE ON FUNCTION sandbox.sbx_claim_queued(text, integer, integer, integer) TO sandbox_app;
