-- Cluster-wide per-subject token buckets for POST /v1/runs: every api node takes and refunds tokens here with one
-- atomic statement, so a subject's budget is the same whichever node it reaches. Rows hold no audit facts (refusals
-- are recorded as events); a bucket idle long enough to be full again carries no information and may be removed.
SET ROLE sandbox_owner;

CREATE TABLE IF NOT EXISTS sandbox.rate_limit_buckets (
    bucket       text             PRIMARY KEY,
    tokens       double precision NOT NULL,
    refilled_at  timestamptz      NOT NULL,
    -- Whether the last take was granted: RETURNING sees only the new row, and a refusal takes nothing.
    granted      boolean          NOT NULL
);

RESET ROLE;

REVOKE ALL ON sandbox.rate_limit_buckets FROM sandbox_app, sandbox_auditor;
GRANT SELECT, INSERT, UPDATE, DELETE ON sandbox.rate_limit_buckets TO sandbox_app;
