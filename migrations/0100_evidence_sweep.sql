-- The evidence sweep: content that no event names (its run's commit failed for good) is removed, and the removal recorded.
--
-- Holds. Every content a writer streams into the store before the commit that will name it (input files before the
-- write-ahead commit, artifacts and large outputs before the outcome commit, contents a node's journal streams in) gets a
-- hold row: which run relies on it and which node. The row is written in the same transaction as the content (or, for
-- content already there, with it still there: see the lock below). A node renews the holds of every run it still holds
-- (in flight, or in its outcome journal, set aside or not) when it heartbeats. The sweep releases a hold only when nothing
-- can name the content for that run any more (Domain: EvidenceSweep.DecideHold), and removes content only once it has no
-- hold left and no event names it.
--
-- The race with writers. A writer that relies on a content already stored (a staged insert that finds it, a put that finds
-- it) takes a shared transaction-level advisory lock on (tenant, digest) before it looks, and keeps it until its commit;
-- the sweep takes the same key exclusively (without waiting: a busy content is left for the next pass). So either the
-- writer's commit (with its hold or its events) is visible to the sweep's checks, or the writer looks after the removal
-- and stores the content again. Key: (1937204080, hashtext(tenant || '/' || sha256)), two-int form, apart from the
-- single-key locks the service already takes.
--
-- Removal is the privilege of one function, sbx_evidence_sweep, owned by sandbox_sweeper (NOLOGIN; the service calls the
-- function, it never holds the role). The function removes exactly the contents it is given, or nothing: it raises when
-- any of them is named by an event of the tenant's runs, held, erased (an erasure's row is its record), the empty content,
-- or locked by a writer. The guards of 0070 let sandbox_sweeper delete chunks, and blob rows that are not erased.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sandbox_sweeper') THEN CREATE ROLE sandbox_sweeper NOLOGIN; END IF;
END
$$;

SET ROLE sandbox_owner;

CREATE TABLE IF NOT EXISTS sandbox.evidence_holds (
    tenant   text        NOT NULL,
    sha256   text        NOT NULL,
    run_id   uuid        NOT NULL,
    node     text        NOT NULL,
    held_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, sha256, run_id),
    FOREIGN KEY (tenant, sha256) REFERENCES sandbox.evidence_blobs (tenant, sha256)
);
-- The heartbeat renews a node's holds by run; the sweep walks holds oldest first.
CREATE INDEX IF NOT EXISTS sbx_evidence_holds_node_run ON sandbox.evidence_holds (node, run_id);
CREATE INDEX IF NOT EXISTS sbx_evidence_holds_held_at ON sandbox.evidence_holds (held_at, tenant, sha256, run_id);

-- Chunks are never changed; only the eraser and the sweep function may delete them.
CREATE OR REPLACE FUNCTION sandbox.sbx_evidence_chunk_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_user IN ('sandbox_eraser', 'sandbox_sweeper') THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'sandbox.evidence_chunks is append-only: % is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege', HINT = 'Stored content is erased only through `sbx erase`.';
END
$$;

-- Blobs are never changed but by the eraser (marking one erased); the sweep function alone deletes a blob row, and never
-- an erased one (it is the erasure's record) nor the empty content.
CREATE OR REPLACE FUNCTION sandbox.sbx_evidence_blob_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND current_user = 'sandbox_eraser'
       AND OLD.erased_at IS NULL AND NEW.erased_at IS NOT NULL
       AND NEW.tenant = OLD.tenant AND NEW.sha256 = OLD.sha256 AND NEW.bytes = OLD.bytes
       AND NEW.chunks = OLD.chunks AND NEW.stored_at = OLD.stored_at THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'DELETE' AND current_user = 'sandbox_sweeper' AND OLD.erased_at IS NULL
       AND OLD.sha256 <> 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'sandbox.evidence_blobs is append-only: % is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege', HINT = 'Stored content is erased only through `sbx erase`.';
END
$$;

-- Which of the digests an event of the tenant's runs names, in any field (wider than what verification reads: whatever
-- names a digest keeps it). A run is the tenant's by its request's caller or by the tenant header on its events. Events of
-- the tenant's evidence stream (erasures, sweeps) name digests that are no run's content: they do not keep content.
CREATE OR REPLACE FUNCTION sandbox.sbx_evidence_named(p_tenant text, p_sha256s text[]) RETURNS SETOF text
LANGUAGE sql STABLE AS $$
    WITH runs AS (
        SELECT stream_id FROM sandbox.mt_events WHERE type = 'run_requested' AND data -> 'caller' ->> 'tenant' = p_tenant
    ), texts AS (
        SELECT e.data::text AS body FROM sandbox.mt_events e
        WHERE e.type NOT IN ('evidence_erased', 'evidence_swept')
          AND (e.stream_id IN (SELECT stream_id FROM runs) OR e.headers ->> 'tenant' = p_tenant)
    )
    SELECT d FROM unnest(p_sha256s) d WHERE EXISTS (SELECT 1 FROM texts WHERE strpos(texts.body, d) > 0)
$$;

-- What a writer calls, in its transaction, before it relies on a content being stored: the shared side of the key.
CREATE OR REPLACE FUNCTION sandbox.sbx_evidence_rely(p_tenant text, p_sha256 text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(1937204080, hashtext(p_tenant || '/' || p_sha256));
    RETURN true;
END
$$;

RESET ROLE;

-- Removes exactly these contents of the tenant (chunks and blob row, so that the same bytes stored later are stored
-- afresh), or raises and removes nothing. Returns each content's digest and size.
CREATE OR REPLACE FUNCTION sandbox.sbx_evidence_sweep(p_tenant text, p_sha256s text[])
RETURNS TABLE (sha256 text, bytes bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = sandbox, pg_catalog, pg_temp AS $$
DECLARE
    d text;
    problem text;
BEGIN
    IF 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' = ANY (p_sha256s) THEN
        RAISE EXCEPTION 'the empty content is never removed' USING ERRCODE = 'check_violation';
    END IF;
    -- Writers hold the key shared until they commit: a content one of them relies on right now is not removed.
    FOR d IN SELECT DISTINCT x FROM unnest(p_sha256s) x ORDER BY 1 LOOP
        IF NOT pg_try_advisory_xact_lock(1937204080, hashtext(p_tenant || '/' || d)) THEN
            RAISE EXCEPTION 'content % is in use by a writer', d USING ERRCODE = 'lock_not_available';
        END IF;
    END LOOP;
    -- Each check below is a new statement, so it sees every writer that committed before the locks were taken.
    SELECT string_agg(x, ' ') INTO problem FROM unnest(p_sha256s) x
    WHERE NOT EXISTS (SELECT 1 FROM sandbox.evidence_blobs b WHERE b.tenant = p_tenant AND b.sha256 = x AND b.erased_at IS NULL);
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'not stored, or erased (an erasure keeps its row): %', problem USING ERRCODE = 'check_violation';
    END IF;
    SELECT string_agg(DISTINCT h.sha256, ' ') INTO problem FROM sandbox.evidence_holds h WHERE h.tenant = p_tenant AND h.sha256 = ANY (p_sha256s);
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'still held by a run: %', problem USING ERRCODE = 'check_violation';
    END IF;
    SELECT string_agg(n, ' ') INTO problem FROM sandbox.sbx_evidence_named(p_tenant, p_sha256s) n;
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'named by an event: %', problem USING ERRCODE = 'check_violation';
    END IF;
    DELETE FROM sandbox.evidence_chunks c WHERE c.tenant = p_tenant AND c.sha256 = ANY (p_sha256s);
    RETURN QUERY DELETE FROM sandbox.evidence_blobs b WHERE b.tenant = p_tenant AND b.sha256 = ANY (p_sha256s) RETURNING b.sha256, b.bytes;
END
$$;
ALTER FUNCTION sandbox.sbx_evidence_sweep(text, text[]) OWNER TO sandbox_sweeper;
REVOKE ALL ON FUNCTION sandbox.sbx_evidence_sweep(text, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sandbox.sbx_evidence_sweep(text, text[]) TO sandbox_app;

-- What the function needs as its owner, and nothing else.
GRANT USAGE ON SCHEMA sandbox TO sandbox_sweeper;
GRANT SELECT ON sandbox.mt_events, sandbox.evidence_holds TO sandbox_sweeper;
GRANT SELECT, DELETE ON sandbox.evidence_blobs, sandbox.evidence_chunks TO sandbox_sweeper;
GRANT EXECUTE ON FUNCTION sandbox.sbx_evidence_named(text, text[]) TO sandbox_sweeper;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_try_advisory_xact_lock(integer, integer) TO sandbox_sweeper;

-- The service writes and renews holds and deletes the ones the sweep released; auditors may read them.
REVOKE ALL ON sandbox.evidence_holds FROM sandbox_app, sandbox_auditor;
GRANT SELECT, INSERT, DELETE ON sandbox.evidence_holds TO sandbox_app;
GRANT UPDATE (held_at, node) ON sandbox.evidence_holds TO sandbox_app;
GRANT SELECT ON sandbox.evidence_holds TO sandbox_auditor;
GRANT SELECT ON sandbox.evidence_holds TO sandbox_eraser;
GRANT EXECUTE ON FUNCTION sandbox.sbx_evidence_named(text, text[]) TO sandbox_app, sandbox_auditor;
REVOKE ALL ON FUNCTION sandbox.sbx_evidence_rely(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sandbox.sbx_evidence_rely(text, text) TO sandbox_app;
