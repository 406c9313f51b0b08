-- Which process holds a node id (issue 16, review): random per process, set when it starts and cleared when it stops
-- cleanly. A second process started with the id of a node that heartbeats from another instance refuses to start
-- instead of reaping that node's containers and abandoning its runs.
SET ROLE sandbox_owner;

ALTER TABLE sandbox.nodes ADD COLUMN IF NOT EXISTS instance_id uuid NULL;
-- Where that process runs: a restart on the same host whose predecessor's pid is gone takes over at once (kill -9).
ALTER TABLE sandbox.nodes ADD COLUMN IF NOT EXISTS host text NULL;
ALTER TABLE sandbox.nodes ADD COLUMN IF NOT EXISTS pid integer NULL;

RESET ROLE;
