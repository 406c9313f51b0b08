-- The stored Merkle tree of each tenant's record, so that checkpoints cost O(new events) and proofs O(log n)
-- instead of a pass over every event. Leaves are the tenant's events in global sequence order (leaf index =
-- position in the tenant's tree); nodes are every complete (perfect) subtree, level 0 being the leaf hashes, kept
-- once complete and never changed. Append-only like the events; recomputable from them (checkpoints/verify compares).
SET ROLE sandbox_owner;

CREATE TABLE IF NOT EXISTS sandbox.audit_tree_leaves (
    tenant     text   NOT NULL,
    leaf_index bigint NOT NULL CHECK (leaf_index >= 0),
    seq_id     bigint NOT NULL UNIQUE,
    PRIMARY KEY (tenant, leaf_index)
);
CREATE INDEX IF NOT EXISTS sbx_audit_tree_leaves_seq ON sandbox.audit_tree_leaves (tenant, seq_id);

CREATE TABLE IF NOT EXISTS sandbox.audit_tree_nodes (
    tenant text     NOT NULL,
    level  smallint NOT NULL CHECK (level BETWEEN 0 AND 62),
    idx    bigint   NOT NULL CHECK (idx >= 0),
    hash   bytea    NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (tenant, level, idx)
);

CREATE OR REPLACE FUNCTION sandbox.sbx_refuse_tree_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege', HINT = 'Stored tree nodes are complete subtrees; they never change.';
END
$$;

CREATE TRIGGER sbx_audit_tree_leaves_no_update_delete BEFORE UPDATE OR DELETE ON sandbox.audit_tree_leaves
    FOR EACH ROW EXECUTE FUNCTION sandbox.sbx_refuse_tree_change();
CREATE TRIGGER sbx_audit_tree_leaves_no_truncate BEFORE TRUNCATE ON sandbox.audit_tree_leaves
    FOR EACH STATEMENT EXECUTE FUNCTION sandbox.sbx_refuse_tree_change();
CREATE TRIGGER sbx_audit_tree_nodes_no_update_delete BEFORE UPDATE OR DELETE ON sandbox.audit_tree_nodes
    FOR EACH ROW EXECUTE FUNCTION sandbox.sbx_refuse_tree_change();
CREATE TRIGGER sbx_audit_tree_nodes_no_truncate BEFORE TRUNCATE ON sandbox.audit_tree_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION sandbox.sbx_refuse_tree_change();

RESET ROLE;

-- Default privileges would give sandbox_app UPDATE and DELETE; it may only add and read.
REVOKE ALL ON sandbox.audit_tree_leaves, sandbox.audit_tree_nodes FROM sandbox_app, sandbox_auditor;
GRANT SELECT, INSERT ON sandbox.audit_tree_leaves, sandbox.audit_tree_nodes TO sandbox_app;
GRANT SELECT ON sandbox.audit_tree_leaves, sandbox.audit_tree_nodes TO sandbox_auditor;
