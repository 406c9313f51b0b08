-- The evidence sweep's removal is on record or does not happen: sbx_evidence_sweep (0100) also refuses unless the same
-- transaction appended an evidence_swept of the tenant naming each content it removes. The service's login, which may call
-- the function and delete holds, can then no longer remove an unnamed content (an in-flight run's artifact whose hold it
-- deleted) without the removal entering the tenant's hash-chained record. The rest of the function is 0100's, unchanged.
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
    -- The record of the removal: an evidence_swept this transaction appended for the tenant, naming the content.
    SELECT string_agg(x, ' ') INTO problem FROM unnest(p_sha256s) x
    WHERE x IS NULL OR NOT EXISTS (
        SELECT 1 FROM sandbox.mt_events e CROSS JOIN LATERAL jsonb_array_elements(e.data -> 'contents') c
        WHERE e.type = 'evidence_swept' AND e.xmin = pg_current_xact_id()::xid
          AND e.data -> 'caller' ->> 'tenant' = p_tenant AND e.headers ->> 'tenant' = p_tenant AND c ->> 'sha256' = x);
    IF problem IS NOT NULL OR p_tenant IS NULL THEN
        RAISE EXCEPTION 'not on record: no evidence_swept of tenant % appended in this transaction names %', p_tenant, coalesce(problem, '')
            USING ERRCODE = 'check_violation', HINT = 'Content is removed by the evidence sweep, which records each removal in the same commit.';
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
