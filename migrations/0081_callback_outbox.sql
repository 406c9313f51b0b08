-- Durable callback outbox: one row per admitted run that named a callbackUrl, written in the same transaction as the
-- run's write-ahead events. Any api node's delivery worker claims due rows (FOR UPDATE SKIP LOCKED + a lease), builds
-- the body from the committed record once the run has its terminal event, and records every attempt here and on the run.
SET ROLE sandbox_owner;

CREATE TABLE IF NOT EXISTS sandbox.callback_outbox (
    run_id           uuid        PRIMARY KEY,
    tenant           text        NOT NULL,
    url              text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    attempts         integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_attempt_at  timestamptz NULL,
    last_status      integer     NULL,
    last_error       text        NULL,
    delivered_at     timestamptz NULL,
    given_up_at      timestamptz NULL,
    -- The worker (node id + instance) holding the row and until when; another worker may take it only after the lease ends.
    claimed_by       text        NULL,
    claim_expires_at timestamptz NULL
);

-- The workers' poll: rows still to deliver, by when they are due.
CREATE INDEX IF NOT EXISTS callback_outbox_due ON sandbox.callback_outbox (next_attempt_at)
    WHERE delivered_at IS NULL AND given_up_at IS NULL;

RESET ROLE;

-- Default privileges would give sandbox_app DELETE; rows stay as the delivery's own account.
REVOKE ALL ON sandbox.callback_outbox FROM sandbox_app, sandbox_auditor;
GRANT SELECT, INSERT, UPDATE ON sandbox.callback_outbox TO sandbox_app;
GRANT SELECT ON sandbox.callback_outbox TO sandbox_auditor;
