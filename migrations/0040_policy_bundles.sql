-- Policy bundle content, stored once by digest, so that an auditor can read the exact rules behind any
-- recorded decision (PolicyEvaluated.bundleDigest, PolicyBundleActivated.digest). Insert-only like the events.
SET ROLE sandbox_owner;

CREATE TABLE IF NOT EXISTS sandbox.policy_bundles (
    digest        text PRIMARY KEY CHECK (digest ~ '^[0-9a-f]{64}$'),
    files         jsonb NOT NULL CHECK (jsonb_typeof(files) = 'array'), -- [{path, sha256, content}], sorted by path
    first_seen_at timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION sandbox.sbx_refuse_bundle_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'sandbox.policy_bundles is insert-only: % is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege', HINT = 'A stored policy bundle can never be changed or removed.';
END
$$;

CREATE TRIGGER sbx_policy_bundles_no_update_delete BEFORE UPDATE OR DELETE ON sandbox.policy_bundles
    FOR EACH ROW EXECUTE FUNCTION sandbox.sbx_refuse_bundle_change();
CREATE TRIGGER sbx_policy_bundles_no_truncate BEFORE TRUNCATE ON sandbox.policy_bundles
    FOR EACH STATEMENT EXECUTE FUNCTION sandbox.sbx_refuse_bundle_change();

RESET ROLE;

-- Default privileges would give sandbox_app UPDATE and DELETE; it may only add and read.
REVOKE ALL ON sandbox.policy_bundles FROM sandbox_app, sandbox_auditor;
GRANT SELECT, INSERT ON sandbox.policy_bundles TO sandbox_app;
GRANT SELECT ON sandbox.policy_bundles TO sandbox_auditor;
