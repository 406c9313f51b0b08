-- Cluster-wide per-subject token buckets for POST /v1/runs: every api node takes and refunds tokens here with one
-- atomic statement, so a subject's budget is the same whichever node it reaches. Rows hold no audit facts (refusals
-- are recorded as events); a bucket idle long enough to be full again carries no information and may be removed.
-- UNLOGGED: a take writes no WAL and so waits for no disk flush (a logged table made each request pay an fsync). After a
-- PostgreSQL crash or a failover to a replica the table is empty, which gives every subject a full bucket: harmless.
SET ROLE sandbox_owner;

CREATE UNLOGGED TABLE IF NOT EXISTS sandbox.rate_limit_buckets (
    bucket       text             PRIMARY KEY,
    tokens       double precision NOT NULL,
    refilled_at  timestamptz      NOT NULL,
    -- Whether the last take was granted: RETURNING sees only the new row, and a refusal takes nothing.
    granted      boolean          NOT NULL
) WITH (fillfactor = 70); -- room on the page for HOT updates: a take rewrites its row

RESET ROLE;

REVOKE ALL ON sandbox.rate_limit_buckets FROM sandbox_app, sandbox_auditor;
GRANT SELECT, INSERT, UPDATE, DELETE ON sandbox.rate_limit_buckets TO sandbox_app;
