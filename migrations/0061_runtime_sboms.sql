-- Software bills of materials of the runtime images, stored once by the SHA-256 of their exact bytes, so that an
-- auditor can read which package versions a recorded run used (RuntimeImageRecorded.sbomDigest,
-- SandboxCreated.sbomDigest). Insert-only like the events.
SET ROLE sandbox_owner;

CREATE TABLE IF NOT EXISTS sandbox.runtime_sboms (
    digest        text PRIMARY KEY CHECK (digest ~ '^sha256:[0-9a-f]{64}$'),
    format        text NOT NULL,                 -- media type, e.g. application/spdx+json
    content       text NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION sandbox.sbx_refuse_sbom_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'sandbox.runtime_sboms is insert-only: % is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege', HINT = 'A stored bill of materials can never be changed or removed.';
END
$$;

DROP TRIGGER IF EXISTS sbx_runtime_sboms_no_update_delete ON sandbox.runtime_sboms;
CREATE TRIGGER sbx_runtime_sboms_no_update_delete BEFORE UPDATE OR DELETE ON sandbox.runtime_sboms
    FOR EACH ROW EXECUTE FUNCTION sandbox.sbx_refuse_sbom_change();
DROP TRIGGER IF EXISTS sbx_runtime_sboms_no_truncate ON sandbox.runtime_sboms;
CREATE TRIGGER sbx_runtime_sboms_no_truncate BEFORE TRUNCATE ON sandbox.runtime_sboms
    FOR EACH STATEMENT EXECUTE FUNCTION sandbox.sbx_refuse_sbom_change();

RESET ROLE;

-- Default privileges would give sandbox_app UPDATE and DELETE; it may only add and read.
REVOKE ALL ON sandbox.runtime_sboms FROM sandbox_app, sandbox_auditor;
GRANT SELECT, INSERT ON sandbox.runtime_sboms TO sandbox_app;
GRANT SELECT ON sandbox.runtime_sboms TO sandbox_auditor;
