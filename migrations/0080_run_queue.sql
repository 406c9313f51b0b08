-- The run queue: how a run recorded by an api node reaches an executor node (issue 16). One row per allowed run, inserted
-- in the same transaction as its write-ahead events; executors claim rows with FOR UPDATE SKIP LOCKED and hold a lease
-- they extend while they heartbeat. The record of what happened stays in the event store: this table only coordinates.
SET ROLE sandbox_owner;

CREATE TABLE IF NOT EXISTS sandbox.run_queue (
    run_id        uuid        NOT NULL PRIMARY KEY,
    tenant        text        NOT NULL,
    -- What an executor needs: the validated request (input digests; the content is in the evidence store), the
    -- decision's limits, runtime and isolation, the caller, the image id of a reproduction.
    payload       jsonb       NOT NULL,
    state         text        NOT NULL DEFAULT 'queued'
                  CHECK (state IN ('queued', 'claimed', 'finished', 'abandoned', 'refused')),
    requested_by  text        NOT NULL,      -- the api node that recorded the run and waits for it
    node_id       text        NULL,          -- the executor that claimed it
    lease_until   timestamptz NULL,
    enqueued_at   timestamptz NOT NULL DEFAULT now(),
    claimed_at    timestamptz NULL,
    finished_at   timestamptz NULL
);
-- Claims walk the queued rows oldest first; the per-tenant ceiling counts a tenant's claimed rows; the sweeper finds expired leases.
CREATE INDEX IF NOT EXISTS sbx_run_queue_queued ON sandbox.run_queue (enqueued_at) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS sbx_run_queue_claimed ON sandbox.run_queue (tenant) WHERE state = 'claimed';
CREATE INDEX IF NOT EXISTS sbx_run_queue_lease ON sandbox.run_queue (lease_until) WHERE state = 'claimed';

CREATE TABLE IF NOT EXISTS sandbox.nodes (
    node_id       text        NOT NULL PRIMARY KEY,
    roles         text        NOT NULL,      -- "api,executor", "api" or "executor"
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now()
);

-- Claims the oldest queued run whose tenant runs fewer than max_per_tenant claimed runs across the cluster. The tenant's
-- count is taken under a transaction-scoped advisory lock on the tenant, so two executors never both take the last slot.
CREATE OR REPLACE FUNCTION sandbox.sbx_claim_run(claimer text, max_per_tenant integer, lease_seconds integer)
RETURNS TABLE (run_id uuid, tenant text, payload jsonb, enqueued_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    candidate record;
    full_tenants text[] := '{}';
BEGIN
    -- One row at a time, so that concurrent claimers skip only the row another one is taking.
    FOR attempt IN 1..16 LOOP
        SELECT q.run_id, q.tenant INTO candidate FROM sandbox.run_queue q
        WHERE q.state = 'queued' AND NOT (q.tenant = ANY (full_tenants))
        ORDER BY q.enqueued_at LIMIT 1 FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        PERFORM pg_advisory_xact_lock(hashtext('sbx_run_queue:' || candidate.tenant));
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

RESET ROLE;

GRANT SELECT, INSERT, UPDATE ON sandbox.run_queue TO sandbox_app;
GRANT SELECT, INSERT, UPDATE ON sandbox.nodes TO sandbox_app;
GRANT EXECUTE ON FUNCTION sandbox.sbx_claim_run(text, integer, integer) TO sandbox_app;
GRANT SELECT ON sandbox.run_queue, sandbox.nodes TO sandbox_auditor;
