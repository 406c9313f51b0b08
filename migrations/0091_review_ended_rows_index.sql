-- Restart recovery looks for a node's queue rows moved to abandoned or refused whose terminal event never committed: a
-- small partial index, since such rows are few among the finished ones.
SET ROLE sandbox_owner;

CREATE INDEX IF NOT EXISTS sbx_run_queue_ended_by_api ON sandbox.run_queue (requested_by) WHERE state IN ('abandoned', 'refused');
CREATE INDEX IF NOT EXISTS sbx_run_queue_ended_by_executor ON sandbox.run_queue (node_id) WHERE state IN ('abandoned', 'refused');

RESET ROLE;
