-- Dispatch (issue 16): fewer index entries written per state change of a run_queue row, and room on its pages.
SET ROLE sandbox_owner;

-- The sweeper reads the claimed rows (at most every executor's slots) through sbx_run_queue_claimed; an index of its own on
-- lease_until cost one more entry on every claim and made every heartbeat's lease extension a non-HOT update.
DROP INDEX IF EXISTS sandbox.sbx_run_queue_lease;

-- Room on each page: a lease extension (no indexed column changes) stays on its page as a HOT update, and a state change
-- (not HOT: state is in the partial indexes' predicates) still finds room beside the old version.
ALTER TABLE sandbox.run_queue SET (fillfactor = 80);

RESET ROLE;
