-- Each heartbeat, a node ends its own rows moved to abandoned or refused whose terminal event never committed, looking
-- only at rows moved since its last pass: the partial indexes of 0091 gain the time of the move, so that pass reads the
-- recent rows rather than every refusal the node ever made. Start-up recovery (no time bound) uses them as before.
-- Migrations run in a transaction, so the indexes are not built CONCURRENTLY: building them holds off writes to
-- run_queue for as long as one scan of the table takes (apply at a quiet moment on a large queue table).
SET ROLE sandbox_owner;

CREATE INDEX IF NOT EXISTS sbx_run_queue_moved_by_api ON sandbox.run_queue (requested_by, finished_at) WHERE state IN ('abandoned', 'refused');
CREATE INDEX IF NOT EXISTS sbx_run_queue_moved_by_executor ON sandbox.run_queue (node_id, finished_at) WHERE state IN ('abandoned', 'refused');
DROP INDEX IF EXISTS sandbox.sbx_run_queue_ended_by_api;
DROP INDEX IF EXISTS sandbox.sbx_run_queue_ended_by_executor;

RESET ROLE;
