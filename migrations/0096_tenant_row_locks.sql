-- Per-tenant serialisation on rows instead of advisory locks. Advisory locks need no privilege: any login, the read-only
-- sandbox_auditor included, could take a tenant's key and stall its claims, its fast-path runs and its checkpoints for as
-- long as it liked. Locking a row (FOR UPDATE, FOR SHARE, ...) or the table above ACCESS SHARE needs UPDATE, DELETE or
-- TRUNCATE on it, which only sandbox_app is given here; the auditor keeps SELECT, which cannot block the service.
-- 0093 created sbx_room_on_enqueue without SET ROLE: hand it to the schema's owner, who redefines it below.
ALTER FUNCTION sandbox.sbx_room_on_enqueue(text, integer) OWNER TO sandbox_owner;

SET ROLE sandbox_owner;

CREATE TABLE IF NOT EXISTS sandbox.tenant_locks (
    tenant  text NOT NULL,
    purpose text NOT NULL CHECK (purpose IN ('queue', 'audit-tree')),
    PRIMARY KEY (tenant, purpose)
);

REVOKE ALL ON sandbox.tenant_locks FROM PUBLIC, sandbox_app, sandbox_auditor, sandbox_eraser;
GRANT SELECT, INSERT, UPDATE ON sandbox.tenant_locks TO sandbox_app;
GRANT SELECT ON sandbox.tenant_locks TO sandbox_auditor;

-- Takes the tenant's lock for a purpose until the transaction ends, creating its row the first time. A concurrent first
-- insert of the same row waits for the other transaction, then finds the row and waits on its lock like any other.
CREATE OR REPLACE FUNCTION sandbox.sbx_lock_tenant(lock_tenant text, lock_purpose text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sandbox.tenant_locks (tenant, purpose) VALUES (lock_tenant, lock_purpose) ON CONFLICT DO NOTHING;
    PERFORM 1 FROM sandbox.tenant_locks WHERE tenant = lock_tenant AND purpose = lock_purpose FOR UPDATE;
END
$$;

-- Every tenant with a queue row has its queue lock row, committed with the queue row: a claimer that sees a queued run
-- can try its tenant's lock without ever waiting on another transaction's first insert (the batch claim's later rounds
-- only try, holding locks out of order).
CREATE OR REPLACE FUNCTION sandbox.sbx_run_queue_lock_row() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sandbox.tenant_locks (tenant, purpose) VALUES (NEW.tenant, 'queue') ON CONFLICT DO NOTHING;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS sbx_run_queue_lock_row ON sandbox.run_queue;
CREATE TRIGGER sbx_run_queue_lock_row BEFORE INSERT ON sandbox.run_queue
    FOR EACH ROW EXECUTE FUNCTION sandbox.sbx_run_queue_lock_row();

-- The trigger holds run_queue against inserts until this migration commits, so no tenant is missed here.
INSERT INTO sandbox.tenant_locks (tenant, purpose) SELECT DISTINCT tenant, 'queue' FROM sandbox.run_queue ON CONFLICT DO NOTHING;

-- As in 0084, with the tenant's queue row lock in place of its advisory lock: locks taken in one global order (by tenant
-- name) in the first round so that batch claimers never wait on each other in a cycle; later rounds only try.
CREATE OR REPLACE FUNCTION sandbox.sbx_claim_runs(claimer text, max_per_tenant integer, lease_seconds integer, max_runs integer)
RETURNS TABLE (run_id uuid, tenant text, payload jsonb, enqueued_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    wanted integer := max_runs;
    taken integer;
    ids uuid[];
    tenants text[];
    locked text[] := '{}';     -- tenants whose queue lock row this transaction holds
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
        FOR t IN SELECT u.name FROM unnest(tenants) u(name) WHERE NOT (u.name = ANY (locked))
                 ORDER BY u.name COLLATE "C" LOOP
            IF round = 1 THEN
                PERFORM sandbox.sbx_lock_tenant(t.name, 'queue');
                locked := locked || t.name;
            ELSE
                -- The row exists (the queue row's trigger made it): SKIP LOCKED tries without waiting.
                PERFORM 1 FROM sandbox.tenant_locks l WHERE l.tenant = t.name AND l.purpose = 'queue' FOR UPDATE SKIP LOCKED;
                IF FOUND THEN
                    locked := locked || t.name;
                ELSE
                    skipped := skipped || t.name;
                END IF;
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
END;
$$;

-- As in 0093: the embedded fast path checks the tenant's ceiling under the same lock a claim counts under.
CREATE OR REPLACE FUNCTION sandbox.sbx_room_on_enqueue(run_tenant text, max_per_tenant integer) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM sandbox.sbx_lock_tenant(run_tenant, 'queue');
    IF (SELECT count(*) FROM sandbox.run_queue WHERE tenant = run_tenant AND state = 'claimed') >= max_per_tenant THEN
        RAISE EXCEPTION 'tenant % already runs % sandboxes across the cluster', run_tenant, max_per_tenant USING ERRCODE = 'SBX01';
    END IF;
END
$$;

-- The single-run claim of 0080 (no longer called by this version) no longer takes an advisory lock either.
CREATE OR REPLACE FUNCTION sandbox.sbx_claim_run(claimer text, max_per_tenant integer, lease_seconds integer)
RETURNS TABLE (run_id uuid, tenant text, payload jsonb, enqueued_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    candidate record;
    full_tenants text[] := '{}';
BEGIN
    FOR attempt IN 1..16 LOOP
        SELECT q.run_id, q.tenant INTO candidate FROM sandbox.run_queue q
        WHERE q.state = 'queued' AND NOT (q.tenant = ANY (full_tenants))
        ORDER BY q.enqueued_at LIMIT 1 FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        PERFORM sandbox.sbx_lock_tenant(candidate.tenant, 'queue');
        IF (SELECT count(*) FROM sandbox.run_queue c WHERE c.tenant = candidate.tenant AND c.state = 'claimed') < max_per_tenant THEN
            RETURN QUERY
                UPDATE sandbox.run_queue q
                SET state = 'claimed', node_id = claimer, claimed_at = now(), lease_until = now() + make_interval(secs => lease_seconds)
                WHERE q.run_id = candidate.run_id
                RETURNING q.run_id, q.tenant, q.payload, q.enqueued_at;
            RETURN;
        END IF;
        full_tenants := full_tenants || candidate.tenant;
    END LOOP;
END;
$$;

REVOKE EXECUTE ON FUNCTION sandbox.sbx_lock_tenant(text, text), sandbox.sbx_run_queue_lock_row(),
    sandbox.sbx_claim_runs(text, integer, integer, integer), sandbox.sbx_room_on_enqueue(text, integer),
    sandbox.sbx_claim_run(text, integer, integer) FROM PUBLIC;

RESET ROLE;

GRANT EXECUTE ON FUNCTION sandbox.sbx_lock_tenant(text, text), sandbox.sbx_claim_runs(text, integer, integer, integer),
    sandbox.sbx_room_on_enqueue(text, integer), sandbox.sbx_claim_run(text, integer, integer) TO sandbox_app;
