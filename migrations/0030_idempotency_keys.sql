-- Idempotency-Key for POST /v1/runs: one row per (tenant, subject, key) binding the SHA-256 of the request
-- body to the run it started. The run itself stays in the event store; this table only finds it again.
SET ROLE sandbox_owner;

CREATE TABLE IF NOT EXISTS sandbox.idempotency_keys (
    tenant          text        NOT NULL,
    subject         text        NOT NULL,
    key             text        NOT NULL,
    request_sha256  text        NOT NULL,
    run_id          uuid        NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, subject, key)
);

RESET ROLE;

GRANT SELECT, INSERT, UPDATE, DELETE ON sandbox.idempotency_keys TO sandbox_app;
GRANT SELECT ON sandbox.idempotency_keys TO sandbox_auditor;
