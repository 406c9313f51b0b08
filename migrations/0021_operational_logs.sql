-- Operational logs (Serilog → PostgreSQL through PostgresLogSink). Not the audit trail: these rows may be
-- pruned by retention; the events are the record.
SET ROLE sandbox_owner;

CREATE TABLE IF NOT EXISTS sandbox.logs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at              timestamptz NOT NULL,
    level           text        NOT NULL,
    message         text        NOT NULL,
    template        text        NOT NULL,
    exception       text        NULL,
    run_id          uuid        NULL,
    correlation_id  text        NULL,
    source          text        NULL,
    node            text        NULL,
    properties      jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS sbx_logs_at ON sandbox.logs (at);
CREATE INDEX IF NOT EXISTS sbx_logs_run ON sandbox.logs (run_id) WHERE run_id IS NOT NULL;

RESET ROLE;
GRANT SELECT, INSERT ON sandbox.logs TO sandbox_app;
GRANT SELECT ON sandbox.logs TO sandbox_auditor;
