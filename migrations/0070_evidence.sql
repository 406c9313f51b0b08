-- The evidence store: content (code, stdin, input files, output streams, artifacts) kept by SHA-256, once per
-- content PER TENANT (never shared across tenants), in chunks of at most 1 MiB so that no value is held whole.
-- sandbox_app may add and read content, never change or remove it. Only sandbox_eraser (LOGIN and password are
-- given by `sbx erase`, never by the service) may erase: it deletes the chunks and marks the blob erased; the
-- blob row, its digest and size stay, so the record says "erased", not "missing".
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sandbox_eraser') THEN CREATE ROLE sandbox_eraser NOLOGIN; END IF;
END
$$;

SET ROLE sandbox_owner;

CREATE TABLE IF NOT EXISTS sandbox.evidence_blobs (
    tenant       text        NOT NULL,
    sha256       text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    bytes        bigint      NOT NULL CHECK (bytes >= 0),
    chunks       integer     NOT NULL CHECK (chunks >= 0),
    stored_at    timestamptz NOT NULL DEFAULT now(),
    erased_at    timestamptz,
    erased_by    text,
    erase_reason text,
    PRIMARY KEY (tenant, sha256)
);

CREATE TABLE IF NOT EXISTS sandbox.evidence_chunks (
    tenant   text    NOT NULL,
    sha256   text    NOT NULL,
    chunk_no integer NOT NULL CHECK (chunk_no >= 0),
    data     bytea   NOT NULL CHECK (length(data) <= 1048576),
    PRIMARY KEY (tenant, sha256, chunk_no),
    FOREIGN KEY (tenant, sha256) REFERENCES sandbox.evidence_blobs (tenant, sha256)
);

-- Chunks are never changed; only the eraser may delete them.
CREATE OR REPLACE FUNCTION sandbox.sbx_evidence_chunk_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_user = 'sandbox_eraser' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'sandbox.evidence_chunks is append-only: % is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege', HINT = 'Stored content is erased only through `sbx erase`.';
END
$$;

-- Blobs are never removed; only the eraser may mark one erased, and nothing else about it may change.
CREATE OR REPLACE FUNCTION sandbox.sbx_evidence_blob_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND current_user = 'sandbox_eraser'
       AND OLD.erased_at IS NULL AND NEW.erased_at IS NOT NULL
       AND NEW.tenant = OLD.tenant AND NEW.sha256 = OLD.sha256 AND NEW.bytes = OLD.bytes
       AND NEW.chunks = OLD.chunks AND NEW.stored_at = OLD.stored_at THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'sandbox.evidence_blobs is append-only: % is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege', HINT = 'Stored content is erased only through `sbx erase`.';
END
$$;

CREATE TRIGGER sbx_evidence_chunks_guard BEFORE UPDATE OR DELETE ON sandbox.evidence_chunks
    FOR EACH ROW EXECUTE FUNCTION sandbox.sbx_evidence_chunk_guard();
CREATE TRIGGER sbx_evidence_chunks_no_truncate BEFORE TRUNCATE ON sandbox.evidence_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION sandbox.sbx_evidence_chunk_guard();
CREATE TRIGGER sbx_evidence_blobs_guard BEFORE UPDATE OR DELETE ON sandbox.evidence_blobs
    FOR EACH ROW EXECUTE FUNCTION sandbox.sbx_evidence_blob_guard();
CREATE TRIGGER sbx_evidence_blobs_no_truncate BEFORE TRUNCATE ON sandbox.evidence_blobs
    FOR EACH STATEMENT EXECUTE FUNCTION sandbox.sbx_evidence_blob_guard();

RESET ROLE;

-- Default privileges would give sandbox_app UPDATE and DELETE; it may only add and read.
REVOKE ALL ON sandbox.evidence_blobs, sandbox.evidence_chunks FROM sandbox_app, sandbox_auditor;
GRANT SELECT, INSERT ON sandbox.evidence_blobs, sandbox.evidence_chunks TO sandbox_app;
GRANT SELECT ON sandbox.evidence_blobs, sandbox.evidence_chunks TO sandbox_auditor;

-- The eraser reads what it erases, deletes chunks, marks blobs erased, and appends its erasure events
-- (Marten's tables, as the service does) — nothing else.
GRANT USAGE ON SCHEMA sandbox TO sandbox_eraser;
GRANT SELECT ON ALL TABLES IN SCHEMA sandbox TO sandbox_eraser;
GRANT DELETE ON sandbox.evidence_chunks TO sandbox_eraser;
GRANT UPDATE (erased_at, erased_by, erase_reason) ON sandbox.evidence_blobs TO sandbox_eraser;
GRANT INSERT, UPDATE ON sandbox.mt_streams TO sandbox_eraser;
GRANT INSERT ON sandbox.mt_events TO sandbox_eraser;
GRANT INSERT ON sandbox.audit_tree_leaves, sandbox.audit_tree_nodes TO sandbox_eraser;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA sandbox TO sandbox_eraser;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA sandbox TO sandbox_eraser;
