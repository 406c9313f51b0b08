-- The run queue and node tables were created with the schema's default privileges, which include DELETE for the
-- service role. Deleting a node's row would make its live claims look never-heartbeated to the sweeper, and deleting
-- a queue row would hide a run from recovery: the service only inserts and updates them.
SET ROLE sandbox_owner;

REVOKE ALL ON sandbox.run_queue, sandbox.nodes FROM sandbox_app, sandbox_auditor;
GRANT SELECT, INSERT, UPDATE ON sandbox.run_queue, sandbox.nodes TO sandbox_app;
GRANT SELECT ON sandbox.run_queue, sandbox.nodes TO sandbox_auditor;
