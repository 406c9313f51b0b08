-- Audit queries (GET /v1/audit/...): a stream's tenant and subject are its first event's caller; events are
-- filtered by time and paged by sequence.
SET ROLE sandbox_owner;

CREATE INDEX IF NOT EXISTS sbx_events_first_caller ON sandbox.mt_events ((data -> 'caller' ->> 'tenant'), seq_id)
    WHERE version = 1;
CREATE INDEX IF NOT EXISTS sbx_events_timestamp ON sandbox.mt_events (timestamp);

RESET ROLE;
